//! One client connection, from its first byte to its close.
//!
//! The session reads packets through [`wire`], checks each against the client's [`Role`]
//! ([`acl`]) and limits, and hands what passes to rumqttd's router through an in-process link
//! of its own; messages the router forwards come back here, are filtered again by role and
//! written in the client's protocol version. rumqttd never sees a byte from the network.
//!
//! What rumqttd's router does not keep (the QoS a message was published with, an empty
//! publish that must not delete a retained message) crosses it in [`super::DOOR_PROPERTY`].
//!
//! Simplifications, all allowed by MQTT: sessions are not kept after a disconnect (CONNACK
//! says session-present 0), and topic aliases are not offered.

use super::acl::{self, Role};
use super::mark::{is_internal, DoorMark};
use super::wire::{self, Granted, Inbound, Message, Outbound, Refusal, Version, Will};
use super::{Channel, Door, LogGate, SlotGuard};
use bytes::{Bytes, BytesMut};
use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::protocol::{Filter, Packet, Publish, QoS, RetainForwardRule, Subscribe, Unsubscribe};
use rumqttd::Notification;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// Longest client id accepted (MQTT allows 65535 bytes; nothing needs more than this).
pub const MAX_CLIENT_ID: usize = 128;
/// Publishes sent to a client and not yet acknowledged; past this no more are sent to it
/// until it acknowledges some.
pub const MAX_UNACKED: usize = 1024;
/// Largest CONNECT read before the client is known.
pub const MAX_CONNECT: usize = 64 * 1024;

/// Why a session ended.
#[derive(Debug)]
enum End {
    /// DISCONNECT from the client: no will.
    Clean,
    /// Anything else: the will is published.
    Abnormal(String),
}

/// A connected, authenticated client.
struct Session {
    door: Arc<Door>,
    version: Version,
    role: Role,
    client_id: String,
    peer: SocketAddr,
    /// The router's side of this client.
    tx: LinkTx,
    /// Filters and the QoS granted for each.
    subscriptions: HashMap<String, u8>,
    /// Client SUBSCRIBEs waiting for the router's SUBACK: their codes.
    pending_subacks: HashMap<u16, Vec<Granted>>,
    /// QoS 2 publishes received, waiting for PUBREL.
    awaiting_rel: HashSet<u16>,
    /// Publishes we sent at QoS 1, not yet acknowledged.
    unacked: HashSet<u16>,
    /// Our last packet id towards the client.
    last_pkid: u16,
    /// Bytes waiting to be written to the client.
    out: BytesMut,
    /// Largest packet the client may send.
    max_packet: usize,
    /// Command publishes the client may still send now (token bucket), and when it was filled.
    tokens: f64,
    refilled: Instant,
    /// Whether this connection's retained commands were logged already (once per connection).
    warned_retained_command: bool,
}

/// A client's byte stream.
pub trait Transport: AsyncRead + AsyncWrite + Unpin {
    /// Asks the kernel to acknowledge what was just read at once. A client that does not set
    /// TCP_NODELAY (paho-mqtt, so Home Assistant) may hold the rest of a packet until its
    /// first bytes are acknowledged, and Linux would delay that acknowledgement by up to
    /// 40 ms; quick-ack mode lapses by itself, so it is asked for after every read.
    fn quickack(&self) {}
}

impl Transport for tokio::net::TcpStream {
    fn quickack(&self) {
        let _ = socket2::SockRef::from(self).set_quickack(true);
    }
}

impl Transport for tokio_rustls::server::TlsStream<tokio::net::TcpStream> {
    fn quickack(&self) {
        <tokio::net::TcpStream as Transport>::quickack(self.get_ref().0);
    }
}

/// Serves one accepted connection until it closes; `pending` is its slot until CONNECT, which
/// must arrive before `connect_deadline`.
pub async fn serve<S: Transport>(
    door: Arc<Door>,
    mut stream: S,
    peer: SocketAddr,
    (pending, connect_deadline): (SlotGuard, Instant),
    channel: Channel,
) {
    let mut buf = BytesMut::with_capacity(1024);
    let read_connect = async {
        loop {
            match wire::sniff_version(&buf) {
                Ok(Some(v)) => match wire::decode(v, &mut buf, MAX_CONNECT) {
                    Ok(Some(p)) => return Ok((v, p)),
                    Ok(None) => {}
                    Err(e) => return Err(e.to_string()),
                },
                Ok(None) => {}
                Err(e) => return Err(e.to_string()),
            }
            match stream.read_buf(&mut buf).await {
                Ok(0) => return Err("closed before CONNECT".to_string()),
                Ok(_) => stream.quickack(),
                Err(e) => return Err(e.to_string()),
            }
        }
    };
    let (version, connect) = match tokio::time::timeout_at(connect_deadline, read_connect).await {
        Ok(Ok(c)) => c,
        Ok(Err(why)) => {
            door.log.refused(peer, "", &why);
            return;
        }
        Err(_) => {
            door.log.refused(peer, "", "no CONNECT in time");
            return;
        }
    };
    let Inbound::Connect {
        client_id,
        clean,
        keep_alive,
        login,
        will,
    } = connect
    else {
        return;
    };
    // MQTT-3.1.3-8: a 3.1.1 client without an id must ask for a clean session (MQTT 5 gets
    // an assigned id either way).
    let persistent_without_id = client_id.is_empty() && !clean && version == Version::V4;
    if client_id.len() > MAX_CLIENT_ID || client_id.contains('\0') || persistent_without_id {
        door.log
            .refused(peer, &client_id, "client id too long or invalid");
        refuse(&mut stream, version, Refusal::BadClientId).await;
        return;
    }
    let role = match door.auth.check(login, crate::clock::now_ms()).await {
        Ok(r) => r,
        Err(d) => {
            door.log.refused(peer, &client_id, &d.why);
            refuse(&mut stream, version, d.refusal).await;
            return;
        }
    };
    if let Err(why) = acl::may_connect_over(&role, channel) {
        door.log.refused(peer, &client_id, why);
        refuse(&mut stream, version, Refusal::NotAuthorized).await;
        return;
    }
    if let Some(w) = &will {
        if !acl::may_publish(&door.base, &role, &w.topic)
            || !acl::may_publish_discovery(door.discovery_prefix.as_deref(), &w.topic)
        {
            door.log.refused(
                peer,
                &client_id,
                &format!(
                    "{} may not publish its will on {:?}",
                    role.describe(),
                    w.topic
                ),
            );
            refuse(&mut stream, version, Refusal::NotAuthorized).await;
            return;
        }
    }
    let Some(_slot) = door.slots.admit(&role) else {
        door.log.refused(
            peer,
            &client_id,
            "all connection slots for its kind of client are taken",
        );
        refuse(&mut stream, version, Refusal::Busy).await;
        return;
    };
    drop(pending);
    let (client_id, assigned_id) = if client_id.is_empty() {
        let id = format!(
            "pimesh-{}",
            crate::secret::to_hex(&crate::secret::random::<8>())
        );
        (id.clone(), Some(id))
    } else {
        (client_id, None)
    };
    let router_id = router_id(&role, &client_id);
    let Ok((tx, rx)) = door.router.link(&router_id) else {
        door.log
            .refused(peer, &client_id, "the router refused the connection");
        refuse(&mut stream, version, Refusal::Busy).await;
        return;
    };
    tracing::debug!(%peer, client = %client_id, role = %role.describe(), ?version, "client connected");
    let trusted = role.is_trusted();
    let mut session = Session {
        max_packet: if trusted {
            door.limits.max_packet_trusted
        } else {
            door.limits.max_packet
        },
        tokens: door.limits.command_burst,
        refilled: Instant::now(),
        warned_retained_command: false,
        door,
        version,
        role,
        client_id,
        peer,
        tx,
        subscriptions: HashMap::new(),
        pending_subacks: HashMap::new(),
        awaiting_rel: HashSet::new(),
        unacked: HashSet::new(),
        last_pkid: 0,
        out: BytesMut::new(),
    };
    session.send(Outbound::ConnAck {
        refusal: None,
        assigned_id,
    });
    let end = session.run(&mut stream, buf, rx, keep_alive).await;
    match end {
        End::Clean => {}
        End::Abnormal(why) => {
            tracing::debug!(peer = %session.peer, client = %session.client_id, %why, "client connection ended");
            if let Some(w) = will {
                session.publish_will(w);
            }
        }
    }
    let _ = send_now(
        &mut session.tx,
        Packet::Disconnect(
            rumqttd::protocol::Disconnect {
                reason_code: rumqttd::protocol::DisconnectReasonCode::NormalDisconnection,
            },
            None,
        ),
    );
}

/// Tells a client why it may not connect, then the caller closes the connection.
async fn refuse<S: AsyncWrite + Unpin>(stream: &mut S, version: Version, refusal: Refusal) {
    let mut out = BytesMut::new();
    let ack = Outbound::ConnAck {
        refusal: Some(refusal),
        assigned_id: None,
    };
    if wire::encode(version, &ack, &mut out).is_ok() {
        let _ = stream.write_all(&out).await;
        let _ = stream.flush().await;
    }
}

/// The router's client id: namespaced by role, so a user can never take over the session of
/// a member (or of the agent, whose id has no dot).
fn router_id(role: &Role, client_id: &str) -> String {
    let hex = crate::secret::to_hex(client_id.as_bytes());
    match role {
        Role::Member(u) => format!("m.{u}.{hex}"),
        Role::Local => format!("l.{hex}"),
        Role::User(n) => format!("u.{}.{hex}", crate::secret::to_hex(n.as_bytes())),
        Role::Joiner(i) => format!("j.{i}.{hex}"),
    }
}

/// Queues `packet` on the router now: rumqttd's `LinkTx::send` is `async` but never waits.
pub(crate) fn send_now(tx: &mut LinkTx, packet: Packet) -> Result<(), String> {
    match ready_now(tx.send(packet)) {
        Some(Ok(_)) => Ok(()),
        Some(Err(e)) => Err(e.to_string()),
        None => Err("the router queue is not ready".into()),
    }
}

/// The output of `fut` if it is ready at its first poll (dropped otherwise).
fn ready_now<F: std::future::Future>(fut: F) -> Option<F::Output> {
    let fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match fut.poll(&mut cx) {
        std::task::Poll::Ready(out) => Some(out),
        std::task::Poll::Pending => None,
    }
}

impl Session {
    async fn run<S>(
        &mut self,
        stream: &mut S,
        mut buf: BytesMut,
        mut rx: LinkRx,
        keep_alive: u16,
    ) -> End
    where
        S: Transport,
    {
        // MQTT: the server may close a connection silent for 1.5 × keep-alive; 0 means never.
        let idle = (keep_alive > 0).then(|| Duration::from_millis(u64::from(keep_alive) * 1500));
        let mut last_heard = Instant::now();
        loop {
            // Every whole packet already read is handled before reading more.
            loop {
                match wire::decode(self.version, &mut buf, self.max_packet) {
                    Ok(Some(packet)) => {
                        last_heard = Instant::now();
                        self.door
                            .stats
                            .received(matches!(packet, Inbound::Publish(_)));
                        if let Some(end) = self.on_packet(packet).await {
                            let _ = stream.write_all(&self.out).await;
                            let _ = stream.flush().await;
                            return end;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        self.door
                            .log
                            .refused(self.peer, &self.client_id, &e.to_string());
                        return End::Abnormal(e.to_string());
                    }
                }
            }
            if !self.out.is_empty() {
                // A flush too: TLS and WebSocket streams may hold what was written.
                if let Err(e) = async {
                    stream.write_all(&self.out).await?;
                    stream.flush().await
                }
                .await
                {
                    return End::Abnormal(e.to_string());
                }
                self.out.clear();
            }
            let silent_until = idle.map(|d| last_heard + d);
            let timeout = async {
                match silent_until {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                read = stream.read_buf(&mut buf) => match read {
                    Ok(0) => return End::Abnormal("closed by the client".into()),
                    Ok(_) => stream.quickack(),
                    Err(e) => return End::Abnormal(e.to_string()),
                },
                // At most MAX_UNACKED QoS 1 publishes wait for the client's PUBACK: past that
                // the router holds the rest until the client catches up.
                notification = rx.next(), if self.unacked.len() < MAX_UNACKED => match notification {
                    Ok(Some(n)) => {
                        if let Some(end) = self.on_router(n, &rx) {
                            return end;
                        }
                    }
                    Ok(None) => {}
                    Err(_) => return End::Abnormal("the router closed the session (taken over by the same client id?)".into()),
                },
                _ = timeout => return End::Abnormal(format!("silent for 1.5 × its keep-alive of {keep_alive} s")),
                _ = self.door.stop.cancelled() => return End::Abnormal("the agent is stopping".into()),
            }
        }
    }

    fn send(&mut self, packet: Outbound) {
        self.door.stats.sent(matches!(packet, Outbound::Publish(_)));
        if let Err(e) = wire::encode(self.version, &packet, &mut self.out) {
            tracing::warn!(client = %self.client_id, error = %e, "cannot encode a packet for the client");
        }
    }

    /// Handles one packet from the client; `Some` ends the session.
    async fn on_packet(&mut self, packet: Inbound) -> Option<End> {
        match packet {
            Inbound::Publish(m) => return self.on_publish(m).await,
            Inbound::PubAck(pkid) | Inbound::PubComp(pkid) => {
                self.unacked.remove(&pkid);
            }
            Inbound::PubRec(pkid) => self.send(Outbound::PubRel(pkid)),
            Inbound::PubRel(pkid) => {
                self.awaiting_rel.remove(&pkid);
                self.send(Outbound::PubComp(pkid));
            }
            Inbound::Subscribe { pkid, filters } => return self.on_subscribe(pkid, filters),
            Inbound::Unsubscribe { pkid, filters } => {
                for f in &filters {
                    self.subscriptions.remove(f);
                }
                let count = filters.len();
                let filters = filters.iter().map(|f| super::router_name(f)).collect();
                let unsub = Unsubscribe { pkid, filters };
                if let Err(e) = send_now(&mut self.tx, Packet::Unsubscribe(unsub, None)) {
                    return Some(End::Abnormal(e));
                }
                self.send(Outbound::UnsubAck { pkid, count });
            }
            Inbound::PingReq => self.send(Outbound::PingResp),
            Inbound::Disconnect { with_will: false } => return Some(End::Clean),
            Inbound::Disconnect { with_will: true } => {
                return Some(End::Abnormal("DISCONNECT asking for its will".into()))
            }
            Inbound::Connect { .. } => return Some(End::Abnormal("a second CONNECT".into())),
            Inbound::Unexpected(what) => {
                return Some(End::Abnormal(format!("a client may not send {what}")))
            }
        }
        None
    }

    async fn on_publish(&mut self, m: Message) -> Option<End> {
        let mut allowed = acl::may_publish(&self.door.base, &self.role, &m.topic)
            && acl::may_publish_discovery(self.door.discovery_prefix.as_deref(), &m.topic);
        if !allowed {
            self.door.log.refused(
                self.peer,
                &self.client_id,
                &format!("{} may not publish on {:?}", self.role.describe(), m.topic),
            );
        } else if m.retain && acl::is_request(&self.door.base, &self.role, &m.topic) {
            // A retained command would be kept by the broker and run again for every new
            // subscriber of the command topics: only live commands switch.
            allowed = false;
            if !std::mem::replace(&mut self.warned_retained_command, true) {
                let why = format!(
                    "a retained command on {:?} is ignored and not kept (only live commands switch); publish it without retain",
                    m.topic
                );
                self.door.log.refused(self.peer, &self.client_id, &why);
            }
        } else if let Err(full) = if m.retain && !self.role.is_trusted() {
            self.door.retained.admit(&m.topic, m.payload.len())
        } else {
            Ok(())
        } {
            allowed = false;
            let why = format!("a retained message on {:?} is not kept: {full}", m.topic);
            self.door.log.refused(self.peer, &self.client_id, &why);
        } else if !self.role.is_trusted() && acl::is_request(&self.door.base, &self.role, &m.topic)
        {
            self.take_token().await;
        }
        let duplicate = m.qos == 2 && self.awaiting_rel.contains(&m.pkid);
        if allowed && !duplicate {
            let mark = DoorMark {
                qos: m.qos,
                empty: m.payload.is_empty() && !m.retain,
            };
            let payload = if mark.empty {
                Bytes::from_static(DoorMark::PLACEHOLDER)
            } else {
                m.payload
            };
            let command = acl::is_request(&self.door.base, &self.role, &m.topic);
            let topic = super::router_name(&m.topic);
            let publish = Publish::new(Bytes::from(topic.into_bytes()), payload, m.retain);
            let mut properties = m.properties.unwrap_or_default();
            // Aliases are not offered; a client that sends one anyway gets it ignored.
            properties.topic_alias = None;
            properties.subscription_identifiers.clear();
            properties.user_properties.retain(|(k, _)| !is_internal(k));
            if command {
                let sender = format!("{}/{}", self.role.describe(), self.client_id);
                properties
                    .user_properties
                    .push((super::SENDER_PROPERTY.to_string(), sender));
            }
            properties
                .user_properties
                .push((super::DOOR_PROPERTY.to_string(), mark.encode()));
            if let Err(e) = send_now(&mut self.tx, Packet::Publish(publish, Some(properties))) {
                return Some(End::Abnormal(e));
            }
        }
        match m.qos {
            1 => self.send(Outbound::PubAck {
                pkid: m.pkid,
                refused: !allowed,
            }),
            2 => {
                if self.awaiting_rel.len() >= MAX_UNACKED && !duplicate {
                    return Some(End::Abnormal(
                        "too many QoS 2 publishes without PUBREL".into(),
                    ));
                }
                self.awaiting_rel.insert(m.pkid);
                self.send(Outbound::PubRec {
                    pkid: m.pkid,
                    refused: !allowed,
                });
            }
            _ => {}
        }
        None
    }

    /// Waits until the client may send another command (users only).
    async fn take_token(&mut self) {
        let limits = &self.door.limits;
        let now = Instant::now();
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * limits.commands_per_s).min(limits.command_burst);
        self.refilled = now;
        if self.tokens < 1.0 {
            let wait = (1.0 - self.tokens) / limits.commands_per_s;
            self.door.log.throttled(self.peer, &self.client_id);
            tokio::time::sleep(Duration::from_secs_f64(wait)).await;
            self.tokens = 1.0;
            self.refilled = Instant::now();
        }
        self.tokens -= 1.0;
    }

    fn on_subscribe(&mut self, pkid: u16, filters: Vec<(String, u8)>) -> Option<End> {
        let mut codes = Vec::with_capacity(filters.len());
        let mut accepted = Vec::new();
        for (filter, qos) in filters {
            let code = if !acl::valid_filter(&filter) || filter.starts_with("$share/") {
                Granted::Invalid
            } else if !acl::may_subscribe(&self.door.base, &self.role, &filter) {
                self.door.log.refused(
                    self.peer,
                    &self.client_id,
                    &format!("{} may not subscribe to {filter:?}", self.role.describe()),
                );
                Granted::NotAuthorized
            } else {
                let granted = qos.min(2);
                self.subscriptions.insert(filter.clone(), granted);
                accepted.push(Filter {
                    path: super::router_name(&filter),
                    qos: QoS::AtMostOnce,
                    nolocal: false,
                    preserve_retain: false,
                    retain_forward_rule: RetainForwardRule::OnEverySubscribe,
                });
                Granted::Qos(granted)
            };
            codes.push(code);
        }
        if accepted.is_empty() {
            self.send(Outbound::SubAck { pkid, codes });
            return None;
        }
        // The client hears SUBACK only once the router has the subscription, so whatever is
        // published after it reaches the client.
        self.pending_subacks.insert(pkid, codes);
        let subscribe = Subscribe {
            pkid,
            filters: accepted,
        };
        send_now(&mut self.tx, Packet::Subscribe(subscribe, None))
            .err()
            .map(End::Abnormal)
    }

    /// Handles what the router sends this client; `Some` ends the session.
    fn on_router(&mut self, notification: Notification, rx: &LinkRx) -> Option<End> {
        match notification {
            Notification::Forward(forward) => {
                let topic = super::client_name(&String::from_utf8_lossy(&forward.publish.topic));
                if !acl::may_read(&self.door.base, &self.role, &topic) {
                    return None;
                }
                let granted = self
                    .subscriptions
                    .iter()
                    .filter(|(f, _)| acl::matches(f, &topic))
                    .map(|(_, q)| *q)
                    .max()?;
                let (properties, mark) = DoorMark::take(forward.properties);
                // The agent's own publishes carry no mark: they reach each subscriber at the
                // QoS it asked for.
                let qos = mark.map_or(granted, |m| m.qos.min(granted));
                let payload = match mark {
                    Some(m) if m.empty => Bytes::new(),
                    _ => forward.publish.payload,
                };
                let pkid = if qos > 0 {
                    self.last_pkid = self.last_pkid.checked_add(1).unwrap_or(1);
                    self.unacked.insert(self.last_pkid);
                    self.last_pkid
                } else {
                    0
                };
                self.send(Outbound::Publish(Message {
                    topic,
                    payload,
                    qos,
                    retain: forward.publish.retain,
                    pkid,
                    properties,
                }));
            }
            ack @ Notification::DeviceAck(_) => {
                let packet: Option<Packet> = ack.into();
                if let Some(Packet::SubAck(suback, _)) = packet {
                    if let Some(codes) = self.pending_subacks.remove(&suback.pkid) {
                        self.send(Outbound::SubAck {
                            pkid: suback.pkid,
                            codes,
                        });
                    }
                }
            }
            // The router paused us because our buffer filled and we have taken all of it.
            Notification::Unschedule if rx.ready().is_err() => {
                return Some(End::Abnormal("the router is gone".into()));
            }
            Notification::Disconnect(..) => {
                return Some(End::Abnormal(
                    "taken over by a new connection with the same client id".into(),
                ))
            }
            _ => {}
        }
        None
    }

    fn publish_will(&mut self, will: Will) {
        if will.retain && !self.role.is_trusted() {
            if let Err(full) = self.door.retained.admit(&will.topic, will.payload.len()) {
                let why = format!("its will on {:?} is not kept: {full}", will.topic);
                self.door.log.refused(self.peer, &self.client_id, &why);
                return;
            }
        }
        let publish = Publish::new(
            Bytes::from(super::router_name(&will.topic).into_bytes()),
            will.payload,
            will.retain,
        );
        let _ = send_now(&mut self.tx, Packet::Publish(publish, None));
    }
}

impl LogGate {
    /// Logs a refused client, unless too many lines were logged lately.
    pub fn refused(&self, peer: SocketAddr, client_id: &str, why: &str) {
        if let Some(suppressed) = self.admit() {
            tracing::warn!(%peer, client = %client_id.chars().take(MAX_CLIENT_ID).collect::<String>(), %why, suppressed, "client refused");
        }
    }

    /// Logs that a client is sending commands faster than allowed (rate limited too).
    pub fn throttled(&self, peer: SocketAddr, client_id: &str) {
        if let Some(suppressed) = self.admit() {
            tracing::warn!(%peer, client = %client_id, suppressed, "client sends commands faster than allowed; slowing it down");
        }
    }
}
