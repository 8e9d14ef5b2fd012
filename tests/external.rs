//! `[broker] external`: the house served on a shared broker (Debian's Mosquitto, with logins
//! and over TLS), with real agents meshed on loopback: commands of the shared broker's
//! clients run once on the holder with one answer, a retained command never runs, one
//! instance speaks for the house and the next takes over, and everything comes back after
//! the broker restarts.

mod support;

#[path = "external/speaker.rs"]
mod speaker;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

const USER: &str = "house";
const PASSWORD: &str = "shared-secret";

/// Debian's Mosquitto on a free loopback port, with a login (and TLS when asked), killed
/// when dropped. It keeps nothing on disk, so a restart loses every retained message.
struct Mosquitto {
    child: Child,
    port: u16,
    conf: std::path::PathBuf,
    /// The CA that issued the TLS listener's certificate, when there is one.
    ca: Option<std::path::PathBuf>,
    dir: tempfile::TempDir,
}

impl Mosquitto {
    fn start(tls: bool) -> Mosquitto {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let passwords = dir.path().join("passwords");
        let st = Command::new("mosquitto_passwd")
            .args(["-b", "-c"])
            .arg(&passwords)
            .args([USER, PASSWORD])
            .status()
            .expect("mosquitto_passwd (apt install mosquitto)");
        assert!(st.success());
        // The rules the README gives for pimesh's user: its shared subscription is
        // checked against `pimesh/#`.
        let acl = dir.path().join("acl");
        std::fs::write(
            &acl,
            format!("user {USER}\ntopic readwrite pimesh/#\ntopic readwrite homeassistant/#\n"),
        )
        .expect("write acl");
        let mut conf = format!(
            "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\nacl_file {}\n",
            passwords.display(),
            acl.display()
        );
        let mut ca = None;
        if tls {
            let (ca_pem, cert_pem, key_pem) = certificates();
            for (name, pem) in [
                ("ca.pem", &ca_pem),
                ("cert.pem", &cert_pem),
                ("key.pem", &key_pem),
            ] {
                std::fs::write(dir.path().join(name), pem).expect("write pem");
            }
            let d = dir.path().display();
            conf.push_str(&format!(
                "cafile {d}/ca.pem\ncertfile {d}/cert.pem\nkeyfile {d}/key.pem\n"
            ));
            ca = Some(dir.path().join("ca.pem"));
        }
        let conf_path = dir.path().join("mosquitto.conf");
        std::fs::write(&conf_path, conf).expect("write mosquitto.conf");
        let child = spawn_mosquitto(&conf_path);
        let m = Mosquitto {
            child,
            port,
            conf: conf_path,
            ca,
            dir,
        };
        m.wait_listening();
        m
    }

    fn wait_listening(&self) {
        let port = self.port;
        wait_until("mosquitto to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }

    /// Stops the broker (its retained messages are gone) and starts it again on its port.
    fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn_mosquitto(&self.conf);
        self.wait_listening();
    }

    /// The `[broker]` table that points an agent at this broker.
    fn broker_table(&self) -> String {
        let pw = self.dir.path().join("agent-password");
        std::fs::write(&pw, format!("{PASSWORD}\n")).expect("write password file");
        let mut t = format!(
            "[broker]\nexternal = \"{}://127.0.0.1:{}\"\nexternal-user = \"{USER}\"\nexternal-password-file = \"{}\"\n",
            if self.ca.is_some() { "mqtts" } else { "mqtt" },
            self.port,
            pw.display()
        );
        if let Some(ca) = &self.ca {
            t.push_str(&format!("external-ca-file = \"{}\"\n", ca.display()));
        }
        t
    }

    /// A subscriber on this broker (a plaintext one).
    fn subscriber(&self, topic: &str) -> Subscriber {
        Subscriber::new_as(self.port, topic, (USER.into(), PASSWORD.into()))
    }

    /// How Debian's clients reach this broker: address, login, and its CA over TLS.
    fn client_args(&self) -> Vec<String> {
        let mut args: Vec<String> = ["-h", "127.0.0.1", "-p", &self.port.to_string()]
            .into_iter()
            .chain(["-u", USER, "-P", PASSWORD])
            .map(String::from)
            .collect();
        if let Some(ca) = &self.ca {
            args.push("--cafile".into());
            args.push(ca.display().to_string());
        }
        args
    }

    /// `mosquitto_pub` on this broker.
    fn publish(&self, topic: &str, payload: &str, retain: bool) {
        let mut cmd = Command::new("mosquitto_pub");
        cmd.args(self.client_args())
            .args(["-q", "1", "-t", topic, "-m", payload]);
        if retain {
            cmd.arg("-r");
        }
        assert!(cmd.status().expect("mosquitto_pub").success());
    }

    /// What is retained on `topic` now (subscribes and takes the first message for a
    /// moment); none when nothing is.
    fn retained(&self, topic: &str) -> Option<String> {
        let out = Command::new("mosquitto_sub")
            .args(self.client_args())
            .args(["-t", topic, "-C", "1", "-W", "1", "--retained-only"])
            .output()
            .expect("mosquitto_sub");
        let line = text(&out.stdout).trim_end().to_string();
        (!line.is_empty()).then_some(line)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_mosquitto(conf: &std::path::Path) -> Child {
    Command::new("mosquitto")
        .arg("-c")
        .arg(conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto (apt install mosquitto, or make deps)")
}

/// A CA and a certificate for `127.0.0.1` it issued, as PEM (CA, certificate, key).
fn certificates() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    // Distinct names: with the same one, OpenSSL takes the certificate for self-signed.
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "shared broker test CA");
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".into()]).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "127.0.0.1");
    let cert = params.signed_by(&key, &ca, &ca_key).expect("certificate");
    (ca.pem(), cert.pem(), key.serialize_pem())
}

/// A client of the shared broker speaking MQTT 5 as Home Assistant does: it asks for
/// answers on its own response topic with correlation data, and collects them.
struct V5Client {
    client: rumqttc::v5::Client,
    answers: std::sync::mpsc::Receiver<(serde_json::Value, Option<Vec<u8>>)>,
    reply: String,
}

impl V5Client {
    fn connect(port: u16, reply: &str) -> V5Client {
        use rumqttc::v5::mqttbytes::v5::Packet;
        use rumqttc::v5::mqttbytes::QoS;
        use rumqttc::v5::{Client, Event, MqttOptions};
        let mut opts = MqttOptions::new(format!("test-v5-{}", free_port()), "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_credentials(USER, PASSWORD);
        let (client, mut connection) = Client::new(opts, 100);
        client
            .subscribe(reply, QoS::AtLeastOnce)
            .expect("subscribe");
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (tx, answers) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for event in connection.iter() {
                match event {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = ready_tx.send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let json = serde_json::from_slice(&p.payload).unwrap_or_default();
                        let correlation = p
                            .properties
                            .and_then(|props| props.correlation_data)
                            .map(|d| d.to_vec());
                        if tx.send((json, correlation)).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("no SubAck from the shared broker");
        V5Client {
            client,
            answers,
            reply: reply.into(),
        }
    }

    fn command(&self, object: &str, payload: &str, correlation: &[u8]) {
        use rumqttc::v5::mqttbytes::v5::PublishProperties;
        let props = PublishProperties {
            response_topic: Some(self.reply.clone()),
            correlation_data: Some(correlation.to_vec().into()),
            ..Default::default()
        };
        self.client
            .publish_with_properties(
                format!("pimesh/{object}/set"),
                rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                false,
                payload.to_string(),
                props,
            )
            .expect("publish");
    }

    /// Answers until `count` have arrived (or the deadline).
    fn take(&self, count: usize) -> Vec<(serde_json::Value, Option<Vec<u8>>)> {
        let end = Instant::now() + Duration::from_secs(20);
        let mut got = Vec::new();
        while got.len() < count {
            match self
                .answers
                .recv_timeout(end.saturating_duration_since(Instant::now()))
            {
                Ok(a) => got.push(a),
                Err(_) => break,
            }
        }
        got
    }
}

/// Two meshed agents, `alpha` and `beta`, both serving the house on `m`.
fn pair(m: &Mosquitto) -> (Agent, Agent) {
    let a = start_node(
        "alpha",
        &format!("{}{}", node_config("a"), m.broker_table()),
        &[],
    );
    let b = start_node(
        "beta",
        &format!("{}{}", node_config("b"), m.broker_table()),
        &["--peer", &a.addr()],
    );
    wait_until("the mesh to link", || {
        a.peer_status("beta") == "online" && b.peer_status("alpha") == "online"
    });
    (a, b)
}

#[test]
fn commands_on_the_shared_broker_run_once_on_the_holder_with_one_answer() {
    let m = Mosquitto::start(false);
    let (a, b) = pair(&m);
    let states = m.subscriber("pimesh/b-light");
    let client = V5Client::connect(m.port, "pimesh/client/test/answers");
    // Both instances take commands from the shared subscription; beta holds the relay.
    const N: usize = 12;
    for i in 0..N {
        let state = if i % 2 == 0 { "ON" } else { "OFF" };
        let payload = format!("{{\"state\":\"{state}\",\"id\":\"{i}\"}}");
        client.command("b-light", &payload, format!("c{i}").as_bytes());
        let answer = client.take(1);
        assert_eq!(answer.len(), 1, "command {i} got no answer");
        let (json, correlation) = &answer[0];
        assert_eq!(json["id"], i.to_string(), "{json}");
        assert_eq!(json["result"], "ok", "{json}");
        assert_eq!(json["executed-by"], "beta", "{json}");
        assert_eq!(correlation.as_deref(), Some(format!("c{i}").as_bytes()));
        let pin = if state == "ON" { "1" } else { "0" };
        assert_eq!(b.pin(17).as_deref(), Some(pin), "beta switched for {i}");
        assert_eq!(
            a.pin(17).as_deref(),
            Some("0"),
            "alpha never switches beta's relay"
        );
    }
    // A last command, then no answer beyond one each: none was answered twice.
    client.command("b-light", "{\"state\":\"ON\",\"id\":\"last\"}", b"last");
    let rest = client.take(2);
    assert_eq!(rest.len(), 1, "one answer for the last command: {rest:?}");
    assert_eq!(rest[0].0["id"], "last");
    // The state is on the shared broker, retained, and replicated to alpha.
    wait_until("beta's light ON on the shared broker", || {
        states
            .drain()
            .iter()
            .any(|l| l.contains("\"state\":\"ON\"") && l.contains("b-light"))
    });
    wait_until("alpha sees beta's light on", || a.state("b-light") == "ON");
    let retained = m.retained("pimesh/b-light").expect("a retained state");
    assert!(retained.contains("\"state\":\"ON\""), "{retained}");
    // Home Assistant discovery is on the shared broker too.
    assert!(
        m.retained("homeassistant/device/#").is_some(),
        "discovery configs on the shared broker"
    );
}

#[test]
fn a_retained_command_on_the_shared_broker_is_cleared_not_run() {
    let m = Mosquitto::start(false);
    // Left on the broker before the agent starts: replayed when it subscribes.
    m.publish("pimesh/a-light/set", "ON", true);
    let a = start_node(
        "alpha",
        &format!("{}{}", node_config("a"), m.broker_table()),
        &[],
    );
    wait_until("the retained command cleared", || {
        m.retained("pimesh/a-light/set").is_none()
    });
    assert_eq!(
        a.pin(17).as_deref(),
        Some("0"),
        "a retained command never switches"
    );
    // Published live with the retain flag: also not a command.
    m.publish("pimesh/a-light/set", "ON", true);
    wait_until("the retained command cleared again", || {
        m.retained("pimesh/a-light/set").is_none()
    });
    // A live command still runs.
    m.publish("pimesh/a-light/set", "ON", false);
    wait_until("alpha's light on", || a.pin(17).as_deref() == Some("1"));
    let log = std::fs::read_to_string(a.dir.join("test-agent.log")).unwrap_or_default();
    assert!(
        log.contains("ignoring a retained command on the shared broker"),
        "the agent says why"
    );
}

#[test]
fn the_house_comes_back_after_the_shared_broker_restarts() {
    let mut m = Mosquitto::start(true);
    let a = start_node(
        "alpha",
        &format!("{}{}", node_config("a"), m.broker_table()),
        &[],
    );
    let uuid = a.uuid();
    let status = format!("pimesh/instance/{uuid}/status");
    // Over TLS with the broker's CA, as every client of it here.
    wait_until("the house on the shared broker", || {
        m.retained("pimesh/a-light").is_some() && m.retained(&status).as_deref() == Some("online")
    });
    m.restart();
    assert_eq!(
        m.retained("pimesh/a-light"),
        None,
        "the restart lost the retained state"
    );
    wait_until("the house back on the shared broker", || {
        m.retained("pimesh/a-light")
            .is_some_and(|s| s.contains("\"state\":\"OFF\""))
            && m.retained(&status).as_deref() == Some("online")
            && m.retained("homeassistant/device/#").is_some()
    });
    // Commands work again, over TLS with the login.
    m.publish("pimesh/a-light/set", "ON", false);
    wait_until("alpha's light on", || a.pin(17).as_deref() == Some("1"));
    wait_until("its state on the shared broker", || {
        m.retained("pimesh/a-light")
            .is_some_and(|s| s.contains("\"state\":\"ON\""))
    });
}

#[test]
fn the_next_instance_speaks_for_the_house_when_the_speaker_dies() {
    let m = Mosquitto::start(false);
    let (mut a, mut b) = pair(&m);
    // The live instance with the lowest UUID speaks; kill it.
    let a_speaks = a.uuid() < b.uuid();
    let (speaker, other, other_relay) = if a_speaks {
        (&mut a, &mut b, "b-light")
    } else {
        (&mut b, &mut a, "a-light")
    };
    let dead_uuid = speaker.uuid();
    speaker.kill9();
    let status = format!("pimesh/instance/{dead_uuid}/status");
    wait_until(
        "the broker marks the dead instance offline (its will)",
        || m.retained(&status).as_deref() == Some("offline"),
    );
    // The survivor now speaks: a change it makes reaches the shared broker's retained state.
    let topic = format!("pimesh/{other_relay}");
    let other = &*other;
    m.publish(&format!("{topic}/set"), "ON", false);
    wait_until("the survivor's light on", || {
        other.pin(17).as_deref() == Some("1")
    });
    wait_until("its state retained on the shared broker", || {
        m.retained(&topic)
            .is_some_and(|s| s.contains("\"state\":\"ON\""))
    });
}

#[test]
fn two_shared_broker_clients_reusing_a_command_id_both_run() {
    let m = Mosquitto::start(false);
    let (a, _b) = pair(&m);
    let one = V5Client::connect(m.port, "pimesh/client/one");
    let two = V5Client::connect(m.port, "pimesh/client/two");
    // Both number their commands from 1, for the same relay: the second is not a repeat
    // of the first (the shared broker does not say who sent what; the response topic does).
    one.command("a-light", "{\"state\":\"ON\",\"id\":\"1\"}", b"one");
    let got = one.take(1);
    assert_eq!(got.len(), 1, "one answer for the first client");
    assert_eq!(got[0].0["state"]["state"], "ON", "{:?}", got[0].0);
    wait_until("alpha's light on", || a.pin(17).as_deref() == Some("1"));
    two.command("a-light", "{\"state\":\"OFF\",\"id\":\"1\"}", b"two");
    let got = two.take(1);
    assert_eq!(got.len(), 1, "one answer for the second client");
    assert_eq!(got[0].0["result"], "ok", "{:?}", got[0].0);
    assert_eq!(
        got[0].0["state"]["state"], "OFF",
        "ran, not answered from memory: {:?}",
        got[0].0
    );
    assert_eq!(a.pin(17).as_deref(), Some("0"));
}

#[test]
fn a_state_overwritten_on_the_shared_broker_is_put_back() {
    let m = Mosquitto::start(false);
    let a = start_node(
        "alpha",
        &format!("{}{}", node_config("a"), m.broker_table()),
        &[],
    );
    wait_until("alpha's light on the shared broker", || {
        m.retained("pimesh/a-light")
            .is_some_and(|s| s.contains("\"holder-name\":\"alpha\""))
    });
    // A client leaves a wrong state behind: the instance speaking for the house puts the
    // house's back.
    m.publish("pimesh/a-light", "{\"state\":\"ON\"}", true);
    wait_until("the house's state back on the shared broker", || {
        m.retained("pimesh/a-light").is_some_and(|s| {
            s.contains("\"holder-name\":\"alpha\"") && s.contains("\"state\":\"OFF\"")
        })
    });
    assert_eq!(
        a.pin(17).as_deref(),
        Some("0"),
        "a state message is not a command"
    );
}
