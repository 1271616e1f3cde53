//! Decode and encode of the hot-path packet: a PUBLISH with a 64-byte payload.

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use midge_codec::{decode_packet, encode_packet, Packet, PacketId, ProtocolVersion, Publish, QoS};
use std::hint::black_box;

/// Packets decoded per measured iteration.
const BATCH: usize = 1000;

fn publish(qos: QoS) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: ByteString::from_static("sensors/building-1/floor-2/temperature"),
        packet_id: (qos != QoS::AtMostOnce).then(|| PacketId::new(42).unwrap()),
        payload: Bytes::from(vec![0xA5; 64]),
        properties: Default::default(),
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

            // Decode as a connection does: many packets from one read buffer,
            // each dropped once handled (so refcounting is counted too).
            let mut stream = BytesMut::with_capacity(wire.len() * BATCH);
            for _ in 0..BATCH {
                stream.extend_from_slice(&wire);
            }
            let stream = stream.freeze();

            let mut group = c.benchmark_group(format!("publish-64B/{vname}/{qname}"));
            group.throughput(Throughput::Elements(BATCH as u64));
            group.bench_function("decode", |b| {
                b.iter_batched_ref(
                    || BytesMut::from(&stream[..]),
                    |buf| {
                        while let Some(p) = decode_packet(black_box(buf), Some(v), 1 << 20).unwrap()
                        {
                            black_box(p);
                        }
                    },
                    BatchSize::LargeInput,
                )
            });
            group.throughput(Throughput::Elements(1));
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
