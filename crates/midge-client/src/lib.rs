//! A small async MQTT client on midge-codec and tokio, for Midge's
//! command-line tools (`midge_pub`, `midge_sub`, `midge_rr`).
//!
//! - [`session`]: the QoS flows, sans-IO (message ids, in-flight window,
//!   incoming QoS 2 held until PUBREL), unit-tested without sockets;
//! - [`client`]: the connection over TCP or a Unix socket, with or without
//!   TLS ([`tls`], rustls with libmosquitto's checks): CONNECT with every
//!   option of 3.1, 3.1.1 and 5.0, publish, subscribe, unsubscribe,
//!   keep-alive pings, a cancel-safe receive loop and a clean disconnect;
//! - [`tools`]: what the three programs share, written to behave like
//!   Mosquitto 2.0's clients: the same flags, output, messages and exit codes.
//!
//! It is not a general-purpose client: no reconnection state is kept across
//! connections. TLS-PSK and SOCKS proxies are not supported.

pub mod client;
pub mod session;
pub mod tls;
pub mod tools;

pub use client::{Client, Error, Event, Options, Received, Transport};
pub use session::Session;
pub use tls::TlsOptions;
