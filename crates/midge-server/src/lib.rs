//! Midge's tokio server: it moves bytes and time into `midge-core` and the
//! core's answers back out, and knows no MQTT rules beyond that.
//!
//! One router task owns the [`midge_core::Broker`]; every connection has a
//! task that reads, decodes and forwards in batches, and encodes each
//! outgoing batch for one write call. An idle plain connection gives its
//! task back until it has work again (`park`). Listeners are bound by the
//! caller and passed in, with a shutdown future, so tests bind port 0.

pub mod connection;
pub mod durable;
pub mod log;
mod park;
pub mod router;
pub mod server;
pub mod sys;
pub mod tls;
pub mod trim;
pub mod ws;

pub use durable::{Durability, Persistence};
pub use log::{LogType, Logger};
pub use server::{serve, AccessHandle, BoundListener, Control, Listener, ServerOptions};
