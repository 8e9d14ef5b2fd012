//! The simulated backend: each claimed pin is a file `<data-dir>/sim/gpio<N>` holding `0` or `1`.
//!
//! Outputs overwrite the one byte that changes (`0` or `1`, then a newline) in place, so a
//! reader sees the old level or the new one and never a partial file, at the cost of one
//! `pwrite` instead of a temp file and a rename (which cost a command ~100 µs). Inputs are files that someone else writes; one watcher
//! thread per [`SimGpio`] reads them every [`POLL_INTERVAL`] and reports changes. A pin file
//! with no write bit makes output writes fail, which is how tests simulate a hardware fault.

use super::{sim_pin_file, EdgeCallback, Gpio, HalError, InputPin, OutputPin, Pull};
use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

/// How often the watcher reads the input files; well inside the 50 ms a change may take.
const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// BCM GPIO numbers run 0..=53; the sim refuses others, as the real chip would.
const PIN_COUNT: u8 = 54;

/// The sim backend: pin files under one data dir.
pub struct SimGpio {
    /// State shared with the pins and the watcher thread.
    shared: Arc<Shared>,
    /// True while the watcher thread runs; it is started by the first input claim.
    watcher: Option<Arc<AtomicBool>>,
}

/// What the pins and the watcher thread share. The watcher holds only a `Weak` to it, so it
/// stops once the [`SimGpio`] and all its pins are gone.
struct Shared {
    /// The agent's data dir; pin files live in its `sim` subdirectory.
    data_dir: PathBuf,
    /// Pins currently claimed, so a second claim fails with `PinUsed`.
    claimed: Mutex<HashSet<u8>>,
    /// The inputs the watcher reads.
    inputs: Mutex<Vec<Arc<Watch>>>,
    /// Completed watcher rounds, so tests can wait for the watcher instead of sleeping.
    rounds: AtomicU64,
}

/// One watched input file.
struct Watch {
    /// BCM GPIO number.
    pin: u8,
    /// The pin file.
    path: PathBuf,
    /// Receives each new level.
    on_edge: EdgeCallback,
    /// Last level seen, and whether the file currently holds something else than a level.
    state: Mutex<WatchState>,
}

/// What the watcher last saw in an input file.
struct WatchState {
    /// Last valid level read.
    level: bool,
    /// True from the first unreadable or invalid read until the next valid one, so a
    /// garbage episode is warned about once.
    garbage: bool,
}

/// Locks a mutex, ignoring poisoning: the data behind these locks stays valid even if a
/// thread panicked while holding one.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SimGpio {
    /// A sim backend keeping its pin files under `<data_dir>/sim/` (created on the first claim).
    pub fn open(data_dir: &Path) -> SimGpio {
        SimGpio {
            shared: Arc::new(Shared {
                data_dir: data_dir.to_path_buf(),
                claimed: Mutex::new(HashSet::new()),
                inputs: Mutex::new(Vec::new()),
                rounds: AtomicU64::new(0),
            }),
            watcher: None,
        }
    }

    /// Reserves `pin` and makes sure the sim directory exists.
    fn claim(&self, pin: u8) -> Result<Claim, HalError> {
        if pin >= PIN_COUNT {
            return Err(HalError::PinNotAvailable { pin });
        }
        let path = sim_pin_file(&self.shared.data_dir, pin);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(|source| HalError::SimIo {
                pin,
                action: "create the directory",
                path: dir.to_path_buf(),
                source,
            })?;
        }
        if !lock(&self.shared.claimed).insert(pin) {
            return Err(HalError::PinUsed { pin });
        }
        Ok(Claim {
            shared: self.shared.clone(),
            pin,
            path,
        })
    }

    /// Starts the watcher thread unless it runs already.
    fn start_watcher(&mut self) -> Result<(), HalError> {
        if self.watcher.is_some() {
            return Ok(());
        }
        let running = Arc::new(AtomicBool::new(true));
        let weak = Arc::downgrade(&self.shared);
        let flag = running.clone();
        std::thread::Builder::new()
            .name("pimesh-sim-gpio".into())
            .spawn(move || {
                watch_inputs(&weak);
                flag.store(false, Ordering::SeqCst);
            })
            .map_err(HalError::WatcherThread)?;
        self.watcher = Some(running);
        Ok(())
    }
}

/// The watcher thread: reads every input file each round until the shared state is gone.
fn watch_inputs(shared: &Weak<Shared>) {
    loop {
        std::thread::sleep(POLL_INTERVAL);
        let Some(strong) = shared.upgrade() else {
            return;
        };
        let watches = lock(&strong.inputs).clone();
        drop(strong);
        for watch in watches {
            if let Some(level) = watch.poll() {
                (watch.on_edge)(level);
            }
        }
        if let Some(strong) = shared.upgrade() {
            strong.rounds.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Watch {
    /// Reads the file once; returns the new level if it changed since the last valid read.
    fn poll(&self) -> Option<bool> {
        let read = read_level(&self.path);
        let mut state = lock(&self.state);
        match read {
            Ok(Some(level)) => {
                state.garbage = false;
                if level == state.level {
                    return None;
                }
                state.level = level;
                Some(level)
            }
            Ok(None) | Err(_) => {
                if !state.garbage {
                    state.garbage = true;
                    tracing::warn!(
                        pin = self.pin,
                        file = %self.path.display(),
                        "sim input file does not hold 0 or 1; ignoring it until it does"
                    );
                }
                None
            }
        }
    }
}

/// Reads a pin file: `Some(level)` for `0`/`1` (surrounding whitespace allowed), `None` for
/// anything else.
fn read_level(path: &Path) -> io::Result<Option<bool>> {
    let text = fs::read(path)?;
    Ok(match text.trim_ascii() {
        b"0" => Some(false),
        b"1" => Some(true),
        _ => None,
    })
}

/// Writes `level` into the pin file in place (creating it if missing): the file is always
/// two bytes, and only the first one changes, so a concurrent reader sees a whole level.
fn write_level(pin: u8, path: &Path, level: bool) -> Result<(), HalError> {
    use std::os::unix::fs::FileExt;
    let text: &[u8] = if level { b"1\n" } else { b"0\n" };
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .and_then(|f| {
            f.write_all_at(text, 0)?;
            if f.metadata()?.len() != 2 {
                f.set_len(2)?;
            }
            Ok(())
        })
        .map_err(|source| HalError::SimIo {
            pin,
            action: "write",
            path: path.to_path_buf(),
            source,
        })
}

/// Fails if the pin file exists with no write bit at all: the simulated fault. The mode bits
/// are checked because tests run as root, where opening the file would succeed.
fn check_writable(pin: u8, path: &Path) -> Result<(), HalError> {
    match fs::metadata(path) {
        Ok(meta) if meta.permissions().mode() & 0o222 == 0 => Err(HalError::ReadOnly {
            pin,
            path: path.to_path_buf(),
        }),
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(HalError::SimIo {
            pin,
            action: "inspect",
            path: path.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// A claimed pin number, released when dropped.
struct Claim {
    /// Where the claim is recorded.
    shared: Arc<Shared>,
    /// BCM GPIO number.
    pin: u8,
    /// The pin file.
    path: PathBuf,
}

impl Drop for Claim {
    fn drop(&mut self) {
        lock(&self.shared.claimed).remove(&self.pin);
    }
}

impl Gpio for SimGpio {
    fn output(&mut self, pin: u8, initial: Option<bool>) -> Result<Box<dyn OutputPin>, HalError> {
        let claim = self.claim(pin)?;
        let existing = read_level(&claim.path).ok().flatten();
        let level = initial.or(existing).unwrap_or(false);
        let mut out = SimOutput { claim, level };
        if initial.is_some() || existing.is_none() {
            out.write(level)?;
        }
        Ok(Box::new(out))
    }

    fn input(
        &mut self,
        pin: u8,
        pull: Pull,
        on_edge: EdgeCallback,
    ) -> Result<Box<dyn InputPin>, HalError> {
        let claim = self.claim(pin)?;
        let (level, garbage) = match read_level(&claim.path) {
            Ok(Some(level)) => (level, false),
            Ok(None) => (pull.idle_level(), true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                write_level(pin, &claim.path, pull.idle_level())?;
                (pull.idle_level(), false)
            }
            Err(source) => {
                return Err(HalError::SimIo {
                    pin,
                    action: "read",
                    path: claim.path.clone(),
                    source,
                })
            }
        };
        self.start_watcher()?;
        let watch = Arc::new(Watch {
            pin,
            path: claim.path.clone(),
            on_edge,
            state: Mutex::new(WatchState { level, garbage }),
        });
        lock(&self.shared.inputs).push(watch.clone());
        Ok(Box::new(SimInput { claim, watch }))
    }
}

/// A sim output pin.
struct SimOutput {
    /// The pin number and file, released on drop.
    claim: Claim,
    /// The level last driven.
    level: bool,
}

impl OutputPin for SimOutput {
    fn pin(&self) -> u8 {
        self.claim.pin
    }

    fn write(&mut self, high: bool) -> Result<(), HalError> {
        check_writable(self.claim.pin, &self.claim.path)?;
        write_level(self.claim.pin, &self.claim.path, high)?;
        self.level = high;
        Ok(())
    }

    fn read(&self) -> Result<bool, HalError> {
        Ok(self.level)
    }
}

/// A sim input pin; dropping it stops watching its file.
struct SimInput {
    /// The pin number and file, released on drop.
    claim: Claim,
    /// The watcher's entry for this pin.
    watch: Arc<Watch>,
}

impl InputPin for SimInput {
    fn pin(&self) -> u8 {
        self.claim.pin
    }

    fn read(&self) -> Result<bool, HalError> {
        match read_level(&self.claim.path) {
            Ok(Some(level)) => Ok(level),
            _ => Ok(lock(&self.watch.state).level),
        }
    }
}

impl Drop for SimInput {
    fn drop(&mut self) {
        lock(&self.claim.shared.inputs).retain(|w| !Arc::ptr_eq(w, &self.watch));
    }
}

#[cfg(test)]
#[path = "sim_tests.rs"]
mod tests;
