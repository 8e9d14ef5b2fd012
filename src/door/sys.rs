//! `$SYS/broker/…`: the broker's statistics as retained messages, as Mosquitto publishes them,
//! so the tools people point at a broker (MQTT Explorer, Home Assistant's MQTT page, a
//! `mosquitto_sub -t '$SYS/#'`) show what they show for Mosquitto. Only a subscription that
//! names `$SYS` gets them: `#` and `+` never match a `$` topic.

use super::mark::DoorMark;
use super::{session, Door, DOOR_PROPERTY};
use bytes::Bytes;
use rumqttd::protocol::{Packet, Publish, PublishProperties};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often changed figures are published (Mosquitto's default `sys_interval`).
pub const INTERVAL: Duration = Duration::from_secs(10);

/// How the figures are published.
const QOS_0: DoorMark = DoorMark {
    qos: 0,
    empty: false,
};

/// The router id of the publisher: no session's id starts with `s.`.
const ROUTER_ID: &str = "s.sys";

/// What the sessions count, for `$SYS`.
#[derive(Debug, Default)]
pub struct Stats {
    /// MQTT packets read from clients.
    pub packets_received: AtomicU64,
    /// MQTT packets written to clients.
    pub packets_sent: AtomicU64,
    /// PUBLISH packets read from clients.
    pub publishes_received: AtomicU64,
    /// PUBLISH packets written to clients.
    pub publishes_sent: AtomicU64,
}

impl Stats {
    /// Counts one packet read from a client.
    pub fn received(&self, publish: bool) {
        self.packets_received.fetch_add(1, Ordering::Relaxed);
        if publish {
            self.publishes_received.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts one packet written to a client.
    pub fn sent(&self, publish: bool) {
        self.packets_sent.fetch_add(1, Ordering::Relaxed);
        if publish {
            self.publishes_sent.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The `$SYS` topics and their values now.
fn figures(door: &Door, started: Instant) -> Vec<(&'static str, String)> {
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed).to_string();
    let stats = &door.stats;
    vec![
        (
            "$SYS/broker/version",
            format!("pimesh version {}", env!("CARGO_PKG_VERSION")),
        ),
        (
            "$SYS/broker/uptime",
            format!("{} seconds", started.elapsed().as_secs()),
        ),
        (
            "$SYS/broker/clients/connected",
            door.slots.connected().to_string(),
        ),
        (
            "$SYS/broker/messages/received",
            load(&stats.packets_received),
        ),
        ("$SYS/broker/messages/sent", load(&stats.packets_sent)),
        (
            "$SYS/broker/publish/messages/received",
            load(&stats.publishes_received),
        ),
        (
            "$SYS/broker/publish/messages/sent",
            load(&stats.publishes_sent),
        ),
    ]
}

/// Publishes the figures at start and then every [`INTERVAL`], each only when it changed,
/// until the door stops.
pub async fn publish(door: Arc<Door>) {
    let started = Instant::now();
    let Ok((mut tx, _rx)) = door.router.link(ROUTER_ID) else {
        tracing::warn!("cannot join the router to publish $SYS statistics");
        return;
    };
    let mut last: Vec<Option<String>> = Vec::new();
    let mut tick = tokio::time::interval(INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = door.stop.cancelled() => return,
        }
        for (i, (topic, value)) in figures(&door, started).into_iter().enumerate() {
            if last
                .get(i)
                .is_some_and(|v| v.as_deref() == Some(value.as_str()))
            {
                continue;
            }
            let publish = Publish::new(
                Bytes::from(super::router_name(topic)),
                Bytes::from(value.clone()),
                true,
            );
            // Published at QoS 0, so delivered at QoS 0 whatever the subscription asked.
            let properties = PublishProperties {
                user_properties: vec![(DOOR_PROPERTY.to_string(), QOS_0.encode())],
                ..Default::default()
            };
            if session::send_now(&mut tx, Packet::Publish(publish, Some(properties))).is_err() {
                return;
            }
            if last.len() <= i {
                last.resize(i + 1, None);
            }
            last[i] = Some(value);
        }
    }
}
