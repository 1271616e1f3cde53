//! Identifiers the core hands around: connections (chosen by the server) and
//! sessions (chosen by the core), and a cheap hasher for maps keyed by them.

use std::hash::{BuildHasherDefault, Hasher};

/// One network connection, numbered by the server from 1 (a session keeps
/// its connection's number in 8 bytes, with 0 for none). Never reused while
/// the process runs, so a late event about a closed connection is
/// recognised and ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// Index of a session in the core's session table. Reused after the session
/// ends, so it never leaves the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey(pub u32);

/// Hasher for small integer keys: our ids are not attacker-chosen, so a
/// multiplicative hash is enough and much cheaper than SipHash.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(26);
    }
}

pub type IdBuildHasher = BuildHasherDefault<IdHasher>;
pub type IdMap<K, V> = std::collections::HashMap<K, V, IdBuildHasher>;
