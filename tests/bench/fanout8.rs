//! Fan-out across a mesh of eight: a change made at one instance, timed until it is on all
//! eight brokers (its own included), as a client subscribed on each would see it. The
//! three-instance fan-out of the main run uses the same timing ([`timed_toggles`]).

use crate::client::Client;
use crate::report::Latency;
use crate::support::{node_config, start_node, wait_until_heavy, Agent};
use crate::{answer, check, remember, sees, send, state_of, SAMPLES, WARMUP};
use anyhow::{Context, Result};
use tokio::time::Instant;

/// Instances in the mesh.
pub const INSTANCES: usize = 8;

/// Starts [`INSTANCES`] instances (each told of the first), waits until each sees all the
/// others online, then toggles `n0-fan` at the first and times every toggle until all
/// brokers carry its new state.
pub fn measure(rt: &tokio::runtime::Runtime, failures: &mut Vec<String>) -> Result<Latency> {
    let first = start_node("n0", &node_config("n0"), &[]);
    remember(first.child.id());
    let seed = first.addr();
    let mut mesh = vec![first];
    for i in 1..INSTANCES {
        let node = start_node(
            &format!("n{i}"),
            &node_config(&format!("n{i}")),
            &["--peer", &seed],
        );
        remember(node.child.id());
        mesh.push(node);
    }
    wait_until_heavy("the eight instances to see each other online", || {
        mesh.iter().all(|agent| {
            let peers = agent.peers();
            let others = peers.iter().filter(|p| p["status"] != "self");
            peers.len() == INSTANCES && others.clone().all(|p| p["status"] == "online")
        })
    });
    rt.block_on(toggles(&mesh, failures))
}

async fn toggles(mesh: &[Agent], failures: &mut Vec<String>) -> Result<Latency> {
    let mut at_first = Client::connect("bench-fan8", mesh[0].port).await?;
    let mut watchers = watch("n0-fan", mesh.iter().enumerate()).await?;
    timed_toggles(&mut at_first, "n0-fan", "n0", &mut watchers, failures).await
}

/// A client on each of `agents` (named by their index), subscribed to `object`'s state.
pub async fn watch<'a>(
    object: &str,
    agents: impl Iterator<Item = (usize, &'a Agent)>,
) -> Result<Vec<Client>> {
    let mut watchers = Vec::new();
    for (i, agent) in agents {
        let mut w = Client::connect(&format!("bench-watch-{object}-{i}"), agent.port).await?;
        w.subscribe(&format!("pimesh/{object}")).await?;
        watchers.push(w);
    }
    Ok(watchers)
}

/// Toggles `object` through `at` ([`WARMUP`] + [`SAMPLES`] times; each answer must be `ok`
/// from `executor`) and times each toggle until every one of `watchers` has the new state.
pub async fn timed_toggles(
    at: &mut Client,
    object: &str,
    executor: &str,
    watchers: &mut [Client],
    failures: &mut Vec<String>,
) -> Result<Latency> {
    let reply_to = format!("bench/answer/{object}");
    at.subscribe(&reply_to).await?;
    // Every watcher gets the retained state first; it says where the toggles start.
    let mut on = false;
    for (n, w) in watchers.iter_mut().enumerate() {
        let retained = w
            .next_publish()
            .await
            .with_context(|| format!("the retained {object} on watcher {n}"))?;
        on = state_of(&retained) == "ON";
    }
    let mut samples = Vec::with_capacity(SAMPLES);
    for i in 0..WARMUP + SAMPLES {
        on = !on;
        let want = if on { "ON" } else { "OFF" };
        let t = Instant::now();
        let id = format!("{object}-{}-{i}", std::process::id());
        send(at, object, &id, &reply_to).await?;
        // Each watcher's client task queues what arrives meanwhile, so waiting for them in
        // turn ends when the last of them has the state: the slowest broker's time.
        let mut worst = std::time::Duration::ZERO;
        for (n, w) in watchers.iter_mut().enumerate() {
            let took = sees(w, want, t)
                .await
                .with_context(|| format!("toggle {i} of {object} on watcher {n}"))?;
            worst = worst.max(took);
        }
        check(
            &answer(at, &reply_to, &id).await?,
            &id,
            Some(executor),
            failures,
        );
        if i >= WARMUP {
            samples.push(worst);
        }
    }
    Ok(Latency::of(samples))
}
