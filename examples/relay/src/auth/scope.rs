//! Which rooms a token opens, and how: the `rooms` claim, `{ "<pattern>": "write" | "read" }`,
//! a pattern being an exact room name or a prefix ending in `*` (`"*"` alone: every room).

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

/// Most patterns one token may carry (a longer claim is refused as malformed).
pub const MAX_PATTERNS: usize = 256;

/// What a connection may do in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// Sync and receive the document and everyone's presence, show its own presence; its
    /// document updates are refused.
    Read,
    /// Everything `Read` may, and edit the document.
    Write,
}

impl Access {
    /// `"read"` or `"write"` (the claim's values, and `--default-room-access`).
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "read" => Some(Self::Read),
            "write" => Some(Self::Write),
            _ => None,
        }
    }

    /// The claim's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
        }
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One pattern of the claim.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Pattern {
    /// Exactly this room.
    Exact(String),
    /// Every room whose name starts with this (the pattern without its `*`).
    Prefix(String),
}

impl Pattern {
    fn parse(pattern: &str) -> Self {
        match pattern.strip_suffix('*') {
            Some(prefix) => Self::Prefix(prefix.to_owned()),
            None => Self::Exact(pattern.to_owned()),
        }
    }

    /// Whether `room` is one this pattern names.
    pub fn matches(&self, room: &str) -> bool {
        match self {
            Self::Exact(name) => name == room,
            Self::Prefix(prefix) => room.starts_with(prefix.as_str()),
        }
    }
}

/// The rooms a connection may open: each pattern with its access; a room named by several
/// patterns gets the most any of them gives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scopes {
    patterns: BTreeMap<Pattern, Access>,
}

impl Scopes {
    /// No room at all.
    pub fn none() -> Self {
        Self::default()
    }

    /// Every room, with `access` (open mode: write; `--default-room-access`).
    pub fn all(access: Access) -> Self {
        Self {
            patterns: BTreeMap::from([(Pattern::Prefix(String::new()), access)]),
        }
    }

    /// The claim's value: an object of pattern → `"read"` | `"write"`.
    pub fn from_claim(claim: &Value) -> Result<Self, String> {
        let Value::Object(entries) = claim else {
            return Err("must be an object of room pattern to \"read\" or \"write\"".into());
        };
        if entries.len() > MAX_PATTERNS {
            return Err(format!(
                "holds {} patterns, more than {MAX_PATTERNS}",
                entries.len()
            ));
        }
        let mut patterns = BTreeMap::new();
        for (pattern, access) in entries {
            let access = access
                .as_str()
                .and_then(Access::parse)
                .ok_or_else(|| format!("gives {pattern:?} {access}, not \"read\" or \"write\""))?;
            if pattern.is_empty() {
                return Err("names an empty room pattern".into());
            }
            let pattern = Pattern::parse(pattern);
            let best = patterns.entry(pattern).or_insert(access);
            *best = (*best).max(access);
        }
        Ok(Self { patterns })
    }

    /// What `room` may be opened for (`None`: not at all).
    pub fn access(&self, room: &str) -> Option<Access> {
        self.patterns
            .iter()
            .filter(|(pattern, _)| pattern.matches(room))
            .map(|(_, access)| *access)
            .max()
    }

    /// Whether every room is readable (`"*"`): the room list needs no filtering.
    pub fn reads_everything(&self) -> bool {
        self.patterns.contains_key(&Pattern::Prefix(String::new()))
    }

    /// The patterns, in byte order (for the room list).
    pub fn patterns(&self) -> impl Iterator<Item = &Pattern> {
        self.patterns.keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn exact_names_and_prefixes_give_the_most_access_that_matches() {
        let scopes = Scopes::from_claim(&json!({ "a-*": "read", "a-1": "write", "b": "read" }))
            .expect("a valid claim");
        assert_eq!(scopes.access("a-1"), Some(Access::Write));
        assert_eq!(scopes.access("a-2"), Some(Access::Read));
        assert_eq!(scopes.access("a-"), Some(Access::Read));
        assert_eq!(scopes.access("b"), Some(Access::Read));
        assert_eq!(scopes.access("b-1"), None);
        assert_eq!(scopes.access("c"), None);
        assert!(!scopes.reads_everything());
        let all = Scopes::from_claim(&json!({ "*": "write" })).expect("a valid claim");
        assert_eq!(all.access("anything"), Some(Access::Write));
        assert!(all.reads_everything());
        assert_eq!(Scopes::none().access("a"), None);
    }

    #[test]
    fn malformed_claims_are_refused_with_why() {
        for claim in [
            json!(["a"]),
            json!("a-*"),
            json!({ "a": "admin" }),
            json!({ "a": true }),
            json!({ "": "read" }),
        ] {
            assert!(Scopes::from_claim(&claim).is_err(), "{claim}");
        }
        let many: serde_json::Map<String, Value> = (0..=MAX_PATTERNS)
            .map(|i| (format!("r{i}"), json!("read")))
            .collect();
        assert!(Scopes::from_claim(&Value::Object(many)).is_err());
    }
}
