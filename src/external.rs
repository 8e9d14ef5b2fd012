//! The link to a shared broker (`[broker] external`): the house served where a site's
//! clients already are.
//!
//! The mesh stays peer to peer over the instances' own brokers (replication, forwarding and
//! membership keep working while the shared broker is down); the shared broker carries the
//! public house: retained states, availability, events, Home Assistant discovery, and the
//! commands of its clients with their answers. One MQTT 5 connection per instance, which
//! reconnects with a capped backoff and subscribes again after every ConnAck:
//! - commands (`<base>/+/set`, `<base>/+/send`) through a shared subscription
//!   (`$share/pimesh-<base>/…`), so the broker hands each command to exactly one instance,
//!   which routes it through the mesh like a command on its own broker. Retain As Published
//!   is asked for, so a retained command (replayed on subscribe, or published with the
//!   retain flag) is told apart and never run;
//! - Home Assistant's `<prefix>/status`, so its `online` re-announces the house;
//! - while this instance speaks for the house, its retained states (`<base>/+`), so one
//!   that someone else overwrote is put back;
//! - a last will that marks this instance `offline`.
//!
//! Publishing never waits for the shared broker: a message that finds the queue full is
//! dropped and flagged, and the agent publishes everything again (`take_dropped`).

use crate::broker::local::ResponseTo;
use crate::config::ExternalBroker;
use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::{Filter, LastWill, Packet, PublishProperties};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Messages the agent may queue towards the shared broker before publishing drops them.
const QUEUE: usize = 8192;

/// What the shared broker link reports to the agent.
#[derive(Debug)]
pub enum ExternalEvent {
    /// Connected (again); subscriptions are being restored. Whatever the broker lost while
    /// we were away must be published again.
    Up,
    /// The connection dropped or could not be made; a retry follows after a backoff.
    Down(String),
    /// A message on one of our subscriptions.
    Message {
        topic: String,
        payload: Bytes,
        /// The retain flag as published (Retain As Published).
        retain: bool,
        /// Where an MQTT 5 client asked for the answer.
        response: Option<ResponseTo>,
    },
}

/// Why the link to the shared broker cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum ExternalError {
    #[error("cannot read the shared broker's password file {path}: {source}")]
    Password {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read the shared broker's CA file {path}: {why}")]
    Ca {
        path: std::path::PathBuf,
        why: String,
    },
}

/// The publishing half, owned by the agent. Cheap to clone.
#[derive(Clone)]
pub struct External {
    client: AsyncClient,
    /// A message was dropped since the agent last asked: publish everything again.
    dropped: Arc<AtomicBool>,
    /// Connected right now (nothing is queued while we are not: the agent publishes
    /// everything again on `Up`).
    connected: Arc<AtomicBool>,
    /// Subscribed to the house's retained states, to put ours back over a foreign one
    /// (only the instance that speaks for the house does).
    watching: Arc<AtomicBool>,
    /// The filter of the retained states.
    watch: Arc<str>,
}

impl std::fmt::Debug for External {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("External")
    }
}

/// What the link subscribes to and says when it vanishes.
pub struct Plan {
    /// Command filters, taken through the shared subscription group.
    pub commands: Vec<String>,
    /// Filters every instance takes (Home Assistant's status).
    pub each: Vec<String>,
    /// The retained states' filter, taken while watching (`External::watch_states`).
    pub states: String,
    /// The retained status topic that the will sets to `offline`.
    pub status: String,
    /// The shared subscription group (one per house).
    pub group: String,
}

/// The shared subscription form of `filter` for `group`.
pub fn shared(group: &str, filter: &str) -> String {
    format!("$share/{group}/{filter}")
}

impl External {
    /// Opens the link; it runs until `cancel` fires.
    pub fn spawn(
        cfg: &ExternalBroker,
        client_id: String,
        plan: Plan,
        cancel: CancellationToken,
    ) -> Result<(External, mpsc::Receiver<ExternalEvent>), ExternalError> {
        let mut opts = MqttOptions::new(client_id, cfg.host.clone(), cfg.port);
        opts.set_keep_alive(Duration::from_secs(10));
        opts.set_clean_start(true);
        opts.set_max_packet_size(Some((crate::broker::MAX_PAYLOAD + 1024) as u32));
        opts.set_request_channel_capacity(QUEUE);
        opts.set_connection_timeout(5);
        if let Some(user) = &cfg.user {
            let password = match &cfg.password_file {
                Some(path) => std::fs::read_to_string(path)
                    .map_err(|source| ExternalError::Password {
                        path: path.clone(),
                        source,
                    })?
                    .trim_end_matches(['\r', '\n'])
                    .to_string(),
                None => String::new(),
            };
            opts.set_credentials(user.clone(), password);
        }
        opts.set_last_will(LastWill::new(
            plan.status.clone(),
            "offline",
            QoS::AtLeastOnce,
            true,
            None,
        ));
        if cfg.tls {
            let tls = client_tls(cfg.ca_file.as_deref())?;
            opts.set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(tls),
            ));
        }
        let (client, eventloop) = AsyncClient::new(opts, QUEUE);
        let link = External {
            client,
            dropped: Arc::new(AtomicBool::new(false)),
            connected: Arc::new(AtomicBool::new(false)),
            watching: Arc::new(AtomicBool::new(false)),
            watch: plan.states.as_str().into(),
        };
        let (tx, rx) = mpsc::channel(1024);
        let driver = link.clone();
        tokio::spawn(async move { driver.drive(eventloop, plan, tx, cancel).await });
        Ok((link, rx))
    }

    /// Queues a publish; never waits. Returns false when it was dropped.
    pub fn publish(
        &self,
        topic: &str,
        retain: bool,
        payload: Vec<u8>,
        correlation: Option<Bytes>,
    ) -> bool {
        if !self.connected.load(Ordering::Relaxed) {
            return false;
        }
        let properties = PublishProperties {
            correlation_data: correlation,
            ..Default::default()
        };
        let queued = self
            .client
            .try_publish_with_properties(topic, QoS::AtLeastOnce, retain, payload, properties)
            .is_ok();
        if !queued {
            self.dropped.store(true, Ordering::Relaxed);
        }
        queued
    }

    /// Subscribes to the house's retained states on the shared broker, or stops: only the
    /// instance that speaks for the house watches them.
    pub fn watch_states(&self, on: bool) {
        if self.watching.swap(on, Ordering::Relaxed) == on
            || !self.connected.load(Ordering::Relaxed)
        {
            return; // unchanged, or the next ConnAck subscribes as it should
        }
        let done = if on {
            self.client
                .try_subscribe(self.watch.to_string(), QoS::AtLeastOnce)
        } else {
            self.client.try_unsubscribe(self.watch.to_string())
        };
        if let Err(e) = done {
            tracing::warn!(error = %e, "could not change the shared broker's state subscription");
        }
    }

    /// Whether a publish was dropped since the last call (the agent then republishes all).
    pub fn take_dropped(&self) -> bool {
        self.dropped.swap(false, Ordering::Relaxed)
    }

    /// Sends DISCONNECT after saying we are offline (a clean stop sends no will).
    pub async fn leave(&self, status: &str) {
        let _ = self
            .client
            .publish(status, QoS::AtLeastOnce, true, "offline")
            .await;
        let _ = self.client.disconnect().await;
    }

    /// Polls the event loop until cancelled, with a capped backoff between failures.
    async fn drive(
        &self,
        mut eventloop: EventLoop,
        plan: Plan,
        tx: mpsc::Sender<ExternalEvent>,
        cancel: CancellationToken,
    ) {
        let mut backoff = crate::mqtt::BACKOFF_START;
        loop {
            let event = tokio::select! {
                _ = cancel.cancelled() => return,
                e = eventloop.poll() => e,
            };
            let out = match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    backoff = crate::mqtt::BACKOFF_START;
                    self.connected.store(true, Ordering::Relaxed);
                    self.subscribe(&plan);
                    ExternalEvent::Up
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let response = p.properties.and_then(|props| {
                        Some(ResponseTo {
                            topic: props.response_topic?,
                            correlation: props.correlation_data,
                            shared: true,
                        })
                    });
                    ExternalEvent::Message {
                        topic: String::from_utf8_lossy(&p.topic).into_owned(),
                        payload: p.payload,
                        retain: p.retain,
                        response,
                    }
                }
                Ok(_) => continue,
                Err(e) => {
                    self.connected.store(false, Ordering::Relaxed);
                    if tx.send(ExternalEvent::Down(e.to_string())).await.is_err() {
                        return;
                    }
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(crate::mqtt::BACKOFF_CAP);
                    continue;
                }
            };
            if tx.send(out).await.is_err() {
                return;
            }
        }
    }

    /// Subscribes to the plan's filters (after every ConnAck: the session starts clean).
    fn subscribe(&self, plan: &Plan) {
        let commands = plan.commands.iter().map(|f| Filter {
            preserve_retain: true,
            ..Filter::new(shared(&plan.group, f), QoS::AtLeastOnce)
        });
        let watching = self
            .watching
            .load(Ordering::Relaxed)
            .then_some(&plan.states);
        let each = plan
            .each
            .iter()
            .chain(watching)
            .map(|f| Filter::new(f.clone(), QoS::AtLeastOnce));
        let filters: Vec<Filter> = commands.chain(each).collect();
        if let Err(e) = self.client.try_subscribe_many(filters) {
            tracing::warn!(error = %e, "could not subscribe on the shared broker");
        }
    }
}

/// TLS towards the shared broker: the CA file's certificates when given, else the
/// system's (`/etc/ssl/certs/ca-certificates.crt`).
fn client_tls(
    ca_file: Option<&std::path::Path>,
) -> Result<Arc<rustls::ClientConfig>, ExternalError> {
    let path = ca_file
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| "/etc/ssl/certs/ca-certificates.crt".into());
    let pem = std::fs::read(&path).map_err(|e| ExternalError::Ca {
        path: path.clone(),
        why: e.to_string(),
    })?;
    crate::tls::client_config_for_ca(&pem).map_err(|why| ExternalError::Ca { path, why })
}
