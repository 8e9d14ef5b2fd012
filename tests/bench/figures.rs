//! Everything the latency and throughput runs measured, and how it is printed beside the
//! targets for this machine.

use crate::report::{self, mib, us, Latency};
use crate::{PAHO_RATIO, PIPELINE, SOLO_PIPELINE, SOLO_RSS_MIB, WARMUP, WINDOW};
use std::collections::BTreeMap;
use std::time::Duration;

/// Everything measured, for printing.
pub struct Figures {
    pub mosquitto: Latency,
    /// The same request/reply through A's embedded broker, no agent involved: separates the
    /// broker's share of a command round trip from the agent's.
    pub embedded: Latency,
    pub local: Latency,
    pub cross: Latency,
    pub fanout: Latency,
    /// A default paho-mqtt client (no TCP_NODELAY) through Mosquitto and through A's
    /// embedded broker: the round trip Home Assistant sees.
    pub paho_mosquitto: Option<Latency>,
    pub paho: Option<Latency>,
    /// The same, with one client subscribed to what it publishes.
    pub paho_own_mosquitto: Option<Latency>,
    pub paho_own: Option<Latency>,
    pub per_second: f64,
    /// QoS 1 messages/s through Mosquitto, publisher and subscriber one client, with the
    /// throughput run's window in flight: the same work as a command and its answer.
    pub mosquitto_rate: f64,
    /// Commands/s through a single instance that runs them itself ([`SOLO_PIPELINE`]).
    pub solo_per_second: f64,
    /// Its RSS after them, KiB.
    pub solo_rss: Option<u64>,
    /// Latency at half [`Figures::solo_per_second`], paced (an open loop at a fixed rate).
    pub solo_half: Option<Latency>,
    /// Mosquitto's echo latency at that same paced rate: the floor under it.
    pub mosquitto_half: Option<Latency>,
    /// A change at one of eight instances until it is on all eight brokers.
    pub fanout8: Option<Latency>,
    pub answered: usize,
    pub lost: usize,
    pub executors: BTreeMap<String, usize>,
}

impl Figures {
    pub fn print(&self) {
        println!();
        println!(
            "Latency: p50 is the median of n samples, after {WARMUP} discarded warm-up round trips"
        );
        let base = Some(&self.mosquitto);
        println!(
            "{}",
            self.mosquitto.line("mosquitto QoS1 publish->reply", None)
        );
        println!(
            "{}",
            self.embedded
                .line("embedded broker QoS1 (A, no agent)", base)
        );
        println!(
            "{}",
            self.local.line("local command (client@A, A holds)", base)
        );
        println!("{}", self.cross.line("cross command (client@B -> A)", base));
        println!(
            "{}",
            self.fanout.line("state fan-out (A -> max(B,C))", base)
        );
        println!(
            "cross minus local                  p50 {:>9}  (the forward hop B -> A -> B)",
            us(self.cross.p50.saturating_sub(self.local.p50))
        );
        if let (Some(m), Some(p)) = (&self.paho_mosquitto, &self.paho) {
            println!("{}", m.line("mosquitto, default paho pub->sub", None));
            println!("{}", p.line("embedded, default paho pub->sub", Some(m)));
        }
        if let (Some(m), Some(p)) = (&self.paho_own_mosquitto, &self.paho_own) {
            println!("{}", m.line("mosquitto, default paho to itself", None));
            println!("{}", p.line("embedded, default paho to itself", Some(m)));
        }
        println!();
        let by: Vec<String> = self
            .executors
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        println!(
            "Throughput: {PIPELINE} commands to virtual `scene` via B, {WINDOW} in flight: \
             {:.0} commands/s ({:.2}x Mosquitto's {:.0} QoS1 messages/s, same window), \
             {} answered, {} lost (executed by: {})",
            self.per_second,
            self.per_second / self.mosquitto_rate.max(1.0),
            self.mosquitto_rate,
            self.answered,
            self.lost,
            by.join(", ")
        );
    }

    /// The default paho-mqtt median through pimesh over Mosquitto's, once both are measured.
    pub fn solo_line(&self) {
        println!(
            "Throughput: {SOLO_PIPELINE} commands to virtual `scene` on one instance that runs \
             them, {WINDOW} in flight: {:.0} commands/s ({:.2}x Mosquitto's QoS1 rate), RSS after {}",
            self.solo_per_second,
            self.solo_per_second / self.mosquitto_rate.max(1.0),
            mib(self.solo_rss)
        );
        if let Some(fan) = &self.fanout8 {
            println!(
                "{}",
                fan.line("state fan-out, 8 instances", Some(&self.mosquitto))
            );
        }
        let rate = self.solo_per_second / 2.0;
        if let Some(base) = &self.mosquitto_half {
            println!(
                "{}",
                base.line(&format!("  mosquitto at {rate:.0}/s"), None)
            );
        }
        if let Some(half) = &self.solo_half {
            let name = format!("  pimesh at {rate:.0}/s");
            println!("{}", half.line(&name, self.mosquitto_half.as_ref()));
        }
    }

    pub fn paho_ratio(&self) -> Option<f64> {
        let (m, p) = (self.paho_mosquitto.as_ref()?, self.paho.as_ref()?);
        Some(report::ratio(p.p50, m.p50))
    }

    pub fn targets(&self) {
        let ratio = report::ratio(self.cross.p50, self.mosquitto.p50);
        let mark = |ok: bool| if ok { "met" } else { "NOT met" };
        println!();
        println!("Targets for this machine");
        println!(
            "  cross-instance p50 within 4x mosquitto: {ratio:.2}x — {}",
            mark(ratio <= 4.0)
        );
        println!(
            "  cross-instance p99 under 2 ms: {} — {}",
            us(self.cross.p99),
            mark(self.cross.p99 < Duration::from_millis(2))
        );
        println!(
            "  no command lost: {} lost — {}",
            self.lost,
            mark(self.lost == 0)
        );
        if let Some(ratio) = self.paho_ratio() {
            println!(
                "  default paho-mqtt p50 within {PAHO_RATIO}x mosquitto: {ratio:.2}x — {}",
                mark(ratio <= PAHO_RATIO)
            );
        }
        println!(
            "  one instance at 20,000 commands/s: {:.0} — {}",
            self.solo_per_second,
            mark(self.solo_per_second >= 20_000.0)
        );
        if let Some(fan) = &self.fanout8 {
            println!(
                "  change on all 8 brokers, p99 within 3 ms: {} — {}",
                us(fan.p99),
                mark(fan.p99 <= Duration::from_millis(3))
            );
        }
        let rss_ok = self.solo_rss.is_some_and(|kib| kib <= SOLO_RSS_MIB * 1024);
        println!(
            "  one instance's RSS after {SOLO_PIPELINE} commands within {SOLO_RSS_MIB} MiB: {} — {}",
            mib(self.solo_rss),
            mark(rss_ok)
        );
        if let Some(half) = &self.solo_half {
            println!(
                "  p99 under 2 ms at half that rate: {} — {}",
                us(half.p99),
                mark(half.p99 < Duration::from_millis(2))
            );
        }
    }
}
