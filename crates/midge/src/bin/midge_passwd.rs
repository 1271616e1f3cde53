//! `midge_passwd`: manage password files, command-line compatible with
//! Mosquitto 2.0's `mosquitto_passwd`.
//!
//! ```text
//! midge_passwd [-H sha512 | -H sha512-pbkdf2] [-I iterations] [-c | -D] passwordfile username
//! midge_passwd [-H ...] [-I iterations] [-c] -b passwordfile username password
//! midge_passwd [-H ...] [-I iterations] -U passwordfile
//! ```
//!
//! Options, their order of checks, messages and exit codes follow
//! `mosquitto_passwd` (1 for errors and a missing user, 2 when the two typed
//! passwords differ), so scripts written for it keep working. The file format
//! and its safe rewriting live in `midge-auth`; this file is only the command
//! line and the password prompt.

use std::ffi::OsString;
use std::io::{BufRead, IsTerminal, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::ExitCode;

use midge_auth::{
    validate_username, HashAlgorithm, PasswordFile, PasswordFileError, UsernameError,
    DEFAULT_ITERATIONS,
};

fn print_usage() {
    print!(
        "midge_passwd is a tool for managing password files for midge and mosquitto.\n\n\
Usage: midge_passwd [-H sha512 | -H sha512-pbkdf2] [-I iterations] [-c | -D] passwordfile username\n\
       midge_passwd [-H sha512 | -H sha512-pbkdf2] [-I iterations] [-c] -b passwordfile username password\n\
       midge_passwd -U passwordfile\n\
 -b : run in batch mode to allow passing passwords on the command line.\n\
 -c : create a new password file. This will overwrite existing files.\n\
 -D : delete the username rather than adding/updating its password.\n\
 -H : specify the hashing algorithm. Defaults to sha512-pbkdf2, which is recommended.\n\
      Mosquitto 1.6 and earlier defaulted to sha512.\n\
 -I : specify the number of iterations for sha512-pbkdf2. Defaults to {DEFAULT_ITERATIONS}.\n\
 -U : update a plain text password file to use hashed passwords.\n\
\n\
The file format is that of mosquitto_passwd; see the midge documentation.\n\n"
    );
}

/// C's `atoi`, as `mosquitto_passwd` reads `-I`: leading blanks, a sign, digits;
/// anything else ends the number. Out-of-range values count as invalid.
fn atoi(s: &str) -> i64 {
    let s = s.trim_start_matches(|c: char| c.is_ascii_whitespace());
    let (neg, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let mut n: i64 = 0;
    for b in digits.bytes().take_while(u8::is_ascii_digit) {
        n = n.saturating_mul(10).saturating_add(i64::from(b - b'0'));
    }
    if neg {
        -n
    } else {
        n
    }
}

/// `strerror` text: the io::Error message without Rust's " (os error N)".
fn strerror(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error ") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

/// One line of the password from the terminal (echo off) or from stdin when it
/// is not a terminal, as `mosquitto_passwd`'s `gets_quiet`. `None`: nothing.
fn read_secret(stdin: &mut impl BufRead, terminal: bool) -> Option<Vec<u8>> {
    if terminal {
        // rpassword reads /dev/tty with echo off and echoes the final newline.
        return rpassword::read_password().ok().map(String::into_bytes);
    }
    let mut line = Vec::new();
    match stdin.read_until(b'\n', &mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => {
            while matches!(line.last(), Some(b'\n' | b'\r')) {
                line.pop();
            }
            Some(line)
        }
    }
}

/// `get_password("Password: ", "Reenter password: ")`: Err is the exit code.
fn get_password() -> Result<Vec<u8>, u8> {
    let stdin = std::io::stdin();
    let terminal = stdin.is_terminal();
    let mut stdin = stdin.lock();
    let mut ask = |prompt: &str| -> Result<Vec<u8>, u8> {
        print!("{prompt}");
        let _ = std::io::stdout().flush();
        match read_secret(&mut stdin, terminal) {
            Some(p) if !p.is_empty() => {
                if !terminal {
                    println!();
                }
                Ok(p)
            }
            _ => {
                eprintln!("Error: Empty password.");
                Err(1)
            }
        }
    };
    let first = ask("Password: ")?;
    let second = ask("Reenter password: ")?;
    if first != second {
        eprintln!("Error: Passwords do not match.");
        return Err(2);
    }
    Ok(first)
}

fn username_message(e: &UsernameError) -> &'static str {
    match e {
        UsernameError::TooLong => "Error: Username must be less than 65536 characters long.",
        UsernameError::ControlCharacter => "Error: Username must not contain control characters.",
        UsernameError::Colon => "Error: Username must not contain the ':' character.",
        _ => "Error: Username must not be empty.",
    }
}

fn set_error(e: &PasswordFileError) -> String {
    match e {
        PasswordFileError::Username(u) => username_message(u).to_owned(),
        PasswordFileError::ZeroIterations => "Error: Number of iterations must be > 0.".into(),
        _ => "Error: Unable to hash password.".into(),
    }
}

enum Mode {
    Create,
    Delete,
    Update,
    Convert,
}

fn main() -> ExitCode {
    ExitCode::from(run(std::env::args_os().skip(1).collect()))
}

fn run(args: Vec<OsString>) -> u8 {
    if args.is_empty() {
        print_usage();
        return 1;
    }
    let mut algorithm = HashAlgorithm::Sha512Pbkdf2;
    let mut iterations = DEFAULT_ITERATIONS;
    let (mut batch, mut create, mut delete, mut convert) = (false, false, false, false);

    let mut idx = 0;
    while idx < args.len() {
        match args[idx].to_str() {
            Some("-H") => {
                let Some(name) = args.get(idx + 1) else {
                    eprintln!("Error: -H argument given but not enough other arguments.");
                    return 1;
                };
                match name.to_str().and_then(|n| n.parse().ok()) {
                    Some(a) => algorithm = a,
                    None => {
                        eprintln!("Error: Unknown hash type '{}'", name.to_string_lossy());
                        return 1;
                    }
                }
                idx += 1;
            }
            Some("-b") => batch = true,
            Some("-c") => create = true,
            Some("-D") => delete = true,
            Some("-I") => {
                let Some(n) = args.get(idx + 1) else {
                    eprintln!("Error: -I argument given but not enough other arguments.");
                    return 1;
                };
                match u32::try_from(atoi(&n.to_string_lossy())) {
                    Ok(n) if n >= 1 => iterations = n,
                    _ => {
                        eprintln!("Error: Number of iterations must be > 0.");
                        return 1;
                    }
                }
                idx += 1;
            }
            Some("-U") => convert = true,
            // mosquitto_passwd would take an unknown option as the file name;
            // printing the usage is kinder and exits the same way.
            Some(s) if s.starts_with('-') && s.len() > 1 => {
                print_usage();
                return 1;
            }
            _ => break,
        }
        idx += 1;
    }
    let rest = &args[idx..];

    if create && delete {
        eprintln!("Error: -c and -D cannot be used together.");
        return 1;
    }
    if create && convert {
        eprintln!("Error: -c and -U cannot be used together.");
        return 1;
    }
    if delete && convert {
        eprintln!("Error: -D and -U cannot be used together.");
        return 1;
    }
    if delete && batch {
        eprintln!("Error: -b and -D cannot be used together.");
        return 1;
    }

    let (mode, file, username, password): (Mode, &OsString, Option<&OsString>, Option<&OsString>) =
        if create {
            if batch {
                if rest.len() < 3 {
                    eprintln!("Error: -c argument given but password file, username, or password missing.");
                    return 1;
                }
                (Mode::Create, &rest[0], Some(&rest[1]), Some(&rest[2]))
            } else {
                if rest.len() < 2 {
                    eprintln!("Error: -c argument given but password file or username missing.");
                    return 1;
                }
                (Mode::Create, &rest[0], Some(&rest[1]), None)
            }
        } else if delete {
            if rest.len() < 2 {
                eprintln!("Error: -D argument given but password file or username missing.");
                return 1;
            }
            (Mode::Delete, &rest[0], Some(&rest[1]), None)
        } else if convert {
            if rest.len() != 1 {
                eprintln!("Error: -U argument given but password file missing.");
                return 1;
            }
            (Mode::Convert, &rest[0], None, None)
        } else if batch && rest.len() == 3 {
            (Mode::Update, &rest[0], Some(&rest[1]), Some(&rest[2]))
        } else if !batch && rest.len() == 2 {
            (Mode::Update, &rest[0], Some(&rest[1]), None)
        } else {
            print_usage();
            return 1;
        };

    let username = match username {
        None => None,
        Some(u) => {
            let Some(u) = u.to_str() else {
                eprintln!("Error: Username must be valid UTF-8.");
                return 1;
            };
            // Also refuses an empty name, which mosquitto_passwd would write
            // as a line its own broker cannot read.
            if let Err(e) = validate_username(u) {
                eprintln!("{}", username_message(&e));
                return 1;
            }
            Some(u)
        }
    };
    if let Some(p) = password {
        if p.len() > 65535 {
            eprintln!("Error: Password must be less than 65536 characters long.");
            return 1;
        }
    }
    // Like realpath() in mosquitto_passwd: messages name the resolved file.
    let path: PathBuf = std::fs::canonicalize(file).unwrap_or_else(|_| PathBuf::from(file));

    match mode {
        Mode::Create => {
            let password = match password {
                Some(p) => p.as_bytes().to_vec(),
                None => match get_password() {
                    Ok(p) => p,
                    Err(rc) => return rc,
                },
            };
            let mut pw = PasswordFile::default();
            if let Err(e) = pw.set_with(username.unwrap_or(""), password, algorithm, iterations) {
                eprintln!("{}", set_error(&e));
                return 1;
            }
            if let Err(e) = pw.save(&path) {
                eprintln!(
                    "Error: Unable to open file {} for writing. {}.",
                    path.display(),
                    io_reason(&e)
                );
                return 1;
            }
            0
        }
        Mode::Delete | Mode::Update | Mode::Convert => {
            let text = match std::fs::read(&path) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!(
                        "Error: Unable to open password file {}. {}.",
                        path.display(),
                        strerror(&e)
                    );
                    return 1;
                }
            };
            let parsed = match String::from_utf8(text) {
                Ok(text) => match mode {
                    Mode::Convert => PasswordFile::from_plaintext(&text, algorithm, iterations),
                    _ => PasswordFile::parse(&text),
                },
                Err(e) => {
                    let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
                    Err(PasswordFileError::Line {
                        line: good.iter().filter(|&&b| b == b'\n').count() + 1,
                        reason: midge_auth::LineError::NotUtf8,
                    })
                }
            };
            let mut pw = match parsed {
                Ok(pw) => pw,
                Err(PasswordFileError::Line { line, reason }) => {
                    eprintln!("Error: Corrupt password file at line {line}: {reason}.");
                    return 1;
                }
                Err(e) => {
                    eprintln!("{}", set_error(&e));
                    return 1;
                }
            };
            match mode {
                Mode::Delete => {
                    let user = username.unwrap_or("");
                    if !pw.remove(user) {
                        eprintln!("Warning: User {user} not found in password file.");
                        return 1;
                    }
                }
                Mode::Update => {
                    let password = match password {
                        Some(p) => p.as_bytes().to_vec(),
                        None => match get_password() {
                            Ok(p) => p,
                            Err(rc) => return rc,
                        },
                    };
                    let user = username.unwrap_or("");
                    if let Err(e) = pw.set_with(user, password, algorithm, iterations) {
                        eprintln!("{}", set_error(&e));
                        return 1;
                    }
                }
                _ => {}
            }
            if let Err(e) = pw.save(&path) {
                eprintln!("Error occurred updating password file: {}.", io_reason(&e));
                return 1;
            }
            0
        }
    }
}

fn io_reason(e: &PasswordFileError) -> String {
    match e {
        PasswordFileError::Io { source, .. } => strerror(source),
        other => other.to_string(),
    }
}
