//! Plugins drive a kind of hardware for the agent: relays (outputs) and inputs today.
//!
//! A plugin owns its claimed pins and translates between an object's logical state (`ON`,
//! `OFF`) and the pin's electrical level; it never touches the store. The agent decides when
//! to switch and records what happened.

pub mod input;
pub mod press;
pub mod relay;
mod relay_action;
pub mod relay_bank;

pub use input::Input;
pub use relay::Relay;
