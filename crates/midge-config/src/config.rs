//! The typed configuration: what the broker runs with once a
//! `mosquitto.conf` has been read and Mosquitto 2.0's default rules applied.
//!
//! Every default is Mosquitto 2.0's and is written down where it is defined.
//! This module owns the types and the rules that need no file (the
//! local-only default, `-p`); reading files is `parser.rs`'s job.

use std::path::PathBuf;

/// Mosquitto's default port (`port`, and the default listener).
pub const DEFAULT_PORT: u16 = 1883;

/// Mosquitto's default `auto_id_prefix`.
pub const DEFAULT_AUTO_ID_PREFIX: &str = "auto-";

/// The broker's configuration, after defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where to listen. Never empty: with no `listener`, `port`,
    /// `bind_address` or other listener option, Mosquitto 2.0 listens on
    /// 127.0.0.1 and ::1, port 1883, and so does this (see `local_only`).
    /// The default listener (set by `port`/`bind_address`, or by listener
    /// options given before the first `listener`) comes last, as in Mosquitto.
    pub listeners: Vec<ListenerConfig>,
    /// True when the file configured no listener: Mosquitto 2.0's "local
    /// only mode", loopback addresses only and anonymous clients allowed
    /// whatever `allow_anonymous` says. `-p` applies only in this mode.
    pub local_only: bool,
    /// `per_listener_settings`, default false. When true, `allow_anonymous`,
    /// `allow_zero_length_clientid` and `auto_id_prefix` apply to the listener
    /// they follow; read them from [`ListenerConfig`], which always carries
    /// the effective values.
    pub per_listener_settings: bool,
    /// `allow_anonymous`, effective value: true in local-only mode, else as
    /// set, else false (Mosquitto 2.0: configuring any listener turns
    /// anonymous access off unless it is asked for).
    pub allow_anonymous: bool,
    /// `allow_zero_length_clientid`, default true: clients may send an empty
    /// client id and get one made up with `auto_id_prefix`.
    pub allow_zero_length_clientid: bool,
    /// `auto_id_prefix`, default `"auto-"`.
    pub auto_id_prefix: String,
    /// `max_inflight_messages`, default 20; 0 = no limit. Outgoing QoS 1/2
    /// messages in flight per client.
    pub max_inflight_messages: u16,
    /// `max_inflight_bytes`, default 0 = no limit.
    pub max_inflight_bytes: u64,
    /// `max_queued_messages`, default 1000; 0 = no limit. QoS 1/2 messages
    /// queued per client beyond those in flight.
    pub max_queued_messages: u32,
    /// `max_queued_bytes`, default 0 = no limit.
    pub max_queued_bytes: u64,
    /// `queue_qos0_messages`, default false: QoS 0 messages are not queued
    /// for disconnected persistent clients.
    pub queue_qos0_messages: bool,
    /// `max_keepalive`, default 65535 (seconds; 10..=65535). MQTT 5 clients
    /// asking for more get this as server keep alive.
    pub max_keepalive: u16,
    /// `max_packet_size`, default 0 = no limit (else at least 20 bytes).
    pub max_packet_size: u32,
    /// `message_size_limit`, default 0 = no limit (else at most 268435455).
    /// Publish payloads over it are dropped.
    pub message_size_limit: u32,
    /// `memory_limit`, default 0 = none: bytes of memory in use above
    /// which new messages are refused. Midge measures resident memory (RSS).
    pub memory_limit: u64,
    /// `retain_available`, default true.
    pub retain_available: bool,
    /// `persistence`, default false: keep retained messages and persistent
    /// sessions (their subscriptions, queued and in-flight messages) in a
    /// journal on disk, so they survive a restart, `kill -9` and power loss.
    pub persistence: bool,
    /// `persistence_location`, default the current directory: where the
    /// store lives.
    pub persistence_location: Option<PathBuf>,
    /// `persistence_file`, default `midge.db` (Mosquitto's is `mosquitto.db`;
    /// Midge's format differs: `midge_db_import` converts one).
    pub persistence_file: String,
    /// `autosave_interval`, default 1800 seconds. Mosquitto saves its whole
    /// state this often and loses everything in between; Midge journals
    /// every change at once, and uses this only to compact the journal
    /// (0: only when it grows, at SIGUSR1 and at shutdown).
    pub autosave_interval: u32,
    /// `autosave_on_changes`, default false: with it, `autosave_interval`
    /// counts changes instead of seconds, as in Mosquitto.
    pub autosave_on_changes: bool,
    /// `persistence_sync` (Midge only), default `always`.
    pub persistence_sync: PersistenceSync,
    /// `set_tcp_nodelay`, default **true** (Mosquitto: false). Midge
    /// gathers a connection's pending packets into one write already, so
    /// Nagle's algorithm only adds delay: a delivery sent while the
    /// SUBACK is still unacknowledged waited for the client's delayed ACK,
    /// about 40 ms on Linux (p99 17–34 ms at 5k msg/s, measured).
    pub set_tcp_nodelay: bool,
    /// Logging: `log_dest`, `log_type`, `log_timestamp`,
    /// `log_timestamp_format`, `log_facility`, `connection_messages`.
    pub log: LogConfig,
    /// `password_file`: Mosquitto's password file (`$7$`/`$6$` hashes);
    /// reread on SIGHUP. None: user names are not checked.
    pub password_file: Option<PathBuf>,
    /// `acl_file`: Mosquitto's ACL file; reread on SIGHUP. None: every
    /// client may publish and subscribe to everything.
    pub acl_file: Option<PathBuf>,
    /// `pid_file`, default none: where to write the broker's process id.
    pub pid_file: Option<PathBuf>,
    /// `user`: the account to switch to after binding the listeners when
    /// started as root. Mosquitto defaults to `mosquitto`; Midge switches
    /// only when this is set (the packaged service sets it), so a broker
    /// started by hand or by tests as root keeps access to its own files.
    pub user: Option<String>,
    /// `sys_interval`, default 10 seconds: how often the `$SYS/broker/...`
    /// topics are published; 0 turns them off.
    pub sys_interval: u32,
    /// `max_topic_alias`, default 10: Topic Alias Maximum offered to MQTT 5
    /// clients (0 = none).
    pub max_topic_alias: u16,
    /// `max_qos`, default 2: highest QoS accepted from clients.
    pub max_qos: u8,
    /// `response_information` (Midge only), default none: the Response
    /// Information (MQTT 5.0 §3.2.2.3.15) sent to clients whose CONNECT asks
    /// for it, typically a topic prefix for their responses.
    pub response_information: Option<String>,
    /// `connect_timeout` (Midge only), default 10 seconds: a connection
    /// that sends no CONNECT in this time is closed; 0 waits forever, as
    /// Mosquitto does.
    pub connect_timeout: u32,
    /// `worker_threads` (Midge only): threads serving connections; `None`
    /// (the default) leaves one core of the machine to the rest (one thread
    /// on a two-core machine).
    pub worker_threads: Option<u16>,
    /// The files read, in order: the main file first, then included files.
    pub sources: Vec<PathBuf>,
    /// The option names used, in order of first use, as spelled in
    /// [`crate::OPTIONS`], for checking `docs/configuration.md`.
    pub options_seen: Vec<&'static str>,
}

/// One place to accept connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    /// The socket to bind.
    pub address: ListenAddress,
    /// `protocol`, default MQTT over TCP.
    pub protocol: ListenerProtocol,
    /// `max_connections`; None (Mosquitto's -1, the default) = no limit.
    /// `Some(0)` refuses every connection, as in Mosquitto.
    pub max_connections: Option<u32>,
    /// Effective `allow_anonymous` for this listener.
    pub allow_anonymous: bool,
    /// Effective `allow_zero_length_clientid` for this listener.
    pub allow_zero_length_clientid: bool,
    /// Effective `auto_id_prefix` for this listener.
    pub auto_id_prefix: String,
    /// `bind_interface`: bind to this network interface only (Linux).
    pub bind_interface: Option<String>,
    /// `websockets_headers_size`, default 4096: largest HTTP upgrade
    /// request accepted on a websockets listener.
    pub websockets_headers_size: u32,
    /// TLS on this listener: set when `certfile` and `keyfile` are given.
    pub tls: Option<TlsConfig>,
    /// `mount_point`: a prefix added to the topics of this listener's
    /// clients (and removed from what they are sent), so clients of
    /// different listeners live in separate topic trees.
    pub mount_point: Option<String>,
}

/// A listener's TLS settings (Mosquitto's certificate-based options).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsConfig {
    /// `certfile`: the server certificate chain (PEM).
    pub certfile: PathBuf,
    /// `keyfile`: the server's private key (PEM, not encrypted).
    pub keyfile: PathBuf,
    /// `cafile`: CA certificates trusted for client certificates (PEM).
    pub cafile: Option<PathBuf>,
    /// `capath`: a directory of CA certificates (PEM files).
    pub capath: Option<PathBuf>,
    /// `crlfile`: a certificate revocation list (PEM).
    pub crlfile: Option<PathBuf>,
    /// `require_certificate`, default false: clients must present a
    /// certificate signed by `cafile`/`capath`.
    pub require_certificate: bool,
    /// `use_identity_as_username`: the client certificate's Common Name is
    /// the user name (and no password is checked).
    pub use_identity_as_username: bool,
    /// `use_subject_as_username`: the certificate's whole subject is.
    pub use_subject_as_username: bool,
    /// `tls_version`: `tlsv1.2` or `tlsv1.3` (the lowest accepted); None:
    /// both. `tlsv1.1` and older are refused (rustls does not offer them).
    pub tls_version: Option<String>,
}

/// When the journal is forced to disk (`persistence_sync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PersistenceSync {
    /// `always`: fsync before every acknowledgement; nothing acknowledged is
    /// ever lost, even on power loss.
    #[default]
    Always,
    /// A number of milliseconds: fsync at most that often; on power loss the
    /// acknowledgements of the last interval can be lost (not on `kill -9`).
    IntervalMs(u32),
    /// `never`: leave it to the operating system; survives `kill -9` but
    /// not power loss.
    Never,
}

/// Where log lines go (`log_dest`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LogDest {
    Stdout,
    Stderr,
    /// Appended to; reopened on SIGHUP so logrotate can move it.
    File(PathBuf),
    /// The local syslog socket, with `log_facility`.
    Syslog,
    /// Published to `$SYS/broker/log/<type>`.
    Topic,
}

/// Log types, as bits (`log_type`).
pub mod log_types {
    pub const ERROR: u32 = 1;
    pub const WARNING: u32 = 2;
    pub const NOTICE: u32 = 4;
    pub const INFORMATION: u32 = 8;
    pub const SUBSCRIBE: u32 = 16;
    pub const UNSUBSCRIBE: u32 = 32;
    pub const DEBUG: u32 = 64;
    pub const WEBSOCKETS: u32 = 128;
    pub const ALL: u32 = 0xFF;
    /// Mosquitto's default: error, warning, notice, information.
    pub const DEFAULT: u32 = ERROR | WARNING | NOTICE | INFORMATION;
}

/// Logging settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// `log_dest`, default stderr; several lines add destinations;
    /// `log_dest none` (alone) logs nowhere.
    pub dests: Vec<LogDest>,
    /// `log_type` lines, or'ed together; default [`log_types::DEFAULT`].
    pub types: u32,
    /// `log_timestamp`, default true.
    pub timestamp: bool,
    /// `log_timestamp_format` (strftime), default none: Unix seconds.
    pub timestamp_format: Option<String>,
    /// `log_facility` 0..=7 selects LOG_LOCAL0..7; default LOG_DAEMON.
    pub facility: Option<u8>,
    /// `connection_messages`, default true: log connects and disconnects.
    pub connection_messages: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            dests: vec![LogDest::Stderr],
            types: log_types::DEFAULT,
            timestamp: true,
            timestamp_format: None,
            facility: None,
            connection_messages: true,
        }
    }
}

/// Where a listener binds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ListenAddress {
    /// `listener PORT [ADDRESS]`, or the default listener (`port`,
    /// `bind_address`).
    Tcp {
        port: u16,
        /// Address or host name to bind; None = all interfaces.
        bind: Option<String>,
        /// `socket_domain`; None = both IPv4 and IPv6.
        socket_domain: Option<SocketDomain>,
    },
    /// `listener 0 PATH`: a Unix domain socket.
    Unix { path: PathBuf },
}

/// `socket_domain ipv4|ipv6`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SocketDomain {
    Ipv4,
    Ipv6,
}

/// `protocol mqtt|websockets`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum ListenerProtocol {
    #[default]
    Mqtt,
    /// MQTT over WebSockets (subprotocol `mqtt`).
    Websockets,
}

impl ListenerConfig {
    /// A listener with the global defaults for everything but its address.
    pub fn new(address: ListenAddress) -> ListenerConfig {
        ListenerConfig {
            address,
            protocol: ListenerProtocol::Mqtt,
            max_connections: None,
            bind_interface: None,
            websockets_headers_size: 4096,
            tls: None,
            mount_point: None,
            allow_anonymous: false,
            allow_zero_length_clientid: true,
            auto_id_prefix: DEFAULT_AUTO_ID_PREFIX.to_owned(),
        }
    }
}

impl Default for Config {
    /// What Mosquitto 2.0 runs with when given no configuration file.
    fn default() -> Config {
        Config::default_local_only(DEFAULT_PORT)
    }
}

impl Config {
    /// What `midge` with no `-c` uses: Mosquitto 2.0's local-only mode,
    /// 127.0.0.1 and ::1 on `port`, anonymous clients allowed, every other
    /// option at its default.
    pub fn default_local_only(port: u16) -> Config {
        let mut config = Config {
            listeners: Vec::new(),
            local_only: true,
            per_listener_settings: false,
            allow_anonymous: true,
            allow_zero_length_clientid: true,
            auto_id_prefix: DEFAULT_AUTO_ID_PREFIX.to_owned(),
            max_inflight_messages: 20,
            max_inflight_bytes: 0,
            max_queued_messages: 1000,
            max_queued_bytes: 0,
            queue_qos0_messages: false,
            max_keepalive: 65535,
            max_packet_size: 0,
            message_size_limit: 0,
            memory_limit: 0,
            retain_available: true,
            persistence: false,
            persistence_location: None,
            persistence_file: "midge.db".to_owned(),
            autosave_interval: 1800,
            autosave_on_changes: false,
            persistence_sync: PersistenceSync::Always,
            set_tcp_nodelay: true,
            log: LogConfig::default(),
            pid_file: None,
            password_file: None,
            acl_file: None,
            user: None,
            sys_interval: 10,
            max_topic_alias: 10,
            max_qos: 2,
            connect_timeout: 10,
            worker_threads: None,
            response_information: None,
            sources: Vec::new(),
            options_seen: Vec::new(),
        };
        config.listeners = config.local_listeners(&[port]);
        config
    }

    /// Mosquitto's `-p PORT`. In Mosquitto 2.0, `-p` only takes effect in
    /// local-only mode (no listener configured, with or without `-c`): the
    /// loopback listeners move to the given port. When the file configures
    /// a listener, `port` or `bind_address`, Mosquitto 2.0 ignores `-p`
    /// without a word; Midge does the same but returns false so the caller
    /// can warn. Returns true when the port was applied.
    ///
    /// Port 0 (an ephemeral port, handy in tests) is accepted here; the
    /// command line should refuse it, as Mosquitto does.
    pub fn apply_port_override(&mut self, port: u16) -> bool {
        self.apply_port_overrides(&[port])
    }

    /// Several `-p` options (Mosquitto accepts up to 10): in local-only mode
    /// the loopback listeners are replaced by a pair for each port. An empty
    /// list changes nothing. Returns true when the ports were applied.
    pub fn apply_port_overrides(&mut self, ports: &[u16]) -> bool {
        if !self.local_only || ports.is_empty() {
            return false;
        }
        self.listeners = self.local_listeners(ports);
        true
    }

    /// The local-only listeners for `ports`: 127.0.0.1 and ::1 each,
    /// anonymous allowed, client-id options from the global settings.
    pub(crate) fn local_listeners(&self, ports: &[u16]) -> Vec<ListenerConfig> {
        let mut listeners = Vec::with_capacity(ports.len() * 2);
        for &port in ports {
            for host in ["127.0.0.1", "::1"] {
                listeners.push(ListenerConfig {
                    allow_anonymous: true,
                    allow_zero_length_clientid: self.allow_zero_length_clientid,
                    auto_id_prefix: self.auto_id_prefix.clone(),
                    ..ListenerConfig::new(ListenAddress::Tcp {
                        port,
                        bind: Some(host.to_owned()),
                        socket_domain: None,
                    })
                });
            }
        }
        listeners
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(port: u16, bind: &str) -> ListenAddress {
        ListenAddress::Tcp {
            port,
            bind: Some(bind.to_owned()),
            socket_domain: None,
        }
    }

    #[test]
    fn default_is_local_only_on_1883_with_mosquitto_defaults() {
        let c = Config::default();
        assert!(c.local_only);
        assert!(c.allow_anonymous);
        let addrs: Vec<_> = c.listeners.iter().map(|l| l.address.clone()).collect();
        assert_eq!(addrs, vec![tcp(1883, "127.0.0.1"), tcp(1883, "::1")]);
        assert!(c.listeners.iter().all(|l| l.allow_anonymous));
        assert_eq!(c.max_inflight_messages, 20);
        assert_eq!(c.max_inflight_bytes, 0);
        assert_eq!(c.max_queued_messages, 1000);
        assert_eq!(c.max_queued_bytes, 0);
        assert!(!c.queue_qos0_messages);
        assert_eq!(c.max_keepalive, 65535);
        assert_eq!(c.max_packet_size, 0);
        assert_eq!(c.message_size_limit, 0);
        assert!(c.retain_available);
        assert!(!c.persistence);
        assert!(c.set_tcp_nodelay);
        assert!(c.allow_zero_length_clientid);
        assert_eq!(c.auto_id_prefix, "auto-");
        assert!(!c.per_listener_settings);
    }

    #[test]
    fn port_override_moves_local_listeners() {
        let mut c = Config::default();
        assert!(c.apply_port_override(1999));
        let addrs: Vec<_> = c.listeners.iter().map(|l| l.address.clone()).collect();
        assert_eq!(addrs, vec![tcp(1999, "127.0.0.1"), tcp(1999, "::1")]);

        assert!(c.apply_port_overrides(&[1, 2]));
        assert_eq!(c.listeners.len(), 4);
        assert!(!c.apply_port_overrides(&[]));
        assert_eq!(c.listeners.len(), 4);
    }

    #[test]
    fn port_override_is_ignored_when_listeners_are_configured() {
        let mut c = Config {
            local_only: false,
            listeners: vec![ListenerConfig::new(tcp(1884, "0.0.0.0"))],
            ..Config::default()
        };
        let before = c.clone();
        assert!(!c.apply_port_override(1999));
        assert_eq!(c, before);
    }
}
