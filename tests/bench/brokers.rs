//! What a broker alone does, no agent involved: QoS 1 request/reply latency and message
//! rate, through Mosquitto and through an instance's embedded broker alike.

use crate::client::Client;
use crate::report::Latency;
use crate::{BUDGET, PIPELINE, SAMPLES, WARMUP, WINDOW};
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

/// QoS 1 messages/s through the broker on `port`: [`PIPELINE`] publishes that the same
/// client receives back, [`WINDOW`] in flight.
pub async fn broker_rate(port: u16, name: &str) -> Result<f64> {
    let mut cl = Client::connect(&format!("bench-rate-{name}"), port).await?;
    let topic = format!("bench/rate/{}", std::process::id());
    cl.subscribe(&topic).await?;
    let (mut sent, mut received) = (0usize, 0usize);
    let t = Instant::now();
    while received < PIPELINE {
        while sent - received < WINDOW && sent < PIPELINE {
            cl.publish(&topic, sent.to_string()).await?;
            sent += 1;
        }
        let p = cl
            .next_publish()
            .await
            .with_context(|| format!("{name}: message {received} of {PIPELINE} never came back"))?;
        if p.topic == topic {
            received += 1;
        }
    }
    Ok(received as f64 / t.elapsed().as_secs_f64())
}
