//! The broker core's settings from a `mosquitto.conf`: the broker runs
//! with them, and `midge_db_import` routes the messages it takes over
//! (incoming QoS 2 awaiting PUBREL) under the same queue limits.

use midge_config::Config;
use midge_core::BrokerConfig;
use std::time::Duration;

/// `seed` starts the generator of client ids for clients that send none.
pub fn from_config(config: &Config, seed: u64) -> BrokerConfig {
    BrokerConfig {
        max_inflight_messages: config.max_inflight_messages,
        max_inflight_bytes: config.max_inflight_bytes,
        max_queued_messages: config.max_queued_messages,
        max_queued_bytes: config.max_queued_bytes,
        queue_qos0_messages: config.queue_qos0_messages,
        allow_anonymous: config.allow_anonymous,
        allow_zero_length_clientid: config.allow_zero_length_clientid,
        auto_id_prefix: config.auto_id_prefix.clone(),
        retain_available: config.retain_available,
        max_keepalive: config.max_keepalive,
        message_size_limit: config.message_size_limit,
        id_seed: seed,
        persistence: config.persistence,
        response_information: config.response_information.clone(),
        maximum_packet_size: config.max_packet_size,
        topic_alias_maximum: config.max_topic_alias,
        connect_timeout: (config.connect_timeout > 0)
            .then(|| Duration::from_secs(u64::from(config.connect_timeout))),
        maximum_qos: midge_codec::QoS::from_u8(config.max_qos)
            .unwrap_or(midge_codec::QoS::ExactlyOnce),
    }
}
