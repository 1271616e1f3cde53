//! The store file: a versioned header, then CRC-framed records.
//!
//! ```text
//! header (32 bytes):
//!   magic "MIDGE-DB" | format version u32 | flags u32 (0) |
//!   created, ms since the epoch u64 | crc32c of the 24 bytes before u32 | 0 u32
//! record, repeated:
//!   payload length u32 | crc32c(payload) u32 | payload
//! payload: the operations of one group commit, each as
//!   operation length u32 | operation (see `codec`)
//! ```
//!
//! All integers are little-endian. A record is the unit of atomicity: one
//! `Store::apply` writes one record, and replay takes a record whole or not
//! at all, so a group is never half-applied. A checkpoint writes the same
//! records (the live operations) to a new file that replaces the old one.

use std::ops::Range;

pub(crate) const MAGIC: &[u8; 8] = b"MIDGE-DB";
/// Version of the layout above and of the operation encoding. Bump it for
/// any change an older reader would misread; a reader refuses (and sets
/// aside) a file whose version is higher than its own.
pub(crate) const FORMAT_VERSION: u32 = 1;
pub(crate) const HEADER_LEN: usize = 32;
pub(crate) const FRAME_HEADER: usize = 8;
/// A record larger than this is taken as damage, not allocated: no group of
/// MQTT messages comes near it (a packet is at most 256 MiB).
pub(crate) const MAX_RECORD: usize = 1 << 30;

pub(crate) fn header(created_ms: u64) -> [u8; HEADER_LEN] {
    header_with_version(FORMAT_VERSION, created_ms)
}

pub(crate) fn header_with_version(version: u32, created_ms: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&version.to_le_bytes());
    h[16..24].copy_from_slice(&created_ms.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..24]);
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    h
}

/// What the first bytes of a file say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Header {
    Valid,
    /// Shorter than a header, and what is there is the start of one (or
    /// nothing): the file was created and the crash came before the header
    /// was written. Nothing to lose.
    Unwritten,
    /// Not a Midge store, or its header is damaged.
    Invalid(String),
    /// Written by a newer Midge.
    Future(u32),
}

pub(crate) fn check_header(buf: &[u8]) -> Header {
    if buf.len() < HEADER_LEN {
        let n = buf.len().min(MAGIC.len());
        let zeros = buf.iter().all(|b| *b == 0);
        return if zeros || buf[..n] == MAGIC[..n] {
            Header::Unwritten
        } else {
            Header::Invalid("too short and no Midge signature".into())
        };
    }
    if &buf[0..8] != MAGIC {
        return if buf[0..HEADER_LEN].iter().all(|b| *b == 0) {
            Header::Invalid("the header is all zero bytes".into())
        } else {
            Header::Invalid("no Midge signature (not a Midge store)".into())
        };
    }
    let crc = u32_at(buf, 24);
    if crc != crc32c::crc32c(&buf[0..24]) || u32_at(buf, 28) != 0 {
        return Header::Invalid("header checksum mismatch".into());
    }
    match u32_at(buf, 8) {
        0 => Header::Invalid("format version 0".into()),
        v if v > FORMAT_VERSION => Header::Future(v),
        _ => Header::Valid,
    }
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(a)
}

/// How the record sequence ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tail {
    /// At a record boundary, at the end of the file.
    Clean,
    /// Only zero bytes after the last record (some file systems extend a
    /// file before its data lands; nothing was in them).
    Zeros { offset: usize },
    /// The last record is cut short or does not match its checksum, and it
    /// reaches the end of the file: a write cut by a crash before it was
    /// synced, so never acknowledged.
    Torn { offset: usize, reason: String },
    /// A complete record that is wrong: corruption of data that may have
    /// been synced. Nothing from here on is replayed.
    Damaged { offset: usize, reason: String },
}

impl Tail {
    pub fn offset(&self, len: usize) -> usize {
        match self {
            Tail::Clean => len,
            Tail::Zeros { offset } | Tail::Torn { offset, .. } | Tail::Damaged { offset, .. } => {
                *offset
            }
        }
    }
}

/// Walks the records after the header, handing each payload (as a range of
/// `buf`) to `replay`, which may refuse it (then it counts as damage).
pub(crate) fn scan(buf: &[u8], mut replay: impl FnMut(Range<usize>) -> Result<(), String>) -> Tail {
    let mut pos = HEADER_LEN;
    loop {
        let rest = &buf[pos..];
        if rest.is_empty() {
            return Tail::Clean;
        }
        if rest.iter().all(|b| *b == 0) {
            return Tail::Zeros { offset: pos };
        }
        if rest.len() < FRAME_HEADER {
            return Tail::Torn {
                offset: pos,
                reason: "record header cut short".into(),
            };
        }
        let len = u32_at(rest, 0) as usize;
        let crc = u32_at(rest, 4);
        if len == 0 || len > MAX_RECORD {
            return Tail::Damaged {
                offset: pos,
                reason: format!("impossible record length {len}"),
            };
        }
        let end = FRAME_HEADER + len;
        if rest.len() < end {
            return Tail::Torn {
                offset: pos,
                reason: format!(
                    "record of {len} bytes cut short at {} bytes",
                    rest.len() - FRAME_HEADER
                ),
            };
        }
        let payload = pos + FRAME_HEADER..pos + end;
        if crc32c::crc32c(&buf[payload.clone()]) != crc {
            let reason = "checksum mismatch".to_string();
            return if rest.len() == end {
                Tail::Torn {
                    offset: pos,
                    reason,
                }
            } else {
                Tail::Damaged {
                    offset: pos,
                    reason,
                }
            };
        }
        if let Err(reason) = replay(payload) {
            return Tail::Damaged {
                offset: pos,
                reason,
            };
        }
        pos += end;
    }
}

/// Splits a record payload into its operations.
pub(crate) fn split_ops(buf: &[u8], payload: Range<usize>) -> Result<Vec<Range<usize>>, String> {
    let mut ops = Vec::new();
    let mut pos = payload.start;
    while pos < payload.end {
        if payload.end - pos < 4 {
            return Err("operation length cut short".into());
        }
        let len = u32_at(buf, pos) as usize;
        let start = pos + 4;
        if len == 0 || len > payload.end - start {
            return Err(format!("impossible operation length {len}"));
        }
        ops.push(start..start + len);
        pos = start + len;
    }
    Ok(ops)
}

/// Writes the frame header of the record whose payload is `frame[8..]`.
pub(crate) fn seal(frame: &mut [u8]) {
    let payload_len = u32::try_from(frame.len() - FRAME_HEADER).unwrap_or(u32::MAX);
    let crc = crc32c::crc32c(&frame[FRAME_HEADER..]);
    frame[0..4].copy_from_slice(&payload_len.to_le_bytes());
    frame[4..8].copy_from_slice(&crc.to_le_bytes());
}
