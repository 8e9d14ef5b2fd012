//! The agent: starts every part in order, then owns the store and the hardware in one task.
//!
//! Start-up order matters for a house: the config is already valid, then the data dir is
//! locked, the store loaded, the broker bound (a port problem stops us before any relay
//! moves), and only then are pins claimed and power-on policies applied. After that a single
//! task owns the replica, the store and the plugins, and handles MQTT messages and input
//! edges one at a time, so no state is shared between tasks.

mod command;

use crate::api;
use crate::broker::{self, PortChoice};
use crate::clock;
use crate::config::{Config, InputConfig, PowerOn, RelayConfig};
use crate::hal;
use crate::identity;
use crate::model::{self, ObjectId, Value};
use crate::mqtt::{Link, LinkEvent, LinkOptions, Qos};
use crate::plugins::{relay, Input, Relay};
use crate::replica::{Replica, Store, Update};
use crate::runtime::{self, RuntimeInfo};
use rumqttc::LastWill;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Everything the agent needs to start, after the CLI merged flags into the config.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The validated configuration (objects, board, base topic).
    pub config: Config,
    /// Where the identity, store, runtime file and sim pins live.
    pub data_dir: PathBuf,
    /// The instance name.
    pub name: String,
    /// Address the broker listens on.
    pub bind: IpAddr,
    /// The broker's port policy.
    pub port: PortChoice,
}

/// Why the agent stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    #[error(transparent)]
    Runtime(#[from] runtime::RuntimeError),
    #[error("cannot load the store: {0}")]
    Store(#[from] crate::replica::StoreError),
    #[error(transparent)]
    Broker(#[from] broker::BrokerError),
    #[error("{0}")]
    Hardware(#[from] hal::HalError),
    #[error(
        "the embedded broker stopped unexpectedly; exiting so the service manager restarts pimesh"
    )]
    BrokerDied,
}

/// Events from hardware threads and timers into the agent task.
#[derive(Debug)]
enum Internal {
    /// Input number N saw a raw edge.
    Edge(usize),
    /// Input number N's debounce time has passed: read it now.
    Debounced(usize),
}

/// The agent task's state: the one owner of the store and the hardware.
struct Agent {
    /// This instance's UUID, stamped on every change it makes.
    uuid: Uuid,
    /// This instance's human name.
    name: String,
    /// Base of every public topic.
    base: String,
    /// The in-memory replicated store.
    replica: Replica,
    /// The store's files.
    store: Store,
    /// Relays this instance holds, by object id.
    relays: BTreeMap<ObjectId, Relay>,
    /// Inputs this instance holds; the index is what edge callbacks report.
    inputs: Vec<(ObjectId, Input)>,
    /// Link to our own embedded broker.
    link: Link,
    /// Sender for edges and debounce timers.
    internal: mpsc::UnboundedSender<Internal>,
    /// Answers to recently executed commands by command id, so a retried command is
    /// answered again instead of executed again.
    recent: heapless::Deque<(String, api::Reply), 256>,
}

/// Runs the agent until `cancel` fires or a fatal error happens.
pub async fn run(settings: Settings, cancel: CancellationToken) -> Result<(), AgentError> {
    let data_dir = settings.data_dir.clone();
    std::fs::create_dir_all(&data_dir).map_err(|source| identity::IdentityError::DataDir {
        dir: data_dir.clone(),
        source,
    })?;
    let _lock = runtime::lock(&data_dir)?;
    let uuid = identity::load_or_create(&data_dir)?;
    let (store, replica) = Store::open(&data_dir.join("store"), uuid)?;
    let base = settings.config.base_topic.clone();

    let mut broker = broker::start(settings.bind, settings.port)?;
    let mut gpio = hal::open(settings.config.board.backend, &data_dir)?;

    // The link outlives `cancel` so that `offline` can still be published on the way out.
    let link_stop = CancellationToken::new();
    let (link, mut link_rx) = Link::spawn(
        own_link_options(&base, uuid, broker.port),
        link_stop.clone(),
    );
    let (internal, mut internal_rx) = mpsc::unbounded_channel();
    let mut agent = Agent {
        uuid,
        name: settings.name.clone(),
        base,
        replica,
        store,
        relays: BTreeMap::new(),
        inputs: Vec::new(),
        link,
        internal,
        recent: heapless::Deque::new(),
    };
    agent.reconcile_objects(&settings.config);
    for cfg in &settings.config.relays {
        agent.claim_relay(gpio.as_mut(), cfg.clone())?;
    }
    for cfg in &settings.config.inputs {
        agent.claim_input(gpio.as_mut(), cfg.clone())?;
    }
    agent.flush_store();

    let info = RuntimeInfo {
        pid: std::process::id(),
        uuid,
        name: agent.name.clone(),
        port: broker.port,
        base_topic: agent.base.clone(),
    };
    info.write(&data_dir)?;
    tracing::info!(name = %agent.name, %uuid, port = broker.port, objects = agent.replica.len(), "pimesh agent running");

    let result = loop {
        tokio::select! {
            _ = cancel.cancelled() => break Ok(()),
            _ = &mut broker.died => break Err(AgentError::BrokerDied),
            Some(ev) = link_rx.recv() => agent.on_link(ev).await,
            Some(ev) = internal_rx.recv() => agent.on_internal(ev).await,
        }
    };
    agent.shut_down(&mut link_rx).await;
    link_stop.cancel();
    RuntimeInfo::remove(&data_dir);
    drop(gpio);
    result
}

/// The agent's own link: a will that marks the instance offline if the process dies.
fn own_link_options(base: &str, uuid: Uuid, port: u16) -> LinkOptions {
    let mut opts = LinkOptions::new("127.0.0.1", port, format!("pimesh-agent-{uuid}"));
    opts.last_will = Some(LastWill::new(
        api::status_topic(base, uuid),
        "offline",
        Qos::AtLeastOnce,
        true,
    ));
    opts
}

impl Agent {
    /// Makes the store agree with the config about which objects this instance holds:
    /// configured objects exist (room and position only on creation — a later move wins
    /// over the file), and objects we held that left the config are deleted.
    fn reconcile_objects(&mut self, config: &Config) {
        let mut configured = Vec::new();
        let objects = config
            .relays
            .iter()
            .map(|r| (&r.id, "relay", &r.name, &r.room, r.x, r.y))
            .chain(
                config
                    .inputs
                    .iter()
                    .map(|i| (&i.id, "input", &i.name, &i.room, i.x, i.y)),
            );
        for (id, kind, name, room, x, y) in objects {
            configured.push(id.clone());
            let holder = self.uuid.to_string();
            let mut props: Vec<(String, Value)> = vec![
                (model::KIND.into(), kind.into()),
                (model::HOLDER.into(), holder.into()),
                (model::NAME.into(), name.as_str().into()),
                (model::DELETED.into(), false.into()),
            ];
            let exists = self.replica.get(id).is_some_and(|o| !o.is_deleted());
            if !exists {
                props.push((model::ROOM.into(), room.as_str().into()));
                props.push((model::X.into(), x.into()));
                props.push((model::Y.into(), y.into()));
            }
            self.record(id, props);
        }
        let me = self.uuid.to_string();
        let gone: Vec<ObjectId> = self
            .replica
            .objects()
            .filter(|(id, o)| {
                !o.is_deleted() && o.text(model::HOLDER) == Some(&me) && !configured.contains(id)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            tracing::info!(object = %id, "object no longer in the config: deleting it");
            self.record(&id, vec![(model::DELETED.into(), true.into())]);
        }
    }

    /// Claims a relay's pin and applies its power-on policy.
    fn claim_relay(
        &mut self,
        gpio: &mut dyn hal::Gpio,
        cfg: RelayConfig,
    ) -> Result<(), hal::HalError> {
        let recorded = self
            .replica
            .get(&cfg.id)
            .and_then(|o| o.text(model::STATE))
            .map(|s| s == model::ON);
        let on = relay::power_on_state(cfg.power_on, recorded);
        if cfg.power_on == PowerOn::Restore {
            tracing::info!(object = %cfg.id, on, "restoring relay to its last state");
        }
        let id = cfg.id.clone();
        let relay = Relay::claim(gpio, cfg, on)?;
        self.relays.insert(id.clone(), relay);
        self.record(&id, vec![(model::STATE.into(), on_off(on).into())]);
        Ok(())
    }

    /// Claims an input's pin, records its current state and starts watching its edges.
    fn claim_input(
        &mut self,
        gpio: &mut dyn hal::Gpio,
        cfg: InputConfig,
    ) -> Result<(), hal::HalError> {
        let index = self.inputs.len();
        let tx = self.internal.clone();
        let id = cfg.id.clone();
        let input = Input::claim(
            gpio,
            cfg,
            Box::new(move |_level| {
                let _ = tx.send(Internal::Edge(index));
            }),
        )?;
        let on = input.is_on()?;
        self.inputs.push((id.clone(), input));
        self.record(&id, vec![(model::STATE.into(), on_off(on).into())]);
        Ok(())
    }

    /// Records local changes of one object: persist first, then apply. Returns whether
    /// anything changed. A failed disk write keeps the updates queued in the store (retried
    /// on the next write) and the change still takes effect: the hardware already moved.
    fn record(&mut self, id: &ObjectId, props: Vec<(String, Value)>) -> bool {
        let now = clock::now_ms();
        let updates = self.replica.prepare(id, props, now);
        if updates.is_empty() {
            return false;
        }
        if let Err(e) = self.store.append(&updates) {
            tracing::error!(error = %e, queued = self.store.pending(), "state not saved yet; will retry on the next change");
        }
        self.apply_all(&updates, now);
        true
    }

    /// Applies updates already persisted (or queued) to the in-memory replica.
    fn apply_all(&mut self, updates: &[Update], now: u64) {
        for u in updates {
            self.replica.apply(u, now);
        }
        if self.store.should_compact(&self.replica) {
            if let Err(e) = self.store.compact(&self.replica) {
                tracing::error!(error = %e, "store compaction failed; the log keeps growing until it succeeds");
            }
        }
    }

    /// Retries any queued store writes.
    fn flush_store(&mut self) {
        if let Err(e) = self.store.flush() {
            tracing::error!(error = %e, queued = self.store.pending(), "state not saved");
        }
    }

    /// Publishes the retained public state of one object (an empty retained message clears
    /// a deleted object's topic).
    async fn publish_state(&self, id: &ObjectId) {
        let topic = api::state_topic(&self.base, id);
        let payload = match self.replica.get(id) {
            Some(obj) if !obj.is_deleted() => self.state_json(id).to_string().into_bytes(),
            _ => Vec::new(),
        };
        if let Err(e) = self
            .link
            .publish(&topic, Qos::AtLeastOnce, true, payload)
            .await
        {
            tracing::warn!(%topic, error = %e, "could not publish state");
        }
    }

    /// The public JSON of one object.
    fn state_json(&self, id: &ObjectId) -> serde_json::Value {
        match self.replica.get(id) {
            Some(obj) => {
                let holder = obj.text(model::HOLDER);
                let name =
                    (holder == Some(self.uuid.to_string().as_str())).then_some(self.name.as_str());
                api::state_json(id, obj, name)
            }
            None => serde_json::Value::Null,
        }
    }

    /// Handles an event of the link to our own broker.
    async fn on_link(&mut self, ev: LinkEvent) {
        match ev {
            LinkEvent::Connected => {
                for filter in [api::set_filter(&self.base), api::get_topic(&self.base)] {
                    if let Err(e) = self.link.subscribe(&filter, Qos::AtLeastOnce) {
                        tracing::error!(%filter, error = %e, "cannot subscribe");
                    }
                }
                let status = api::status_topic(&self.base, self.uuid);
                if let Err(e) = self
                    .link
                    .publish(&status, Qos::AtLeastOnce, true, "online")
                    .await
                {
                    tracing::warn!(error = %e, "cannot publish status");
                }
                let ids: Vec<ObjectId> = self.replica.objects().map(|(id, _)| id.clone()).collect();
                for id in ids {
                    self.publish_state(&id).await;
                }
            }
            LinkEvent::Subscribed => {}
            LinkEvent::Disconnected(reason) => {
                tracing::warn!(%reason, "link to the embedded broker lost; reconnecting")
            }
            LinkEvent::Message { topic, payload, .. } => self.on_message(&topic, &payload).await,
        }
    }

    /// Handles an edge or a debounce timer.
    async fn on_internal(&mut self, ev: Internal) {
        match ev {
            Internal::Edge(i) => {
                let Some((_, input)) = self.inputs.get_mut(i) else {
                    return;
                };
                if input.debouncing {
                    return;
                }
                input.debouncing = true;
                let wait = input.debounce();
                let tx = self.internal.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    let _ = tx.send(Internal::Debounced(i));
                });
            }
            Internal::Debounced(i) => {
                let Some((id, input)) = self.inputs.get_mut(i) else {
                    return;
                };
                input.debouncing = false;
                let id = id.clone();
                match input.is_on() {
                    Ok(on) => {
                        if self.record(&id, vec![(model::STATE.into(), on_off(on).into())]) {
                            tracing::info!(object = %id, state = on_off(on), "input changed");
                            self.publish_state(&id).await;
                        }
                    }
                    Err(e) => tracing::warn!(object = %id, error = %e, "cannot read input"),
                }
            }
        }
    }

    /// Publishes `offline`, disconnects cleanly and flushes the store.
    async fn shut_down(&mut self, link_rx: &mut mpsc::Receiver<LinkEvent>) {
        let status = api::status_topic(&self.base, self.uuid);
        let _ = self
            .link
            .publish(&status, Qos::AtLeastOnce, true, "offline")
            .await;
        self.link.disconnect().await;
        // The link reports the closed connection once DISCONNECT is out; don't wait forever.
        let closed = async {
            while let Some(ev) = link_rx.recv().await {
                if matches!(ev, LinkEvent::Disconnected(_)) {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), closed).await;
        self.flush_store();
        tracing::info!("pimesh agent stopped");
    }
}

/// `ON` or `OFF`.
pub fn on_off(on: bool) -> &'static str {
    if on {
        model::ON
    } else {
        model::OFF
    }
}
