//! Who is in the mesh and who is alive, without I/O: the agent reports link events, hellos and
//! heartbeats with the time they happened, and asks who went offline.
//!
//! A peer is *online* while our link to its broker is up and its heartbeats keep coming. A
//! killed process drops the link at once (its socket is reset); a pulled cable or a hung
//! process stops the heartbeats, and [`OFFLINE_AFTER`] later it is offline.

use super::proto::{Hello, PeerAddr};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Interval between heartbeats.
pub const BEAT_MS: u64 = 1000;
/// Silence after which a peer counts as offline (the bound is 5 s).
pub const OFFLINE_AFTER: Duration = Duration::from_millis(3 * BEAT_MS);

/// The most broker addresses we link to at once (seeds, learnt and identified together).
pub const MAX_LINKS: usize = 64;
/// A learnt address whose broker has not told us whose it is after this long is given up.
pub const LINK_GIVE_UP: Duration = Duration::from_secs(30);
/// A given-up address is not dialled again for this long, even if a hello names it.
pub const RETRY_AFTER: Duration = Duration::from_secs(600);
/// Given-up addresses remembered at once; the oldest is forgotten first.
const MAX_GIVEN_UP: usize = 256;

/// One link we keep to a broker address.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkState {
    /// The instance owning that broker, once its hello arrived.
    pub uuid: Option<Uuid>,
    /// The link is connected.
    pub connected: bool,
    /// When a hello made us dial it; none for seeds from the config, which are kept for good.
    pub learnt: Option<Instant>,
}

/// One instance we know of.
#[derive(Clone, Debug, PartialEq)]
pub struct Instance {
    /// Its human name.
    pub name: String,
    /// The broker address we link to it at.
    pub addr: String,
    /// When we last heard from it (heartbeat or any mesh message).
    pub last_seen: Option<Instant>,
    /// Wall-clock time of `last_seen`, for people.
    pub last_seen_ms: u64,
    /// Whether it counts as alive.
    pub online: bool,
    /// Whether its last heartbeat said it is connected to the shared broker.
    pub shared: bool,
}

/// What a broker owner's hello told us about a link.
#[derive(Clone, Debug, PartialEq)]
pub enum Identified {
    /// The address is our own broker: drop the link.
    Myself,
    /// Another link already reaches that instance: drop this one.
    Duplicate,
    /// The instance moved here (DHCP, another port) from `from`, whose link is down: drop
    /// that one and subscribe here.
    Moved { uuid: Uuid, from: String },
    /// A peer: subscribe to its topics.
    Peer(Uuid),
}

/// A change of liveness the agent must act on (republish availability, rotate work).
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// The instance is alive again.
    Online(Uuid),
    /// The instance stopped answering.
    Offline(Uuid),
}

/// The mesh as this instance sees it.
#[derive(Debug)]
pub struct Peers {
    /// This instance.
    me: Uuid,
    /// Our own name, for conflict detection.
    my_name: String,
    /// Links by broker address.
    links: BTreeMap<String, LinkState>,
    /// Addresses that turned out to be our own broker (never linked again).
    own_addrs: Vec<String>,
    /// Instances by UUID.
    instances: BTreeMap<Uuid, Instance>,
    /// Learnt addresses that never answered, with when they were given up.
    given_up: BTreeMap<String, Instant>,
    /// An offline peer unheard of for longer than this shows as `stale`.
    stale_after_ms: u64,
    /// Other addresses of instances we are linked to (a second interface): not dialled
    /// while the link to that instance is up, or every hello naming them would dial again.
    duplicates: BTreeMap<String, Uuid>,
}

/// Default for how long an offline peer goes unheard before it shows as `stale`.
pub const STALE_AFTER_MS: u64 = 3_600_000;

/// A row of `pimesh peers`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PeerRow {
    /// Instance name.
    pub name: String,
    /// Instance UUID (none for an address not reached yet).
    pub uuid: Option<Uuid>,
    /// Broker address.
    pub addr: String,
    /// `self`, `online`, `offline` or `connecting`.
    pub status: String,
    /// Milliseconds since the Unix epoch of the last message heard, 0 if never.
    pub last_seen_ms: u64,
    /// Another instance uses the same name.
    pub name_conflict: bool,
}

impl Peers {
    /// An empty view for instance `me` called `my_name`.
    pub fn new(me: Uuid, my_name: &str) -> Self {
        Peers {
            me,
            my_name: my_name.to_string(),
            links: BTreeMap::new(),
            own_addrs: Vec::new(),
            instances: BTreeMap::new(),
            given_up: BTreeMap::new(),
            stale_after_ms: STALE_AFTER_MS,
            duplicates: BTreeMap::new(),
        }
    }

    /// Sets how long an offline peer goes unheard before `pimesh peers` calls it `stale`.
    pub fn set_stale_after(&mut self, ms: u64) {
        self.stale_after_ms = ms;
    }

    /// Forgets instance `uuid` for good (retired): its entry and its links go, and their
    /// addresses are not dialled again for a while. Returns the address the agent linked to
    /// it at, if a link still belongs to it (a Pi rebuilt at the same address has taken over
    /// the old one's link, which must stay).
    pub fn forget(&mut self, uuid: Uuid) -> Option<String> {
        self.instances.remove(&uuid);
        let addrs: Vec<String> = self
            .links
            .iter()
            .filter(|(_, l)| l.uuid == Some(uuid))
            .map(|(a, _)| a.clone())
            .collect();
        let now = Instant::now();
        for a in &addrs {
            self.links.remove(a);
            self.given_up.insert(a.clone(), now);
        }
        addrs.into_iter().next()
    }

    /// Whether a link to `addr` should be opened: not ours, not already linked, not given up
    /// lately, and fewer than [`MAX_LINKS`] links open.
    pub fn want_link(&self, addr: &str) -> bool {
        let duplicate = self.duplicates.get(addr).is_some_and(|u| {
            self.links
                .values()
                .any(|l| l.uuid == Some(*u) && l.connected)
        });
        !duplicate
            && !self.links.contains_key(addr)
            && !self.own_addrs.iter().any(|a| a == addr)
            && !self.given_up.contains_key(addr)
            && self.links.len() < MAX_LINKS
    }

    /// Records that a link to seed `addr` is being opened.
    pub fn add_link(&mut self, addr: &str) {
        self.insert_link(addr, None);
    }

    /// Records that a link to `addr`, learnt from a hello at `now`, is being opened.
    pub fn add_learnt_link(&mut self, addr: &str, now: Instant) {
        self.insert_link(addr, Some(now));
    }

    fn insert_link(&mut self, addr: &str, learnt: Option<Instant>) {
        self.links.insert(
            addr.to_string(),
            LinkState {
                uuid: None,
                connected: false,
                learnt,
            },
        );
    }

    /// Learnt links whose broker never said whose it is within [`LINK_GIVE_UP`]: forgotten
    /// (and not dialled again for [`RETRY_AFTER`]); the agent closes them.
    pub fn give_up_links(&mut self, now: Instant) -> Vec<String> {
        self.given_up
            .retain(|_, at| now.saturating_duration_since(*at) < RETRY_AFTER);
        let stale: Vec<String> = self
            .links
            .iter()
            .filter(|(_, l)| l.uuid.is_none())
            .filter(|(_, l)| {
                l.learnt
                    .is_some_and(|t| now.saturating_duration_since(t) >= LINK_GIVE_UP)
            })
            .map(|(a, _)| a.clone())
            .collect();
        for addr in &stale {
            self.links.remove(addr);
            if self.given_up.len() >= MAX_GIVEN_UP {
                let oldest = self
                    .given_up
                    .iter()
                    .min_by_key(|(_, at)| **at)
                    .map(|(a, _)| a.clone());
                if let Some(oldest) = oldest {
                    self.given_up.remove(&oldest);
                }
            }
            self.given_up.insert(addr.clone(), now);
        }
        stale
    }

    /// Forgets a link (dropped as our own or a duplicate).
    pub fn remove_link(&mut self, addr: &str) {
        self.links.remove(addr);
    }

    /// The link to `addr` connected.
    pub fn link_up(&mut self, addr: &str) {
        if let Some(l) = self.links.get_mut(addr) {
            l.connected = true;
        }
    }

    /// The link to `addr` dropped: its instance is offline at once.
    pub fn link_down(&mut self, addr: &str) -> Vec<Change> {
        let Some(link) = self.links.get_mut(addr) else {
            return Vec::new();
        };
        link.connected = false;
        match link
            .uuid
            .and_then(|u| self.instances.get_mut(&u).map(|i| (u, i)))
        {
            Some((uuid, inst)) if inst.online => {
                inst.online = false;
                vec![Change::Offline(uuid)]
            }
            _ => Vec::new(),
        }
    }

    /// The broker at `addr` says it belongs to `hello.uuid`.
    pub fn identify(&mut self, addr: &str, hello: &Hello) -> Identified {
        if hello.uuid == self.me {
            self.links.remove(addr);
            self.own_addrs.push(addr.to_string());
            return Identified::Myself;
        }
        // Peers are known by UUID: another link to the same instance is a duplicate while it
        // is up, and the address it left when it is down.
        let other = self
            .links
            .iter()
            .find(|(a, l)| a.as_str() != addr && l.uuid == Some(hello.uuid))
            .map(|(a, l)| (a.clone(), l.connected));
        let moved_from = match other {
            Some((_, true)) => {
                self.links.remove(addr);
                if self.duplicates.len() >= MAX_GIVEN_UP {
                    self.duplicates.pop_first();
                }
                self.duplicates.insert(addr.to_string(), hello.uuid);
                return Identified::Duplicate;
            }
            Some((old, false)) => {
                self.links.remove(&old);
                Some(old)
            }
            None => None,
        };
        if let Some(l) = self.links.get_mut(addr) {
            l.uuid = Some(hello.uuid);
        }
        self.duplicates.remove(addr);
        let inst = self.instances.entry(hello.uuid).or_insert(Instance {
            name: hello.name.clone(),
            addr: addr.to_string(),
            last_seen: None,
            last_seen_ms: 0,
            online: false,
            shared: false,
        });
        inst.name = hello.name.clone();
        inst.addr = addr.to_string();
        match moved_from {
            Some(from) => Identified::Moved {
                uuid: hello.uuid,
                from,
            },
            None => Identified::Peer(hello.uuid),
        }
    }

    /// Heard from `uuid` (a heartbeat or any message on its broker) at `now`.
    pub fn heard(
        &mut self,
        uuid: Uuid,
        name: Option<&str>,
        now: Instant,
        wall_ms: u64,
    ) -> Vec<Change> {
        let linked = self
            .links
            .values()
            .any(|l| l.uuid == Some(uuid) && l.connected);
        let Some(inst) = self.instances.get_mut(&uuid) else {
            return Vec::new();
        };
        if let Some(n) = name {
            inst.name = n.to_string();
        }
        inst.last_seen = Some(now);
        inst.last_seen_ms = wall_ms;
        if linked && !inst.online {
            inst.online = true;
            return vec![Change::Online(uuid)];
        }
        Vec::new()
    }

    /// Marks offline every instance silent for longer than [`OFFLINE_AFTER`].
    pub fn expire(&mut self, now: Instant) -> Vec<Change> {
        let mut changes = Vec::new();
        for (uuid, inst) in self.instances.iter_mut() {
            let silent = inst
                .last_seen
                .is_none_or(|t| now.saturating_duration_since(t) > OFFLINE_AFTER);
            if inst.online && silent {
                inst.online = false;
                changes.push(Change::Offline(*uuid));
            }
        }
        changes
    }

    /// Whether `uuid` is this instance or an online peer.
    pub fn is_alive(&self, uuid: Uuid) -> bool {
        uuid == self.me || self.instances.get(&uuid).is_some_and(|i| i.online)
    }

    /// The name of `uuid`, if known.
    pub fn name_of(&self, uuid: Uuid) -> Option<&str> {
        if uuid == self.me {
            return Some(&self.my_name);
        }
        self.instances.get(&uuid).map(|i| i.name.as_str())
    }

    /// Records what instance `uuid`'s heartbeat said of its link to the shared broker.
    pub fn set_shared(&mut self, uuid: Uuid, connected: bool) {
        if let Some(inst) = self.instances.get_mut(&uuid) {
            inst.shared = connected;
        }
    }

    /// The instances alive and connected to the shared broker, by their last heartbeat.
    pub fn online_on_shared(&self) -> Vec<Uuid> {
        self.instances
            .iter()
            .filter(|(_, i)| i.online && i.shared)
            .map(|(u, _)| *u)
            .collect()
    }

    /// The UUIDs of online peers, in UUID order.
    pub fn online(&self) -> Vec<Uuid> {
        self.instances
            .iter()
            .filter(|(_, i)| i.online)
            .map(|(u, _)| *u)
            .collect()
    }

    /// The instance owning the broker at `addr`, once known.
    pub fn uuid_at(&self, addr: &str) -> Option<Uuid> {
        self.links.get(addr).and_then(|l| l.uuid)
    }

    /// The link address of peer `uuid`.
    pub fn addr_of(&self, uuid: Uuid) -> Option<&str> {
        self.instances.get(&uuid).map(|i| i.addr.as_str())
    }

    /// Peers whose name is also ours.
    pub fn name_conflicts(&self) -> Vec<Uuid> {
        self.instances
            .iter()
            .filter(|(_, i)| i.name == self.my_name)
            .map(|(u, _)| *u)
            .collect()
    }

    /// Every address we link to, with the UUID where known, for our hello.
    pub fn known(&self) -> Vec<PeerAddr> {
        self.links
            .iter()
            .map(|(addr, l)| PeerAddr {
                uuid: l.uuid,
                addr: addr.clone(),
            })
            .collect()
    }

    /// The table of `pimesh peers`, this instance first.
    pub fn rows(&self, my_addrs: &[String], now_ms: u64) -> Vec<PeerRow> {
        let mut rows = vec![PeerRow {
            name: self.my_name.clone(),
            uuid: Some(self.me),
            addr: my_addrs.first().cloned().unwrap_or_default(),
            status: "self".into(),
            last_seen_ms: now_ms,
            name_conflict: !self.name_conflicts().is_empty(),
        }];
        for (addr, link) in &self.links {
            let inst = link.uuid.and_then(|u| self.instances.get(&u));
            rows.push(PeerRow {
                name: inst.map(|i| i.name.clone()).unwrap_or_default(),
                uuid: link.uuid,
                addr: addr.clone(),
                status: match inst {
                    Some(i) if i.online => "online",
                    Some(i) if now_ms.saturating_sub(i.last_seen_ms) > self.stale_after_ms => {
                        "stale"
                    }
                    Some(_) => "offline",
                    None => "connecting",
                }
                .into(),
                last_seen_ms: inst.map(|i| i.last_seen_ms).unwrap_or(0),
                name_conflict: inst.is_some_and(|i| i.name == self.my_name),
            });
        }
        rows
    }
}

#[cfg(test)]
#[path = "peers_tests.rs"]
mod tests;
