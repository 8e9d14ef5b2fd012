//! The rules themselves: each a short scenario on a raw client that passes (with a note, or
//! a measurement to hold against Mosquitto's) or fails with what went wrong, and the list of
//! them all with how each is compared.

use super::{check, measured, rule, Ctx, Spec};
use crate::support::raw::{Client, Conn, Msg, Out, ARRIVE, QUIET, R, V};
use std::time::{Duration, Instant};

/// Every rule, by name, and how its outcome is compared with Mosquitto's.
pub(super) fn all() -> Vec<Spec> {
    vec![
        rule("keep-alive 0 is accepted", keep_alive_zero),
        rule("keep-alive enforced at 1.5x", keep_alive_enforced),
        rule("pings keep a connection open", pings_keep_it_open),
        rule("empty client id gets one", empty_client_id),
        rule(
            "empty id without clean session refused (3.1.1)",
            empty_id_persistent,
        ),
        rule(
            "retained kept by an empty plain publish",
            retained_survives_empty_publish,
        ),
        rule(
            "retained deleted by an empty retained publish",
            retained_deleted,
        ),
        rule(
            "retained flag: set when stored, clear when live",
            retained_flag,
        ),
        rule("will on abnormal disconnect", will_on_abnormal),
        rule("no will on DISCONNECT", no_will_on_disconnect),
        rule("will on DISCONNECT 0x04 (MQTT 5)", will_on_request),
        rule(
            "no will on DISCONNECT 0x00 without properties (MQTT 5)",
            no_will_on_short_disconnect,
        ),
        rule("$-topics not matched by # or +", dollar_topics),
        measured("overlapping subscriptions", overlapping),
        measured(
            "overlapping subscriptions and a retained message",
            overlapping_retained,
        ),
        rule("unsubscribe", unsubscribe),
        rule("session takeover by the same client id", takeover),
        rule("QoS 0 delivery", |c| qos_delivery(c, 0)),
        rule("QoS 1 delivery", |c| qos_delivery(c, 1)),
        rule("QoS 2 delivery", |c| qos_delivery(c, 2)),
        rule(
            "QoS is the minimum of publish and subscription",
            qos_downgrade,
        ),
        rule("delivered across protocol versions", cross_version),
        rule("$SYS/broker/version", sys_version),
    ]
}

fn keep_alive_zero(c: &Ctx) -> R<String> {
    let mut cl = c.connect_with(
        c.v,
        &Conn {
            keep_alive: 0,
            ..Conn::id(&c.id("ka0"))
        },
    )?;
    check(!cl.closed_within(Duration::from_secs(2)), || {
        "closed a silent client with keep-alive 0".into()
    })?;
    cl.ping()?;
    Ok(String::new())
}

fn keep_alive_enforced(c: &Ctx) -> R<String> {
    let start = Instant::now();
    let mut cl = c.connect_with(
        c.v,
        &Conn {
            keep_alive: 1,
            ..Conn::id(&c.id("ka1"))
        },
    )?;
    check(cl.closed_within(Duration::from_secs(4)), || {
        "a client silent for 4 s with keep-alive 1 s is still connected".into()
    })?;
    let after = start.elapsed();
    check(after >= Duration::from_millis(1000), || {
        format!("closed after {after:?}, before its keep-alive of 1 s")
    })?;
    Ok(format!("closed after {} ms", after.as_millis()))
}

fn pings_keep_it_open(c: &Ctx) -> R<String> {
    let mut cl = c.connect_with(
        c.v,
        &Conn {
            keep_alive: 1,
            ..Conn::id(&c.id("ka-ping"))
        },
    )?;
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(600));
        cl.ping()?;
    }
    Ok(String::new())
}

fn empty_client_id(c: &Ctx) -> R<String> {
    let (mut a, assigned) = Client::connect(c.port, c.v, &Conn::id(""))?;
    if c.v == V::V5 {
        check(assigned.as_ref().is_some_and(|s| !s.is_empty()), || {
            "no assigned client identifier in CONNACK".into()
        })?;
    }
    // A second one gets another id: it does not take over the first.
    let (mut b, other) = Client::connect(c.port, c.v, &Conn::id(""))?;
    check(c.v == V::V4 || assigned != other, || {
        format!("both got {assigned:?}")
    })?;
    a.ping()?;
    b.ping()?;
    Ok(assigned.unwrap_or_default())
}

fn empty_id_persistent(c: &Ctx) -> R<String> {
    if c.v == V::V5 {
        return Ok("MQTT 5 assigns one".into());
    }
    let conn = Conn {
        clean: false,
        ..Conn::id("")
    };
    match Client::connect(c.port, c.v, &conn) {
        Ok(_) => Err("accepted an empty client id with clean session 0".into()),
        Err(_) => Ok(String::new()),
    }
}

fn retained_survives_empty_publish(c: &Ctx) -> R<String> {
    let t = c.topic("kept");
    let mut p = c.connect("pub")?;
    p.publish(&t, b"r1", 1, true)?;
    p.publish(&t, b"", 1, false)?;
    let mut s = c.connect("sub")?;
    s.subscribe(&[(&t, 1)])?;
    let m = s.message(ARRIVE)?;
    check(m.as_ref().is_some_and(|m| m.payload == b"r1"), || {
        format!("a new subscriber got {m:?} instead of the retained r1 (MQTT-3.3.1-12)")
    })?;
    Ok(String::new())
}

fn retained_deleted(c: &Ctx) -> R<String> {
    let t = c.topic("deleted");
    let mut p = c.connect("pub")?;
    p.publish(&t, b"r1", 1, true)?;
    p.publish(&t, b"", 1, true)?;
    let mut s = c.connect("sub")?;
    s.subscribe(&[(&t, 1)])?;
    let got = s.messages(QUIET)?;
    check(got.is_empty(), || format!("still retained: {got:?}"))?;
    Ok(String::new())
}

fn retained_flag(c: &Ctx) -> R<String> {
    let t = c.topic("flag");
    let mut p = c.connect("pub")?;
    p.publish(&t, b"stored", 1, true)?;
    let mut s = c.connect("sub")?;
    s.subscribe(&[(&t, 1)])?;
    let m = s.message(ARRIVE)?.ok_or("no retained message")?;
    check(m.retain, || {
        "retained message delivered without retain".into()
    })?;
    p.publish(&t, b"live", 1, true)?;
    let m = s.message(ARRIVE)?.ok_or("no live message")?;
    check(m.payload == b"live" && !m.retain, || {
        format!("live message {m:?}: retain must be 0 (MQTT-3.3.1-9)")
    })?;
    Ok(String::new())
}

fn will_client(c: &Ctx, t: &str) -> R<Client> {
    c.connect_with(
        c.v,
        &Conn {
            will: Some((t, b"gone", false)),
            ..Conn::id(&c.id("will"))
        },
    )
}

fn will_on_abnormal(c: &Ctx) -> R<String> {
    let t = c.topic("will");
    let mut s = c.connect("watch")?;
    s.subscribe(&[(&t, 1)])?;
    will_client(c, &t)?.vanish();
    let m = s.message(ARRIVE)?;
    check(m.as_ref().is_some_and(|m| m.payload == b"gone"), || {
        format!("got {m:?} instead of the will")
    })?;
    Ok(String::new())
}

fn no_will_on_disconnect(c: &Ctx) -> R<String> {
    let t = c.topic("will");
    let mut s = c.connect("watch")?;
    s.subscribe(&[(&t, 1)])?;
    will_client(c, &t)?.disconnect()?;
    let got = s.messages(QUIET)?;
    check(got.is_empty(), || {
        format!("will published after DISCONNECT: {got:?}")
    })?;
    Ok(String::new())
}

fn will_on_request(c: &Ctx) -> R<String> {
    if c.v == V::V4 {
        return Ok("MQTT 5 only".into());
    }
    let t = c.topic("will");
    let mut s = c.connect("watch")?;
    s.subscribe(&[(&t, 1)])?;
    // The client keeps its end open: the broker acts on the DISCONNECT, not on a closed socket.
    let mut w = will_client(c, &t)?;
    w.send(Out::DisconnectWithWill)?;
    let m = s.message(ARRIVE)?;
    check(m.as_ref().is_some_and(|m| m.payload == b"gone"), || {
        format!("got {m:?} instead of the will")
    })?;
    Ok(String::new())
}

fn no_will_on_short_disconnect(c: &Ctx) -> R<String> {
    if c.v == V::V4 {
        return Ok("MQTT 5 only".into());
    }
    let t = c.topic("will");
    let mut s = c.connect("watch")?;
    s.subscribe(&[(&t, 1)])?;
    let mut w = will_client(c, &t)?;
    // Reason code 0x00 and no property length: allowed when the remaining length is 1.
    w.send_raw(&[0xE0, 0x01, 0x00])?;
    check(w.closed_within(ARRIVE), || {
        "the connection stays open after DISCONNECT".into()
    })?;
    w.vanish();
    let got = s.messages(QUIET)?;
    check(got.is_empty(), || {
        format!("will published after DISCONNECT: {got:?}")
    })?;
    Ok(String::new())
}

fn dollar_topics(c: &Ctx) -> R<String> {
    let mut s = c.connect("all")?;
    s.subscribe(&[("#", 0), ("+/broker/#", 0), ("+/+/version", 0)])?;
    let got = s.messages(Duration::from_millis(1500))?;
    let dollar: Vec<&Msg> = got.iter().filter(|m| m.topic.starts_with('$')).collect();
    check(dollar.is_empty(), || {
        format!("# or + matched {:?}", dollar[0].topic)
    })?;
    Ok(String::new())
}

fn overlapping(c: &Ctx) -> R<String> {
    let t = c.topic("a");
    let mut s = c.connect("sub")?;
    s.subscribe(&[(&format!("{}/#", c.t), 0)])?;
    s.subscribe(&[(&t, 1)])?;
    let mut p = c.connect("pub")?;
    p.publish(&t, b"x", 1, false)?;
    let got = s.messages(QUIET)?;
    check(!got.is_empty(), || "nothing delivered".into())?;
    check(got.iter().all(|m| m.payload == b"x"), || format!("{got:?}"))?;
    let top = got.iter().map(|m| m.qos).max().unwrap_or(0);
    check(top == 1, || {
        format!("delivered at QoS {top}, not the highest of the matching subscriptions (1)")
    })?;
    Ok(format!(
        "{} cop{}",
        got.len(),
        if got.len() == 1 { "y" } else { "ies" }
    ))
}

/// Each subscription replays the retained message, whatever other filter matches it too;
/// what follows live is counted as in [`overlapping`].
fn overlapping_retained(c: &Ctx) -> R<String> {
    let t = c.topic("r");
    let mut p = c.connect("pub")?;
    p.publish(&t, b"kept", 1, true)?;
    let mut s = c.connect("sub")?;
    s.subscribe(&[(&format!("{}/#", c.t), 0)])?;
    s.subscribe(&[(&t, 1)])?;
    p.publish(&t, b"live", 1, false)?;
    let got = s.messages(QUIET)?;
    let retained = got.iter().filter(|m| m.retain).count();
    let live = got
        .iter()
        .filter(|m| !m.retain && m.payload == b"live")
        .count();
    check(retained + live == got.len(), || format!("{got:?}"))?;
    Ok(format!("{retained} retained, {live} live"))
}

fn unsubscribe(c: &Ctx) -> R<String> {
    let t = c.topic("u");
    let mut s = c.connect("sub")?;
    s.subscribe(&[(&t, 1)])?;
    s.unsubscribe(&t)?;
    let mut p = c.connect("pub")?;
    p.publish(&t, b"x", 1, false)?;
    let got = s.messages(QUIET)?;
    check(got.is_empty(), || {
        format!("delivered after UNSUBACK: {got:?}")
    })?;
    Ok(String::new())
}

fn takeover(c: &Ctx) -> R<String> {
    let t = c.topic("t");
    let mut first = c.connect("same")?;
    first.subscribe(&[(&t, 1)])?;
    let mut second = c.connect("same")?;
    check(first.closed_within(ARRIVE), || {
        "the first connection is still open".into()
    })?;
    second.subscribe(&[(&t, 1)])?;
    c.connect("pub")?.publish(&t, b"x", 1, false)?;
    let m = second.message(ARRIVE)?;
    check(m.is_some(), || "the new connection gets nothing".into())?;
    Ok(String::new())
}

fn qos_delivery(c: &Ctx, qos: u8) -> R<String> {
    let t = c.topic("q");
    let mut s = c.connect("sub")?;
    let granted = s.subscribe(&[(&t, qos)])?;
    check(granted == [Some(qos)], || {
        format!("asked QoS {qos}, granted {granted:?}")
    })?;
    let mut p = c.connect("pub")?;
    p.publish(&t, b"x", qos, false)?;
    let m = s.message(ARRIVE)?.ok_or("nothing delivered")?;
    check(m.qos == qos, || format!("delivered at QoS {}", m.qos))?;
    let again = s.messages(QUIET)?;
    check(again.is_empty(), || format!("delivered again: {again:?}"))?;
    Ok(String::new())
}

fn qos_downgrade(c: &Ctx) -> R<String> {
    let t = c.topic("down");
    let mut s = c.connect("sub")?;
    s.subscribe(&[(&t, 1)])?;
    let mut p = c.connect("pub")?;
    p.publish(&t, b"q0", 0, false)?;
    let m = s.message(ARRIVE)?.ok_or("nothing delivered")?;
    check(m.qos == 0, || {
        format!(
            "a QoS 0 publish reached a QoS 1 subscriber at QoS {}",
            m.qos
        )
    })?;
    p.publish(&t, b"q0r", 0, true)?;
    s.message(ARRIVE)?;
    let mut late = c.connect("late")?;
    late.subscribe(&[(&t, 1)])?;
    let m = late.message(ARRIVE)?.ok_or("no retained message")?;
    check(m.qos == 0, || {
        format!(
            "a retained QoS 0 message reached a QoS 1 subscriber at QoS {}",
            m.qos
        )
    })?;
    Ok(String::new())
}

fn cross_version(c: &Ctx) -> R<String> {
    let t = c.topic("x");
    let mut s = c.connect("sub")?;
    s.subscribe(&[(&t, 1)])?;
    let mut p = c.connect_with(c.v.other(), &Conn::id(&c.id("pub-other")))?;
    p.publish(&t, b"across", 1, false)?;
    let m = s.message(ARRIVE)?;
    check(m.as_ref().is_some_and(|m| m.payload == b"across"), || {
        format!("got {m:?}")
    })?;
    Ok(String::new())
}

fn sys_version(c: &Ctx) -> R<String> {
    let mut s = c.connect("sys")?;
    s.subscribe(&[("$SYS/broker/version", 0)])?;
    let m = s.message(ARRIVE)?.ok_or("nothing on $SYS/broker/version")?;
    check(m.retain, || "not retained".into())?;
    Ok(String::from_utf8_lossy(&m.payload).into_owned())
}
