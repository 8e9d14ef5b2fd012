//! Commands arriving on the public topics (`…/set`, `agent/get`, `agent/peers`): checked
//! here, then handed to the dispatcher (`mesh::dispatch`, through `forward.rs`), which says
//! where each runs and who hears its answer; `execute_local` runs a virtual command here.
//!
//! Every command gets exactly one answer: on the sender's `reply-to` topic for clients, as a
//! forwarded reply for peers. Bad input is answered `rejected` and changes nothing. Command
//! ids make execution at-most-once: an executor answers a repeated id from memory.

use super::state::claimants;
use super::{on_off, Agent};
use crate::api::{self, Outcome, Reply, Route, SetRequest};
use crate::broker::local::{PublishProperties, ResponseTo};
use crate::model::{self, ObjectId, Value};
use crate::ratelimit::warn_limited;

impl Agent {
    /// Dispatches a message from our own broker. `response` is where an MQTT 5 client asked
    /// for the answer; it takes precedence over a `reply-to` in the payload.
    pub(super) async fn on_message(
        &mut self,
        topic: &str,
        payload: &[u8],
        response: Option<ResponseTo>,
        sender: Option<&str>,
    ) {
        match api::route(&self.base, topic) {
            Some(Route::Set(object)) => self.on_set(&object, payload, response, sender).await,
            Some(Route::Get) => {
                let reply_to =
                    self.reply_for(response.or_else(|| request_reply_to(payload)), sender);
                self.on_get(payload, reply_to).await
            }
            Some(Route::Peers) => {
                let reply_to =
                    self.reply_for(response.or_else(|| request_reply_to(payload)), sender);
                self.on_peers(reply_to).await
            }
            Some(Route::Send(device)) => self.on_send(&device, payload),
            Some(Route::State(object)) => self.on_state_topic(&object, payload).await,
            Some(Route::Status(uuid)) => self.on_status_topic(uuid, payload).await,
            None => {
                tracing::debug!(%topic, "ignoring message on a topic the agent does not handle")
            }
        }
    }

    /// Handles `<base>/<object>/set` from a client.
    ///
    /// A command id only means something to its sender and for one object: two clients that
    /// both number their commands from 1 must not be taken for each other. So the id the
    /// mesh dedupes and routes by is a digest of (sender, object, id); the answer carries the
    /// client's own id.
    async fn on_set(
        &mut self,
        object: &str,
        payload: &[u8],
        response: Option<ResponseTo>,
        sender: Option<&str>,
    ) {
        let mut req = match api::parse_set(payload) {
            Ok(req) => req,
            Err(e) => {
                let shown: String = object.chars().take(crate::model::MAX_ID_LEN).collect();
                warn_limited!(self.warns, "rejected-command", object = %shown, error = %e, "rejected command");
                let (id, reply_to) = api::salvage_reply_address(payload);
                let reply = self.reply(object, id, Outcome::Rejected, Some(e.to_string()));
                let to = self.reply_for(response.or(reply_to.map(ResponseTo::topic)), sender);
                self.answer(to.as_ref(), reply).await;
                return;
            }
        };
        let reply_to = self.reply_for(
            response.or(req.reply_to.take().map(ResponseTo::topic)),
            sender,
        );
        let client_id = req.id.take();
        self.command(sender, object, client_id, req, reply_to);
    }

    /// Where the answer to a request from `sender` goes: on the broker the request came
    /// through, and nowhere when the topic is another user's answers (logged).
    fn reply_for(&mut self, to: Option<ResponseTo>, sender: Option<&str>) -> Option<ResponseTo> {
        let mut to = to?;
        if !crate::door::acl::may_answer_to(&self.base, &to.topic, sender) {
            let shown: String = to.topic.chars().take(80).collect();
            warn_limited!(self.warns, "foreign-reply-topic", topic = %shown, sender = sender.unwrap_or("-"), "not answering on another user's answer topic");
            return None;
        }
        to.shared |= sender.is_some_and(super::shared::is_shared_sender);
        Some(to)
    }

    /// Executes a request for an object on this instance and builds its answer. Hardware is
    /// only ever touched when this instance holds it, whatever routed the command here.
    pub(super) fn execute_local(&mut self, id: &ObjectId, req: &SetRequest, cmd: &str) -> Reply {
        let object = id.as_str();
        let Some(obj) = self.replica().get(id).filter(|o| !o.is_deleted()) else {
            return self.reply(
                object,
                Some(cmd.into()),
                Outcome::Rejected,
                Some(format!("unknown object {object:?}")),
            );
        };
        let mine = claimants(self.replica(), obj).contains(&self.uuid);
        let kind = obj.text(model::KIND).unwrap_or("object").to_string();
        let current_on = obj.text(model::STATE) == Some(model::ON);
        let mut props: Vec<(String, Value)> = Vec::new();
        if let Some(switch) = req.state {
            if !mine {
                let why = format!("{object} is not held or run by this instance");
                return self.reply(object, Some(cmd.into()), Outcome::Unavailable, Some(why));
            }
            let on = switch.target(current_on);
            match kind.as_str() {
                "virtual" => {}
                "relay" => {
                    // Relays we hold go through the relay bank (`run_local`), never here.
                    let why = format!("{object} is not held by this instance");
                    return self.reply(object, Some(cmd.into()), Outcome::Unavailable, Some(why));
                }
                _ => {
                    let why = format!("{object} is an {kind}; its state cannot be set");
                    return self.reply(object, Some(cmd.into()), Outcome::Rejected, Some(why));
                }
            }
            props.push((model::STATE.into(), on_off(on).into()));
        }
        props.extend(super::hardware::move_props(req));
        self.record_command(id, props);
        tracing::debug!(object = %id, command = %cmd, "command executed");
        let mut reply = self.reply(object, Some(cmd.into()), Outcome::Ok, None);
        reply.state = Some(self.state_json(id));
        reply
    }

    /// An answer from this instance.
    pub(super) fn reply(
        &self,
        object: &str,
        id: Option<String>,
        result: Outcome,
        error: Option<String>,
    ) -> Reply {
        let refusing = self.store.refusing();
        crate::mesh::dispatch::make_reply(
            self.uuid, &self.name, refusing, object, id, result, error,
        )
    }

    /// Publishes an answer where a client asked for it, with its correlation data.
    pub(super) async fn answer(&mut self, reply_to: Option<&ResponseTo>, reply: Reply) {
        let Some(to) = reply_to else { return };
        let payload = serde_json::to_vec(&reply).unwrap_or_default();
        self.publish_answer(to, payload);
    }

    /// Publishes `payload` on a client's reply topic; MQTT 5 clients get their correlation
    /// data back as a property.
    fn publish_answer(&mut self, to: &ResponseTo, payload: Vec<u8>) {
        let topic = to.topic.as_str();
        if !valid_reply_topic(topic) || !crate::door::acl::may_answer_on(&self.base, topic) {
            let shown: String = topic.chars().take(80).collect();
            warn_limited!(self.warns, "bad-reply-topic", topic = %shown, "not answering on an invalid reply topic (answers go outside the base topic and the $ topics, or below <base>/client/ or $pimesh/<base>/client/)");
            return;
        }
        let properties = to.correlation.clone().map(|data| PublishProperties {
            correlation_data: Some(data),
            ..Default::default()
        });
        if let Err(e) = self.link.answer(to, payload, properties) {
            warn_limited!(self.warns, "answer-not-sent", %topic, error = %e, "could not publish the answer");
        }
    }

    /// Handles `$pimesh/<base>/agent/get`: answers with every live object.
    async fn on_get(&mut self, payload: &[u8], reply_to: Option<ResponseTo>) {
        let request = serde_json::from_slice::<api::GetRequest>(payload).ok();
        let id = request.as_ref().and_then(|r| r.id.clone());
        let Some(reply_to) = reply_to else {
            warn_limited!(
                self.warns,
                "bad-get",
                "ignoring a get request without a valid reply-to"
            );
            return;
        };
        let objects = self
            .node
            .replica()
            .objects()
            .filter(|(id, o)| !o.is_deleted() && !id.is_system())
            .map(|(id, _)| self.state_json(id))
            .collect();
        let reply = api::GetReply {
            id,
            instance: self.name.clone(),
            uuid: self.uuid,
            objects,
        };
        self.publish_answer(&reply_to, serde_json::to_vec(&reply).unwrap_or_default());
    }

    /// Handles `$pimesh/<base>/agent/peers`: answers with the mesh as this instance sees it.
    async fn on_peers(&mut self, reply_to: Option<ResponseTo>) {
        let Some(reply_to) = reply_to else {
            warn_limited!(
                self.warns,
                "bad-peers",
                "ignoring a peers request without a valid reply-to"
            );
            return;
        };
        let rows = self.peers.rows(&self.my_addrs(), crate::clock::now_ms());
        self.publish_answer(&reply_to, serde_json::to_vec(&rows).unwrap_or_default());
    }
}

/// The `reply-to` of a get/peers request, if present.
fn request_reply_to(payload: &[u8]) -> Option<ResponseTo> {
    let req: api::GetRequest = serde_json::from_slice(payload).ok()?;
    Some(ResponseTo::topic(req.reply_to))
}

/// A topic we may publish an answer on: non-empty, no wildcards, not too long. Which `$`
/// topics may be one (only the internal replies) is `door::acl::may_answer_on`'s to say.
fn valid_reply_topic(topic: &str) -> bool {
    !topic.is_empty() && !topic.contains(['+', '#', '\0']) && topic.len() < 256
}
