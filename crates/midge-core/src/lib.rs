//! The broker's logic without I/O.
//!
//! The caller (the server) hands in decoded packets, connection events and the
//! current time; the core answers with packets to send and connections to
//! close, and says when it next wants to be woken. Nothing here touches a
//! socket, a disk or the system clock, so every protocol flow is unit-tested
//! deterministically.
#![forbid(unsafe_code)]

pub mod access;
pub mod auth;
pub mod broker;
pub mod config;
pub mod event;
pub mod ids;
pub mod message;
pub mod persist;
pub mod retained;
pub mod session;
pub mod shared;
pub mod topic_tree;

pub use access::AccessControl;
pub use auth::{AuthExchange, AuthMethod, AuthStep};
pub use broker::{Broker, Stats, Transmit};
pub use config::BrokerConfig;
pub use event::{BrokerEvent, DisconnectReason};
pub use ids::{ConnId, SessionKey};
pub use message::{Message, SharedMessage};
pub use persist::{RestoredDelivery, RestoredSession, RestoredState, StoreOp, StoredState};
