//! The CLI's side of the public interface: find an agent, send one request, wait for its answer.

use crate::mqtt::{Link, LinkEvent, LinkOptions, Qos};
use crate::runtime::{RuntimeError, RuntimeInfo};
use std::path::Path;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The broker of the agent a command is sent to.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// Host name or address.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Base topic of that agent's public interface.
    pub base: String,
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("--via {0:?} is not HOST:PORT")]
    BadVia(String),
    #[error(transparent)]
    NoAgent(#[from] RuntimeError),
    #[error("cannot reach the agent at {host}:{port}: {reason}")]
    Unreachable {
        host: String,
        port: u16,
        reason: String,
    },
    #[error("no answer from the agent at {host}:{port} within {secs} s")]
    Timeout { host: String, port: u16, secs: f64 },
}

/// Finds the agent: `via` if given, else the one running on `data_dir`.
pub fn resolve(via: Option<&str>, data_dir: &Path, base: &str) -> Result<Target, ClientError> {
    match via {
        Some(v) => {
            let (host, port) = v
                .rsplit_once(':')
                .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
                .filter(|(h, p)| !h.is_empty() && *p != 0)
                .ok_or_else(|| ClientError::BadVia(v.to_string()))?;
            Ok(Target {
                host: host.trim_matches(['[', ']']).to_string(),
                port,
                base: base.to_string(),
            })
        }
        None => {
            let info = RuntimeInfo::read(data_dir)?;
            Ok(Target {
                host: "127.0.0.1".into(),
                port: info.port,
                base: info.base_topic,
            })
        }
    }
}

/// Publishes the payload made by `build(reply_topic)` on `topic` and returns the first
/// message on the reply topic that `ours` accepts (the topic is shared with other CLI
/// invocations). The subscription is acknowledged before the request goes out, so a fast
/// answer cannot be missed.
pub async fn request(
    target: &Target,
    topic: &str,
    build: impl FnOnce(&str) -> Vec<u8>,
    ours: impl Fn(&[u8]) -> bool,
    timeout: Duration,
) -> Result<Vec<u8>, ClientError> {
    let me = Uuid::new_v4();
    let reply_topic = crate::api::reply_topic(&target.base);
    let stop = CancellationToken::new();
    let _stop_on_return = stop.clone().drop_guard();
    let mut opts = LinkOptions::new(target.host.clone(), target.port, format!("pimesh-cli-{me}"));
    opts.keep_alive = Duration::from_secs(30);
    let (link, mut events) = Link::spawn(opts, stop);
    let deadline = Instant::now() + timeout;
    let timed_out = || ClientError::Timeout {
        host: target.host.clone(),
        port: target.port,
        secs: timeout.as_secs_f64(),
    };
    let mut payload = Some(build(&reply_topic));
    loop {
        let ev = tokio::time::timeout_at(deadline, events.recv())
            .await
            .map_err(|_| timed_out())?;
        match ev {
            Some(LinkEvent::Connected) => {
                let _ = link.subscribe(&reply_topic, Qos::AtLeastOnce);
            }
            Some(LinkEvent::Subscribed) => {
                if let Some(p) = payload.take() {
                    link.publish(topic, Qos::AtLeastOnce, false, p)
                        .await
                        .map_err(|e| ClientError::Unreachable {
                            host: target.host.clone(),
                            port: target.port,
                            reason: e.to_string(),
                        })?;
                }
            }
            Some(LinkEvent::Message {
                topic: t, payload, ..
            }) if t == reply_topic && ours(&payload) => {
                link.disconnect().await;
                return Ok(payload);
            }
            Some(LinkEvent::Message { .. }) => {}
            Some(LinkEvent::Disconnected(reason)) => {
                // Before the request is out, an unreachable agent is final; after it, the
                // link reconnects and the answer may still come until the deadline.
                if payload.is_some() {
                    return Err(ClientError::Unreachable {
                        host: target.host.clone(),
                        port: target.port,
                        reason,
                    });
                }
            }
            None => return Err(timed_out()),
        }
    }
}
