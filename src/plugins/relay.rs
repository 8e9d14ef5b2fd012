//! A relay wired to one output pin: logical on/off over an active-high or active-low pin.

use crate::config::{PowerOn, RelayConfig};
use crate::hal::{Gpio, HalError, OutputPin};

/// One claimed relay output.
pub struct Relay {
    /// The relay's configuration (pin, active level, power-on policy).
    pub config: RelayConfig,
    /// The claimed output pin.
    pin: Box<dyn OutputPin>,
}

impl Relay {
    /// Claims the relay's pin and drives it to `on` at once, so a relay never sits in an
    /// undefined state between claim and the power-on policy.
    pub fn claim(gpio: &mut dyn Gpio, config: RelayConfig, on: bool) -> Result<Relay, HalError> {
        let level = on != config.active_low;
        let pin = gpio.output(config.pin, Some(level))?;
        Ok(Relay { config, pin })
    }

    /// Claims the relay's pin at the level it already has, where the backend can know it
    /// (rppal and sim keep an output's level across an agent restart); see [`Gpio::output`].
    pub fn claim_as_it_is(gpio: &mut dyn Gpio, config: RelayConfig) -> Result<Relay, HalError> {
        let pin = gpio.output(config.pin, None)?;
        Ok(Relay { config, pin })
    }

    /// Switches the relay on or off.
    pub fn switch(&mut self, on: bool) -> Result<(), HalError> {
        self.pin.write(on != self.config.active_low)
    }

    /// Whether the relay is on, as read back from the pin.
    pub fn is_on(&self) -> Result<bool, HalError> {
        Ok(self.pin.read()? != self.config.active_low)
    }
}

/// The state a relay takes at start: its policy, with `restore` using the last recorded state
/// (`None` when the relay has never been recorded, which restores to off).
pub fn power_on_state(policy: PowerOn, recorded: Option<bool>) -> bool {
    match policy {
        PowerOn::Off => false,
        PowerOn::On => true,
        PowerOn::Restore => recorded.unwrap_or(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_on_policies() {
        assert!(!power_on_state(PowerOn::Off, Some(true)));
        assert!(power_on_state(PowerOn::On, Some(false)));
        assert!(power_on_state(PowerOn::Restore, Some(true)));
        assert!(!power_on_state(PowerOn::Restore, Some(false)));
        assert!(!power_on_state(PowerOn::Restore, None));
    }
}
