//! Hardened input, end to end: forged mesh messages, oversized ids, numbers out of range,
//! floods of garbage and foreign retained state. Outsiders cannot reach the mesh's topics any
//! more (`tests/security.rs`), so the forged mesh messages come from what is left: a member
//! that misbehaves, with its own key, on the only topics it may write.

mod support;

use serde_json::json;
use support::*;

/// Starts alpha and a member `rogue` that joined it; returns both and rogue's UUID.
fn alpha_and_rogue() -> (Agent, Agent, String) {
    alpha_and_rogue_with("")
}

/// [`alpha_and_rogue`] with `extra` config appended to every node's.
fn alpha_and_rogue_with(extra: &str) -> (Agent, Agent, String) {
    let a = start_node("alpha", &(node_config("a") + extra), &[]);
    let r = start_node("rogue", &(node_config("r") + extra), &["--peer", &a.addr()]);
    wait_until("rogue joined", || a.peer_status("rogue") == "online");
    let ur = r.uuid();
    (a, r, ur)
}

/// The end of time, as a forged stamp.
fn forged_stamp(origin: &str) -> serde_json::Value {
    json!({"wall_ms": u64::MAX, "counter": u32::MAX, "origin": origin})
}

#[test]
fn a_forged_batch_from_the_future_is_refused_and_later_sets_still_replicate() {
    let a = start_node("alpha", &node_config("a"), &[]);
    let mut b = start_node("beta", &node_config("b"), &["--peer", &a.addr()]);
    wait_until("both see all 6 objects", || b.all().len() == 6);
    let out = a.cli(&["set", "a-light", "on"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_until("a-light ON on beta", || b.state("a-light") == "ON");
    wait_until("alpha listens to beta's stream", || {
        a.peer_status("beta") == "online"
    });

    // Beta misbehaves: on its own broker, under its own UUID (all it may write), it streams
    // updates of alpha's relay stamped at the end of time. Alpha refuses them.
    let ub = b.uuid();
    let update = |prop: &str, value: &str, seq: u64| {
        json!({"object": "a-light", "prop": prop, "value": value,
               "stamp": forged_stamp(&ub), "seq": seq})
    };
    let batch = json!({"updates": [update("state", "OFF", 1000), update("room", "pwned", 1001)]});
    publish_as(
        b.port,
        member_login(&b.dir),
        &format!("$pimesh/pimesh/mesh/{ub}/updates"),
        batch.to_string().as_bytes(),
        false,
    );
    wait_until("alpha logs the refusal with the claimed origin", || {
        a.log()
            .lines()
            .any(|l| l.contains("refusing a replicated update") && l.contains(&ub))
    });

    for (word, state) in [("off", "OFF"), ("on", "ON")] {
        let out = a.cli(&["set", "a-light", word]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        wait_until("beta follows the pin", || b.state("a-light") == state);
    }
    b.kill9();
    b.restart();
    wait_until("beta back with the true state", || {
        b.all().get("a-light").is_some_and(|o| o["state"] == "ON")
    });
    for n in [&a, &b] {
        assert_eq!(n.get("a-light")["room"], "room-a");
    }
}

#[test]
fn a_forwarded_command_is_checked_like_a_set_and_its_clock_bounded() {
    let (a, r, ur) = alpha_and_rogue();
    let ua = a.uuid();
    let answers = Subscriber::new_as(
        a.port,
        &format!("$pimesh/pimesh/mesh/{ua}/answer/{ur}"),
        member_login(&r.dir),
    );
    let stream = Subscriber::new_as(
        a.port,
        &format!("$pimesh/pimesh/mesh/{ua}/updates"),
        member_login(&r.dir),
    );
    let cmd = format!("$pimesh/pimesh/mesh/{ur}/cmd");
    let forwards = [
        json!({"id": "evil-1", "object": "a-light", "request": {"state": "ON"},
               "clock": forged_stamp(&ur)}),
        json!({"id": "evil-2", "object": "a-light", "request": {"room": ""}}),
        json!({"id": "i".repeat(200), "object": "a-light", "request": {"state": "ON"}}),
    ];
    for f in &forwards {
        publish_as(
            a.port,
            member_login(&r.dir),
            &cmd,
            f.to_string().as_bytes(),
            false,
        );
    }
    let lines = answers.take(3);
    assert_eq!(
        lines.len(),
        3,
        "every forwarded command is answered: {lines:?}"
    );
    assert!(
        lines[0].contains("\"rejected\"") && lines[0].contains("ahead of our wall clock"),
        "{lines:?}"
    );
    assert!(
        lines[1].contains("\"rejected\"") && lines[1].contains("room must be"),
        "{lines:?}"
    );
    assert!(
        lines[2].contains("\"rejected\"") && lines[2].contains("at most 128"),
        "{lines:?}"
    );
    assert_eq!(a.pin(17).as_deref(), Some("0"), "nothing ran");

    // Our own next write is stamped by our wall clock, not by the forged one.
    let out = a.cli(&["set", "a-light", "on"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let line = stream.take(1).pop().expect("our update on the live stream");
    let batch: serde_json::Value =
        serde_json::from_str(line.split_once(' ').expect("topic payload").1).expect("JSON");
    let wall = batch["updates"][0]["stamp"]["wall_ms"]
        .as_u64()
        .expect("stamp");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    assert!(wall <= now + 60_000, "stamp {wall} ran ahead of {now}");
}

#[test]
fn oversized_ids_and_numbers_out_of_range_are_rejected_with_an_answer() {
    let a = Agent::start(&[]);
    let replies = Subscriber::new(a.port, "test/replies");
    let set = |payload: String| publish(a.port, "pimesh/relay-1/set", payload.as_bytes(), false);
    let huge = "x".repeat(2 << 20);
    set(format!(
        r#"{{"state":"ON","id":"{huge}","reply-to":"test/replies"}}"#
    ));
    let long = "i".repeat(129);
    set(format!(
        r#"{{"state":"ON","id":"{long}","reply-to":"test/replies"}}"#
    ));
    set(r#"{"x":1e400,"id":"big-x","reply-to":"test/replies"}"#.to_string());
    set(r#"{"y":-1e400,"id":"big-y","reply-to":"test/replies"}"#.to_string());
    let lines = replies.take(4);
    assert_eq!(lines.len(), 4, "every command is answered: {lines:?}");
    assert!(
        lines.iter().all(|l| l.contains("\"rejected\"")),
        "{lines:?}"
    );
    assert!(lines[0].contains("at most 4096"), "{}", &lines[0][..200]);
    assert!(lines[0].len() < 1000, "the huge id is not echoed");
    assert!(
        lines[1].contains("command id is 129 bytes; at most 128"),
        "{}",
        lines[1]
    );
    assert!(lines[2].contains("big-x") && lines[2].contains("number out of range"));
    assert!(lines[3].contains("big-y") && lines[3].contains("number out of range"));
    assert_eq!(a.pin(17).as_deref(), Some("0"), "nothing switched");
    assert!(a.log().len() < 100_000, "the id is not logged");
}

#[test]
fn garbage_on_an_internal_topic_logs_a_few_warnings_not_one_per_message() {
    let (a, r, ur) = alpha_and_rogue();
    let garbage: Vec<String> = (0..2000).map(|i| format!("garbage {i}")).collect();
    publish_lines_as(
        a.port,
        member_login(&r.dir),
        &format!("$pimesh/pimesh/mesh/{ur}/cmd"),
        &garbage,
    );
    // A command sent after the flood is answered once the flood has been read.
    let replies = Subscriber::new(a.port, "test/done");
    let done = r#"{"state":"ON","id":"done","reply-to":"test/done"}"#;
    publish(a.port, "pimesh/a-light/set", done.as_bytes(), false);
    assert_eq!(replies.take(1).len(), 1, "the agent still answers");
    let warned = a
        .log()
        .matches("ignoring a malformed forwarded command")
        .count();
    assert!(
        (1..=10).contains(&warned),
        "{warned} warnings for 2000 bad messages"
    );
}

#[test]
fn a_hello_with_hundreds_of_addresses_is_cut_to_sixteen() {
    let (a, r, ur) = alpha_and_rogue();
    // TEST-NET-1: addresses that never answer, so no test's agent is dialled by mistake.
    let peers: Vec<_> = (0..499)
        .map(|i| json!({"uuid": null, "addr": format!("192.0.2.{}:{}", i % 250, 1000 + i)}))
        .collect();
    let hello = json!({"uuid": ur, "name": "rogue", "addrs": [], "peers": peers});
    publish_as(
        a.port,
        member_login(&r.dir),
        &format!("$pimesh/pimesh/mesh/{ur}/hello"),
        hello.to_string().as_bytes(),
        true,
    );
    wait_until("the agent says it cut the hello", || {
        a.log().contains("a hello lists more than 16 addresses")
    });
    let rows = a.peers();
    assert!(
        (2..=20).contains(&rows.len()),
        "{} rows: self, rogue and at most 16 addresses",
        rows.len()
    );
}

#[test]
fn foreign_retained_state_and_status_are_replaced_by_ours() {
    let a = Agent::start(&[]);
    let ua = a.uuid();
    let retained = |topic: &str| mosquitto_sub(a.port, topic, 1).pop().unwrap_or_default();
    wait_until("relay-1's state is retained", || {
        retained("pimesh/relay-1").contains("\"state\":\"OFF\"")
    });
    let status = format!("pimesh/instance/{ua}/status");
    let forged = r#"{"id":"relay-1","state":"ON","room":"pwned"}"#;
    publish(a.port, "pimesh/relay-1", forged.as_bytes(), true);
    publish(a.port, &status, b"offline", true);
    publish(a.port, "home/my-own-device", b"42", true);
    wait_until("our relay-1 state is back", || {
        let s = retained("pimesh/relay-1");
        s.contains("\"state\":\"OFF\"") && !s.contains("pwned")
    });
    wait_until("our status is back", || {
        retained(&status).ends_with(" online")
    });
    assert_eq!(
        retained("home/my-own-device"),
        "home/my-own-device 42",
        "the house's other devices keep their retained messages"
    );
}

#[test]
fn a_member_cannot_introduce_an_address_for_another_instance() {
    let (a, r, ur) = alpha_and_rogue();
    let fake = "00000000-0000-4000-8000-0000000000ff";
    let hello =
        json!({"uuid": fake, "name": "alpha-twin", "addrs": ["192.0.2.7:1883"], "peers": []});
    // On its own topic, which is all the front door lets it write, but speaking for another.
    publish_as(
        a.port,
        member_login(&r.dir),
        &format!("$pimesh/pimesh/mesh/{ur}/hello"),
        hello.to_string().as_bytes(),
        true,
    );
    wait_until("alpha ignores the introduction", || {
        a.log()
            .contains("ignoring an introduction that speaks for another instance")
    });
    let rows = a.peers();
    assert!(
        rows.iter()
            .all(|p| p["uuid"] != fake && p["addr"] != "192.0.2.7:1883"),
        "{rows:?}"
    );
}

/// A Mosquitto broker on a port a killed agent held, speaking for that agent; killed on drop.
struct Impostor {
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Impostor {
    fn on(port: u16) -> Impostor {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            // Every interface, like the agent it replaces: alpha may link to any of them.
            format!("listener {port}\nallow_anonymous true\n"),
        )
        .unwrap();
        let child = std::process::Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("mosquitto (apt install mosquitto) must be installed");
        let imp = Impostor { child, _dir: dir };
        wait_until("mosquitto listens", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        imp
    }
}

impl Drop for Impostor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn updates_signed_as_another_member_or_badly_or_from_next_year_are_dropped_everywhere() {
    use pimesh::clock::Stamp;
    use pimesh::model::{ObjectId, Value};
    use pimesh::replica::{trust, Update};
    // Mesh links in the clear: the impostor below is a plain MQTT broker on the rogue's
    // plaintext port, which alpha must dial.
    let clear = "[mesh]\ntls = false\n";
    let (mut a, mut r, ur) = alpha_and_rogue_with(clear);
    let c = start_node("gamma", &(node_config("c") + clear), &["--peer", &a.addr()]);
    wait_until("gamma has alpha's lamp", || {
        c.all()
            .get("a-light")
            .is_some_and(|o| o["room"] == "room-a")
    });
    let (ua, uc) = (a.uuid(), c.uuid());
    let rogue_key = pimesh::secret::instance_key(&r.dir).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let update = |origin: &str, room: &str, wall_ms: u64, seq: u64| Update {
        object: ObjectId::new("a-light").unwrap(),
        prop: "room".into(),
        value: Value::Text(room.into()),
        stamp: Stamp {
            wall_ms,
            counter: 0,
            origin: origin.parse().unwrap(),
        },
        seq,
        sig: None,
    };
    // Signed by the rogue, claiming to be gamma.
    let mut as_gamma = update(&uc, "pwned-as-gamma", now + 1_000, 900);
    as_gamma.sig = Some(trust::sign(&rogue_key, &as_gamma));
    // The rogue's own, with a signature of zeroes.
    let mut bad = update(&ur, "pwned-bad-signature", now + 1_000, 901);
    bad.sig = Some(trust::Signature([0; 64]));
    // The rogue's own, unsigned.
    let unsigned = update(&ur, "pwned-unsigned", now + 1_000, 902);
    // The rogue's own, rightly signed, but a year ahead.
    let mut next_year = update(&ur, "pwned-next-year", now + 365 * 86_400_000, 903);
    next_year.sig = Some(trust::sign(&rogue_key, &next_year));
    let forged = vec![as_gamma, bad, unsigned, next_year];

    // The rogue's broker is replaced by one that answers alpha's syncs with those pages, and
    // keeps announcing that the rogue holds more so alpha keeps asking.
    let port = r.port;
    r.kill9();
    let _impostor = Impostor::on(port);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answering = {
        let (stop, ur, ua) = (stop.clone(), ur.clone(), ua.clone());
        std::thread::spawn(move || {
            let mut opts = rumqttc::MqttOptions::new("impostor", "127.0.0.1", port);
            opts.set_keep_alive(std::time::Duration::from_secs(5));
            let (client, mut conn) = rumqttc::Client::new(opts, 16);
            client
                .subscribe(
                    format!("$pimesh/pimesh/mesh/{ua}/sync-req"),
                    rumqttc::QoS::AtLeastOnce,
                )
                .unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let event = conn.recv_timeout(std::time::Duration::from_millis(300));
                if let Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)))) = event {
                    let req: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
                    let page = json!({"round": req["round"], "updates": forged,
                                      "more": false, "vv": {}});
                    let _ = client.try_publish(
                        format!("$pimesh/pimesh/mesh/{ur}/sync/{ua}"),
                        rumqttc::QoS::AtLeastOnce,
                        false,
                        page.to_string(),
                    );
                } else if event.is_err() {
                    let beat = json!({"name": "rogue", "vv": {&ur: 100_000}});
                    let _ = client.try_publish(
                        format!("$pimesh/pimesh/mesh/{ur}/beat"),
                        rumqttc::QoS::AtLeastOnce,
                        false,
                        beat.to_string(),
                    );
                }
            }
        })
    };
    for (what, origin) in [
        ("is not", &uc),
        ("is not", &ur),
        ("carries no signature", &ur),
        ("ahead", &ur),
    ] {
        wait_until("alpha logs each forgery with its claimed origin", || {
            a.log().lines().any(|l| {
                l.contains("refusing a replicated update") && l.contains(what) && l.contains(origin)
            })
        });
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    answering.join().unwrap();

    // Nothing reached a store: not alpha's, not gamma's (which only alpha could have told).
    let out = a.cli(&["set", "a-light", "on"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_until("gamma follows alpha", || c.state("a-light") == "ON");
    for n in [&a, &c] {
        assert_eq!(n.get("a-light")["room"], "room-a");
    }
    a.kill9();
    a.restart();
    assert_eq!(a.get("a-light")["room"], "room-a", "after a restart too");
}
