//! The words of the house: object ids, property values and the well-known property names.
//!
//! Everything that replicates is an object with properties; a property holds a [`Value`].
//! Hardware state, rooms, locations and deletion marks are all plain properties, so one
//! last-writer-wins rule covers them all.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Property holding an object's switch or contact state: `"ON"` or `"OFF"`.
pub const STATE: &str = "state";
/// Property holding the room an object is in.
pub const ROOM: &str = "room";
/// Property holding the object's x position inside its room.
pub const X: &str = "x";
/// Property holding the object's y position inside its room.
pub const Y: &str = "y";
/// Property holding the human name of the object.
pub const NAME: &str = "name";
/// Property holding the object's kind (`relay`, `input`, ...).
pub const KIND: &str = "kind";
/// Prefix of the per-instance claim properties: `claim.<uuid>` is `true` while that instance's
/// config binds the object to its hardware.
pub const CLAIM_PREFIX: &str = "claim.";
/// Property that, when `true`, marks the object deleted (a tombstone).
pub const DELETED: &str = "deleted";

/// The two values of [`STATE`].
pub const ON: &str = "ON";
/// See [`ON`].
pub const OFF: &str = "OFF";

/// First character of a system object's id; see [`ObjectId::system`].
pub const SYSTEM_PREFIX: char = '_';

/// The longest object id accepted; ids appear in MQTT topics and file names.
pub const MAX_ID_LEN: usize = 64;

/// A validated object id: 1 to 64 characters of lowercase `a-z`, digits and `-`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ObjectId(String);

/// Why a string is not a valid [`ObjectId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("object id is empty")]
    Empty,
    #[error("object id {id:?} is longer than {MAX_ID_LEN} characters")]
    TooLong { id: String },
    #[error("object id {id:?} may only contain lowercase letters a-z, digits and '-'")]
    BadCharacter { id: String },
}

impl ObjectId {
    /// Checks `id` and wraps it.
    /// A refused id is quoted in the error up to 80 characters, so an id of megabytes from
    /// the network never reaches a log or an answer whole.
    pub fn new(id: impl Into<String>) -> Result<Self, IdError> {
        let id = id.into();
        let shown = |id: &str| id.chars().take(80).collect::<String>();
        if id.is_empty() {
            return Err(IdError::Empty);
        }
        if id.len() > MAX_ID_LEN {
            return Err(IdError::TooLong { id: shown(&id) });
        }
        if !id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(IdError::BadCharacter { id: shown(&id) });
        }
        Ok(ObjectId(id))
    }

    /// The id of a system object of `kind` (`member`, `user`): `_<kind>-<name>`. System
    /// objects replicate like any other but are never public: no state topic, no `get`, no
    /// command reaches them, and no config or topic can name one (their ids start with `_`).
    pub fn system(kind: &str, name: &str) -> Result<Self, IdError> {
        let id = ObjectId::new(format!("{kind}-{name}"))?;
        Ok(ObjectId(format!("{SYSTEM_PREFIX}{}", id.0)))
    }

    /// The id of the system object recording mesh member `uuid`: a UUID is lowercase hex and
    /// dashes, so the id is always valid.
    pub fn member(uuid: uuid::Uuid) -> Self {
        ObjectId(format!("{SYSTEM_PREFIX}member-{uuid}"))
    }

    /// Whether this is a system object (see [`ObjectId::system`]).
    pub fn is_system(&self) -> bool {
        self.0.starts_with(SYSTEM_PREFIX)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ObjectId {
    type Error = IdError;
    /// Accepts system ids too: this is how ids arrive from the store and from peers.
    fn try_from(s: String) -> Result<Self, IdError> {
        match s.strip_prefix(SYSTEM_PREFIX) {
            Some(rest) => ObjectId::new(rest).map(|_| ObjectId(s)),
            None => ObjectId::new(s),
        }
    }
}

impl From<ObjectId> for String {
    fn from(id: ObjectId) -> String {
        id.0
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One property value. Serialised untagged, so it reads naturally in JSON and TOML.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    Bool(bool),
    Number(f64),
    Text(String),
}

impl Value {
    /// The text, if this is a text value.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }

    /// The number, if this is a number value.
    pub fn as_number(&self) -> Option<f64> {
        match self {
            Value::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// The boolean, if this is a boolean value.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// A total order used only to break ties between equal clock stamps, which can only
    /// happen for a corrupted or forged update; it keeps replicas deterministic anyway.
    pub fn tie_break_key(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Text(s.to_string())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Text(s)
    }
}

impl From<f64> for Value {
    fn from(n: f64) -> Value {
        Value::Number(n)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Bool(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_accept_lowercase_digits_and_dashes() {
        assert!(ObjectId::new("relay-1").is_ok());
        assert!(ObjectId::new("_user-ha").is_err());
        let sys = ObjectId::system("user", "ha").unwrap();
        assert!(sys.is_system());
        assert_eq!(ObjectId::try_from(sys.to_string()).unwrap(), sys);
        assert!(ObjectId::try_from("_".to_string()).is_err());
        let member = ObjectId::member(uuid::Uuid::from_u128(7));
        assert_eq!(ObjectId::try_from(member.to_string()).unwrap(), member);
        assert!(member.is_system());
        assert_eq!(ObjectId::new(""), Err(IdError::Empty));
        assert!(matches!(
            ObjectId::new("Relay"),
            Err(IdError::BadCharacter { .. })
        ));
        assert!(matches!(
            ObjectId::new("a/b"),
            Err(IdError::BadCharacter { .. })
        ));
        assert!(matches!(
            ObjectId::new("a".repeat(65)),
            Err(IdError::TooLong { .. })
        ));
        let huge = ObjectId::new("a".repeat(2 << 20)).unwrap_err().to_string();
        assert!(huge.len() < 200, "{} bytes", huge.len());
    }

    #[test]
    fn values_serialise_untagged() {
        assert_eq!(serde_json::to_string(&Value::from("ON")).unwrap(), "\"ON\"");
        assert_eq!(serde_json::to_string(&Value::from(1.5)).unwrap(), "1.5");
        let v: Value = serde_json::from_str("true").unwrap();
        assert_eq!(v, Value::Bool(true));
    }
}
