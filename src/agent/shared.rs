//! The agent's side of the shared broker (`[broker] external`, see `crate::external`): who
//! speaks for the house there, what its clients send, and what it lost while away.

use super::Agent;
use crate::api;
use crate::external::{ExternalEvent, Plan};
use crate::model::ObjectId;
use crate::ratelimit::warn_limited;
use uuid::Uuid;

/// How a client of the shared broker is named as a command's sender, after the front
/// door's `<role>/<client id>`: the shared broker does not say who published, so the
/// client's response topic stands in for its id (two clients numbering their commands from
/// 1 stay apart when they ask for answers on their own topics).
const SHARED_SENDER: &str = "shared broker/";

/// Whether a command's sender is a client of the shared broker.
pub(super) fn is_shared_sender(sender: &str) -> bool {
    sender.starts_with(SHARED_SENDER)
}

/// What instance `uuid` subscribes to on the shared broker, and its will.
pub(super) fn plan(base: &str, uuid: Uuid, ha_status: Option<String>) -> Plan {
    Plan {
        commands: vec![api::set_filter(base), api::send_filter(base)],
        each: ha_status.into_iter().collect(),
        states: api::state_filter(base),
        status: api::status_topic(base, uuid),
        // A group name cannot hold a topic separator or a wildcard.
        group: format!("pimesh-{}", base.replace(['/', '+', '#'], "-")),
    }
}

impl Agent {
    /// Handles what the shared broker's link reports.
    pub(super) async fn on_shared(&mut self, ev: ExternalEvent) {
        match ev {
            ExternalEvent::Up => {
                tracing::info!("connected to the shared broker");
                self.node.set_shared(true);
                if let Some(shared) = self.link.shared() {
                    let status = api::status_topic(&self.base, self.uuid);
                    shared.publish(&status, true, b"online".to_vec(), None);
                }
                if self.link.is_speaker() {
                    // The broker may have restarted without its retained messages.
                    self.republish_shared().await;
                }
            }
            ExternalEvent::Down(why) => {
                self.node.set_shared(false);
                warn_limited!(self.warns, "shared-down", error = %why, "the shared broker is unreachable; retrying (the mesh and this instance's own broker keep working)");
            }
            ExternalEvent::Message {
                topic,
                payload,
                retain,
                response,
            } => {
                if self.is_ha_status(&topic) {
                    self.on_ha_status(&payload);
                    return;
                }
                if let Some(api::Route::State(object)) = api::route(&self.base, &topic) {
                    // Watched while we speak for the house: someone else's value is
                    // replaced by ours (our own echo is recognised).
                    if self.link.is_speaker() {
                        self.on_state_topic(&object, &payload).await;
                    }
                    return;
                }
                if retain {
                    // Left on the broker, it would run again on every subscribe: only a
                    // command sent now is one.
                    if !payload.is_empty() {
                        let shown: String = topic.chars().take(80).collect();
                        warn_limited!(self.warns, "shared-retained-command", topic = %shown, "ignoring a retained command on the shared broker and clearing it; send commands without the retain flag");
                        if let Some(shared) = self.link.shared() {
                            shared.publish(&topic, true, Vec::new(), None);
                        }
                    }
                    return;
                }
                let sender = format!(
                    "{SHARED_SENDER}{}",
                    response.as_ref().map(|r| r.topic.as_str()).unwrap_or("")
                );
                self.on_message(&topic, &payload, response, Some(&sender))
                    .await;
            }
        }
    }

    /// Every heartbeat, with a shared broker: of the live instances connected to it, the one
    /// with the lowest UUID speaks for the house there (each heartbeat says whether its
    /// sender is connected, so one that cannot reach the shared broker leaves it to the
    /// next). One that starts speaking, or that had to drop a message, publishes everything
    /// again.
    pub(super) async fn shared_beat(&mut self) {
        let Some(shared) = self.link.shared() else {
            return;
        };
        let dropped = shared.take_dropped();
        let speaker = self.node.shared()
            && self
                .peers
                .online_on_shared()
                .iter()
                .all(|peer| *peer > self.uuid);
        let changed = self.link.set_speaker(speaker);
        shared.watch_states(speaker);
        if changed {
            tracing::info!(
                speaker,
                "{} for the house on the shared broker",
                if speaker {
                    "speaking"
                } else {
                    "no longer speaking"
                }
            );
        }
        if speaker && (changed || dropped) {
            self.republish_shared().await;
        }
    }

    /// Publishes every object's state, every live peer's status and every discovery config
    /// again (through our broker, which mirrors them to the shared one while we speak).
    async fn republish_shared(&mut self) {
        let ids: Vec<ObjectId> = self.replica().objects().map(|(id, _)| id.clone()).collect();
        self.node.mark_dirty(ids);
        for peer in self.peers.online() {
            self.publish_status(peer, true).await;
        }
        self.announce_all().await;
    }
}
