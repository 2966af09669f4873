//! The ids a platform sends: a service instance's, a binding's, and an
//! operation's (echoed back from a 202). Each is parsed once, where the
//! request enters (the HTTP layer's extractors, the CLI's arguments); code
//! that takes one of these types never checks it again.
//!
//! Ids become parts of resource names, secret names and file paths, so they
//! keep to a safe alphabet. Platforms send GUIDs, which fit.

use std::fmt;
use std::ops::Deref;
use std::str::FromStr;

/// The longest id accepted.
pub const MAX_ID_LEN: usize = 128;

/// An id that is empty, too long or outside the alphabet, and the field (or
/// parameter) that carried it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} must be 1 to {MAX_ID_LEN} characters of letters, digits, '-', '_' or '.'")]
pub struct InvalidId {
    pub field: &'static str,
}

fn check(field: &'static str, id: &str) -> Result<(), InvalidId> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok { Ok(()) } else { Err(InvalidId { field }) }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The name of the field that usually carries it.
            pub const FIELD: &'static str = $field;

            /// Parses an id carried by [`Self::FIELD`].
            pub fn parse(id: &str) -> Result<$name, InvalidId> {
                $name::parse_field($field, id)
            }

            /// Parses an id carried by `field` (a body field such as
            /// `predecessor_binding_id`), which the error names.
            pub fn parse_field(field: &'static str, id: &str) -> Result<$name, InvalidId> {
                check(field, id)?;
                Ok($name(id.to_string()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<$name, InvalidId> {
                $name::parse(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<$name> for String {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }

        impl PartialEq<$name> for str {
            fn eq(&self, other: &$name) -> bool {
                self == other.0
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$name, D::Error> {
                let s = String::deserialize(d)?;
                $name::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// A service instance's id (`{instance_id}` in the path).
    InstanceId,
    "instance_id"
);
id_type!(
    /// A binding's id (`{binding_id}` in the path, `predecessor_binding_id`).
    BindingId,
    "binding_id"
);
id_type!(
    /// An operation's id: the broker makes it; the platform echoes it in the
    /// `operation` query parameter.
    OperationId,
    "operation"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_and_the_safe_alphabet_parse() {
        for id in ["6f1b1f4c-0c7e-4d3a-9a55-1b2c3d4e5f60", "a", "A.b_c-9", &"x".repeat(MAX_ID_LEN)] {
            assert_eq!(InstanceId::parse(id).unwrap().as_str(), id);
        }
    }

    #[test]
    fn an_empty_long_or_unsafe_id_is_refused_naming_its_field() {
        for id in ["", &"x".repeat(MAX_ID_LEN + 1), "a/b", "a b", "../x", "é", "a%2Fb", "a\nb"] {
            assert_eq!(BindingId::parse(id), Err(InvalidId { field: "binding_id" }), "{id:?}");
        }
        let e = BindingId::parse_field("predecessor_binding_id", "no/slashes").unwrap_err();
        assert_eq!(
            e.to_string(),
            "predecessor_binding_id must be 1 to 128 characters of letters, digits, '-', '_' or '.'"
        );
        assert_eq!(OperationId::parse("").unwrap_err().field, "operation");
    }

    #[test]
    fn an_id_reads_and_writes_as_a_plain_json_string() {
        let id: InstanceId = serde_json::from_str("\"i-1\"").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"i-1\"");
        let e = serde_json::from_str::<InstanceId>("\"a/b\"").unwrap_err();
        assert!(e.to_string().starts_with("instance_id must be"), "{e}");
    }
}
