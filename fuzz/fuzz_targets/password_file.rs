//! `PasswordFile::parse` never panics; a file that parses is written back
//! and parses again to the same users with the same hashes. (The text itself
//! is not a fixed point: a blank line `"\r\r"` is written `"\r\n"`, then
//! `"\n"`, since one `\r` is taken off each line end.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use midge_auth::PasswordFile;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (_, _) = PasswordFile::parse_lenient(text);
    let Ok(file) = PasswordFile::parse(text) else {
        return;
    };
    let written = file.to_string();
    let again = PasswordFile::parse(&written)
        .unwrap_or_else(|e| panic!("re-parse of {written:?} failed: {e}"));
    let users: Vec<&str> = file.users().collect();
    assert_eq!(users, again.users().collect::<Vec<_>>());
    for user in users {
        assert!(file.get(user) == again.get(user), "hash of {user:?} changed");
    }
});
