//! The agent: starts every part in order, then owns the store and the hardware in one task.
//!
//! Start-up order matters for a house: the config is already valid, then the data dir is
//! locked, the store loaded, the broker bound (a port problem stops us before any relay
//! moves), and only then are pins claimed and power-on policies applied. After that a single
//! task owns the replica, the store, the plugins and the mesh view, and handles MQTT messages,
//! peer links, input edges and the heartbeat one at a time, so no state is shared between
//! tasks.

mod admin;
mod answers;

pub use admin::{admin_reply_topic, AdminReply, AdminRequest};
mod automation;
mod command;
mod compaction;
mod discovery;
mod durable;
mod fence_mark;
mod forward;
mod hardware;
mod join;
mod known;
mod mesh;
mod own_link;
mod serial;
mod shared;
mod start;
mod state;

use crate::api;
use crate::broker::local::{LocalEvent, LocalRx};
use crate::broker::{self, PortChoice};
use crate::config::{Config, InputConfig, PowerOn, RelayConfig};
use crate::hal;
use crate::identity;
use crate::mesh::node::Node;
use crate::mesh::peers::{Peers, BEAT_MS};
use crate::mesh::proto::Topics;
use crate::model::{self, ObjectId};
use crate::mqtt::{Link, LinkEvent, Qos};
use crate::plugins::press::{PressDetector, PressTimer};
use crate::plugins::relay_bank::{RelayBank, RelaySpec, Timer};
use crate::plugins::{relay, Input, Relay};
use crate::replica::Store;
use crate::runtime::{self, RuntimeInfo};
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Events of our own broker's link taken in one turn of the event loop (see
/// [`Agent::on_link_burst`]): enough for every command a client keeps in flight.
const LINK_BURST: usize = 64;

/// Everything the agent needs to start, after the CLI merged flags into the config.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The validated configuration (objects, board, base topic, mesh).
    pub config: Config,
    /// Where the identity, store, runtime file and sim pins live.
    pub data_dir: PathBuf,
    /// The instance name.
    pub name: String,
    /// Address the broker listens on.
    pub bind: IpAddr,
    /// The broker's port policy.
    pub port: PortChoice,
    /// A fixed MQTT 5 port; default: the first free one from 1000 above the broker's port.
    pub mqtt5_port: Option<u16>,
    /// The TLS port's policy.
    pub tls_port: PortChoice,
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
    #[error(transparent)]
    Secret(#[from] crate::secret::SecretError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    Web(#[from] crate::web::WebError),
    #[error("{0}")]
    Join(String),
    #[error(transparent)]
    External(#[from] crate::external::ExternalError),
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
    /// A relay bank timer (pulse end, watchdog, dead time) is due.
    RelayTimer(Timer),
    /// A press detector timer of input number N is due.
    PressTimer(usize, PressTimer),
    /// A serial channel command got its device's answer.
    SerialDone(Box<serial::SerialDone>),
    /// Joining with the invitation finished.
    Joined(Result<(Uuid, Option<crate::tls::MeshCa>, String), String>),
    /// A peer's host name was looked up (off the agent task): our own address towards it.
    Resolved(String, IpAddr),
    /// The fsync thread finished an fsync.
    Synced(Box<durable::ToSync>, std::io::Result<()>),
    /// Home Assistant came online and its random delay passed: announce the house again.
    HaAnnounce,
    /// The compaction thread finished a compaction's job.
    Compacted(Box<compaction::Compacted>),
}

/// The agent task's state: the one owner of the store, the hardware and the mesh view.
struct Agent {
    /// This instance's UUID, stamped on every change it makes.
    uuid: Uuid,
    /// This instance's human name.
    name: String,
    /// Base of every public topic.
    base: String,
    /// The mesh topics under `base`.
    topics: Topics,
    /// The port peers link to (advertised to them): the TLS port, or the plaintext one with
    /// `[mesh] tls = false`.
    port: u16,
    /// The address our broker is bound to (unspecified = every interface).
    bind: IpAddr,
    /// The replication protocol and the replicated house, without I/O.
    node: Node,
    /// The store's files.
    store: Store,
    /// The hardware this instance holds: relays, inputs, serial devices.
    hw: hardware::Hardware,
    /// Link to our own embedded broker, in process (and to the shared one, if any).
    link: own_link::OwnLink,
    /// Sender for edges and debounce timers.
    internal: mpsc::UnboundedSender<Internal>,
    /// Forwarded answers waiting for this event's fsync to carry its updates, by sender.
    deferred: crate::mesh::until_durable::UntilDurable<(Uuid, api::Reply)>,
    /// Hands fsyncs to the fsync thread (see `Agent::start_sync`).
    syncer: std::sync::mpsc::Sender<durable::ToSync>,
    /// Hands compactions' jobs to the compaction thread (see `Agent::maybe_compact`).
    compactor: std::sync::mpsc::Sender<(crate::replica::CompactionJob, std::time::Instant)>,
    /// Who is in the mesh and alive.
    peers: Peers,
    /// Our links to peer brokers, by address, with the token that closes each.
    links: HashMap<String, PeerLink>,
    /// Sender the peer links' forwarders use.
    mesh_tx: mpsc::Sender<(String, LinkEvent)>,
    /// Where the identity, store and secrets live.
    data_dir: PathBuf,
    /// Who this instance is in the mesh and whom it lets in.
    members: join::Membership,
    /// The mesh CA, this instance's certificate and everything that serves with them.
    tls: join::Tls,
    /// The hello last published on our broker, so it is only republished when it changes.
    last_hello: Option<crate::mesh::proto::Hello>,
    /// Where each command runs and who hears its answer (`crate::mesh::dispatch`).
    dispatch: crate::mesh::dispatch::Dispatcher,
    /// The last address each peer answered on (`known-peers.json`).
    known: known::Known,
    /// `answers.log`, open for appending.
    answers_file: answers::AnswersFile,
    /// Automation jobs triggered by the current event, dispatched after it.
    jobs: crate::mesh::until_durable::UntilDurable<crate::mesh::automation::Job>,
    /// Start-up is over: changes from now on may trigger automations.
    running: bool,
    /// `<data dir>/fenced` says the fence is up (`fence_mark.rs`).
    fence_marked: bool,
    /// The runtime file to write once our broker link is subscribed (and where).
    advertise: Option<(PathBuf, RuntimeInfo)>,
    /// Rate limits of the warnings that input from the network can trigger.
    warns: crate::ratelimit::WarnLimit,
    /// Gives memory back to the system once a sync is over.
    trim: crate::heap::Trim,
    /// The machine has not rebooted since the agent last ran here (same kernel boot id): an
    /// output pin still holds what the agent left on it.
    same_boot: bool,
    /// Our own address towards peers known by host name, looked up off the agent task so a
    /// slow DNS never holds up a heartbeat.
    resolved: HashMap<String, IpAddr>,
    /// Hashes of the retained payloads we published lately, so our own echo of an older
    /// value is told apart from someone else overwriting it (see `state.rs`).
    echoes: heapless::Deque<u64, 256>,
    /// Home Assistant discovery: its settings and what was announced.
    ha: discovery::Discovery,
    /// Our mDNS announcement on the LAN (none when `[mesh] mdns` is off or cannot run).
    lan: Option<crate::lan::Announcement>,
}

/// One link to a peer's broker.
struct PeerLink {
    /// The link handle.
    link: Link,
    /// Closes the link and its forwarder.
    stop: CancellationToken,
    /// Waiting for the SubAck of the peer's topics, then start a sync.
    sync_on_suback: bool,
    /// The peer refused our proof (logged once per link).
    refused: bool,
}

pub use start::run;

impl Agent {
    /// The replicated house.
    fn replica(&self) -> &crate::replica::Replica {
        self.node.replica()
    }

    /// Claims a relay's pin and applies its power-on policy; returns the state it is in.
    fn claim_relay(
        &mut self,
        gpio: &mut dyn hal::Gpio,
        cfg: RelayConfig,
    ) -> Result<bool, hal::HalError> {
        let recorded = self
            .node
            .replica()
            .get(&cfg.id)
            .and_then(|o| o.text(model::STATE))
            .map(|s| s == model::ON);
        let id = cfg.id.clone();
        let (relay, on) = if cfg.power_on == PowerOn::Restore && self.same_boot {
            // The agent restarted, the machine did not: the pin still holds the relay's real
            // state, which the store may lack (a change a full disk never took, a crash).
            let relay = Relay::claim_as_it_is(gpio, cfg)?;
            let on = relay.is_on()?;
            if Some(on) != recorded {
                tracing::warn!(object = %id, on, recorded = ?recorded, "the relay's pin differs from the recorded state; keeping the pin's");
            }
            (relay, on)
        } else {
            let on = relay::power_on_state(cfg.power_on, recorded);
            (Relay::claim(gpio, cfg, on)?, on)
        };
        if relay.config.power_on == PowerOn::Restore && (recorded.is_some() || self.same_boot) {
            tracing::info!(object = %id, on, "restoring relay to its last state");
        }
        self.hw.relays.insert(id.clone(), relay);
        self.record(&id, vec![(model::STATE.into(), on_off(on).into())]);
        Ok(on)
    }

    /// How long relay `id` has been on, from the stamp of its recorded `ON` (zero when off, or
    /// when the clock says the stamp is in the future — a Pi without a clock before NTP).
    fn on_for(&self, id: &ObjectId) -> Duration {
        let Some(register) = self
            .replica()
            .get(id)
            .and_then(|o| o.props.get(model::STATE))
        else {
            return Duration::ZERO;
        };
        if register.value.as_text() != Some(model::ON) {
            return Duration::ZERO;
        }
        let now = crate::clock::now_ms();
        Duration::from_millis(now.saturating_sub(register.stamp.wall_ms))
    }

    /// Claims an input's pin, records its current state and starts watching its edges.
    fn claim_input(
        &mut self,
        gpio: &mut dyn hal::Gpio,
        cfg: InputConfig,
    ) -> Result<(), hal::HalError> {
        let index = self.hw.inputs.len();
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
        self.hw
            .presses
            .push(PressDetector::for_input(&input.config));
        self.hw.inputs.push((id.clone(), input));
        self.record(&id, vec![(model::STATE.into(), on_off(on).into())]);
        Ok(())
    }

    /// Our link to our own broker is up: subscribe to what the agent handles and say we are
    /// online. Commands are heard once the subscription is acknowledged.
    async fn on_link_up(&mut self) {
        let filters = [
            api::set_filter(&self.base),
            api::send_filter(&self.base),
            api::get_topic(&self.base),
            api::peers_topic(&self.base),
            crate::door::acl::admin_topic(&self.base),
            crate::door::acl::join_request_filter(&self.base),
            self.topics.hello_filter(),
            self.topics.sync_req_filter(),
            self.topics.cmd_filter(),
            api::state_filter(&self.base),
            api::status_filter(&self.base),
        ];
        if let Err(e) = self.link.subscribe_many(&filters) {
            tracing::error!(error = %e, "cannot subscribe to our own broker");
        }
        self.subscribe_ha_status();
        self.publish_status(self.uuid, true).await;
        self.last_hello = None;
        self.publish_owner_hello().await;
        let ids: Vec<ObjectId> = self.replica().objects().map(|(id, _)| id.clone()).collect();
        self.node.mark_dirty(ids);
    }

    /// Handles `first` and the events already waiting behind it on our own broker's link,
    /// at most [`LINK_BURST`] in all, in one turn of the event loop: what every turn ends
    /// with (claims, the store's commit, automation jobs, pending publishes) is done once for
    /// the burst instead of once per message. Each message's commands still run before the
    /// next message is taken, so a toggle is resolved against the state the command before
    /// it left. False when the link is gone.
    pub(super) async fn on_link_burst(&mut self, first: LocalEvent, rx: &mut LocalRx) -> bool {
        let mut first = Some(first);
        for _ in 0..LINK_BURST {
            let Some(ev) = first.take().or_else(|| rx.try_recv()) else {
                break;
            };
            if !self.on_link(ev).await {
                return false;
            }
            self.settle_commands().await;
        }
        true
    }

    /// Handles an event of the link to our own broker; false when the link is gone.
    async fn on_link(&mut self, ev: LocalEvent) -> bool {
        match ev {
            LocalEvent::Subscribed => {
                // Only now can a command be heard: tell local tools where we are.
                if let Some((dir, info)) = self.advertise.take() {
                    if let Err(e) = info.write(&dir) {
                        tracing::error!(error = %e, "cannot write the runtime file; local tools will not find this agent");
                    }
                    tracing::info!(name = %self.name, uuid = %self.uuid, port = info.port, mqtt5_port = info.mqtt5_port, tls_port = info.tls_port, objects = self.replica().len(), "pimesh agent running");
                }
            }
            LocalEvent::Message {
                topic,
                payload,
                response,
                sender,
            } => {
                let join =
                    crate::door::acl::join_request_id(&self.base, &topic).map(str::to_string);
                if self.topics.classify(&topic).is_some() {
                    self.on_own_mesh_message(&topic, &payload).await;
                } else if topic == crate::door::acl::admin_topic(&self.base) {
                    self.on_admin(&payload).await;
                } else if self.is_ha_status(&topic) {
                    self.on_ha_status(&payload);
                } else if let Some(invitation) = join {
                    self.on_join_request(&invitation, &payload).await;
                } else {
                    self.on_message(&topic, &payload, response, sender.as_deref())
                        .await
                }
            }
            LocalEvent::Closed => {
                tracing::error!("the embedded broker dropped the agent's own link");
                return false;
            }
        }
        true
    }

    /// Handles an edge or a debounce timer.
    async fn on_internal(&mut self, ev: Internal) {
        match ev {
            Internal::Edge(i) => {
                let Some((_, input)) = self.hw.inputs.get_mut(i) else {
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
                let Some((id, input)) = self.hw.inputs.get_mut(i) else {
                    return;
                };
                input.debouncing = false;
                let id = id.clone();
                match input.is_on() {
                    Ok(on) => {
                        if self.record(&id, vec![(model::STATE.into(), on_off(on).into())]) {
                            tracing::info!(object = %id, state = on_off(on), "input changed");
                        }
                        self.press_level(i, on).await;
                    }
                    Err(e) => tracing::warn!(object = %id, error = %e, "cannot read input"),
                }
            }
            Internal::RelayTimer(timer) => {
                let actions = self.hw.bank.timer(&timer, std::time::Instant::now());
                self.perform(actions).await;
            }
            Internal::PressTimer(i, timer) => {
                let Some(detector) = self.hw.presses.get_mut(i) else {
                    return;
                };
                let actions = detector.timer(timer);
                self.perform_press(i, actions).await;
            }
            Internal::SerialDone(done) => self.serial_done(*done).await,
            Internal::Joined(Ok((mesh, ca, via))) => {
                if let Some(token) = self.members.join.take() {
                    self.joined(&token, mesh, ca, &via);
                }
            }
            Internal::Resolved(host, ip) => {
                if self.resolved.len() < crate::mesh::peers::MAX_LINKS {
                    self.resolved.insert(host, ip);
                    // Peers learn the address from our hello.
                    self.publish_owner_hello().await;
                }
            }
            Internal::Synced(done, result) => self.sync_ended(*done, result),
            Internal::HaAnnounce => self.announce_all().await,
            Internal::Compacted(done) => self.compaction_ended(*done),
            Internal::Joined(Err(why)) => {
                tracing::error!(%why, "could not join the mesh of the invitation; running alone");
                self.members.join = None;
            }
        }
    }

    /// Takes relays to their `on-stop` state, publishes `offline`, disconnects cleanly and
    /// flushes the store.
    async fn shut_down(&mut self) {
        self.stop_relays().await;
        let status = api::status_topic(&self.base, self.uuid);
        let _ = self
            .link
            .publish(&status, Qos::AtLeastOnce, true, "offline")
            .await;
        if let Some(shared) = self.link.shared() {
            // Bounded: a shared broker that is down must not hold up the stop.
            let _ = tokio::time::timeout(Duration::from_secs(1), shared.leave(&status)).await;
        }
        self.leave_mesh().await;
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
