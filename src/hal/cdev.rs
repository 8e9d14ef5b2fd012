//! The Linux GPIO character device backend (`/dev/gpiochip*`), through the gpiocdev crate.
//!
//! This is the long-term path for real hardware: rppal has been in maintenance-only mode
//! since July 2025, while the character device is the kernel's supported GPIO interface on
//! every Linux board. Lines are found by *name* (`GPIO17` on a Pi's header chip, or
//! `<line-prefix><N>` in general) across every chip, never by chip number: the Pi 5's header
//! chip moved from gpiochip4 to gpiochip0 in 2024 and broke every tool that hard-coded it.
//! A name found on two chips is refused rather than guessed, because the wrong line could be
//! a relay. Input edges come from the kernel's edge events on the line request: a thread per
//! input sleeps in `poll(2)` on the request and wakes only for an edge (or, every
//! [`STOP_CHECK`], to see whether the pin was released).
//!
//! Unlike rppal, the kernel may reset an output when the agent exits, so a relay can drop for
//! the moment of a restart; claiming an output without a level keeps the level it has now.

use super::{EdgeCallback, Gpio, HalError, InputPin, OutputPin, Pull};
use gpiocdev::line::{Bias, EdgeDetection, EdgeKind, Offset, Value};
use gpiocdev::request::Request;
use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// The line-name prefix of a Raspberry Pi's header chip, and the default `line-prefix`.
pub const DEFAULT_LINE_PREFIX: &str = "GPIO";
/// Longest an input thread sleeps before checking whether its pin was released.
const STOP_CHECK: Duration = Duration::from_millis(250);
/// The consumer label the kernel shows for our lines (`gpioinfo`, `pimesh doctor`).
const CONSUMER: &str = "pimesh";
/// errno values that mean "not allowed", so the error can point at the `gpio` group.
const EACCES: i32 = 13;
/// errno for "operation not permitted".
const EPERM: i32 = 1;
/// errno the kernel returns when another request already holds the line.
const EBUSY: i32 = 16;

/// One named line of one chip, as the kernel lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineEntry {
    /// The chip's device file, e.g. `/dev/gpiochip0`.
    pub chip: PathBuf,
    /// The line's offset on that chip.
    pub offset: u32,
    /// The line's name, e.g. `GPIO17`; lines without a name are not listed.
    pub name: String,
}

/// Why a line name could not be resolved to exactly one line.
#[derive(Debug, PartialEq, Eq)]
pub enum LookupError<'a> {
    /// No chip has a line of that name.
    NotFound,
    /// Two chips (or two offsets) carry the name; both are given.
    Ambiguous(&'a LineEntry, &'a LineEntry),
}

/// The line name for BCM GPIO `pin`: the prefix and the number, e.g. `GPIO17`.
pub fn line_name(prefix: &str, pin: u8) -> String {
    format!("{prefix}{pin}")
}

/// Finds the one line called `name` among `lines` (all chips together).
pub fn find_line<'a>(lines: &'a [LineEntry], name: &str) -> Result<&'a LineEntry, LookupError<'a>> {
    let mut found = lines.iter().filter(|l| l.name == name);
    match (found.next(), found.next()) {
        (Some(one), None) => Ok(one),
        (Some(first), Some(second)) => Err(LookupError::Ambiguous(first, second)),
        (None, _) => Err(LookupError::NotFound),
    }
}

/// A chip's identity and its named lines, for `pimesh doctor`.
#[derive(Clone, Debug)]
pub struct ChipLines {
    /// The device file.
    pub path: PathBuf,
    /// The driver's name for the chip, e.g. `pinctrl-rp1`.
    pub label: String,
    /// How many lines the chip has, named or not.
    pub count: u32,
    /// The named lines.
    pub lines: Vec<LineEntry>,
}

/// Every GPIO chip's device file, in name order; empty when the machine has none.
pub fn chip_paths() -> Vec<PathBuf> {
    gpiocdev::chip::chips().unwrap_or_default()
}

/// Opens a chip and lists its named lines.
pub fn chip_lines(path: &Path) -> Result<ChipLines, HalError> {
    let chip = gpiocdev::Chip::from_path(path).map_err(|e| chip_error(path, e))?;
    let info = chip.info().map_err(|e| chip_error(path, e))?;
    let mut lines = Vec::new();
    let infos = chip.line_info_iter().map_err(|e| chip_error(path, e))?;
    for line in infos {
        let line = line.map_err(|e| chip_error(path, e))?;
        if !line.name.is_empty() {
            lines.push(LineEntry {
                chip: path.to_path_buf(),
                offset: line.offset,
                name: line.name,
            });
        }
    }
    Ok(ChipLines {
        path: path.to_path_buf(),
        label: info.label,
        count: info.num_lines,
        lines,
    })
}

/// The errno inside a gpiocdev error, if it carries one.
fn errno(err: &gpiocdev::Error) -> Option<i32> {
    match err {
        gpiocdev::Error::Os(e) => Some(e.0),
        gpiocdev::Error::Uapi(_, source) => {
            // gpiocdev does not re-export the uAPI error type, so its errno is read from the
            // io::Error text it displays as ("Permission denied (os error 13)").
            let text = source.to_string();
            text.rsplit_once("os error ")
                .and_then(|(_, n)| n.trim_end_matches(')').parse().ok())
        }
        _ => None,
    }
}

/// Turns a failure to open or list a chip into our error, pointing permission problems at
/// the `gpio` group.
fn chip_error(path: &Path, err: gpiocdev::Error) -> HalError {
    match errno(&err) {
        Some(EACCES | EPERM) => HalError::PermissionDenied {
            path: path.display().to_string(),
        },
        _ => HalError::NoGpioChips {
            reason: format!("{}: {err}", path.display()),
        },
    }
}

/// The character-device GPIO: every named line of every chip, looked up by name.
pub struct CdevGpio {
    /// All named lines, read once at open.
    lines: Vec<LineEntry>,
    /// Prefix that turns a BCM number into a line name.
    prefix: String,
    /// Pins claimed through this handle, so a second claim is `PinUsed`, as with rppal.
    claimed: Arc<Mutex<HashSet<u8>>>,
}

impl CdevGpio {
    /// Lists the lines of every chip. No chip at all is [`HalError::NoGpioChips`]; a chip this
    /// user may not open is [`HalError::PermissionDenied`].
    pub fn open(line_prefix: &str) -> Result<CdevGpio, HalError> {
        let chips = chip_paths();
        if chips.is_empty() {
            return Err(HalError::NoGpioChips {
                reason: "no /dev/gpiochip* device".into(),
            });
        }
        let mut lines = Vec::new();
        for chip in &chips {
            lines.extend(chip_lines(chip)?.lines);
        }
        Ok(CdevGpio {
            lines,
            prefix: line_prefix.to_string(),
            claimed: Arc::new(Mutex::new(HashSet::new())),
        })
    }

    /// Resolves `pin` to its line and records the claim.
    fn claim(&self, pin: u8) -> Result<(Claim, LineEntry), HalError> {
        let name = line_name(&self.prefix, pin);
        let line = match find_line(&self.lines, &name) {
            Ok(line) => line.clone(),
            Err(LookupError::NotFound) => {
                let mut chips = String::new();
                for path in self.lines.iter().map(|l| &l.chip).collect::<HashSet<_>>() {
                    let _ = write!(
                        chips,
                        "{}{}",
                        if chips.is_empty() { "" } else { ", " },
                        path.display()
                    );
                }
                return Err(HalError::LineNotFound { pin, name, chips });
            }
            Err(LookupError::Ambiguous(a, b)) => {
                return Err(HalError::LineAmbiguous {
                    pin,
                    name,
                    first: format!("{} line {}", a.chip.display(), a.offset),
                    second: format!("{} line {}", b.chip.display(), b.offset),
                })
            }
        };
        let mut claimed = self.claimed.lock().unwrap_or_else(PoisonError::into_inner);
        if !claimed.insert(pin) {
            return Err(HalError::PinUsed { pin });
        }
        Ok((
            Claim {
                claimed: self.claimed.clone(),
                pin,
            },
            line,
        ))
    }
}

/// Turns a failed line request or access into our error for that pin.
fn line_error(pin: u8, line: &LineEntry, err: gpiocdev::Error) -> HalError {
    match errno(&err) {
        Some(EACCES | EPERM) => HalError::PermissionDenied {
            path: line.chip.display().to_string(),
        },
        Some(EBUSY) => HalError::LineBusy {
            pin,
            name: line.name.clone(),
            chip: line.chip.display().to_string(),
        },
        _ => HalError::Cdev {
            pin,
            line: format!("{} line {}", line.chip.display(), line.offset),
            source: err,
        },
    }
}

/// The gpiocdev value for an electrical level (no active-low inversion: the caller does it).
fn value(high: bool) -> Value {
    if high {
        Value::Active
    } else {
        Value::Inactive
    }
}

impl Gpio for CdevGpio {
    fn output(&mut self, pin: u8, initial: Option<bool>) -> Result<Box<dyn OutputPin>, HalError> {
        let (claim, line) = self.claim(pin)?;
        let fail = |e| line_error(pin, &line, e);
        let offset: Offset = line.offset;
        let level = match initial {
            Some(level) => level,
            None => {
                // Take the line as it is, read the level it holds, then make it an output at
                // that level: no glitch on a relay that was left on.
                let probe = Request::builder()
                    .on_chip(&line.chip)
                    .with_consumer(CONSUMER)
                    .with_line(offset)
                    .as_is()
                    .request()
                    .map_err(fail)?;
                let level = probe.value(offset).map_err(fail)? == Value::Active;
                drop(probe);
                level
            }
        };
        let request = Request::builder()
            .on_chip(&line.chip)
            .with_consumer(CONSUMER)
            .with_line(offset)
            .as_output(value(level))
            .request()
            .map_err(fail)?;
        Ok(Box::new(CdevOutput {
            _claim: claim,
            line,
            request,
            level,
        }))
    }

    fn input(
        &mut self,
        pin: u8,
        pull: Pull,
        on_edge: EdgeCallback,
    ) -> Result<Box<dyn InputPin>, HalError> {
        let (claim, line) = self.claim(pin)?;
        let bias = match pull {
            Pull::Up => Bias::PullUp,
            Pull::Down => Bias::PullDown,
            Pull::None => Bias::Disabled,
        };
        let request = Request::builder()
            .on_chip(&line.chip)
            .with_consumer(CONSUMER)
            .with_line(line.offset)
            .as_input()
            .with_bias(bias)
            .with_edge_detection(EdgeDetection::BothEdges)
            .request()
            .map_err(|e| line_error(pin, &line, e))?;
        let request = Arc::new(request);
        let stop = Arc::new(AtomicBool::new(false));
        let (watched, flag, name) = (request.clone(), stop.clone(), line.name.clone());
        std::thread::Builder::new()
            .name(format!("pimesh-cdev-{}", line.name))
            .spawn(move || watch_edges(&watched, &flag, &name, &on_edge))
            .map_err(HalError::WatcherThread)?;
        Ok(Box::new(CdevInput {
            _claim: claim,
            line,
            request,
            stop,
        }))
    }
}

/// An input's edge thread: waits in the kernel for edge events and reports each one, until
/// the pin is released or the request fails.
fn watch_edges(request: &Request, stop: &AtomicBool, name: &str, on_edge: &EdgeCallback) {
    while !stop.load(Ordering::SeqCst) {
        match request.wait_edge_event(STOP_CHECK) {
            Ok(false) => {}
            Ok(true) => match request.read_edge_event() {
                Ok(event) => on_edge(event.kind == EdgeKind::Rising),
                Err(e) => {
                    tracing::warn!(line = name, error = %e, "cannot read a GPIO edge event; input stops reporting");
                    return;
                }
            },
            Err(e) => {
                tracing::warn!(line = name, error = %e, "cannot wait for GPIO edges; input stops reporting");
                return;
            }
        }
    }
}

/// A claimed pin number, released when dropped.
struct Claim {
    /// The set the pin is recorded in.
    claimed: Arc<Mutex<HashSet<u8>>>,
    /// BCM GPIO number.
    pin: u8,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut claimed = self.claimed.lock().unwrap_or_else(PoisonError::into_inner);
        claimed.remove(&self.pin);
    }
}

/// A line requested as an output.
struct CdevOutput {
    /// Keeps the pin claimed.
    _claim: Claim,
    /// Which line, for messages.
    line: LineEntry,
    /// The kernel request; the output holds its level while this lives.
    request: Request,
    /// The level last driven (reading back an output is not supported by every driver).
    level: bool,
}

impl OutputPin for CdevOutput {
    fn pin(&self) -> u8 {
        self._claim.pin
    }

    fn write(&mut self, high: bool) -> Result<(), HalError> {
        self.request
            .set_value(self.line.offset, value(high))
            .map_err(|e| line_error(self._claim.pin, &self.line, e))?;
        self.level = high;
        Ok(())
    }

    fn read(&self) -> Result<bool, HalError> {
        Ok(self.level)
    }
}

/// A line requested as an input with edge detection.
struct CdevInput {
    /// Keeps the pin claimed.
    _claim: Claim,
    /// Which line.
    line: LineEntry,
    /// The kernel request, shared with the edge thread.
    request: Arc<Request>,
    /// Tells the edge thread to finish.
    stop: Arc<AtomicBool>,
}

impl InputPin for CdevInput {
    fn pin(&self) -> u8 {
        self._claim.pin
    }

    fn read(&self) -> Result<bool, HalError> {
        let v = self
            .request
            .value(self.line.offset)
            .map_err(|e| line_error(self._claim.pin, &self.line, e))?;
        Ok(v == Value::Active)
    }
}

impl Drop for CdevInput {
    fn drop(&mut self) {
        // The thread holds the other reference; the line is released when it sees this.
        self.stop.store(true, Ordering::SeqCst);
    }
}

#[cfg(test)]
#[path = "cdev_tests.rs"]
mod tests;
