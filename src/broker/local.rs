//! The agent's own link to its embedded broker, in process.
//!
//! rumqttd lets an embedding program join its router directly: publishes go into the router's
//! queue and messages come back through a shared buffer, with no TCP, no MQTT encoding and no
//! client task in between. That removes a loopback round trip from every command an agent
//! runs, and it keeps the MQTT 5 properties of what clients publish (response topic,
//! correlation data), which a 3.1.1 client link would drop.
//!
//! The link lives as long as the broker: the router never drops it unless it is sent a
//! publish it refuses, and everything published here is built by the agent itself. Should it
//! happen anyway, [`LocalRx::recv`] reports the link closed and the agent exits so the service
//! manager restarts it, rather than run deaf.

use crate::door::mark::DoorMark;
use bytes::Bytes;
use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::protocol::{Filter, Packet, Publish, QoS, RetainForwardRule, Subscribe};
use rumqttd::Notification;
use std::sync::{Arc, Mutex};

pub use rumqttd::protocol::PublishProperties;

/// Where an MQTT 5 client asked for the answer to what it published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseTo {
    /// The response topic property.
    pub topic: String,
    /// The correlation data property, echoed on the answer.
    pub correlation: Option<Bytes>,
    /// The client is on the shared broker (`[broker] external`): the answer goes there.
    pub shared: bool,
}

impl ResponseTo {
    /// A plain reply topic (the `reply-to` of a JSON request), without correlation data.
    pub fn topic(topic: String) -> Self {
        ResponseTo {
            topic,
            correlation: None,
            shared: false,
        }
    }
}

/// What the own link reports.
#[derive(Debug)]
pub enum LocalEvent {
    /// The router acknowledged a subscription: messages on it now arrive.
    Subscribed,
    /// A message on a subscribed topic.
    Message {
        topic: String,
        payload: Bytes,
        /// Set when an MQTT 5 client published with a response topic.
        response: Option<ResponseTo>,
        /// Who sent it, as the front door named it ([`crate::door::SENDER_PROPERTY`]).
        sender: Option<String>,
    },
    /// The router dropped the link; nothing arrives any more.
    Closed,
}

/// Why a publish or subscribe did not reach the router.
#[derive(Debug, thiserror::Error)]
#[error("the embedded broker's router refused a request from the agent: {0}")]
pub struct LocalError(String);

/// Sending half: publish and subscribe. Cheap to clone.
#[derive(Clone)]
pub struct LocalLink {
    tx: Arc<Mutex<LinkTx>>,
}

impl std::fmt::Debug for LocalLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalLink")
    }
}

/// Receiving half, owned by the agent task.
#[derive(Debug)]
pub struct LocalRx {
    rx: LinkRx,
}

/// Joins the router of `broker` as client `client_id`. Call before the broker starts serving.
pub fn connect(broker: &rumqttd::Broker, client_id: &str) -> Result<(LocalLink, LocalRx), String> {
    let (tx, rx) = broker.link(client_id).map_err(|e| e.to_string())?;
    Ok((
        LocalLink {
            tx: Arc::new(Mutex::new(tx)),
        },
        LocalRx { rx },
    ))
}

impl LocalLink {
    /// Publishes `payload` on `topic`. `qos` is accepted for symmetry with the peer links:
    /// rumqttd delivers every message at the QoS each subscriber asked for, and in process
    /// there is nothing to acknowledge or retry.
    pub async fn publish(
        &self,
        topic: &str,
        _qos: rumqttc::QoS,
        retain: bool,
        payload: impl Into<Vec<u8>>,
    ) -> Result<(), LocalError> {
        self.publish_with(topic, retain, payload.into(), None)
    }

    /// Publishes with MQTT 5 properties (seen by MQTT 5 subscribers only).
    pub fn publish_with(
        &self,
        topic: &str,
        retain: bool,
        payload: Vec<u8>,
        properties: Option<PublishProperties>,
    ) -> Result<(), LocalError> {
        // `$` topics (the internal `$pimesh/…`) cross the router as the front door names them.
        let topic = Bytes::from(crate::door::router_name(topic).into_bytes());
        let publish = Publish::new(topic, Bytes::from(payload), retain);
        self.send(Packet::Publish(publish, properties))
    }

    /// Subscribes to `filters` in one SUBSCRIBE; retained messages are delivered on it.
    /// In process nothing is lost between router and agent, so QoS 0 is enough here.
    pub fn subscribe_many(&self, filters: &[String]) -> Result<(), LocalError> {
        let filters = filters
            .iter()
            .map(|f| Filter {
                path: crate::door::router_name(f),
                qos: QoS::AtMostOnce,
                nolocal: false,
                preserve_retain: false,
                retain_forward_rule: RetainForwardRule::OnEverySubscribe,
            })
            .collect();
        self.send(Packet::Subscribe(Subscribe { pkid: 1, filters }, None))
    }

    fn send(&self, packet: Packet) -> Result<(), LocalError> {
        let mut tx = self
            .tx
            .lock()
            .map_err(|_| LocalError("link lock poisoned".into()))?;
        // rumqttd's `LinkTx::send` is `async` but has no await point: it queues the packet
        // and wakes the router thread, so it is done after one poll.
        match poll_once(tx.send(packet)) {
            Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(LocalError(e.to_string())),
            None => Err(LocalError("the router queue is not ready".into())),
        }
    }
}

/// Polls `fut` once, without a task to wake: its output if that is ready, None otherwise
/// (and `fut` is dropped, so it must be cancel-safe).
fn poll_once<F: std::future::Future>(fut: F) -> Option<F::Output> {
    let fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match fut.poll(&mut cx) {
        std::task::Poll::Ready(out) => Some(out),
        std::task::Poll::Pending => None,
    }
}

impl LocalRx {
    /// The next event if one is waiting now, without waiting for one: one poll of
    /// [`LocalRx::recv`], which is cancel-safe, so nothing is lost when it is not ready.
    pub fn try_recv(&mut self) -> Option<LocalEvent> {
        poll_once(self.recv())
    }

    /// The next event. Cancel-safe: a message is only taken once this returns it.
    pub async fn recv(&mut self) -> LocalEvent {
        loop {
            let notification = match self.rx.next().await {
                Ok(Some(n)) => n,
                Ok(None) => continue,
                Err(_) => return LocalEvent::Closed,
            };
            match notification {
                Notification::Forward(forward) => {
                    let mut sender = None;
                    let mut payload = forward.publish.payload;
                    let response = forward.properties.and_then(|p| {
                        for (k, v) in p.user_properties {
                            if k == crate::door::SENDER_PROPERTY {
                                sender = Some(v);
                            } else if k == crate::door::DOOR_PROPERTY
                                && DoorMark::decode(&v).is_some_and(|m| m.empty)
                            {
                                // An empty publish that crossed the router with a placeholder.
                                payload = bytes::Bytes::new();
                            }
                        }
                        let topic = p.response_topic?;
                        Some(ResponseTo {
                            topic,
                            correlation: p.correlation_data,
                            shared: false,
                        })
                    });
                    return LocalEvent::Message {
                        topic: crate::door::client_name(&String::from_utf8_lossy(
                            &forward.publish.topic,
                        )),
                        payload,
                        response,
                        sender,
                    };
                }
                ack @ Notification::DeviceAck(_) => {
                    let packet: Option<Packet> = ack.into();
                    if let Some(Packet::SubAck(..)) = packet {
                        return LocalEvent::Subscribed;
                    }
                }
                // The router paused us because our buffer filled, and we have just taken all of
                // it: ask for more. Failing to ask means the router is gone.
                Notification::Unschedule if self.rx.ready().is_err() => {
                    return LocalEvent::Closed;
                }
                Notification::Disconnect(..) => return LocalEvent::Closed,
                _ => {}
            }
        }
    }
}
