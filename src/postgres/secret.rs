//! A database URL that never prints its password.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A PostgreSQL connection string whose `Debug` and `Display` hide the password, in both URL
/// (`postgres://user:secret@host/db`) and key-value (`password=secret`) forms.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// Wraps a connection string.
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The full connection string, password included: pass it to the driver, never to a log.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The connection string with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        redact(&self.0)
    }

    /// The same server, user and parameters, another database: `postgres://u@h/app?x=1` →
    /// `postgres://u@h/{database}?x=1`; in key-value form, `dbname` is replaced or added.
    ///
    /// ```
    /// use synckit_awareness::DatabaseUrl;
    /// let url = DatabaseUrl::new("postgres://app:secret@db:5432/app?sslmode=require");
    /// assert_eq!(
    ///     url.with_database("app_test").expose(),
    ///     "postgres://app:secret@db:5432/app_test?sslmode=require"
    /// );
    /// ```
    pub fn with_database(&self, database: &str) -> Self {
        let url = self.0.trim();
        if !url.contains("://") {
            let mut pairs: Vec<String> = url
                .split_whitespace()
                .filter(|pair| !pair.starts_with("dbname="))
                .map(str::to_owned)
                .collect();
            pairs.push(format!("dbname={database}"));
            return Self(pairs.join(" "));
        }
        let (base, query) = match url.split_once('?') {
            Some((base, query)) => (base, Some(query)),
            None => (url, None),
        };
        let authority = base.find("://").map_or(0, |i| i + 3);
        let base = base[authority..]
            .find('/')
            .map_or(base, |slash| &base[..authority + slash]);
        Self(match query {
            Some(query) => format!("{base}/{database}?{query}"),
            None => format!("{base}/{database}"),
        })
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({:?})", self.redacted())
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl From<String> for DatabaseUrl {
    fn from(url: String) -> Self {
        Self(url)
    }
}

impl<'de> Deserialize<'de> for DatabaseUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self)
    }
}

impl Serialize for DatabaseUrl {
    /// Serializes redacted, so dumping settings cannot leak the password.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.redacted())
    }
}

/// Replaces passwords in a connection string, and in any text that embeds one (error messages).
pub(crate) fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    // URL form: scheme://user:password@host — the password runs from the ':' after the user to
    // the last '@' before the next '/', '?' or whitespace.
    while let Some(start) = rest.find("://") {
        let (head, tail) = rest.split_at(start + 3);
        out.push_str(head);
        let authority_end = tail
            .find(|c: char| c == '/' || c == '?' || c == '#' || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = &tail[..authority_end];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(at), Some(colon)) if colon < at => {
                out.push_str(&authority[..colon]);
                out.push_str(":***");
                out.push_str(&authority[at..]);
            }
            _ => out.push_str(authority),
        }
        rest = &tail[authority_end..];
    }
    out.push_str(rest);
    redact_key_value(&out)
}

/// Key-value form: `password=secret` or `password='se cret'`, also in URL query strings.
fn redact_key_value(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("password=") {
        let value_start = pos + "password=".len();
        out.push_str(&rest[..value_start]);
        let value = &rest[value_start..];
        let value_len = if let Some(quoted) = value.strip_prefix('\'') {
            quoted.find('\'').map_or(value.len(), |end| end + 2)
        } else {
            value
                .find(|c: char| c == '&' || c.is_whitespace())
                .unwrap_or(value.len())
        };
        out.push_str("***");
        rest = &value[value_len..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_database_keeps_everything_else() {
        let cases = [
            ("postgres://h/a", "postgres://h/b"),
            ("postgres://h", "postgres://h/b"),
            (
                "postgres://u:p@h:1/a?sslmode=disable",
                "postgres://u:p@h:1/b?sslmode=disable",
            ),
            ("host=h dbname=a user=u", "host=h user=u dbname=b"),
            ("host=h", "host=h dbname=b"),
        ];
        for (url, expected) in cases {
            assert_eq!(DatabaseUrl::new(url).with_database("b").expose(), expected);
        }
    }

    #[test]
    fn passwords_are_hidden() {
        let cases = [
            (
                "postgres://app:s3cr%40t@db:5432/x",
                "postgres://app:***@db:5432/x",
            ),
            ("postgres://app@db/x", "postgres://app@db/x"),
            ("postgresql://u:p@h", "postgresql://u:***@h"),
            (
                "host=db user=app password=hunter2 dbname=x",
                "host=db user=app password=*** dbname=x",
            ),
            ("password='a b' host=h", "password=*** host=h"),
            (
                "postgres://h/db?user=u&password=pw&sslmode=require",
                "postgres://h/db?user=u&password=***&sslmode=require",
            ),
            (
                "error connecting to postgres://u:pw@h/db: refused",
                "error connecting to postgres://u:***@h/db: refused",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(redact(input), want, "{input}");
            let url = DatabaseUrl::new(input);
            assert!(!format!("{url:?}{url}").contains("s3cr"));
        }
    }
}
