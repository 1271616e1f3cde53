//! Mosquitto 2.0 ACL files (`acl_file`): parsing, and the decision for one
//! client, topic and access.
//!
//! This module owns the file format and the verdict Mosquitto 2.0's built-in
//! ACL check would give; it knows nothing of sessions or sockets. The core asks
//! [`AclFile::check`] on every PUBLISH (write) and every delivery (read), and
//! [`AclFile::check_subscribe`] on SUBSCRIBE.
//!
//! # Format (as `aclfile__parse` reads it)
//!
//! ```text
//! # a comment: '#' must be the first character of the line
//! topic [read|write|readwrite|deny] <topic>     access defaults to readwrite
//! pattern [read|write|readwrite|deny] <topic>   %c = client id, %u = username
//! user <username>                               following `topic` lines are this user's
//! ```
//!
//! Trailing white space is removed; words are separated by spaces only (a tab
//! between words makes the line invalid, as in Mosquitto); the topic is the
//! rest of the line after the access word, blanks trimmed, so it may contain
//! spaces. With a single word after `topic`, that word is the topic (`topic
//! read` grants readwrite on the topic `read`). Topics are checked like
//! subscription filters (`+` and `#` whole levels, `#` last). `topic` lines
//! before the first `user` line belong to clients without a username; two
//! sections for one user are merged. `pattern` lines apply to every client,
//! wherever they appear. `%c` and `%u` are substituted wherever they occur in
//! a pattern, as Mosquitto does, not only as whole levels. Any other line is an
//! error naming its number (Mosquitto refuses to start on the same lines).
//!
//! # Decision (as `mosquitto_acl_check` and `mosquitto_acl_check_default`)
//!
//! 1. Broker-wide `$` rules first: writing to `$SYS…` is refused except to
//!    `$SYS/broker/connection/+/state`; reading or writing a topic starting
//!    with `$share` is refused.
//! 2. The client's own list: the anonymous section for a client without a
//!    username, else the section of its username (none: empty). A matching
//!    `deny` rule refuses; otherwise a matching rule carrying the access grants.
//! 3. If no rule of that list decided and the file has patterns: a client
//!    whose username or client id contains `+` or `#` is refused.
//! 4. The patterns, in the same way: a matching `deny` pattern refuses, a
//!    matching pattern with the access grants. Patterns using `%u` are skipped
//!    for clients without a username.
//! 5. Nothing matched: refused. An ACL file with no rules refuses everything
//!    (CVE-2018-12550).
//!
//! So `deny` wins over grants *of the same list*, and a user's `deny` wins
//! over every pattern; but a pattern `deny` does not take away what the user's
//! own `topic` lines grant (checked against Mosquitto 2.0.11, see
//! `tests/acl_vs_mosquitto.rs`). A rule matches a topic as a subscription
//! filter matches it, and a wildcard in the first level never matches a topic
//! starting with `$`.
//!
//! One deliberate difference: Mosquitto 2.0 substitutes a client id or
//! username containing `/` into a pattern as several levels, so the client
//! `victim/x` gets `sensors/victim/x/#` from `pattern readwrite sensors/%c/#`,
//! inside `victim`'s tree. Here a granting pattern whose substituted value
//! contains `/` does not match (Mosquitto 1.x refused such clients outright);
//! a `deny` pattern is still applied, substituted as Mosquitto does, so this
//! only ever refuses more.
//!
//! # SUBSCRIBE
//!
//! Mosquitto 2.0's acl_file grants every SUBSCRIBE and filters each message
//! at delivery (the default check returns success for `MOSQ_ACL_SUBSCRIBE`).
//! [`AclFile::check_subscribe`] answers a sharper question, which the core
//! uses to refuse filters that can never deliver anything: is there a topic
//! name matched by the filter that [`AclFile::check`] lets this client read?
//! The answer is exact, not an approximation: see the method. Delivery is
//! still checked per message.
//!
//! # Cost
//!
//! Rules are compiled once into levels; the username's section is found by a
//! hash lookup. [`AclFile::check`] allocates nothing unless a `deny` pattern
//! must be substituted with a value containing `/`; `%c`/`%u` are compared
//! piece by piece against the topic's levels.
//!
//! ```
//! use midge_auth::{AclFile, Access};
//!
//! let acl = AclFile::parse("\
//! topic read public/#
//! user alice
//! topic readwrite alice/#
//! topic deny alice/secret
//! pattern write devices/%c/status
//! ").unwrap();
//! assert!(acl.check("c1", None, "public/news", Access::Read));
//! assert!(!acl.check("c1", None, "public/news", Access::Write));
//! assert!(acl.check("c1", Some("alice"), "alice/x", Access::Write));
//! assert!(!acl.check("c1", Some("alice"), "alice/secret", Access::Read));
//! assert!(acl.check("dev7", Some("bob"), "devices/dev7/status", Access::Write));
//! assert!(!acl.check("dev7", Some("bob"), "devices/dev8/status", Access::Write));
//! assert!(acl.check_subscribe("c1", Some("alice"), "alice/+"));
//! assert!(!acl.check_subscribe("c1", Some("bob"), "alice/#"));
//! ```

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

/// What a client wants to do with a topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// Receive messages published to the topic (delivery, retained messages).
    Read,
    /// Publish to the topic (including a will).
    Write,
}

/// Why one line of an ACL file does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AclLineError {
    #[error("not valid UTF-8")]
    NotUtf8,
    #[error("contains a NUL character")]
    Nul,
    /// The first word is not `topic`, `pattern` or `user` (or a tab joins it
    /// to the next word: words are separated by spaces).
    #[error("invalid line: expected 'topic', 'pattern', 'user' or a '#' comment, found '{0}'")]
    UnknownKeyword(String),
    #[error("empty topic after '{0}'")]
    MissingTopic(&'static str),
    #[error("invalid topic access type '{0}' (expected read, write, readwrite or deny)")]
    InvalidAccess(String),
    #[error("invalid ACL topic '{topic}': {reason}")]
    InvalidTopic { topic: String, reason: &'static str },
    #[error("missing username after 'user'")]
    MissingUsername,
}

/// An ACL file that cannot be read or does not parse.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AclError {
    /// A line of the file is malformed. `line` counts from 1.
    #[error("line {line}: {reason}")]
    Line { line: usize, reason: AclLineError },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl AclError {
    /// The 1-based line number, for errors about one line of the file.
    pub fn line(&self) -> Option<usize> {
        match self {
            AclError::Line { line, .. } => Some(*line),
            AclError::Io { .. } => None,
        }
    }
}

/// A part of one level of a pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(Box<str>),
    ClientId,
    Username,
}

/// One level of a compiled rule.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Level {
    Literal(Box<str>),
    /// `+`
    Single,
    /// `#`: this level and all below, including none (`a/#` matches `a`).
    Multi,
    /// A pattern level containing `%c` or `%u`.
    Subst(Box<[Piece]>),
}

#[derive(Clone, Debug)]
struct Rule {
    levels: Box<[Level]>,
    read: bool,
    write: bool,
    uses_client_id: bool,
    uses_username: bool,
    /// Occurrences of `%c` plus `%u`: how many levels a value with `/` adds.
    placeholders: usize,
    /// As written in the file, for substitution on the rare slow path.
    text: Box<str>,
}

/// The values substituted into patterns for one check.
struct Client<'a> {
    id: &'a str,
    username: Option<&'a str>,
    id_has_slash: bool,
    username_has_slash: bool,
}

impl<'a> Client<'a> {
    fn new(id: &'a str, username: Option<&'a str>) -> Self {
        Client {
            id,
            username,
            id_has_slash: id.contains('/'),
            username_has_slash: username.is_some_and(|u| u.contains('/')),
        }
    }

    fn value(&self, piece: &'a Piece) -> &'a str {
        match piece {
            Piece::Text(t) => t,
            Piece::ClientId => self.id,
            Piece::Username => self.username.unwrap_or(""),
        }
    }
}

impl Rule {
    fn allows(&self, access: Access) -> bool {
        match access {
            Access::Read => self.read,
            Access::Write => self.write,
        }
    }

    /// Whether a substituted value of this rule would contain `/`.
    fn spans_levels(&self, client: &Client<'_>) -> bool {
        (self.uses_client_id && client.id_has_slash)
            || (self.uses_username && client.username_has_slash)
    }

    /// The rule with `%c`/`%u` replaced, as Mosquitto builds it.
    fn substituted(&self, client: &Client<'_>) -> String {
        let mut out = String::with_capacity(self.text.len() + 16);
        let mut rest: &str = &self.text;
        while let Some(i) = rest.find('%') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            if let Some(tail) = after.strip_prefix('c') {
                out.push_str(client.id);
                rest = tail;
            } else if let (Some(tail), Some(u)) = (after.strip_prefix('u'), client.username) {
                out.push_str(u);
                rest = tail;
            } else {
                out.push('%');
                rest = after;
            }
        }
        out.push_str(rest);
        out
    }

    /// Does this rule, used as a filter, match `topic`? Patterns are
    /// compared level by level against the substituted values, without
    /// building the substituted filter.
    fn matches(&self, topic: &str, client: &Client<'_>) -> bool {
        if self.spans_levels(client) {
            return filter_matches(&self.substituted(client), topic);
        }
        if topic.starts_with('$')
            && matches!(self.levels.first(), Some(Level::Single | Level::Multi))
        {
            return false;
        }
        let mut parts = topic.split('/');
        for level in self.levels.iter() {
            match level {
                Level::Multi => return true,
                Level::Single => {
                    if parts.next().is_none() {
                        return false;
                    }
                }
                Level::Literal(lit) => match parts.next() {
                    Some(p) if p == &**lit => {}
                    _ => return false,
                },
                Level::Subst(pieces) => match parts.next() {
                    Some(p) if pieces_match(pieces, p, client) => {}
                    _ => return false,
                },
            }
        }
        parts.next().is_none()
    }
}

fn pieces_match(pieces: &[Piece], mut level: &str, client: &Client<'_>) -> bool {
    for piece in pieces {
        match level.strip_prefix(client.value(piece)) {
            Some(rest) => level = rest,
            None => return false,
        }
    }
    level.is_empty()
}

/// Standard MQTT matching of a topic name by a filter, on strings (slow path
/// and subscribe checks).
fn filter_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut parts = topic.split('/');
    for level in filter.split('/') {
        match level {
            "#" => return true,
            "+" => {
                if parts.next().is_none() {
                    return false;
                }
            }
            lit => match parts.next() {
                Some(p) if p == lit => {}
                _ => return false,
            },
        }
    }
    parts.next().is_none()
}

/// `mosquitto_sub_topic_check`: `+` and `#` only as whole levels, `#` last.
fn check_filter(filter: &str) -> Result<(), &'static str> {
    if filter.len() > 65535 {
        return Err("longer than 65535 bytes");
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') {
            if level != "#" {
                return Err("'#' must be a whole level");
            }
            if levels.peek().is_some() {
                return Err("'#' must be the last level");
            }
        } else if level.contains('+') && level != "+" {
            return Err("'+' must be a whole level");
        }
    }
    Ok(())
}

/// One rule list: Mosquitto keeps `deny` rules at the front of each list.
#[derive(Clone, Debug, Default)]
struct RuleList {
    deny: Vec<Rule>,
    grant: Vec<Rule>,
}

impl RuleList {
    fn push(&mut self, rule: Rule) {
        if rule.read || rule.write {
            self.grant.push(rule);
        } else {
            self.deny.push(rule);
        }
    }

    fn is_empty(&self) -> bool {
        self.deny.is_empty() && self.grant.is_empty()
    }

    fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.deny.iter().chain(self.grant.iter())
    }
}

/// A parsed Mosquitto ACL file, compiled for checks.
#[derive(Clone, Debug, Default)]
pub struct AclFile {
    /// `topic` lines before the first `user` line.
    anonymous: RuleList,
    /// `topic` lines of each `user` section, merged per username.
    users: HashMap<String, RuleList>,
    /// `pattern` lines, wherever they are.
    patterns: RuleList,
}

/// Mosquitto trims with C `isspace`.
fn is_c_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

/// Split off the next space-separated word, as `strtok_r(.., " ", ..)`: leading
/// spaces skipped; the rest starts after the single space ending the word.
fn next_word(s: &str) -> Option<(&str, Option<&str>)> {
    let s = s.trim_start_matches(' ');
    if s.is_empty() {
        return None;
    }
    Some(match s.split_once(' ') {
        Some((word, rest)) => (word, (!rest.is_empty()).then_some(rest)),
        None => (s, None),
    })
}

fn compile(text: &str, pattern: bool, read: bool, write: bool) -> Rule {
    let mut uses_client_id = false;
    let mut uses_username = false;
    let mut placeholders = 0;
    let levels = text
        .split('/')
        .map(|level| match level {
            "+" => Level::Single,
            "#" => Level::Multi,
            _ if pattern && (level.contains("%c") || level.contains("%u")) => {
                let mut pieces = Vec::new();
                let mut lit = String::new();
                let mut chars = level.chars().peekable();
                while let Some(c) = chars.next() {
                    let placeholder = match (c, chars.peek()) {
                        ('%', Some('c')) => Some(Piece::ClientId),
                        ('%', Some('u')) => Some(Piece::Username),
                        _ => None,
                    };
                    match placeholder {
                        Some(p) => {
                            chars.next();
                            uses_client_id |= p == Piece::ClientId;
                            uses_username |= p == Piece::Username;
                            placeholders += 1;
                            if !lit.is_empty() {
                                pieces.push(Piece::Text(std::mem::take(&mut lit).into()));
                            }
                            pieces.push(p);
                        }
                        None => lit.push(c),
                    }
                }
                if !lit.is_empty() {
                    pieces.push(Piece::Text(lit.into()));
                }
                Level::Subst(pieces.into())
            }
            _ => Level::Literal(level.into()),
        })
        .collect();
    Rule {
        levels,
        read,
        write,
        uses_client_id,
        uses_username,
        placeholders,
        text: text.into(),
    }
}

impl AclFile {
    /// Parse the text of an ACL file. The first bad line is an error naming
    /// its number; Mosquitto refuses to start on the same lines.
    pub fn parse(text: &str) -> Result<AclFile, AclError> {
        let mut acl = AclFile::default();
        let mut user: Option<String> = None;
        let body = text.strip_suffix('\n').unwrap_or(text);
        if text.is_empty() {
            return Ok(acl);
        }
        for (i, raw) in body.split('\n').enumerate() {
            let line = i + 1;
            let err = |reason| AclError::Line { line, reason };
            if raw.contains('\0') {
                return Err(err(AclLineError::Nul));
            }
            let trimmed = raw.trim_end_matches(is_c_space);
            if trimmed.starts_with('#') {
                continue;
            }
            let Some((keyword, rest)) = next_word(trimmed) else {
                continue;
            };
            match keyword {
                "topic" | "pattern" => {
                    let kind = if keyword == "topic" {
                        "topic"
                    } else {
                        "pattern"
                    };
                    let (first, rest) = rest
                        .and_then(next_word)
                        .ok_or(err(AclLineError::MissingTopic(kind)))?;
                    let (access, topic) = match rest.map(|r| r.trim_matches(is_c_space)) {
                        Some(topic) if !topic.is_empty() => (Some(first), topic),
                        _ => (None, first),
                    };
                    let (read, write) = match access {
                        None | Some("readwrite") => (true, true),
                        Some("read") => (true, false),
                        Some("write") => (false, true),
                        Some("deny") => (false, false),
                        Some(other) => {
                            return Err(err(AclLineError::InvalidAccess(other.to_owned())))
                        }
                    };
                    check_filter(topic).map_err(|reason| {
                        err(AclLineError::InvalidTopic {
                            topic: topic.to_owned(),
                            reason,
                        })
                    })?;
                    let rule = compile(topic, kind == "pattern", read, write);
                    if kind == "pattern" {
                        acl.patterns.push(rule);
                    } else {
                        match &user {
                            None => acl.anonymous.push(rule),
                            Some(u) => acl.users.entry(u.clone()).or_default().push(rule),
                        }
                    }
                }
                "user" => {
                    let name = rest
                        .map(|r| r.trim_matches(is_c_space))
                        .filter(|n| !n.is_empty())
                        .ok_or(err(AclLineError::MissingUsername))?;
                    user = Some(name.to_owned());
                }
                other => return Err(err(AclLineError::UnknownKeyword(other.to_owned()))),
            }
        }
        Ok(acl)
    }

    /// Read and parse a file. Invalid UTF-8 is reported with its line number.
    pub fn load(path: &Path) -> Result<AclFile, AclError> {
        let bytes = fs::read(path).map_err(|source| AclError::Io {
            path: path.to_owned(),
            source,
        })?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            AclError::Line {
                line: good.iter().filter(|&&b| b == b'\n').count() + 1,
                reason: AclLineError::NotUtf8,
            }
        })?;
        Self::parse(&text)
    }

    /// Whether the file has no rules at all (it then refuses everything).
    pub fn is_empty(&self) -> bool {
        self.anonymous.is_empty()
            && self.patterns.is_empty()
            && self.users.values().all(RuleList::is_empty)
    }

    /// The rule list of this client's own section, if any.
    fn own_list(&self, username: Option<&str>) -> Option<&RuleList> {
        match username {
            None => Some(&self.anonymous),
            Some(u) => self.users.get(u),
        }
    }

    /// Mosquitto's refusal of pattern checks for `+`/`#` in the username or
    /// client id (CVE-2017-7650).
    fn patterns_usable(&self, client: &Client<'_>) -> bool {
        let bad = |s: &str| s.contains(['+', '#']);
        !bad(client.id) && !client.username.is_some_and(bad)
    }

    /// May this client (`username` `None`: connected without one) read from
    /// or write to the topic name `topic`?
    pub fn check(
        &self,
        client_id: &str,
        username: Option<&str>,
        topic: &str,
        access: Access,
    ) -> bool {
        if topic.is_empty() || topic.contains(['+', '#']) || dollar_refused(topic, access) {
            return false;
        }
        let client = Client::new(client_id, username);
        if let Some(list) = self.own_list(username) {
            if list.deny.iter().any(|r| r.matches(topic, &client)) {
                return false;
            }
            if list
                .grant
                .iter()
                .any(|r| r.allows(access) && r.matches(topic, &client))
            {
                return true;
            }
        }
        if self.patterns.is_empty() || !self.patterns_usable(&client) {
            return false;
        }
        let applies = |r: &&Rule| !r.uses_username || username.is_some();
        if self
            .patterns
            .deny
            .iter()
            .filter(applies)
            .any(|r| r.matches(topic, &client))
        {
            return false;
        }
        self.patterns
            .grant
            .iter()
            .filter(applies)
            .any(|r| r.allows(access) && !r.spans_levels(&client) && r.matches(topic, &client))
    }

    /// For SUBSCRIBE: may this client ever read anything through `filter`?
    ///
    /// True exactly when some topic name matched by `filter` passes
    /// [`check`](Self::check) for reading. A shared subscription
    /// (`$share/group/filter`) is judged by its filter. An invalid filter is
    /// refused.
    ///
    /// How: every granting rule the client could reach is intersected with
    /// the filter; from each intersection we build representative topics,
    /// one per length up to the longest rule, with every wildcard level
    /// replaced by a string no rule mentions, and ask `check` about them. Such
    /// a topic is matched by the fewest rules of all topics of its length in
    /// the intersection (a rule matching a fresh level has a wildcard there),
    /// so if it is refused by a `deny`, every topic of that length is; and
    /// beyond the longest rule only `#` rules match, the same for every length.
    pub fn check_subscribe(&self, client_id: &str, username: Option<&str>, filter: &str) -> bool {
        let filter = match filter.strip_prefix("$share/") {
            Some(rest) => match rest.split_once('/') {
                Some((group, inner)) if !group.is_empty() && !group.contains(['+', '#']) => inner,
                _ => return false,
            },
            None => filter,
        };
        if filter.is_empty() || check_filter(filter).is_err() {
            return false;
        }
        let client = Client::new(client_id, username);
        let own = self.own_list(username);
        let patterns_usable = !self.patterns.is_empty() && self.patterns_usable(&client);
        let mut grants: Vec<String> = Vec::new();
        if let Some(list) = own {
            grants.extend(
                list.grant
                    .iter()
                    .filter(|r| r.read)
                    .map(|r| r.text.to_string()),
            );
        }
        if patterns_usable {
            grants.extend(
                self.patterns
                    .grant
                    .iter()
                    .filter(|r| r.read && (!r.uses_username || username.is_some()))
                    .filter(|r| !r.spans_levels(&client))
                    .map(|r| r.substituted(&client)),
            );
        }
        if grants.is_empty() {
            return false;
        }
        // Only the client's own list and (if usable) the patterns can decide.
        let relevant = || {
            own.into_iter()
                .flat_map(RuleList::rules)
                .chain(self.patterns.rules().filter(move |_| patterns_usable))
        };
        // Longest rule once substituted (a value with '/' adds levels).
        let slashes = client
            .id
            .matches('/')
            .count()
            .max(username.map_or(0, |u| u.matches('/').count()));
        let longest = relevant()
            .map(|r| r.levels.len() + r.placeholders * slashes)
            .max()
            .unwrap_or(0);
        let max_len = longest.max(filter.split('/').count()) + 2;
        // A level no rule and not the filter mentions, even substituted.
        let mut used: HashSet<String> = filter.split('/').map(str::to_owned).collect();
        for rule in relevant() {
            let text = if rule.placeholders > 0 {
                rule.substituted(&client)
            } else {
                rule.text.to_string()
            };
            used.extend(text.split('/').map(str::to_owned));
        }
        let fresh = (0..)
            .map(|n| format!("~{n}"))
            .find(|f| !used.contains(f))
            .unwrap_or_default();
        for grant in &grants {
            let Some(levels) = intersect(filter, grant) else {
                continue;
            };
            for topic in witnesses(&levels, &fresh, max_len) {
                if filter_matches(filter, &topic)
                    && filter_matches(grant, &topic)
                    && self.check(client_id, username, &topic, Access::Read)
                {
                    return true;
                }
            }
        }
        false
    }
}

/// `acl__check_dollar`: broker-wide rules for `$` topics, applied before the
/// ACL file.
fn dollar_refused(topic: &str, access: Access) -> bool {
    if topic.starts_with("$SYS") {
        access == Access::Write && !filter_matches("$SYS/broker/connection/+/state", topic)
    } else {
        topic.starts_with("$share")
    }
}

/// The filter matching exactly the topics both filters match (ignoring the
/// `$` rule, which the caller checks on the result), or `None` if none.
fn intersect<'a>(a: &'a str, b: &'a str) -> Option<Vec<&'a str>> {
    let mut out = Vec::new();
    let mut la = a.split('/');
    let mut lb = b.split('/');
    loop {
        match (la.next(), lb.next()) {
            (None, None) => return Some(out),
            (Some("#"), Some(x)) => {
                out.push(x);
                out.extend(lb);
                return Some(out);
            }
            (Some(x), Some("#")) => {
                out.push(x);
                out.extend(la);
                return Some(out);
            }
            // `a/#` also matches `a`: the other side may stop here.
            (Some("#"), None) | (None, Some("#")) => return Some(out),
            (None, Some(_)) | (Some(_), None) => return None,
            (Some("+"), Some(x)) | (Some(x), Some("+")) => out.push(x),
            (Some(x), Some(y)) if x == y => out.push(x),
            (Some(_), Some(_)) => return None,
        }
    }
}

/// Representative topic names of a filter: `+` as `fresh`, and `#` as
/// 0..=`max_len` fresh levels (at least one if it is the first level).
fn witnesses(levels: &[&str], fresh: &str, max_len: usize) -> Vec<String> {
    let fixed: Vec<&str> = levels
        .iter()
        .take_while(|l| **l != "#")
        .map(|l| if *l == "+" { fresh } else { l })
        .collect();
    let base = fixed.join("/");
    if fixed.len() == levels.len() {
        return vec![base];
    }
    let min_tail = usize::from(fixed.is_empty());
    (min_tail..=max_len.saturating_sub(fixed.len()).max(min_tail))
        .map(|n| {
            let mut t = base.clone();
            for i in 0..n {
                if i > 0 || !fixed.is_empty() {
                    t.push('/');
                }
                t.push_str(fresh);
            }
            t
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intersections() {
        assert_eq!(intersect("a/+", "+/b"), Some(vec!["a", "b"]));
        assert_eq!(intersect("a/#", "a"), Some(vec!["a"]));
        assert_eq!(intersect("#", "a/+/c"), Some(vec!["a", "+", "c"]));
        assert_eq!(intersect("a/b", "a/c"), None);
        assert_eq!(intersect("a/b", "a/b/c"), None);
        assert_eq!(intersect("a/+/#", "a/x/#"), Some(vec!["a", "x", "#"]));
    }

    #[test]
    fn witness_lengths() {
        assert_eq!(witnesses(&["a", "+"], "~", 4), vec!["a/~"]);
        assert_eq!(witnesses(&["a", "#"], "~", 3), vec!["a", "a/~", "a/~/~"]);
        assert_eq!(witnesses(&["#"], "~", 2), vec!["~", "~/~"]);
    }

    #[test]
    fn substitution_like_mosquitto() {
        let r = compile("a/%c/%u/%%c/%x/x%cy", true, true, true);
        let c = Client::new("id", Some("user"));
        assert_eq!(r.substituted(&c), "a/id/user/%id/%x/xidy");
        assert!(r.matches("a/id/user/%id/%x/xidy", &c));
        assert!(!r.matches("a/id/user/%id/%x/xid", &c));
    }
}
