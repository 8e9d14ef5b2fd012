//! Who gets in and what they may do, with real clients against real agents: credentials on
//! every listener, users and their topic rules, members by invitation only, limits, the CLI's
//! credentials, and an upgrade from a data dir made before any of this existed.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};
use support::*;

/// An MQTT 3.1.1 CONNECT, by hand, so tests control every byte.
fn connect_packet(client_id: &str, login: Option<(&str, &str)>) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4];
    body.push(if login.is_some() { 0xC2 } else { 0x02 });
    body.extend_from_slice(&60u16.to_be_bytes());
    let mut field = |s: &str| {
        body.extend_from_slice(&(s.len() as u16).to_be_bytes());
        body.extend_from_slice(s.as_bytes());
    };
    field(client_id);
    if let Some((u, p)) = login {
        field(u);
        field(p);
    }
    let mut packet = vec![0x10];
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        packet.push(byte);
        if len == 0 {
            break;
        }
    }
    packet.extend(body);
    packet
}

/// Connects from `source` (any 127.x address) and returns the stream and the CONNACK code
/// (None if the connection closed without one).
fn raw_connect(
    source: &str,
    port: u16,
    client_id: &str,
    login: Option<(&str, &str)>,
) -> (TcpStream, Option<u8>) {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let src: SocketAddr = format!("{source}:0").parse().unwrap();
    sock.bind(&src.into()).unwrap();
    let dst: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    sock.connect(&dst.into()).unwrap();
    let mut stream: TcpStream = sock.into();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.write_all(&connect_packet(client_id, login)).unwrap();
    let mut ack = [0u8; 4];
    let code = match stream.read_exact(&mut ack) {
        Ok(()) if ack[0] == 0x20 => Some(ack[3]),
        _ => None,
    };
    (stream, code)
}

/// `mosquitto_pub` with its arguments; returns whether it succeeded and what it printed.
fn pub_with(args: &[&str]) -> (bool, String) {
    let out = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1"])
        .args(args)
        .output()
        .expect("mosquitto_pub");
    (
        out.status.success(),
        format!("{}{}", text(&out.stdout), text(&out.stderr)),
    )
}

/// Adds a user on `a` and returns its generated password.
fn add_user(a: &Agent, name: &str) -> String {
    let out = a.cli(&["user", "add", name]);
    assert!(out.status.success(), "user add: {}", text(&out.stderr));
    let password = text(&out.stdout).trim().to_string();
    assert_eq!(password.len(), 24, "a generated password is printed");
    password
}

fn log_of(a: &Agent) -> String {
    std::fs::read_to_string(a.dir.join("test-agent.log")).unwrap_or_default()
}

#[test]
fn a_v5_publish_with_properties_reaches_a_v311_subscriber_and_the_agent_lives() {
    let a = Agent::start(&[]);
    let sub = Subscriber::new(a.port, "x/#");
    let (u, p) = a.credentials();
    for port in [a.mqtt5_port(), a.port] {
        let (ok, out) = pub_with(&[
            "-V",
            "mqttv5",
            "-p",
            &port.to_string(),
            "-u",
            &u,
            "-P",
            &p,
            "-t",
            "x/a",
            "-m",
            "hi",
            "-D",
            "publish",
            "user-property",
            "a",
            "b",
        ]);
        assert!(ok, "{out}");
        assert_eq!(sub.take(1), ["x/a hi"]);
    }
    assert_eq!(a.state("relay-1"), "OFF", "the agent still answers");
}

#[test]
fn clients_without_valid_credentials_are_refused_on_every_listener() {
    let a = Agent::start(&[]);
    let (u, _) = a.credentials();
    for port in [a.port, a.mqtt5_port()] {
        for version in ["mqttv311", "mqttv5"] {
            let port = port.to_string();
            let base = [
                "-V",
                version,
                "-p",
                &port,
                "-q",
                "1",
                "-t",
                "pimesh/relay-1/set",
                "-m",
                "ON",
            ];
            let (ok, out) = pub_with(&base);
            assert!(!ok, "anonymous {version} on {port}: {out}");
            let lower = out.to_lowercase();
            assert!(
                lower.contains("not authori") || lower.contains("bad user name"),
                "{out}"
            );
            let mut wrong = base.to_vec();
            wrong.extend(["-u", &u, "-P", "wrong"]);
            let (ok, out) = pub_with(&wrong);
            assert!(!ok, "wrong password {version} on {port}: {out}");
            let mut user = base.to_vec();
            user.extend(["-u", "nobody", "-P", "whatever"]);
            assert!(!pub_with(&user).0);
        }
    }
    // A hand-made CONNECT gets the documented code: 4 = bad user name or password.
    assert_eq!(raw_connect("127.0.0.1", a.port, "scanner", None).1, Some(4));
    assert_eq!(a.pin(17).as_deref(), Some("0"), "nothing switched");
    let log = log_of(&a);
    assert!(log.contains("client refused"), "{log}");
    assert!(
        log.contains("client=scanner") && log.contains("anonymous clients are not allowed"),
        "{log}"
    );
    assert!(
        log.contains("wrong password for the instance's own credentials"),
        "{log}"
    );
    assert!(log.contains("unknown user \"nobody\""), "{log}");
}

#[test]
fn anonymous_clients_are_let_in_only_when_the_config_says_so() {
    let a = Agent::start(&["--allow-anonymous"]);
    let (ok, out) = pub_with(&[
        "-p",
        &a.port.to_string(),
        "-q",
        "1",
        "-t",
        "pimesh/relay-1/set",
        "-m",
        "ON",
    ]);
    assert!(ok, "{out}");
    wait_until("relay-1 switched by an anonymous client", || {
        a.pin(17).as_deref() == Some("1")
    });
    assert!(
        log_of(&a).contains("allow-anonymous is on"),
        "a warning at start"
    );
}

#[test]
fn a_user_switches_another_instances_relay_through_any_broker_but_never_sees_the_mesh() {
    let a = start_node("alpha", &node_config("a"), &[]);
    let b = start_node("beta", &node_config("b"), &["--peer", &a.addr()]);
    wait_until("beta sees alpha online", || {
        b.peer_status("alpha") == "online"
    });
    let password = add_user(&a, "ha");
    let bp = b.port.to_string();
    let login = ["-u", "ha", "-P", password.as_str()];
    // The account replicates: beta's broker takes it too.
    wait_until("the user is known on beta", || {
        let mut args = vec!["-p", &bp, "-q", "1", "-t", "pimesh/a-light/set", "-m", "ON"];
        args.extend(login);
        pub_with(&args).0
    });
    wait_until("alpha's relay switched by a user at beta", || {
        a.pin(17).as_deref() == Some("1")
    });
    let users = a.cli(&["user", "list"]);
    assert_eq!(text(&users.stdout).trim(), "ha");

    // Subscribed to everything for 3 s while heartbeats flow every second: no internal topic.
    let out = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &bp,
            "-u",
            "ha",
            "-P",
            &password,
            "-t",
            "#",
            "-v",
            "-W",
            "3",
        ])
        .output()
        .unwrap();
    let seen = text(&out.stdout);
    assert!(
        seen.contains("pimesh/a-light "),
        "the user sees the house: {seen}"
    );
    assert!(
        !seen.contains("$pimesh/") && !seen.contains("/mesh/"),
        "the user saw internal topics: {seen}"
    );
    assert_eq!(b.peer_status("alpha"), "online", "beats did flow");

    // A forged state, instance status or mesh update is refused.
    let mut forged = vec![
        "-p",
        &bp,
        "-q",
        "1",
        "-r",
        "-t",
        "pimesh/a-light",
        "-m",
        "{\"state\":\"OFF\",\"room\":\"pwned\"}",
    ];
    forged.extend(login);
    pub_with(&forged);
    let mut v5 = vec![
        "-V",
        "mqttv5",
        "-p",
        &bp,
        "-q",
        "1",
        "-t",
        "$pimesh/pimesh/mesh/x/updates",
        "-m",
        "{}",
    ];
    v5.extend(login);
    let (ok, out) = pub_with(&v5);
    assert!(
        !ok || out.to_lowercase().contains("not authori"),
        "MQTT 5 hears that its publish was refused: {out}"
    );
    let retained = mosquitto_sub(b.port, "pimesh/a-light", 1);
    assert!(
        retained[0].contains("\"state\":\"ON\"") && !retained[0].contains("pwned"),
        "{retained:?}"
    );
    assert!(
        log_of(&b).contains("may not publish on \"pimesh/a-light\""),
        "the refusal is logged"
    );

    // Removing the user refuses its next connection everywhere.
    assert!(a.cli(&["user", "remove", "ha"]).status.success());
    wait_until("the removed user is refused at beta", || {
        let mut args = vec![
            "-p",
            &bp,
            "-q",
            "1",
            "-t",
            "pimesh/a-light/set",
            "-m",
            "OFF",
        ];
        args.extend(login);
        !pub_with(&args).0
    });
}

#[test]
fn an_instance_that_was_not_invited_learns_nothing_and_is_never_dialled() {
    let a = start_node("alpha", &node_config("a"), &[]);
    let stranger_cfg = format!("{}[mesh]\npeers = [\"{}\"]\n", node_config("u"), a.addr());
    let u = start_node("stranger", &stranger_cfg, &[]);
    wait_until("the stranger is told it needs an invitation", || {
        log_of(&u).contains("not (yet) a member")
    });
    assert!(
        !u.all().contains_key("a-light"),
        "the stranger learnt alpha's objects"
    );
    assert!(
        a.peers().iter().all(|p| p["name"] != "stranger"),
        "{:?}",
        a.peers()
    );
    // Its mesh link is TLS: alpha's certificate is not from the stranger's CA (nor the
    // stranger's from alpha's), so it is refused before it can present a proof.
    assert!(
        log_of(&a).contains("TLS handshake failed"),
        "{}",
        log_of(&a)
    );
    // Alpha never connected to the stranger, so it never presented a proof there.
    let a_uuid = std::fs::read_to_string(a.dir.join("instance-id")).unwrap();
    let a_simple = a_uuid.trim().replace('-', "");
    assert!(
        !log_of(&u).contains(&a_simple),
        "alpha dialled the stranger: {}",
        log_of(&u)
    );
}

#[test]
fn an_invitation_works_once() {
    let a = start_node("alpha", &node_config("a"), &[]);
    let token = invite(&a.dir, None);
    let b = start_node(
        "beta",
        &node_config("b"),
        &["--join", &token, "--peer", &a.addr()],
    );
    wait_until("beta joined", || b.peer_status("alpha") == "online");
    let c = start_node(
        "gamma",
        &node_config("c"),
        &["--join", &token, "--peer", &a.addr()],
    );
    wait_until("gamma is told the invitation is used", || {
        log_of(&c).contains("could not join the mesh of the invitation")
    });
    assert!(!c.all().contains_key("a-light"));
    assert!(a.peers().iter().all(|p| p["name"] != "gamma"));
    let bad = cli(&["run", "--join", "hello"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("not a pimesh invitation token"),
        "{}",
        text(&bad.stderr)
    );
}

#[test]
fn a_refused_cli_exits_2_and_says_how_to_authenticate() {
    let a = Agent::start(&[]);
    let out = Command::new(bin())
        .args([
            "set",
            "relay-1",
            "on",
            "--via",
            &format!("127.0.0.1:{}", a.port),
        ])
        .env_remove("PIMESH_USER")
        .env_remove("PIMESH_PASSWORD")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("refused") && err.contains("--user") && err.contains("PIMESH_PASSWORD"),
        "{err}"
    );
    // On the agent's own machine no flag is needed: systemd's STATE_DIRECTORY (or the default
    // data dir) leads the CLI to the agent and its credentials.
    let out = Command::new(bin())
        .args(["set", "relay-1", "on"])
        .env("STATE_DIRECTORY", &a.dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(a.dir.join("credentials"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn floods_lock_out_neither_the_cli_nor_other_clients() {
    let a = Agent::start(&[]);
    let password = add_user(&a, "flood");
    // Idle connections that never send CONNECT, from another address: at most 16 are kept,
    // and they do not hold up anyone else.
    let idle: Vec<socket2::Socket> = (0..100)
        .filter_map(|_| {
            let s =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
            s.bind(&"127.0.0.2:0".parse::<SocketAddr>().ok()?.into())
                .ok()?;
            s.connect(&SocketAddr::from(([127, 0, 0, 1], a.port)).into())
                .ok()?;
            Some(s)
        })
        .collect();
    assert_eq!(idle.len(), 100);
    let start = Instant::now();
    assert_eq!(a.state("relay-1"), "OFF");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "the CLI waited behind idle connections"
    );
    drop(idle);
    // Authenticated but idle user connections from one address take the users' slots only.
    let mut users = Vec::new();
    let mut refused_busy = false;
    for i in 0..220 {
        let (s, code) = raw_connect(
            "127.0.0.3",
            a.port,
            &format!("idle-{i}"),
            Some(("flood", &password)),
        );
        match code {
            Some(0) => users.push(s),
            Some(3) => {
                refused_busy = true;
                break;
            }
            other => panic!("connection {i}: CONNACK {other:?}"),
        }
    }
    assert!(
        refused_busy,
        "user slots were not limited ({} connected)",
        users.len()
    );
    assert_eq!(users.len(), 200);
    assert!(
        a.cli(&["set", "relay-1", "on"]).status.success(),
        "the local CLI still gets in"
    );
    drop(users);

    // One user floods commands; another user's command is still answered at once.
    let mut lines = String::new();
    for i in 0..2000 {
        lines.push_str(if i % 2 == 0 { "ON\n" } else { "OFF\n" });
    }
    let mut flood = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &a.port.to_string(),
            "-u",
            "flood",
            "-P",
            &password,
        ])
        .args(["-t", "pimesh/relay-3/set", "-l"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    flood
        .stdin
        .take()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    wait_until("the flood is slowed down", || {
        log_of(&a).contains("slowing it down")
    });
    let start = Instant::now();
    let out = Command::new(bin())
        .args([
            "set",
            "relay-2",
            "on",
            "--via",
            &format!("127.0.0.1:{}", a.port),
        ])
        .env("PIMESH_USER", "flood")
        .env("PIMESH_PASSWORD", &password)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "another client waited {:?}",
        start.elapsed()
    );
    let _ = flood.kill();
    let _ = flood.wait();
}

#[test]
fn oversized_packets_and_client_ids_are_refused_and_the_agent_lives() {
    let a = Agent::start(&[]);
    let (u, p) = a.credentials();
    let (_, code) = raw_connect("127.0.0.1", a.port, &"x".repeat(200), Some((&u, &p)));
    assert_eq!(code, Some(2), "identifier rejected");
    let password = add_user(&a, "big");
    let big = a.dir.join("big-payload");
    std::fs::write(&big, "x".repeat(300 * 1024)).unwrap();
    let big = big.to_string_lossy().to_string();
    let (ok, _) = pub_with(&[
        "-p",
        &a.port.to_string(),
        "-u",
        "big",
        "-P",
        &password,
        "-q",
        "1",
        "-t",
        "x/big",
        "-f",
        &big,
    ]);
    assert!(!ok, "a 300 KiB publish from a user is refused");
    wait_until("the refusal names the size", || {
        log_of(&a).contains("over the limit")
    });
    assert_eq!(a.state("relay-1"), "OFF", "the agent still answers");
}

#[test]
fn retained_messages_of_users_are_bounded_and_deleting_one_makes_room() {
    let config = format!("{}[broker]\nmax-retained = 3\n", node_config("a"));
    let a = start_node("alpha", &config, &[]);
    let password = add_user(&a, "ha");
    let port = a.port.to_string();
    let retain = |topic: &str, message: &str| {
        pub_with(&[
            "-p", &port, "-u", "ha", "-P", &password, "-V", "mqttv5", "-q", "1", "-r", "-t", topic,
            "-m", message,
        ])
    };
    for n in 1..=3 {
        assert!(retain(&format!("home/r{n}"), "kept").0);
    }
    retain("home/r4", "too many");
    wait_until("the refusal names the limit", || {
        log_of(&a).contains("\"home/r4\" is not kept: 3 retained topics")
    });
    // Deleting one (an empty retained message) makes room for another.
    assert!(
        pub_with(&[
            "-p", &port, "-u", "ha", "-P", &password, "-q", "1", "-r", "-t", "home/r1", "-n",
        ])
        .0
    );
    assert!(retain("home/r5", "kept").0);

    // A new subscriber gets exactly what was kept, then a live marker.
    let sub = Subscriber::new_as(a.port, "home/#", ("ha".into(), password.clone()));
    assert!(
        pub_with(&[
            "-p", &port, "-u", "ha", "-P", &password, "-q", "1", "-t", "home/end", "-m", "x"
        ])
        .0
    );
    let mut got = sub.take(4);
    assert_eq!(got.pop().as_deref(), Some("home/end x"), "{got:?}");
    got.sort();
    assert_eq!(got, ["home/r2 kept", "home/r3 kept", "home/r5 kept"]);
    // The agent's own retained states are not users' and still work.
    assert_eq!(a.state("a-light"), "OFF");
}

#[test]
fn a_mesh_from_before_authentication_upgrades_without_losing_the_house() {
    // Two instances as an older pimesh left them: an identity and a store of unsigned
    // updates without members or users; no credentials, key or mesh file. Each has state of
    // its own.
    let a = start_node("alpha", &node_config("a"), &[]);
    assert!(a.cli(&["move", "a-light", "attic"]).status.success());
    let b = start_node("beta", &node_config("b"), &[]);
    assert!(b.cli(&["move", "b-fan", "cellar"]).status.success());
    let (mut a, mut b) = (a, b);
    for agent in [&mut a, &mut b] {
        let uuid = agent.uuid().parse().unwrap();
        agent.stop();
        for f in [
            "credentials",
            "instance.key",
            "mesh.json",
            "invitations.json",
        ] {
            let _ = std::fs::remove_file(agent.dir.join(f));
        }
        make_legacy_store(&agent.dir.join("store"), uuid);
    }
    // The upgrade: start the first, invite the other, start it once with --join.
    a.restart();
    assert_eq!(a.get("a-light")["room"], "attic", "kept across the upgrade");
    let token = invite(&a.dir, None);
    b.restart_with(&["--join", &token, "--peer", &a.addr()]);
    wait_until("both houses merged on both", || {
        [&a, &b].iter().all(|n| {
            let all = n.all();
            all.get("a-light").is_some_and(|o| o["room"] == "attic")
                && all.get("b-fan").is_some_and(|o| o["room"] == "cellar")
        })
    });
}

/// Rewrites the store in `dir` as a pimesh from before authentication wrote it: the whole
/// house in the snapshot, no signatures, no member or user records.
fn make_legacy_store(dir: &std::path::Path, origin: uuid::Uuid) {
    let (mut store, replica) = pimesh::replica::Store::open(dir, origin).expect("store opens");
    store.compact(&replica).expect("compaction");
    drop(store);
    let path = dir.join("snapshot.json");
    let bytes = std::fs::read(&path).unwrap();
    // An older pimesh wrote the JSON document alone, without the checksum line after it.
    let text = String::from_utf8(bytes).unwrap();
    let document = text
        .rsplit_once("\ncrc32 ")
        .map_or(text.as_str(), |(d, _)| d);
    let mut snapshot: serde_json::Value = serde_json::from_str(document).unwrap();
    let objects = snapshot["objects"].as_object_mut().unwrap();
    objects.retain(|id, _| !id.starts_with('_'));
    let mut signed = 0;
    for object in objects.values_mut() {
        for register in object["props"].as_object_mut().unwrap().values_mut() {
            signed += usize::from(register.as_object_mut().unwrap().remove("sig").is_some());
        }
    }
    assert!(signed > 0, "the store was signed before the rewrite");
    std::fs::write(&path, serde_json::to_vec(&snapshot).unwrap()).unwrap();
}

/// A small deterministic generator, so a failing run can be repeated from its seed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Valid packets of both versions to mutate: SUBSCRIBE, PUBLISH with and without MQTT 5
/// properties, PINGREQ, UNSUBSCRIBE, PUBREL.
fn seed_packets(v5: bool) -> Vec<Vec<u8>> {
    use bytes::BytesMut;
    let mut out = Vec::new();
    let mut buf = BytesMut::new();
    if v5 {
        use rumqttc::v5::mqttbytes::v5::*;
        use rumqttc::v5::mqttbytes::QoS;
        let props = PublishProperties {
            user_properties: vec![("a".into(), "b".into())],
            response_topic: Some("x/r".into()),
            correlation_data: Some(bytes::Bytes::from_static(b"c")),
            ..Default::default()
        };
        let mut p = Publish::new("x/a", QoS::AtLeastOnce, "hi", Some(props));
        p.pkid = 1;
        let packets = [
            Packet::Publish(p),
            Packet::Subscribe(Subscribe::new(Filter::new("x/#", QoS::AtLeastOnce), None)),
            Packet::PingReq(PingReq),
            Packet::Unsubscribe(Unsubscribe::new("x/#", None)),
        ];
        for p in packets {
            buf.clear();
            p.write(&mut buf, None).unwrap();
            out.push(buf.to_vec());
        }
    } else {
        use rumqttc::mqttbytes::v4::*;
        use rumqttc::mqttbytes::QoS;
        let mut p = Publish::new("x/b", QoS::ExactlyOnce, "hey");
        p.pkid = 2;
        let packets = [
            Packet::Publish(p),
            Packet::Subscribe(Subscribe::new("x/+", QoS::AtLeastOnce)),
            Packet::PubRel(PubRel::new(2)),
            Packet::PingReq,
        ];
        for p in packets {
            buf.clear();
            p.write(&mut buf, usize::MAX).unwrap();
            out.push(buf.to_vec());
        }
    }
    out
}

/// An MQTT 5 CONNECT with a login.
fn connect_v5(client_id: &str, user: &str, password: &str) -> Vec<u8> {
    use rumqttc::v5::mqttbytes::v5::*;
    let mut buf = bytes::BytesMut::new();
    let c = Connect {
        keep_alive: 60,
        client_id: client_id.into(),
        clean_start: true,
        properties: None,
    };
    let login = Login::new(user, password);
    Packet::Connect(c, None, Some(login))
        .write(&mut buf, None)
        .unwrap();
    buf.to_vec()
}

#[test]
fn random_and_mutated_packets_of_both_versions_never_kill_the_front_door() {
    let a = Agent::start(&[]);
    let (u, p) = a.credentials();
    // Two subscribers that must stay connected through all of it: 3.1.1 and 5.
    let v4_sub = Subscriber::new(a.port, "fuzz/#");
    let (v5_tx, v5_rx) = std::sync::mpsc::channel();
    {
        use rumqttc::v5::mqttbytes::v5::Packet;
        use rumqttc::v5::mqttbytes::QoS;
        use rumqttc::v5::{Client, Event, MqttOptions};
        let mut opts = MqttOptions::new("fuzz-v5-sub", "127.0.0.1", a.mqtt5_port());
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_credentials(u.clone(), p.clone());
        let (client, mut connection) = Client::new(opts, 100);
        client.subscribe("fuzz/#", QoS::AtLeastOnce).unwrap();
        std::thread::spawn(move || {
            let _client = client;
            for event in connection.iter() {
                match event {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = v5_tx.send("subscribed".to_string());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = v5_tx.send(String::from_utf8_lossy(&p.payload).into_owned());
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
    }
    assert_eq!(v5_rx.recv_timeout(DEADLINE).unwrap(), "subscribed");

    let seed = 0x5eed_1234_u64;
    let mut rng = XorShift(seed);
    let ports = [a.port, a.mqtt5_port()];
    for round in 0..300 {
        let v5 = rng.below(2) == 1;
        let mut bytes = if rng.below(8) == 0 {
            Vec::new() // no CONNECT at all: garbage from the first byte
        } else if v5 {
            connect_v5(&format!("fz-{round}"), &u, &p)
        } else {
            connect_packet(&format!("fz-{round}"), Some((&u, &p)))
        };
        let seeds = seed_packets(v5);
        for _ in 0..1 + rng.below(4) {
            let mut packet = seeds[rng.below(seeds.len())].clone();
            for _ in 0..rng.below(6) {
                let i = rng.below(packet.len());
                match rng.below(3) {
                    0 => packet[i] = rng.next() as u8,
                    1 => packet.truncate(i.max(1)),
                    _ => packet.insert(i, rng.next() as u8),
                }
            }
            bytes.extend(packet);
        }
        if rng.below(10) == 0 {
            bytes.extend((0..rng.below(300)).map(|_| rng.next() as u8));
        }
        let port = ports[rng.below(2)];
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
            panic!("round {round} (seed {seed:#x}): the listener on {port} is gone");
        };
        let _ = s.write_all(&bytes);
        let _ = s.shutdown(std::net::Shutdown::Write);
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
    // Both listeners answer, both subscribers are still there, the agent still works.
    mosquitto_pub(a.port, "fuzz/end", "still-here");
    let end = Instant::now() + DEADLINE;
    let got_v5 = loop {
        match v5_rx.recv_timeout(end.saturating_duration_since(Instant::now())) {
            Ok(m) if m == "still-here" => break true,
            Ok(_) => continue,
            Err(_) => break false,
        }
    };
    assert!(
        got_v5,
        "the MQTT 5 subscriber lost its connection (seed {seed:#x})"
    );
    assert!(
        v4_sub.take(1) == ["fuzz/end still-here"],
        "the MQTT 3.1.1 subscriber lost its connection (seed {seed:#x})"
    );
    assert_eq!(a.state("relay-1"), "OFF");
    for port in ports {
        assert_eq!(
            raw_connect("127.0.0.1", port, "after", Some((&u, &p))).1,
            Some(0)
        );
    }
}
