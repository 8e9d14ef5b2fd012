//! The house as the page sees it, kept from the instance's own broker, and the commands the
//! page sends.
//!
//! The web server joins the embedded broker's router in process, as the agent does
//! ([`crate::broker::local`]), and reads what every MQTT user may read: each object's
//! retained state (with its holder and availability), input events and instance status. So
//! the page shows exactly what this instance's replica publishes, without a second path into
//! the agent. Every change becomes one Server-Sent Event frame on a broadcast channel.
//!
//! A click or a drop is published on `<base>/<object>/set` like a user's MQTT command: the
//! topic is checked with [`acl::may_publish`] for that user's role, the `pimesh-sender` user
//! property names the user as the front door would, and the answer comes back on this
//! instance's reply topic under `<base>/client/`. The agent then routes it as any command:
//! here when this instance holds the object, else forwarded to its holder.

use super::layout::{self, Area};
use crate::api::{self, Outcome, Reply, SetRequest};
use crate::broker::local::{LocalEvent, LocalLink, LocalRx, PublishProperties};
use crate::config::WebRoom;
use crate::door::acl::{self, Role};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Commands waiting for their answer at once; more are refused as busy.
pub const MAX_PENDING: usize = 256;
/// How long a command waits for its answer (the agent answers `timeout` itself before).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(15);
/// How often the rooms are drawn again after objects came, went or moved: at most this
/// often, so a house of thousands arriving at once costs one layout, not one per object.
pub const LAYOUT_EVERY: Duration = Duration::from_millis(100);
/// How often the peer list is asked for while some page is open.
pub const PEERS_EVERY: Duration = Duration::from_secs(2);
/// Frames a slow page may fall behind before it is sent the whole house again.
const BACKLOG: usize = 512;

/// What the page shows, as JSON values ready to send.
#[derive(Debug, Default)]
struct State {
    /// Each object's public state, by id.
    objects: BTreeMap<String, Shown>,
    /// Each input's last press: `{"event": "single", "at": <unix ms>}`.
    presses: BTreeMap<String, Value>,
    /// The mesh as `pimesh peers` shows it.
    peers: Value,
    /// The rooms as drawn.
    areas: Vec<Area>,
    /// An object came, went or moved since `areas` was computed.
    layout_dirty: bool,
    /// The last state of each object that changed while no page listened, as published:
    /// parsed only once a page or a move needs the house ([`House::settle`]), so an instance
    /// nobody watches spends nothing on the page per command.
    unparsed: HashMap<String, Vec<u8>>,
}

/// An object's public state as the page gets it: the JSON text, and where the object is for
/// the layout. Text, not a parsed `Value`: a value costs about 1 KiB an object more.
#[derive(Debug, PartialEq)]
struct Shown {
    /// The state as JSON (as `serde_json` writes the parsed value: keys sorted).
    json: Box<str>,
    /// Its `room`, when that is text.
    room: Option<Box<str>>,
    /// Its `x`, 0 when that is not a number.
    x: f64,
    /// Its `y`, likewise.
    y: f64,
}

impl Shown {
    /// What the page keeps of state `v`.
    fn of(v: &Value) -> Shown {
        Shown {
            json: v.to_string().into(),
            room: v["room"].as_str().map(Into::into),
            x: v["x"].as_f64().unwrap_or(0.0),
            y: v["y"].as_f64().unwrap_or(0.0),
        }
    }

    /// Where it is, for the layout.
    fn place(&self) -> (Option<&str>, f64, f64) {
        (self.room.as_deref(), self.x, self.y)
    }
}

/// Why a command from the page did not get an answer.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("user {0:?} may not send commands to {1:?}")]
    Forbidden(String, String),
    #[error("{0:?} is not an object id")]
    BadId(String),
    #[error("too many commands are waiting for an answer; try again")]
    Busy,
    #[error("no answer within {} s", COMMAND_TIMEOUT.as_secs())]
    Timeout,
    #[error("the embedded broker refused the command: {0}")]
    Link(String),
}

/// The house and the command path, shared by every connection.
pub struct House {
    /// Base of the public topics.
    base: String,
    /// This instance, for the page's title.
    me: Value,
    /// Our link to the router.
    link: LocalLink,
    /// Where answers to our commands arrive.
    reply_topic: String,
    /// Where answers to our peer requests arrive.
    peers_topic: String,
    /// Our client id in `pimesh-sender`.
    client_id: String,
    /// Rooms laid out in the config.
    fixed_rooms: Vec<WebRoom>,
    /// What the page shows.
    state: Mutex<State>,
    /// SSE frames of every change.
    events: broadcast::Sender<Arc<str>>,
    /// Commands waiting for their answer, by our id.
    pending: Mutex<HashMap<String, oneshot::Sender<Reply>>>,
    /// Numbers our command ids.
    next_id: AtomicU64,
}

/// One SSE frame.
pub fn frame(event: &str, data: &Value) -> Arc<str> {
    format!("event: {event}\ndata: {data}\n\n").into()
}

impl House {
    /// The house of instance `uuid` called `name`, over `link`.
    pub fn new(
        base: &str,
        uuid: Uuid,
        name: &str,
        link: LocalLink,
        fixed_rooms: Vec<WebRoom>,
    ) -> House {
        let client_id = format!("web-{}", &uuid.simple().to_string()[..8]);
        House {
            base: base.to_string(),
            me: json!({"name": name, "uuid": uuid}),
            link,
            // Answers to the page are internal: a `<base>/#` subscriber sees the house only.
            reply_topic: format!("{}/client/{client_id}/reply", api::internal(base)),
            peers_topic: format!("{}/client/{client_id}/peers", api::internal(base)),
            client_id,
            fixed_rooms,
            state: Mutex::new(State {
                peers: json!([]),
                ..Default::default()
            }),
            events: broadcast::channel(BACKLOG).0,
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        }
    }

    /// A receiver of every change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<str>> {
        self.events.subscribe()
    }

    /// Takes in the states that changed while no page listened; no frames, since every page
    /// that listens now asks for the house after it subscribed.
    fn settle(s: &mut State) {
        for (id, payload) in std::mem::take(&mut s.unparsed) {
            Self::apply_state(s, &id, &payload);
        }
    }

    /// Keeps `id`'s state `payload` (empty: deleted); the frame to send, if it changed.
    fn apply_state(s: &mut State, id: &str, payload: &[u8]) -> Option<Arc<str>> {
        let value = serde_json::from_slice::<Value>(payload)
            .ok()
            .filter(|v| v["id"] == id && v["kind"] != "automation");
        match value.as_ref().map(|v| (v, Shown::of(v))) {
            Some((v, new)) if s.objects.get(id) != Some(&new) => {
                s.layout_dirty |= s.objects.get(id).map(Shown::place) != Some(new.place());
                s.objects.insert(id.to_string(), new);
                Some(frame("object", v))
            }
            None if s.objects.remove(id).is_some() => {
                s.presses.remove(id);
                s.layout_dirty = true;
                Some(frame("gone", &json!({"id": id})))
            }
            _ => None,
        }
    }

    /// The whole house as one JSON value, for `user`.
    pub fn snapshot(&self, user: &str) -> Value {
        let Ok(mut s) = self.state.lock() else {
            return Value::Null;
        };
        if let Some(rooms) = self.relayout(&mut s) {
            let _ = self.events.send(rooms);
        }
        json!({
            "me": self.me,
            "user": user,
            "objects": s
                .objects
                .values()
                .map(|o| serde_json::from_str(&o.json).unwrap_or(Value::Null))
                .collect::<Vec<Value>>(),
            "rooms": s.areas,
            "peers": s.peers,
            "presses": s.presses,
        })
    }

    /// Reads the router until `stop`: keeps the state and broadcasts its changes.
    pub async fn run(self: Arc<Self>, mut rx: LocalRx, stop: CancellationToken) {
        let base = &self.base;
        let filters = [
            api::state_filter(base),
            format!("{base}/+/event"),
            api::status_filter(base),
            self.reply_topic.clone(),
            self.peers_topic.clone(),
        ];
        if let Err(e) = self.link.subscribe_many(&filters) {
            tracing::error!(error = %e, "the web page cannot subscribe to the house");
            return;
        }
        let mut tick = tokio::time::interval(PEERS_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut layout_tick = tokio::time::interval(LAYOUT_EVERY);
        layout_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                ev = rx.recv() => match ev {
                    LocalEvent::Message { topic, payload, .. } => self.on_message(&topic, &payload),
                    LocalEvent::Subscribed => self.ask_peers(),
                    LocalEvent::Closed => {
                        tracing::error!("the embedded broker dropped the web page's link");
                        return;
                    }
                },
                // A page that comes draws the rooms as it asks for the house.
                _ = layout_tick.tick(), if self.events.receiver_count() > 0 => {
                    self.change(|s| self.relayout(s).map(|f| vec![f]));
                }
                _ = tick.tick() => {
                    if self.events.receiver_count() > 0 {
                        self.ask_peers();
                    }
                }
            }
        }
    }

    /// Asks the agent for the mesh view.
    fn ask_peers(&self) {
        let req = json!({"reply-to": self.peers_topic});
        let topic = api::peers_topic(&self.base);
        if let Err(e) = self
            .link
            .publish_with(&topic, false, req.to_string().into_bytes(), None)
        {
            tracing::warn!(error = %e, "the web page cannot ask for the peers");
        }
    }

    fn on_message(&self, topic: &str, payload: &[u8]) {
        if topic == self.reply_topic {
            if let Ok(reply) = serde_json::from_slice::<Reply>(payload) {
                let waiter = reply
                    .id
                    .as_ref()
                    .and_then(|id| self.pending.lock().ok()?.remove(id));
                if let Some(w) = waiter {
                    let _ = w.send(reply);
                }
            }
            return;
        }
        if topic == self.peers_topic {
            if let Ok(peers @ Value::Array(_)) = serde_json::from_slice::<Value>(payload) {
                self.change(|s| {
                    (s.peers != peers).then(|| {
                        s.peers = peers.clone();
                        vec![frame("peers", &peers)]
                    })
                });
            }
            return;
        }
        let Some(rest) = topic
            .strip_prefix(&self.base)
            .and_then(|r| r.strip_prefix('/'))
        else {
            return;
        };
        if rest.starts_with("instance/") {
            // An instance came or went: the peer list changed.
            self.ask_peers();
        } else if let Some(id) = rest.strip_suffix("/event") {
            self.on_event(id, payload);
        } else if !rest.contains('/') {
            self.on_state(rest, payload);
        }
    }

    /// An object's retained state changed (empty: it was deleted). With no page listening it
    /// is only kept as it came, for [`House::settle`].
    fn on_state(&self, id: &str, payload: &[u8]) {
        if self.events.receiver_count() == 0 {
            if let Ok(mut s) = self.state.lock() {
                // An object's buffer is reused, change after change.
                match s.unparsed.get_mut(id) {
                    Some(kept) => {
                        kept.clear();
                        kept.extend_from_slice(payload);
                    }
                    None => {
                        s.unparsed.insert(id.to_string(), payload.to_vec());
                    }
                }
            }
            return;
        }
        self.change(|s| {
            Self::settle(s);
            Self::apply_state(s, id, payload).map(|f| vec![f])
        });
    }

    /// Draws the rooms again if objects came, went or moved; the `rooms` frame if they
    /// changed.
    fn relayout(&self, s: &mut State) -> Option<Arc<str>> {
        Self::settle(s);
        if !std::mem::take(&mut s.layout_dirty) {
            return None;
        }
        let areas = layout::areas(
            s.objects
                .values()
                .map(|o| (o.room.as_deref().unwrap_or(""), o.x, o.y)),
            &self.fixed_rooms,
        );
        (areas != s.areas).then(|| {
            s.areas = areas;
            frame("rooms", &json!(s.areas))
        })
    }

    /// An object's event: an input's press pattern is kept as its last press.
    fn on_event(&self, id: &str, payload: &[u8]) {
        let Ok(word) = std::str::from_utf8(payload) else {
            return;
        };
        let word = word.trim();
        if word.is_empty()
            || word.len() > 16
            || !word.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return;
        }
        let press = json!({"id": id, "event": word, "at": crate::clock::now_ms()});
        self.change(|s| {
            Self::settle(s);
            s.objects.contains_key(id).then(|| {
                s.presses.insert(id.to_string(), press.clone());
                vec![frame("press", &press)]
            })
        });
    }

    /// Applies `f` to the state; broadcasts the frames it returns.
    fn change(&self, f: impl FnOnce(&mut State) -> Option<Vec<Arc<str>>>) {
        let frames = match self.state.lock() {
            Ok(mut s) => f(&mut s),
            Err(_) => None,
        };
        for fr in frames.unwrap_or_default() {
            // Nobody listening is not an error.
            let _ = self.events.send(fr);
        }
    }

    /// Moves `object` to (x, y) for `user`; it takes the room it lands in, or keeps its own.
    pub async fn move_to(
        &self,
        user: &str,
        object: &str,
        x: f64,
        y: f64,
    ) -> Result<Reply, CommandError> {
        let room = {
            let mut s = self.state.lock().map_err(|_| CommandError::Busy)?;
            if let Some(rooms) = self.relayout(&mut s) {
                let _ = self.events.send(rooms);
            }
            layout::room_at(&s.areas, x, y)
                .map(str::to_string)
                .or_else(|| s.objects.get(object)?.room.as_deref().map(str::to_string))
        };
        let req = SetRequest {
            room,
            x: Some(x),
            y: Some(y),
            ..Default::default()
        };
        self.command(user, object, req).await
    }

    /// Sends `req` for `object` as `user` would over MQTT and waits for the answer.
    pub async fn command(
        &self,
        user: &str,
        object: &str,
        mut req: SetRequest,
    ) -> Result<Reply, CommandError> {
        let id = crate::model::ObjectId::new(object)
            .map_err(|_| CommandError::BadId(object.chars().take(64).collect()))?;
        if id.is_system() {
            return Err(CommandError::BadId(object.into()));
        }
        let topic = format!("{}/{}/set", self.base, id);
        let role = Role::User(user.to_string());
        if !acl::may_publish(&self.base, &role, &topic) {
            return Err(CommandError::Forbidden(user.into(), object.into()));
        }
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let cid = format!(
            "w{n}-{}",
            crate::secret::to_hex(&crate::secret::random::<4>())
        );
        req.id = Some(cid.clone());
        req.reply_to = Some(self.reply_topic.clone());
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = self.pending.lock().map_err(|_| CommandError::Busy)?;
            if pending.len() >= MAX_PENDING {
                return Err(CommandError::Busy);
            }
            pending.insert(cid.clone(), tx);
        }
        let properties = PublishProperties {
            user_properties: vec![(
                crate::door::SENDER_PROPERTY.to_string(),
                format!("{}/{}", role.describe(), self.client_id),
            )],
            ..Default::default()
        };
        let payload = serde_json::to_vec(&req).unwrap_or_default();
        let sent = self
            .link
            .publish_with(&topic, false, payload, Some(properties));
        let result = match sent {
            Err(e) => Err(CommandError::Link(e.to_string())),
            Ok(()) => match tokio::time::timeout(COMMAND_TIMEOUT, rx).await {
                Ok(Ok(reply)) => Ok(reply),
                _ => Err(CommandError::Timeout),
            },
        };
        if let Ok(mut p) = self.pending.lock() {
            p.remove(&cid);
        }
        result
    }
}

/// The HTTP status for an answer.
pub fn status_of(reply: &Reply) -> u16 {
    match reply.result {
        Outcome::Ok => 200,
        Outcome::Rejected => 400,
        Outcome::Failed => 502,
        Outcome::Unavailable => 503,
        Outcome::Timeout | Outcome::Unknown => 504,
    }
}
