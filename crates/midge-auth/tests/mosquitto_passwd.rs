//! Files written by the real `mosquitto_passwd` (Debian's package) must load and
//! verify here. The CI script installs the `mosquitto` package; where the binary
//! is missing the test says so and passes without checking.

use std::path::{Path, PathBuf};
use std::process::Command;

use midge_auth::{HashAlgorithm, PasswordFile};

const MOSQUITTO_PASSWD: &str = "/usr/bin/mosquitto_passwd";

fn tool() -> Option<&'static Path> {
    let p = Path::new(MOSQUITTO_PASSWD);
    if p.exists() {
        Some(p)
    } else {
        eprintln!("SKIPPED: {MOSQUITTO_PASSWD} not installed (apt-get install mosquitto)");
        None
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("midge-auth-interop-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(tool: &Path, args: &[&str]) {
    let out = Command::new(tool).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "mosquitto_passwd {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn files_from_mosquitto_passwd_verify() {
    let Some(tool) = tool() else { return };
    let dir = scratch("verify");
    let file = dir.join("passwd");
    let f = file.to_str().unwrap();
    run(tool, &["-c", "-b", f, "alice", "secret"]);
    run(tool, &["-b", f, "bob", "pa:ss w0rd ü"]);
    run(tool, &["-H", "sha512", "-b", f, "carol", "sha-only"]);
    run(tool, &["-I", "1000", "-b", f, "dave", "many rounds"]);
    run(tool, &["-b", f, "alice", "changed"]);

    let pw = PasswordFile::load(&file).unwrap();
    assert_eq!(
        pw.users().collect::<Vec<_>>(),
        ["alice", "bob", "carol", "dave"]
    );
    assert!(pw.verify("alice", "changed"));
    assert!(!pw.verify("alice", "secret"));
    assert!(pw.verify("bob", "pa:ss w0rd ü"));
    assert!(pw.verify("carol", "sha-only"));
    assert_eq!(pw.get("carol").unwrap().algorithm(), HashAlgorithm::Sha512);
    assert!(pw.verify("dave", "many rounds"));
    assert_eq!(pw.get("dave").unwrap().iterations(), Some(1000));
    assert!(!pw.verify("dave", "many round"));
    assert!(!pw.verify("erin", "changed"));
    // Our writer reproduces the file byte for byte.
    assert_eq!(pw.to_string(), std::fs::read_to_string(&file).unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn mosquitto_passwd_edits_files_we_wrote() {
    let Some(tool) = tool() else { return };
    let dir = scratch("edit");
    let file = dir.join("passwd");
    let f = file.to_str().unwrap();
    let mut ours = PasswordFile::default();
    ours.set("alice", "a", 101).unwrap();
    ours.set_with("bob", "b", HashAlgorithm::Sha512, 0).unwrap();
    ours.set("carol", "c", 101).unwrap();
    ours.save(&file).unwrap();

    run(tool, &["-D", f, "bob"]);
    run(tool, &["-b", f, "carol", "c2"]);
    let back = PasswordFile::load(&file).unwrap();
    assert_eq!(back.users().collect::<Vec<_>>(), ["alice", "carol"]);
    assert!(back.verify("alice", "a"));
    assert!(back.verify("carol", "c2"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn plaintext_files_converted_by_mosquitto_passwd_verify() {
    let Some(tool) = tool() else { return };
    let dir = scratch("convert");
    let file = dir.join("passwd");
    std::fs::write(&file, "alice:secret\nbob: spaced \n").unwrap();
    run(tool, &["-U", file.to_str().unwrap()]);
    let pw = PasswordFile::load(&file).unwrap();
    assert!(pw.verify("alice", "secret"));
    assert!(pw.verify("bob", "spaced"));
    std::fs::remove_dir_all(&dir).unwrap();
}
