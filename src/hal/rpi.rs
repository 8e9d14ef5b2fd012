//! The Raspberry Pi backend, over rppal's GPIO (register access on Pi 1 to 4, RP1 on Pi 5).
//!
//! Outputs never reset on drop, so a relay keeps its level while the agent restarts; claiming
//! an output without an initial level drives it to the level the pin has now. Input edges
//! come from rppal's interrupt thread (the kernel's GPIO character device), not from polling.

use super::{EdgeCallback, Gpio, HalError, InputPin, OutputPin, Pull};
use rppal::gpio::{self, Level, Trigger};

/// The Pi's GPIO peripheral.
pub struct RppalGpio {
    /// rppal's handle; pins taken from it stay claimed until dropped.
    gpio: gpio::Gpio,
}

impl RppalGpio {
    /// Opens the GPIO peripheral, explaining what to change when this is not a usable Pi.
    pub fn open() -> Result<RppalGpio, HalError> {
        gpio::Gpio::new()
            .map(|gpio| RppalGpio { gpio })
            .map_err(open_error)
    }
}

/// Turns rppal's failure to open the peripheral into an error that says what to do.
fn open_error(err: gpio::Error) -> HalError {
    match err {
        gpio::Error::PermissionDenied(path) => HalError::PermissionDenied { path },
        gpio::Error::Io(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            HalError::PermissionDenied {
                path: format!("/dev/gpiomem or /dev/gpiochip0 ({e})"),
            }
        }
        other => HalError::NotRaspberryPi {
            reason: format!("rppal: {other}"),
        },
    }
}

/// Turns rppal's failure on one pin into our error for that pin.
fn pin_error(pin: u8, err: gpio::Error) -> HalError {
    match err {
        gpio::Error::PinUsed(_) => HalError::PinUsed { pin },
        gpio::Error::PinNotAvailable(_) => HalError::PinNotAvailable { pin },
        gpio::Error::PermissionDenied(path) => HalError::PermissionDenied { path },
        source => HalError::Rppal { pin, source },
    }
}

impl Gpio for RppalGpio {
    fn output(&mut self, pin: u8, initial: Option<bool>) -> Result<Box<dyn OutputPin>, HalError> {
        let raw = self.gpio.get(pin).map_err(|e| pin_error(pin, e))?;
        // The level register reads the pin as it is now: the latched output after an agent
        // restart, the pulled level after a boot. Driving that level first means no glitch.
        let level = initial.unwrap_or_else(|| raw.read() == Level::High);
        let mut out = if level {
            raw.into_output_high()
        } else {
            raw.into_output_low()
        };
        out.set_reset_on_drop(false);
        Ok(Box::new(RppalOutput { out }))
    }

    fn input(
        &mut self,
        pin: u8,
        pull: Pull,
        on_edge: EdgeCallback,
    ) -> Result<Box<dyn InputPin>, HalError> {
        let raw = self.gpio.get(pin).map_err(|e| pin_error(pin, e))?;
        let mut input = match pull {
            Pull::Up => raw.into_input_pullup(),
            Pull::Down => raw.into_input_pulldown(),
            Pull::None => raw.into_input(),
        };
        input
            .set_async_interrupt(Trigger::Both, None, move |event| {
                on_edge(event.trigger == Trigger::RisingEdge)
            })
            .map_err(|e| pin_error(pin, e))?;
        Ok(Box::new(RppalInput { input }))
    }
}

/// An rppal output that keeps its level when dropped.
struct RppalOutput {
    /// The claimed pin in output mode.
    out: gpio::OutputPin,
}

impl OutputPin for RppalOutput {
    fn pin(&self) -> u8 {
        self.out.pin()
    }

    fn write(&mut self, high: bool) -> Result<(), HalError> {
        self.out.write(if high { Level::High } else { Level::Low });
        Ok(())
    }

    fn read(&self) -> Result<bool, HalError> {
        Ok(self.out.is_set_high())
    }
}

/// An rppal input with an edge interrupt; dropping it stops the interrupt.
struct RppalInput {
    /// The claimed pin in input mode.
    input: gpio::InputPin,
}

impl InputPin for RppalInput {
    fn pin(&self) -> u8 {
        self.input.pin()
    }

    fn read(&self) -> Result<bool, HalError> {
        Ok(self.input.is_high())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hal::{open, Backend, ErrorKind};

    #[test]
    fn opening_rppal_off_a_pi_says_so_and_points_at_the_sim_backend() {
        if std::path::Path::new("/dev/gpiomem").exists() {
            return; // a real Pi: the backend opens, nothing to assert here
        }
        let dir = tempfile::tempdir().unwrap();
        let err = open(Backend::Rppal, dir.path()).err().unwrap();
        let text = err.to_string();
        assert!(text.contains("not a Raspberry Pi"), "{text}");
        assert!(text.contains("rppal: "), "rppal's reason included: {text}");
        assert!(text.contains("backend = \"sim\""), "{text}");
        assert!(text.contains("[board]"), "{text}");
        assert_eq!(err.kind(), ErrorKind::NoHardware);
    }

    #[test]
    fn permission_errors_point_at_the_gpio_group() {
        let err = open_error(gpio::Error::PermissionDenied("/dev/gpiomem".into()));
        let text = err.to_string();
        assert!(text.contains("/dev/gpiomem"), "{text}");
        assert!(text.contains("`gpio` group"), "{text}");
        assert_eq!(err.kind(), ErrorKind::PermissionDenied);
        let used = pin_error(26, gpio::Error::PinUsed(26));
        assert!(matches!(used, HalError::PinUsed { pin: 26 }));
    }
}
