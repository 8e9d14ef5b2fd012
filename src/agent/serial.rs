//! The agent's side of the serial plugin: each `[[serial]]` device runs in its own task
//! (`plugins::serial`); its line channels are objects of kind `serial-channel`, commanded like
//! relays, whose state comes from the device's answers; a raw device is a byte bridge
//! (`<base>/<device>/send` in, `<base>/<device>` out).
//!
//! A channel command is answered when the device answers, so it is sent from a spawned task
//! that reports the result back to the agent task as an internal event.

use super::state::claimants;
use super::{on_off, Agent, Internal};
use crate::api::{Outcome, SetRequest};
use crate::config::SerialConfig;
use crate::model::{self, ObjectId};
use crate::mqtt::Qos;
use crate::plugins::serial::{SerialError, SerialEvent, SerialEventKind, SerialHandle};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The kind of a line channel's object.
pub const CHANNEL_KIND: &str = "serial-channel";
/// Property of a channel: false while its device is unplugged or cannot be opened.
pub const ONLINE: &str = "online";

/// The result of a channel command, back from the task that waited for the device.
#[derive(Debug)]
pub(super) struct SerialDone {
    /// The channel.
    channel: ObjectId,
    /// The command id.
    cmd: String,
    /// What the device said.
    result: Result<bool, SerialError>,
}

impl Agent {
    /// Starts one task per `[[serial]]` device; they stop when `cancel` fires.
    pub(super) fn start_serials(
        &mut self,
        configs: &[SerialConfig],
        events: &mpsc::UnboundedSender<SerialEvent>,
        cancel: &CancellationToken,
    ) {
        for cfg in configs {
            for ch in &cfg.channels {
                self.hw.channels.insert(ch.id.clone(), cfg.id.clone());
            }
            let handle = SerialHandle::spawn(cfg.clone(), events.clone(), cancel.child_token());
            self.hw.serials.insert(cfg.id.clone(), handle);
        }
    }

    /// Sends a state command to a line channel this instance holds; false when the object is
    /// not such a channel (or the request is not a state command).
    pub(super) fn command_serial(&mut self, id: &ObjectId, req: &SetRequest, cmd: &str) -> bool {
        let Some(obj) = self.replica().get(id).filter(|o| !o.is_deleted()) else {
            return false;
        };
        let handle = self
            .hw
            .channels
            .get(id)
            .and_then(|device| self.hw.serials.get(device));
        let (Some(switch), Some(handle)) = (req.state, handle) else {
            return false;
        };
        if obj.text(model::KIND) != Some(CHANNEL_KIND)
            || !claimants(self.replica(), obj).contains(&self.uuid)
        {
            return false;
        }
        let on = switch.target(obj.text(model::STATE) == Some(model::ON));
        let answer = handle.send(id, on);
        let moves = super::hardware::move_props(req);
        if !moves.is_empty() {
            self.record(id, moves);
        }
        let tx = self.internal.clone();
        let (channel, cmd) = (id.clone(), cmd.to_string());
        tokio::spawn(async move {
            let result = answer.await.unwrap_or_else(|_| {
                Err(SerialError::Stopped {
                    device: channel.clone(),
                })
            });
            let done = SerialDone {
                channel,
                cmd,
                result,
            };
            let _ = tx.send(Internal::SerialDone(Box::new(done)));
        });
        true
    }

    /// Answers a channel command once its device has answered.
    pub(super) async fn serial_done(&mut self, done: SerialDone) {
        let SerialDone {
            channel,
            cmd,
            result,
        } = done;
        let reply = match result {
            Ok(on) => {
                self.hw.levels.insert(channel.clone(), on);
                self.record(&channel, vec![(model::STATE.into(), on_off(on).into())]);
                tracing::info!(object = %channel, command = %cmd, "command executed");
                let mut reply = self.reply(channel.as_str(), Some(cmd.clone()), Outcome::Ok, None);
                reply.state = Some(self.state_json(&channel));
                reply
            }
            Err(e) => {
                let outcome = match e {
                    SerialError::Unavailable { .. } | SerialError::Stopped { .. } => {
                        Outcome::Unavailable
                    }
                    _ => Outcome::Failed,
                };
                self.reply(
                    channel.as_str(),
                    Some(cmd.clone()),
                    outcome,
                    Some(e.to_string()),
                )
            }
        };
        self.dispatch.ran(&cmd, reply);
    }

    /// Handles what a device's task reports.
    pub(super) async fn on_serial(&mut self, ev: SerialEvent) {
        match ev.kind {
            SerialEventKind::Available => {
                tracing::info!(device = %ev.device, "serial device available");
                self.set_online(&ev.device, true);
            }
            SerialEventKind::Unavailable(reason) => {
                tracing::warn!(device = %ev.device, %reason, "serial device unavailable");
                self.set_online(&ev.device, false);
            }
            SerialEventKind::State { channel, on } => {
                if self.hw.channels.get(&channel) == Some(&ev.device) {
                    self.hw.levels.insert(channel.clone(), on);
                    self.record(&channel, vec![(model::STATE.into(), on_off(on).into())]);
                }
            }
            SerialEventKind::Received(bytes) => {
                let topic = format!("{}/{}", self.base, ev.device);
                if let Err(e) = self
                    .link
                    .publish(&topic, Qos::AtLeastOnce, false, bytes)
                    .await
                {
                    tracing::warn!(%topic, error = %e, "could not publish serial bytes");
                }
            }
        }
    }

    /// Records every channel of `device` as online or not.
    fn set_online(&mut self, device: &ObjectId, online: bool) {
        let channels: Vec<ObjectId> = self
            .hw
            .channels
            .iter()
            .filter(|(_, d)| *d == device)
            .map(|(c, _)| c.clone())
            .collect();
        for ch in channels {
            self.record(&ch, vec![(ONLINE.into(), online.into())]);
        }
    }

    /// Handles `<base>/<device>/send`: the bytes go to a raw device this instance holds.
    pub(super) fn on_send(&mut self, device: &str, payload: &[u8]) {
        let handle = ObjectId::new(device)
            .ok()
            .and_then(|d| self.hw.serials.get(&d).cloned());
        let Some(handle) = handle else {
            tracing::debug!(%device, "bytes for a serial device this instance does not hold");
            return;
        };
        let answer = handle.write(payload.to_vec());
        let device = device.to_string();
        tokio::spawn(async move {
            match answer.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(%device, error = %e, "bytes not sent"),
                Err(_) => tracing::warn!(%device, "bytes not sent: the device task stopped"),
            }
        });
    }
}
