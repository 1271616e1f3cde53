//! Decodes arbitrary bytes; whatever decodes must re-encode and decode to
//! the same packet. The first input byte picks the connection state: 0 (or
//! any value above 3) means no CONNECT yet, 1 3.1, 2 3.1.1, 3 5.0.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use midge_codec::{decode_packet, encode_packet, Packet, ProtocolVersion};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let version = match selector {
        1 => Some(ProtocolVersion::V31),
        2 => Some(ProtocolVersion::V311),
        3 => Some(ProtocolVersion::V5),
        _ => None,
    };
    let mut buf = BytesMut::from(bytes);
    // Keep going while packets decode, as a connection's read loop does.
    while let Ok(Some(packet)) = decode_packet(&mut buf, version, 1 << 20) {
        let level = match (&packet, version) {
            (Packet::Connect(c), _) => c.protocol,
            (_, Some(v)) => v,
            (_, None) => panic!("non-CONNECT packet decoded before CONNECT"),
        };
        let mut out = BytesMut::new();
        encode_packet(&packet, level, &mut out).expect("a decoded packet encodes");
        assert_eq!(out.len(), midge_codec::encoded_len(&packet, level));
        let again_version = if matches!(packet, Packet::Connect(_)) { None } else { Some(level) };
        let again = decode_packet(&mut out, again_version, usize::MAX)
            .expect("re-encoded packet decodes")
            .expect("re-encoded packet is whole");
        assert_eq!(again, packet);
        assert!(out.is_empty());
    }
});
