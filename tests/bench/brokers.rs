//! What a broker alone does, no agent involved: QoS 1 request/reply latency and message
//! rate, through Mosquitto and through an instance's embedded broker alike.

use crate::client::Client;
use crate::report::Latency;
use crate::{BUDGET, SAMPLES, WARMUP, WINDOW};
use anyhow::{bail, Context, Result};
use tokio::time::Instant;

/// QoS 1 request/reply through the broker on `port`: requester publishes, responder answers,
/// requester waits.
pub async fn baseline(port: u16, broker: &str) -> Result<Latency> {
    let mut req = Client::connect(&format!("bench-requester-{broker}"), port).await?;
    req.subscribe("bench/rep").await?;
    let mut rsp = Client::connect(&format!("bench-responder-{broker}"), port).await?;
    rsp.subscribe("bench/req").await?;
    let responder = tokio::spawn(async move {
        while let Ok(p) = rsp.next_publish_by(Instant::now() + BUDGET).await {
            if rsp.publish("bench/rep", p.payload.to_vec()).await.is_err() {
                return;
            }
        }
    });
    let mut samples = Vec::with_capacity(SAMPLES);
    for i in 0..WARMUP + SAMPLES {
        let t = Instant::now();
        let body = (i as u32).to_be_bytes();
        req.publish("bench/req", body.to_vec()).await?;
        let p = req
            .next_publish()
            .await
            .with_context(|| format!("{broker} reply"))?;
        if p.payload.as_ref() != body {
            bail!("{broker} reply {i} carries another request's payload");
        }
        if i >= WARMUP {
            samples.push(t.elapsed());
        }
    }
    responder.abort();
    Ok(Latency::of(samples))
}

/// QoS 1 messages per second through the broker on `port`, from the lean load generator with
/// the throughput run's window: it publishes to a topic it is subscribed to and counts a
/// message done when the broker delivers it back, as a command is done when its answer comes.
pub fn broker_rate(port: u16, name: &str) -> Result<f64> {
    Ok(echoes(port, name, crate::RATE_MESSAGES, None)?.per_second)
}

/// The latency of the same messages sent at a fixed `rate` a second, over three seconds: the
/// floor under the paced command latency measured at that rate.
pub fn broker_paced(port: u16, name: &str, rate: f64) -> Result<Latency> {
    let total = crate::loadgen::paced_total(rate);
    Ok(Latency::of(
        echoes(port, name, total, Some(rate))?.latencies,
    ))
}

/// `total` QoS 1 messages published to a topic the same client is subscribed to.
fn echoes(port: u16, name: &str, total: usize, rate: Option<f64>) -> Result<crate::loadgen::Run> {
    let topic = format!("bench/rate/{}", std::process::id());
    let load = crate::loadgen::Load {
        name: &format!("bench-rate-{name}"),
        port,
        creds: crate::support::maybe_creds(port),
        subscribe: &topic,
        total,
        window: WINDOW,
        rate,
    };
    let run = crate::loadgen::run(
        &load,
        |n| (topic.clone(), n.to_string().into_bytes()),
        |t, payload| {
            Ok(
                match std::str::from_utf8(payload)
                    .ok()
                    .and_then(|p| p.parse().ok())
                {
                    Some(n) if t == topic => crate::loadgen::Heard::Answer(n),
                    _ => crate::loadgen::Heard::Other,
                },
            )
        },
    )?;
    if run.answered < total {
        bail!(
            "{name}: {} of {total} messages never came back",
            total - run.answered
        );
    }
    Ok(run)
}
