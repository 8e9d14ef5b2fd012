//! The hardware abstraction: digital output and input pins behind a small trait.
//!
//! The shape follows embedded-hal's digital traits (fallible writes and reads, an error with
//! a [`HalError::kind`]), plus what a home agent needs on top: pins are claimed once per
//! [`Gpio`] (a second claim is [`HalError::PinUsed`]), and inputs report every level change
//! through a callback from a backend thread, so plugins never poll.
//!
//! Three backends, chosen by `backend` in the `[board]` table of the config:
//! - `rppal` (`rpi.rs`): the Raspberry Pi's GPIO registers; outputs keep their level across an
//!   agent restart. rppal has been in maintenance-only mode since July 2025, so it is kept
//!   for what only register access gives (that restart behaviour) and `cdev` is the
//!   long-term path.
//! - `cdev` (`cdev.rs`): the Linux GPIO character device, on any board; lines found by name.
//! - `sim` (`sim.rs`): one small file per pin under the data dir, so a person or a test can
//!   watch the relays and press the buttons from outside the process.
//!
//! `auto`, the default, picks rppal on a Raspberry Pi and cdev elsewhere (`detect.rs`).

pub mod cdev;
pub mod detect;
mod rpi;
mod sim;

use std::path::{Path, PathBuf};

/// Which implementation drives the pins; config: `backend = "auto" | "rppal" | "cdev" | "sim"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// rppal on a Raspberry Pi, cdev on anything else; decided at open from
    /// `/proc/device-tree/model` and `/proc/cpuinfo` (see [`detect::choose`]).
    #[default]
    Auto,
    /// The Raspberry Pi's GPIO through the rppal crate (Pi 1 to 5). rppal is in
    /// maintenance-only mode since July 2025; prefer `cdev` for anything new.
    Rppal,
    /// The Linux GPIO character device through gpiocdev: any board, lines found by name.
    Cdev,
    /// Pin files under `<data-dir>/sim/`: development, tests, machines without GPIO.
    Sim,
}

/// The input's internal bias resistor; config: `pull = "up" | "down" | "none"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pull {
    /// Idle level high: for a button or contact that connects the pin to ground.
    Up,
    /// Idle level low: for a switch that connects the pin to 3.3 V.
    Down,
    /// No internal bias: the circuit (or the HAT) already holds the level.
    #[default]
    None,
}

impl Pull {
    /// The level an unconnected pin settles at with this bias (high only for `Up`).
    pub fn idle_level(self) -> bool {
        self == Pull::Up
    }
}

/// Called with the new electrical level (true = high) each time an input changes.
pub type EdgeCallback = Box<dyn Fn(bool) + Send + Sync + 'static>;

/// A pin claimed as an output: a relay coil, a LED.
pub trait OutputPin: Send {
    /// The BCM GPIO number, for messages.
    fn pin(&self) -> u8;
    /// Drives the pin to an electrical level (true = high). Active-low inversion is the caller's job.
    fn write(&mut self, high: bool) -> Result<(), HalError>;
    /// The level the pin is driven to now.
    fn read(&self) -> Result<bool, HalError>;
}

/// A pin claimed as an input: a button, a door contact.
pub trait InputPin: Send {
    /// The BCM GPIO number, for messages.
    fn pin(&self) -> u8;
    /// The electrical level now (true = high).
    fn read(&self) -> Result<bool, HalError>;
}

/// One backend's pins. Dropping it and every pin it gave out releases the hardware.
pub trait Gpio: Send {
    /// Claims `pin` as an output. `initial = Some(level)` drives it at once; `None` keeps the level
    /// the pin already has where the backend can know it (rppal keeps outputs across an agent
    /// restart; sim keeps an existing pin file's level), else low.
    fn output(&mut self, pin: u8, initial: Option<bool>) -> Result<Box<dyn OutputPin>, HalError>;
    /// Claims `pin` as an input; `on_edge` is called from a backend thread with the new electrical
    /// level every time it changes (no debouncing here; the caller debounces).
    fn input(
        &mut self,
        pin: u8,
        pull: Pull,
        on_edge: EdgeCallback,
    ) -> Result<Box<dyn InputPin>, HalError>;
}

/// Opens the backend with the default cdev line prefix (`GPIO`). `data_dir` is the agent's
/// data dir (the sim keeps its pin files under it).
pub fn open(backend: Backend, data_dir: &Path) -> Result<Box<dyn Gpio>, HalError> {
    open_with(backend, data_dir, cdev::DEFAULT_LINE_PREFIX)
}

/// Opens the backend; `line_prefix` (config `[board] line-prefix`) turns a BCM number into a
/// cdev line name. `auto` is resolved here, and the choice and its reason are logged.
pub fn open_with(
    backend: Backend,
    data_dir: &Path,
    line_prefix: &str,
) -> Result<Box<dyn Gpio>, HalError> {
    match backend {
        Backend::Auto => {
            let choice = detect::choose(&detect::read_machine(Path::new("/")));
            tracing::info!(reason = %choice.reason, "backend \"auto\" resolved");
            open_with(choice.backend, data_dir, line_prefix)
        }
        Backend::Sim => Ok(Box::new(sim::SimGpio::open(data_dir))),
        Backend::Rppal => Ok(Box::new(rpi::RppalGpio::open()?)),
        Backend::Cdev => Ok(Box::new(cdev::CdevGpio::open(line_prefix)?)),
    }
}

/// Whether `backend` can drive GPIO on this machine, found by opening it without claiming a
/// pin (so it may run next to an agent that holds them). `pimesh check` and `pimesh run` both
/// ask this before anything starts, so a config one refuses the other refuses too.
pub fn probe(backend: Backend, line_prefix: &str) -> Result<(), HalError> {
    match backend {
        Backend::Auto => {
            let choice = detect::choose(&detect::read_machine(Path::new("/")));
            probe(choice.backend, line_prefix)
        }
        Backend::Sim => Ok(()),
        Backend::Rppal => rpi::RppalGpio::open().map(drop),
        Backend::Cdev => cdev::CdevGpio::open(line_prefix).map(drop),
    }
}

/// The file the sim backend mirrors `pin` to: `<data-dir>/sim/gpio<N>`, holding `0` or `1`.
///
/// Tests and people drive sim inputs and watch sim outputs through this file.
pub fn sim_pin_file(data_dir: &Path, pin: u8) -> PathBuf {
    data_dir.join("sim").join(format!("gpio{pin}"))
}

/// What went wrong, coarsely, so a caller can choose a reaction without matching text
/// (the embedded-hal `ErrorKind` idea, with the cases a home agent acts on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// This machine has no GPIO the backend can drive (not a Raspberry Pi).
    NoHardware,
    /// The OS refused access to the GPIO device.
    PermissionDenied,
    /// The pin is already claimed in this agent.
    PinUsed,
    /// The pin number does not exist on this chip.
    PinNotAvailable,
    /// A claimed pin could not be driven or read: a command on it has `failed`.
    Fault,
}

/// Errors from the hardware layer; each names the pin or file and says how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum HalError {
    /// rppal could not identify a Raspberry Pi: wrong machine or wrong backend in the config.
    #[error(
        "this machine is not a Raspberry Pi, so the rppal GPIO backend cannot run here ({reason}); \
         to run without GPIO hardware set backend = \"sim\" in the [board] table of the config"
    )]
    NotRaspberryPi {
        /// rppal's own explanation.
        reason: String,
    },
    /// The GPIO device exists but this user may not open it.
    #[error(
        "permission denied opening {path}: add the agent's user to the `gpio` group \
         (sudo usermod -aG gpio <user>) and start the agent again from a new login"
    )]
    PermissionDenied {
        /// The device file that was refused (`/dev/gpiomem`, `/dev/gpiochip0`, ...).
        path: String,
    },
    /// The pin was claimed twice on one [`Gpio`]: two config entries name the same GPIO.
    #[error(
        "GPIO{pin} is already in use by another relay or input of this agent; \
         give each one its own pin in the config"
    )]
    PinUsed {
        /// The BCM GPIO number claimed twice.
        pin: u8,
    },
    /// The pin number does not exist on this chip.
    #[error(
        "GPIO{pin} does not exist on this board; use a BCM GPIO number \
         (`pimesh boards <board>` lists them)"
    )]
    PinNotAvailable {
        /// The BCM GPIO number asked for.
        pin: u8,
    },
    /// No GPIO character device can be opened: not a board with GPIO, or a container.
    #[error(
        "no GPIO character device (/dev/gpiochip*) is usable on this machine ({reason}); \
         to run without GPIO hardware set backend = \"sim\" in the [board] table of the config"
    )]
    NoGpioChips {
        /// What was (not) found.
        reason: String,
    },
    /// No chip has a line with the name the pin maps to.
    #[error(
        "GPIO{pin}: no GPIO line named {name:?} on any chip ({chips}); `pimesh doctor` lists \
         the line names; set line-prefix in the [board] table if this board names them differently"
    )]
    LineNotFound {
        /// The BCM GPIO number asked for.
        pin: u8,
        /// The line name looked for, e.g. `GPIO17`.
        name: String,
        /// The chips searched.
        chips: String,
    },
    /// Two lines carry the name the pin maps to; guessing could switch the wrong load.
    #[error(
        "GPIO{pin}: the line name {name:?} is on both {first} and {second}; pimesh will not \
         guess which one is wired; set line-prefix in the [board] table to a unique naming"
    )]
    LineAmbiguous {
        /// The BCM GPIO number asked for.
        pin: u8,
        /// The line name.
        name: String,
        /// The first line with the name (chip and offset).
        first: String,
        /// The second line with the name.
        second: String,
    },
    /// Another program (or a kernel driver) holds the line.
    #[error(
        "GPIO{pin} ({name} on {chip}) is held by another program or driver; find it with \
         `gpioinfo` and stop it, or choose another pin"
    )]
    LineBusy {
        /// The BCM GPIO number.
        pin: u8,
        /// The line name.
        name: String,
        /// The chip's device file.
        chip: String,
    },
    /// Any other error the GPIO character device reports on a line.
    #[error("GPIO{pin} ({line}): {source}")]
    Cdev {
        /// The BCM GPIO number.
        pin: u8,
        /// Chip and offset.
        line: String,
        /// gpiocdev's error.
        source: gpiocdev::Error,
    },
    /// A sim output's pin file has no write bit: the simulated hardware refuses to switch.
    #[error(
        "cannot drive GPIO{pin}: pin file {} is read-only (a simulated hardware fault); \
         make it writable again (chmod 644) to clear the fault",
        path.display()
    )]
    ReadOnly {
        /// The BCM GPIO number.
        pin: u8,
        /// The sim pin file.
        path: PathBuf,
    },
    /// Reading or writing a sim pin file failed.
    #[error("sim GPIO{pin}: cannot {action} {}: {source}; check that the data dir is writable", path.display())]
    SimIo {
        /// The BCM GPIO number.
        pin: u8,
        /// What was being done ("write", "read", "create the directory of").
        action: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// An input watcher thread (sim files or cdev edges) could not be started.
    #[error("cannot start a GPIO input watcher thread: {0}")]
    WatcherThread(std::io::Error),
    /// Any other error rppal reports on a pin.
    #[error("GPIO{pin}: {source}")]
    Rppal {
        /// The BCM GPIO number.
        pin: u8,
        /// rppal's error.
        source: rppal::gpio::Error,
    },
}

impl HalError {
    /// The coarse category of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            HalError::NotRaspberryPi { .. } | HalError::NoGpioChips { .. } => ErrorKind::NoHardware,
            HalError::PermissionDenied { .. } => ErrorKind::PermissionDenied,
            HalError::PinUsed { .. } | HalError::LineBusy { .. } => ErrorKind::PinUsed,
            HalError::PinNotAvailable { .. }
            | HalError::LineNotFound { .. }
            | HalError::LineAmbiguous { .. } => ErrorKind::PinNotAvailable,
            HalError::Cdev { .. }
            | HalError::ReadOnly { .. }
            | HalError::SimIo { .. }
            | HalError::WatcherThread(_)
            | HalError::Rppal { .. } => ErrorKind::Fault,
        }
    }
}
