//! pimesh: one agent per Raspberry Pi, joined into a mesh that holds the whole house.
//!
//! The binary in `main.rs` only parses the command line and calls into this library; every
//! part below is usable (and tested) without it. `ARCHITECTURE.md` has a paragraph per module.

pub mod agent;
pub mod api;
pub mod boards;
pub mod broker;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod doctor;
pub mod door;
pub mod external;
pub mod hal;
pub mod heap;
pub mod identity;
pub mod lan;
pub mod membership;
pub mod mesh;
pub mod model;
pub mod mqtt;
pub mod plugins;
pub mod ratelimit;
pub mod replica;
pub mod router;
pub mod runtime;
pub mod secret;
pub mod tls;
pub mod web;
