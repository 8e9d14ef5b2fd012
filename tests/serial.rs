//! The serial plugin against a fake device on a pseudo-terminal pair made by socat: commands
//! reach the device, replies and unsolicited reports come back, and a device that goes away
//! is reported unavailable and then available again once it returns.

mod support;

use pimesh::config::{self, SerialConfig};
use pimesh::model::ObjectId;
use pimesh::plugins::serial::{SerialError, SerialEvent, SerialEventKind, SerialHandle};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use support::Socat;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(10);

fn id(s: &str) -> ObjectId {
    ObjectId::new(s).unwrap()
}

/// A fake Arduino on the `fake` end: answers `R1=x` with `OK R1=x`, `R2=1` with an error,
/// ignores `R3=x`, and records every line it saw.
struct FakeDevice {
    seen: Arc<Mutex<Vec<String>>>,
    port: std::fs::File,
}

impl FakeDevice {
    fn start(path: &Path) -> FakeDevice {
        let port = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (reader, mut writer, log) = (
            port.try_clone().unwrap(),
            port.try_clone().unwrap(),
            seen.clone(),
        );
        std::thread::spawn(move || {
            for line in BufReader::new(reader).lines() {
                let Ok(line) = line else { return };
                let answer = match line.as_str() {
                    "R1=1" => Some("OK R1=1\r\n"),
                    "R1=0" => Some("OK R1=0\r\n"),
                    "R2=1" => Some("ERR relay 2 jammed\n"),
                    _ => None,
                };
                log.lock().unwrap().push(line);
                if let Some(a) = answer {
                    let _ = writer.write_all(a.as_bytes());
                }
            }
        });
        FakeDevice { seen, port }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    /// Sends an unsolicited line, as a button on the device would.
    fn say(&mut self, bytes: &[u8]) {
        self.port.write_all(bytes).unwrap();
    }
}

fn device_config(dir: &Path, protocol: &str) -> SerialConfig {
    let text = format!(
        r#"
[[serial]]
id = "arduino"
path = "{}"
baud = 115200
protocol = "{protocol}"
timeout-ms = 300
fail-prefix = "ERR"
{}"#,
        dir.join("dev").display(),
        if protocol == "line" {
            ["r1", "r2", "r3"]
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let n = i + 1;
                    format!("[[serial.channel]]\nid = \"arduino-{c}\"\non = \"R{n}=1\\n\"\noff = \"R{n}=0\\n\"\non-reply = \"OK R{n}=1\"\noff-reply = \"OK R{n}=0\"\n")
                })
                .collect::<String>()
        } else {
            String::new()
        }
    );
    let config = config::parse(&text, Path::new("serial.toml")).unwrap();
    config.serials[0].clone()
}

/// The next event, within the deadline.
async fn next(events: &mut mpsc::UnboundedReceiver<SerialEvent>) -> SerialEventKind {
    match tokio::time::timeout(DEADLINE, events.recv()).await {
        Ok(Some(e)) => {
            assert_eq!(e.device, id("arduino"));
            e.kind
        }
        other => panic!("no serial event within the deadline: {other:?}"),
    }
}

/// Waits until `f` holds, polling with a deadline.
async fn until(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn line_device_commands_replies_unplug_and_replug() {
    let dir = tempfile::tempdir().unwrap();
    let mut socat = Socat::start(dir.path());
    let mut fake = FakeDevice::start(&dir.path().join("fake"));
    let (tx, mut events) = mpsc::unbounded_channel();
    let cancel = CancellationToken::new();
    let handle = SerialHandle::spawn(device_config(dir.path(), "line"), tx, cancel.clone());
    assert_eq!(next(&mut events).await, SerialEventKind::Available);

    // command → the device sees the bytes → its answer → ok, and the state is reported.
    let answer = handle.send(&id("arduino-r1"), true).await.unwrap();
    assert_eq!(answer, Ok(true));
    assert_eq!(fake.seen(), ["R1=1"]);
    let on = SerialEventKind::State {
        channel: id("arduino-r1"),
        on: true,
    };
    assert_eq!(next(&mut events).await, on);

    // An unsolicited report updates the state.
    fake.say(b"OK R1=0\n");
    let off = SerialEventKind::State {
        channel: id("arduino-r1"),
        on: false,
    };
    assert_eq!(next(&mut events).await, off);

    // The device refuses, or does not answer at all.
    match handle.send(&id("arduino-r2"), true).await.unwrap() {
        Err(SerialError::Failed { reason, .. }) => {
            assert!(reason.contains("ERR relay 2 jammed"), "{reason}")
        }
        other => panic!("expected failed, got {other:?}"),
    }
    match handle.send(&id("arduino-r3"), true).await.unwrap() {
        Err(e @ SerialError::Timeout { .. }) => assert_eq!(
            e.to_string(),
            "serial device arduino did not answer \"R3=1\\n\" within 300 ms; check the wiring, the baud rate and the reply patterns"
        ),
        other => panic!("expected timeout, got {other:?}"),
    }
    let unknown = handle.send(&id("lamp"), true).await.unwrap();
    assert!(
        matches!(unknown, Err(SerialError::UnknownChannel { .. })),
        "{unknown:?}"
    );
    assert!(matches!(
        handle.write(b"x".to_vec()).await.unwrap(),
        Err(SerialError::WrongProtocol { .. })
    ));

    // Unplugged: unavailable, and commands are answered at once.
    socat.stop();
    match next(&mut events).await {
        SerialEventKind::Unavailable(reason) => assert!(!reason.is_empty()),
        other => panic!("expected unavailable, got {other:?}"),
    }
    let answer = handle.send(&id("arduino-r1"), true).await.unwrap();
    assert!(
        matches!(answer, Err(SerialError::Unavailable { .. })),
        "{answer:?}"
    );

    // Plugged back in: available again, and commands work.
    let _socat = Socat::start(dir.path());
    let fake = FakeDevice::start(&dir.path().join("fake"));
    assert_eq!(next(&mut events).await, SerialEventKind::Available);
    assert_eq!(
        handle.send(&id("arduino-r1"), false).await.unwrap(),
        Ok(false)
    );
    until("the device to see R1=0", || fake.seen() == ["R1=0"]).await;

    cancel.cancel();
    let stopped = handle.send(&id("arduino-r1"), true).await;
    assert!(
        matches!(stopped, Ok(Err(SerialError::Stopped { .. })) | Err(_)),
        "{stopped:?}"
    );
}

#[tokio::test]
async fn raw_device_bridges_bytes_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let _socat = Socat::start(dir.path());
    let mut fake = FakeDevice::start(&dir.path().join("fake"));
    let (tx, mut events) = mpsc::unbounded_channel();
    let cancel = CancellationToken::new();
    let handle = SerialHandle::spawn(device_config(dir.path(), "raw"), tx, cancel.clone());
    assert_eq!(next(&mut events).await, SerialEventKind::Available);

    handle.write(b"PING 1\n".to_vec()).await.unwrap().unwrap();
    until("the device to see the bytes", || fake.seen() == ["PING 1"]).await;

    fake.say(b"\x01binary\xffhello");
    let mut got = Vec::new();
    while got.len() < 13 {
        match next(&mut events).await {
            SerialEventKind::Received(bytes) => got.extend(bytes),
            other => panic!("expected bytes, got {other:?}"),
        }
    }
    assert_eq!(got, b"\x01binary\xffhello");
    let wrong = handle.send(&id("x"), true).await.unwrap();
    assert!(
        matches!(wrong, Err(SerialError::WrongProtocol { .. })),
        "{wrong:?}"
    );
    cancel.cancel();
}
