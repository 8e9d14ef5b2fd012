//! The public topics are the house and only the house: a `pimesh/#` (or `#`) subscriber on a
//! running mesh sees object states, commands, events and instance status while commands are
//! forwarded, `get` and `peers` are answered and a returning instance syncs, all of which
//! travel on internal `$pimesh/pimesh/…` topics that keep working.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use support::*;

/// A real `mosquitto_sub` printing the topic of every message it gets, killed on drop.
struct MosquittoSub {
    child: Child,
    topics: Arc<Mutex<Vec<String>>>,
}

impl MosquittoSub {
    fn start(port: u16, login: (&str, &str), filter: &str) -> MosquittoSub {
        let mut child = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["-u", login.0, "-P", login.1, "-t", filter, "-F", "%t"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto_sub");
        let out = child.stdout.take().expect("its stdout");
        let topics = Arc::new(Mutex::new(Vec::new()));
        let sink = topics.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        MosquittoSub { child, topics }
    }

    fn topics(&self) -> Vec<String> {
        self.topics.lock().unwrap().clone()
    }

    fn saw(&self, topic: &str) -> bool {
        self.topics.lock().unwrap().iter().any(|t| t == topic)
    }
}

impl Drop for MosquittoSub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The public topic grammar: `pimesh/<object>`, `pimesh/<object>/set|event|send`,
/// `pimesh/instance/<uuid>/status`.
fn is_public(topic: &str) -> bool {
    let id = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    let Some(rest) = topic.strip_prefix("pimesh/") else {
        return false;
    };
    match rest.split('/').collect::<Vec<_>>()[..] {
        ["instance", uuid, "status"] => uuid::Uuid::parse_str(uuid).is_ok(),
        [object] | [object, "set" | "event" | "send"] => id(object),
        _ => false,
    }
}

#[test]
fn a_base_subscriber_sees_only_public_topics_while_the_mesh_works_underneath() {
    let a = start_node("alpha", &node_config("a"), &[]);
    let mut b = start_node("beta", &node_config("b"), &["--peer", &a.addr()]);
    wait_until("alpha and beta see each other", || {
        a.peer_status("beta") == "online" && b.peer_status("alpha") == "online"
    });
    let out = a.cli(&["user", "add", "ha"]);
    assert!(out.status.success(), "user add: {}", text(&out.stderr));
    let password = text(&out.stdout).trim().to_string();
    let password_file = a.dir.join("ha-password");
    std::fs::write(&password_file, &password).unwrap();
    let login = ("ha", password.as_str());

    let public = MosquittoSub::start(a.port, login, "pimesh/#");
    let everything = MosquittoSub::start(a.port, login, "#");
    let internal = MosquittoSub::start(a.port, login, "$pimesh/#");
    // What a member sees on alpha's broker: the traffic the others must not show.
    let mesh = Subscriber::new_as(a.port, "$pimesh/pimesh/mesh/#", member_login(&b.dir));
    wait_until("the subscribers have the retained states", || {
        public.saw("pimesh/a-light")
            && public.saw("pimesh/b-light")
            && everything.saw("pimesh/a-light")
    });

    // Commands, forwarded both ways.
    let set = b.cli(&["set", "a-light", "on"]);
    assert!(set.status.success(), "{}", text(&set.stderr));
    let port = a.port.to_string();
    let user_set = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port, "-u", "ha", "-P", &password])
        .args(["-q", "1", "-t", "pimesh/b-light/set", "-m", "ON"])
        .status()
        .unwrap();
    assert!(user_set.success(), "the user's command is taken");
    wait_until("beta's relay switched from alpha", || {
        b.pin(17).as_deref() == Some("1")
    });

    // `get` and `peers`, by the local CLI and by a user through `--via`.
    let via = a.addr();
    let pw = password_file.to_string_lossy().to_string();
    for args in [
        vec!["get"],
        vec!["peers"],
        vec!["get", "--via", &via, "--user", "ha", "--password-file", &pw],
        vec![
            "peers",
            "--via",
            &via,
            "--user",
            "ha",
            "--password-file",
            &pw,
        ],
    ] {
        let out = if args.contains(&"--via") {
            cli(&args)
        } else {
            a.cli(&args)
        };
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        let shown = text(&out.stdout);
        assert!(
            shown.contains("b-light") || shown.contains("beta"),
            "{args:?}: {shown}"
        );
    }

    // A sync: beta comes back and catches up with what changed while it was away.
    b.stop();
    wait_until("alpha sees beta gone", || a.peer_status("beta") != "online");
    assert!(a.cli(&["set", "a-fan", "on"]).status.success());
    b.restart();
    wait_until("beta synced the change it missed", || {
        b.state("a-fan") == "ON"
    });
    let mut internal_seen = Vec::new();
    wait_until("the internal traffic went through alpha's broker", || {
        internal_seen.extend(mesh.drain());
        ["/cmd ", "/sync-req ", "/beat ", "/updates "]
            .iter()
            .all(|kind| internal_seen.iter().any(|l| l.contains(kind)))
    });
    wait_until("the public subscribers saw the fan switched", || {
        public.saw("pimesh/a-fan")
            && everything
                .topics()
                .iter()
                .any(|t| t == "pimesh/b-light/set")
    });

    let public_topics = public.topics();
    let strays: Vec<_> = public_topics.iter().filter(|t| !is_public(t)).collect();
    assert!(
        strays.is_empty(),
        "pimesh/# saw internal topics: {strays:?}"
    );
    assert!(public_topics.iter().any(|t| t == "pimesh/b-light/set"));
    assert!(public_topics
        .iter()
        .any(|t| t.starts_with("pimesh/instance/")));
    let strays: Vec<_> = everything
        .topics()
        .into_iter()
        .filter(|t| !is_public(t) && !t.starts_with("homeassistant/"))
        .collect();
    assert!(strays.is_empty(), "# saw internal topics: {strays:?}");
    // Asking for `$pimesh/#` a user gets the answers to its own requests, and nothing of the
    // mesh, of the local tools, or of the local CLI's answers (which carried the whole house).
    let replies = internal.topics();
    assert!(
        replies
            .iter()
            .any(|t| t == "$pimesh/pimesh/client/user-ha/reply"),
        "{replies:?}"
    );
    assert!(
        replies
            .iter()
            .all(|t| t.starts_with("$pimesh/pimesh/client/user-ha/")),
        "a user read another's answers or internal topics: {replies:?}"
    );
}

#[test]
fn users_cannot_write_or_read_the_mesh_in_its_new_namespace() {
    let a = start_node("alpha", &node_config("a"), &[]);
    let out = a.cli(&["user", "add", "ha"]);
    assert!(out.status.success(), "user add: {}", text(&out.stderr));
    let password = text(&out.stdout).trim().to_string();
    let ua = a.uuid();
    let port = a.port.to_string();
    let v5 = |topic: &str, payload: &str| {
        let out = Command::new("mosquitto_pub")
            .args(["-V", "mqttv5", "-h", "127.0.0.1", "-p", &port])
            .args([
                "-u", "ha", "-P", &password, "-q", "1", "-t", topic, "-m", payload,
            ])
            .output()
            .unwrap();
        format!("{}{}", text(&out.stdout), text(&out.stderr)).to_lowercase()
    };
    let forward = r#"{"id":"x","object":"a-light","request":{"state":"ON"}}"#;
    for topic in [
        format!("$pimesh/pimesh/mesh/{ua}/cmd"),
        "$pimesh/pimesh/mesh/owner".to_string(),
        "$pimesh/pimesh/agent/admin".to_string(),
        "$pimesh/pimesh/client/cli/reply".to_string(),
    ] {
        let out = v5(&topic, forward);
        assert!(out.contains("not authori"), "{topic}: {out}");
    }
    // A subscription to the mesh is refused outright.
    let out = Command::new("mosquitto_sub")
        .args(["-V", "mqttv5", "-h", "127.0.0.1", "-p", &port])
        .args(["-u", "ha", "-P", &password, "-t", "$pimesh/pimesh/mesh/#"])
        .args(["-C", "1", "-W", "2"])
        .output()
        .unwrap();
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr)).to_lowercase();
    assert!(said.contains("denied"), "the SUBACK refuses it: {said}");
    assert_eq!(a.pin(17).as_deref(), Some("0"), "no forged forward ran");
}

#[test]
fn a_user_cannot_send_answers_to_another_users_tools() {
    let a = start_node("alpha", &node_config("a"), &[]);
    let mut passwords = Vec::new();
    for user in ["ha", "bob"] {
        let out = a.cli(&["user", "add", user]);
        assert!(out.status.success(), "user add: {}", text(&out.stderr));
        passwords.push(text(&out.stdout).trim().to_string());
    }
    let ha = ("ha".to_string(), passwords[0].clone());
    let bob = ("bob".to_string(), passwords[1].clone());
    let answers = Subscriber::new_as(a.port, "$pimesh/pimesh/client/user-ha/reply", ha.clone());
    // Bob names ha's answer topic: the command runs, its answer goes nowhere.
    let forged =
        r#"{"state":"ON","id":"from-bob","reply-to":"$pimesh/pimesh/client/user-ha/reply"}"#;
    publish_as(a.port, bob, "pimesh/a-light/set", forged.as_bytes(), false);
    wait_until("bob's command ran", || a.pin(17).as_deref() == Some("1"));
    // Then ha's own request on the same topic: its answer comes after any answer to bob's.
    let own = r#"{"state":"OFF","id":"from-ha","reply-to":"$pimesh/pimesh/client/user-ha/reply"}"#;
    publish_as(a.port, ha, "pimesh/a-light/set", own.as_bytes(), false);
    let got = answers.take(1);
    assert_eq!(got.len(), 1, "ha's own answer arrives");
    assert!(
        got[0].contains("from-ha"),
        "ha got bob's answer first: {got:?}"
    );
    let log = std::fs::read_to_string(a.dir.join("test-agent.log")).unwrap_or_default();
    assert!(log.contains("not answering on another user's answer topic"));
}
