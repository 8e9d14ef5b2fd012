//! Serial channels in the simulation. Instance `i` also holds `chan-<i>`, a line channel of
//! a serial device (`agent/serial.rs`): commanded like a relay, but the device answers each
//! command itself, and now and then with an error (the command fails, nothing moves) or not
//! at all (the device is unplugged: `unavailable`). The device also changes on its own (a
//! button on it, a timer in it) and says so; the holder records that, as it does at start.
//! The device keeps its level across the agent's crashes and rebuilds, like a relay's pin.
//!
//! What [`Sim::check_hardware`] asserts after a healed run, for relays and channels alike:
//! the house shows the level the hardware is at. A holder that sees another state written
//! for its hardware writes the hardware's level over it ([`Sim::keep_levels`]). (The rules of commands and answers in
//! `clients.rs` hold for channels as for relays: only the holder runs them, and an `ok` comes
//! from it after its device switched for that command.)

use super::commands::{on_off, relay_of};
use super::Sim;
use crate::api::{Outcome, Reply};
use crate::model::{self, ObjectId};

/// The kind of a channel's object (`agent::serial::CHANNEL_KIND`).
pub(super) const KIND: &str = "serial-channel";
/// Chance that the device answers a command with an error.
const FAILS: f64 = 0.1;
/// Chance that the device does not answer (unplugged).
const UNPLUGGED: f64 = 0.05;
/// Chance per step that some device changes on its own.
const CHANGES: f64 = 0.005;

/// The serial channel instance `i` holds.
pub(super) fn channel_of(i: usize) -> String {
    format!("chan-{i}")
}

/// Whether instance `i`'s hardware is `object` (its relay or its channel).
pub(super) fn holds(i: usize, object: &str) -> bool {
    relay_of(i) == object || channel_of(i) == object
}

impl Sim {
    /// The device of `object` at instance `i` answers its command `key`: true when it
    /// answered with an error or not at all (answered so, nothing moved), false when it
    /// switched.
    pub(super) fn device_refuses(&mut self, i: usize, object: &ObjectId, key: &str) -> bool {
        if object.as_str() != channel_of(i) {
            return false;
        }
        let (result, error) = if self.rng.chance(FAILS) {
            (Outcome::Failed, "the device answered ERR")
        } else if self.rng.chance(UNPLUGGED) {
            (Outcome::Unavailable, "the device is not connected")
        } else {
            return false;
        };
        self.count("device-refused");
        let reply = Reply {
            id: Some(key.to_string()),
            object: object.to_string(),
            result,
            error: Some(error.into()),
            ..self.blank_reply(i)
        };
        if let Some(inst) = self.nodes.get_mut(i) {
            inst.desk.ran(key, reply);
        }
        true
    }

    /// Now and then a device changes on its own and tells its holder, which records it.
    pub(super) fn devices_change(&mut self) {
        if !self.rng.chance(CHANGES) {
            return;
        }
        let i = self.rng.below(self.nodes.len() as u64) as usize;
        if self.nodes[i].node.is_none() || self.is_retired(i) {
            return;
        }
        let channel = channel_of(i);
        let on = !self.nodes[i].kept.level(&channel);
        self.nodes[i].kept.set_level(&channel, on);
        self.count("device-changed");
        self.record_level(i, &channel);
        self.settle(i);
    }

    /// Instance `i` records the level its hardware `object` is at (at start, and when the
    /// device reports a change).
    pub(super) fn record_level(&mut self, i: usize, object: &str) {
        let on = self.nodes[i].kept.level(object);
        let now = self.now(i);
        let (Some(node), Ok(id)) = (self.nodes[i].node.as_mut(), ObjectId::new(object)) else {
            return;
        };
        let props = vec![(model::STATE.into(), on_off(on).into())];
        node.record(&id, props, false, now);
    }

    /// As the agent's `keep_hardware_state`, after every event: a state another instance
    /// wrote for instance `i`'s relay or channel (its old identity, before a rebuild, whose
    /// clock ran ahead) is written over with the level the hardware is at.
    pub(super) fn keep_levels(&mut self, i: usize) {
        if self.is_retired(i) {
            return;
        }
        for object in [relay_of(i), channel_of(i)] {
            let Some(node) = self.nodes[i].node.as_ref() else {
                return;
            };
            let id = ObjectId::new(object.as_str()).expect("hardware ids are valid");
            let shown = node.replica().get(&id).and_then(|o| o.text(model::STATE));
            let level = on_off(self.nodes[i].kept.level(&object));
            if node.fenced().is_none() && shown != Some(level) {
                self.count("level-kept");
                self.record_level(i, &object);
            }
        }
    }

    /// The house shows every relay's and channel's level (see the module doc).
    pub(super) fn check_hardware(&self) -> Result<(), String> {
        let replica = self.agreed_replica()?;
        for (i, inst) in self.nodes.iter().enumerate() {
            if self.is_retired(i) {
                continue;
            }
            for object in [relay_of(i), channel_of(i)] {
                let id = ObjectId::new(object.as_str()).expect("hardware ids are valid");
                let shown = replica.get(&id).and_then(|o| o.text(model::STATE));
                let level = on_off(inst.kept.level(&object));
                if shown != Some(level) {
                    return Err(format!(
                        "the house shows {object} as {shown:?}, but its hardware at {} is {level}",
                        inst.name
                    ));
                }
            }
        }
        Ok(())
    }
}
