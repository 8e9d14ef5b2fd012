//! The line protocol of a serial device, without the tty: splitting bytes into lines, turning
//! a channel command into bytes, and reading each reply line.
//!
//! A reply is matched exactly against the channel's `on-reply` / `off-reply` (after the line
//! end is cut), because a looser pattern could report a relay on that is off. While a command
//! waits, its expected reply answers it `ok`; the same channel's opposite reply answers it
//! `failed` (the device said it did not switch) and still updates the state; a line starting
//! with `fail-prefix` answers it `failed`. Any other line that equals some channel's reply is
//! an unsolicited report (a button on the device) and updates that channel's state.

use crate::config::{SerialChannel, SerialConfig};
use crate::model::ObjectId;

/// Longest line kept; a device that never sends a newline must not grow memory without bound.
pub const MAX_LINE: usize = 1024;

/// Collects bytes and hands out complete lines.
#[derive(Debug, Default)]
pub struct LineBuffer {
    /// Bytes of the line being received.
    partial: Vec<u8>,
    /// True while dropping the rest of an over-long line.
    skipping: bool,
}

impl LineBuffer {
    /// Adds received bytes; returns the lines they complete, without `\n` or `\r\n`. Invalid
    /// UTF-8 is replaced rather than refused, so one bad byte cannot hide a reply.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                if !self.skipping {
                    let line = self.partial.strip_suffix(b"\r").unwrap_or(&self.partial);
                    lines.push(String::from_utf8_lossy(line).into_owned());
                }
                self.partial.clear();
                self.skipping = false;
            } else if self.partial.len() >= MAX_LINE {
                if !self.skipping {
                    tracing::warn!(max = MAX_LINE, "serial line too long; dropping it");
                }
                self.skipping = true;
                self.partial.clear();
            } else if !self.skipping {
                self.partial.push(b);
            }
        }
        lines
    }

    /// Forgets a partial line, after the device went away.
    pub fn clear(&mut self) {
        self.partial.clear();
        self.skipping = false;
    }
}

/// What to do for a channel command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineCommand {
    /// The bytes to write.
    pub bytes: Vec<u8>,
    /// True if a reply line must confirm it; false if writing it is success.
    pub awaits_reply: bool,
}

/// What one received line means.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LineResult {
    /// The answer to the waiting command, if this line answers it: `Ok(state)` or
    /// `Err(reason)`.
    pub answer: Option<Result<bool, String>>,
    /// A channel whose state this line reports.
    pub state: Option<(ObjectId, bool)>,
}

/// A command waiting for its reply.
#[derive(Clone, Copy, Debug)]
struct Expect {
    /// Index of the channel.
    channel: usize,
    /// The state asked for.
    on: bool,
}

/// The line protocol of one device.
#[derive(Clone, Debug)]
pub struct LineProtocol {
    /// The device's channels.
    channels: Vec<SerialChannel>,
    /// Replies starting with this fail the waiting command.
    fail_prefix: Option<String>,
    /// The command waiting for its reply, if any.
    waiting: Option<Expect>,
}

impl LineProtocol {
    /// The protocol of a configured device.
    pub fn new(config: &SerialConfig) -> LineProtocol {
        LineProtocol {
            channels: config.channels.clone(),
            fail_prefix: config.fail_prefix.clone(),
            waiting: None,
        }
    }

    /// The bytes that switch `channel`; `None` if the device has no such channel. When the
    /// command awaits a reply, it becomes the waiting command until [`LineProtocol::line`]
    /// answers it or [`LineProtocol::timed_out`] gives up.
    pub fn command(&mut self, channel: &ObjectId, on: bool) -> Option<LineCommand> {
        let index = self.channels.iter().position(|c| &c.id == channel)?;
        let c = &self.channels[index];
        let (text, reply) = if on {
            (&c.on, &c.on_reply)
        } else {
            (&c.off, &c.off_reply)
        };
        let awaits_reply = reply.is_some();
        if awaits_reply {
            self.waiting = Some(Expect { channel: index, on });
        }
        Some(LineCommand {
            bytes: text.as_bytes().to_vec(),
            awaits_reply,
        })
    }

    /// The waiting command got no reply in time; the next reply is unsolicited again.
    pub fn timed_out(&mut self) {
        self.waiting = None;
    }

    /// Reads one received line.
    pub fn line(&mut self, line: &str) -> LineResult {
        let mut result = LineResult::default();
        if let Some(expect) = self.waiting {
            let c = &self.channels[expect.channel];
            let (wanted, other) = if expect.on {
                (&c.on_reply, &c.off_reply)
            } else {
                (&c.off_reply, &c.on_reply)
            };
            if wanted.as_deref() == Some(line) {
                result.answer = Some(Ok(expect.on));
                result.state = Some((c.id.clone(), expect.on));
            } else if other.as_deref() == Some(line) {
                let state = if expect.on { "off" } else { "on" };
                result.answer = Some(Err(format!(
                    "the device answered {line:?}: {} stayed {state}",
                    c.id
                )));
                result.state = Some((c.id.clone(), !expect.on));
            } else if self
                .fail_prefix
                .as_deref()
                .is_some_and(|p| line.starts_with(p))
            {
                result.answer = Some(Err(format!("the device answered {line:?}")));
            }
            if result.answer.is_some() {
                self.waiting = None;
                return result;
            }
        }
        result.state = self.channels.iter().find_map(|c| {
            if c.on_reply.as_deref() == Some(line) {
                Some((c.id.clone(), true))
            } else if c.off_reply.as_deref() == Some(line) {
                Some((c.id.clone(), false))
            } else {
                None
            }
        });
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DataBits, Parity, Protocol, StopBits};

    fn id(s: &str) -> ObjectId {
        ObjectId::new(s).unwrap()
    }

    fn channel(n: u8, replies: bool) -> SerialChannel {
        SerialChannel {
            id: id(&format!("r{n}")),
            on: format!("R{n}=1\n"),
            off: format!("R{n}=0\n"),
            on_reply: replies.then(|| format!("OK R{n}=1")),
            off_reply: replies.then(|| format!("OK R{n}=0")),
            room: "r".into(),
            name: "n".into(),
            x: 0.0,
            y: 0.0,
        }
    }

    fn protocol() -> LineProtocol {
        LineProtocol::new(&SerialConfig {
            id: id("arduino"),
            path: "/dev/ttyUSB0".into(),
            baud: 9600,
            data_bits: DataBits::Eight,
            parity: Parity::None,
            stop_bits: StopBits::One,
            protocol: Protocol::Line,
            timeout_ms: 1000,
            fail_prefix: Some("ERR".into()),
            channels: vec![channel(1, true), channel(2, true), channel(3, false)],
            room: "r".into(),
            name: "n".into(),
            x: 0.0,
            y: 0.0,
        })
    }

    #[test]
    fn bytes_become_lines_across_reads_with_either_line_end() {
        let mut b = LineBuffer::default();
        assert!(b.push(b"OK R").is_empty());
        assert_eq!(b.push(b"1=1\r\nOK R2=0\nhal"), ["OK R1=1", "OK R2=0"]);
        assert_eq!(b.push(b"f\n\n"), ["half", ""]);
        assert_eq!(b.push(b"\xffok\n"), ["\u{fffd}ok"]);
        b.push(b"torn");
        b.clear();
        assert_eq!(b.push(b"x\n"), ["x"]);
    }

    #[test]
    fn an_endless_line_is_dropped_and_the_next_one_is_read() {
        let mut b = LineBuffer::default();
        assert!(b.push(&vec![b'a'; MAX_LINE * 3]).is_empty());
        assert_eq!(b.push(b"aaa\nOK\n"), ["OK"]);
    }

    #[test]
    fn the_expected_reply_answers_the_command_and_sets_the_state() {
        let mut p = protocol();
        let cmd = p.command(&id("r1"), true).unwrap();
        assert_eq!(
            cmd,
            LineCommand {
                bytes: b"R1=1\n".to_vec(),
                awaits_reply: true
            }
        );
        assert_eq!(p.line("noise"), LineResult::default());
        let r = p.line("OK R1=1");
        assert_eq!(r.answer, Some(Ok(true)));
        assert_eq!(r.state, Some((id("r1"), true)));
        assert_eq!(p.line("OK R1=1").answer, None, "only one answer");
    }

    #[test]
    fn the_opposite_reply_or_the_fail_prefix_fails_the_command() {
        let mut p = protocol();
        p.command(&id("r1"), true);
        let r = p.line("OK R1=0");
        assert_eq!(
            r.answer,
            Some(Err("the device answered \"OK R1=0\": r1 stayed off".into()))
        );
        assert_eq!(r.state, Some((id("r1"), false)));

        p.command(&id("r2"), false);
        let r = p.line("ERR relay 2 jammed");
        assert_eq!(
            r.answer,
            Some(Err("the device answered \"ERR relay 2 jammed\"".into()))
        );
        assert_eq!(r.state, None);
    }

    #[test]
    fn other_replies_are_unsolicited_reports() {
        let mut p = protocol();
        p.command(&id("r1"), true);
        let r = p.line("OK R2=1");
        assert_eq!((r.answer, r.state), (None, Some((id("r2"), true))));
        p.timed_out();
        assert_eq!(
            p.line("OK R1=1").answer,
            None,
            "no command waits after a timeout"
        );
        assert_eq!(p.line("ERR").answer, None);
    }

    #[test]
    fn a_channel_without_replies_needs_none_and_unknown_channels_are_refused() {
        let mut p = protocol();
        let cmd = p.command(&id("r3"), false).unwrap();
        assert_eq!(
            cmd,
            LineCommand {
                bytes: b"R3=0\n".to_vec(),
                awaits_reply: false
            }
        );
        assert_eq!(p.line("OK R1=1").answer, None, "nothing waits");
        assert_eq!(p.command(&id("r9"), true), None);
    }
}
