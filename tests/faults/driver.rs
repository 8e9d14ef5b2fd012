//! The seeded driver: commands and faults chosen by one seed, rounds of chaos, healing, and
//! the invariants checked after each round.

use crate::house::{House, InFlight, Issued, Op, CRASH};
use crate::invariants::{check, outcomes};
use crate::support::lan::Impairment;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A campaign: how many instances, how long, how hard.
pub struct Plan {
    pub seed: u64,
    pub instances: usize,
    /// Chaos in all, in rounds of `round`, each followed by healing and the checks.
    pub chaos: Duration,
    pub round: Duration,
    /// Commands running at once (never two for one object).
    pub in_flight: usize,
    /// Share of steps that are faults, in percent; the others are commands.
    pub fault_pct: u64,
    /// The one line that runs this campaign again.
    pub reproduce: String,
}

/// SplitMix64: small, seedable, good enough to pick faults and commands.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number below `n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True `pct` times in 100.
    pub fn chance(&mut self, pct: u64) -> bool {
        self.next() % 100 < pct
    }
}

/// A variable from the environment as a number; unset or empty is None.
pub fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok().filter(|v| !v.trim().is_empty())?;
    Some(
        value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
    )
}

/// A seed from the clock, for campaigns not given one.
pub fn fresh_seed() -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    now.map(|d| d.as_nanos() as u64 % 1_000_000).unwrap_or(1)
}

/// Prints the reproduction line when the test fails (it is dropped while panicking).
pub struct Reproduce(pub String);

impl Drop for Reproduce {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("\nreproduce: {}\n", self.0);
        }
    }
}

/// Every level each relay's pin file showed, polled every few milliseconds.
pub struct PinWatch {
    stop: Arc<AtomicBool>,
    /// (when, relay index, level) for every change seen.
    changes: Arc<Mutex<Vec<(Instant, usize, String)>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PinWatch {
    pub fn start(house: &House) -> PinWatch {
        let paths: Vec<_> = house.relays.iter().map(|r| house.pin_path(r)).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let changes = Arc::new(Mutex::new(Vec::new()));
        let (stop2, changes2) = (stop.clone(), changes.clone());
        let thread = std::thread::spawn(move || {
            let read = |p: &std::path::PathBuf| {
                std::fs::read_to_string(p)
                    .map(|s| s.trim().to_string())
                    .ok()
            };
            let mut last: Vec<Option<String>> = paths.iter().map(read).collect();
            while !stop2.load(Ordering::Relaxed) {
                for (i, path) in paths.iter().enumerate() {
                    let now = read(path);
                    if now.is_some() && now != last[i] {
                        let level = now.clone().unwrap_or_default();
                        changes2.lock().unwrap().push((Instant::now(), i, level));
                        last[i] = now;
                    }
                }
                std::thread::sleep(Duration::from_millis(3));
            }
        });
        PinWatch {
            stop,
            changes,
            thread: Some(thread),
        }
    }

    pub fn changes(&self) -> Vec<(Instant, usize, String)> {
        self.changes.lock().unwrap().clone()
    }
}

impl Drop for PinWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A campaign in progress.
pub struct Campaign {
    pub house: House,
    pub rng: Rng,
    pub log: Vec<Issued>,
    flights: Vec<InFlight>,
}

impl Campaign {
    pub fn new(house: House, seed: u64) -> Campaign {
        Campaign {
            house,
            rng: Rng::new(seed),
            log: Vec::new(),
            flights: Vec::new(),
        }
    }

    /// Waits for every command still running.
    pub fn finish_all(&mut self) {
        for flight in std::mem::take(&mut self.flights) {
            House::finish(&mut self.log, flight);
        }
    }

    /// Runs `plan` to its end, panicking (with the reproduction line) at the first broken
    /// invariant.
    pub fn run(plan: &Plan) {
        let _reproduce = Reproduce(plan.reproduce.clone());
        let started = Instant::now();
        let house = House::start(plan.instances, "1m", "");
        let initial = house.converged();
        let watch = PinWatch::start(&house);
        println!(
            "faults: {} instances up in {:.1} s, seed {}",
            plan.instances,
            started.elapsed().as_secs_f64(),
            plan.seed
        );
        let mut c = Campaign::new(house, plan.seed);
        let end = Instant::now() + plan.chaos;
        let mut round = 0;
        while round == 0 || Instant::now() < end {
            round += 1;
            let round_end = (Instant::now() + plan.round).min(end);
            let (sent, faults) = (c.log.len(), Instant::now());
            let mut fault_steps = 0;
            while Instant::now() < round_end {
                if c.rng.chance(plan.fault_pct) {
                    c.fault();
                    fault_steps += 1;
                } else {
                    c.command(plan.in_flight);
                }
                let pause = Duration::from_millis(c.rng.below(120) as u64);
                c.settle(Instant::now() + pause);
            }
            c.finish_all();
            let chaos_s = faults.elapsed().as_secs_f64();
            c.house.heal();
            let healed = Instant::now();
            let view = c.house.converged();
            println!(
                "round {round}: {} commands, {fault_steps} faults in {chaos_s:.1} s; agreed {:.1} s after healing; {}",
                c.log.len() - sent,
                healed.elapsed().as_secs_f64(),
                outcomes(&c.log[sent..])
            );
            check(&c.house, &initial, &view, &c.log, &watch.changes());
        }
        println!(
            "faults: {} commands in {round} rounds, every invariant held ({:.1} s)",
            c.log.len(),
            started.elapsed().as_secs_f64()
        );
    }

    /// Collects finished commands until `until`.
    pub fn settle(&mut self, until: Instant) {
        loop {
            let log = &mut self.log;
            self.flights.retain_mut(|f| !House::poll(log, f));
            if Instant::now() >= until {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends a random command through a random instance, after the previous command for the
    /// same object is answered (and while fewer than `max` run).
    pub fn command(&mut self, max: usize) {
        let object = self.house.objects[self.rng.below(self.house.objects.len())].clone();
        let via = self.rng.below(self.house.agents.len());
        let op = if self.rng.chance(60) {
            Op::Set(self.rng.chance(50))
        } else {
            const ROOMS: [&str; 5] = ["hall", "attic", "cellar", "garden", "study"];
            Op::Move {
                room: ROOMS[self.rng.below(ROOMS.len())].to_string(),
                x: self.rng.below(10) as f64,
                y: self.rng.below(10) as f64,
            }
        };
        let busy = |c: &Campaign| {
            c.flights.len() >= max || c.flights.iter().any(|f| c.log[f.index].object == object)
        };
        while busy(self) {
            self.settle(Instant::now() + Duration::from_millis(5));
        }
        let flight = self.house.send(&mut self.log, &object, op, via);
        self.flights.push(flight);
    }

    /// Does or undoes one fault, chosen at random.
    fn fault(&mut self) {
        let n = self.house.agents.len();
        let h = &mut self.house;
        match self.rng.below(4) {
            0 => {
                let k = self.rng.below(n);
                // At most half the hosts are cut off at once, so a majority keeps working.
                let cut = h.unplugged.iter().filter(|u| **u).count();
                if h.unplugged[k] || cut < n / 2 {
                    let plug = h.unplugged[k];
                    h.set_plugged(k, plug);
                }
            }
            1 => {
                let k = self.rng.below(n);
                let how = if h.impaired[k] {
                    Impairment::default()
                } else {
                    Impairment {
                        loss: self.rng.below(20) as f64 / 100.0,
                        delay_ms: self.rng.below(60) as u32,
                        jitter_ms: self.rng.below(40) as u32,
                        reorder: self.rng.below(30) as f64 / 100.0,
                    }
                };
                h.set_impaired(k, how);
            }
            2 if h.alive[CRASH] => h.crash(),
            2 => h.restart(),
            _ => {
                let full = !h.disk_full();
                h.set_disk_full(full);
            }
        }
    }
}
