//! A whole password file: parsing with line numbers, lookups and verification,
//! edits that keep the file's order, comments and blank lines, and saving that
//! never leaves a half-written file behind.
//!
//! Line rules follow Mosquitto 2.0's broker (`pwfile__parse`): a line starting
//! with `#` is a comment, a line with nothing but blanks is ignored, otherwise
//! `username:hash` with blanks trimmed around both. Where Mosquitto silently skips
//! or half-reads a line (no `:`, a second `:`, a duplicate user) we report it: a
//! password file is security configuration, and a typo should not lock a user out
//! silently. [`PasswordFile::parse_lenient`] gives the broker Mosquitto's
//! "log it, drop that entry, keep going" behaviour with the same diagnostics.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{LineError, PasswordFileError, UsernameError};
use crate::hash::{HashAlgorithm, PasswordHash, DEFAULT_ITERATIONS};

#[derive(Clone, Debug)]
enum Line {
    Entry {
        username: String,
        hash: PasswordHash,
    },
    /// A comment, a blank line or (lenient parsing only) a line that did not
    /// parse: written back exactly as read.
    Verbatim(String),
}

/// A Mosquitto password file in memory, in file order.
#[derive(Clone, Debug)]
pub struct PasswordFile {
    lines: Vec<Line>,
    /// username -> index into `lines`.
    index: HashMap<String, usize>,
    /// What a lookup of an unknown user costs: the most expensive entry's
    /// PBKDF2 rounds (`None`: only `$6$` entries), so that "no such user" takes
    /// at least as long as "wrong password" for every user in the file.
    decoy_iterations: Option<u32>,
}

impl Default for PasswordFile {
    fn default() -> Self {
        PasswordFile {
            lines: Vec::new(),
            index: HashMap::new(),
            decoy_iterations: Some(DEFAULT_ITERATIONS),
        }
    }
}

/// Mosquitto's `misc__trimblanks` trims C `isspace` characters.
fn trim_blanks(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_ascii_whitespace() || c == '\x0b')
}

/// Lines of `text` without their `\n` (and a `\r` before it); no phantom empty
/// line after a final newline.
fn split_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let body = text.strip_suffix('\n').unwrap_or(text);
    let lines = if text.is_empty() {
        None
    } else {
        Some(body.split('\n'))
    };
    lines
        .into_iter()
        .flatten()
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .enumerate()
        .map(|(i, l)| (i + 1, l))
}

fn is_ignored(line: &str) -> bool {
    line.starts_with('#') || trim_blanks(line).is_empty()
}

/// Split `username:rest`, trimming both; the rest is never empty.
fn split_entry(line: &str) -> Result<(&str, &str), LineError> {
    let (user, rest) = line.split_once(':').ok_or(LineError::MissingSeparator)?;
    let user = trim_blanks(user);
    if user.is_empty() {
        return Err(LineError::EmptyUsername);
    }
    if user.len() > 65535 {
        return Err(LineError::UsernameTooLong);
    }
    let rest = trim_blanks(rest);
    if rest.is_empty() {
        return Err(LineError::EmptyPassword);
    }
    Ok((user, rest))
}

/// The rules `mosquitto_passwd` applies to a username it is asked to store.
pub fn validate_username(username: &str) -> Result<(), UsernameError> {
    if username.is_empty() {
        return Err(UsernameError::Empty);
    }
    if username.len() > 65535 {
        return Err(UsernameError::TooLong);
    }
    // C `iscntrl` in the C locale: ASCII controls only.
    if username.bytes().any(|b| b.is_ascii_control()) {
        return Err(UsernameError::ControlCharacter);
    }
    if username.contains(':') {
        return Err(UsernameError::Colon);
    }
    Ok(())
}

impl PasswordFile {
    /// Parse a password file; the first bad line is an error naming its number.
    pub fn parse(text: &str) -> Result<PasswordFile, PasswordFileError> {
        let (file, mut errors) = Self::parse_lenient(text);
        if errors.is_empty() {
            Ok(file)
        } else {
            Err(errors.swap_remove(0))
        }
    }

    /// Parse as Mosquitto's broker does: every bad line is reported and left out
    /// of authentication (kept verbatim for [`Display`](fmt::Display)), and the
    /// rest is usable. A duplicate keeps the first definition.
    pub fn parse_lenient(text: &str) -> (PasswordFile, Vec<PasswordFileError>) {
        let mut file = PasswordFile::default();
        let mut errors = Vec::new();
        let mut first_line: HashMap<String, usize> = HashMap::new();
        for (n, line) in split_lines(text) {
            let parsed = if is_ignored(line) {
                Ok(None)
            } else {
                Self::parse_entry(line).and_then(|(user, hash)| match first_line.get(user) {
                    Some(&first) => Err(LineError::DuplicateUser {
                        username: user.to_owned(),
                        first_line: first,
                    }),
                    None => Ok(Some((user, hash))),
                })
            };
            match parsed {
                Ok(Some((user, hash))) => {
                    first_line.insert(user.to_owned(), n);
                    file.push_entry(user.to_owned(), hash);
                }
                Ok(None) => file.lines.push(Line::Verbatim(line.to_owned())),
                Err(reason) => {
                    errors.push(PasswordFileError::Line { line: n, reason });
                    file.lines.push(Line::Verbatim(line.to_owned()));
                }
            }
        }
        file.update_decoy();
        (file, errors)
    }

    fn parse_entry(line: &str) -> Result<(&str, PasswordHash), LineError> {
        let (user, rest) = split_entry(line)?;
        if rest.contains(':') {
            return Err(LineError::ExtraSeparator);
        }
        Ok((user, rest.parse()?))
    }

    /// Read and parse a file. Invalid UTF-8 is reported with its line number.
    pub fn load(path: impl AsRef<Path>) -> Result<PasswordFile, PasswordFileError> {
        let path = path.as_ref();
        let bytes = fs::read(path).map_err(|source| PasswordFileError::Io {
            path: path.to_owned(),
            source,
        })?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            PasswordFileError::Line {
                line: good.iter().filter(|&&b| b == b'\n').count() + 1,
                reason: LineError::NotUtf8,
            }
        })?;
        Self::parse(&text)
    }

    /// Hash a plain-text `username:password` file, as `mosquitto_passwd -U`.
    ///
    /// The password is everything after the first `:`, blanks trimmed. Comments
    /// and blank lines are kept. A password that already parses as a `$6$`/`$7$`
    /// hash is kept as it is rather than hashed a second time, so running this
    /// twice does not lock everyone out (Mosquitto would re-hash it).
    pub fn from_plaintext(
        text: &str,
        algorithm: HashAlgorithm,
        iterations: u32,
    ) -> Result<PasswordFile, PasswordFileError> {
        let mut file = PasswordFile::default();
        let mut first_line: HashMap<&str, usize> = HashMap::new();
        for (n, line) in split_lines(text) {
            if is_ignored(line) {
                file.lines.push(Line::Verbatim(line.to_owned()));
                continue;
            }
            let err = |reason| PasswordFileError::Line { line: n, reason };
            let (user, password) = split_entry(line).map_err(err)?;
            if let Some(&first) = first_line.get(user) {
                return Err(err(LineError::DuplicateUser {
                    username: user.to_owned(),
                    first_line: first,
                }));
            }
            first_line.insert(user, n);
            let hash = match password.parse::<PasswordHash>() {
                Ok(already) => already,
                Err(_) => PasswordHash::generate(algorithm, password, iterations)?,
            };
            file.push_entry(user.to_owned(), hash);
        }
        file.update_decoy();
        Ok(file)
    }

    fn push_entry(&mut self, username: String, hash: PasswordHash) {
        self.index.insert(username.clone(), self.lines.len());
        self.lines.push(Line::Entry { username, hash });
    }

    fn update_decoy(&mut self) {
        let mut any = false;
        let mut max: Option<u32> = None;
        for line in &self.lines {
            if let Line::Entry { hash, .. } = line {
                any = true;
                max = max.max(hash.iterations());
            }
        }
        self.decoy_iterations = if any { max } else { Some(DEFAULT_ITERATIONS) };
    }

    /// Whether `username` exists and `password` is theirs.
    ///
    /// A user that does not exist costs a hash computation like a wrong
    /// password does, and hashes are compared in constant time, so timing tells
    /// an attacker neither which users exist nor how close a guess was.
    pub fn verify(&self, username: &str, password: impl AsRef<[u8]>) -> bool {
        match self.get(username) {
            Some(hash) => hash.verify(password),
            None => {
                crate::hash::decoy(self.decoy_iterations, password.as_ref());
                false
            }
        }
    }

    /// The hash stored for `username`.
    pub fn get(&self, username: &str) -> Option<&PasswordHash> {
        let &i = self.index.get(username)?;
        match &self.lines[i] {
            Line::Entry { hash, .. } => Some(hash),
            Line::Verbatim(_) => None,
        }
    }

    /// Usernames in file order.
    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.lines.iter().filter_map(|l| match l {
            Line::Entry { username, .. } => Some(username.as_str()),
            Line::Verbatim(_) => None,
        })
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Add `username` or change their password, with PBKDF2-SHA512 (`$7$`) and a
    /// fresh salt. An existing user keeps their place in the file.
    pub fn set(
        &mut self,
        username: &str,
        password: impl AsRef<[u8]>,
        iterations: u32,
    ) -> Result<(), PasswordFileError> {
        self.set_with(username, password, HashAlgorithm::Sha512Pbkdf2, iterations)
    }

    /// [`set`](Self::set) with a chosen algorithm (`mosquitto_passwd -H`).
    pub fn set_with(
        &mut self,
        username: &str,
        password: impl AsRef<[u8]>,
        algorithm: HashAlgorithm,
        iterations: u32,
    ) -> Result<(), PasswordFileError> {
        validate_username(username)?;
        let hash = PasswordHash::generate(algorithm, password, iterations)?;
        self.set_hash(username, hash)
    }

    /// Store an already computed hash for `username`.
    pub fn set_hash(
        &mut self,
        username: &str,
        hash: PasswordHash,
    ) -> Result<(), PasswordFileError> {
        validate_username(username)?;
        match self.index.get(username) {
            Some(&i) => {
                self.lines[i] = Line::Entry {
                    username: username.to_owned(),
                    hash,
                }
            }
            None => self.push_entry(username.to_owned(), hash),
        }
        self.update_decoy();
        Ok(())
    }

    /// Remove `username`; false if there was no such user.
    pub fn remove(&mut self, username: &str) -> bool {
        let Some(i) = self.index.remove(username) else {
            return false;
        };
        self.lines.remove(i);
        for v in self.index.values_mut() {
            if *v > i {
                *v -= 1;
            }
        }
        self.update_decoy();
        true
    }

    /// Write the file to `path`, replacing it atomically.
    ///
    /// A new file is created readable by its owner only (mode 0600, as newer
    /// Mosquitto does with `umask(0077)`). An existing file keeps its mode, owner
    /// and group, so a file the broker's user owns stays readable by the broker
    /// when root edits it; if the owner cannot be kept (not root), the file is
    /// rewritten in place, as Mosquitto does. A symbolic link is followed, and the
    /// file it points to is replaced.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), PasswordFileError> {
        let path = path.as_ref();
        write_replacing(path, self.to_string().as_bytes()).map_err(|source| PasswordFileError::Io {
            path: path.to_owned(),
            source,
        })
    }
}

impl fmt::Display for PasswordFile {
    /// The file's text: one line per entry, comment or blank line, in order,
    /// each ending in `\n`, entries written as `username:hash`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in &self.lines {
            match line {
                Line::Entry { username, hash } => writeln!(f, "{username}:{hash}")?,
                Line::Verbatim(text) => writeln!(f, "{text}")?,
            }
        }
        Ok(())
    }
}

fn write_replacing(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

    let target: PathBuf = match fs::canonicalize(path) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => path.to_owned(),
        Err(e) => return Err(e),
    };
    let existing = match fs::metadata(&target) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "passwd".into());
    let mut nonce = [0u8; 6];
    let _ = getrandom::fill(&mut nonce);
    let nonce: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
    let tmp = dir.join(format!(".{name}.{}.{nonce}.tmp", std::process::id()));

    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(contents)?;
        if let Some(meta) = &existing {
            f.set_permissions(meta.permissions())?;
            let mine = f.metadata()?;
            if (mine.uid(), mine.gid()) != (meta.uid(), meta.gid()) {
                std::os::unix::fs::fchown(&f, Some(meta.uid()), Some(meta.gid()))?;
            }
        }
        f.sync_all()?;
        fs::rename(&tmp, &target)
    })();
    match result {
        Ok(()) => {
            // Make the rename itself durable; not all filesystems allow this.
            if let Ok(d) = fs::File::open(&dir) {
                let _ = d.sync_all();
            }
            Ok(())
        }
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            if existing.is_some() && e.kind() == std::io::ErrorKind::PermissionDenied {
                // Cannot keep the owner, or cannot create files in the directory:
                // rewrite the file itself, which keeps owner and mode.
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .truncate(true)
                    .open(&target)?;
                f.write_all(contents)?;
                f.sync_all()
            } else {
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Written by Debian's mosquitto_passwd 2.0.11:
    //   mosquitto_passwd -c -b f alice secret; mosquitto_passwd -b f bob 'pa:ss'
    //   mosquitto_passwd -H sha512 -b f carol x; mosquitto_passwd -I 1000 -b f dave y
    const MOSQUITTO_FILE: &str = "\
alice:$7$101$2h0GAquMGsofmpT7$0XuOySGWJMYXsgyTyFsek5Ls0jJTpdCNpEyTBWbI1U9PfpZrnklJX+FVyhGJnHB4OAGVm1AD7l4Nh7L3qNmUZA==
bob:$7$101$BLXHz2HVCSKop4AJ$hM6C6+YFF5PAMIzlyOMplvsm+oYV8hjN0lSMldWnSfVHzoAI9Nt2wXU8PYl4g9iIT0IBKB/YXqKzj3jFNpqddA==
carol:$6$GF/WfRNrzBXJLlBL$0uGicdv8My09G516BYtnoD+OfHqi9oAYbFNvWBLVkWfzA11Yy0+zQivJtrUGI17suxGrOlg7BiQPx2xvYgpS9w==
dave:$7$1000$5Ss9QbQsDytoalBk$ivfhrOjQtroIkuylHlIEvO1GJeir9lReg1R7PFO+ShPZwBscJ3j2ljCJTa8IBweyl/iIme/E1kYs0MuULZAPEw==
";

    #[test]
    fn mosquitto_vectors_verify() {
        let f = PasswordFile::parse(MOSQUITTO_FILE).unwrap();
        assert_eq!(
            f.users().collect::<Vec<_>>(),
            ["alice", "bob", "carol", "dave"]
        );
        assert!(f.verify("alice", "secret"));
        assert!(f.verify("bob", "pa:ss"));
        assert!(f.verify("carol", "x"));
        assert!(f.verify("dave", "y"));
        assert!(!f.verify("alice", "Secret"));
        assert!(!f.verify("alice", ""));
        assert!(!f.verify("carol", "y"));
        assert!(!f.verify("eve", "secret"));
        assert_eq!(f.get("dave").unwrap().iterations(), Some(1000));
        assert_eq!(f.get("carol").unwrap().algorithm(), HashAlgorithm::Sha512);
        // Reading and writing back changes nothing.
        assert_eq!(f.to_string(), MOSQUITTO_FILE);
    }

    #[test]
    fn comments_blanks_crlf_and_blanks_around_fields() {
        let alice = MOSQUITTO_FILE.lines().next().unwrap();
        let (_, hash) = alice.split_once(':').unwrap();
        let text = format!("# users\n\n   \n  alice  :\t{hash} \r\n#end");
        let f = PasswordFile::parse(&text).unwrap();
        assert!(f.verify("alice", "secret"));
        assert_eq!(f.len(), 1);
        assert_eq!(
            f.to_string(),
            format!("# users\n\n   \nalice:{hash}\n#end\n")
        );
    }

    #[test]
    fn malformed_lines_name_their_number_and_reason() {
        let good = MOSQUITTO_FILE.lines().next().unwrap();
        let hash = good.split_once(':').unwrap().1;
        let cases: Vec<(String, usize, LineError)> = vec![
            (format!("{good}\nnocolon\n"), 2, LineError::MissingSeparator),
            (format!("# c\n:{hash}\n"), 2, LineError::EmptyUsername),
            (format!("  :{hash}\n"), 1, LineError::EmptyUsername),
            ("bob:\n".into(), 1, LineError::EmptyPassword),
            ("bob:   \n".into(), 1, LineError::EmptyPassword),
            (format!("bob:{hash}:x\n"), 1, LineError::ExtraSeparator),
            (
                "\n\nbob:plain\n".into(),
                3,
                LineError::Hash(crate::HashError::NotHashed),
            ),
            (
                "bob:$7$101$AAAA$AAAA\n".into(),
                1,
                LineError::Hash(crate::HashError::HashLength(3)),
            ),
            (
                format!("{good}\nbob:{hash}\nalice:{hash}\n"),
                3,
                LineError::DuplicateUser {
                    username: "alice".into(),
                    first_line: 1,
                },
            ),
            (
                format!("{}:{hash}\n", "u".repeat(65536)),
                1,
                LineError::UsernameTooLong,
            ),
        ];
        for (text, line, reason) in cases {
            let err = PasswordFile::parse(&text).unwrap_err();
            assert_eq!(err.line(), Some(line), "{text:.60}");
            let msg = err.to_string();
            assert!(msg.starts_with(&format!("line {line}: ")), "{msg}");
            match err {
                PasswordFileError::Line { reason: r, .. } => assert_eq!(r, reason),
                other => panic!("{other}"),
            }
        }
    }

    #[test]
    fn lenient_parse_keeps_the_good_entries() {
        let text = format!("junk\n{MOSQUITTO_FILE}bob:dup\n");
        let (f, errors) = PasswordFile::parse_lenient(&text);
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0].line(), Some(1));
        assert_eq!(errors[1].line(), Some(6));
        assert!(f.verify("alice", "secret"));
        assert!(f.verify("bob", "pa:ss"));
        assert_eq!(f.len(), 4);
        // The bad lines are kept as they were.
        assert_eq!(f.to_string(), text);
    }

    #[test]
    fn set_remove_round_trip_keeps_order() {
        let mut f = PasswordFile::parse(&format!("# head\n{MOSQUITTO_FILE}")).unwrap();
        f.set("bob", "new", 5).unwrap();
        f.set_with("zoe", "z", HashAlgorithm::Sha512, 0).unwrap();
        assert!(f.remove("carol"));
        assert!(!f.remove("carol"));
        assert!(!f.remove("nobody"));
        let text = f.to_string();
        let g = PasswordFile::parse(&text).unwrap();
        assert_eq!(
            g.users().collect::<Vec<_>>(),
            ["alice", "bob", "dave", "zoe"]
        );
        assert!(text.starts_with("# head\nalice:"));
        assert!(g.verify("bob", "new") && !g.verify("bob", "pa:ss"));
        assert_eq!(g.get("bob").unwrap().iterations(), Some(5));
        assert!(g.verify("zoe", "z"));
        assert!(g.verify("dave", "y") && g.verify("alice", "secret"));
        assert!(!g.verify("carol", "x"));
        assert_eq!(g.to_string(), text);
    }

    #[test]
    fn set_checks_usernames_like_mosquitto_passwd() {
        let mut f = PasswordFile::default();
        let bad = [
            ("", UsernameError::Empty),
            ("a:b", UsernameError::Colon),
            ("a\tb", UsernameError::ControlCharacter),
            ("a\x7fb", UsernameError::ControlCharacter),
        ];
        for (name, want) in bad {
            match f.set(name, "p", 101) {
                Err(PasswordFileError::Username(e)) => assert_eq!(e, want),
                other => panic!("{name:?}: {other:?}"),
            }
        }
        assert!(matches!(
            f.set("ok", "p", 0),
            Err(PasswordFileError::ZeroIterations)
        ));
        f.set("ünïcode user", "p", 101).unwrap();
        assert!(f.verify("ünïcode user", "p"));
        assert!(!f.is_empty() && f.len() == 1);
    }

    #[test]
    fn plaintext_conversion() {
        let text = "# plain\nalice: secret \nbob:pa:ss\n\ncarol:$6$GF/WfRNrzBXJLlBL$0uGicdv8My09G516BYtnoD+OfHqi9oAYbFNvWBLVkWfzA11Yy0+zQivJtrUGI17suxGrOlg7BiQPx2xvYgpS9w==\n";
        let f = PasswordFile::from_plaintext(text, HashAlgorithm::Sha512Pbkdf2, 101).unwrap();
        assert!(f.verify("alice", "secret"));
        assert!(f.verify("bob", "pa:ss"));
        assert!(f.verify("carol", "x"), "already hashed line kept");
        let out = f.to_string();
        assert!(out.starts_with("# plain\nalice:$7$101$"));
        assert!(PasswordFile::parse(&out).is_ok());
        let err = PasswordFile::from_plaintext("a:x\nb\n", HashAlgorithm::Sha512, 1).unwrap_err();
        assert_eq!(err.line(), Some(2));
        let err = PasswordFile::from_plaintext("a:\n", HashAlgorithm::Sha512, 1).unwrap_err();
        assert_eq!(err.line(), Some(1));
    }

    #[test]
    fn empty_and_unknown_users_cost_a_hash() {
        let f = PasswordFile::parse("").unwrap();
        assert!(f.is_empty());
        assert_eq!(f.to_string(), "");
        assert!(!f.verify("anyone", "x"));
        let f = PasswordFile::parse(MOSQUITTO_FILE).unwrap();
        assert_eq!(f.decoy_iterations, Some(1000));
        let only6 = MOSQUITTO_FILE.lines().nth(2).unwrap();
        let g = PasswordFile::parse(only6).unwrap();
        assert_eq!(g.decoy_iterations, None);
        assert!(!g.verify("nobody", "x"));
    }

    /// The unknown-user path must do the hashing work, not return at once.
    /// Measured in relative terms with generous slack to stay robust on a
    /// loaded machine: unknown users take at least a fifth of a wrong password.
    #[test]
    fn unknown_user_takes_about_as_long_as_a_wrong_password() {
        use std::time::Instant;
        let mut f = PasswordFile::default();
        f.set("alice", "secret", 5_000).unwrap();
        let time = |user: &str| {
            let t = Instant::now();
            for _ in 0..3 {
                assert!(!f.verify(user, "wrong"));
            }
            t.elapsed()
        };
        let _ = time("alice");
        let wrong = time("alice");
        let unknown = time("nobody");
        assert!(
            unknown * 5 >= wrong,
            "unknown {unknown:?} vs wrong {wrong:?}"
        );
        assert!(
            wrong * 5 >= unknown,
            "unknown {unknown:?} vs wrong {wrong:?}"
        );
    }

    #[test]
    fn save_and_load() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("midge-auth-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("passwd");
        let _ = fs::remove_file(&path);
        let mut f = PasswordFile::default();
        f.set("alice", "secret", 101).unwrap();
        f.save(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(PasswordFile::load(&path).unwrap().verify("alice", "secret"));

        // An existing file keeps its mode; a symlink is followed.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let link = dir.join("link");
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(&path, &link).unwrap();
        f.set("bob", "b", 101).unwrap();
        f.save(&link).unwrap();
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        assert!(PasswordFile::load(&path).unwrap().verify("bob", "b"));

        fs::write(&path, b"ok:x\n\xff\xfe:y\n").unwrap();
        let err = PasswordFile::load(&path).unwrap_err();
        assert_eq!(err.line(), Some(2));
        let err = PasswordFile::load(dir.join("missing")).unwrap_err();
        assert!(matches!(err, PasswordFileError::Io { .. }));
        let leftovers = fs::read_dir(&dir).unwrap().count();
        assert_eq!(leftovers, 2, "no temporary files left behind");
        fs::remove_dir_all(&dir).unwrap();
    }
}
