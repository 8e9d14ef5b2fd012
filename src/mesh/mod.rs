//! The mesh: how instances find each other, replicate what they originate, and catch up.
//!
//! Every instance publishes only on its own embedded broker, on topics scoped by its UUID, and
//! subscribes to every peer's broker for those topics. Nothing is re-forwarded, so there are no
//! loops and no echoes. What a message carries is in [`proto`]; who is alive is in [`peers`];
//! the agent performs the I/O (`agent/mesh.rs`).
//!
//! Replication is three mechanisms on top of the replica's LWW registers:
//! - **live stream**: each batch of local updates goes out on `$pimesh/<base>/mesh/<uuid>/updates`;
//! - **sync**: an instance that lacks something leaves its version vector on the broker of
//!   one live peer, at `$pimesh/<base>/mesh/<uuid>/sync-req`; the peer answers with pages of
//!   `delta_since` on its own `$pimesh/<base>/mesh/<peer>/sync/<uuid>`; this is the start-up transfer.
//!   Requests and introductions are the two things an instance writes on a peer's broker,
//!   always on topics scoped by its own UUID;
//! - **anti-entropy**: every heartbeat carries the sender's version vector; a receiver that
//!   sees the sender holding more of any origin than itself syncs from it. That repairs
//!   messages rumqttd dropped, updates made while an instance was off, and partitions.

mod apply;
pub mod automation;
pub mod commands;
pub mod dispatch;
mod durable;
pub mod fence;
pub mod node;
pub mod peers;
pub mod proto;
pub mod reconcile;
#[cfg(test)]
mod reconcile_tests;
#[cfg(test)]
mod sim;
mod sync;
#[cfg(test)]
mod sync_tests;
pub mod until_durable;
