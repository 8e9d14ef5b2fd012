//! A lean MQTT 3.1.1 load generator for the throughput figures: one blocking TCP connection,
//! QoS 1 publishes kept `window` in flight, written together with the acknowledgements it owes
//! in one `write` per turn, and packets parsed in place.
//!
//! The benchmark runs on the same two cores as the broker it measures, so its own cost is
//! taken from the system under test: a general client (rumqttc, a tokio task per connection, a
//! parsed JSON value per answer) used about as much CPU per command as the agent itself, and
//! moved only 13,500 QoS 1 messages/s through Mosquitto. This one spends a few microseconds
//! per message, so both brokers are measured, in the same run, with the same small client.

use anyhow::{bail, Context, Result};
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
    let mut out = Vec::with_capacity(64 * 1024);
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
            encode_publish(&mut out, &topic, &payload, pkid(sent));
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
            match packet {
                Packet::Publish { topic, payload, id } => {
                    if let Some(id) = id {
                        out.extend_from_slice(&[0x40, 2]);
                        out.extend_from_slice(&id.to_be_bytes());
                    }
                    if let Heard::Answer(n) = heard(&topic, &payload)? {
                        let Some(at) = sent_at.get_mut(n).and_then(Option::take) else {
                            bail!("{}: an answer to message {n}, which is not open", load.name);
                        };
                        last = Instant::now();
                        latencies.push(last - at);
                        open -= 1;
                        answered += 1;
                    }
                }
                Packet::Other => {}
            }
        }
    }
    Ok(Run {
        answered,
        per_second: answered as f64 / (last - start).as_secs_f64().max(1e-9),
        latencies,
    })
}

/// The packet id of publish `n`: 1 to 65,535, then round again (never 0).
fn pkid(n: usize) -> u16 {
    (n % 65_535 + 1) as u16
}

/// One connection and the bytes read from it but not parsed yet.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
}

/// What the generator needs of a packet from the broker.
enum Packet {
    /// A message; `id` is its packet id when it wants a PUBACK.
    Publish {
        topic: String,
        payload: Vec<u8>,
        id: Option<u16>,
    },
    /// Anything else (PUBACK, SUBACK, PINGRESP).
    Other,
}

impl Conn {
    /// Connects, logs in (clean session) and subscribes to `load.subscribe` at QoS 1.
    fn open(load: &Load) -> Result<Conn> {
        let stream = TcpStream::connect(("127.0.0.1", load.port))
            .with_context(|| format!("{}: connecting to port {}", load.name, load.port))?;
        stream.set_nodelay(true)?;
        let mut conn = Conn {
            stream,
            buf: Vec::with_capacity(256 * 1024),
            start: 0,
        };
        let mut out = Vec::new();
        encode_connect(&mut out, load.name, load.creds.as_ref());
        encode_subscribe(&mut out, load.subscribe);
        conn.stream.write_all(&out)?;
        let (mut connack, mut suback) = (false, false);
        while !(connack && suback) {
            if conn.fill(WAIT, load)?.is_none() {
                bail!("{}: no CONNACK and SUBACK within {WAIT:?}", load.name);
            }
            while let Some((kind, body)) = conn.next_raw()? {
                match kind >> 4 {
                    2 if body.get(1) == Some(&0) => connack = true,
                    2 => bail!("{}: the broker refused the connection: {body:?}", load.name),
                    9 if body.last().is_some_and(|&rc| rc < 0x80) => suback = true,
                    9 => bail!("{}: subscription to {} refused", load.name, load.subscribe),
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
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let len = self.buf.len();
        self.buf.resize(len + 64 * 1024, 0);
        self.stream.set_read_timeout(Some(timeout))?;
        let got = match self.stream.read(&mut self.buf[len..]) {
            Ok(0) => bail!(
                "{}: the broker on port {} closed the connection",
                load.name,
                load.port
            ),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                self.buf.truncate(len);
                return Ok((timeout < WAIT).then_some(0));
            }
            Err(e) => return Err(e).context(format!("{}: reading", load.name)),
        };
        self.buf.truncate(len + got);
        Ok(Some(got))
    }

    /// The next whole packet read: its first byte and its body.
    fn next_raw(&mut self) -> Result<Option<(u8, Vec<u8>)>> {
        let bytes = &self.buf[self.start..];
        let Some((len, header)) = remaining_length(bytes)? else {
            return Ok(None);
        };
        if bytes.len() < header + len {
            return Ok(None);
        }
        let packet = (bytes[0], bytes[header..header + len].to_vec());
        self.start += header + len;
        Ok(Some(packet))
    }

    /// The next whole packet read, decoded as far as the generator needs.
    fn next_packet(&mut self) -> Result<Option<Packet>> {
        let Some((first, body)) = self.next_raw()? else {
            return Ok(None);
        };
        if first >> 4 != 3 {
            return Ok(Some(Packet::Other));
        }
        let qos = (first >> 1) & 3;
        let Some(topic_len) = body
            .get(..2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        else {
            bail!("a PUBLISH too short for its topic length");
        };
        let mut at = 2 + topic_len;
        let topic =
            String::from_utf8_lossy(body.get(2..at).context("a PUBLISH cut short")?).into_owned();
        let id = if qos > 0 {
            let b = body
                .get(at..at + 2)
                .context("a PUBLISH without its packet id")?;
            at += 2;
            Some(u16::from_be_bytes([b[0], b[1]]))
        } else {
            None
        };
        let payload = body[at..].to_vec();
        Ok(Some(Packet::Publish { topic, payload, id }))
    }
}

/// A packet's remaining length and the size of its fixed header, once enough bytes are there.
fn remaining_length(bytes: &[u8]) -> Result<Option<(usize, usize)>> {
    let mut len = 0usize;
    for i in 0..4 {
        let Some(&b) = bytes.get(1 + i) else {
            return Ok(None);
        };
        len |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some((len, 2 + i)));
        }
    }
    bail!("a packet length longer than four bytes")
}

/// Appends `len` as MQTT's variable-length integer.
fn put_length(out: &mut Vec<u8>, mut len: usize) {
    loop {
        let mut b = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        out.push(b);
        if len == 0 {
            return;
        }
    }
}

/// Appends a length-prefixed string.
fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

fn encode_connect(out: &mut Vec<u8>, id: &str, creds: Option<&(String, String)>) {
    let mut body = Vec::new();
    put_str(&mut body, b"MQTT");
    body.push(4); // 3.1.1
    body.push(if creds.is_some() { 0xC2 } else { 0x02 }); // clean session (+ user, password)
    body.extend_from_slice(&60u16.to_be_bytes());
    put_str(&mut body, id.as_bytes());
    if let Some((user, password)) = creds {
        put_str(&mut body, user.as_bytes());
        put_str(&mut body, password.as_bytes());
    }
    out.push(0x10);
    put_length(out, body.len());
    out.extend_from_slice(&body);
}

fn encode_subscribe(out: &mut Vec<u8>, filter: &str) {
    let mut body = vec![0, 1];
    put_str(&mut body, filter.as_bytes());
    body.push(1);
    out.push(0x82);
    put_length(out, body.len());
    out.extend_from_slice(&body);
}

fn encode_publish(out: &mut Vec<u8>, topic: &str, payload: &[u8], id: u16) {
    out.push(0x32); // PUBLISH, QoS 1
    put_length(out, 2 + topic.len() + 2 + payload.len());
    put_str(out, topic.as_bytes());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(payload);
}
