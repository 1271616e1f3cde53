//! Command-line and options-file parsing for the three tools, flag for flag
//! as Mosquitto 2.0's `client_shared.c` does it: the same flags, the same
//! checks in the same order, the same error texts (with their newlines).
//!
//! Hand-written rather than clap: mosquitto's flags are irregular (`-t`
//! repeats, `-D` takes three or four words, `-V` takes `mqttv311` or `311`,
//! numbers are read with `atoi`, options files hold one flag per line) and
//! scripts depend on its exact messages and exit codes.

use std::path::PathBuf;
use std::time::Duration;

use midge_codec::{ProtocolVersion, QoS, RetainHandling};

use super::props::{parse_property, PropertySet};
use super::Tool;

/// How midge_pub gets its message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PubMode {
    #[default]
    None,
    /// `-m`
    Message(Vec<u8>),
    /// `-f`
    File(PathBuf),
    /// `-l`
    StdinLine,
    /// `-s`
    StdinFile,
    /// `-n`
    Null,
}

/// Everything the command line and options file say.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub tool: Tool,
    pub host: Option<String>,
    /// `None`: not given (1883). `Some(0)`: `--unix`, host is the socket path.
    pub port: Option<u16>,
    pub bind_address: Option<String>,
    pub id: Option<String>,
    pub id_prefix: Option<String>,
    pub keepalive: u16,
    pub clean_session: bool,
    pub protocol: ProtocolVersion,
    pub qos: QoS,
    pub retain: bool,
    /// midge_pub / midge_rr: the topic to publish to.
    pub topic: Option<String>,
    /// midge_sub: the filters to subscribe to.
    pub topics: Vec<String>,
    pub filter_outs: Vec<String>,
    pub unsub_topics: Vec<String>,
    pub response_topic: Option<String>,
    pub pub_mode: PubMode,
    pub username: Option<String>,
    pub password: Option<Vec<u8>>,
    pub will_topic: Option<String>,
    pub will_payload: Option<Vec<u8>>,
    pub will_qos: QoS,
    pub will_retain: bool,
    /// `-C` (0: unlimited). midge_rr: 1.
    pub msg_count: u32,
    /// `-W` seconds.
    pub timeout: Option<u32>,
    pub no_retain: bool,
    pub retained_only: bool,
    pub remove_retained: bool,
    pub exit_after_sub: bool,
    pub retain_as_published: bool,
    pub verbose: bool,
    pub eol: bool,
    pub format: Option<Vec<u8>>,
    pub pretty: bool,
    pub debug: bool,
    pub quiet: bool,
    pub nodelay: bool,
    pub repeat_count: u32,
    pub repeat_delay: Duration,
    /// -1: not set.
    pub session_expiry_interval: i64,
    pub max_inflight: u32,
    /// Out of 10000 (`--random-filter` percent times 100).
    pub random_filter: u32,
    pub props: PropertySet,
    /// `--cafile`
    pub cafile: Option<PathBuf>,
    /// `--capath`
    pub capath: Option<PathBuf>,
    /// `--cert`
    pub certfile: Option<PathBuf>,
    /// `--key`
    pub keyfile: Option<PathBuf>,
    /// `--insecure`
    pub insecure: bool,
    /// `--tls-version`, checked when connecting (as mosquitto does).
    pub tls_version: Option<String>,
    /// `--tls-alpn`
    pub tls_alpn: Option<Vec<u8>>,
    /// `--tls-use-os-certs`, or an `mqtts://` URL.
    pub tls_use_os_certs: bool,
}

impl Config {
    pub fn new(tool: Tool) -> Config {
        Config {
            tool,
            host: None,
            port: None,
            bind_address: None,
            id: None,
            id_prefix: None,
            keepalive: 60,
            clean_session: true,
            protocol: if tool == Tool::Rr {
                ProtocolVersion::V5
            } else {
                ProtocolVersion::V311
            },
            qos: QoS::AtMostOnce,
            retain: false,
            topic: None,
            topics: Vec::new(),
            filter_outs: Vec::new(),
            unsub_topics: Vec::new(),
            response_topic: None,
            pub_mode: PubMode::None,
            username: None,
            password: None,
            will_topic: None,
            will_payload: None,
            will_qos: QoS::AtMostOnce,
            will_retain: false,
            msg_count: if tool == Tool::Rr { 1 } else { 0 },
            timeout: None,
            no_retain: false,
            retained_only: false,
            remove_retained: false,
            exit_after_sub: false,
            retain_as_published: false,
            verbose: false,
            eol: true,
            format: None,
            pretty: false,
            debug: false,
            quiet: false,
            nodelay: false,
            repeat_count: 1,
            repeat_delay: Duration::ZERO,
            session_expiry_interval: -1,
            max_inflight: 20,
            random_filter: 10000,
            props: PropertySet::default(),
            cafile: None,
            capath: None,
            certfile: None,
            keyfile: None,
            insecure: false,
            tls_version: None,
            tls_alpn: None,
            tls_use_os_certs: false,
        }
    }

    /// The subscription's Retain Handling: `-R` asks the broker (5.0) not
    /// to send retained messages at all.
    pub fn retain_handling(&self) -> RetainHandling {
        if self.no_retain {
            RetainHandling::DoNotSend
        } else {
            RetainHandling::SendAtSubscribe
        }
    }
}

/// Why parsing stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgError {
    /// `--help`: print the usage on stdout, exit 1 (as mosquitto does).
    Help,
    /// An error: `message` goes to stderr as is; then, when `usage_hint`,
    /// "\nUse 'midge_X --help' to see usage.\n".
    Invalid { message: String, usage_hint: bool },
}

fn err<T>(message: impl Into<String>) -> Result<T, ArgError> {
    Err(ArgError::Invalid {
        message: message.into(),
        usage_hint: true,
    })
}

/// C's `atoi`: optional blanks and sign, then digits; anything else ends
/// the number; no digits is 0. Saturates instead of overflowing.
pub fn atoi(s: &[u8]) -> i64 {
    let mut i = 0;
    while i < s.len() && matches!(s[i], b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c) {
        i += 1;
    }
    let mut neg = false;
    if i < s.len() && (s[i] == b'+' || s[i] == b'-') {
        neg = s[i] == b'-';
        i += 1;
    }
    let mut v: i64 = 0;
    while i < s.len() && s[i].is_ascii_digit() {
        v = v.saturating_mul(10).saturating_add(i64::from(s[i] - b'0'));
        i += 1;
    }
    if neg {
        -v
    } else {
        v
    }
}

/// C's `atof` for the few flags that take a decimal number.
fn atof(s: &[u8]) -> f64 {
    let text = String::from_utf8_lossy(s);
    let t = text.trim_start();
    let mut end = 0;
    let bytes = t.as_bytes();
    let mut seen_digit = false;
    let mut seen_dot = false;
    for (k, &b) in bytes.iter().enumerate() {
        match b {
            b'+' | b'-' if k == 0 => {}
            b'0'..=b'9' => seen_digit = true,
            b'.' if !seen_dot => seen_dot = true,
            _ => break,
        }
        end = k + 1;
    }
    if !seen_digit {
        return 0.0;
    }
    t[..end].parse().unwrap_or(0.0)
}

fn utf8(arg: &[u8], flag: &str) -> Result<String, ArgError> {
    match std::str::from_utf8(arg) {
        Ok(s) if !s.contains('\0') => Ok(s.to_string()),
        _ => err(format!("Error: Malformed UTF-8 in {flag} argument.\n\n")),
    }
}

/// A topic name to publish to: no wildcards.
fn pub_topic_ok(t: &str) -> bool {
    !t.is_empty() && !t.contains(['+', '#']) && t.len() <= 65535
}

/// A subscription filter: `#` last and alone in its level, `+` alone.
pub fn sub_topic_ok(t: &str) -> bool {
    if t.is_empty() || t.len() > 65535 {
        return false;
    }
    let levels: Vec<&str> = t.split('/').collect();
    for (k, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || k != levels.len() - 1) {
            return false;
        }
        if level.contains('+') && *level != "+" {
            return false;
        }
    }
    true
}

fn add_topic(cfg: &mut Config, topic: &[u8], flag: &str) -> Result<(), ArgError> {
    let t = utf8(topic, flag)?;
    match cfg.tool {
        Tool::Pub | Tool::Rr => {
            if !pub_topic_ok(&t) {
                return err(format!(
                    "Error: Invalid publish topic '{t}', does it contain '+' or '#'?\n"
                ));
            }
            cfg.topic = Some(t);
        }
        Tool::Sub => {
            if !sub_topic_ok(&t) {
                return err(format!(
                    "Error: Invalid subscription topic '{t}', are all '+' and '#' wildcards correct?\n"
                ));
            }
            cfg.topics.push(t);
        }
    }
    Ok(())
}

/// mosquitto's flags that need OpenSSL or SOCKS, which Midge's tools do
/// not have: refused with what each is, rather than "Unknown option".
const UNSUPPORTED_FLAGS: &[(&str, &str)] = &[
    ("--keyform", "OpenSSL engine keys"),
    ("--ciphers", "OpenSSL cipher lists"),
    ("--tls-engine", "OpenSSL engines"),
    ("--tls-engine-kpass-sha1", "OpenSSL engines"),
    ("--psk", "TLS-PSK"),
    ("--psk-identity", "TLS-PSK"),
    ("--proxy", "SOCKS proxy"),
];

/// Parses the words of one command line (without the program name) or one
/// options-file line into `cfg`.
pub fn parse_words(cfg: &mut Config, args: &[Vec<u8>]) -> Result<(), ArgError> {
    let tool = cfg.tool;
    let mut i = 0;
    while i < args.len() {
        let a = String::from_utf8_lossy(&args[i]).into_owned();
        let last = i + 1 >= args.len();
        let next = args.get(i + 1).cloned().unwrap_or_default();
        let unknown = || err(format!("Error: Unknown option '{a}'.\n"));
        macro_rules! need {
            ($msg:expr) => {
                if last {
                    return err(format!(
                        "Error: {} argument given but no {} specified.\n\n",
                        a_short(&a),
                        $msg
                    ));
                }
            };
        }
        match a.as_str() {
            "--cafile" => {
                need!("file");
                cfg.cafile = Some(PathBuf::from(os_string(&next)));
                i += 1;
            }
            "--capath" => {
                need!("directory");
                cfg.capath = Some(PathBuf::from(os_string(&next)));
                i += 1;
            }
            "--cert" => {
                need!("file");
                cfg.certfile = Some(PathBuf::from(os_string(&next)));
                i += 1;
            }
            "--key" => {
                need!("file");
                cfg.keyfile = Some(PathBuf::from(os_string(&next)));
                i += 1;
            }
            "--insecure" => cfg.insecure = true,
            "--tls-use-os-certs" => cfg.tls_use_os_certs = true,
            "--tls-version" => {
                need!("version");
                cfg.tls_version = Some(String::from_utf8_lossy(&next).into_owned());
                i += 1;
            }
            "--tls-alpn" => {
                need!("protocol");
                cfg.tls_alpn = Some(next.clone());
                i += 1;
            }
            "-A" => {
                need!("address");
                cfg.bind_address = Some(String::from_utf8_lossy(&next).into_owned());
                i += 1;
            }
            "-C" => {
                if tool != Tool::Sub {
                    return unknown();
                }
                need!("count");
                let n = atoi(&next);
                if n < 1 {
                    return err(format!(
                        "Error: Invalid message count \"{}\".\n\n",
                        n as i32
                    ));
                }
                cfg.msg_count = u32::try_from(n).unwrap_or(u32::MAX);
                i += 1;
            }
            "-c" | "--disable-clean-session" => cfg.clean_session = false,
            "-d" | "--debug" => cfg.debug = true,
            "-D" | "--property" => {
                i += 1;
                parse_property(&mut cfg.props, args, &mut i).map_err(|m| ArgError::Invalid {
                    message: m,
                    usage_hint: true,
                })?;
                cfg.protocol = ProtocolVersion::V5;
            }
            "-e" => {
                if tool != Tool::Rr {
                    return unknown();
                }
                need!("response topic");
                let t = utf8(&next, "-e")?;
                if !pub_topic_ok(&t) {
                    return err(format!(
                        "Error: Invalid response topic '{t}', does it contain '+' or '#'?\n"
                    ));
                }
                cfg.response_topic = Some(t);
                i += 1;
            }
            "-E" => {
                if tool != Tool::Sub {
                    return unknown();
                }
                cfg.exit_after_sub = true;
            }
            "-f" | "--file" => {
                if tool == Tool::Sub {
                    return unknown();
                }
                if cfg.pub_mode != PubMode::None {
                    return err("Error: Only one type of message can be sent at once.\n\n");
                }
                need!("file");
                cfg.pub_mode = PubMode::File(PathBuf::from(os_string(&next)));
                i += 1;
            }
            "-F" => {
                if tool == Tool::Pub {
                    return unknown();
                }
                need!("format");
                if let Err(m) = super::format::check_format(&next) {
                    return err(m);
                }
                cfg.format = Some(next.clone());
                i += 1;
            }
            "--help" => return Err(ArgError::Help),
            "-h" | "--host" => {
                need!("host");
                cfg.host = Some(String::from_utf8_lossy(&next).into_owned());
                i += 1;
            }
            "-i" | "--id" => {
                if cfg.id_prefix.is_some() {
                    return err("Error: -i and -I argument cannot be used together.\n\n");
                }
                need!("id");
                cfg.id = Some(String::from_utf8_lossy(&next).into_owned());
                i += 1;
            }
            "-I" | "--id-prefix" => {
                if cfg.id.is_some() {
                    return err("Error: -i and -I argument cannot be used together.\n\n");
                }
                need!("id prefix");
                cfg.id_prefix = Some(String::from_utf8_lossy(&next).into_owned());
                i += 1;
            }
            "-k" | "--keepalive" => {
                need!("keepalive");
                let k = atoi(&next);
                if !(5..=65535).contains(&k) {
                    return err("Error: Invalid keepalive given, it must be between 5 and 65535 inclusive.\n\n");
                }
                cfg.keepalive = k as u16;
                i += 1;
            }
            "-L" | "--url" => {
                need!("URL");
                parse_url(cfg, &next)?;
                i += 1;
            }
            "-l" | "--stdin-line" => {
                if tool != Tool::Pub {
                    return unknown();
                }
                if cfg.pub_mode != PubMode::None {
                    return err("Error: Only one type of message can be sent at once.\n\n");
                }
                cfg.pub_mode = PubMode::StdinLine;
            }
            "-m" | "--message" => {
                if tool == Tool::Sub {
                    return unknown();
                }
                if cfg.pub_mode != PubMode::None {
                    return err("Error: Only one type of message can be sent at once.\n\n");
                }
                need!("message");
                cfg.pub_mode = PubMode::Message(next.clone());
                i += 1;
            }
            "-M" => {
                need!("max_inflight");
                let n = atoi(&next);
                if n < 1 {
                    return err("Error: Maximum inflight messages must be greater than 0.\n\n");
                }
                cfg.max_inflight = u32::try_from(n).unwrap_or(u32::MAX);
                i += 1;
            }
            "--nodelay" => cfg.nodelay = true,
            "-n" | "--null-message" => {
                if tool == Tool::Sub {
                    return unknown();
                }
                if cfg.pub_mode != PubMode::None {
                    return err("Error: Only one type of message can be sent at once.\n\n");
                }
                cfg.pub_mode = PubMode::Null;
            }
            "-N" => {
                if tool == Tool::Pub {
                    return unknown();
                }
                cfg.eol = false;
            }
            "-p" | "--port" => {
                need!("port");
                let p = atoi(&next);
                if !(0..=65535).contains(&p) {
                    return err(format!("Error: Invalid port given: {}\n", p as i32));
                }
                cfg.port = Some(p as u16);
                i += 1;
            }
            "--pretty" => {
                if tool == Tool::Pub {
                    return unknown();
                }
                cfg.pretty = true;
            }
            "-P" | "--pw" => {
                need!("password");
                cfg.password = Some(next.clone());
                i += 1;
            }
            "-q" | "--qos" => {
                need!("QoS");
                let q = atoi(&next);
                match QoS::from_u8(u8::try_from(q).unwrap_or(u8::MAX)) {
                    Some(q) => cfg.qos = q,
                    None => return err(format!("Error: Invalid QoS given: {}\n", q as i32)),
                }
                i += 1;
            }
            "--quiet" => cfg.quiet = true,
            "-r" | "--retain" => {
                if tool != Tool::Pub {
                    return unknown();
                }
                cfg.retain = true;
            }
            "-R" => {
                if tool == Tool::Pub {
                    return unknown();
                }
                cfg.no_retain = true;
            }
            "--random-filter" => {
                if tool != Tool::Sub {
                    return unknown();
                }
                need!("chance");
                let r = (10.0 * atof(&next)) as i64;
                if !(1..=10000).contains(&r) {
                    return err("Error: --random-filter chance must be between 0.1-100.0\n\n");
                }
                cfg.random_filter = r as u32;
                i += 1;
            }
            "--remove-retained" => {
                if tool != Tool::Sub {
                    return unknown();
                }
                cfg.remove_retained = true;
            }
            "--repeat" => {
                if tool != Tool::Pub {
                    return unknown();
                }
                need!("count");
                let n = atoi(&next);
                if n < 1 {
                    return err("Error: --repeat argument must be >0.\n\n");
                }
                cfg.repeat_count = u32::try_from(n).unwrap_or(u32::MAX);
                i += 1;
            }
            "--repeat-delay" => {
                if tool != Tool::Pub {
                    return unknown();
                }
                need!("time");
                let f = atof(&next);
                if f < 0.0 {
                    return err("Error: --repeat-delay argument must be >=0.0.\n\n");
                }
                cfg.repeat_delay = Duration::from_micros((f * 1.0e6) as u64);
                i += 1;
            }
            "--retain-as-published" => {
                if tool == Tool::Pub {
                    return unknown();
                }
                cfg.retain_as_published = true;
            }
            "--retained-only" => {
                if tool != Tool::Sub {
                    return unknown();
                }
                cfg.retained_only = true;
            }
            "-s" | "--stdin-file" => {
                if tool == Tool::Sub {
                    return unknown();
                }
                if cfg.pub_mode != PubMode::None {
                    return err("Error: Only one type of message can be sent at once.\n\n");
                }
                cfg.pub_mode = PubMode::StdinFile;
            }
            "-t" | "--topic" => {
                need!("topic");
                add_topic(cfg, &next, "-t")?;
                i += 1;
            }
            "-T" | "--filter-out" => {
                if tool != Tool::Sub {
                    return unknown();
                }
                need!("topic filter");
                let t = utf8(&next, "-T")?;
                if !sub_topic_ok(&t) {
                    return err(format!(
                        "Error: Invalid filter topic '{t}', are all '+' and '#' wildcards correct?\n"
                    ));
                }
                cfg.filter_outs.push(t);
                i += 1;
            }
            "-U" | "--unsubscribe" => {
                if tool != Tool::Sub {
                    return unknown();
                }
                need!("unsubscribe topic");
                let t = utf8(&next, "-U")?;
                if !sub_topic_ok(&t) {
                    return err(format!(
                        "Error: Invalid unsubscribe topic '{t}', are all '+' and '#' wildcards correct?\n"
                    ));
                }
                cfg.unsub_topics.push(t);
                i += 1;
            }
            "-u" | "--username" => {
                need!("username");
                cfg.username = Some(String::from_utf8_lossy(&next).into_owned());
                i += 1;
            }
            "--unix" => {
                need!("socket path");
                cfg.host = Some(String::from_utf8_lossy(&next).into_owned());
                cfg.port = Some(0);
                i += 1;
            }
            "-V" | "--protocol-version" => {
                if last {
                    return err(
                        "Error: --protocol-version argument given but no version specified.\n\n",
                    );
                }
                cfg.protocol = match next.as_slice() {
                    b"mqttv31" | b"31" => ProtocolVersion::V31,
                    b"mqttv311" | b"311" => ProtocolVersion::V311,
                    b"mqttv5" | b"5" => ProtocolVersion::V5,
                    _ => return err("Error: Invalid protocol version argument given.\n\n"),
                };
                i += 1;
            }
            "-v" | "--verbose" => {
                if tool == Tool::Pub {
                    return unknown();
                }
                cfg.verbose = true;
            }
            "-W" => {
                if tool == Tool::Pub {
                    return unknown();
                }
                need!("timeout");
                let n = atoi(&next);
                if n < 1 {
                    return err(format!("Error: Invalid timeout \"{}\".\n\n", n as i32));
                }
                cfg.timeout = Some(u32::try_from(n).unwrap_or(u32::MAX));
                i += 1;
            }
            "--will-payload" => {
                need!("will payload");
                cfg.will_payload = Some(next.clone());
                i += 1;
            }
            "--will-qos" => {
                need!("will QoS");
                let q = atoi(&next);
                match QoS::from_u8(u8::try_from(q).unwrap_or(u8::MAX)) {
                    Some(q) => cfg.will_qos = q,
                    None => return err(format!("Error: Invalid will QoS {}.\n\n", q as i32)),
                }
                i += 1;
            }
            "--will-retain" => cfg.will_retain = true,
            "--will-topic" => {
                need!("will topic");
                let t = utf8(&next, "--will-topic")?;
                if !pub_topic_ok(&t) {
                    return err(format!(
                        "Error: Invalid will topic '{t}', does it contain '+' or '#'?\n"
                    ));
                }
                cfg.will_topic = Some(t);
                i += 1;
            }
            "-x" => {
                need!("session expiry interval");
                cfg.session_expiry_interval = parse_expiry(&next)?;
                i += 1;
            }
            other => {
                if let Some((_, what)) = UNSUPPORTED_FLAGS.iter().find(|(f, _)| *f == other) {
                    return Err(ArgError::Invalid {
                        message: format!(
                            "Error: {other} is not supported by {} ({what}).\n",
                            tool.name()
                        ),
                        usage_hint: false,
                    });
                }
                return unknown();
            }
        }
        i += 1;
    }
    Ok(())
}

/// The flag as mosquitto names it in "no X specified" messages.
fn a_short(a: &str) -> &str {
    match a {
        "--host" => "-h",
        "--id" => "-i",
        "--id-prefix" => "-I",
        "--keepalive" => "-k",
        "--url" => "-L",
        "--message" => "-m",
        "--file" => "-f",
        "--port" => "-p",
        "--pw" => "-P",
        "--qos" => "-q",
        "--topic" => "-t",
        "--filter-out" => "-T",
        "--unsubscribe" => "-U",
        "--username" => "-u",
        other => other,
    }
}

#[cfg(unix)]
fn os_string(b: &[u8]) -> std::ffi::OsString {
    use std::os::unix::ffi::OsStringExt;
    std::ffi::OsString::from_vec(b.to_vec())
}

fn parse_expiry(v: &[u8]) -> Result<i64, ArgError> {
    if v == "∞".as_bytes() {
        return Ok(i64::from(u32::MAX));
    }
    let s = String::from_utf8_lossy(v);
    // strtol(…, 0): decimal, 0x hex or 0 octal, and the whole word.
    let t = s.trim_start();
    let (neg, body) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let parsed = if let Some(h) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        i64::from_str_radix(h, 16)
    } else if body.len() > 1 && body.starts_with('0') {
        i64::from_str_radix(&body[1..], 8)
    } else {
        body.parse::<i64>()
    };
    let n = match parsed {
        Ok(n) if !body.is_empty() => {
            if neg {
                -n
            } else {
                n
            }
        }
        _ => return err("Error: session-expiry-interval not a number.\n\n"),
    };
    if n > i64::from(u32::MAX) || n < -1 {
        return err("Error: session-expiry-interval out of range.\n\n");
    }
    Ok(if n == -1 { i64::from(u32::MAX) } else { n })
}

fn parse_url(cfg: &mut Config, url: &[u8]) -> Result<(), ArgError> {
    let s = String::from_utf8_lossy(url).into_owned();
    let lower = s.to_ascii_lowercase();
    let rest = if lower.starts_with("mqtt://") {
        cfg.port = Some(1883);
        &s[7..]
    } else if lower.starts_with("mqtts://") {
        // TLS trusting the system's CAs (and --cafile/--capath if given).
        cfg.port = Some(8883);
        cfg.tls_use_os_certs = true;
        &s[8..]
    } else {
        return err("Error: unsupported URL scheme.\n\n");
    };
    let Some(slash) = rest.find('/') else {
        return err("Error: Invalid URL for -L argument specified - topic missing.\n");
    };
    let (mut hostpart, topic) = (&rest[..slash], &rest[slash + 1..]);
    add_topic(cfg, topic.as_bytes(), "-L topic")?;
    if let Some(at) = hostpart.find('@') {
        let userinfo = &hostpart[..at];
        match userinfo.find(':') {
            Some(c) => {
                cfg.username = Some(userinfo[..c].to_string());
                cfg.password = Some(userinfo.as_bytes()[c + 1..].to_vec());
            }
            None => cfg.username = Some(userinfo.to_string()),
        }
        hostpart = &hostpart[at + 1..];
    }
    match hostpart.find(':') {
        Some(c) => {
            cfg.host = Some(hostpart[..c].to_string());
            let p = atoi(&hostpart.as_bytes()[c + 1..]);
            cfg.port = Some(u16::try_from(p).unwrap_or(0));
        }
        None => cfg.host = Some(hostpart.to_string()),
    }
    Ok(())
}

/// Splits an options-file line as mosquitto does: the first word, then the
/// rest of the line as one argument. Comments start with `#`.
pub fn options_file_words(text: &[u8]) -> Vec<Vec<Vec<u8>>> {
    let mut lines = Vec::new();
    for raw in text.split(|b| *b == b'\n') {
        if raw.first() == Some(&b'#') {
            continue;
        }
        let mut line = raw;
        while let Some((&last, head)) = line.split_last() {
            if last == b'\r' || last == b'\n' {
                line = head;
            } else {
                break;
            }
        }
        let start = line.iter().position(|b| *b != b' ');
        let Some(start) = start else { continue };
        let line = &line[start..];
        let mut words = Vec::new();
        match line.iter().position(|b| *b == b' ') {
            Some(sp) => {
                words.push(line[..sp].to_vec());
                let rest = &line[sp + 1..];
                if !rest.is_empty() {
                    words.push(rest.to_vec());
                }
            }
            None => words.push(line.to_vec()),
        }
        lines.push(words);
    }
    lines
}

/// Where the default options file is: `$XDG_CONFIG_HOME/midge_X`, else
/// `$HOME/.config/midge_X`.
pub fn options_file_path(tool: Tool) -> Option<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME") {
        return Some(PathBuf::from(x).join(tool.name()));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config").join(tool.name()))
}

/// Parses the options file (if any) and then the command line, and checks
/// the combination, like `client_config_load`.
pub fn load(tool: Tool, argv: &[Vec<u8>], options_file: Option<&[u8]>) -> Result<Config, ArgError> {
    let mut cfg = Config::new(tool);
    if let Some(text) = options_file {
        for words in options_file_words(text) {
            parse_words(&mut cfg, &words)?;
        }
    }
    parse_words(&mut cfg, argv)?;
    finish(&mut cfg)?;
    Ok(cfg)
}

fn finish(cfg: &mut Config) -> Result<(), ArgError> {
    if cfg.will_payload.is_some() && cfg.will_topic.is_none() {
        return err("Error: Will payload given, but no will topic given.\n");
    }
    if cfg.will_retain && cfg.will_topic.is_none() {
        return err("Error: Will retain given, but no will topic given.\n");
    }
    if cfg.certfile.is_some() != cfg.keyfile.is_some() {
        return err("Error: Both certfile and keyfile must be provided if one of them is set.\n");
    }
    if cfg.protocol == ProtocolVersion::V5 {
        if !cfg.clean_session && cfg.session_expiry_interval == -1 {
            cfg.session_expiry_interval = i64::from(u32::MAX);
        }
        if cfg.session_expiry_interval > 0 {
            if cfg.session_expiry_interval == i64::from(u32::MAX)
                && (cfg.id_prefix.is_some() || cfg.id.is_none())
            {
                return err("Error: You must provide a client id if you are using an infinite session expiry interval.\n");
            }
            cfg.props.connect.session_expiry_interval =
                Some(u32::try_from(cfg.session_expiry_interval).unwrap_or(u32::MAX));
        }
    } else if !cfg.clean_session && (cfg.id_prefix.is_some() || cfg.id.is_none()) {
        return err("Error: You must provide a client id if you are using the -c option.\n");
    }
    if cfg.tool == Tool::Sub && cfg.topics.is_empty() {
        return err("Error: You must specify a topic to subscribe to.\n");
    }
    if cfg.host.is_none() {
        cfg.host = Some("localhost".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &[&str]) -> Vec<Vec<u8>> {
        s.iter().map(|w| w.as_bytes().to_vec()).collect()
    }

    fn ok(tool: Tool, s: &[&str]) -> Config {
        match load(tool, &words(s), None) {
            Ok(c) => c,
            Err(e) => panic!("{s:?}: {e:?}"),
        }
    }

    fn bad(tool: Tool, s: &[&str]) -> String {
        match load(tool, &words(s), None) {
            Ok(c) => panic!("{s:?} parsed: {c:?}"),
            Err(ArgError::Invalid { message, .. }) => message,
            Err(ArgError::Help) => "HELP".into(),
        }
    }

    #[test]
    fn good_command_lines() {
        let c = ok(Tool::Sub, &["-t", "sensors/temperature", "-q", "1"]);
        assert_eq!(c.topics, vec!["sensors/temperature"]);
        assert_eq!(c.qos, QoS::AtLeastOnce);
        assert_eq!(c.host.as_deref(), Some("localhost"));
        assert_eq!(c.port, None);

        let c = ok(
            Tool::Pub,
            &["-t", "a/b", "-m", "32", "-q", "2", "-r", "-p", "1884"],
        );
        assert_eq!(c.topic.as_deref(), Some("a/b"));
        assert_eq!(c.pub_mode, PubMode::Message(b"32".to_vec()));
        assert!(c.retain);
        assert_eq!(c.port, Some(1884));

        let c = ok(
            Tool::Sub,
            &[
                "-t", "a", "-t", "b/#", "-T", "b/x", "-U", "c", "-v", "-N", "-V", "mqttv5",
            ],
        );
        assert_eq!(c.topics, vec!["a", "b/#"]);
        assert_eq!(c.filter_outs, vec!["b/x"]);
        assert_eq!(c.unsub_topics, vec!["c"]);
        assert!(c.verbose && !c.eol);
        assert_eq!(c.protocol, ProtocolVersion::V5);

        for (v, want) in [
            ("31", ProtocolVersion::V31),
            ("mqttv31", ProtocolVersion::V31),
            ("311", ProtocolVersion::V311),
            ("5", ProtocolVersion::V5),
        ] {
            assert_eq!(ok(Tool::Pub, &["-t", "a", "-n", "-V", v]).protocol, want);
        }

        // -D switches to 5.0, -V afterwards wins.
        let c = ok(
            Tool::Pub,
            &["-t", "a", "-n", "-D", "publish", "user-property", "k", "v"],
        );
        assert_eq!(c.protocol, ProtocolVersion::V5);
        let c = ok(
            Tool::Pub,
            &[
                "-t",
                "a",
                "-n",
                "-D",
                "connect",
                "receive-maximum",
                "5",
                "-V",
                "311",
            ],
        );
        assert_eq!(c.protocol, ProtocolVersion::V311);

        let c = ok(
            Tool::Pub,
            &["-L", "mqtt://user:pw@example.org:1999/some/topic", "-n"],
        );
        assert_eq!(c.host.as_deref(), Some("example.org"));
        assert_eq!(c.port, Some(1999));
        assert_eq!(c.username.as_deref(), Some("user"));
        assert_eq!(c.password.as_deref(), Some(&b"pw"[..]));
        assert_eq!(c.topic.as_deref(), Some("some/topic"));

        let c = ok(Tool::Sub, &["--unix", "/tmp/s.sock", "-t", "a"]);
        assert_eq!(c.port, Some(0));
        assert_eq!(c.host.as_deref(), Some("/tmp/s.sock"));

        // -c with 5.0 and an id: infinite session expiry.
        let c = ok(Tool::Sub, &["-t", "a", "-c", "-i", "me", "-V", "5"]);
        assert_eq!(c.props.connect.session_expiry_interval, Some(u32::MAX));
        let c = ok(Tool::Sub, &["-t", "a", "-x", "60", "-V", "5"]);
        assert_eq!(c.props.connect.session_expiry_interval, Some(60));

        let c = ok(
            Tool::Pub,
            &["-t", "a", "-n", "--repeat", "3", "--repeat-delay", "0.5"],
        );
        assert_eq!(c.repeat_count, 3);
        assert_eq!(c.repeat_delay, Duration::from_millis(500));

        let c = ok(Tool::Rr, &["-t", "req", "-e", "resp", "-m", "x"]);
        assert_eq!(c.protocol, ProtocolVersion::V5);
        assert_eq!(c.msg_count, 1);
        assert_eq!(c.response_topic.as_deref(), Some("resp"));

        let c = ok(Tool::Sub, &["-L", "mqtts://u:p@h:1234/a/b", "--insecure"]);
        assert_eq!((c.host.as_deref(), c.port), (Some("h"), Some(1234)));
        assert!(c.tls_use_os_certs && c.insecure);
        assert_eq!(c.topics, ["a/b"]);
        let c = ok(Tool::Pub, &["-L", "MQTTS://h/t", "-m", "x"]);
        assert_eq!(c.port, Some(8883));
        let c = ok(
            Tool::Pub,
            &[
                "-t", "a", "-m", "b", "--cafile", "ca.pem", "--cert", "c.pem", "--key", "c.key",
            ],
        );
        assert_eq!(c.cafile, Some(PathBuf::from("ca.pem")));
        assert_eq!(c.keyfile, Some(PathBuf::from("c.key")));
        assert_eq!(c.port, None);

        // atoi: "1x" is 1, as in C.
        assert_eq!(ok(Tool::Sub, &["-t", "a", "-C", "1x"]).msg_count, 1);
    }

    #[test]
    fn bad_command_lines() {
        let cases: &[(Tool, &[&str], &str)] = &[
            (Tool::Pub, &["-z"], "Error: Unknown option '-z'.\n"),
            (Tool::Pub, &["-t"], "Error: -t argument given but no topic specified.\n\n"),
            (Tool::Pub, &["--topic"], "Error: -t argument given but no topic specified.\n\n"),
            (Tool::Pub, &["-t", "a", "-m", "a", "-m", "b"], "Error: Only one type of message can be sent at once.\n\n"),
            (Tool::Pub, &["-t", "x/#", "-m", "a"], "Error: Invalid publish topic 'x/#', does it contain '+' or '#'?\n"),
            (Tool::Sub, &["-t", "x/#/a"], "Error: Invalid subscription topic 'x/#/a', are all '+' and '#' wildcards correct?\n"),
            (Tool::Sub, &["-t", "a", "-q", "3"], "Error: Invalid QoS given: 3\n"),
            (Tool::Sub, &["-t", "a", "-V", "6"], "Error: Invalid protocol version argument given.\n\n"),
            (Tool::Sub, &["-t", "a", "-k", "2"], "Error: Invalid keepalive given, it must be between 5 and 65535 inclusive.\n\n"),
            (Tool::Pub, &["-t", "a", "-m", "b", "-c"], "Error: You must provide a client id if you are using the -c option.\n"),
            (Tool::Sub, &["-t", "a", "-F", "%z"], "Error: Invalid format specifier 'z'.\n"),
            (Tool::Sub, &["-t", "a", "-F", "%"], "Error: Incomplete format specifier.\n"),
            (Tool::Sub, &["-t", "a", "-F", "\\q"], "Error: Invalid escape specifier 'q'.\n"),
            (Tool::Sub, &["-t", "a", "-C", "0"], "Error: Invalid message count \"0\".\n\n"),
            (Tool::Pub, &["-t", "a", "-m", "b", "-p", "99999"], "Error: Invalid port given: 99999\n"),
            (Tool::Sub, &[], "Error: You must specify a topic to subscribe to.\n"),
            (Tool::Sub, &["-U", "a"], "Error: You must specify a topic to subscribe to.\n"),
            (Tool::Pub, &["-t", "a", "-v"], "Error: Unknown option '-v'.\n"),
            (Tool::Sub, &["-t", "a", "-m", "x"], "Error: Unknown option '-m'.\n"),
            (Tool::Sub, &["-t", "a", "-W", "0"], "Error: Invalid timeout \"0\".\n\n"),
            (Tool::Pub, &["-t", "a", "-n", "--will-payload", "x"], "Error: Will payload given, but no will topic given.\n"),
            (Tool::Pub, &["-t", "a", "-n", "-x", "abc"], "Error: session-expiry-interval not a number.\n\n"),
            (Tool::Pub, &["-L", "http://x/y"], "Error: unsupported URL scheme.\n\n"),
            (Tool::Pub, &["-L", "mqttx://x/y"], "Error: unsupported URL scheme.\n\n"),
            (Tool::Pub, &["-L", "mqtt://x"], "Error: Invalid URL for -L argument specified - topic missing.\n"),
            (Tool::Pub, &["-i", "a", "-I", "b"], "Error: -i and -I argument cannot be used together.\n\n"),
            (Tool::Sub, &["-t", "a", "--psk", "x"], "Error: --psk is not supported by midge_sub (TLS-PSK).\n"),
            (Tool::Sub, &["-t", "a", "--cafile"], "Error: --cafile argument given but no file specified.\n\n"),
            (Tool::Sub, &["-t", "a", "--capath"], "Error: --capath argument given but no directory specified.\n\n"),
            (Tool::Sub, &["-t", "a", "--tls-version"], "Error: --tls-version argument given but no version specified.\n\n"),
            (Tool::Pub, &["-t", "a", "-m", "b", "--cert", "c.pem"], "Error: Both certfile and keyfile must be provided if one of them is set.\n"),
            (Tool::Pub, &["-t", "a", "-m", "b", "--key", "c.key"], "Error: Both certfile and keyfile must be provided if one of them is set.\n"),
            (Tool::Sub, &["--help"], "HELP"),
        ];
        for (tool, line, want) in cases {
            assert_eq!(bad(*tool, line), *want, "{tool:?} {line:?}");
        }
    }

    #[test]
    fn options_file_lines() {
        let text = b"# comment\n-h broker.local\r\n  -t a topic with spaces\n\n-v\n-q 1";
        let lines = options_file_words(text);
        assert_eq!(
            lines,
            vec![
                words(&["-h", "broker.local"]),
                words(&["-t", "a topic with spaces"]),
                words(&["-v"]),
                words(&["-q", "1"]),
            ]
        );
        let c = load(Tool::Sub, &words(&["-q", "2"]), Some(text)).unwrap();
        assert_eq!(c.host.as_deref(), Some("broker.local"));
        // The command line comes after the file and wins.
        assert_eq!(c.qos, QoS::ExactlyOnce);
        assert!(c.verbose);
    }

    #[test]
    fn c_number_parsing() {
        assert_eq!(atoi(b"42"), 42);
        assert_eq!(atoi(b" -7x"), -7);
        assert_eq!(atoi(b"abc"), 0);
        assert_eq!(atof(b"0.25s"), 0.25);
        assert_eq!(parse_expiry(b"-1").unwrap(), i64::from(u32::MAX));
        assert_eq!(parse_expiry(b"0x10").unwrap(), 16);
    }
}
