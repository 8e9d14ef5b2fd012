//! An input wired to one pin (a button, a door contact), with debouncing.
//!
//! The backend reports raw edges; bouncing contacts produce bursts of them. After an edge we
//! wait `debounce-ms` and then read the pin once: the state only changes if the level read
//! then differs from the last reported one, so a burst costs one read, not a stream of
//! state changes.

use crate::config::InputConfig;
use crate::hal::{EdgeCallback, Gpio, HalError, InputPin};
use std::time::Duration;

/// One claimed input.
pub struct Input {
    /// The input's configuration.
    pub config: InputConfig,
    /// The claimed input pin.
    pin: Box<dyn InputPin>,
    /// True while a debounce timer is running, so a burst of edges arms only one.
    pub debouncing: bool,
}

impl Input {
    /// Claims the input's pin; `on_edge` is called from a backend thread on every raw edge.
    pub fn claim(
        gpio: &mut dyn Gpio,
        config: InputConfig,
        on_edge: EdgeCallback,
    ) -> Result<Input, HalError> {
        let pin = gpio.input(config.pin, config.pull, on_edge)?;
        Ok(Input {
            config,
            pin,
            debouncing: false,
        })
    }

    /// Whether the input is active (`ON`): high, or low for an active-low input.
    pub fn is_on(&self) -> Result<bool, HalError> {
        Ok(self.pin.read()? != self.config.active_low)
    }

    /// How long to wait after an edge before reading.
    pub fn debounce(&self) -> Duration {
        Duration::from_millis(self.config.debounce_ms)
    }
}
