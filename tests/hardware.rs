//! Hardware pieces end to end: `pimesh doctor` and `pimesh check` through the real binary,
//! and the relay bank and press detector driven over the sim backend the way the agent drives
//! them, observed only through the sim pin files.

use pimesh::config::{self, Config};
use pimesh::hal::{self, sim_pin_file, Backend};
use pimesh::model::ObjectId;
use pimesh::plugins::press::{Press, PressAction, PressDetector, PressTimer};
use pimesh::plugins::relay_bank::{Reason, RelayAction, RelayBank, RelaySpec, Timer};
use pimesh::plugins::Relay;
use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(10);

fn pimesh(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pimesh"))
        .args(args)
        .output()
        .unwrap();
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    (
        out.status.code().unwrap_or(-1),
        text(out.stdout),
        text(out.stderr),
    )
}

#[test]
fn doctor_runs_on_this_machine_and_says_what_auto_would_pick() {
    let (code, out, err) = pimesh(&["doctor"]);
    assert_eq!(code, 0, "{err}");
    for section in [
        "Machine\n",
        "GPIO chips\n",
        "Permissions\n",
        "Serial ports\n",
    ] {
        assert!(out.contains(section), "{out}");
    }
    assert!(out.contains("backend: \"auto\" would use "), "{out}");
}

#[test]
fn doctor_reports_a_made_up_pi_4() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("proc/device-tree")).unwrap();
    std::fs::create_dir_all(root.path().join("dev")).unwrap();
    std::fs::write(
        root.path().join("proc/device-tree/model"),
        "Raspberry Pi 4 Model B Rev 1.4\0",
    )
    .unwrap();
    std::fs::write(root.path().join("dev/gpiomem"), "").unwrap();
    let (code, out, _) = pimesh(&["doctor", "--root", root.path().to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(
        out.contains("board:   pi4b (model = \"pi4b\" in [board])"),
        "{out}"
    );
    assert!(
        out.contains("would use rppal: this is a Raspberry Pi (Raspberry Pi 4 Model B Rev 1.4"),
        "{out}"
    );
    assert!(
        out.contains("  /dev/gpiomem: ok\n"),
        "the test runs as root: {out}"
    );
}

/// Runs `pimesh check` on `text`; returns the exit code and what it printed.
fn check(text: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("house.toml");
    std::fs::write(&file, text).unwrap();
    let (code, out, err) = pimesh(&["check", "--config", file.to_str().unwrap()]);
    let shown = format!("{out}{err}").replace(&file.display().to_string(), "house.toml");
    (code, shown)
}

#[test]
fn check_accepts_a_hat_and_refuses_wiring_mistakes_with_line_and_fix() {
    let hat = "[board]\nbackend = \"sim\"\nhat = \"waveshare-relay-3ch\"\n[[relay]]\nid = \"pump\"\nchannel = 3\n";
    let (code, out) = check(hat);
    assert_eq!(
        (code, out.as_str()),
        (0, "house.toml: ok (1 relays, 0 inputs, board pi4b)\n")
    );

    let uart = "[[input]]\nid = \"b\"\npin = 15\n[[serial]]\nid = \"gps\"\npath = \"/dev/ttyS0\"\n";
    assert_eq!(
        check(uart),
        (2, "error: house.toml:3: input \"b\": GPIO 15 is the UART RXD pin, and serial \"gps\" on line 6 uses the Pi's UART through /dev/ttyS0; move the input to a free pin, or connect the device by USB (e.g. /dev/ttyUSB0)\n".into())
    );
    let channel = "[[relay]]\nid = \"pump\"\nchannel = 3\n";
    let (code, out) = check(channel);
    assert_eq!(code, 2);
    assert!(out.starts_with("error: house.toml:3: relay \"pump\": channel 3 needs a HAT; name it in the [board] table"), "{out}");
    let both = "[[input]]\nid = \"b\"\npin = 5\n[[relay]]\nid = \"r\"\npin = 5\n";
    assert_eq!(
        check(both),
        (2, "error: house.toml:6: relay \"r\": GPIO 5 is already an input for input \"b\" on line 3; a pin cannot be both an input and an output, so move one of them to a free pin\n".into())
    );
}

/// What the agent does with a bank's actions, in miniature: drive sim relays, run timers on
/// threads, record reports and answers.
struct Driver {
    bank: RelayBank,
    relays: BTreeMap<ObjectId, Relay>,
    timers: mpsc::Sender<Timer>,
    fired: mpsc::Receiver<Timer>,
    reports: Vec<(ObjectId, bool, Reason)>,
    answers: Vec<(ObjectId, Result<bool, ()>)>,
    /// Every successful pin write, with its time.
    drives: Vec<(Instant, ObjectId, bool)>,
}

impl Driver {
    fn start(config: &Config, dir: &Path) -> Driver {
        let mut gpio = hal::open(Backend::Sim, dir).unwrap();
        let relays = config
            .relays
            .iter()
            .map(|r| {
                (
                    r.id.clone(),
                    Relay::claim(gpio.as_mut(), r.clone(), false).unwrap(),
                )
            })
            .collect();
        let (timers, fired) = mpsc::channel();
        let bank = RelayBank::new(config.relays.iter().map(RelaySpec::from).collect());
        Driver {
            bank,
            relays,
            timers,
            fired,
            reports: Vec::new(),
            answers: Vec::new(),
            drives: Vec::new(),
        }
    }

    fn command(&mut self, id: &str, on: bool) {
        let actions = self
            .bank
            .command(&ObjectId::new(id).unwrap(), on, Instant::now())
            .unwrap();
        self.perform(actions);
    }

    fn perform(&mut self, actions: Vec<RelayAction>) {
        let mut lists = VecDeque::from([actions]);
        while let Some(list) = lists.pop_front() {
            for (i, action) in list.iter().enumerate() {
                match action {
                    RelayAction::Drive { id, on } => {
                        if self.relays.get_mut(id).unwrap().switch(*on).is_err() {
                            lists.push_back(self.bank.drive_failed(id, *on, &list[i + 1..]));
                            break;
                        }
                        self.drives.push((Instant::now(), id.clone(), *on));
                    }
                    RelayAction::StartTimer { timer, after } => {
                        let (tx, timer, after) = (self.timers.clone(), timer.clone(), *after);
                        std::thread::spawn(move || {
                            std::thread::sleep(after);
                            let _ = tx.send(timer);
                        });
                    }
                    RelayAction::Report { id, on, reason } => {
                        self.reports.push((id.clone(), *on, reason.clone()))
                    }
                    RelayAction::Reply { id, on } => self.answers.push((id.clone(), Ok(*on))),
                    RelayAction::Fail { id } => self.answers.push((id.clone(), Err(()))),
                }
            }
        }
    }

    /// Handles timers as they fire until `until` holds.
    fn run_until(&mut self, what: &str, until: impl Fn(&Driver) -> bool) {
        let end = Instant::now() + DEADLINE;
        while !until(self) {
            let left = end.saturating_duration_since(Instant::now());
            let timer = self
                .fired
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
            let actions = self.bank.timer(&timer, Instant::now());
            self.perform(actions);
        }
    }
}

/// Pin levels seen by the sampler, each with the moment it first saw them.
type Samples = Vec<(Instant, Vec<bool>)>;

/// Reads pin files as fast as it can on a thread and records every change it sees, so a test
/// can check that no forbidden combination ever shows, and wait until a state has been seen.
struct Sampler {
    seen: Arc<Mutex<Samples>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(dir: &Path, pins: &[u8]) -> Sampler {
        let files: Vec<_> = pins.iter().map(|&p| sim_pin_file(dir, p)).collect();
        let (seen, stop) = (
            Arc::new(Mutex::new(Vec::new())),
            Arc::new(AtomicBool::new(false)),
        );
        let (log, flag) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                let now: Vec<bool> = files
                    .iter()
                    .map(|f| std::fs::read_to_string(f).is_ok_and(|t| t.trim() == "1"))
                    .collect();
                let mut log: std::sync::MutexGuard<Samples> = log.lock().unwrap();
                if log.last().is_none_or(|(_, last)| *last != now) {
                    log.push((Instant::now(), now));
                }
            }
        });
        Sampler {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// Waits until the latest sample is `state`.
    fn wait_for(&self, state: &[bool]) {
        let end = Instant::now() + DEADLINE;
        while self.seen.lock().unwrap().last().map(|(_, s)| s.as_slice()) != Some(state) {
            assert!(Instant::now() < end, "the pin files never showed {state:?}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Stops sampling and returns every change seen.
    fn finish(mut self) -> Samples {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        let seen = self.seen.lock().unwrap().clone();
        seen
    }
}

const RELAYS: &str = r#"
[board]
backend = "sim"
[[relay]]
id = "up"
pin = 5
interlock = "blind"
interlock-dead-ms = 60
[[relay]]
id = "down"
pin = 6
interlock = "blind"
[[relay]]
id = "door"
pin = 13
pulse-ms = 300
[[relay]]
id = "heater"
pin = 19
max-on-s = 1
"#;

#[test]
fn interlocked_relays_never_show_two_pins_high_and_keep_their_dead_time() {
    let dir = tempfile::tempdir().unwrap();
    let config = config::parse(RELAYS, Path::new("relays.toml")).unwrap();
    let mut d = Driver::start(&config, dir.path());
    let sampler = Sampler::start(dir.path(), &[5, 6]);
    for round in 0..10 {
        let (on, state) = if round % 2 == 0 {
            ("up", [true, false])
        } else {
            ("down", [false, true])
        };
        d.command(on, true);
        let done = round + 1;
        d.run_until("the switch-on after the dead time", |d| {
            d.answers.len() == done
        });
        sampler.wait_for(&state);
    }
    let seen = sampler.finish();
    assert!(
        seen.iter().all(|(_, pins)| !(pins[0] && pins[1])),
        "two pins high: {seen:?}"
    );
    assert!(seen.len() >= 19, "every switching seen: {seen:?}");

    // The dead time, from the moments the pins were written.
    for pair in d.drives.windows(2) {
        let ((off_at, off_id, off), (on_at, on_id, on)) = (&pair[0], &pair[1]);
        if !off && *on && off_id != on_id {
            let gap = *on_at - *off_at;
            assert!(
                gap >= Duration::from_millis(60),
                "{on_id} on {gap:?} after {off_id} off"
            );
        }
    }
    assert_eq!(d.drives.len(), 19);
}

#[test]
fn a_pulse_lasts_its_time_and_the_watchdog_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let config = config::parse(RELAYS, Path::new("relays.toml")).unwrap();
    let mut d = Driver::start(&config, dir.path());
    let sampler = Sampler::start(dir.path(), &[13]);
    d.command("door", true);
    sampler.wait_for(&[true]);
    let door = ObjectId::new("door").unwrap();
    d.run_until("the pulse end", |d| d.bank.is_on(&door) == Some(false));
    sampler.wait_for(&[false]);
    let seen = sampler.finish();
    let rise = seen.iter().find(|(_, p)| p[0]).map(|(t, _)| *t).unwrap();
    let fall = seen
        .iter()
        .rev()
        .find(|(_, p)| !p[0])
        .map(|(t, _)| *t)
        .unwrap();
    let length = fall.saturating_duration_since(rise);
    // 300 ms as the files showed it, give or take what the sampler lags behind each edge.
    assert!(
        length >= Duration::from_millis(250) && length < Duration::from_millis(600),
        "pulse {length:?}: {seen:?}"
    );
    let written = d.drives[1].0 - d.drives[0].0;
    assert!(
        written >= Duration::from_millis(300) && written < Duration::from_millis(600),
        "pulse {written:?}"
    );

    d.command("heater", true);
    let heater = ObjectId::new("heater").unwrap();
    d.run_until("the watchdog", |d| d.bank.is_on(&heater) == Some(false));
    let (_, on, reason) = d.reports.last().unwrap().clone();
    assert!(!on);
    assert_eq!(reason.to_string(), "max-on-s exceeded");
    assert_eq!(
        std::fs::read_to_string(sim_pin_file(dir.path(), 19)).unwrap(),
        "0\n"
    );
}

#[test]
fn presses_on_a_sim_button_become_single_double_and_long() {
    let dir = tempfile::tempdir().unwrap();
    let mut gpio = hal::open(Backend::Sim, dir.path()).unwrap();
    let (tx, levels) = mpsc::channel();
    let _input = gpio
        .input(
            22,
            hal::Pull::Up,
            Box::new(move |high| {
                let _ = tx.send((!high, Instant::now()));
            }),
        )
        .unwrap();
    let file = sim_pin_file(dir.path(), 22);
    let mut detector = PressDetector::new(250, 500);
    let mut timers: Vec<(Instant, PressTimer)> = Vec::new();
    let mut events = Vec::new();
    // The script: (level to write, how long to hold it). Active low: "0" is pressed.
    let script: [(&str, u64); 8] = [
        ("0", 60),
        ("1", 400),
        ("0", 60),
        ("1", 80),
        ("0", 60),
        ("1", 400),
        ("0", 700),
        ("1", 400),
    ];
    for (level, hold) in script {
        std::fs::write(&file, level).unwrap();
        let until = Instant::now() + Duration::from_millis(hold);
        while Instant::now() < until {
            if let Ok((pressed, at)) = levels.recv_timeout(Duration::from_millis(5)) {
                handle(detector.level(pressed, at), &mut timers, &mut events);
            }
            let due: Vec<_> = timers
                .iter()
                .filter(|(t, _)| *t <= Instant::now())
                .map(|(_, t)| *t)
                .collect();
            timers.retain(|(t, _)| *t > Instant::now());
            for t in due {
                handle(detector.timer(t), &mut timers, &mut events);
            }
        }
    }
    assert_eq!(events, [Press::Single, Press::Double, Press::Long]);
}

/// Performs a press detector's actions: timers are kept with their due time, events recorded.
fn handle(
    actions: Vec<PressAction>,
    timers: &mut Vec<(Instant, PressTimer)>,
    events: &mut Vec<Press>,
) {
    for a in actions {
        match a {
            PressAction::StartTimer { timer, after } => {
                timers.push((Instant::now() + after, timer))
            }
            PressAction::Event(p) => events.push(p),
        }
    }
}
