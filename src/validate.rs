//! Input rules shared by every store: bad input never reaches storage.

use serde_json::Value;

use crate::entry::AwarenessUpdate;
use crate::error::{Error, Field, InvalidReason, Result};

/// Longest id accepted, in bytes of UTF-8.
pub const MAX_ID_BYTES: usize = 256;
/// Default limit on a state's size, in bytes of compact JSON.
pub const DEFAULT_MAX_STATE_BYTES: usize = 64 * 1024;
/// Deepest nesting of arrays/objects accepted in a state.
pub const MAX_STATE_DEPTH: usize = 64;

/// Checks one id (document, client or connection).
pub(crate) fn check_id(field: Field, id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(Error::invalid(field, InvalidReason::Empty));
    }
    if id.len() > MAX_ID_BYTES {
        return Err(Error::invalid(
            field,
            InvalidReason::TooLong {
                len: id.len(),
                max: MAX_ID_BYTES,
            },
        ));
    }
    if id.contains('\0') {
        return Err(Error::invalid(field, InvalidReason::ContainsNul));
    }
    Ok(())
}

/// Checks a whole update against the contract's input rules.
pub(crate) fn check_update(update: &AwarenessUpdate, max_state_bytes: usize) -> Result<()> {
    check_id(Field::DocumentId, &update.document_id)?;
    check_id(Field::ClientId, &update.client_id)?;
    check_id(Field::ConnectionId, &update.connection_id)?;
    if let Some(owner) = &update.owner {
        check_id(Field::Owner, owner)?;
    }
    if update.clock < 0 {
        return Err(Error::invalid(
            Field::Clock,
            InvalidReason::Negative(update.clock),
        ));
    }
    if let Some(state) = &update.state {
        check_state(state, max_state_bytes)?;
    }
    Ok(())
}

fn check_state(state: &Value, max_bytes: usize) -> Result<()> {
    // Depth and NUL first: both bound the work the size count below does.
    check_json(state, 1)?;
    let mut counter = ByteCounter(0);
    // Writing into a counter cannot fail for a Value whose keys are strings.
    serde_json::to_writer(&mut counter, state).map_err(|_| {
        Error::invalid(
            Field::State,
            InvalidReason::TooLarge {
                size: usize::MAX,
                max: max_bytes,
            },
        )
    })?;
    if counter.0 > max_bytes {
        return Err(Error::invalid(
            Field::State,
            InvalidReason::TooLarge {
                size: counter.0,
                max: max_bytes,
            },
        ));
    }
    Ok(())
}

fn check_json(value: &Value, depth: usize) -> Result<()> {
    match value {
        Value::String(s) if s.contains('\0') => {
            Err(Error::invalid(Field::State, InvalidReason::ContainsNul))
        }
        Value::Array(_) | Value::Object(_) if depth > MAX_STATE_DEPTH => Err(Error::invalid(
            Field::State,
            InvalidReason::TooDeep {
                max: MAX_STATE_DEPTH,
            },
        )),
        Value::Array(items) => items.iter().try_for_each(|v| check_json(v, depth + 1)),
        Value::Object(map) => map.iter().try_for_each(|(k, v)| {
            if k.contains('\0') {
                return Err(Error::invalid(Field::State, InvalidReason::ContainsNul));
            }
            check_json(v, depth + 1)
        }),
        _ => Ok(()),
    }
}

/// Counts bytes instead of storing them, so measuring a state allocates nothing.
struct ByteCounter(usize);

impl std::io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn update(state: Option<Value>) -> AwarenessUpdate {
        AwarenessUpdate::new("doc", "client", "conn", 1, state)
    }

    fn reason(r: Result<()>) -> (Field, InvalidReason) {
        match r {
            Err(Error::InvalidInput { field, reason }) => (field, reason),
            other => panic!("expected InvalidInput, got {other:?}"),
        }
    }

    #[test]
    fn ids_are_checked() {
        assert_eq!(
            reason(check_id(Field::ClientId, "")),
            (Field::ClientId, InvalidReason::Empty)
        );
        assert_eq!(
            reason(check_id(Field::DocumentId, &"é".repeat(129))),
            (
                Field::DocumentId,
                InvalidReason::TooLong { len: 258, max: 256 }
            )
        );
        assert!(check_id(Field::DocumentId, &"x".repeat(256)).is_ok());
        assert_eq!(
            reason(check_id(Field::ConnectionId, "a\0b")),
            (Field::ConnectionId, InvalidReason::ContainsNul)
        );
    }

    #[test]
    fn states_are_checked() {
        assert!(check_update(&update(Some(json!({"cursor": 3}))), 100).is_ok());
        assert!(check_update(&update(None), 0).is_ok());
        let (field, r) = reason(check_update(&update(Some(json!("x".repeat(100)))), 100));
        assert_eq!(field, Field::State);
        assert_eq!(
            r,
            InvalidReason::TooLarge {
                size: 102,
                max: 100
            }
        );
        assert_eq!(
            reason(check_update(&update(Some(json!({"a\0": 1}))), 100)).1,
            InvalidReason::ContainsNul
        );
        assert_eq!(
            reason(check_update(&update(Some(json!([["x\0"]]))), 100)).1,
            InvalidReason::ContainsNul
        );
        let mut deep = json!(1);
        for _ in 0..MAX_STATE_DEPTH + 1 {
            deep = json!([deep]);
        }
        assert_eq!(
            reason(check_update(&update(Some(deep)), usize::MAX)).1,
            InvalidReason::TooDeep {
                max: MAX_STATE_DEPTH
            }
        );
        let mut u = update(None);
        u.clock = -1;
        assert_eq!(
            reason(check_update(&u, 100)),
            (Field::Clock, InvalidReason::Negative(-1))
        );
    }
}
