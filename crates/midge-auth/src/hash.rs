//! One password hash: Mosquitto's `$6$` (salted SHA-512) and `$7$`
//! (PBKDF2-HMAC-SHA512) strings, how to make them and how to check them.
//!
//! The layout matches Mosquitto's `output_new_password` and the broker's
//! `unpwd__decode_passwords`: fields separated by `$`, salt and hash in standard
//! base64 with padding, a 12-byte salt and a 64-byte hash when we write. When we
//! read, any non-empty salt length is accepted (Mosquitto 1.x accepted any) and
//! padding may be missing.

use std::fmt;
use std::str::FromStr;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

use crate::error::{HashError, PasswordFileError};

/// Mosquitto's `PW_DEFAULT_ITERATIONS`: PBKDF2 rounds when `-I` is not given.
pub const DEFAULT_ITERATIONS: u32 = 101;
/// Length of the salts we generate, as Mosquitto's `SALT_LEN`.
pub const SALT_LEN: usize = 12;
/// Length of a SHA-512 output, the only hash length that can ever verify.
pub const HASH_LEN: usize = 64;

/// Lenient on reading: files edited by hand or by other tools sometimes drop the
/// `=` padding; the bytes are the same.
const DECODE: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The two hash types, named as `mosquitto_passwd -H` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum HashAlgorithm {
    /// `$6$`: SHA-512 of the password followed by the salt (Mosquitto 1.x default).
    Sha512,
    /// `$7$`: PBKDF2-HMAC-SHA512 (Mosquitto 2.0 default).
    #[default]
    Sha512Pbkdf2,
}

impl HashAlgorithm {
    /// The `-H` name: `sha512` or `sha512-pbkdf2`.
    pub fn name(self) -> &'static str {
        match self {
            HashAlgorithm::Sha512 => "sha512",
            HashAlgorithm::Sha512Pbkdf2 => "sha512-pbkdf2",
        }
    }
}

impl fmt::Display for HashAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for HashAlgorithm {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "sha512" => Ok(HashAlgorithm::Sha512),
            "sha512-pbkdf2" => Ok(HashAlgorithm::Sha512Pbkdf2),
            _ => Err(()),
        }
    }
}

/// A parsed password hash: algorithm, salt and the 64-byte digest.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash {
    /// `None` for `$6$`, the PBKDF2 round count for `$7$`.
    iterations: Option<u32>,
    salt: Vec<u8>,
    hash: [u8; HASH_LEN],
}

impl fmt::Debug for PasswordHash {
    // The hash is a secret of sorts (it allows offline guessing): keep it out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordHash")
            .field("algorithm", &self.algorithm())
            .field("iterations", &self.iterations)
            .field("salt_len", &self.salt.len())
            .finish_non_exhaustive()
    }
}

impl PasswordHash {
    /// Hash `password` with a fresh random 12-byte salt. `iterations` is used by
    /// PBKDF2 only, as with `mosquitto_passwd -H sha512 -I N`.
    pub fn generate(
        algorithm: HashAlgorithm,
        password: impl AsRef<[u8]>,
        iterations: u32,
    ) -> Result<Self, PasswordFileError> {
        let mut salt = [0u8; SALT_LEN];
        getrandom::fill(&mut salt).map_err(|e| PasswordFileError::Random(e.to_string()))?;
        Self::with_salt(algorithm, password, &salt, iterations)
    }

    /// Hash `password` with the given salt (deterministic; for tests and tools).
    pub fn with_salt(
        algorithm: HashAlgorithm,
        password: impl AsRef<[u8]>,
        salt: &[u8],
        iterations: u32,
    ) -> Result<Self, PasswordFileError> {
        let iterations = match algorithm {
            HashAlgorithm::Sha512 => None,
            HashAlgorithm::Sha512Pbkdf2 if iterations == 0 => {
                return Err(PasswordFileError::ZeroIterations)
            }
            HashAlgorithm::Sha512Pbkdf2 => Some(iterations),
        };
        let hash = digest(iterations, password.as_ref(), salt);
        Ok(PasswordHash {
            iterations,
            salt: salt.to_vec(),
            hash,
        })
    }

    pub fn algorithm(&self) -> HashAlgorithm {
        match self.iterations {
            None => HashAlgorithm::Sha512,
            Some(_) => HashAlgorithm::Sha512Pbkdf2,
        }
    }

    /// PBKDF2 rounds; `None` for `$6$`.
    pub fn iterations(&self) -> Option<u32> {
        self.iterations
    }

    pub fn salt(&self) -> &[u8] {
        &self.salt
    }

    /// Whether `password` hashes to this hash. The comparison is constant-time.
    pub fn verify(&self, password: impl AsRef<[u8]>) -> bool {
        let computed = digest(self.iterations, password.as_ref(), &self.salt);
        computed.ct_eq(&self.hash).into()
    }
}

/// Mosquitto's `pw__hash`: `$6$` is one SHA-512 over password then salt; `$7$`
/// is PBKDF2-HMAC-SHA512 with a 64-byte output.
fn digest(iterations: Option<u32>, password: &[u8], salt: &[u8]) -> [u8; HASH_LEN] {
    let mut out = [0u8; HASH_LEN];
    match iterations {
        None => {
            let mut h = Sha512::new();
            h.update(password);
            h.update(salt);
            out.copy_from_slice(&h.finalize());
        }
        Some(n) => pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, n, &mut out),
    }
    out
}

/// The work of a verification that cannot succeed, for users that do not exist.
pub(crate) fn decoy(iterations: Option<u32>, password: &[u8]) {
    let computed = digest(iterations, password, &[0u8; SALT_LEN]);
    std::hint::black_box(computed.ct_eq(&[0xa5; HASH_LEN]));
}

impl FromStr for PasswordHash {
    type Err = HashError;

    /// Parse `$6$salt$hash` or `$7$iterations$salt$hash`.
    fn from_str(s: &str) -> Result<Self, HashError> {
        let Some(rest) = s.strip_prefix('$') else {
            return Err(HashError::NotHashed);
        };
        let fields: Vec<&str> = rest.split('$').collect();
        let (iterations, salt, hash) = match fields[0] {
            "6" => {
                if fields.len() != 3 {
                    return Err(HashError::FieldCount {
                        kind: 6,
                        expected: 3,
                        found: fields.len(),
                    });
                }
                (None, fields[1], fields[2])
            }
            "7" => {
                if fields.len() != 4 {
                    return Err(HashError::FieldCount {
                        kind: 7,
                        expected: 4,
                        found: fields.len(),
                    });
                }
                let n = fields[1];
                let iterations = match n.parse::<u32>() {
                    Ok(i) if i >= 1 && n.bytes().all(|b| b.is_ascii_digit()) => i,
                    _ => return Err(HashError::Iterations(n.to_owned())),
                };
                (Some(iterations), fields[2], fields[3])
            }
            other => return Err(HashError::UnknownType(other.to_owned())),
        };
        let salt = DECODE.decode(salt).map_err(|_| HashError::SaltBase64)?;
        if salt.is_empty() {
            return Err(HashError::EmptySalt);
        }
        let decoded = DECODE.decode(hash).map_err(|_| HashError::HashBase64)?;
        let hash: [u8; HASH_LEN] = decoded
            .as_slice()
            .try_into()
            .map_err(|_| HashError::HashLength(decoded.len()))?;
        Ok(PasswordHash {
            iterations,
            salt,
            hash,
        })
    }
}

impl fmt::Display for PasswordHash {
    /// The exact text `mosquitto_passwd` writes after `username:`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let salt = STANDARD.encode(&self.salt);
        let hash = STANDARD.encode(self.hash);
        match self.iterations {
            None => write!(f, "$6${salt}${hash}"),
            Some(n) => write!(f, "$7${n}${salt}${hash}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written by Debian's mosquitto_passwd 2.0.11 (`-b f alice secret`).
    const ALICE_7: &str = "$7$101$2h0GAquMGsofmpT7$0XuOySGWJMYXsgyTyFsek5Ls0jJTpdCNpEyTBWbI1U9PfpZrnklJX+FVyhGJnHB4OAGVm1AD7l4Nh7L3qNmUZA==";

    #[test]
    fn display_of_parse_is_identity() {
        let h: PasswordHash = ALICE_7.parse().unwrap();
        assert_eq!(h.to_string(), ALICE_7);
        assert_eq!(h.iterations(), Some(101));
        assert_eq!(h.salt().len(), 12);
    }

    #[test]
    fn with_salt_reproduces_mosquitto_output() {
        let parsed: PasswordHash = ALICE_7.parse().unwrap();
        let made =
            PasswordHash::with_salt(HashAlgorithm::Sha512Pbkdf2, "secret", parsed.salt(), 101)
                .unwrap();
        assert_eq!(made.to_string(), ALICE_7);
    }

    #[test]
    fn generate_makes_a_fresh_salt_each_time() {
        let a = PasswordHash::generate(HashAlgorithm::Sha512Pbkdf2, "x", 101).unwrap();
        let b = PasswordHash::generate(HashAlgorithm::Sha512Pbkdf2, "x", 101).unwrap();
        assert_ne!(a.salt(), b.salt());
        assert_eq!(a.salt().len(), SALT_LEN);
        assert!(a.verify("x") && b.verify("x"));
        assert!(!a.verify("y"));
        // 12-byte salt -> 16 base64 chars, 64-byte hash -> 88 chars with "==".
        let s = a.to_string();
        let parts: Vec<&str> = s.split('$').collect();
        assert_eq!(parts[3].len(), 16);
        assert_eq!(parts[4].len(), 88);
        assert!(parts[4].ends_with("=="));
    }

    #[test]
    fn zero_iterations_refused_for_pbkdf2_only() {
        assert!(matches!(
            PasswordHash::generate(HashAlgorithm::Sha512Pbkdf2, "x", 0),
            Err(PasswordFileError::ZeroIterations)
        ));
        let h = PasswordHash::generate(HashAlgorithm::Sha512, "x", 0).unwrap();
        assert!(h.to_string().starts_with("$6$"));
        assert!(h.verify("x"));
    }

    #[test]
    fn algorithm_names() {
        assert_eq!("sha512".parse(), Ok(HashAlgorithm::Sha512));
        assert_eq!("sha512-pbkdf2".parse(), Ok(HashAlgorithm::Sha512Pbkdf2));
        assert!("md5".parse::<HashAlgorithm>().is_err());
        assert_eq!(HashAlgorithm::default(), HashAlgorithm::Sha512Pbkdf2);
    }

    #[test]
    fn malformed_hashes() {
        let h64 = STANDARD.encode([0u8; 64]);
        let cases: Vec<(String, HashError)> = vec![
            ("secret".into(), HashError::NotHashed),
            ("$5$abc$def".into(), HashError::UnknownType("5".into())),
            ("$$7$1$a$b".into(), HashError::UnknownType("".into())),
            (
                "$6$AAAA".into(),
                HashError::FieldCount {
                    kind: 6,
                    expected: 3,
                    found: 2,
                },
            ),
            (
                format!("$7$AAAA${h64}"),
                HashError::FieldCount {
                    kind: 7,
                    expected: 4,
                    found: 3,
                },
            ),
            (
                format!("$7$0$AAAA${h64}"),
                HashError::Iterations("0".into()),
            ),
            (
                format!("$7$-1$AAAA${h64}"),
                HashError::Iterations("-1".into()),
            ),
            (
                format!("$7$+5$AAAA${h64}"),
                HashError::Iterations("+5".into()),
            ),
            (
                format!("$7$4294967296$AAAA${h64}"),
                HashError::Iterations("4294967296".into()),
            ),
            (
                format!("$7$x$AAAA${h64}"),
                HashError::Iterations("x".into()),
            ),
            (format!("$6$!!!${h64}"), HashError::SaltBase64),
            (format!("$6$${h64}"), HashError::EmptySalt),
            ("$6$AAAA$%%%".into(), HashError::HashBase64),
            ("$6$AAAA$AAAA".into(), HashError::HashLength(3)),
            ("$6$AAAA$".into(), HashError::HashLength(0)),
        ];
        for (input, want) in cases {
            assert_eq!(input.parse::<PasswordHash>(), Err(want), "{input}");
        }
    }

    #[test]
    fn odd_salt_lengths_and_missing_padding_are_read() {
        for len in [1usize, 5, 12, 13, 16, 33] {
            let salt: Vec<u8> = (0..len as u8).collect();
            for alg in [HashAlgorithm::Sha512, HashAlgorithm::Sha512Pbkdf2] {
                let h = PasswordHash::with_salt(alg, "pw", &salt, 7).unwrap();
                let text = h.to_string();
                let back: PasswordHash = text.parse().unwrap();
                assert_eq!(back, h);
                assert!(back.verify("pw"));
                let unpadded = text.replace('=', "");
                let back: PasswordHash = unpadded.parse().unwrap();
                assert!(back.verify("pw"), "{unpadded}");
            }
        }
    }

    #[test]
    fn sha512_is_password_then_salt() {
        let salt = b"0123456789ab";
        let h = PasswordHash::with_salt(HashAlgorithm::Sha512, "pw", salt, 1).unwrap();
        let mut d = Sha512::new();
        d.update(b"pw0123456789ab");
        let want = STANDARD.encode(d.finalize());
        assert!(h.to_string().ends_with(&want));
    }

    #[test]
    fn pbkdf2_matches_rfc_style_vector() {
        // PBKDF2-HMAC-SHA512, P="password", S="salt", c=1, dkLen=64 (RFC 6070 style
        // vector, as published for SHA-512 by the Go and Python test suites).
        let h =
            PasswordHash::with_salt(HashAlgorithm::Sha512Pbkdf2, "password", b"salt", 1).unwrap();
        let hex: String = h.hash.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "867f70cf1ade02cff3752599a3a53dc4af34c7a669815ae5d513554e1c8cf252\
             c02d470a285a0501bad999bfe943c08f050235d7d68b1da55e63f73b60a57fce"
        );
    }

    #[test]
    fn debug_hides_the_hash() {
        let h: PasswordHash = ALICE_7.parse().unwrap();
        let d = format!("{h:?}");
        assert!(!d.contains("0XuOy"));
        assert!(d.contains("Sha512Pbkdf2"));
    }
}
