//! A lean MQTT 3.1.1 load generator for the throughput figures: one blocking TCP connection,
//! QoS 1 publishes kept `window` in flight, written together with the acknowledgements it owes
//! in one `write` per turn; packets are encoded and decoded by rumqttc's `mqttbytes`, as the
//! conformance tests' raw client does, without its client and event loop.
//!
//! The benchmark runs on the same two cores as the broker it measures, so its own cost is
//! taken from the system under test: a general client (rumqttc, a tokio task per connection, a
//! parsed JSON value per answer) used about as much CPU per command as the agent itself, and
//! moved only 13,500 QoS 1 messages/s through Mosquitto. This one spends a few microseconds
//! per message, so both brokers are measured, in the same run, with the same small client.

use anyhow::{bail, Context, Result};
use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{self, Packet};
use rumqttc::mqttbytes::QoS;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// What the run asks of the generator.
pub struct Load<'a> {
    /// The client id, for the broker's logs and our errors.
    pub name: &'a str,
    /// The broker's loopback port.
    pub port: u16,
    /// Username and password, when the broker asks for them.
    pub creds: Option<(String, String)>,
    /// The filter answers or echoes arrive on (QoS 1).
    pub subscribe: &'a str,
    /// Messages to publish.
    pub total: usize,
    /// Messages published and not yet answered, at most.
    pub window: usize,
    /// When set, publish at most this many messages per second (an open loop at a fixed
    /// rate, for latency under a known load); otherwise as fast as answers come back.
    pub rate: Option<f64>,
}

/// What one message's answer told the generator.
pub enum Heard {
    /// The answer to message `n` (its publish index).
    Answer(usize),
    /// Something else on the subscription; not counted.
    Other,
}

/// Messages a paced run sends at `rate` a second: three seconds' worth, at least 1,000. Pimesh
/// and Mosquitto are paced alike, so their latencies at one rate compare.
pub fn paced_total(rate: f64) -> usize {
    ((rate * 3.0) as usize).max(1000)
}

/// The outcome of a run.
pub struct Run {
    /// Messages answered.
    pub answered: usize,
    /// Answered messages per second, from the first publish to the last answer.
    pub per_second: f64,
    /// Time from each answered message's publish to its answer, in answer order.
    pub latencies: Vec<Duration>,
}

/// How long the generator waits for any byte before the run is declared broken.
const WAIT: Duration = Duration::from_secs(5);

/// Publishes `load.total` QoS 1 messages made by `message(n)` (topic, payload), keeping at
/// most `load.window` unanswered, and hands every message received to `heard`.
pub fn run(
    load: &Load,
    mut message: impl FnMut(usize) -> (String, Vec<u8>),
    mut heard: impl FnMut(&str, &[u8]) -> Result<Heard>,
) -> Result<Run> {
    let mut conn = Conn::open(load)?;
    let mut sent_at: Vec<Option<Instant>> = Vec::with_capacity(load.total);
    let mut latencies = Vec::with_capacity(load.total);
    let (mut sent, mut open, mut answered) = (0usize, 0usize, 0usize);
    let mut out = BytesMut::with_capacity(64 * 1024);
    let start = Instant::now();
    let mut last = start;
    while answered < load.total {
        let now = Instant::now();
        let due = match load.rate {
            Some(rate) => ((now - start).as_secs_f64() * rate) as usize + 1,
            None => usize::MAX,
        };
        while open < load.window && sent < load.total && sent < due {
            let (topic, payload) = message(sent);
            let mut publish = v4::Publish::new(topic, QoS::AtLeastOnce, payload);
            publish.pkid = pkid(sent);
            publish.write(&mut out)?;
            sent_at.push(Some(now));
            sent += 1;
            open += 1;
        }
        if !out.is_empty() {
            conn.stream
                .write_all(&out)
                .with_context(|| format!("{}: writing to port {}", load.name, load.port))?;
            out.clear();
        }
        // At a fixed rate, wait for the next message's time unless answers are due sooner.
        let timeout = match load.rate {
            Some(rate) if sent < load.total && open < load.window => {
                let next = start + Duration::from_secs_f64(sent as f64 / rate);
                next.saturating_duration_since(Instant::now())
                    .max(Duration::from_micros(50))
            }
            _ => WAIT,
        };
        let got = match conn.fill(timeout, load)? {
            Some(got) => got,
            // Nothing for WAIT: what is still open is lost; the caller counts it.
            None => break,
        };
        if got == 0 {
            continue;
        }
        while let Some(packet) = conn.next_packet()? {
            let Packet::Publish(p) = packet else {
                continue; // PUBACK, PINGRESP
            };
            if p.qos != QoS::AtMostOnce {
                v4::PubAck::new(p.pkid).write(&mut out)?;
            }
            if let Heard::Answer(n) = heard(&p.topic, &p.payload)? {
                let Some(at) = sent_at.get_mut(n).and_then(Option::take) else {
                    bail!("{}: an answer to message {n}, which is not open", load.name);
                };
                last = Instant::now();
                latencies.push(last - at);
                open -= 1;
                answered += 1;
            }
        }
    }
    Ok(Run {
        answered,
        per_second: answered as f64 / (last - start).as_secs_f64().max(1e-9),
        latencies,
    })
}

/// One connection and the bytes read from it but not parsed yet.
struct Conn {
    stream: TcpStream,
    buf: BytesMut,
}

/// The largest packet the generator takes from a broker.
const MAX_PACKET: usize = 1024 * 1024;

impl Conn {
    /// Connects, logs in (clean session) and subscribes to `load.subscribe` at QoS 1.
    fn open(load: &Load) -> Result<Conn> {
        let stream = TcpStream::connect(("127.0.0.1", load.port))
            .with_context(|| format!("{}: connecting to port {}", load.name, load.port))?;
        stream.set_nodelay(true)?;
        let mut conn = Conn {
            stream,
            buf: BytesMut::with_capacity(256 * 1024),
        };
        let mut connect = v4::Connect::new(load.name);
        connect.keep_alive = 60;
        if let Some((user, password)) = &load.creds {
            connect.set_login(user, password);
        }
        let mut out = BytesMut::new();
        connect.write(&mut out)?;
        let mut subscribe = v4::Subscribe::new(load.subscribe, QoS::AtLeastOnce);
        subscribe.pkid = 1;
        subscribe.write(&mut out)?;
        conn.stream.write_all(&out)?;
        let (mut connack, mut suback) = (false, false);
        while !(connack && suback) {
            if conn.fill(WAIT, load)?.is_none() {
                bail!("{}: no CONNACK and SUBACK within {WAIT:?}", load.name);
            }
            while let Some(packet) = conn.next_packet()? {
                match packet {
                    Packet::ConnAck(ack) if ack.code == v4::ConnectReturnCode::Success => {
                        connack = true
                    }
                    Packet::ConnAck(ack) => {
                        bail!("{}: the broker refused the connection: {ack:?}", load.name)
                    }
                    Packet::SubAck(ack)
                        if ack
                            .return_codes
                            .iter()
                            .all(|c| matches!(c, v4::SubscribeReasonCode::Success(_))) =>
                    {
                        suback = true
                    }
                    Packet::SubAck(_) => {
                        bail!("{}: subscription to {} refused", load.name, load.subscribe)
                    }
                    _ => {}
                }
            }
        }
        Ok(conn)
    }

    /// Reads what is there, waiting at most `timeout`: the number of bytes read (0 when a
    /// wait shorter than [`WAIT`] ended first), None after [`WAIT`] without a byte, an error
    /// when the broker closed the connection.
    fn fill(&mut self, timeout: Duration, load: &Load) -> Result<Option<usize>> {
        let mut chunk = [0u8; 64 * 1024];
        self.stream.set_read_timeout(Some(timeout))?;
        match self.stream.read(&mut chunk) {
            Ok(0) => bail!(
                "{}: the broker on port {} closed the connection",
                load.name,
                load.port
            ),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(Some(n))
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Ok((timeout < WAIT).then_some(0))
            }
            Err(e) => Err(e).context(format!("{}: reading", load.name)),
        }
    }

    /// The next whole packet read, if one is there.
    fn next_packet(&mut self) -> Result<Option<Packet>> {
        match v4::Packet::read(&mut self.buf, MAX_PACKET) {
            Ok(packet) => Ok(Some(packet)),
            Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => Ok(None),
            Err(e) => bail!("a packet the generator cannot read: {e:?}"),
        }
    }
}

/// The packet id of publish `n`: 1 to 65,535, then round again (never 0).
fn pkid(n: usize) -> u16 {
    (n % 65_535 + 1) as u16
}
