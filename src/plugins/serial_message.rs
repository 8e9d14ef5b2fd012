//! The messages of the serial plugin: the events a device's task reports and the errors its
//! commands are answered with.
//!
//! They live apart from the task in `serial.rs` so the agent's side of the contract reads on
//! its own.

use crate::model::ObjectId;

/// Something that happened to a device, for the agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SerialEvent {
    /// The device's object id.
    pub device: ObjectId,
    /// What happened.
    pub kind: SerialEventKind,
}

/// What happened to a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SerialEventKind {
    /// The port is open: the device and its channels are available.
    Available,
    /// The port is gone or cannot be opened; the text says why. Reported once per outage.
    Unavailable(String),
    /// A channel's state, from a reply to a command or an unsolicited report.
    State {
        /// The channel's object id.
        channel: ObjectId,
        /// Its state.
        on: bool,
    },
    /// Bytes a raw device sent, in the chunks they arrived in.
    Received(Vec<u8>),
}

/// Why a serial command did not succeed; each names the device.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SerialError {
    /// The device is not connected (or went away while the command waited).
    #[error("serial device {device} is unavailable: {reason}")]
    Unavailable {
        /// The device.
        device: ObjectId,
        /// Why.
        reason: String,
    },
    /// No reply within `timeout-ms` (or the device did not take the bytes in that time).
    #[error("serial device {device} did not answer {command:?} within {ms} ms; check the wiring, the baud rate and the reply patterns")]
    Timeout {
        /// The device.
        device: ObjectId,
        /// The command sent, as text.
        command: String,
        /// The timeout.
        ms: u64,
    },
    /// The device answered, but not with the expected reply.
    #[error("serial device {device}: {reason}")]
    Failed {
        /// The device.
        device: ObjectId,
        /// What it answered.
        reason: String,
    },
    /// The channel is not one of this device's.
    #[error("{channel} is not a channel of serial device {device}")]
    UnknownChannel {
        /// The device.
        device: ObjectId,
        /// The channel asked for.
        channel: ObjectId,
    },
    /// The request does not fit the device's protocol.
    #[error("serial device {device} speaks the {protocol} protocol; {hint}")]
    WrongProtocol {
        /// The device.
        device: ObjectId,
        /// `line` or `raw`.
        protocol: &'static str,
        /// What to use instead.
        hint: &'static str,
    },
    /// The device's task has stopped (the agent is shutting down).
    #[error("serial device {device} has stopped")]
    Stopped {
        /// The device.
        device: ObjectId,
    },
}
