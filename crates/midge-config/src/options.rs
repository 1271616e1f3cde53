//! The table of every option Mosquitto 2.0 accepts in `mosquitto.conf`, and
//! whether Midge supports it yet.
//!
//! This module owns the *list*, not the parsing: `parser.rs` dispatches on
//! the names marked [`Support::Supported`]. When a feature lands, flip its
//! entries here to `Supported` and add the handler in the parser; the test
//! `every_supported_option_has_a_handler` keeps the two in step.
//!
//! The list was taken from the mosquitto.conf(5) man page of Mosquitto 2.0.11
//! and checked against the 2.0.11 broker itself (every word it does not
//! answer with "Unknown configuration variable"), which adds the
//! undocumented aliases Mosquitto's parser accepts: `clientid`, `username`,
//! `password` (bridge), `maximum_qos`, `plugin`, `retained_persistence`,
//! `retry_interval`. Names ending in `*` are prefixes (`auth_opt_*`,
//! `plugin_opt_*`).

/// Whether Midge accepts a Mosquitto option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Support {
    /// Parsed into [`crate::Config`].
    Supported,
    /// A Mosquitto option Midge does not implement yet. It is refused with
    /// "`NAME` is not supported by midge yet", never ignored: a broker that
    /// silently skips `password_file` would be open to everyone.
    NotYet,
    /// Refused for the reason given (deprecated or removed in Mosquitto).
    Refused(&'static str),
}

/// One `mosquitto.conf` option name and Midge's support for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MosquittoOption {
    /// The option as written in the file; a trailing `*` marks a prefix.
    pub name: &'static str,
    /// What Midge does with it.
    pub support: Support,
}

const fn yes(name: &'static str) -> MosquittoOption {
    MosquittoOption {
        name,
        support: Support::Supported,
    }
}

const fn not_yet(name: &'static str) -> MosquittoOption {
    MosquittoOption {
        name,
        support: Support::NotYet,
    }
}

const fn refused(name: &'static str, reason: &'static str) -> MosquittoOption {
    MosquittoOption {
        name,
        support: Support::Refused(reason),
    }
}

/// Every option of Mosquitto 2.0's `mosquitto.conf`, in alphabetical order.
pub const OPTIONS: &[MosquittoOption] = &[
    yes("acl_file"),
    not_yet("address"),
    not_yet("addresses"),
    yes("allow_anonymous"),
    not_yet("allow_duplicate_messages"),
    yes("allow_zero_length_clientid"),
    not_yet("auth_opt_*"),
    not_yet("auth_plugin"),
    not_yet("auth_plugin_deny_special_chars"),
    yes("auto_id_prefix"),
    yes("autosave_interval"),
    yes("autosave_on_changes"),
    yes("bind_address"),
    yes("bind_interface"),
    not_yet("bridge_alpn"),
    not_yet("bridge_attempt_unsubscribe"),
    not_yet("bridge_bind_address"),
    not_yet("bridge_cafile"),
    not_yet("bridge_capath"),
    not_yet("bridge_certfile"),
    not_yet("bridge_identity"),
    not_yet("bridge_insecure"),
    not_yet("bridge_keyfile"),
    not_yet("bridge_max_packet_size"),
    not_yet("bridge_outgoing_retain"),
    not_yet("bridge_protocol_version"),
    not_yet("bridge_psk"),
    not_yet("bridge_require_ocsp"),
    not_yet("bridge_tls_version"),
    yes("cafile"),
    yes("capath"),
    yes("certfile"),
    not_yet("check_retain_source"),
    refused(
        "ciphers",
        "ciphers is not supported by midge: it uses rustls, whose suites are all current AEAD suites, not chosen by OpenSSL cipher strings; remove the line",
    ),
    refused(
        "ciphers_tls1.3",
        "ciphers_tls1.3 is not supported by midge: it uses rustls, whose TLS 1.3 suites are all enabled; remove the line",
    ),
    not_yet("cleansession"),
    not_yet("clientid"),
    refused(
        "clientid_prefixes",
        "clientid_prefixes is deprecated in Mosquitto 2.0 and not supported by midge",
    ),
    // Midge's own: Mosquitto never closes a connection that sends nothing.
    yes("connect_timeout"),
    not_yet("connection"),
    yes("connection_messages"),
    yes("crlfile"),
    not_yet("dhparamfile"),
    not_yet("http_dir"),
    not_yet("idle_timeout"),
    yes("include_dir"),
    not_yet("keepalive_interval"),
    yes("keyfile"),
    yes("listener"),
    not_yet("local_cleansession"),
    not_yet("local_clientid"),
    not_yet("local_password"),
    not_yet("local_username"),
    yes("log_dest"),
    yes("log_facility"),
    yes("log_timestamp"),
    yes("log_timestamp_format"),
    yes("log_type"),
    yes("max_connections"),
    yes("max_inflight_bytes"),
    yes("max_inflight_messages"),
    yes("max_keepalive"),
    yes("max_packet_size"),
    yes("max_qos"),
    yes("max_queued_bytes"),
    yes("max_queued_messages"),
    yes("max_topic_alias"),
    not_yet("maximum_qos"),
    yes("memory_limit"),
    yes("message_size_limit"),
    yes("mount_point"),
    not_yet("notification_topic"),
    not_yet("notifications"),
    not_yet("notifications_local_only"),
    not_yet("password"),
    yes("password_file"),
    yes("per_listener_settings"),
    yes("persistence"),
    yes("persistence_file"),
    yes("persistence_location"),
    // Midge's own: how often the journal is forced to disk.
    yes("persistence_sync"),
    not_yet("persistent_client_expiration"),
    yes("pid_file"),
    not_yet("plugin"),
    not_yet("plugin_opt_*"),
    yes("port"),
    yes("protocol"),
    not_yet("psk_file"),
    not_yet("psk_hint"),
    yes("queue_qos0_messages"),
    not_yet("remote_clientid"),
    not_yet("remote_password"),
    not_yet("remote_username"),
    yes("require_certificate"),
    // Midge's own: the Response Information given to 5.0 clients that ask.
    yes("response_information"),
    not_yet("restart_timeout"),
    yes("retain_available"),
    yes("retained_persistence"),
    refused(
        "retry_interval",
        "retry_interval was removed in Mosquitto 2.0 and has no effect; remove it",
    ),
    not_yet("round_robin"),
    yes("set_tcp_nodelay"),
    yes("socket_domain"),
    not_yet("start_type"),
    yes("sys_interval"),
    not_yet("threshold"),
    not_yet("tls_engine"),
    not_yet("tls_engine_kpass_sha1"),
    not_yet("tls_keyform"),
    yes("tls_version"),
    not_yet("topic"),
    not_yet("try_private"),
    not_yet("upgrade_outgoing_qos"),
    yes("use_identity_as_username"),
    yes("use_subject_as_username"),
    not_yet("use_username_as_clientid"),
    yes("user"),
    not_yet("username"),
    yes("websockets_headers_size"),
    yes("websockets_log_level"),
    // Midge's own: how many threads serve connections.
    yes("worker_threads"),
];

/// Finds the table entry for an option name as written in a file.
/// Prefix entries (`auth_opt_*`) match any name that starts with the prefix
/// and has something after it.
pub fn lookup(name: &str) -> Option<&'static MosquittoOption> {
    OPTIONS.iter().find(|o| match o.name.strip_suffix('*') {
        Some(prefix) => name.len() > prefix.len() && name.starts_with(prefix),
        None => o.name == name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_unique() {
        for pair in OPTIONS.windows(2) {
            assert!(
                pair[0].name < pair[1].name,
                "{} !< {}",
                pair[0].name,
                pair[1].name
            );
        }
    }

    #[test]
    fn lookup_exact_and_prefix() {
        assert_eq!(
            lookup("listener").map(|o| o.support),
            Some(Support::Supported)
        );
        assert_eq!(
            lookup("log_dest").map(|o| o.support),
            Some(Support::Supported)
        );
        assert_eq!(lookup("psk_file").map(|o| o.support), Some(Support::NotYet));
        assert_eq!(
            lookup("auth_opt_db_host").map(|o| o.name),
            Some("auth_opt_*")
        );
        assert_eq!(lookup("plugin_opt_x").map(|o| o.name), Some("plugin_opt_*"));
        assert!(lookup("auth_opt_").is_none());
        assert!(lookup("listeners").is_none());
        assert!(lookup("").is_none());
    }
}
