//! The soak: five instances under mixed load (switches, moves, reads, link flaps, slow and
//! lossy links) while every agent's resident memory and open files are sampled. Growth that
//! does not level off fails it: the median of the last third of the samples may exceed the
//! median of the first third only by a modest slack. The brokers keep small topic logs, which
//! fill to their bound early instead of over the whole run.

use crate::driver::{env_u64, fresh_seed, Campaign, PinWatch, Reproduce};
use crate::house::{House, NAMES};
use crate::invariants::{check, outcomes};
use crate::support::lan::Impairment;
use std::time::{Duration, Instant};

/// How often the agents are sampled.
const SAMPLE: Duration = Duration::from_secs(5);
/// How often one host's cable is pulled, and for how long.
const FLAP_EVERY: Duration = Duration::from_secs(30);
const FLAP_FOR: Duration = Duration::from_secs(3);
/// Growth allowed from the first third's median to the last third's.
const RSS_SLACK_PCT: u64 = 15;
const RSS_SLACK_KB: u64 = 2048;
const FD_SLACK: u64 = 6;

/// Resident memory (kB) and open file descriptors of process `pid`.
fn sample(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64);
    (rss, fds)
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

/// Runs the soak for `duration`, then heals, checks the invariants and compares the
/// agents' first and last thirds of samples.
pub fn soak(duration: Duration) {
    let seed = env_u64("CHAOS_SEED").unwrap_or_else(fresh_seed);
    let secs = duration.as_secs();
    let _reproduce = Reproduce(format!("CHAOS_SEED={seed} SOAK_SECONDS={secs} make soak"));
    println!("soak: 5 instances for {secs} s, seed {seed}");
    // Small broker logs: each topic's log reaches its bound within the first third, so
    // growth after that is not the broker filling what it is allowed to keep.
    let house = House::start(5, "64m", "segment-bytes = 16384\nsegment-count = 2");
    let initial = house.converged();
    let watch = PinWatch::start(&house);
    let mut c = Campaign::new(house, seed);
    let light = Impairment {
        loss: 0.01,
        delay_ms: 5,
        jitter_ms: 5,
        reorder: 0.05,
    };
    c.house.set_impaired(3, light);
    c.house.set_impaired(4, light);
    let n = c.house.agents.len();
    let mut samples: Vec<Vec<(u64, u64)>> = vec![Vec::new(); n];
    let start = Instant::now();
    let (mut next_sample, mut next_flap) = (start, start + FLAP_EVERY);
    let mut flapped: Option<(usize, Instant)> = None;
    let mut reads = 0;
    while start.elapsed() < duration {
        let now = Instant::now();
        if now >= next_sample {
            for (k, agent) in c.house.agents.iter().enumerate() {
                samples[k].push(sample(agent.child.id()));
            }
            next_sample += SAMPLE;
        }
        match flapped {
            Some((k, back)) if now >= back => {
                c.house.set_plugged(k, true);
                flapped = None;
            }
            None if now >= next_flap => {
                let k = c.rng.below(n);
                c.house.set_plugged(k, false);
                flapped = Some((k, now + FLAP_FOR));
                next_flap += FLAP_EVERY;
            }
            _ => {}
        }
        if c.rng.chance(10) {
            let agent = &c.house.agents[c.rng.below(n)];
            if c.rng.chance(50) {
                agent.all();
            } else {
                agent.peers();
            }
            reads += 1;
        } else {
            c.command(2);
        }
        let pause = Duration::from_millis(c.rng.below(60) as u64);
        c.settle(Instant::now() + pause);
    }
    c.finish_all();
    c.house.heal();
    let view = c.house.converged();
    println!(
        "soak: {} commands and {reads} reads in {:.0} s: {}",
        c.log.len(),
        start.elapsed().as_secs_f64(),
        outcomes(&c.log)
    );
    check(&c.house, &initial, &view, &c.log, &watch.changes());
    let mut grown = Vec::new();
    println!(
        "soak: medians of the first and last third of {} samples per agent",
        samples[0].len()
    );
    for (k, s) in samples.iter().enumerate() {
        let third = (s.len() / 3).max(1);
        let first = &s[..third];
        let last = &s[s.len() - third..];
        let rss = |part: &[(u64, u64)]| median(part.iter().map(|x| x.0).collect());
        let fds = |part: &[(u64, u64)]| median(part.iter().map(|x| x.1).collect());
        let (r0, r1, f0, f1) = (rss(first), rss(last), fds(first), fds(last));
        let max_rss = s.iter().map(|x| x.0).max().unwrap_or(0);
        println!(
            "  {:<8} RSS {:>6} kB -> {:>6} kB (max {max_rss} kB), open fds {f0} -> {f1}",
            NAMES[k], r0, r1
        );
        let series: Vec<String> = s
            .iter()
            .step_by((s.len() / 12).max(1))
            .map(|x| format!("{:.1}", x.0 as f64 / 1024.0))
            .collect();
        println!("           RSS over the run (MiB): {}", series.join(" "));
        if r1 > r0 + r0 * RSS_SLACK_PCT / 100 + RSS_SLACK_KB {
            grown.push(format!("{}: RSS {r0} kB -> {r1} kB", NAMES[k]));
        }
        if f1 > f0 + FD_SLACK {
            grown.push(format!("{}: open fds {f0} -> {f1}", NAMES[k]));
        }
    }
    assert!(
        grown.is_empty(),
        "agents kept growing over the soak: {}",
        grown.join("; ")
    );
}
