//! Plugins drive a kind of hardware for the agent: relays (outputs), inputs and serial devices.
//!
//! A plugin owns its claimed pins or port and translates between an object's logical state
//! (`ON`, `OFF`) and the hardware; it never touches the store. The agent decides when to
//! switch and records what happened. The rules that are pure logic live in sans-IO cores the
//! agent drives with its own timers: `relay_bank` (pulse, interlock, watchdog, stop),
//! `press` (single, double and long presses) and `serial_line` (the line protocol).

pub mod input;
pub mod press;
pub mod relay;
mod relay_action;
pub mod relay_bank;
pub mod serial;
pub mod serial_line;
mod serial_message;

pub use input::Input;
pub use relay::Relay;
