//! The mesh's messages and topics. JSON, so a person can watch them with `mosquitto_sub`.

use crate::model::ObjectId;
use crate::replica::{Update, VersionVector};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Updates per sync page: small enough that a page never crowds rumqttd's per-topic segments
/// (a subscriber that falls behind loses messages), large enough that 10,000 objects take a
/// few dozen round trips.
pub const PAGE: usize = 2000;

/// Updates per live-stream message.
pub const BATCH: usize = 500;

/// Addresses one hello may make us dial (its own plus its peers'): enough for peer
/// exchange (the rest of a large mesh is learnt from the others' hellos), too few for one
/// forged hello to make every agent dial hundreds of addresses.
pub const MAX_HELLO_ADDRS: usize = 16;

/// A mesh message that breaks a bound: dropped whole, with this reason in the log.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    #[error("{what} carries {count} updates; at most {max} are allowed")]
    TooManyUpdates {
        what: &'static str,
        count: usize,
        max: usize,
    },
}

/// Checks that `updates` of a `what` message hold at most `max`.
pub fn check_count(what: &'static str, updates: &[Update], max: usize) -> Result<(), ProtoError> {
    if updates.len() > max {
        return Err(ProtoError::TooManyUpdates {
            what,
            count: updates.len(),
            max,
        });
    }
    Ok(())
}

/// An instance introducing itself: retained on its own broker (`$pimesh/<base>/mesh/owner`) and on
/// every broker it links to (`$pimesh/<base>/mesh/<uuid>/hello`), which is how an instance that only
/// knows one peer learns all the others.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Hello {
    /// The instance's UUID.
    pub uuid: Uuid,
    /// Its human name.
    pub name: String,
    /// `HOST:PORT` its broker is reachable at, as seen from the peers it linked to.
    pub addrs: Vec<String>,
    /// Every peer it knows, so that knowing one live peer is enough.
    pub peers: Vec<PeerAddr>,
}

impl Hello {
    /// The addresses this hello asks us to dial, at most [`MAX_HELLO_ADDRS`] (its own first,
    /// then its peers', without repeats), and how many more it listed.
    pub fn addresses(&self) -> (Vec<String>, usize) {
        let mut all: Vec<&String> = Vec::new();
        for a in self.addrs.iter().chain(self.peers.iter().map(|p| &p.addr)) {
            if !all.contains(&a) {
                all.push(a);
                if all.len() > MAX_HELLO_ADDRS + 1_000 {
                    break;
                }
            }
        }
        let extra = all.len().saturating_sub(MAX_HELLO_ADDRS);
        let dial = all.into_iter().take(MAX_HELLO_ADDRS).cloned().collect();
        (dial, extra)
    }
}

/// A known peer, as passed along in a [`Hello`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PeerAddr {
    /// The peer's UUID, once known.
    pub uuid: Option<Uuid>,
    /// `HOST:PORT` of its broker.
    pub addr: String,
}

/// The heartbeat, every [`BEAT_MS`](crate::mesh::peers::BEAT_MS): liveness plus the version
/// vector, which drives anti-entropy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Beat {
    /// The sender's name (names can change across restarts).
    pub name: String,
    /// What the sender holds, per origin.
    pub vv: VersionVector,
    /// The sender is connected to the shared broker (`[broker] external`), so it may speak
    /// for the house there. Absent (false) from an instance without one, or older.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shared: bool,
    /// Per origin whose updates the sender holds past a gap, the highest it holds (the
    /// version vector stops at the gap). Usually empty; absent from older instances.
    #[serde(default, skip_serializing_if = "VersionVector::is_empty")]
    pub above: VersionVector,
}

/// A batch of updates the sender originated, on the live stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// Updates, all with `stamp.origin` = the sender.
    pub updates: Vec<Update>,
}

/// "Send me what I lack": left by the requester on the answering peer's broker, on a topic
/// scoped by the requester's UUID.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SyncReq {
    /// The peer that should answer.
    pub to: Uuid,
    /// Identifies this sync, so stale pages of an abandoned one are ignored.
    pub round: u64,
    /// The requester's version vector when the sync began.
    pub vv: VersionVector,
    /// Continue after this (origin, seq); none for the first page.
    pub after: Option<(Uuid, u64)>,
}

/// One page of a sync answer, on the responder's `$pimesh/<base>/mesh/<uuid>/sync/<requester>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SyncPage {
    /// The round this answers.
    pub round: u64,
    /// Up to [`PAGE`] updates of the delta, in (origin, seq) order.
    pub updates: Vec<Update>,
    /// More pages follow.
    pub more: bool,
    /// The responder's version vector, read with this page's delta.
    pub vv: VersionVector,
}

/// A command sent to the instance that should run it: left on that instance's broker at
/// `$pimesh/<base>/mesh/<sender>/cmd`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Forward {
    /// The command id; executors remember it and never run one id twice.
    pub id: String,
    /// The object.
    pub object: String,
    /// What to do, with toggles of virtual objects already resolved by the sender.
    pub request: crate::api::SetRequest,
    /// An automation job: the receiver runs the rule's command wherever it must go (its
    /// holder may be a third instance). Plain commands are never forwarded twice.
    #[serde(default)]
    pub onward: bool,
    /// The sender's clock when it sent the command. The executor observes it first, so its
    /// changes are stamped after everything the sender had seen — also a change the sender
    /// made itself a moment ago whose update has not reached the executor yet — and
    /// last-writer-wins puts them after the state the command was resolved from.
    #[serde(default)]
    pub clock: Option<crate::clock::Stamp>,
}

/// The answer to a [`Forward`], on the executor's `$pimesh/<base>/mesh/<executor>/answer/<sender>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ForwardReply {
    /// The answer, with its command id.
    pub reply: crate::api::Reply,
    /// The executor's own updates made by the command: the sender applies them before it
    /// answers, so its next command for the object (a toggle resolved there) already sees
    /// the result, whatever order the broker delivers the stream and the answer in.
    #[serde(default)]
    pub updates: Vec<Update>,
}

/// One page of `delta` (sorted by (origin, seq)) after `after`, and whether more follow.
pub fn page(delta: &[Update], after: Option<(Uuid, u64)>) -> (Vec<Update>, bool) {
    let start = match after {
        Some(a) => delta.partition_point(|u| (u.stamp.origin, u.seq) <= a),
        None => 0,
    };
    let end = (start + PAGE).min(delta.len());
    (delta[start..end].to_vec(), end < delta.len())
}

/// The mesh topics of one base topic.
#[derive(Clone, Debug)]
pub struct Topics {
    /// The base topic, e.g. `pimesh`.
    pub base: String,
}

impl Topics {
    /// `$pimesh/<base>/mesh`: under the internal root, out of sight of `<base>/#`.
    fn root(&self) -> String {
        format!("{}/mesh", crate::api::internal(&self.base))
    }
    /// `$pimesh/<base>/mesh/owner`: the broker owner's retained hello.
    pub fn owner(&self) -> String {
        format!("{}/owner", self.root())
    }
    /// `$pimesh/<base>/mesh/<uuid>/hello`: an introduction, retained on a peer's broker.
    pub fn hello(&self, uuid: Uuid) -> String {
        format!("{}/{uuid}/hello", self.root())
    }
    /// `$pimesh/<base>/mesh/+/hello`: every introduction.
    pub fn hello_filter(&self) -> String {
        format!("{}/+/hello", self.root())
    }
    /// `$pimesh/<base>/mesh/<uuid>/status`: `online`/`offline`; the last will of a peer link.
    pub fn status(&self, uuid: Uuid) -> String {
        format!("{}/{uuid}/status", self.root())
    }
    /// `$pimesh/<base>/mesh/+/status`.
    pub fn status_filter(&self) -> String {
        format!("{}/+/status", self.root())
    }
    /// `$pimesh/<base>/mesh/<uuid>/beat`.
    pub fn beat(&self, uuid: Uuid) -> String {
        format!("{}/{uuid}/beat", self.root())
    }
    /// `$pimesh/<base>/mesh/<uuid>/updates`.
    pub fn updates(&self, uuid: Uuid) -> String {
        format!("{}/{uuid}/updates", self.root())
    }
    /// `$pimesh/<base>/mesh/<uuid>/sync-req`.
    pub fn sync_req(&self, uuid: Uuid) -> String {
        format!("{}/{uuid}/sync-req", self.root())
    }
    /// `$pimesh/<base>/mesh/+/sync-req`: sync requests peers leave on our broker.
    pub fn sync_req_filter(&self) -> String {
        format!("{}/+/sync-req", self.root())
    }
    /// `$pimesh/<base>/mesh/<sender>/cmd`: a command left on the executor's broker.
    pub fn cmd(&self, sender: Uuid) -> String {
        format!("{}/{sender}/cmd", self.root())
    }
    /// `$pimesh/<base>/mesh/+/cmd`.
    pub fn cmd_filter(&self) -> String {
        format!("{}/+/cmd", self.root())
    }
    /// `$pimesh/<base>/mesh/<executor>/answer/<sender>`.
    pub fn answer(&self, executor: Uuid, sender: Uuid) -> String {
        format!("{}/{executor}/answer/{sender}", self.root())
    }
    /// `$pimesh/<base>/mesh/<responder>/sync/<requester>`.
    pub fn sync_page(&self, responder: Uuid, requester: Uuid) -> String {
        format!("{}/{responder}/sync/{requester}", self.root())
    }

    /// What a mesh topic is, with the UUID it is scoped by.
    pub fn classify(&self, topic: &str) -> Option<(Uuid, Kind)> {
        let rest = topic.strip_prefix(&self.root())?.strip_prefix('/')?;
        if rest == "owner" {
            return Some((Uuid::nil(), Kind::Owner));
        }
        let (uuid, what) = rest.split_once('/')?;
        let uuid = Uuid::parse_str(uuid).ok()?;
        let kind = match what {
            "hello" => Kind::Hello,
            "status" => Kind::Status,
            "beat" => Kind::Beat,
            "updates" => Kind::Updates,
            "sync-req" => Kind::SyncReq,
            "cmd" => Kind::Cmd,
            other => match other.split_once('/')? {
                ("sync", to) => Kind::SyncPage(Uuid::parse_str(to).ok()?),
                ("answer", to) => Kind::Answer(Uuid::parse_str(to).ok()?),
                _ => return None,
            },
        };
        Some((uuid, kind))
    }
}

/// The kinds of mesh topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The broker owner's hello.
    Owner,
    /// An introduction.
    Hello,
    /// A status / last will.
    Status,
    /// A heartbeat.
    Beat,
    /// The live stream.
    Updates,
    /// A sync request.
    SyncReq,
    /// A sync page for the given requester.
    SyncPage(Uuid),
    /// A command for the broker's owner.
    Cmd,
    /// An answer for the given sender.
    Answer(Uuid),
}

/// Objects an update batch touches, deduplicated, in order of first appearance.
pub fn touched(updates: &[Update]) -> Vec<ObjectId> {
    let mut ids: Vec<ObjectId> = Vec::new();
    for u in updates {
        if !ids.contains(&u.object) {
            ids.push(u.object.clone());
        }
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Stamp;
    use crate::model::Value;

    fn update(origin: Uuid, seq: u64) -> Update {
        Update {
            object: ObjectId::new("o").unwrap(),
            prop: format!("p{seq}"),
            value: Value::Bool(true),
            stamp: Stamp {
                wall_ms: seq,
                counter: 0,
                origin,
            },
            seq,
            sig: None,
        }
    }

    #[test]
    fn pages_follow_the_cursor_and_say_when_more_follow() {
        let o = Uuid::new_v4();
        let delta: Vec<Update> = (1..=(PAGE as u64 + 5)).map(|s| update(o, s)).collect();
        let (first, more) = page(&delta, None);
        assert_eq!((first.len(), more), (PAGE, true));
        let last = first.last().map(|u| (u.stamp.origin, u.seq));
        let (second, more) = page(&delta, last);
        assert_eq!((second.len(), more), (5, false));
        assert_eq!(second[0].seq, PAGE as u64 + 1);
    }

    #[test]
    fn a_hello_makes_us_dial_at_most_sixteen_addresses() {
        let hello = Hello {
            uuid: Uuid::new_v4(),
            name: "x".into(),
            addrs: vec!["10.0.0.1:1883".into(), "10.0.0.1:1883".into()],
            peers: (0..499)
                .map(|i| PeerAddr {
                    uuid: None,
                    addr: format!("10.0.1.{}:{}", i % 250, 1000 + i),
                })
                .collect(),
        };
        let (dial, extra) = hello.addresses();
        assert_eq!(dial.len(), MAX_HELLO_ADDRS);
        assert_eq!(dial[0], "10.0.0.1:1883");
        assert_eq!(dial[1], "10.0.1.0:1000");
        assert_eq!(extra, 500 - MAX_HELLO_ADDRS);
    }

    #[test]
    fn batches_and_pages_are_bounded() {
        let o = Uuid::new_v4();
        let updates: Vec<Update> = (1..=(BATCH as u64 + 1)).map(|s| update(o, s)).collect();
        assert!(check_count("an update batch", &updates[..BATCH], BATCH).is_ok());
        assert_eq!(
            check_count("an update batch", &updates, BATCH)
                .unwrap_err()
                .to_string(),
            "an update batch carries 501 updates; at most 500 are allowed"
        );
    }

    #[test]
    fn topics_round_trip_through_classify() {
        let t = Topics {
            base: "pimesh".into(),
        };
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(t.classify(&t.owner()), Some((Uuid::nil(), Kind::Owner)));
        assert_eq!(t.classify(&t.hello(a)), Some((a, Kind::Hello)));
        assert_eq!(t.classify(&t.beat(a)), Some((a, Kind::Beat)));
        assert_eq!(t.classify(&t.updates(a)), Some((a, Kind::Updates)));
        assert_eq!(t.classify(&t.sync_req(a)), Some((a, Kind::SyncReq)));
        assert_eq!(t.classify(&t.sync_page(a, b)), Some((a, Kind::SyncPage(b))));
        assert_eq!(t.classify(&t.cmd(a)), Some((a, Kind::Cmd)));
        assert_eq!(t.classify(&t.answer(a, b)), Some((a, Kind::Answer(b))));
        assert_eq!(t.beat(a), format!("$pimesh/pimesh/mesh/{a}/beat"));
        assert_eq!(
            t.classify(&format!("$pimesh/pimesh/mesh/{a}/other/{b}")),
            None
        );
        assert_eq!(t.classify("$pimesh/pimesh/mesh/not-a-uuid/beat"), None);
        assert_eq!(t.classify(&format!("pimesh/mesh/{a}/beat")), None);
        assert_eq!(t.classify("pimesh/relay-1"), None);
    }
}
