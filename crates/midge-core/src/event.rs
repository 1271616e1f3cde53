//! What the core reports to the server for logging and statistics. Events
//! describe; they never ask the server to act (that is `Transmit`).

use bytestring::ByteString;
use midge_codec::{ProtocolVersion, QoS, ReasonCode};

use crate::ids::ConnId;

/// Why a connection ended, in the words Mosquitto's log uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The client sent DISCONNECT.
    ClientDisconnected,
    /// The socket closed or failed without DISCONNECT.
    ConnectionLost,
    /// Nothing heard for 1.5 × keep-alive ([MQTT-3.1.2-24]).
    KeepAliveTimeout,
    /// Another connection took the session over ([MQTT-3.1.4-3]).
    TakenOver,
    /// No CONNECT arrived in time.
    ConnectTimeout,
    /// The client broke the protocol; the reason code says how.
    ProtocolError(ReasonCode),
    /// The broker is shutting down.
    ServerShutdown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BrokerEvent {
    ClientConnected {
        conn: ConnId,
        client_id: ByteString,
        protocol: ProtocolVersion,
        clean_start: bool,
        keep_alive: u16,
        username: Option<ByteString>,
        session_present: bool,
    },
    ConnectRefused {
        conn: ConnId,
        client_id: ByteString,
        /// The CONNACK code sent (3.x return code or 5.0 reason code).
        code: u8,
    },
    ClientDisconnected {
        conn: ConnId,
        client_id: ByteString,
        reason: DisconnectReason,
    },
    Subscribed {
        client_id: ByteString,
        filter: ByteString,
        qos: QoS,
    },
    Unsubscribed {
        client_id: ByteString,
        filter: ByteString,
    },
}
