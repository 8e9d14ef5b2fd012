//! An MQTT client for the benchmark: rumqttc with TCP_NODELAY, its event loop on a task, and
//! every wait bounded by a deadline so a lost message fails the run instead of hanging it.

use anyhow::{anyhow, bail, Context, Result};
use rumqttc::{AsyncClient, Event, MqttOptions, NetworkOptions, Packet, Publish, QoS};
use std::time::Duration;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio::time::{timeout_at, Instant};

/// How long any single message may take before the run is declared broken.
pub const WAIT: Duration = Duration::from_secs(5);

/// A connected client and the packets its broker sent it.
pub struct Client {
    /// Who the client is, for error messages.
    name: String,
    /// Handle for publishing and subscribing.
    handle: AsyncClient,
    /// Incoming packets, in order, from the event loop task.
    incoming: UnboundedReceiver<Packet>,
}

impl Client {
    /// Connects `name` to the broker on loopback `port` and waits for its CONNACK.
    pub async fn connect(name: &str, port: u16) -> Result<Client> {
        let mut opts = MqttOptions::new(name, "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(30));
        if let Some((user, password)) = crate::support::maybe_creds(port) {
            opts.set_credentials(user, password);
        }
        opts.set_inflight(100);
        let (handle, mut el) = AsyncClient::new(opts, 1000);
        let mut net = NetworkOptions::new();
        net.set_tcp_nodelay(true);
        el.set_network_options(net);
        let (tx, incoming) = unbounded_channel();
        tokio::spawn(async move {
            // The loop ends on the first connection error; the receiver then sees the channel
            // closed and the waiting call reports it.
            while let Ok(ev) = el.poll().await {
                if let Event::Incoming(p) = ev {
                    if tx.send(p).is_err() {
                        return;
                    }
                }
            }
        });
        let mut c = Client {
            name: name.to_string(),
            handle,
            incoming,
        };
        c.until(|p| matches!(p, Packet::ConnAck(_)))
            .await
            .with_context(|| format!("{name} connecting to port {port}"))?;
        Ok(c)
    }

    /// Subscribes to `filter` (QoS 1) and waits for the SUBACK, dropping packets before it.
    pub async fn subscribe(&mut self, filter: &str) -> Result<()> {
        self.handle
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .with_context(|| format!("{} subscribing to {filter}", self.name))?;
        self.until(|p| matches!(p, Packet::SubAck(_)))
            .await
            .with_context(|| format!("{} waiting for the SUBACK of {filter}", self.name))?;
        Ok(())
    }

    /// Publishes `payload` on `topic` with QoS 1.
    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) -> Result<()> {
        self.handle
            .publish(topic, QoS::AtLeastOnce, false, payload.into())
            .await
            .with_context(|| format!("{} publishing to {topic}", self.name))
    }

    /// Publishes `payload` on `topic` with QoS 1, retained.
    pub async fn publish_retained(&self, topic: &str, payload: impl Into<Vec<u8>>) -> Result<()> {
        self.handle
            .publish(topic, QoS::AtLeastOnce, true, payload.into())
            .await
            .with_context(|| format!("{} publishing to {topic}", self.name))
    }

    /// The next PUBLISH received, waiting at most until `deadline`.
    pub async fn next_publish_by(&mut self, deadline: Instant) -> Result<Publish> {
        match self
            .until_by(deadline, |p| matches!(p, Packet::Publish(_)))
            .await?
        {
            Packet::Publish(p) => Ok(p),
            _ => bail!("{}: not a publish", self.name),
        }
    }

    /// The next PUBLISH received, waiting at most [`WAIT`].
    pub async fn next_publish(&mut self) -> Result<Publish> {
        self.next_publish_by(Instant::now() + WAIT).await
    }

    /// The next packet matching `want`, waiting at most [`WAIT`].
    async fn until(&mut self, want: fn(&Packet) -> bool) -> Result<Packet> {
        self.until_by(Instant::now() + WAIT, want).await
    }

    async fn until_by(&mut self, deadline: Instant, want: fn(&Packet) -> bool) -> Result<Packet> {
        loop {
            match timeout_at(deadline, self.incoming.recv()).await {
                Ok(Some(p)) if want(&p) => return Ok(p),
                Ok(Some(_)) => {}
                Ok(None) => return Err(anyhow!("{}: connection closed", self.name)),
                Err(_) => return Err(anyhow!("{}: nothing expected arrived in time", self.name)),
            }
        }
    }
}
