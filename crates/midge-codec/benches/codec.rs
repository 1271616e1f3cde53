//! Decode and encode of the hot-path packet: a PUBLISH with a 64-byte payload.

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use midge_codec::{
    decode_packet, encode_packet, Packet, PacketId, Properties, ProtocolVersion, Publish, QoS,
};
use std::hint::black_box;

fn publish(qos: QoS) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: ByteString::from_static("sensors/building-1/floor-2/temperature"),
        packet_id: (qos != QoS::AtMostOnce).then(|| PacketId::new(42).unwrap()),
        payload: Bytes::from(vec![0xA5; 64]),
        properties: Properties::default(),
    })
}

fn bench(c: &mut Criterion) {
    for (v, vname) in [
        (ProtocolVersion::V311, "3.1.1"),
        (ProtocolVersion::V5, "5.0"),
    ] {
        for (qos, qname) in [(QoS::AtMostOnce, "qos0"), (QoS::AtLeastOnce, "qos1")] {
            let packet = publish(qos);
            let mut wire = BytesMut::new();
            encode_packet(&packet, v, &mut wire).unwrap();
            let wire = wire.freeze();

            let mut group = c.benchmark_group(format!("publish-64B/{vname}/{qname}"));
            group.throughput(Throughput::Elements(1));
            group.bench_function("decode", |b| {
                b.iter_batched_ref(
                    || {
                        // A connection's read buffer is already shared after
                        // its first packet; start from that steady state.
                        let mut buf = BytesMut::from(&wire[..]);
                        drop(buf.split_to(0));
                        buf
                    },
                    |buf| decode_packet(black_box(buf), Some(v), 1 << 20).unwrap(),
                    BatchSize::SmallInput,
                )
            });
            let mut out = BytesMut::with_capacity(1 << 16);
            group.bench_function("encode", |b| {
                b.iter(|| {
                    if out.capacity() - out.len() < 256 {
                        out.clear();
                    }
                    encode_packet(black_box(&packet), v, &mut out).unwrap();
                })
            });
            group.finish();
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
