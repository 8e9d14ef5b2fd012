//! The simulated board: pins as files, levels, edges.

use super::*;
use crate::hal::ErrorKind;
use std::sync::mpsc;
use std::time::Instant;

const DEADLINE: Duration = Duration::from_secs(5);

fn file(dir: &Path, pin: u8) -> String {
    fs::read_to_string(sim_pin_file(dir, pin)).unwrap()
}

fn set_file(dir: &Path, pin: u8, text: &str) {
    fs::write(sim_pin_file(dir, pin), text).unwrap();
}

fn channel_callback() -> (EdgeCallback, mpsc::Receiver<bool>) {
    let (tx, rx) = mpsc::channel();
    let cb: EdgeCallback = Box::new(move |level| {
        let _ = tx.send(level);
    });
    (cb, rx)
}

/// Waits until the watcher has completed two more rounds, so it has surely read the
/// files as they are now.
fn wait_rounds(gpio: &SimGpio) {
    let start = gpio.shared.rounds.load(Ordering::SeqCst);
    let deadline = Instant::now() + DEADLINE;
    while gpio.shared.rounds.load(Ordering::SeqCst) < start + 2 {
        assert!(Instant::now() < deadline, "sim watcher made no progress");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn output_writes_its_file_and_keeps_the_level_when_reopened_with_none() {
    let dir = tempfile::tempdir().unwrap();
    let mut gpio = SimGpio::open(dir.path());
    let mut out = gpio.output(17, Some(true)).unwrap();
    assert_eq!(file(dir.path(), 17), "1\n");
    out.write(false).unwrap();
    assert_eq!(file(dir.path(), 17), "0\n");
    assert!(!out.read().unwrap());
    out.write(true).unwrap();
    drop(out);
    drop(gpio);

    let mut gpio = SimGpio::open(dir.path());
    let out = gpio.output(17, None).unwrap();
    assert!(out.read().unwrap(), "level kept across re-open");
    assert_eq!(file(dir.path(), 17), "1\n");
    let fresh = gpio.output(18, None).unwrap();
    assert!(!fresh.read().unwrap());
    assert_eq!(file(dir.path(), 18), "0\n");
    let leftovers: Vec<_> = fs::read_dir(dir.path().join("sim"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 2, "no temp files left: {leftovers:?}");
}

#[test]
fn write_to_a_read_only_pin_file_fails_and_names_the_pin_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut gpio = SimGpio::open(dir.path());
    let mut out = gpio.output(5, Some(false)).unwrap();
    let path = sim_pin_file(dir.path(), 5);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o444)).unwrap();

    let err = out.write(true).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("GPIO5"), "{text}");
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains("is read-only"), "{text}");
    assert_eq!(err.kind(), ErrorKind::Fault);
    assert_eq!(file(dir.path(), 5), "0\n");
    assert!(!out.read().unwrap(), "a failed write keeps the level");

    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    out.write(true).unwrap();
    assert_eq!(file(dir.path(), 5), "1\n");
}

#[test]
fn input_file_is_created_at_the_idle_level_and_changes_reach_the_callback() {
    let dir = tempfile::tempdir().unwrap();
    let mut gpio = SimGpio::open(dir.path());
    let (cb, rx) = channel_callback();
    let input = gpio.input(6, Pull::Up, cb).unwrap();
    assert_eq!(file(dir.path(), 6), "1\n");
    assert!(input.read().unwrap());

    set_file(dir.path(), 6, "0");
    assert_eq!(rx.recv_timeout(DEADLINE), Ok(false));
    assert!(!input.read().unwrap());
    set_file(dir.path(), 6, "1\n");
    assert_eq!(rx.recv_timeout(DEADLINE), Ok(true));

    let (cb, _rx) = channel_callback();
    gpio.input(12, Pull::Down, cb).unwrap();
    assert_eq!(file(dir.path(), 12), "0\n");
}

#[test]
fn garbage_in_an_input_file_is_ignored_until_a_valid_level_appears() {
    let dir = tempfile::tempdir().unwrap();
    let mut gpio = SimGpio::open(dir.path());
    let (cb, rx) = channel_callback();
    let input = gpio.input(22, Pull::Up, cb).unwrap();

    for garbage in ["abc", "", "2", "01"] {
        set_file(dir.path(), 22, garbage);
        wait_rounds(&gpio);
        assert!(input.read().unwrap(), "{garbage:?} keeps the level");
    }
    assert!(rx.try_recv().is_err(), "garbage raised no edge");

    set_file(dir.path(), 22, "0\n");
    assert_eq!(rx.recv_timeout(DEADLINE), Ok(false));
    wait_rounds(&gpio);
    assert!(rx.try_recv().is_err(), "exactly one edge");
}

#[test]
fn a_pin_claimed_twice_is_pin_used_until_the_first_claim_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let mut gpio = SimGpio::open(dir.path());
    let out = gpio.output(4, None).unwrap();
    let (cb, _rx) = channel_callback();
    let err = gpio.input(4, Pull::None, cb).err().unwrap();
    assert!(matches!(err, HalError::PinUsed { pin: 4 }), "{err}");
    assert_eq!(err.kind(), ErrorKind::PinUsed);
    assert!(err.to_string().contains("GPIO4"));
    drop(out);
    gpio.output(4, None).unwrap();
    assert_eq!(
        gpio.output(60, None).err().unwrap().kind(),
        ErrorKind::PinNotAvailable
    );
}

#[test]
fn watcher_thread_stops_when_the_gpio_and_its_pins_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let mut gpio = SimGpio::open(dir.path());
    let (cb, rx) = channel_callback();
    let input = gpio.input(23, Pull::None, cb).unwrap();
    let running = gpio.watcher.clone().unwrap();
    drop(gpio);
    set_file(dir.path(), 23, "1");
    assert_eq!(rx.recv_timeout(DEADLINE), Ok(true), "live pin watched");
    drop(input);
    let deadline = Instant::now() + DEADLINE;
    while running.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "watcher thread still running");
        std::thread::sleep(Duration::from_millis(1));
    }
}
