//! Tests of the whole parser: each supported option, the defaults, Mosquitto
//! 2.0's listener and anonymous rules, include_dir, and the exact
//! `file:line: reason` of each error class.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::parser::{mosquitto_file_order, parse_main_bytes};
use crate::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    parse_str(text, Path::new("m.conf"))
}

fn ok(text: &str) -> Config {
    match parse(text) {
        Ok(config) => config,
        Err(e) => panic!("{text:?} should parse, got: {e}"),
    }
}

fn err(text: &str) -> String {
    match parse(text) {
        Ok(config) => panic!("{text:?} should fail, got {config:?}"),
        Err(e) => e.to_string(),
    }
}

fn tcp(port: u16, bind: Option<&str>) -> ListenAddress {
    ListenAddress::Tcp {
        port,
        bind: bind.map(str::to_owned),
        socket_domain: None,
    }
}

fn addresses(config: &Config) -> Vec<ListenAddress> {
    config.listeners.iter().map(|l| l.address.clone()).collect()
}

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "midge-config-test-{tag}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------- defaults

#[test]
fn empty_file_is_mosquitto_defaults_in_local_only_mode() {
    let config = ok("");
    let expected = Config {
        sources: vec![PathBuf::from("m.conf")],
        ..Config::default()
    };
    assert_eq!(config, expected);
    assert!(config.local_only);
    assert!(config.allow_anonymous);
    assert_eq!(
        addresses(&config),
        vec![tcp(1883, Some("127.0.0.1")), tcp(1883, Some("::1"))]
    );
}

#[test]
fn comments_blank_lines_whitespace_and_crlf() {
    let config = ok("# comment\n\n   \n  # indented comment\r\nmax_keepalive 60   \r\n\tmax_inflight_messages\t5\n");
    assert_eq!(config.max_keepalive, 60);
    assert_eq!(config.max_inflight_messages, 5);
    assert_eq!(
        config.options_seen,
        vec!["max_keepalive", "max_inflight_messages"]
    );
}

// ------------------------------------------------------- supported options

#[test]
fn every_supported_scalar_option_parses() {
    let config = ok("\
max_inflight_messages 10
max_inflight_bytes 4096
max_queued_messages 50
max_queued_bytes 1048576
queue_qos0_messages true
max_keepalive 120
max_packet_size 65536
message_size_limit 268435455
retain_available false
persistence false
set_tcp_nodelay false
allow_zero_length_clientid false
auto_id_prefix midge-
allow_anonymous true
per_listener_settings false
");
    assert_eq!(config.max_inflight_messages, 10);
    assert_eq!(config.max_inflight_bytes, 4096);
    assert_eq!(config.max_queued_messages, 50);
    assert_eq!(config.max_queued_bytes, 1_048_576);
    assert!(config.queue_qos0_messages);
    assert_eq!(config.max_keepalive, 120);
    assert_eq!(config.max_packet_size, 65536);
    assert_eq!(config.message_size_limit, 268_435_455);
    assert!(!config.retain_available);
    assert!(!config.persistence);
    assert!(!config.set_tcp_nodelay);
    assert!(!config.allow_zero_length_clientid);
    assert_eq!(config.auto_id_prefix, "midge-");
    assert!(config.allow_anonymous);
    assert!(!config.per_listener_settings);
    // Still local only: none of these configures a listener.
    assert!(config.local_only);
    assert!(config
        .listeners
        .iter()
        .all(|l| !l.allow_zero_length_clientid && l.auto_id_prefix == "midge-"));
}

#[test]
fn negative_counts_mean_no_limit_as_in_mosquitto() {
    let config = ok("\
max_inflight_messages -1
max_inflight_bytes -1
max_queued_messages -5
max_queued_bytes -1
max_packet_size 0
");
    assert_eq!(config.max_inflight_messages, 0);
    assert_eq!(config.max_inflight_bytes, 0);
    assert_eq!(config.max_queued_messages, 0);
    assert_eq!(config.max_queued_bytes, 0);
    assert_eq!(config.max_packet_size, 0);
}

#[test]
fn listener_forms() {
    let config = ok("\
listener 1883
listener 8883 192.0.2.1
max_connections 100
socket_domain ipv4
protocol mqtt
listener 1884 ::1
socket_domain ipv6
max_connections -1
listener 0 /run/midge/midge.sock
max_connections 0
");
    assert!(!config.local_only);
    assert_eq!(
        addresses(&config),
        vec![
            tcp(1883, None),
            ListenAddress::Tcp {
                port: 8883,
                bind: Some("192.0.2.1".into()),
                socket_domain: Some(SocketDomain::Ipv4)
            },
            ListenAddress::Tcp {
                port: 1884,
                bind: Some("::1".into()),
                socket_domain: Some(SocketDomain::Ipv6)
            },
            ListenAddress::Unix {
                path: "/run/midge/midge.sock".into()
            },
        ]
    );
    let limits: Vec<_> = config.listeners.iter().map(|l| l.max_connections).collect();
    assert_eq!(limits, vec![None, Some(100), None, Some(0)]);
    assert!(config
        .listeners
        .iter()
        .all(|l| l.protocol == ListenerProtocol::Mqtt));
}

#[test]
fn unix_socket_path_may_contain_spaces() {
    let config = ok("listener 0 /tmp/my socket\n");
    assert_eq!(
        addresses(&config),
        vec![ListenAddress::Unix {
            path: "/tmp/my socket".into()
        }]
    );
}

#[test]
fn port_and_bind_address_configure_the_default_listener() {
    let config = ok("port 1884\n");
    assert!(!config.local_only);
    assert!(!config.allow_anonymous);
    assert_eq!(addresses(&config), vec![tcp(1884, None)]);

    let config = ok("bind_address 127.0.0.1\n");
    assert_eq!(addresses(&config), vec![tcp(1883, Some("127.0.0.1"))]);
    assert!(!config.allow_anonymous);

    // Last port wins, as in Mosquitto; the default listener comes last.
    let config = ok("port 1\nlistener 1885\nport 1886\n");
    assert_eq!(addresses(&config), vec![tcp(1885, None), tcp(1886, None)]);
}

#[test]
fn listener_options_before_any_listener_make_the_default_listener() {
    // Mosquitto 2.0.11 then listens on all interfaces, port 1883. (It also
    // allows anonymous clients there, a quirk Midge does not copy.)
    let config = ok("max_connections 5\n");
    assert_eq!(addresses(&config), vec![tcp(1883, None)]);
    assert_eq!(config.listeners[0].max_connections, Some(5));
    assert!(!config.allow_anonymous);

    let config = ok("socket_domain ipv4\nlistener 1884\n");
    assert_eq!(
        addresses(&config),
        vec![
            tcp(1884, None),
            ListenAddress::Tcp {
                port: 1883,
                bind: None,
                socket_domain: Some(SocketDomain::Ipv4)
            }
        ]
    );

    // `protocol mqtt` and `max_connections -1` are the defaults: no listener.
    assert!(ok("protocol mqtt\nmax_connections -1\n").local_only);
}

// -------------------------------------------------- anonymous access rules

#[test]
fn anonymous_rules_of_mosquitto_2() {
    // No listener: local only, anonymous allowed even when refused in the
    // file, as Mosquitto 2.0 does.
    let config = ok("allow_anonymous false\n");
    assert!(config.local_only);
    assert!(config.allow_anonymous);
    assert!(config.listeners.iter().all(|l| l.allow_anonymous));

    // Any listener: anonymous defaults to false.
    let config = ok("listener 1883\n");
    assert!(!config.allow_anonymous);
    assert!(!config.listeners[0].allow_anonymous);

    // ... unless asked for, before or after the listener line.
    for text in [
        "allow_anonymous true\nlistener 1883\n",
        "listener 1883\nallow_anonymous true\n",
    ] {
        let config = ok(text);
        assert!(config.allow_anonymous, "{text}");
        assert!(config.listeners[0].allow_anonymous, "{text}");
    }

    // Without per_listener_settings, security options are global.
    let config = ok("listener 1883\nallow_anonymous true\nlistener 1884\n");
    assert!(config.listeners.iter().all(|l| l.allow_anonymous));
}

#[test]
fn per_listener_settings_scopes_security_options() {
    let config = ok("\
per_listener_settings true
listener 1883
allow_anonymous true
auto_id_prefix one-
listener 1884
allow_zero_length_clientid false
");
    assert!(config.per_listener_settings);
    let l0 = &config.listeners[0];
    let l1 = &config.listeners[1];
    assert!(l0.allow_anonymous && l0.allow_zero_length_clientid);
    assert_eq!(l0.auto_id_prefix, "one-");
    assert!(!l1.allow_anonymous && !l1.allow_zero_length_clientid);
    assert_eq!(l1.auto_id_prefix, "auto-");

    // Before any listener line they apply to the default listener.
    let config = ok("per_listener_settings true\nport 1885\nallow_anonymous true\nlistener 1886\n");
    assert_eq!(addresses(&config), vec![tcp(1886, None), tcp(1885, None)]);
    assert!(!config.listeners[0].allow_anonymous);
    assert!(config.listeners[1].allow_anonymous);
}

#[test]
fn per_listener_settings_errors() {
    assert_eq!(
        err("allow_anonymous true\nper_listener_settings true\n"),
        "m.conf:2: per_listener_settings must be set before any other security settings \
         (allow_anonymous, allow_zero_length_clientid, auto_id_prefix)"
    );
    // Mosquitto silently drops this allow_anonymous; Midge says so.
    assert_eq!(
        err("per_listener_settings true\nallow_anonymous true\nlistener 1883\n"),
        "m.conf:2: with per_listener_settings true, security options before the first \
         listener line apply to the default listener, which is not configured; move this \
         after a listener line"
    );
}

// ------------------------------------------------------------- include_dir

#[test]
fn include_dir_reads_conf_files_in_mosquitto_order() {
    let dir = TempDir::new("order");
    // The man page's example: 00, 01, A, a, B, b.
    let names = ["b.conf", "A.conf", "01.conf", "a.conf", "B.conf", "00.conf"];
    for (i, name) in names.iter().enumerate() {
        dir.write(name, &format!("# {name}\nlistener {}\n", 2000 + i));
    }
    dir.write("ignored.txt", "this is not read\n");
    dir.write(".conf", "this is not read either\n");
    dir.write("x.conf.bak", "nor this\n");

    let main = dir.write_main(&format!("listener 1883\ninclude_dir {}\n", dir.0.display()));
    let config = parse_file(&main).unwrap();
    let read: Vec<String> = config
        .sources
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        read,
        ["main.cfg", "00.conf", "01.conf", "A.conf", "a.conf", "B.conf", "b.conf"]
    );
    let ports: Vec<u16> = config
        .listeners
        .iter()
        .map(|l| match l.address {
            ListenAddress::Tcp { port, .. } => port,
            ListenAddress::Unix { .. } => 0,
        })
        .collect();
    assert_eq!(ports, [1883, 2005, 2002, 2001, 2003, 2004, 2000]);
    assert!(config.options_seen.contains(&"include_dir"));
}

impl TempDir {
    /// The main file, named so that include_dir does not pick it up.
    fn write_main(&self, text: &str) -> PathBuf {
        self.write("main.cfg", text)
    }
}

#[test]
fn mosquitto_file_order_matches_scmp_p() {
    let mut names: Vec<&[u8]> = vec![
        b"b.conf", b"_x.conf", b"B.conf", b"a.conf", b"ab.conf", b"A.conf", b"a",
    ];
    names.sort_by(|a, b| mosquitto_file_order(a, b));
    let expected: Vec<&[u8]> = vec![
        b"A.conf", b"a", b"a.conf", b"ab.conf", b"B.conf", b"b.conf", b"_x.conf",
    ];
    assert_eq!(names, expected);
}

#[test]
fn each_included_file_starts_at_the_default_listener() {
    // As in Mosquitto: max_connections before the included file's first
    // listener line configures the default listener (all interfaces, 1883),
    // which here collides with the main file's listener.
    let dir = TempDir::new("perfile");
    let inc = dir.0.join("inc");
    fs::create_dir_all(&inc).unwrap();
    let included = inc.join("a.conf");
    fs::write(&included, "max_connections 3\nlistener 1884\n").unwrap();
    let main = dir.write_main(&format!("listener 1883\ninclude_dir {}\n", inc.display()));
    let e = parse_file(&main).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}:1: duplicate listener: the default listener (port, bind_address and listener \
             options before the first listener line) is port 1883 on all interfaces, which is \
             already configured at {}:1",
            included.display(),
            main.display()
        )
    );

    // And a listener of the main file is not the current one in the
    // included file, nor the other way round.
    fs::write(&included, "listener 1884\nmax_connections 3\n").unwrap();
    let main = dir.write_main(&format!(
        "listener 1883\ninclude_dir {}\nmax_connections 7\n",
        inc.display()
    ));
    let config = parse_file(&main).unwrap();
    let limits: Vec<_> = config.listeners.iter().map(|l| l.max_connections).collect();
    assert_eq!(limits, vec![Some(7), Some(3)]);
}

#[test]
fn include_dir_only_from_the_main_file() {
    let dir = TempDir::new("nested");
    let inc = dir.0.join("inc");
    fs::create_dir_all(&inc).unwrap();
    let included = inc.join("a.conf");
    fs::write(&included, format!("\ninclude_dir {}\n", inc.display())).unwrap();
    let main = dir.write_main(&format!("include_dir {}\n", inc.display()));
    assert_eq!(
        parse_file(&main).unwrap_err().to_string(),
        format!(
            "{}:2: include_dir is only read from the main configuration file",
            included.display()
        )
    );
}

#[test]
fn include_dir_may_not_hold_the_main_file() {
    let dir = TempDir::new("self");
    let main = dir.write("main.conf", &format!("include_dir {}\n", dir.0.display()));
    assert_eq!(
        parse_file(&main).unwrap_err().to_string(),
        format!(
            "{}:1: include_dir \"{}\" contains the main configuration file",
            main.display(),
            dir.0.display()
        )
    );
}

// ------------------------------------------------------ one test per class

#[test]
fn error_unknown_option() {
    let e = parse("listener 1883\n\nlistner 1884\n").unwrap_err();
    assert!(matches!(e, ConfigError::UnknownOption { .. }));
    assert_eq!(e.to_string(), "m.conf:3: unknown option \"listner\"");
    assert_eq!(e.file(), Path::new("m.conf"));
    assert_eq!(e.line(), Some(3));
    assert_eq!(e.reason(), "unknown option \"listner\"");
}

#[test]
fn error_not_supported_yet() {
    let e = parse("listener 1883\npsk_file /etc/mosquitto/psk\n").unwrap_err();
    assert!(matches!(e, ConfigError::NotSupported { .. }));
    assert_eq!(
        e.to_string(),
        "m.conf:2: psk_file is not supported by midge yet"
    );
    assert_eq!(
        err("persistence_sync sometimes\n"),
        "m.conf:1: persistence_sync must be always, never or a number of milliseconds, got \"sometimes\""
    );
    assert_eq!(
        err("log_dest dlt\n"),
        "m.conf:1: log_dest dlt is not supported by midge"
    );
    assert_eq!(
        err("clientid_prefixes secure-\n"),
        "m.conf:1: clientid_prefixes is deprecated in Mosquitto 2.0 and not supported by midge"
    );
    assert_eq!(
        err("auth_opt_db_host localhost\n"),
        "m.conf:1: auth_opt_db_host is not supported by midge yet"
    );
}

#[test]
fn error_bad_values() {
    let cases = [
        ("max_inflight_messages abc", "max_inflight_messages must be a whole number, got \"abc\""),
        ("max_inflight_messages 12abc", "max_inflight_messages must be a whole number, got \"12abc\""),
        ("max_inflight_messages 65536", "max_inflight_messages must be between 0 and 65535, got 65536"),
        ("max_queued_messages 99999999999999999999", "max_queued_messages value 99999999999999999999 is out of range"),
        ("max_keepalive 5", "max_keepalive must be between 10 and 65535, got 5"),
        ("max_packet_size 19", "max_packet_size must be 0 (no limit) or at least 20, got 19"),
        ("message_size_limit 268435456", "message_size_limit must be between 0 and 268435455, got 268435456"),
        ("message_size_limit -1", "message_size_limit must be between 0 and 268435455, got -1"),
        ("port 0", "port must be between 1 and 65535, got 0"),
        ("listener 70000", "listener must be between 0 and 65535, got 70000"),
        ("listener abc", "listener must be a whole number, got \"abc\""),
        ("listener", "listener needs a port"),
        ("listener 0", "a listener with port 0 must give a Unix socket path"),
        ("listener 1883 a b", "listener takes 2 values, got 3 (\"1883 a b\")"),
        ("allow_anonymous yes", "allow_anonymous must be true or false, got \"yes\""),
        ("allow_anonymous True", "allow_anonymous must be true or false, got \"True\""),
        ("allow_anonymous", "allow_anonymous needs a value"),
        ("allow_anonymous true false", "allow_anonymous takes 1 value, got 2 (\"true false\")"),
        (
            "allow_anonymous true # yes",
            "allow_anonymous takes 1 value, got 3 (\"true # yes\"); comments must be on a line of their own",
        ),
        ("socket_domain ipv5", "socket_domain must be ipv4 or ipv6, got \"ipv5\""),
        ("protocol mqttsn", "protocol must be mqtt or websockets, got \"mqttsn\""),
        ("max_connections many", "max_connections must be a whole number, got \"many\""),
        ("include_dir", "include_dir needs a value"),
    ];
    for (line, reason) in cases {
        let e = parse(&format!("# first\n{line}\n")).unwrap_err();
        assert!(matches!(e, ConfigError::BadValue { .. }), "{line}: {e:?}");
        assert_eq!(e.to_string(), format!("m.conf:2: {reason}"), "{line}");
    }
    assert_eq!(
        err("listener 0 /tmp/s\nsocket_domain ipv4\n"),
        "m.conf:2: socket_domain does not apply to a Unix socket listener"
    );
}

#[test]
fn error_missing_file() {
    let dir = TempDir::new("missing");
    let path = dir.0.join("nope.conf");
    let e = parse_file(&path).unwrap_err();
    assert!(matches!(e, ConfigError::Unreadable { .. }));
    assert_eq!(e.line(), None);
    assert_eq!(e.to_string(), format!("{}: file not found", path.display()));
}

#[test]
fn error_unreadable_include_dir() {
    let dir = TempDir::new("noinc");
    let missing = dir.0.join("conf.d");
    let e = parse(&format!(
        "listener 1883\ninclude_dir {}\n",
        missing.display()
    ))
    .unwrap_err();
    assert!(matches!(e, ConfigError::IncludeDir { .. }));
    assert_eq!(
        e.to_string(),
        format!(
            "m.conf:2: cannot read include_dir \"{}\": No such file or directory (os error 2)",
            missing.display()
        )
    );
}

#[test]
fn error_duplicate_listener() {
    let e = parse("listener 1883 127.0.0.1\nlistener 1884\nlistener 1883 127.0.0.1\n").unwrap_err();
    assert!(matches!(e, ConfigError::DuplicateListener { .. }));
    assert_eq!(
        e.to_string(),
        "m.conf:3: duplicate listener: port 1883 on 127.0.0.1 is already configured at m.conf:1"
    );
    assert_eq!(
        err("listener 0 /tmp/s\nlistener 0 /tmp/s\n"),
        "m.conf:2: duplicate listener: Unix socket /tmp/s is already configured at m.conf:1"
    );
    assert_eq!(
        err("port 1883\nlistener 1883\n"),
        "m.conf:1: duplicate listener: the default listener (port, bind_address and listener \
         options before the first listener line) is port 1883 on all interfaces, which is \
         already configured at m.conf:2"
    );
    // Same port, other address: not a duplicate.
    assert_eq!(
        ok("listener 1883 127.0.0.1\nlistener 1883 ::1\n")
            .listeners
            .len(),
        2
    );
}

#[test]
fn error_not_utf8() {
    let e = parse_main_bytes(
        b"listener 1883\nauto_id_prefix \xff\xfe\n",
        Path::new("m.conf"),
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "m.conf:2: line is not valid UTF-8 text");
}

// ------------------------------------------------------------- the table

#[test]
fn every_table_entry_is_handled_or_refused() {
    for option in OPTIONS {
        let name = option.name.replace('*', "x");
        let text = format!("{}{name} 1\n", tls_prefix(&name));
        let result = parse(&text);
        match option.support {
            Support::Supported => {
                if let Err(e) = result {
                    assert!(
                        !matches!(
                            e,
                            ConfigError::Invalid { .. }
                                | ConfigError::UnknownOption { .. }
                                | ConfigError::NotSupported { .. }
                        ),
                        "{name}: {e}"
                    );
                }
            }
            Support::NotYet => assert_eq!(
                result.unwrap_err().to_string(),
                format!("m.conf:1: {name} is not supported by midge yet")
            ),
            Support::Refused(reason) => assert_eq!(
                result.unwrap_err().to_string(),
                format!("m.conf:1: {reason}")
            ),
        }
    }
}

#[test]
fn every_supported_option_has_a_handler() {
    // A sample valid line for each supported option; fails when an entry is
    // flipped to Supported without a handler in the parser.
    let samples = [
        ("acl_file", "/etc/midge/acl"),
        ("allow_anonymous", "true"),
        ("allow_zero_length_clientid", "true"),
        ("auto_id_prefix", "x-"),
        ("autosave_interval", "60"),
        ("autosave_on_changes", "false"),
        ("bind_address", "127.0.0.1"),
        ("bind_interface", "lo"),
        ("cafile", "/etc/ca.pem"),
        ("capath", "/etc/ssl/certs"),
        ("certfile", "/etc/cert.pem"),
        ("connect_timeout", "5"),
        ("connection_messages", "false"),
        ("crlfile", "/etc/crl.pem"),
        ("include_dir", "<empty dir>"),
        ("keyfile", "/etc/key.pem"),
        ("listener", "1883"),
        ("log_dest", "syslog"),
        ("log_facility", "5"),
        ("log_timestamp", "false"),
        ("log_timestamp_format", "%Y-%m-%dT%H:%M:%S"),
        ("log_type", "all"),
        ("max_connections", "1"),
        ("max_inflight_bytes", "1"),
        ("max_inflight_messages", "1"),
        ("max_keepalive", "60"),
        ("max_packet_size", "100"),
        ("max_qos", "1"),
        ("max_queued_bytes", "1"),
        ("max_queued_messages", "1"),
        ("max_topic_alias", "5"),
        ("memory_limit", "1000000"),
        ("message_size_limit", "1"),
        ("mount_point", "tenant/"),
        ("password_file", "/etc/midge/passwd"),
        ("per_listener_settings", "false"),
        ("persistence", "false"),
        ("persistence_file", "midge.db"),
        ("persistence_location", "/var/lib/midge/"),
        ("persistence_sync", "always"),
        ("pid_file", "/run/midge.pid"),
        ("port", "1883"),
        ("protocol", "mqtt"),
        ("queue_qos0_messages", "true"),
        ("require_certificate", "false"),
        ("response_information", "responses/"),
        ("retain_available", "true"),
        ("retained_persistence", "false"),
        ("set_tcp_nodelay", "true"),
        ("socket_domain", "ipv4"),
        ("sys_interval", "10"),
        ("tls_version", "tlsv1.2"),
        ("use_identity_as_username", "false"),
        ("use_subject_as_username", "false"),
        ("user", "midge"),
        ("websockets_headers_size", "4096"),
        ("websockets_log_level", "0"),
        ("worker_threads", "2"),
    ];
    let supported: Vec<&str> = OPTIONS
        .iter()
        .filter(|o| o.support == Support::Supported)
        .map(|o| o.name)
        .collect();
    let sampled: Vec<&str> = samples.iter().map(|s| s.0).collect();
    assert_eq!(supported, sampled);
    let empty = TempDir::new("handler");
    let empty_dir = empty.0.display().to_string();
    for (name, value) in samples {
        let value = if value == "<empty dir>" {
            empty_dir.as_str()
        } else {
            value
        };
        let config = ok(&format!("{}{name} {value}\n", tls_prefix(name)));
        if tls_prefix(name).is_empty() {
            assert_eq!(config.options_seen, vec![name]);
        } else {
            assert!(config.options_seen.contains(&name));
        }
    }
}

#[test]
fn seed_operator_configuration() {
    let seed = "\
pid_file /var/run/mosquitto.pid
persistence true
persistence_location /var/lib/mosquitto/
log_dest syslog
log_dest file /var/log/mosquitto/mosquitto.log
log_type error
log_type warning
log_type notice
log_type information
log_type subscribe
log_type unsubscribe
#log_type debug
connection_messages true
log_timestamp true
include_dir /etc/mosquitto/conf.d
";
    let origin = Path::new("/etc/mosquitto/mosquitto.conf");
    // Parsing stops at the first error.
    // Only the include_dir needs a directory that exists.

    // Taking each refused line out in turn (kept as a comment, so the line
    // numbers hold) gives every error the file has, in order.
    let expected: [&str; 0] = [];
    let conf_d = TempDir::new("seed");
    let mut lines: Vec<String> = seed.lines().map(str::to_owned).collect();
    // include_dir is supported; point it at an empty conf.d so the test does
    // not depend on this machine's /etc.
    lines[14] = format!("include_dir {}", conf_d.0.display());
    let mut errors = Vec::new();
    loop {
        match parse_str(&lines.join("\n"), origin) {
            Ok(config) => {
                assert!(config.local_only);
                assert_eq!(
                    config.pid_file,
                    Some(PathBuf::from("/var/run/mosquitto.pid"))
                );
                assert_eq!(
                    config.log.dests,
                    vec![
                        LogDest::Syslog,
                        LogDest::File(PathBuf::from("/var/log/mosquitto/mosquitto.log"))
                    ]
                );
                use log_types::*;
                assert_eq!(
                    config.log.types,
                    ERROR | WARNING | NOTICE | INFORMATION | SUBSCRIBE | UNSUBSCRIBE
                );
                assert!(config.log.connection_messages && config.log.timestamp);
                assert!(config.persistence);
                assert_eq!(
                    config.persistence_location,
                    Some(PathBuf::from("/var/lib/mosquitto/"))
                );
                break;
            }
            Err(e) => {
                let line = e.line().unwrap();
                errors.push(format!("{line}: {}", e.reason()));
                lines[line - 1] = format!("#{}", lines[line - 1]);
            }
        }
    }
    assert_eq!(errors, expected);
}

// ------------------------------------------------------------- robustness

#[test]
fn no_panic_on_odd_input() {
    let values = [
        "",
        "0",
        "-1",
        "+1",
        "-",
        "+",
        "1e3",
        "0x10",
        "99999999999999999999999",
        "-99999999999999999999999",
        "true false",
        "#",
        "\u{0}",
        "é",
        "  ",
        "\t",
        "a b c",
        "/",
        "0 /",
        "65535",
        "65536",
        "4294967296",
        "9223372036854775808",
    ];
    for option in OPTIONS {
        let name = option.name.replace('*', "x");
        for value in values {
            let _ = parse(&format!("{name} {value}\n"));
            let _ = parse(&format!("listener 1883\n{name} {value}\n"));
            let _ = parse(&format!("per_listener_settings true\n{name} {value}\n"));
        }
    }
    let junk: [&[u8]; 7] = [
        b"\xff",
        b"\n\n\n\r\r\r",
        b"listener \xc3",
        b"\0\0\0",
        b"listener 1883\x00",
        b"#\xff\n",
        b" \t \t",
    ];
    for bytes in junk {
        let _ = parse_main_bytes(bytes, Path::new("m.conf"));
    }
}

#[test]
fn port_override_follows_mosquitto_2() {
    let mut config = ok("max_keepalive 60\n");
    assert!(config.apply_port_override(1999));
    assert_eq!(
        addresses(&config),
        vec![tcp(1999, Some("127.0.0.1")), tcp(1999, Some("::1"))]
    );
    let mut config = ok("listener 1884\n");
    assert!(!config.apply_port_override(1999));
    assert_eq!(addresses(&config), vec![tcp(1884, None)]);
}

#[test]
fn logging_options() {
    let c = ok("");
    assert_eq!(c.log, LogConfig::default());
    let c = ok("log_dest stdout\nlog_dest file /tmp/a b.log\nlog_dest stdout\n");
    assert_eq!(
        c.log.dests,
        vec![
            LogDest::Stdout,
            LogDest::File(PathBuf::from("/tmp/a b.log"))
        ]
    );
    assert!(ok("log_dest none\n").log.dests.is_empty());
    assert_eq!(ok("log_type none\n").log.types, 0);
    assert_eq!(
        ok("log_type debug\nlog_type error\n").log.types,
        log_types::DEBUG | log_types::ERROR
    );
    assert_eq!(
        err("log_dest file\n"),
        "m.conf:1: log_dest file needs a path"
    );
    assert!(err("log_dest carrier-pigeon\n").starts_with("m.conf:1: log_dest must be"));
    assert!(err("log_type chatty\n").starts_with("m.conf:1: log_type must be one of"));
    assert!(err("log_facility 8\n").starts_with("m.conf:1:"));
    let c = ok("log_timestamp_format %Y-%m-%d %H:%M:%S\nconnection_messages false\n");
    assert_eq!(c.log.timestamp_format.as_deref(), Some("%Y-%m-%d %H:%M:%S"));
    assert!(!c.log.connection_messages);
    let c = ok("listener 8080\nprotocol websockets\nwebsockets_headers_size 8192\n");
    assert_eq!(c.listeners[0].protocol, ListenerProtocol::Websockets);
    assert_eq!(c.listeners[0].websockets_headers_size, 8192);
}

#[test]
fn tls_listener_options() {
    let c = ok("listener 8883\ncertfile /c.pem\nkeyfile /k.pem\ncafile /ca.pem\nrequire_certificate true\nuse_identity_as_username true\ntls_version tlsv1.3\nlistener 1883\n");
    let tls = c.listeners[0].tls.clone().expect("tls");
    assert_eq!(tls.certfile, PathBuf::from("/c.pem"));
    assert!(tls.require_certificate && tls.use_identity_as_username);
    assert_eq!(tls.tls_version.as_deref(), Some("tlsv1.3"));
    assert!(c.listeners[1].tls.is_none());
    assert_eq!(
        err("listener 8883\ncertfile /c.pem\n"),
        "m.conf:1: listener port 8883 on all interfaces: certfile is set but keyfile is not: TLS needs both"
    );
    assert!(
        err("listener 8883\ncertfile /c\nkeyfile /k\nrequire_certificate true\n")
            .contains("require_certificate needs cafile")
    );
    assert!(err("listener 8883\nciphers ECDHE\n")
        .starts_with("m.conf:2: ciphers is not supported by midge"));
    assert!(err("listener 8883\nciphers_tls1.3 X\n")
        .starts_with("m.conf:2: ciphers_tls1.3 is not supported by midge"));
    assert!(err("listener 8883\ntls_version tlsv1.1\n").contains("TLS 1.2 is the oldest"));
}

/// TLS options only make sense with a certificate and key (and a CA for
/// client certificates): lines that make a lone TLS option valid.
fn tls_prefix(name: &str) -> &'static str {
    const TLS: &[&str] = &[
        "cafile",
        "capath",
        "certfile",
        "keyfile",
        "crlfile",
        "require_certificate",
        "use_identity_as_username",
        "use_subject_as_username",
        "tls_version",
    ];
    if TLS.contains(&name) {
        "certfile /c.pem\nkeyfile /k.pem\ncafile /ca.pem\n"
    } else {
        ""
    }
}

#[test]
fn worker_threads_is_a_count_of_threads() {
    assert_eq!(
        parse("worker_threads 3\n").expect("valid").worker_threads,
        Some(3)
    );
    assert_eq!(parse("").expect("valid").worker_threads, None);
    for bad in ["0", "1025", "many"] {
        let e = parse(&format!("worker_threads {bad}\n")).expect_err(bad);
        assert!(e.to_string().starts_with("m.conf:1: "), "{e}");
    }
}
