//! Checks of the `[web]` table: the floor-plan page every instance serves.

use super::check::Source;
use super::raw::{RawWeb, RawWebRoom};
use super::{ConfigError, WebConfig, WebRoom};

/// First port tried when none is fixed: the usual alternative HTTP port.
pub const DEFAULT_BASE_PORT: u16 = 8080;
/// How long a login lasts when the file says nothing.
pub const DEFAULT_SESSION_HOURS: u32 = 12;
/// The longest login accepted: a month.
pub const MAX_SESSION_HOURS: u32 = 24 * 31;
/// Rooms a layout may name.
pub const MAX_ROOMS: usize = 256;

/// Checks the table and fills its defaults.
pub(super) fn table(
    src: &Source,
    raw: RawWeb,
    broker_ports: &[u16],
) -> Result<WebConfig, ConfigError> {
    let port = match raw.port {
        Some(p) if *p.get_ref() == 0 => {
            return Err(src.error(
                p.span(),
                "web port must be from 1 to 65535; leave it out to take the first free port from base-port",
            ))
        }
        Some(p) if broker_ports.contains(p.get_ref()) => {
            return Err(src.error(
                p.span(),
                format!("web port {} is also a broker port; give each its own", p.get_ref()),
            ))
        }
        other => other.map(|p| p.into_inner()),
    };
    let base_port = match raw.base_port {
        Some(p) if *p.get_ref() == 0 => {
            return Err(src.error(p.span(), "web base-port must be from 1 to 65535"))
        }
        other => other.map(|p| p.into_inner()).unwrap_or(DEFAULT_BASE_PORT),
    };
    let session_hours = match raw.session_hours {
        Some(h) if *h.get_ref() == 0 || *h.get_ref() > MAX_SESSION_HOURS => {
            return Err(src.error(
                h.span(),
                format!(
                    "web session-hours must be from 1 to {MAX_SESSION_HOURS}, not {}",
                    h.get_ref()
                ),
            ))
        }
        other => other
            .map(|h| h.into_inner())
            .unwrap_or(DEFAULT_SESSION_HOURS),
    };
    if raw.room.len() > MAX_ROOMS {
        return Err(src.error_at_line(
            0,
            format!(
                "[[web.room]]: at most {MAX_ROOMS} rooms, not {}",
                raw.room.len()
            ),
        ));
    }
    let mut rooms: Vec<WebRoom> = Vec::new();
    for r in raw.room {
        let room = room(src, r)?;
        if rooms.iter().any(|o| o.room == room.room) {
            return Err(src.error_at_line(
                0,
                format!("[[web.room]] {:?} is laid out twice; keep one", room.room),
            ));
        }
        rooms.push(room);
    }
    Ok(WebConfig {
        enabled: raw.enabled.unwrap_or(true),
        port,
        base_port,
        tls: raw.tls.unwrap_or(true),
        session_hours,
        rooms,
    })
}

/// One `[[web.room]]`: a name as `pimesh move` takes it and a rectangle with some area.
fn room(src: &Source, raw: RawWebRoom) -> Result<WebRoom, ConfigError> {
    let name = raw.room.get_ref();
    if name.is_empty() || name.chars().count() > 64 {
        return Err(src.error(
            raw.room.span(),
            format!("[[web.room]] room must be 1 to 64 characters, not {name:?}"),
        ));
    }
    let numbers = [
        ("x", raw.x),
        ("y", raw.y),
        ("width", raw.width),
        ("height", raw.height),
    ];
    for (key, v) in &numbers {
        if !v.get_ref().is_finite() {
            return Err(src.error(
                v.span(),
                format!("[[web.room]] {name:?}: {key} must be a finite number"),
            ));
        }
    }
    for (key, v) in &numbers[2..] {
        if *v.get_ref() <= 0.0 {
            return Err(src.error(
                v.span(),
                format!(
                    "[[web.room]] {name:?}: {key} must be more than 0, not {}",
                    v.get_ref()
                ),
            ));
        }
    }
    let [x, y, w, h] = numbers.map(|(_, v)| *v.get_ref());
    Ok(WebRoom {
        room: raw.room.into_inner(),
        x,
        y,
        width: w,
        height: h,
    })
}

#[cfg(test)]
mod tests {
    use super::super::*;

    fn parsed(text: &str) -> Result<Config, String> {
        parse(text, Path::new("house.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_keys() {
        let c = parsed("").unwrap();
        assert_eq!(
            c.web,
            WebConfig {
                enabled: true,
                port: None,
                base_port: 8080,
                tls: true,
                session_hours: 12,
                rooms: vec![],
            }
        );
        let c = parsed(
            "[web]\nenabled = false\nport = 9000\ntls = false\nsession-hours = 2\n\
             [[web.room]]\nroom = \"hall\"\nx = 0\ny = 0\nwidth = 4\nheight = 2.5\n",
        )
        .unwrap();
        assert!(!c.web.enabled && !c.web.tls);
        assert_eq!((c.web.port, c.web.session_hours), (Some(9000), 2));
        assert_eq!(
            c.web.rooms,
            vec![WebRoom {
                room: "hall".into(),
                x: 0.0,
                y: 0.0,
                width: 4.0,
                height: 2.5
            }]
        );
    }

    #[test]
    fn refusals_name_the_line_and_the_fix() {
        let cases = [
            (
                "[web]\nport = 0\n",
                "house.toml:2: web port must be from 1 to 65535; leave it out to take the first free port from base-port",
            ),
            (
                "[broker]\nport = 1999\n[web]\nport = 1999\n",
                "house.toml:4: web port 1999 is also a broker port; give each its own",
            ),
            (
                "[web]\nsession-hours = 0\n",
                "house.toml:2: web session-hours must be from 1 to 744, not 0",
            ),
            (
                "[[web.room]]\nroom = \"hall\"\nx = 0\ny = 0\nwidth = 0\nheight = 2\n",
                "house.toml:5: [[web.room]] \"hall\": width must be more than 0, not 0",
            ),
            (
                "[[web.room]]\nroom = \"\"\nx = 0\ny = 0\nwidth = 1\nheight = 2\n",
                "house.toml:2: [[web.room]] room must be 1 to 64 characters, not \"\"",
            ),
            (
                "[[web.room]]\nroom = \"a\"\nx = 0\ny = 0\nwidth = 1\nheight = 2\n\
                 [[web.room]]\nroom = \"a\"\nx = 5\ny = 0\nwidth = 1\nheight = 2\n",
                "[[web.room]] \"a\" is laid out twice; keep one",
            ),
            ("[web]\nport = \"80\"\n", "invalid type"),
            ("[web]\nlisten = 1\n", "unknown field `listen`"),
            ("[[web.room]]\nroom = \"a\"\nx = 0\ny = 0\n", "missing field `width`"),
        ];
        for (text, want) in cases {
            let err = parsed(text).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }
}
