//! Checks of `[broker] external` and the keys that go with it: the shared broker the house
//! is served on (`crate::external`).

use super::check::Source;
use super::raw::RawBroker;
use super::ConfigError;
use std::path::PathBuf;

/// The shared broker (`[broker] external = "mqtt://HOST:PORT"` or `mqtts://`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalBroker {
    /// Host name or address.
    pub host: String,
    /// Port (1883 for `mqtt://`, 8883 for `mqtts://` when the URL names none).
    pub port: u16,
    /// `mqtts://`: TLS, checked against `ca_file` or the system's CAs.
    pub tls: bool,
    /// `external-user`, if the broker wants a login.
    pub user: Option<String>,
    /// `external-password-file`: the password, alone in a file only pimesh can read.
    pub password_file: Option<PathBuf>,
    /// `external-ca-file`: the CA the broker's certificate must come from (`mqtts://` only).
    pub ca_file: Option<PathBuf>,
}

/// Checks the external broker keys of `[broker]`; none when `external` is absent (then
/// the other `external-*` keys are refused: they would be silently unused).
pub(super) fn table(src: &Source, raw: &RawBroker) -> Result<Option<ExternalBroker>, ConfigError> {
    let Some(url) = &raw.external else {
        for (key, set) in [
            (
                "external-user",
                raw.external_user.as_ref().map(|k| k.span()),
            ),
            (
                "external-password-file",
                raw.external_password_file.as_ref().map(|k| k.span()),
            ),
            (
                "external-ca-file",
                raw.external_ca_file.as_ref().map(|k| k.span()),
            ),
        ] {
            if let Some(span) = set {
                return Err(src.error(
                    span,
                    format!("broker {key} is only used with broker external = \"mqtt://HOST:PORT\"; set external or remove {key}"),
                ));
            }
        }
        return Ok(None);
    };
    let (tls, host, port) = parse_url(url.get_ref()).map_err(|why| {
        src.error(
            url.span(),
            format!("broker external {:?} {why}", url.get_ref()),
        )
    })?;
    if let (false, Some(ca)) = (tls, &raw.external_ca_file) {
        return Err(src.error(
            ca.span(),
            "broker external-ca-file is only used with an mqtts:// broker; use mqtts:// or remove it",
        ));
    }
    let user = match &raw.external_user {
        Some(u) if u.get_ref().is_empty() => {
            return Err(src.error(
                u.span(),
                "broker external-user is empty; remove it for a broker without logins",
            ))
        }
        Some(u) => Some(u.get_ref().clone()),
        None => None,
    };
    let password_file = match &raw.external_password_file {
        Some(p) if user.is_none() => {
            return Err(src.error(
                p.span(),
                "broker external-password-file needs external-user",
            ))
        }
        Some(p) => Some(readable(src, p, "external-password-file")?),
        None => None,
    };
    let ca_file = match &raw.external_ca_file {
        Some(c) => Some(readable(src, c, "external-ca-file")?),
        None => None,
    };
    Ok(Some(ExternalBroker {
        host,
        port,
        tls,
        user,
        password_file,
        ca_file,
    }))
}

/// A file the agent must be able to read at start: checked now, so `check` and `run`
/// agree.
fn readable(src: &Source, path: &toml::Spanned<String>, key: &str) -> Result<PathBuf, ConfigError> {
    let p = PathBuf::from(path.get_ref());
    std::fs::File::open(&p)
        .map(|_| p.clone())
        .map_err(|e| src.error(path.span(), format!("broker {key} {}: {e}", p.display())))
}

/// `mqtt://HOST[:PORT]` or `mqtts://HOST[:PORT]` (an IPv6 address in brackets) → (tls,
/// host, port).
pub fn parse_url(url: &str) -> Result<(bool, String, u16), String> {
    let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtts://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("mqtt://") {
        (false, rest)
    } else {
        return Err("must start with mqtt:// or mqtts://".into());
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '@', '?', '#']) {
        return Err("must be only HOST:PORT after the scheme (no path, login or query; the login goes in external-user and external-password-file)".into());
    }
    let default = if tls { 8883 } else { 1883 };
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or("has an IPv6 address without its closing ']'")?;
        match after {
            "" => (host, None),
            p => (
                host,
                Some(
                    p.strip_prefix(':')
                        .ok_or("has text after the IPv6 address that is not :PORT")?,
                ),
            ),
        }
    } else {
        match rest.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        }
    };
    if host.is_empty() {
        return Err("names no host".into());
    }
    let port = match port {
        None => default,
        Some(p) => match p.parse::<u16>() {
            Ok(0) | Err(_) => {
                return Err(format!(
                    "has port {p:?}, which is not a port from 1 to 65535"
                ))
            }
            Ok(p) => p,
        },
    };
    Ok((tls, host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::parse_url;
    use std::path::Path;

    fn parsed(lines: &[&str]) -> Result<Option<super::ExternalBroker>, String> {
        super::super::parse(&lines.join("\n"), Path::new("house.toml"))
            .map(|c| c.broker.external)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_broker_table_takes_an_external_broker() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "secret\n").unwrap();
        let pw_line = format!("external-password-file = {:?}", pw.display().to_string());
        let ext = parsed(&[
            "[broker]",
            "external = \"mqtts://hub.lan\"",
            "external-user = \"pimesh\"",
            &pw_line,
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            (ext.host.as_str(), ext.port, ext.tls),
            ("hub.lan", 8883, true)
        );
        assert_eq!(ext.user.as_deref(), Some("pimesh"));
        assert_eq!(ext.password_file, Some(pw));
        assert_eq!(parsed(&["[broker]"]), Ok(None));
    }

    #[test]
    fn external_keys_are_refused_with_the_reason() {
        for (lines, says) in [
            (
                vec!["[broker]", "external-user = \"u\""],
                "house.toml:2: broker external-user is only used with broker external",
            ),
            (
                vec!["[broker]", "external = \"http://hub\""],
                "house.toml:2: broker external \"http://hub\" must start with mqtt:// or mqtts://",
            ),
            (
                vec![
                    "[broker]",
                    "external = \"mqtt://hub\"",
                    "external-ca-file = \"/etc/hostname\"",
                ],
                "house.toml:3: broker external-ca-file is only used with an mqtts:// broker",
            ),
            (
                vec![
                    "[broker]",
                    "external = \"mqtt://hub\"",
                    "external-user = \"u\"",
                    "external-password-file = \"/nonexistent/pw\"",
                ],
                "house.toml:4: broker external-password-file /nonexistent/pw: No such file",
            ),
            (
                vec![
                    "[broker]",
                    "external = \"mqtt://hub\"",
                    "external-password-file = \"/etc/hostname\"",
                ],
                "house.toml:3: broker external-password-file needs external-user",
            ),
        ] {
            let err = parsed(&lines).expect_err(says);
            assert!(err.starts_with(says), "{err}");
        }
    }

    #[test]
    fn urls_give_scheme_host_and_port() {
        assert_eq!(
            parse_url("mqtt://hub.lan:1884"),
            Ok((false, "hub.lan".into(), 1884))
        );
        assert_eq!(
            parse_url("mqtt://10.0.0.2"),
            Ok((false, "10.0.0.2".into(), 1883))
        );
        assert_eq!(parse_url("mqtts://hub/"), Ok((true, "hub".into(), 8883)));
        assert_eq!(
            parse_url("mqtts://[::1]:8884"),
            Ok((true, "::1".into(), 8884))
        );
        assert_eq!(
            parse_url("mqtt://[fd00::2]"),
            Ok((false, "fd00::2".into(), 1883))
        );
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        for (url, says) in [
            ("tcp://hub:1883", "mqtt://"),
            ("mqtt://", "no host"),
            ("mqtt://:1883", "no host"),
            ("mqtt://hub:0", "not a port"),
            ("mqtt://hub:99999", "not a port"),
            ("mqtt://user:pw@hub", "no path, login"),
            ("mqtt://hub/topic", "no path"),
            ("mqtt://[::1", "closing"),
        ] {
            let err = parse_url(url).expect_err(url);
            assert!(err.contains(says), "{url}: {err}");
        }
    }
}
