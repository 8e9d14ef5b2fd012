//! What the dispatcher reads of the world ([`View`], [`Seen`]), and what the agent and the
//! simulator share to build it: claimants, an object as the dispatcher sees it, answers, and
//! the mesh key of a client's command.

use crate::api::{Outcome, Reply};
use crate::model::{self, ObjectId, Value};
use crate::replica::{Object, Replica};
use std::time::Instant;
use uuid::Uuid;

/// The mesh key of a client's command: a digest of who sent it, the object and the client's
/// own id, so equal ids of different clients or objects never meet.
pub fn command_key(sender: Option<&str>, object: &str, id: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for part in [sender.unwrap_or(""), object, id] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    format!("c-{}", crate::secret::to_hex(&h.finalize()[..16]))
}

/// Instances currently claiming `obj` as their hardware; a retired instance's claims count
/// for nothing (`pimesh forget`), so a replacement Pi takes its objects.
pub fn claimants(replica: &Replica, obj: &Object) -> Vec<Uuid> {
    obj.props
        .iter()
        .filter(|(_, r)| r.value == Value::Bool(true))
        .filter_map(|(p, _)| p.strip_prefix(model::CLAIM_PREFIX))
        .filter_map(|u| Uuid::parse_str(u).ok())
        .filter(|u| !replica.is_retired(*u))
        .collect()
}

/// What the dispatcher needs to know of a live (not deleted) object in `replica`.
pub fn seen(replica: &Replica, id: &ObjectId) -> Option<Seen> {
    let obj = replica.get(id).filter(|o| !o.is_deleted())?;
    Some(Seen {
        kind: obj.text(model::KIND).unwrap_or("object").to_string(),
        claimants: claimants(replica, obj),
        on: obj.text(model::STATE) == Some(model::ON),
    })
}

/// An object's public state in `replica`, for an answer that says what is last known.
pub fn state_of(replica: &Replica, id: &ObjectId) -> Option<serde_json::Value> {
    Some(crate::api::state_json(id, replica.get(id)?))
}

/// An answer from instance `uuid` called `name`; `refusing` says its disk refuses writes, so
/// nothing it changes now is durable.
pub fn make_reply(
    uuid: Uuid,
    name: &str,
    refusing: bool,
    object: &str,
    id: Option<String>,
    result: Outcome,
    error: Option<String>,
) -> Reply {
    let persisted = (result == Outcome::Ok && refusing).then_some(false);
    Reply {
        persisted,
        id,
        object: object.to_string(),
        result,
        state: None,
        executed_by: Some(name.to_string()),
        executed_by_uuid: Some(uuid),
        error,
    }
}

/// What the dispatcher reads of the house, the mesh and the clock.
pub trait View {
    /// This instance.
    fn me(&self) -> Uuid;
    /// Now, on the monotonic clock.
    fn now(&self) -> Instant;
    /// A live (not deleted) object: its kind, who claims it, and whether it is on.
    fn object(&self, id: &ObjectId) -> Option<Seen>;
    /// Whether instance `u` is online.
    fn alive(&self, u: Uuid) -> bool;
    /// Whether a command can be sent to `u` now (a link to it is up).
    fn reachable(&self, u: Uuid) -> bool;
    /// The instances online, besides this one.
    fn online(&self) -> Vec<Uuid>;
    /// A name for `u`, for messages.
    fn name(&self, u: Uuid) -> String;
    /// Why this instance makes no change of its own now, if it does not (the fence).
    fn fenced(&self) -> Option<String>;
    /// An answer from this instance (its name, and whether its disk takes writes).
    fn reply(
        &self,
        object: &str,
        id: Option<String>,
        result: Outcome,
        error: Option<String>,
    ) -> Reply;
    /// An object's public state, for an answer that says what is last known.
    fn state(&self, id: &ObjectId) -> Option<serde_json::Value>;
}

/// What the dispatcher needs to know about an object.
#[derive(Clone, Debug, PartialEq)]
pub struct Seen {
    /// Its kind (`relay`, `virtual`, `input`, …).
    pub kind: String,
    /// The instances claiming it (a relay's holder, a virtual object's runners).
    pub claimants: Vec<Uuid>,
    /// Its state is `ON`.
    pub on: bool,
}
