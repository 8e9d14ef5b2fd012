//! The public interface's parsing, topics and answers.
use super::*;

#[test]
fn plain_words_in_any_case() {
    assert_eq!(parse_set(b"ON").unwrap().state, Some(Switch::On));
    assert_eq!(parse_set(b" off\n").unwrap().state, Some(Switch::Off));
    assert_eq!(parse_set(b"Toggle").unwrap().state, Some(Switch::Toggle));
}

#[test]
fn json_moves_and_switches() {
    let r = parse_set(br#"{"room":"hall","x":3,"y":1}"#).unwrap();
    assert_eq!(r.room.as_deref(), Some("hall"));
    assert_eq!((r.x, r.y), (Some(3.0), Some(1.0)));
    let r = parse_set(br#"{"state":"ON","id":"c1","reply-to":"me/r"}"#).unwrap();
    assert_eq!(r.state, Some(Switch::On));
    assert_eq!(r.reply_to.as_deref(), Some("me/r"));
}

#[test]
fn malformed_payloads_say_what_is_wrong() {
    assert_eq!(parse_set(&[0xff, 0xfe]).unwrap_err(), PayloadError::NotText);
    assert_eq!(parse_set(b"  ").unwrap_err(), PayloadError::Empty);
    assert_eq!(
        parse_set(b"maybe").unwrap_err().to_string(),
        "payload \"maybe\" is not ON, OFF, TOGGLE or a JSON object"
    );
    assert_eq!(
        parse_set(br#"{"colour":"red"}"#).unwrap_err().to_string(),
        "payload is not a valid command: unknown field `colour`, expected one of `state`, `room`, `x`, `y`, `id`, `reply-to` at line 1 column 9"
    );
    assert_eq!(
        parse_set(br#"{"state":"DIM"}"#).unwrap_err().to_string(),
        "payload is not a valid command: unknown variant `DIM`, expected one of `ON`, `on`, `OFF`, `off`, `TOGGLE`, `toggle` at line 1 column 14"
    );
    assert_eq!(parse_set(b"{}").unwrap_err(), PayloadError::NothingToDo);
    assert!(matches!(
        parse_set(br#"{"room":""}"#).unwrap_err(),
        PayloadError::BadRoom(_)
    ));
    assert!(parse_set(br#"{"x":"#).is_err());
}

#[test]
fn ids_and_reply_topics_are_bounded() {
    let id = "i".repeat(MAX_ID_BYTES);
    let ok = format!(r#"{{"state":"ON","id":"{id}","reply-to":"r"}}"#);
    assert!(parse_set(ok.as_bytes()).is_ok());
    let long = format!(r#"{{"state":"ON","id":"{id}x","reply-to":"r"}}"#);
    assert_eq!(
        parse_set(long.as_bytes()).unwrap_err().to_string(),
        "command id is 129 bytes; at most 128 are allowed"
    );
    // The answer still reaches the sender, without echoing the id.
    assert_eq!(
        salvage_reply_address(long.as_bytes()),
        (None, Some("r".into()))
    );
    let topic = "t".repeat(MAX_ID_BYTES + 1);
    let long = format!(r#"{{"state":"ON","reply-to":"{topic}"}}"#);
    assert_eq!(
        parse_set(long.as_bytes()).unwrap_err().to_string(),
        "reply-to is 129 bytes; at most 128 are allowed"
    );
    let huge = format!(r#"{{"state":"ON","id":"{}"}}"#, "i".repeat(2 << 20));
    assert_eq!(
        parse_set(huge.as_bytes()).unwrap_err(),
        PayloadError::TooLarge(huge.len())
    );
}

#[test]
fn numbers_out_of_range_are_rejected_and_still_answered() {
    for bad in [
        r#"{"x":1e400,"id":"c1","reply-to":"me/r"}"#,
        r#"{"y":-1e400,"id":"c1","reply-to":"me/r"}"#,
        r#"{"x":NaN,"id":"c1","reply-to":"me/r"}"#,
        r#"{"x":Infinity,"id":"c1","reply-to":"me/r"}"#,
    ] {
        assert!(parse_set(bad.as_bytes()).is_err(), "{bad}");
        let salvaged = salvage_reply_address(bad.as_bytes());
        if bad.contains("e400") {
            assert_eq!(salvaged, (Some("c1".into()), Some("me/r".into())), "{bad}");
        }
    }
    let req = SetRequest {
        x: Some(f64::NAN),
        ..Default::default()
    };
    assert_eq!(check(&req).unwrap_err(), PayloadError::BadNumber("x"));
    let req = SetRequest {
        y: Some(f64::INFINITY),
        ..Default::default()
    };
    assert_eq!(check(&req).unwrap_err(), PayloadError::BadNumber("y"));
}

#[test]
fn routes() {
    assert_eq!(
        route("pimesh", "pimesh/relay-1/set"),
        Some(Route::Set("relay-1".into()))
    );
    assert_eq!(route("pimesh", &get_topic("pimesh")), Some(Route::Get));
    assert_eq!(
        route("pimesh", "$pimesh/pimesh/agent/peers"),
        Some(Route::Peers)
    );
    // The old public request topics mean nothing any more.
    assert_eq!(route("pimesh", "pimesh/agent/get"), None);
    assert_eq!(route("pimesh", "$pimesh/other/agent/get"), None);
    assert_eq!(
        route("pimesh", "pimesh/relay-1"),
        Some(Route::State("relay-1".into()))
    );
    let u = Uuid::new_v4();
    assert_eq!(
        route("pimesh", &status_topic("pimesh", u)),
        Some(Route::Status(u))
    );
    assert_eq!(route("pimesh", "pimesh/instance/nope/status"), None);
    assert_eq!(route("pimesh", "pimesh/"), None);
    assert_eq!(route("pimesh", "other/relay-1/set"), None);
    assert_eq!(route("pimesh", "pimesh//set"), None);
    assert_eq!(
        route("pimesh", "pimesh/arduino/send"),
        Some(Route::Send("arduino".into()))
    );
    assert_eq!(route("pimesh", "pimesh/arduino/event"), None);
}
