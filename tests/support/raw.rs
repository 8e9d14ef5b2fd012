//! A raw MQTT client for conformance tests: rumqttc's v4 and v5 codecs over a blocking socket,
//! so nothing hides or repairs what crosses the wire, and a test can send what a library
//! client never would. The translation to and from rumqttc's packets is in `raw/codec.rs`.

mod codec;

use bytes::BytesMut;
use codec::{from_v4, from_v5, qos4, qos5, to_v4, to_v5};
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::v5;
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

/// How long a rule waits for something that should arrive.
pub const ARRIVE: Duration = Duration::from_secs(5);

/// How long a rule waits to be sure something does not arrive.
pub const QUIET: Duration = Duration::from_millis(600);

/// The protocol version a test client speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum V {
    V4,
    V5,
}

impl V {
    pub fn other(self) -> V {
        match self {
            V::V4 => V::V5,
            V::V5 => V::V4,
        }
    }
}

/// A message as a client receives it.
#[derive(Clone, Debug, PartialEq)]
pub struct Msg {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
}

/// A packet from the broker, either version.
#[derive(Debug)]
pub enum In {
    ConnAck {
        ok: bool,
        assigned: Option<String>,
    },
    Publish(Msg, u16),
    PubAck(u16),
    PubRec(u16),
    PubRel(u16),
    PubComp(u16),
    /// Granted QoS per filter; `None` for a refused filter.
    SubAck(u16, Vec<Option<u8>>),
    UnsubAck(u16),
    PingResp,
    Disconnect,
}

/// A packet to the broker, either version.
pub enum Out<'a> {
    Publish {
        topic: &'a str,
        payload: &'a [u8],
        qos: u8,
        retain: bool,
        pkid: u16,
    },
    PubAck(u16),
    PubRec(u16),
    PubRel(u16),
    PubComp(u16),
    Subscribe(u16, &'a [(&'a str, u8)]),
    Unsubscribe(u16, &'a str),
    PingReq,
    Disconnect,
    /// MQTT 5 only: DISCONNECT with reason 0x04, "publish my will".
    DisconnectWithWill,
}

/// What a CONNECT carries.
pub struct Conn<'a> {
    pub id: &'a str,
    pub keep_alive: u16,
    pub clean: bool,
    /// Topic, payload, retain.
    pub will: Option<(&'a str, &'a [u8], bool)>,
}

impl<'a> Conn<'a> {
    pub fn id(id: &'a str) -> Self {
        Conn {
            id,
            keep_alive: 30,
            clean: true,
            will: None,
        }
    }
}

/// A raw MQTT client on a blocking socket.
pub struct Client {
    stream: TcpStream,
    v: V,
    buf: BytesMut,
    next_pkid: u16,
    /// Messages that arrived while the client waited for something else.
    inbox: VecDeque<Msg>,
}

pub type R<T> = Result<T, String>;

impl Client {
    /// Connects and waits for the CONNACK; `Err` if the broker refuses or says nothing.
    pub fn connect(port: u16, v: V, c: &Conn) -> R<(Client, Option<String>)> {
        let stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        let mut client = Client {
            stream,
            v,
            buf: BytesMut::new(),
            next_pkid: 0,
            inbox: VecDeque::new(),
        };
        client.send_connect(c)?;
        match client.read(ARRIVE)? {
            Some(In::ConnAck { ok: true, assigned }) => Ok((client, assigned)),
            Some(In::ConnAck { ok: false, .. }) => Err("CONNACK refused the connection".into()),
            Some(other) => Err(format!("{other:?} instead of CONNACK")),
            None => Err("no CONNACK".into()),
        }
    }

    pub fn send_connect(&mut self, c: &Conn) -> R<()> {
        let mut out = BytesMut::new();
        match self.v {
            V::V4 => {
                let mut connect = v4::Connect::new(c.id);
                connect.keep_alive = c.keep_alive;
                connect.clean_session = c.clean;
                connect.last_will = c.will.map(|(t, p, r)| v4::LastWill::new(t, p, qos4(0), r));
                v4::Packet::Connect(connect)
                    .write(&mut out, usize::MAX)
                    .map_err(|e| e.to_string())?;
            }
            V::V5 => {
                let connect = v5::Connect {
                    keep_alive: c.keep_alive,
                    client_id: c.id.to_string(),
                    clean_start: c.clean,
                    properties: None,
                };
                let will = c
                    .will
                    .map(|(t, p, r)| v5::LastWill::new(t, p.to_vec(), qos5(0), r, None));
                v5::Packet::Connect(connect, will, None)
                    .write(&mut out, None)
                    .map_err(|e| e.to_string())?;
            }
        }
        self.stream.write_all(&out).map_err(|e| e.to_string())
    }

    pub fn pkid(&mut self) -> u16 {
        self.next_pkid = self.next_pkid % 60000 + 1;
        self.next_pkid
    }

    pub fn send(&mut self, packet: Out) -> R<()> {
        let mut out = BytesMut::new();
        let written = match self.v {
            V::V4 => to_v4(packet)
                .write(&mut out, usize::MAX)
                .map_err(|e| e.to_string()),
            V::V5 => to_v5(packet)
                .write(&mut out, None)
                .map_err(|e| e.to_string()),
        };
        written?;
        self.stream.write_all(&out).map_err(|e| e.to_string())
    }

    /// The next packet within `wait`; `Ok(None)` on silence, `Err` when the connection ends.
    pub fn read(&mut self, wait: Duration) -> R<Option<In>> {
        let end = Instant::now() + wait;
        loop {
            if let Some(p) = self.decode()? {
                return Ok(Some(p));
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let _ = self.stream.set_read_timeout(Some(left));
            let mut chunk = [0u8; 8192];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err("connection closed by the broker".into()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(format!("connection failed: {e}")),
            }
        }
    }

    pub fn decode(&mut self) -> R<Option<In>> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        match self.v {
            V::V4 => match v4::Packet::read(&mut self.buf, usize::MAX) {
                Ok(p) => from_v4(p).map(Some),
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => Ok(None),
                Err(e) => Err(format!("malformed packet from the broker: {e}")),
            },
            V::V5 => match v5::Packet::read(&mut self.buf, None) {
                Ok(p) => from_v5(p).map(Some),
                Err(rumqttc::v5::mqttbytes::Error::InsufficientBytes(_)) => Ok(None),
                Err(e) => Err(format!("malformed packet from the broker: {e}")),
            },
        }
    }

    /// Reads until a packet `want` accepts, acknowledging and keeping every message met on the
    /// way (and `want` may take messages too).
    pub fn until(&mut self, what: &str, want: impl Fn(&In) -> bool) -> R<In> {
        let end = Instant::now() + ARRIVE;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let Some(p) = self.read(left)? else {
                return Err(format!("no {what}"));
            };
            if let In::Publish(m, pkid) = &p {
                self.ack(m.qos, *pkid)?;
                if !want(&p) {
                    self.inbox.push_back(m.clone());
                    continue;
                }
            }
            if let In::PubRel(pkid) = p {
                self.send(Out::PubComp(pkid))?;
            }
            if want(&p) {
                return Ok(p);
            }
        }
    }

    pub fn ack(&mut self, qos: u8, pkid: u16) -> R<()> {
        match qos {
            1 => self.send(Out::PubAck(pkid)),
            2 => self.send(Out::PubRec(pkid)),
            _ => Ok(()),
        }
    }

    /// Subscribes to each filter at its QoS; the granted QoS per filter (`None`: refused).
    pub fn subscribe(&mut self, filters: &[(&str, u8)]) -> R<Vec<Option<u8>>> {
        let pkid = self.pkid();
        self.send(Out::Subscribe(pkid, filters))?;
        match self.until("SUBACK", |p| matches!(p, In::SubAck(id, _) if *id == pkid))? {
            In::SubAck(_, codes) => Ok(codes),
            _ => unreachable!(),
        }
    }

    pub fn unsubscribe(&mut self, filter: &str) -> R<()> {
        let pkid = self.pkid();
        self.send(Out::Unsubscribe(pkid, filter))?;
        self.until("UNSUBACK", |p| matches!(p, In::UnsubAck(id) if *id == pkid))
            .map(drop)
    }

    /// Publishes and completes the QoS exchange (PUBACK, or PUBREC/PUBREL/PUBCOMP).
    pub fn publish(&mut self, topic: &str, payload: &[u8], qos: u8, retain: bool) -> R<()> {
        let pkid = if qos > 0 { self.pkid() } else { 0 };
        self.send(Out::Publish {
            topic,
            payload,
            qos,
            retain,
            pkid,
        })?;
        match qos {
            0 => Ok(()),
            1 => self
                .until("PUBACK", |p| matches!(p, In::PubAck(id) if *id == pkid))
                .map(drop),
            _ => {
                self.until("PUBREC", |p| matches!(p, In::PubRec(id) if *id == pkid))?;
                self.send(Out::PubRel(pkid))?;
                self.until("PUBCOMP", |p| matches!(p, In::PubComp(id) if *id == pkid))
                    .map(drop)
            }
        }
    }

    pub fn ping(&mut self) -> R<()> {
        self.send(Out::PingReq)?;
        self.until("PINGRESP", |p| matches!(p, In::PingResp))
            .map(drop)
    }

    /// The next message, waiting up to `wait`.
    pub fn message(&mut self, wait: Duration) -> R<Option<Msg>> {
        if let Some(m) = self.inbox.pop_front() {
            return Ok(Some(m));
        }
        let end = Instant::now() + wait;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.read(left)? {
                None => return Ok(None),
                Some(In::Publish(m, pkid)) => {
                    self.ack(m.qos, pkid)?;
                    return Ok(Some(m));
                }
                Some(In::PubRel(pkid)) => self.send(Out::PubComp(pkid))?,
                Some(_) => {}
            }
        }
    }

    /// Every message that arrives within `wait`.
    pub fn messages(&mut self, wait: Duration) -> R<Vec<Msg>> {
        let end = Instant::now() + wait;
        let mut all = Vec::new();
        while let Some(m) = self.message(end.saturating_duration_since(Instant::now()))? {
            all.push(m);
        }
        Ok(all)
    }

    /// Whether the broker closes the connection within `wait` (answering nothing).
    pub fn closed_within(&mut self, wait: Duration) -> bool {
        let end = Instant::now() + wait;
        loop {
            match self.read(end.saturating_duration_since(Instant::now())) {
                Err(_) => return true,
                Ok(None) => return false,
                Ok(Some(_)) => {}
            }
        }
    }

    pub fn disconnect(mut self) -> R<()> {
        self.send(Out::Disconnect)?;
        let _ = self.stream.shutdown(Shutdown::Both);
        Ok(())
    }

    /// Bytes as they are, for packet forms the codec does not write.
    pub fn send_raw(&mut self, bytes: &[u8]) -> R<()> {
        self.stream.write_all(bytes).map_err(|e| e.to_string())
    }

    /// Ends the connection without DISCONNECT, as a crashed client or a lost network would.
    pub fn vanish(self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}
