//! What `midge_pub`, `midge_sub` and `midge_rr` share: argument and
//! options-file parsing ([`args`], [`props`]), message printing
//! ([`format`], [`json`], [`clock`]), mosquitto's texts for errors and
//! reason codes, and the connection set-up. Each program's flow is in its
//! own module ([`publish`], [`subscribe`], [`request`]); the binaries only
//! call [`run`].
//!
//! The contract is Mosquitto 2.0's clients: replacing `mosquitto_` by
//! `midge_` in a script must change nothing else, so flags, stdout, stderr
//! and exit codes follow them, odd corners included (e.g. `--help` exits 1).

pub mod args;
pub mod clock;
pub mod format;
pub mod json;
pub mod props;
mod publish;
mod request;
mod subscribe;

use std::io::Write;

use bytes::Bytes;
use bytestring::ByteString;
use midge_codec::{Connect, LastWill, ProtocolVersion};

use crate::client::{Error, Options, Transport};
use crate::tls::TlsOptions;
use args::{ArgError, Config};

/// Which program is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Pub,
    Sub,
    Rr,
}

impl Tool {
    pub fn name(self) -> &'static str {
        match self {
            Tool::Pub => "midge_pub",
            Tool::Sub => "midge_sub",
            Tool::Rr => "midge_rr",
        }
    }

    fn usage(self) -> &'static str {
        match self {
            Tool::Pub => include_str!("help/midge_pub.txt"),
            Tool::Sub => include_str!("help/midge_sub.txt"),
            Tool::Rr => include_str!("help/midge_rr.txt"),
        }
    }
}

/// Runs a tool with the process's arguments; returns the exit code.
pub fn run(tool: Tool) -> i32 {
    let argv: Vec<Vec<u8>> = std::env::args_os().skip(1).map(os_bytes).collect();
    let cfg = match load_config(tool, &argv) {
        Ok(cfg) => cfg,
        Err(code) => return code,
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: {e}");
            return 1;
        }
    };
    rt.block_on(async move {
        match tool {
            Tool::Pub => publish::main(cfg).await,
            Tool::Sub => subscribe::main(cfg).await,
            Tool::Rr => request::main(cfg).await,
        }
    })
}

#[cfg(unix)]
fn os_bytes(s: std::ffi::OsString) -> Vec<u8> {
    use std::os::unix::ffi::OsStringExt;
    s.into_vec()
}

/// Prints the usage on stdout (what `--help` does).
pub fn print_usage(tool: Tool) {
    let text = tool.usage().replace("@VERSION@", env!("CARGO_PKG_VERSION"));
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// Loads the options file and the command line; on failure prints what
/// mosquitto prints and returns the exit code (1).
fn load_config(tool: Tool, argv: &[Vec<u8>]) -> Result<Config, i32> {
    let file = args::options_file_path(tool).and_then(|p| std::fs::read(p).ok());
    match args::load(tool, argv, file.as_deref()) {
        Ok(cfg) => Ok(cfg),
        Err(ArgError::Help) => {
            print_usage(tool);
            Err(1)
        }
        Err(ArgError::Invalid {
            message,
            usage_hint,
        }) => {
            let mut e = std::io::stderr().lock();
            let _ = e.write_all(message.as_bytes());
            if usage_hint {
                let _ = write!(e, "\nUse '{} --help' to see usage.\n", tool.name());
            }
            Err(1)
        }
    }
}

/// mosquitto's err_printf: stderr, unless `--quiet`.
pub(crate) fn err_print(cfg: &Config, text: &str) {
    if !cfg.quiet {
        let mut e = std::io::stderr().lock();
        let _ = e.write_all(text.as_bytes());
        let _ = e.flush();
    }
}

/// Writes to stdout and flushes, as mosquitto_sub does after each message.
pub(crate) fn out_write(bytes: &[u8]) {
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(bytes);
    let _ = o.flush();
}

/// libmosquitto's mosquitto_connack_string (3.x return codes).
pub fn connack_string(code: u8) -> &'static str {
    match code {
        0 => "Connection Accepted.",
        1 => "Connection Refused: unacceptable protocol version.",
        2 => "Connection Refused: identifier rejected.",
        3 => "Connection Refused: broker unavailable.",
        4 => "Connection Refused: bad user name or password.",
        5 => "Connection Refused: not authorised.",
        _ => "Connection Refused: unknown reason.",
    }
}

/// libmosquitto's mosquitto_reason_string (5.0 reason codes).
pub fn reason_string(code: u8) -> &'static str {
    match code {
        0x00 => "Success",
        0x01 => "Granted QoS 1",
        0x02 => "Granted QoS 2",
        0x04 => "Disconnect with Will Message",
        0x10 => "No matching subscribers",
        0x11 => "No subscription existed",
        0x18 => "Continue authentication",
        0x19 => "Re-authenticate",
        0x80 => "Unspecified error",
        0x81 => "Malformed Packet",
        0x82 => "Protocol Error",
        0x83 => "Implementation specific error",
        0x84 => "Unsupported Protocol Version",
        0x85 => "Client Identifier not valid",
        0x86 => "Bad User Name or Password",
        0x87 => "Not authorized",
        0x88 => "Server unavailable",
        0x89 => "Server busy",
        0x8A => "Banned",
        0x8B => "Server shutting down",
        0x8C => "Bad authentication method",
        0x8D => "Keep Alive timeout",
        0x8E => "Session taken over",
        0x8F => "Topic Filter invalid",
        0x90 => "Topic Name invalid",
        0x91 => "Packet Identifier in use",
        0x92 => "Packet Identifier not found",
        0x93 => "Receive Maximum exceeded",
        0x94 => "Topic Alias invalid",
        0x95 => "Packet too large",
        0x96 => "Message rate too high",
        0x97 => "Quota exceeded",
        0x98 => "Administrative action",
        0x99 => "Payload format invalid",
        0x9A => "Retain not supported",
        0x9B => "QoS not supported",
        0x9C => "Use another server",
        0x9D => "Server moved",
        0x9E => "Shared Subscriptions not supported",
        0x9F => "Connection rate exceeded",
        0xA0 => "Maximum connect time",
        0xA1 => "Subscription identifiers not supported",
        0xA2 => "Wildcard Subscriptions not supported",
        _ => "Unknown reason",
    }
}

/// The "Connection error: ..." line of a refused CONNACK.
pub(crate) fn connection_error_line(code: u8, version: ProtocolVersion) -> String {
    if version.is_v5() {
        if code == 0x84 {
            format!(
                "Connection error: {}. Try connecting to an MQTT v5 broker, or use MQTT v3.x mode.\n",
                reason_string(code)
            )
        } else {
            format!("Connection error: {}\n", reason_string(code))
        }
    } else {
        format!("Connection error: {}\n", connack_string(code))
    }
}

/// A client id for 3.1 when none is given: libmosquitto's `mosq-` and 18
/// random letters and digits (3.1 brokers refuse an empty one).
fn random_id() -> String {
    const ALNUM: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut rng = Rng::seeded();
    let mut id = String::from("mosq-");
    for _ in 0..18 {
        id.push(ALNUM[rng.below(ALNUM.len() as u64) as usize] as char);
    }
    id
}

/// A small xorshift generator: ids and `--random-filter` need no more.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn seeded() -> Rng {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let seed = (t.as_nanos() as u64) ^ (u64::from(std::process::id()) << 32) | 1;
        Rng(seed)
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x % n.max(1)
    }
}

/// The connection options a configuration asks for, or the error line.
pub(crate) fn connect_options(cfg: &Config) -> Result<Options, String> {
    let client_id = match (&cfg.id, &cfg.id_prefix) {
        (Some(id), _) => id.clone(),
        (None, Some(prefix)) => format!("{prefix}{}", std::process::id()),
        (None, None) if cfg.protocol == ProtocolVersion::V31 => random_id(),
        (None, None) => String::new(),
    };
    if cfg.password.is_some() && cfg.username.is_none() && !cfg.protocol.is_v5() {
        return Err("Error: Problem setting username and/or password.\n".into());
    }
    let will = cfg.will_topic.as_ref().map(|t| LastWill {
        topic: ByteString::from(t.as_str()),
        payload: Bytes::from(cfg.will_payload.clone().unwrap_or_default()),
        qos: cfg.will_qos,
        retain: cfg.will_retain,
        properties: if cfg.protocol.is_v5() {
            cfg.props.will.clone().into()
        } else {
            Default::default()
        },
    });
    let mut properties = if cfg.protocol.is_v5() {
        cfg.props.connect.clone()
    } else {
        Default::default()
    };
    // Like mosquitto_sub: with -C below 20 the broker is asked to send no
    // more than that many messages ahead of our acknowledgements.
    if cfg.protocol.is_v5()
        && cfg.msg_count > 0
        && cfg.msg_count < 20
        && properties.receive_maximum.is_none()
    {
        properties.receive_maximum = Some(cfg.msg_count as u16);
    }
    let tls = tls_options(cfg)?;
    let host = cfg.host.clone().unwrap_or_else(|| "localhost".into());
    let transport = match cfg.port {
        Some(0) => Transport::Unix(host.into()),
        p => Transport::Tcp {
            host,
            // libmosquitto's client_connect: 8883 when a CA is given.
            port: p.unwrap_or(if cfg.cafile.is_some() || cfg.capath.is_some() {
                8883
            } else {
                1883
            }),
        },
    };
    Ok(Options {
        transport,
        connect: Connect {
            protocol: cfg.protocol,
            clean_start: cfg.clean_session,
            keep_alive: cfg.keepalive,
            client_id: ByteString::from(client_id),
            will,
            username: cfg.username.as_deref().map(ByteString::from),
            password: cfg.password.clone().map(Bytes::from),
            properties: properties.into(),
        },
        debug: cfg.debug,
        max_inflight: cfg.max_inflight as usize,
        nodelay: cfg.nodelay,
        bind_address: cfg.bind_address.clone(),
        tls,
    })
}

/// The TLS a configuration asks for, with mosquitto 2.0's rules
/// (client_tls_opts_set): `--cafile`/`--capath` turn TLS on and are the
/// only way to send a client certificate; otherwise `--tls-use-os-certs`,
/// an `mqtts://` URL or `-p 8883` turn it on trusting the system's CAs.
/// Missing files and a bad `--tls-version` are refused before connecting,
/// in that order, with mosquitto's lines.
fn tls_options(cfg: &Config) -> Result<Option<TlsOptions>, String> {
    let with_ca = cfg.cafile.is_some() || cfg.capath.is_some();
    if with_ca {
        // mosquitto_tls_set opens the files (not the directory) first.
        let files = [
            ("--cafile", &cfg.cafile),
            ("--cert", &cfg.certfile),
            ("--key", &cfg.keyfile),
        ];
        for (flag, path) in files {
            if let Some(p) = path {
                if std::fs::File::open(p).is_err() {
                    // mosquitto says which file no more than "File not
                    // found."; the flag and path are added.
                    return Err(format!(
                        "Error: Problem setting TLS options: File not found ({flag} \"{}\").\n",
                        p.display()
                    ));
                }
            }
        }
    }
    let tls13_only = match cfg.tls_version.as_deref() {
        None | Some("tlsv1.2") | Some("tlsv1.1") => false,
        Some("tlsv1.3") => true,
        Some(_) => {
            return Err("Error: Problem setting TLS options, check the options are valid.\n".into())
        }
    };
    let use_os_certs = cfg.tls_use_os_certs || (!with_ca && cfg.port == Some(8883));
    if !with_ca && !use_os_certs {
        return Ok(None);
    }
    Ok(Some(TlsOptions {
        cafile: cfg.cafile.clone(),
        capath: cfg.capath.clone(),
        use_os_certs,
        certfile: cfg.certfile.clone().filter(|_| with_ca),
        keyfile: cfg.keyfile.clone().filter(|_| with_ca),
        insecure: cfg.insecure,
        tls13_only,
        alpn: cfg.tls_alpn.clone(),
    }))
}

/// The message to print for a connection that could not be made, and the
/// exit code: the CONNACK code when refused, else 1.
pub(crate) fn connect_failure(e: &Error) -> (String, i32) {
    match e {
        Error::Refused { code, version } => {
            (connection_error_line(*code, *version), i32::from(*code))
        }
        Error::Lookup(_) => ("Unable to connect (Lookup error.).\n".into(), 1),
        // Failures while opening the TLS session: what mosquitto prints
        // when its connect call fails (certificate, name, files).
        Error::TlsSetup(_) | Error::TlsVerify(_) => {
            ("Unable to connect (A TLS error occurred.).\n".into(), 1)
        }
        Error::TlsKeyPassword(path) => (
            format!(
                "Error: Unable to load client key file \"{}\": it is protected by a password, \
                 which is not supported; decrypt it (openssl pkey -in KEY -out KEY.plain).\n\
                 Unable to connect (A TLS error occurred.).\n",
                path.display()
            ),
            1,
        ),
        // The server cut the handshake: mosquitto's MOSQ_ERR_TLS.
        Error::TlsHandshake(_) => ("Error: A TLS error occurred.\n".into(), 8),
        Error::Io(_) => (format!("Error: {e}\n"), 1),
        other => (format!("Error: {other}\n"), 1),
    }
}

/// Reads what `-f`, `-s`, `-m` or `-n` give as the message; `None` for
/// `-l` (read line by line later). Errors are printed as mosquitto does.
pub(crate) fn load_message(cfg: &Config) -> Result<Option<Bytes>, i32> {
    use args::PubMode;
    use std::io::Read;
    match &cfg.pub_mode {
        PubMode::Message(m) => Ok(Some(Bytes::from(m.clone()))),
        PubMode::Null | PubMode::None => Ok(Some(Bytes::new())),
        PubMode::File(path) => match std::fs::read(path) {
            Ok(data) => Ok(Some(Bytes::from(data))),
            Err(_) => {
                let p = path.display();
                err_print(cfg, &format!("Error: Unable to open file \"{p}\".\n"));
                err_print(cfg, &format!("Error loading input file \"{p}\".\n"));
                Err(1)
            }
        },
        PubMode::StdinFile => {
            let mut data = Vec::new();
            match std::io::stdin().lock().read_to_end(&mut data) {
                Ok(_) => Ok(Some(Bytes::from(data))),
                Err(_) => {
                    err_print(cfg, "Error loading input from stdin.\n");
                    Err(1)
                }
            }
        }
        PubMode::StdinLine => Ok(None),
    }
}
