//! The hardware abstraction: digital output and input pins behind a small trait.
//!
//! The shape follows embedded-hal's digital traits (fallible writes and reads, an error with
//! a [`HalError::kind`]), plus what a home agent needs on top: pins are claimed once per
//! [`Gpio`] (a second claim is [`HalError::PinUsed`]), and inputs report every level change
//! through a callback from a backend thread, so plugins never poll.
//!
//! Two backends, chosen by `backend` in the `[board]` table of the config:
//! - `rppal` (`rpi.rs`): the Raspberry Pi's GPIO registers; outputs keep their level across an
//!   agent restart.
//! - `sim` (`sim.rs`): one small file per pin under the data dir, so a person or a test can
//!   watch the relays and press the buttons from outside the process.

mod rpi;
mod sim;

use std::path::{Path, PathBuf};

/// Which implementation drives the pins; config: `backend = "sim" | "rppal"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Pin files under `<data-dir>/sim/`: development, tests, machines without GPIO.
    Sim,
    /// The Raspberry Pi's GPIO through the rppal crate (Pi 1 to 5).
    Rppal,
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

/// Opens the backend. `data_dir` is the agent's data dir (the sim keeps its pin files under it).
pub fn open(backend: Backend, data_dir: &Path) -> Result<Box<dyn Gpio>, HalError> {
    match backend {
        Backend::Sim => Ok(Box::new(sim::SimGpio::open(data_dir))),
        Backend::Rppal => Ok(Box::new(rpi::RppalGpio::open()?)),
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
    /// The sim's input watcher thread could not be started.
    #[error("cannot start the sim input watcher thread: {0}")]
    SimThread(std::io::Error),
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
            HalError::NotRaspberryPi { .. } => ErrorKind::NoHardware,
            HalError::PermissionDenied { .. } => ErrorKind::PermissionDenied,
            HalError::PinUsed { .. } => ErrorKind::PinUsed,
            HalError::PinNotAvailable { .. } => ErrorKind::PinNotAvailable,
            HalError::ReadOnly { .. }
            | HalError::SimIo { .. }
            | HalError::SimThread(_)
            | HalError::Rppal { .. } => ErrorKind::Fault,
        }
    }
}
