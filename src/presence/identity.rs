//! Who a connection is, as the server authenticated it: the principal its entries are owned by,
//! and the identity every other client sees in its awareness state (`state.user`).
//!
//! Clients choose their own awareness state, name and colour included; a server that knows who
//! the user is (from a token) must not let a client show itself as someone else (hocuspocus
//! #1095). With a [`Identity::with_user`] the engine writes that value over the `user` field
//! of every state the connection sends, before the state is stored or relayed, so every server
//! embedding the engine gets the rule, not only one relay.

use serde_json::{Map, Value};

use crate::y_protocols::AwarenessClientUpdate;

/// The field of an awareness state that [`Identity::with_user`] owns (`state.user`, where
/// Yjs' editor bindings and y-websocket's demos put a user's name and colour).
pub const USER_FIELD: &str = "user";

/// Who a connection is: what [`Presence::join_as`](super::Presence::join_as) takes.
///
/// ```
/// use synckit_awareness::presence::Identity;
/// use synckit_awareness::serde_json::json;
///
/// let alice = Identity::principal("auth0|alice").with_user(json!({ "name": "Alice", "color": "#f80" }));
/// assert_eq!(alice.principal.as_deref(), Some("auth0|alice"));
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Identity {
    /// The principal the connection writes as (`None`: anonymous; entries have no owner).
    pub principal: Option<String>,
    /// What every other client sees as this connection's `state.user` (`None`: whatever the
    /// client sends).
    pub user: Option<Value>,
}

impl Identity {
    /// An anonymous connection: no owner, the client's states as sent.
    pub fn anonymous() -> Self {
        Self::default()
    }

    /// A connection authenticated as `principal`.
    pub fn principal(principal: impl Into<String>) -> Self {
        Self {
            principal: Some(principal.into()),
            user: None,
        }
    }

    /// The same principal, or none, as an `Option`.
    pub fn from_principal(principal: Option<String>) -> Self {
        Self {
            principal,
            user: None,
        }
    }

    /// Every state the connection sends is shown with `user` as its `user` field, whatever the
    /// client put there. A state that is not a JSON object becomes `{ "user": user }`: other
    /// clients must see who it is, and no editor binding reads a state that is not an object.
    pub fn with_user(mut self, user: Value) -> Self {
        self.user = Some(user);
        self
    }

    /// Writes the identity over each present state (leaves stay leaves).
    pub(super) fn stamp(&self, clients: &mut [AwarenessClientUpdate]) {
        let Some(user) = &self.user else { return };
        for client in clients {
            match &mut client.state {
                Some(Value::Object(state)) => {
                    state.insert(USER_FIELD.to_owned(), user.clone());
                }
                Some(other) => {
                    let mut state = Map::new();
                    state.insert(USER_FIELD.to_owned(), user.clone());
                    *other = Value::Object(state);
                }
                None => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn client(state: Option<Value>) -> AwarenessClientUpdate {
        AwarenessClientUpdate {
            client_id: 1,
            clock: 1,
            state,
        }
    }

    #[test]
    fn the_user_field_is_the_identitys_whatever_the_client_sent() {
        let identity = Identity::principal("alice").with_user(json!({ "name": "Alice" }));
        let mut clients = vec![
            client(Some(
                json!({ "cursor": 3, "user": { "name": "Bob", "admin": true } }),
            )),
            client(Some(json!({ "cursor": 4 }))),
            client(Some(json!("a string"))),
            client(None),
        ];
        identity.stamp(&mut clients);
        let states: Vec<_> = clients.into_iter().map(|c| c.state).collect();
        assert_eq!(
            states,
            vec![
                Some(json!({ "cursor": 3, "user": { "name": "Alice" } })),
                Some(json!({ "cursor": 4, "user": { "name": "Alice" } })),
                Some(json!({ "user": { "name": "Alice" } })),
                None,
            ]
        );
    }

    #[test]
    fn without_a_user_states_are_left_as_sent() {
        let mut clients = vec![client(Some(json!({ "user": { "name": "Bob" } })))];
        Identity::principal("alice").stamp(&mut clients);
        assert_eq!(clients[0].state, Some(json!({ "user": { "name": "Bob" } })));
    }
}
