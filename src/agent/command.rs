//! Commands arriving on the public topics (`…/set`, `agent/get`, `agent/peers`), and running
//! a command wherever the router says.
//!
//! Every command gets exactly one answer: on the sender's `reply-to` topic for clients, as a
//! forwarded reply for peers. Bad input is answered `rejected` and changes nothing. Command
//! ids make execution at-most-once: an executor answers a repeated id from memory.

use super::forward::Origin;
use super::state::claimants;
use super::{on_off, Agent};
use crate::api::{self, Outcome, Reply, Route, SetRequest, Switch};
use crate::broker::local::{PublishProperties, ResponseTo};
use crate::model::{self, ObjectId, Value};
use crate::ratelimit::warn_limited;
use crate::router::{self, Target};

/// The id a client's command is known by in the mesh: a digest of who sent it, the object and
/// the client's own id, so equal ids of different clients or objects never meet.
pub(super) fn command_key(sender: Option<&str>, object: &str, id: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for part in [sender.unwrap_or(""), object, id] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    format!("c-{}", crate::secret::to_hex(&h.finalize()[..16]))
}

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
            Some(Route::Get) => self.on_get(payload, response).await,
            Some(Route::Peers) => self.on_peers(payload, response).await,
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
                let to = response.or(reply_to.map(ResponseTo::topic));
                self.answer(to.as_ref(), reply).await;
                return;
            }
        };
        let reply_to = response.or(req.reply_to.take().map(ResponseTo::topic));
        let client_id = req.id.take();
        if let Some(own) = &client_id {
            let key = command_key(sender, object, own);
            let waiter = || crate::mesh::commands::Waiter::Client {
                id: client_id.clone(),
                reply_to: reply_to.clone(),
            };
            if self.wait_if_in_progress(&key, waiter) {
                return;
            }
            if let Some(mut earlier) = self.commands.recall(&key) {
                tracing::info!(%object, command = %own, "duplicate command: answering again, not executing again");
                earlier.id = client_id;
                self.answer(reply_to.as_ref(), earlier).await;
                return;
            }
        }
        // Forwarded commands need an id for the executor's duplicate check.
        let id = match &client_id {
            Some(own) => command_key(sender, object, own),
            None => uuid::Uuid::new_v4().to_string(),
        };
        let origin = Origin::Client {
            reply_to,
            id: client_id,
            tried: Vec::new(),
        };
        self.dispatch(object, id, req, origin, false).await;
    }

    /// Runs a command here or sends it to the instance that must run it, and answers
    /// `origin` when done (now, or when the executor answers).
    pub(super) async fn dispatch(
        &mut self,
        object: &str,
        id: String,
        mut req: SetRequest,
        origin: Origin,
        onward: bool,
    ) {
        let reject = |this: &Self, why: String| {
            this.reply(object, Some(id.clone()), Outcome::Rejected, Some(why))
        };
        let Some(oid) = ObjectId::new(object)
            .ok()
            .filter(|oid| self.replica().get(oid).is_some_and(|o| !o.is_deleted()))
        else {
            let reply = reject(self, format!("unknown object {object:?}"));
            return self.respond(origin, reply).await;
        };
        if req.state.is_none() {
            // A move is replicated state: any instance records it.
            if let Some(reply) = self.fenced_reply(object, &id) {
                return self.respond(origin, reply).await;
            }
            let reply = self.execute_local(&oid, &req, &id);
            return self.respond(origin, reply).await;
        }
        let (kind, holders, now_on) = match self.replica().get(&oid) {
            Some(obj) => (
                obj.text(model::KIND).unwrap_or("object").to_string(),
                claimants(self.replica(), obj),
                obj.text(model::STATE) == Some(model::ON),
            ),
            None => ("object".to_string(), Vec::new(), false),
        };
        if let (Some(Switch::Toggle), "virtual") = (req.state, kind.as_str()) {
            // Resolved once, here: a retry on another executor then sets the same value.
            let on = Switch::Toggle.target(now_on);
            req.state = Some(if on { Switch::On } else { Switch::Off });
        }
        let skip = origin.tried();
        let route = self.route_for(&oid, &kind, holders, &skip);
        match route {
            router::Route::Local => match self.fenced_reply(object, &id) {
                Some(reply) => self.respond(origin, reply).await,
                None => self.run_local(&oid, &req, &id, origin).await,
            },
            router::Route::Forward(executor) => {
                self.forward(executor, object, id, req, origin, onward)
                    .await
            }
            router::Route::Unavailable(why) => {
                let reply = self.reply(object, Some(id), Outcome::Unavailable, Some(why));
                self.respond(origin, reply).await
            }
            router::Route::Rejected(why) => {
                let reply = reject(self, why);
                self.respond(origin, reply).await
            }
        }
    }

    /// The answer to a command this instance would run while it makes no change of its own
    /// (its store lost our updates and a peer has not sent them back yet).
    fn fenced_reply(&self, object: &str, id: &str) -> Option<Reply> {
        let why = self.node.fenced()?;
        let why = format!("this instance is fetching its own changes back from peers before it makes new ones ({why}); try again in a moment");
        Some(self.reply(object, Some(id.into()), Outcome::Unavailable, Some(why)))
    }

    /// Asks the router where a state command for `oid` runs.
    pub(super) fn route_for(
        &mut self,
        oid: &ObjectId,
        kind: &str,
        claimants: Vec<uuid::Uuid>,
        skip: &[uuid::Uuid],
    ) -> router::Route {
        let target = Target {
            id: oid.as_str(),
            kind,
            claimants,
        };
        let peers = &self.peers;
        router::route(
            self.uuid,
            &target,
            |u| peers.is_alive(u),
            skip,
            &mut self.rr,
            |u| {
                peers
                    .name_of(u)
                    .map(str::to_string)
                    .unwrap_or(u.to_string())
            },
        )
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
        tracing::info!(object = %id, command = %cmd, "command executed");
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
        // While the disk refuses writes, nothing this instance changes is durable.
        let persisted = (result == Outcome::Ok && self.store.refusing()).then_some(false);
        Reply {
            persisted,
            id,
            object: object.to_string(),
            result,
            state: None,
            executed_by: Some(self.name.clone()),
            executed_by_uuid: Some(self.uuid),
            error,
        }
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
        if let Err(e) = self.link.publish_with(topic, false, payload, properties) {
            warn_limited!(self.warns, "answer-not-sent", %topic, error = %e, "could not publish the answer");
        }
    }

    /// Handles `$pimesh/<base>/agent/get`: answers with every live object.
    async fn on_get(&mut self, payload: &[u8], response: Option<ResponseTo>) {
        let request = serde_json::from_slice::<api::GetRequest>(payload).ok();
        let id = request.as_ref().and_then(|r| r.id.clone());
        let Some(reply_to) = response.or(request.map(|r| ResponseTo::topic(r.reply_to))) else {
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
    async fn on_peers(&mut self, payload: &[u8], response: Option<ResponseTo>) {
        let Some(reply_to) = response.or_else(|| request_reply_to(payload)) else {
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
