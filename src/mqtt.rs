//! A resilient MQTT client link: rumqttc with capped reconnect backoff, re-subscription on
//! every ConnAck, TCP_NODELAY on, and TLS when the options carry a rustls configuration.
//!
//! rumqttc reconnects as fast as `poll` is called and forgets subscriptions with a clean
//! session. Every link the agent opens (to its own broker, later to each peer) goes through
//! [`Link`], so that reconnecting and re-subscribing are written once.

use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, NetworkOptions, Packet, QoS};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use rumqttc::QoS as Qos;

/// First reconnect delay after a failure.
pub const BACKOFF_START: Duration = Duration::from_millis(100);
/// Delay after the broker refused our credentials (it does not grow).
pub const REFUSED_BACKOFF: Duration = Duration::from_secs(1);
/// Reconnect delays double up to this cap.
pub const BACKOFF_CAP: Duration = Duration::from_secs(5);

/// Everything needed to open a link.
#[derive(Clone)]
pub struct LinkOptions {
    /// Broker host name or address.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// MQTT client id; must be unique on that broker.
    pub client_id: String,
    /// Makes the user name and password for each connection attempt (a member's proof is
    /// fresh every time; a user's password is the same).
    pub credentials: Option<Credentials>,
    /// Message the broker publishes for us if we vanish (retained status → offline).
    pub last_will: Option<LastWill>,
    /// Keep-alive interval; also bounds how fast a dead broker is noticed.
    pub keep_alive: Duration,
    /// TLS with this configuration (which says whom to trust and what certificate to
    /// present), or plaintext when none.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for LinkOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "LinkOptions({}:{} as {})",
            self.host, self.port, self.client_id
        )
    }
}

impl LinkOptions {
    /// Options with pimesh's defaults for `client_id` at `host:port`.
    pub fn new(host: impl Into<String>, port: u16, client_id: impl Into<String>) -> Self {
        LinkOptions {
            host: host.into(),
            port,
            client_id: client_id.into(),
            credentials: None,
            last_will: None,
            keep_alive: Duration::from_secs(5),
            tls: None,
        }
    }
}

/// Makes credentials for a connection attempt.
pub type Credentials = std::sync::Arc<dyn Fn() -> (String, String) + Send + Sync>;

/// Credentials that are the same for every attempt.
pub fn fixed_credentials(user: String, password: String) -> Credentials {
    std::sync::Arc::new(move || (user.clone(), password.clone()))
}

/// What a link reports to its owner.
#[derive(Debug)]
pub enum LinkEvent {
    /// Connected (again); subscriptions are being restored.
    Connected,
    /// The broker acknowledged a subscription: messages on it will now arrive.
    Subscribed,
    /// The connection dropped or could not be made; a retry follows after a backoff.
    Disconnected(String),
    /// The broker refused our credentials; a retry follows after a longer backoff.
    Refused(String),
    /// A message arrived on a subscribed topic.
    Message {
        topic: String,
        payload: Vec<u8>,
        retain: bool,
    },
}

/// A handle to publish and subscribe over a link. Cheap to clone.
#[derive(Clone)]
pub struct Link {
    /// The rumqttc request handle.
    client: AsyncClient,
    /// Every subscription made, replayed on each ConnAck.
    subscriptions: Arc<Mutex<Vec<(String, QoS)>>>,
}

/// Why a request could not be queued on a link.
#[derive(Debug, thiserror::Error)]
#[error("MQTT link request failed: {0}")]
pub struct LinkError(#[from] rumqttc::ClientError);

impl Link {
    /// Opens a link; it runs until `cancel` fires. Events arrive on the returned receiver.
    pub fn spawn(
        opts: LinkOptions,
        cancel: CancellationToken,
    ) -> (Link, mpsc::Receiver<LinkEvent>) {
        let mut mqtt = MqttOptions::new(opts.client_id.clone(), opts.host.clone(), opts.port);
        mqtt.set_keep_alive(opts.keep_alive);
        mqtt.set_clean_session(true);
        mqtt.set_max_packet_size(
            crate::broker::MAX_PAYLOAD + 1024,
            crate::broker::MAX_PAYLOAD + 1024,
        );
        mqtt.set_inflight(100);
        if let Some(make) = &opts.credentials {
            let (user, pass) = make();
            mqtt.set_credentials(user, pass);
        }
        if let Some(will) = &opts.last_will {
            mqtt.set_last_will(will.clone());
        }
        if let Some(tls) = &opts.tls {
            mqtt.set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(tls.clone()),
            ));
        }
        let (client, mut eventloop) = AsyncClient::new(mqtt, 1024);
        let mut net = NetworkOptions::new();
        net.set_tcp_nodelay(true);
        net.set_connection_timeout(5);
        eventloop.set_network_options(net);
        let link = Link {
            client,
            subscriptions: Arc::new(Mutex::new(Vec::new())),
        };
        let (tx, rx) = mpsc::channel(1024);
        let driver = link.clone();
        let credentials = opts.credentials.clone();
        tokio::spawn(async move { driver.drive(&mut eventloop, tx, cancel, credentials).await });
        (link, rx)
    }

    /// Subscribes now and after every reconnect.
    pub fn subscribe(&self, filter: &str, qos: QoS) -> Result<(), LinkError> {
        if let Ok(mut subs) = self.subscriptions.lock() {
            if !subs.iter().any(|(f, _)| f == filter) {
                subs.push((filter.to_string(), qos));
            }
        }
        self.client.try_subscribe(filter, qos)?;
        Ok(())
    }

    /// Subscribes to several filters in one SUBSCRIBE (one SubAck), now and after every
    /// reconnect.
    pub fn subscribe_many(&self, filters: &[String], qos: QoS) -> Result<(), LinkError> {
        if let Ok(mut subs) = self.subscriptions.lock() {
            for f in filters {
                if !subs.iter().any(|(s, _)| s == f) {
                    subs.push((f.clone(), qos));
                }
            }
        }
        let many = filters
            .iter()
            .map(|f| rumqttc::SubscribeFilter::new(f.clone(), qos));
        self.client.try_subscribe_many(many)?;
        Ok(())
    }

    /// Publishes, waiting for room in the request queue.
    pub async fn publish(
        &self,
        topic: &str,
        qos: QoS,
        retain: bool,
        payload: impl Into<Vec<u8>>,
    ) -> Result<(), LinkError> {
        self.client
            .publish(topic, qos, retain, payload.into())
            .await?;
        Ok(())
    }

    /// Sends DISCONNECT, so the broker does not publish our last will.
    pub async fn disconnect(&self) {
        let _ = self.client.disconnect().await;
    }

    /// Polls the event loop until cancelled, with backoff between failed connections.
    async fn drive(
        &self,
        eventloop: &mut EventLoop,
        tx: mpsc::Sender<LinkEvent>,
        cancel: CancellationToken,
        credentials: Option<Credentials>,
    ) {
        let mut backoff = BACKOFF_START;
        loop {
            let event = tokio::select! {
                _ = cancel.cancelled() => return,
                e = eventloop.poll() => e,
            };
            let out = match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    backoff = BACKOFF_START;
                    self.resubscribe();
                    LinkEvent::Connected
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => LinkEvent::Subscribed,
                Ok(Event::Incoming(Packet::Publish(p))) => LinkEvent::Message {
                    topic: p.topic,
                    payload: p.payload.to_vec(),
                    retain: p.retain,
                },
                Ok(_) => continue,
                Err(e) => {
                    let refused = matches!(
                        e,
                        rumqttc::ConnectionError::ConnectionRefused(
                            rumqttc::ConnectReturnCode::BadUserNamePassword
                                | rumqttc::ConnectReturnCode::NotAuthorized
                        )
                    ) || certificate_refused(&e);
                    let reason = e.to_string();
                    let event = if refused {
                        // Credentials become valid when a new member's record arrives by
                        // replication, usually within a second: retry once a second, never
                        // slower, so a new member links to everyone soon after.
                        backoff = REFUSED_BACKOFF;
                        LinkEvent::Refused(reason)
                    } else {
                        LinkEvent::Disconnected(reason)
                    };
                    if tx.send(event).await.is_err() {
                        return;
                    }
                    if let Some(make) = &credentials {
                        let (user, pass) = make();
                        eventloop.mqtt_options.set_credentials(user, pass);
                    }
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    if !refused {
                        backoff = (backoff * 2).min(BACKOFF_CAP);
                    }
                    continue;
                }
            };
            if tx.send(out).await.is_err() {
                return;
            }
        }
    }

    /// Replays every subscription; called on each ConnAck.
    fn resubscribe(&self) {
        let subs = match self.subscriptions.lock() {
            Ok(s) => s.clone(),
            Err(_) => return,
        };
        for (filter, qos) in subs {
            if let Err(e) = self.client.try_subscribe(filter.clone(), qos) {
                tracing::warn!(%filter, error = %e, "could not re-subscribe");
            }
        }
    }
}

/// Whether a connection failed on a certificate: the server's is not from the CA we trust, or
/// the server did not take ours (a TLS alert). Like refused credentials, that is about who we
/// are, not the network: it may change as soon as a join brings the mesh's CA.
fn certificate_refused(e: &rumqttc::ConnectionError) -> bool {
    let rustls_error = match e {
        rumqttc::ConnectionError::Tls(rumqttc::TlsError::TLS(r)) => Some(r),
        rumqttc::ConnectionError::Tls(rumqttc::TlsError::Io(io))
        | rumqttc::ConnectionError::Io(io) => io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>()),
        _ => None,
    };
    matches!(
        rustls_error,
        Some(rustls::Error::InvalidCertificate(_) | rustls::Error::AlertReceived(_))
    )
}
