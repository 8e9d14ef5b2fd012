//! Commands arriving on the public topics: `…/set` for one object, `agent/get` for all.
//!
//! Every `set` gets exactly one answer when the sender gave a `reply-to` topic, and a log
//! line either way. Bad input is answered `rejected` and changes nothing.

use super::state::claimants;
use super::{on_off, Agent};
use crate::api::{self, Outcome, Reply, Route, SetRequest, Switch};
use crate::model::{self, ObjectId, Value};
use crate::mqtt::Qos;

impl Agent {
    /// Dispatches a message from our own broker.
    pub(super) async fn on_message(&mut self, topic: &str, payload: &[u8]) {
        match api::route(&self.base, topic) {
            Some(Route::Set(object)) => self.on_set(&object, payload).await,
            Some(Route::Get) => self.on_get(payload).await,
            Some(Route::Peers) => self.on_peers(payload).await,
            None => {
                tracing::debug!(%topic, "ignoring message on a topic the agent does not handle")
            }
        }
    }

    /// Handles `<base>/<object>/set`.
    async fn on_set(&mut self, object: &str, payload: &[u8]) {
        let req = match api::parse_set(payload) {
            Ok(req) => req,
            Err(e) => {
                tracing::warn!(%object, error = %e, "rejected command");
                let (id, reply_to) = salvage_reply_address(payload);
                let reply = self.reply(object, id, Outcome::Rejected, Some(e.to_string()));
                self.answer(reply_to.as_deref(), reply).await;
                return;
            }
        };
        if let Some(id) = &req.id {
            if let Some((_, earlier)) = self.recent.iter().find(|(seen, _)| seen == id) {
                tracing::info!(%object, command = %id, "duplicate command: answering again, not executing again");
                let earlier = earlier.clone();
                self.answer(req.reply_to.as_deref(), earlier).await;
                return;
            }
        }
        let reply = self.execute(object, &req).await;
        if reply.result == Outcome::Ok {
            tracing::info!(%object, command = ?req.id, "command executed");
        } else {
            tracing::warn!(%object, result = ?reply.result, error = ?reply.error, "command not executed");
        }
        if let Some(id) = &req.id {
            if self.recent.is_full() {
                self.recent.pop_front();
            }
            let _ = self.recent.push_back((id.clone(), reply.clone()));
        }
        self.answer(req.reply_to.as_deref(), reply).await;
    }

    /// Executes a checked request against one object and builds its answer.
    async fn execute(&mut self, object: &str, req: &SetRequest) -> Reply {
        let cmd = req.id.clone();
        let rejected = |this: &Self, why: String| {
            this.reply(object, cmd.clone(), Outcome::Rejected, Some(why))
        };
        let Ok(id) = ObjectId::new(object) else {
            return rejected(self, format!("unknown object {object:?}"));
        };
        let Some(obj) = self.replica.get(&id).filter(|o| !o.is_deleted()) else {
            return rejected(self, format!("unknown object {object:?}"));
        };
        let mut props: Vec<(String, Value)> = Vec::new();
        if let Some(switch) = req.state {
            match obj.text(model::KIND) {
                Some("relay") => {}
                Some("virtual") if self.virtuals.contains(&id) => {
                    let on = match switch {
                        Switch::On => true,
                        Switch::Off => false,
                        Switch::Toggle => obj.text(model::STATE) != Some(model::ON),
                    };
                    props.push((model::STATE.into(), on_off(on).into()));
                }
                Some("virtual") => {
                    return self.reply(
                        object,
                        cmd,
                        Outcome::Unavailable,
                        Some(format!(
                            "{id} is a virtual object this instance does not run"
                        )),
                    );
                }
                other => {
                    let kind = other.unwrap_or("object").to_string();
                    return rejected(
                        self,
                        format!(
                            "{id} is an {kind}; its state comes from its pin and cannot be set"
                        ),
                    );
                }
            }
        }
        if let (Some(switch), Some("relay")) = (req.state, obj.text(model::KIND)) {
            let on = match switch {
                Switch::On => true,
                Switch::Off => false,
                Switch::Toggle => obj.text(model::STATE) != Some(model::ON),
            };
            let holders = claimants(obj);
            if holders.len() > 1 {
                let names: Vec<&str> = holders
                    .iter()
                    .map(|u| self.peers.name_of(*u).unwrap_or("?"))
                    .collect();
                return rejected(
                    self,
                    format!(
                        "{id} is claimed by more than one instance ({}); remove it from all configs but one",
                        names.join(", ")
                    ),
                );
            }
            let Some(relay) = self.relays.get_mut(&id) else {
                let holder = holders
                    .first()
                    .map(|u| {
                        self.peers
                            .name_of(*u)
                            .map(str::to_string)
                            .unwrap_or(u.to_string())
                    })
                    .unwrap_or_else(|| "no instance".into());
                return self.reply(
                    object,
                    cmd,
                    Outcome::Unavailable,
                    Some(format!("{id} is held by {holder}, which is not reachable")),
                );
            };
            if let Err(e) = relay.switch(on) {
                return self.reply(object, cmd, Outcome::Failed, Some(e.to_string()));
            }
            props.push((model::STATE.into(), on_off(on).into()));
        }
        if let Some(room) = &req.room {
            props.push((model::ROOM.into(), room.trim().into()));
        }
        if let Some(x) = req.x {
            props.push((model::X.into(), x.into()));
        }
        if let Some(y) = req.y {
            props.push((model::Y.into(), y.into()));
        }
        self.record(&id, props);
        let mut reply = self.reply(object, cmd, Outcome::Ok, None);
        reply.state = Some(self.state_json(&id));
        reply
    }

    /// An answer from this instance.
    fn reply(
        &self,
        object: &str,
        id: Option<String>,
        result: Outcome,
        error: Option<String>,
    ) -> Reply {
        Reply {
            id,
            object: object.to_string(),
            result,
            state: None,
            executed_by: Some(self.name.clone()),
            executed_by_uuid: Some(self.uuid),
            error,
        }
    }

    /// Publishes an answer where the sender asked for it.
    async fn answer(&self, reply_to: Option<&str>, reply: Reply) {
        let Some(topic) = reply_to else { return };
        if !valid_reply_topic(topic) {
            tracing::warn!(%topic, "not answering on an invalid reply-to topic");
            return;
        }
        let payload = serde_json::to_vec(&reply).unwrap_or_default();
        if let Err(e) = self
            .link
            .publish(topic, Qos::AtLeastOnce, false, payload)
            .await
        {
            tracing::warn!(%topic, error = %e, "could not publish the answer");
        }
    }

    /// Handles `<base>/agent/get`: answers with every live object.
    async fn on_get(&mut self, payload: &[u8]) {
        let req: api::GetRequest = match serde_json::from_slice(payload) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring a get request without a valid reply-to");
                return;
            }
        };
        if !valid_reply_topic(&req.reply_to) {
            tracing::warn!(topic = %req.reply_to, "ignoring a get request with an invalid reply-to");
            return;
        }
        let objects = self
            .replica
            .objects()
            .filter(|(_, o)| !o.is_deleted())
            .map(|(id, _)| self.state_json(id))
            .collect();
        let reply = api::GetReply {
            instance: self.name.clone(),
            uuid: self.uuid,
            objects,
        };
        let payload = serde_json::to_vec(&reply).unwrap_or_default();
        if let Err(e) = self
            .link
            .publish(&req.reply_to, Qos::AtLeastOnce, false, payload)
            .await
        {
            tracing::warn!(error = %e, "could not answer a get request");
        }
    }
}

impl Agent {
    /// Handles `<base>/agent/peers`: answers with the mesh as this instance sees it.
    async fn on_peers(&mut self, payload: &[u8]) {
        let Ok(req) = serde_json::from_slice::<api::GetRequest>(payload) else {
            tracing::warn!("ignoring a peers request without a valid reply-to");
            return;
        };
        if !valid_reply_topic(&req.reply_to) {
            return;
        }
        let rows = self.peers.rows(&self.my_addrs(), crate::clock::now_ms());
        let payload = serde_json::to_vec(&rows).unwrap_or_default();
        if let Err(e) = self
            .link
            .publish(&req.reply_to, Qos::AtLeastOnce, false, payload)
            .await
        {
            tracing::warn!(error = %e, "could not answer a peers request");
        }
    }
}

/// A topic we may publish an answer on: non-empty, no wildcards, not a `$` system topic.
fn valid_reply_topic(topic: &str) -> bool {
    !topic.is_empty() && !topic.contains(['+', '#']) && !topic.starts_with('$') && topic.len() < 256
}

/// For a payload that failed to parse, the command id and reply-to it may still carry, so
/// that a JSON client with a typo gets its `rejected` answer instead of silence.
fn salvage_reply_address(payload: &[u8]) -> (Option<String>, Option<String>) {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(payload)
    else {
        return (None, None);
    };
    let text = |k: &str| map.get(k).and_then(|v| v.as_str()).map(str::to_string);
    (text("id"), text("reply-to"))
}
