//! Reading `mosquitto.conf` text into a [`Config`], the way Mosquitto 2.0's
//! `conf.c` does, minus its silent skips.
//!
//! Format (mosquitto.conf(5), and checked against the 2.0.11 broker):
//! one option per line, the option name then its values separated by spaces;
//! lines whose first character is `#` are comments (Midge also takes a `#`
//! after leading blanks as a comment, where Mosquitto would call `#` an
//! unknown option); blank lines are skipped; trailing whitespace (and a
//! Windows `\r`) is trimmed. There are no comments at the end of a line:
//! `allow_anonymous true # yes` has three values and is refused.
//!
//! Listener options (`max_connections`, `protocol`, `socket_domain`, and
//! with `per_listener_settings true` the security options) apply to the
//! last `listener` line *of the same file*; before any `listener` line of a
//! file they apply to the default listener, as in Mosquitto, where each file
//! starts again from the default listener.
//!
//! Where Midge differs from Mosquitto 2.0, it refuses rather than guesses:
//! unsupported options, values that Mosquitto would read as 0 with `atoi`
//! (`max_connections abc`), extra values Mosquitto ignores, `include_dir` in
//! an included file (Mosquitto skips it), per-listener security options that
//! reach no listener, and two listeners on the same port and address
//! (Mosquitto fails later, at bind time).

use std::cmp::Ordering;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::config::{
    log_types, Config, ListenAddress, ListenerConfig, ListenerProtocol, LogDest, PersistenceSync,
    SocketDomain, TlsConfig, DEFAULT_AUTO_ID_PREFIX, DEFAULT_PORT,
};
use crate::error::ConfigError;
use crate::options::{self, Support};

/// Largest `message_size_limit`: MQTT's largest payload (268435455 bytes).
const MAX_MESSAGE_SIZE_LIMIT: i64 = 268_435_455;

/// Reads and parses the main configuration file.
pub(crate) fn parse_main_file(path: &Path) -> Result<Config, ConfigError> {
    let bytes = read_file(path)?;
    parse_main_bytes(&bytes, path)
}

/// Parses the text of the main configuration file; `origin` names it.
pub(crate) fn parse_main_bytes(bytes: &[u8], origin: &Path) -> Result<Config, ConfigError> {
    let mut parser = Parser::new(origin);
    parser.sources.push(origin.to_path_buf());
    parser.parse_file_text(bytes, origin, Level::Main)?;
    parser.finish()
}

fn read_file(path: &Path) -> Result<Vec<u8>, ConfigError> {
    fs::read(path).map_err(|source| ConfigError::Unreadable {
        file: path.to_path_buf(),
        reason: match source.kind() {
            io::ErrorKind::NotFound => "file not found".to_owned(),
            _ => format!("cannot read file: {source}"),
        },
        source,
    })
}

/// TLS options as read; checked when the listener is finished.
#[derive(Debug, Clone, Default)]
struct TlsDraft {
    certfile: Option<PathBuf>,
    keyfile: Option<PathBuf>,
    cafile: Option<PathBuf>,
    capath: Option<PathBuf>,
    crlfile: Option<PathBuf>,
    require_certificate: bool,
    use_identity_as_username: bool,
    use_subject_as_username: bool,
    tls_version: Option<String>,
}

impl TlsDraft {
    /// Mosquitto's rules: TLS needs both certfile and keyfile; the other
    /// options mean nothing without them.
    fn check(&self) -> Result<(), String> {
        match (&self.certfile, &self.keyfile) {
            (Some(_), Some(_)) => Ok(()),
            (Some(_), None) => Err("certfile is set but keyfile is not: TLS needs both".to_owned()),
            (None, Some(_)) => Err("keyfile is set but certfile is not: TLS needs both".to_owned()),
            (None, None) => {
                let any = self.cafile.is_some()
                    || self.capath.is_some()
                    || self.crlfile.is_some()
                    || self.require_certificate
                    || self.use_identity_as_username
                    || self.use_subject_as_username
                    || self.tls_version.is_some();
                if any {
                    Err("TLS options are set but certfile and keyfile are not".to_owned())
                } else {
                    Ok(())
                }
            }
        }
        .and_then(|()| {
            if self.require_certificate && self.cafile.is_none() && self.capath.is_none() {
                Err("require_certificate needs cafile or capath".to_owned())
            } else {
                Ok(())
            }
        })
    }

    fn finish(&self) -> Option<TlsConfig> {
        Some(TlsConfig {
            certfile: self.certfile.clone()?,
            keyfile: self.keyfile.clone()?,
            cafile: self.cafile.clone(),
            capath: self.capath.clone(),
            crlfile: self.crlfile.clone(),
            require_certificate: self.require_certificate,
            use_identity_as_username: self.use_identity_as_username,
            use_subject_as_username: self.use_subject_as_username,
            tls_version: self.tls_version.clone(),
        })
    }
}

/// Where a line is.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Loc {
    file: PathBuf,
    line: usize,
}

/// Main file, or a file from `include_dir` (which may not include further).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Main,
    Included,
}

/// The listener that listener options apply to, per file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Default,
    Listener(usize),
}

/// Security options as written, `None` = not given.
#[derive(Debug, Clone, Default)]
struct SecurityDraft {
    allow_anonymous: Option<bool>,
    allow_zero_length_clientid: Option<bool>,
    auto_id_prefix: Option<String>,
}

/// Options every listener (the default one too) can carry.
#[derive(Debug, Clone, Default)]
struct ListenerOpts {
    socket_domain: Option<SocketDomain>,
    protocol: ListenerProtocol,
    max_connections: Option<u32>,
    bind_interface: Option<String>,
    websockets_headers_size: Option<u32>,
    tls: TlsDraft,
    mount_point: Option<String>,
    /// Used only with `per_listener_settings true`.
    security: SecurityDraft,
}

#[derive(Debug, Clone)]
struct ListenerDraft {
    /// `socket_domain` is filled in at the end, from `opts`.
    address: ListenAddress,
    opts: ListenerOpts,
    at: Loc,
}

/// The default listener of `port` and `bind_address`.
#[derive(Debug, Clone, Default)]
struct DefaultDraft {
    port: Option<u16>,
    bind: Option<String>,
    opts: ListenerOpts,
    /// First line that configured it.
    first_at: Option<Loc>,
    /// First line that gave it a security option (per_listener_settings).
    security_at: Option<Loc>,
}

struct Parser {
    main: PathBuf,
    /// Scalar options are written straight into this; listeners and
    /// security options are resolved in `finish`.
    out: Config,
    global_security: SecurityDraft,
    /// A security option has been seen (for the per_listener_settings rule).
    security_seen: bool,
    /// The first `log_type` line replaces the default set.
    log_types_seen: bool,
    /// The first `log_dest` line replaces the default (stderr).
    log_dests_seen: bool,
    default: DefaultDraft,
    listeners: Vec<ListenerDraft>,
    sources: Vec<PathBuf>,
}

/// One non-comment line, split into the option name and the rest.
struct Line<'a> {
    file: &'a Path,
    line: usize,
    name: &'a str,
    /// Everything after the name, trimmed.
    rest: &'a str,
}

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

impl<'a> Line<'a> {
    fn loc(&self) -> Loc {
        Loc {
            file: self.file.to_path_buf(),
            line: self.line,
        }
    }

    fn bad_value(&self, reason: String) -> ConfigError {
        ConfigError::BadValue {
            file: self.file.to_path_buf(),
            line: self.line,
            option: self.name.to_owned(),
            reason,
        }
    }

    fn not_supported(&self, reason: String) -> ConfigError {
        ConfigError::NotSupported {
            file: self.file.to_path_buf(),
            line: self.line,
            option: self.name.to_owned(),
            reason,
        }
    }

    fn invalid(&self, reason: String) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_path_buf(),
            line: self.line,
            reason,
        }
    }

    fn args(&self) -> impl Iterator<Item = &'a str> {
        self.rest.split(is_blank).filter(|s| !s.is_empty())
    }

    /// Exactly one value.
    fn one(&self) -> Result<&'a str, ConfigError> {
        let mut args = self.args();
        match (args.next(), args.next()) {
            (Some(value), None) => Ok(value),
            (None, _) => Err(self.bad_value(format!("{} needs a value", self.name))),
            (Some(_), Some(_)) => Err(self.too_many(1)),
        }
    }

    fn too_many(&self, wanted: usize) -> ConfigError {
        let count = self.args().count();
        let hint = if self.args().any(|a| a.starts_with('#')) {
            "; comments must be on a line of their own"
        } else {
            ""
        };
        let values = if wanted == 1 { "value" } else { "values" };
        self.bad_value(format!(
            "{} takes {wanted} {values}, got {count} (\"{}\"){hint}",
            self.name, self.rest
        ))
    }

    /// The rest of the line as one value (paths may contain spaces).
    fn rest_value(&self) -> Result<&'a str, ConfigError> {
        if self.rest.is_empty() {
            Err(self.bad_value(format!("{} needs a value", self.name)))
        } else {
            Ok(self.rest)
        }
    }

    fn boolean(&self) -> Result<bool, ConfigError> {
        match self.one()? {
            "true" => Ok(true),
            "false" => Ok(false),
            other => Err(self.bad_value(format!(
                "{} must be true or false, got \"{other}\"",
                self.name
            ))),
        }
    }

    fn integer_of(&self, value: &str) -> Result<i64, ConfigError> {
        value.parse::<i64>().map_err(|_| {
            let digits = value.strip_prefix(['-', '+']).unwrap_or(value);
            if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                self.bad_value(format!("{} value {value} is out of range", self.name))
            } else {
                self.bad_value(format!(
                    "{} must be a whole number, got \"{value}\"",
                    self.name
                ))
            }
        })
    }

    fn integer(&self) -> Result<i64, ConfigError> {
        self.integer_of(self.one()?)
    }

    fn check_range(&self, value: i64, min: i64, max: i64) -> Result<i64, ConfigError> {
        if (min..=max).contains(&value) {
            Ok(value)
        } else {
            Err(self.bad_value(format!(
                "{} must be between {min} and {max}, got {value}",
                self.name
            )))
        }
    }

    /// A count where Mosquitto reads any negative value as 0 (no limit).
    fn count_or_unlimited(&self, max: i64) -> Result<i64, ConfigError> {
        let value = self.integer()?.max(0);
        self.check_range(value, 0, max)
    }
}

fn describe(address: &ListenAddress) -> String {
    match address {
        ListenAddress::Tcp {
            port,
            bind: Some(bind),
            ..
        } => format!("port {port} on {bind}"),
        ListenAddress::Tcp {
            port, bind: None, ..
        } => format!("port {port} on all interfaces"),
        ListenAddress::Unix { path } => format!("Unix socket {}", path.display()),
    }
}

/// Same port and bind address (socket_domain aside), or same socket path.
fn same_place(a: &ListenAddress, b: &ListenAddress) -> bool {
    match (a, b) {
        (
            ListenAddress::Tcp {
                port: pa, bind: ba, ..
            },
            ListenAddress::Tcp {
                port: pb, bind: bb, ..
            },
        ) => pa == pb && ba == bb,
        (ListenAddress::Unix { path: a }, ListenAddress::Unix { path: b }) => a == b,
        _ => false,
    }
}

/// Mosquitto 2.0's include_dir order (`scmp_p` in conf.c, and the man
/// page): case-insensitive first, then upper case before lower case of the
/// same letter, so 00.conf, 01.conf, A.conf, a.conf, B.conf, b.conf.
pub(crate) fn mosquitto_file_order(a: &[u8], b: &[u8]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        let by_letter = x.to_ascii_uppercase().cmp(&y.to_ascii_uppercase());
        if by_letter != Ordering::Equal {
            return by_letter;
        }
        if x != y {
            return x.cmp(y);
        }
    }
    a.len().cmp(&b.len())
}

impl Parser {
    fn new(main: &Path) -> Parser {
        Parser {
            main: main.to_path_buf(),
            out: Config::default_local_only(DEFAULT_PORT),
            global_security: SecurityDraft::default(),
            security_seen: false,
            log_types_seen: false,
            log_dests_seen: false,
            default: DefaultDraft::default(),
            listeners: Vec::new(),
            sources: Vec::new(),
        }
    }

    fn parse_file_text(
        &mut self,
        bytes: &[u8],
        file: &Path,
        level: Level,
    ) -> Result<(), ConfigError> {
        let mut target = Target::Default;
        for (index, raw) in bytes.split(|&b| b == b'\n').enumerate() {
            let line_no = index + 1;
            let text = std::str::from_utf8(raw).map_err(|_| ConfigError::Invalid {
                file: file.to_path_buf(),
                line: line_no,
                reason: "line is not valid UTF-8 text".to_owned(),
            })?;
            let text = text.trim_end().trim_start_matches(is_blank);
            if text.is_empty() || text.starts_with('#') {
                continue;
            }
            let (name, rest) = match text.split_once(is_blank) {
                Some((name, rest)) => (name, rest.trim_start_matches(is_blank)),
                None => (text, ""),
            };
            let line = Line {
                file,
                line: line_no,
                name,
                rest,
            };
            self.option(&line, level, &mut target)?;
        }
        Ok(())
    }

    fn option(&mut self, l: &Line, level: Level, target: &mut Target) -> Result<(), ConfigError> {
        let Some(option) = options::lookup(l.name) else {
            return Err(ConfigError::UnknownOption {
                file: l.file.to_path_buf(),
                line: l.line,
                option: l.name.to_owned(),
                reason: format!("unknown option \"{}\"", l.name),
            });
        };
        match option.support {
            Support::Supported => {}
            Support::NotYet => {
                return Err(l.not_supported(format!("{} is not supported by midge yet", l.name)))
            }
            Support::Refused(reason) => return Err(l.not_supported(reason.to_owned())),
        }
        if !self.out.options_seen.contains(&option.name) {
            self.out.options_seen.push(option.name);
        }

        match option.name {
            "allow_anonymous" => {
                let value = l.boolean()?;
                self.security(l, *target).allow_anonymous = Some(value);
            }
            "allow_zero_length_clientid" => {
                let value = l.boolean()?;
                self.security(l, *target).allow_zero_length_clientid = Some(value);
            }
            "auto_id_prefix" => {
                let value = l.one()?.to_owned();
                self.security(l, *target).auto_id_prefix = Some(value);
            }
            "bind_address" => {
                // Always the default listener, wherever it is written.
                let value = l.one()?.to_owned();
                self.default.bind = Some(value);
                self.default_touched(l);
            }
            "port" => {
                let value = l.integer()?;
                let port = l.check_range(value, 1, 65535)?;
                self.default.port = u16::try_from(port).ok();
                self.default_touched(l);
            }
            "include_dir" => {
                let dir = l.rest_value()?;
                if level != Level::Main {
                    return Err(l.invalid(
                        "include_dir is only read from the main configuration file".to_owned(),
                    ));
                }
                self.include_dir(l, Path::new(dir))?;
            }
            "listener" => {
                *target = Target::Listener(self.listener(l)?);
            }
            "max_connections" => {
                // Mosquitto: any negative value is -1, no limit.
                let value = l.integer()?;
                let limit = if value < 0 {
                    None
                } else {
                    let value = l.check_range(value, 0, i64::from(u32::MAX))?;
                    u32::try_from(value).ok()
                };
                self.listener_opts(l, *target).max_connections = limit;
            }
            "protocol" => {
                let protocol = match l.one()? {
                    "mqtt" => ListenerProtocol::Mqtt,
                    "websockets" => ListenerProtocol::Websockets,
                    other => {
                        return Err(l.bad_value(format!(
                            "protocol must be mqtt or websockets, got \"{other}\""
                        )))
                    }
                };
                self.listener_opts(l, *target).protocol = protocol;
            }
            "socket_domain" => {
                let domain = match l.one()? {
                    "ipv4" => SocketDomain::Ipv4,
                    "ipv6" => SocketDomain::Ipv6,
                    other => {
                        return Err(l.bad_value(format!(
                            "socket_domain must be ipv4 or ipv6, got \"{other}\""
                        )))
                    }
                };
                if let Target::Listener(index) = *target {
                    if let Some(ListenerDraft {
                        address: ListenAddress::Unix { .. },
                        ..
                    }) = self.listeners.get(index)
                    {
                        return Err(l.bad_value(
                            "socket_domain does not apply to a Unix socket listener".to_owned(),
                        ));
                    }
                }
                self.listener_opts(l, *target).socket_domain = Some(domain);
            }
            "max_inflight_bytes" => {
                let value = l.count_or_unlimited(i64::MAX)?;
                self.out.max_inflight_bytes = u64::try_from(value).unwrap_or(0);
            }
            "max_inflight_messages" => {
                let value = l.count_or_unlimited(i64::from(u16::MAX))?;
                self.out.max_inflight_messages = u16::try_from(value).unwrap_or(0);
            }
            "max_queued_bytes" => {
                let value = l.count_or_unlimited(i64::MAX)?;
                self.out.max_queued_bytes = u64::try_from(value).unwrap_or(0);
            }
            "max_queued_messages" => {
                let value = l.count_or_unlimited(i64::from(u32::MAX))?;
                self.out.max_queued_messages = u32::try_from(value).unwrap_or(0);
            }
            "max_keepalive" => {
                // Mosquitto 2.0 refuses below 10 seconds.
                let value = l.integer()?;
                let value = l.check_range(value, 10, i64::from(u16::MAX))?;
                self.out.max_keepalive = u16::try_from(value).unwrap_or(u16::MAX);
            }
            "max_packet_size" => {
                // Mosquitto 2.0 refuses below 20 bytes; Midge also takes 0,
                // the default, as "no limit".
                let value = l.integer()?;
                if (1..20).contains(&value) {
                    return Err(l.bad_value(format!(
                        "max_packet_size must be 0 (no limit) or at least 20, got {value}"
                    )));
                }
                let value = l.check_range(value, 0, i64::from(u32::MAX))?;
                self.out.max_packet_size = u32::try_from(value).unwrap_or(0);
            }
            "memory_limit" => {
                let value = l.integer()?;
                let value = l.check_range(value, 0, i64::MAX)?;
                self.out.memory_limit = u64::try_from(value).unwrap_or(0);
            }
            "message_size_limit" => {
                let value = l.integer()?;
                let value = l.check_range(value, 0, MAX_MESSAGE_SIZE_LIMIT)?;
                self.out.message_size_limit = u32::try_from(value).unwrap_or(0);
            }
            "per_listener_settings" => {
                let value = l.boolean()?;
                if value && self.security_seen {
                    return Err(l.invalid(
                        "per_listener_settings must be set before any other security settings \
                         (allow_anonymous, allow_zero_length_clientid, auto_id_prefix)"
                            .to_owned(),
                    ));
                }
                self.out.per_listener_settings = value;
            }
            "persistence" | "retained_persistence" => self.out.persistence = l.boolean()?,
            "persistence_location" => {
                self.out.persistence_location = Some(PathBuf::from(l.rest_value()?));
            }
            "persistence_file" => self.out.persistence_file = l.rest_value()?.to_owned(),
            "autosave_interval" => {
                let value = l.integer()?;
                let value = l.check_range(value, 0, i64::from(u32::MAX))?;
                self.out.autosave_interval = u32::try_from(value).unwrap_or(1800);
            }
            "autosave_on_changes" => self.out.autosave_on_changes = l.boolean()?,
            "persistence_sync" => {
                let value = l.one()?;
                self.out.persistence_sync = match value {
                    "always" => PersistenceSync::Always,
                    "never" => PersistenceSync::Never,
                    ms => match ms.parse::<u32>() {
                        Ok(n) if n > 0 => PersistenceSync::IntervalMs(n),
                        _ => {
                            return Err(l.bad_value(format!(
                                "persistence_sync must be always, never or a number of milliseconds, got \"{value}\""
                            )))
                        }
                    },
                };
            }
            "certfile" | "keyfile" | "cafile" | "capath" | "crlfile" => {
                let path = Some(PathBuf::from(l.rest_value()?));
                let tls = &mut self.listener_opts(l, *target).tls;
                match l.name {
                    "certfile" => tls.certfile = path,
                    "keyfile" => tls.keyfile = path,
                    "cafile" => tls.cafile = path,
                    "capath" => tls.capath = path,
                    _ => tls.crlfile = path,
                }
            }
            "require_certificate" => {
                let v = l.boolean()?;
                self.listener_opts(l, *target).tls.require_certificate = v;
            }
            "use_identity_as_username" => {
                let v = l.boolean()?;
                self.listener_opts(l, *target).tls.use_identity_as_username = v;
            }
            "use_subject_as_username" => {
                let v = l.boolean()?;
                self.listener_opts(l, *target).tls.use_subject_as_username = v;
            }
            "tls_version" => {
                let v = match l.one()? {
                    v @ ("tlsv1.2" | "tlsv1.3") => v.to_owned(),
                    v @ ("tlsv1" | "tlsv1.1") => {
                        return Err(l.not_supported(format!(
                            "tls_version {v} is not supported by midge: TLS 1.2 is the oldest it speaks"
                        )))
                    }
                    other => {
                        return Err(l.bad_value(format!(
                            "tls_version must be tlsv1.2 or tlsv1.3, got \"{other}\""
                        )))
                    }
                };
                self.listener_opts(l, *target).tls.tls_version = Some(v);
            }
            "mount_point" => {
                let value = l.one()?;
                if value.contains(['+', '#']) {
                    return Err(l.bad_value(format!(
                        "mount_point must not contain wildcards, got \"{value}\""
                    )));
                }
                self.listener_opts(l, *target).mount_point = Some(value.to_owned());
            }
            "bind_interface" => {
                let value = l.one()?.to_owned();
                self.listener_opts(l, *target).bind_interface = Some(value);
            }
            "websockets_headers_size" => {
                let value = l.integer()?;
                let value = l.check_range(value, 0, i64::from(u16::MAX))?;
                self.listener_opts(l, *target).websockets_headers_size = u32::try_from(value).ok();
            }
            // libwebsockets' own debug level in Mosquitto; Midge's WebSocket
            // code logs under `log_type websockets` instead.
            "websockets_log_level" => {
                l.integer()?;
            }
            "log_dest" => self.log_dest(l)?,
            "log_type" => {
                let bits = match l.one()? {
                    "error" => log_types::ERROR,
                    "warning" => log_types::WARNING,
                    "notice" => log_types::NOTICE,
                    "information" => log_types::INFORMATION,
                    "subscribe" => log_types::SUBSCRIBE,
                    "unsubscribe" => log_types::UNSUBSCRIBE,
                    "debug" => log_types::DEBUG,
                    "websockets" => log_types::WEBSOCKETS,
                    "all" => log_types::ALL,
                    "none" => 0,
                    other => {
                        return Err(l.bad_value(format!(
                            "log_type must be one of error, warning, notice, information, \
                             subscribe, unsubscribe, debug, websockets, all, none; got \"{other}\""
                        )))
                    }
                };
                if !self.log_types_seen {
                    self.log_types_seen = true;
                    self.out.log.types = 0;
                }
                self.out.log.types |= bits;
            }
            "log_timestamp" => self.out.log.timestamp = l.boolean()?,
            "log_timestamp_format" => {
                self.out.log.timestamp_format = Some(l.rest_value()?.to_owned());
            }
            "log_facility" => {
                let value = l.integer()?;
                let value = l.check_range(value, 0, 7)?;
                self.out.log.facility = u8::try_from(value).ok();
            }
            "connection_messages" => self.out.log.connection_messages = l.boolean()?,
            "pid_file" => self.out.pid_file = Some(PathBuf::from(l.rest_value()?)),
            "password_file" => self.out.password_file = Some(PathBuf::from(l.rest_value()?)),
            "acl_file" => self.out.acl_file = Some(PathBuf::from(l.rest_value()?)),
            "user" => self.out.user = Some(l.one()?.to_owned()),
            "sys_interval" => {
                let value = l.integer()?;
                let value = l.check_range(value, 0, i64::from(u32::MAX))?;
                self.out.sys_interval = u32::try_from(value).unwrap_or(10);
            }
            "max_topic_alias" => {
                let value = l.integer()?;
                let value = l.check_range(value, 0, i64::from(u16::MAX))?;
                self.out.max_topic_alias = u16::try_from(value).unwrap_or(10);
            }
            "response_information" => {
                self.out.response_information = Some(l.rest_value()?.to_owned());
            }
            "connect_timeout" => {
                let value = l.integer()?;
                let value = l.check_range(value, 0, 3600)?;
                self.out.connect_timeout = u32::try_from(value).unwrap_or(10);
            }
            "worker_threads" => {
                let value = l.integer()?;
                let value = l.check_range(value, 1, 1024)?;
                self.out.worker_threads = u16::try_from(value).ok();
            }
            "max_qos" => {
                let value = l.integer()?;
                let value = l.check_range(value, 0, 2)?;
                self.out.max_qos = u8::try_from(value).unwrap_or(2);
            }
            "queue_qos0_messages" => self.out.queue_qos0_messages = l.boolean()?,
            "retain_available" => self.out.retain_available = l.boolean()?,
            "set_tcp_nodelay" => self.out.set_tcp_nodelay = l.boolean()?,
            other => {
                return Err(l.invalid(format!(
                    "{other} is marked supported but midge has no handler for it (a bug in midge-config)"
                )))
            }
        }
        Ok(())
    }

    fn default_touched(&mut self, l: &Line) {
        if self.default.first_at.is_none() {
            self.default.first_at = Some(l.loc());
        }
    }

    /// Options of the listener being configured.
    fn listener_opts(&mut self, l: &Line, target: Target) -> &mut ListenerOpts {
        if let Target::Listener(index) = target {
            if index < self.listeners.len() {
                return &mut self.listeners[index].opts;
            }
        }
        self.default_touched(l);
        &mut self.default.opts
    }

    /// Where a security option goes: the global settings, or with
    /// per_listener_settings the listener being configured.
    fn security(&mut self, l: &Line, target: Target) -> &mut SecurityDraft {
        self.security_seen = true;
        if !self.out.per_listener_settings {
            return &mut self.global_security;
        }
        if target == Target::Default && self.default.security_at.is_none() {
            self.default.security_at = Some(l.loc());
        }
        &mut self.listener_opts(l, target).security
    }

    /// `log_dest stdout|stderr|file PATH|syslog|topic|none`: each line adds
    /// a destination; the first line replaces the default (stderr).
    fn log_dest(&mut self, l: &Line) -> Result<(), ConfigError> {
        let (kind, rest) = match l.rest.split_once(is_blank) {
            Some((k, r)) => (k, r.trim_start_matches(is_blank)),
            None => (l.rest, ""),
        };
        let dest = match (kind, rest.is_empty()) {
            ("stdout", true) => Some(LogDest::Stdout),
            ("stderr", true) => Some(LogDest::Stderr),
            ("syslog", true) => Some(LogDest::Syslog),
            ("topic", true) => Some(LogDest::Topic),
            ("none", true) => None,
            ("file", false) => Some(LogDest::File(PathBuf::from(rest))),
            ("file", true) => return Err(l.bad_value("log_dest file needs a path".to_owned())),
            ("dlt", _) => {
                return Err(l.not_supported("log_dest dlt is not supported by midge".to_owned()))
            }
            ("", _) => return Err(l.bad_value("log_dest needs a destination".to_owned())),
            (_, false) if ["stdout", "stderr", "syslog", "topic", "none"].contains(&kind) => {
                return Err(l.too_many(1))
            }
            (other, _) => {
                return Err(l.bad_value(format!(
                    "log_dest must be stdout, stderr, file PATH, syslog, topic or none; got \"{other}\""
                )))
            }
        };
        if !self.log_dests_seen {
            self.log_dests_seen = true;
            self.out.log.dests.clear();
        }
        match dest {
            Some(d) if !self.out.log.dests.contains(&d) => self.out.log.dests.push(d),
            Some(_) => {}
            None => self.out.log.dests.clear(),
        }
        Ok(())
    }

    /// `listener PORT [ADDRESS]`; returns the new listener's index.
    fn listener(&mut self, l: &Line) -> Result<usize, ConfigError> {
        let (port_text, address) = match l.rest.split_once(is_blank) {
            Some((port, address)) => (port, Some(address.trim_start_matches(is_blank))),
            None => (l.rest, None),
        };
        if port_text.is_empty() {
            return Err(l.bad_value("listener needs a port".to_owned()));
        }
        let port = l.integer_of(port_text)?;
        let port = l.check_range(port, 0, 65535)?;
        let address = if port == 0 {
            match address {
                Some(path) => ListenAddress::Unix {
                    path: PathBuf::from(path),
                },
                None => {
                    return Err(l.bad_value(
                        "a listener with port 0 must give a Unix socket path".to_owned(),
                    ))
                }
            }
        } else {
            let bind = match address {
                None => None,
                Some(bind) if !bind.contains(is_blank) => Some(bind.to_owned()),
                Some(_) => return Err(l.too_many(2)),
            };
            ListenAddress::Tcp {
                port: u16::try_from(port).unwrap_or(0),
                bind,
                socket_domain: None,
            }
        };
        if let Some(first) = self
            .listeners
            .iter()
            .find(|d| same_place(&d.address, &address))
        {
            return Err(ConfigError::DuplicateListener {
                file: l.file.to_path_buf(),
                line: l.line,
                reason: format!(
                    "duplicate listener: {} is already configured at {}:{}",
                    describe(&address),
                    first.at.file.display(),
                    first.at.line
                ),
            });
        }
        self.listeners.push(ListenerDraft {
            address,
            opts: ListenerOpts::default(),
            at: l.loc(),
        });
        Ok(self.listeners.len() - 1)
    }

    /// Reads `DIR/*.conf` in Mosquitto's order. A relative DIR is taken
    /// from the current directory, as Mosquitto does (it calls opendir on
    /// the path as written), not from the configuration file's directory.
    fn include_dir(&mut self, l: &Line, dir: &Path) -> Result<(), ConfigError> {
        let io_error = |source: io::Error| ConfigError::IncludeDir {
            file: l.file.to_path_buf(),
            line: l.line,
            dir: dir.to_path_buf(),
            reason: format!("cannot read include_dir \"{}\": {source}", dir.display()),
            source,
        };
        let mut files = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_error)? {
            let entry = entry.map_err(io_error)?;
            let name = entry.file_name();
            let bytes = name.as_encoded_bytes();
            // As Mosquitto: a name longer than ".conf" that ends in ".conf".
            if bytes.len() > 5 && bytes.ends_with(b".conf") {
                files.push((bytes.to_vec(), entry.path()));
            }
        }
        files.sort_by(|a, b| mosquitto_file_order(&a.0, &b.0));

        let main = fs::canonicalize(&self.main).ok();
        for (_, path) in files {
            if main.is_some() && fs::canonicalize(&path).ok() == main {
                return Err(l.invalid(format!(
                    "include_dir \"{}\" contains the main configuration file",
                    dir.display()
                )));
            }
            let bytes = read_file(&path)?;
            self.sources.push(path.clone());
            self.parse_file_text(&bytes, &path, Level::Included)?;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Config, ConfigError> {
        for d in &self.listeners {
            d.opts.tls.check().map_err(|reason| ConfigError::Invalid {
                file: d.at.file.clone(),
                line: d.at.line,
                reason: format!("listener {}: {reason}", describe(&d.address)),
            })?;
        }
        if let Err(reason) = self.default.opts.tls.check() {
            let at = self.default.first_at.clone().unwrap_or(Loc {
                file: self.main.clone(),
                line: 0,
            });
            return Err(ConfigError::Invalid {
                file: at.file,
                line: at.line,
                reason: format!("default listener: {reason}"),
            });
        }
        let per_listener = self.out.per_listener_settings;
        let default = &self.default;
        // Mosquitto creates the default listener when any of its options
        // differs from the defaults (config__parse_args in conf.c).
        let default_used = default.port.is_some()
            || default.bind.is_some()
            || default.opts.max_connections.is_some()
            || default.opts.socket_domain.is_some()
            || (per_listener && default.opts.security.allow_zero_length_clientid == Some(false));
        let local_only = self.listeners.is_empty() && !default_used;

        let global = &self.global_security;
        self.out.local_only = local_only;
        self.out.allow_anonymous = local_only || global.allow_anonymous.unwrap_or(false);
        self.out.allow_zero_length_clientid = global.allow_zero_length_clientid.unwrap_or(true);
        self.out.auto_id_prefix = global
            .auto_id_prefix
            .clone()
            .unwrap_or_else(|| DEFAULT_AUTO_ID_PREFIX.to_owned());
        self.out.sources = self.sources;

        if local_only {
            // The loopback pair stands in for the default listener, so with
            // per_listener_settings it takes the options given before any
            // listener line.
            if per_listener {
                let security = &self.default.opts.security;
                if let Some(value) = security.allow_zero_length_clientid {
                    self.out.allow_zero_length_clientid = value;
                }
                if let Some(prefix) = &security.auto_id_prefix {
                    self.out.auto_id_prefix = prefix.clone();
                }
            }
            self.out.listeners = self.out.local_listeners(&[DEFAULT_PORT]);
            return Ok(self.out);
        }

        let resolve = |address: ListenAddress, opts: &ListenerOpts| {
            let security = if per_listener {
                &opts.security
            } else {
                &self.global_security
            };
            let address = match address {
                ListenAddress::Tcp { port, bind, .. } => ListenAddress::Tcp {
                    port,
                    bind,
                    socket_domain: opts.socket_domain,
                },
                unix => unix,
            };
            ListenerConfig {
                address,
                protocol: opts.protocol,
                max_connections: opts.max_connections,
                bind_interface: opts.bind_interface.clone(),
                tls: opts.tls.finish(),
                mount_point: opts.mount_point.clone(),
                websockets_headers_size: opts.websockets_headers_size.unwrap_or(4096),
                allow_anonymous: security.allow_anonymous.unwrap_or(false),
                allow_zero_length_clientid: security.allow_zero_length_clientid.unwrap_or(true),
                auto_id_prefix: security
                    .auto_id_prefix
                    .clone()
                    .unwrap_or_else(|| DEFAULT_AUTO_ID_PREFIX.to_owned()),
            }
        };

        let mut listeners: Vec<ListenerConfig> = self
            .listeners
            .iter()
            .map(|d| resolve(d.address.clone(), &d.opts))
            .collect();

        let default_at = self.default.first_at.clone().unwrap_or(Loc {
            file: self.main.clone(),
            line: 0,
        });
        if default_used {
            let address = ListenAddress::Tcp {
                port: self.default.port.unwrap_or(DEFAULT_PORT),
                bind: self.default.bind.clone(),
                socket_domain: None,
            };
            if let Some(first) = self
                .listeners
                .iter()
                .find(|d| same_place(&d.address, &address))
            {
                return Err(ConfigError::DuplicateListener {
                    file: default_at.file,
                    line: default_at.line,
                    reason: format!(
                        "duplicate listener: the default listener (port, bind_address and \
                         listener options before the first listener line) is {}, which is \
                         already configured at {}:{}",
                        describe(&address),
                        first.at.file.display(),
                        first.at.line
                    ),
                });
            }
            listeners.push(resolve(address, &self.default.opts));
        } else if let Some(at) = &self.default.security_at {
            return Err(ConfigError::Invalid {
                file: at.file.clone(),
                line: at.line,
                reason: "with per_listener_settings true, security options before the first \
                         listener line apply to the default listener, which is not configured; \
                         move this after a listener line"
                    .to_owned(),
            });
        }
        self.out.listeners = listeners;
        Ok(self.out)
    }
}
