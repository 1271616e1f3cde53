//! The limits and policies the core enforces. The server builds this from the
//! configuration file; defaults are Mosquitto 2.0's.

/// What the core needs to know of the configuration.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// QoS 1/2 messages in flight to one client at once (`max_inflight_messages`,
    /// default 20; 0 = unlimited, capped at 65 000 packet identifiers).
    pub max_inflight_messages: u16,
    /// Payload bytes in flight to one client (`max_inflight_bytes`, default
    /// 0 = unlimited); a message is always let through to an empty window.
    pub max_inflight_bytes: u64,
    /// Messages queued per session beyond those in flight (`max_queued_messages`,
    /// default 1000; 0 = unlimited).
    pub max_queued_messages: u32,
    /// Payload bytes queued per session (`max_queued_bytes`, default 0 = unlimited).
    pub max_queued_bytes: u64,
    /// Queue QoS 0 messages for offline persistent sessions (`queue_qos0_messages`, default false).
    pub queue_qos0_messages: bool,
    /// Clients without a user name may connect (`allow_anonymous`).
    pub allow_anonymous: bool,
    /// An empty client id gets an assigned one (`allow_zero_length_clientid`, default true).
    pub allow_zero_length_clientid: bool,
    /// Prefix of assigned client ids (`auto_id_prefix`, default `auto-`).
    pub auto_id_prefix: String,
    /// Retained messages are kept (`retain_available`, default true).
    pub retain_available: bool,
    /// Largest keep-alive accepted (`max_keepalive`, default 65535). A 5.0
    /// client asking for more (or for 0) is told this value in Server Keep Alive.
    pub max_keepalive: u16,
    /// Largest PUBLISH payload accepted (`message_size_limit`, 0 = no limit).
    pub message_size_limit: u32,
    /// A connection that sends no CONNECT within this time is closed
    /// (`None`: wait forever, as Mosquitto does). Default 10 s.
    pub connect_timeout: Option<std::time::Duration>,
    /// Seed for assigned client ids; the server passes something random so
    /// ids differ across restarts. The core itself never reads a clock or RNG.
    pub id_seed: u64,
    /// Topic aliases a 5.0 client may use towards us (Topic Alias Maximum in
    /// CONNACK; Mosquitto's default 10; 0 = none).
    pub topic_alias_maximum: u16,
    /// Highest QoS accepted from publishers (`max_qos`, default 2).
    pub maximum_qos: midge_codec::QoS,
    /// Largest packet we accept, told to 5.0 clients in CONNACK (0 = no limit).
    pub maximum_packet_size: u32,
    /// Response Information sent to 5.0 clients that ask for it (Request
    /// Response Information 1): the prefix of topics they may use for
    /// responses. `None` sends nothing, which the spec allows.
    pub response_information: Option<String>,
    /// Keep retained messages and persistent sessions in the store
    /// (`persistence`): the core then lists changes as store operations.
    pub persistence: bool,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            max_inflight_messages: 20,
            max_inflight_bytes: 0,
            max_queued_messages: 1000,
            max_queued_bytes: 0,
            queue_qos0_messages: false,
            allow_anonymous: true,
            allow_zero_length_clientid: true,
            auto_id_prefix: "auto-".to_owned(),
            retain_available: true,
            max_keepalive: 65535,
            message_size_limit: 0,
            connect_timeout: Some(std::time::Duration::from_secs(10)),
            id_seed: 0,
            topic_alias_maximum: 10,
            maximum_qos: midge_codec::QoS::ExactlyOnce,
            maximum_packet_size: 0,
            response_information: None,
            persistence: false,
        }
    }
}

impl BrokerConfig {
    /// The in-flight window actually used: 0 means unlimited, but packet ids are
    /// 16 bits, so keep a margin for ids awaiting PUBREL/PUBCOMP.
    pub fn inflight_window(&self) -> usize {
        match self.max_inflight_messages {
            0 => 65_000,
            n => usize::from(n).min(65_000),
        }
    }
}
