//! Tests across the encoder and the decoder: hand-written samples of every
//! packet at every level, partial input, and property tests that
//! `decode(encode(p)) == p` for generated valid packets and that arbitrary
//! bytes never make the decoder panic.

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use proptest::collection::vec;
use proptest::option::of;
use proptest::prelude::*;
use proptest::sample::select;

use crate::decode::reason_allowed;
use crate::properties::{PropertyContext, MAX_VARIABLE_BYTE_INTEGER};
use crate::*;
use ProtocolVersion::*;

const VERSIONS: [ProtocolVersion; 3] = [V31, V311, V5];

fn id(n: u16) -> PacketId {
    PacketId::new(n).expect("non-zero")
}

fn bs(s: &str) -> ByteString {
    ByteString::from(s)
}

fn encode(p: &Packet, v: ProtocolVersion) -> BytesMut {
    let mut buf = BytesMut::new();
    encode_packet(p, v, &mut buf).expect("encodes");
    buf
}

/// Decodes with the version a peer would have at that point.
fn decode_as(bytes: &[u8], p: &Packet, v: ProtocolVersion) -> Result<Option<Packet>, DecodeError> {
    let version = if matches!(p, Packet::Connect(_)) {
        None
    } else {
        Some(v)
    };
    decode_packet(&mut BytesMut::from(bytes), version, usize::MAX)
}

fn rich_properties() -> Properties {
    Properties {
        user_properties: vec![(bs("k"), bs("v")), (bs("k"), bs("w"))],
        reason_string: Some(bs("because")),
        ..Properties::default()
    }
}

/// One or more valid packets of every type that `v` has.
pub(crate) fn samples(v: ProtocolVersion) -> Vec<Packet> {
    let v5 = v.is_v5();
    let props = |p: Properties| -> Props {
        if v5 {
            p.into()
        } else {
            Props::new()
        }
    };
    let reason = |r: ReasonCode| if v5 { r } else { ReasonCode::SUCCESS };
    let mut out = vec![
        Packet::Connect(Box::new(Connect {
            protocol: v,
            clean_start: true,
            keep_alive: 60,
            client_id: bs("client-1"),
            will: None,
            username: None,
            password: None,
            properties: Default::default(),
        })),
        Packet::Connect(Box::new(Connect {
            protocol: v,
            clean_start: false,
            keep_alive: 0,
            client_id: bs("c2"),
            will: Some(LastWill {
                topic: bs("will/topic"),
                payload: Bytes::from_static(b"gone"),
                qos: QoS::AtLeastOnce,
                retain: true,
                properties: props(Properties {
                    will_delay_interval: Some(5),
                    content_type: Some(bs("text/plain")),
                    ..Properties::default()
                }),
            }),
            username: Some(bs("user")),
            password: Some(Bytes::from_static(b"secret")),
            properties: props(Properties {
                session_expiry_interval: Some(3600),
                receive_maximum: Some(20),
                maximum_packet_size: Some(1 << 20),
                authentication_method: Some(bs("SCRAM-SHA-1")),
                authentication_data: Some(Bytes::from_static(b"\x00\x01")),
                ..Properties::default()
            }),
        })),
        Packet::ConnAck(ConnAck {
            session_present: true,
            code: 0,
            properties: props(Properties {
                assigned_client_identifier: Some(bs("auto-1")),
                topic_alias_maximum: Some(10),
                maximum_qos: Some(1),
                retain_available: Some(0),
                shared_subscription_available: Some(1),
                ..Properties::default()
            }),
        }),
        Packet::ConnAck(ConnAck {
            session_present: false,
            code: if v5 { 0x84 } else { 1 },
            properties: Default::default(),
        }),
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: bs("sensors/temp"),
            packet_id: None,
            payload: Bytes::from_static(b"21.5"),
            properties: Default::default(),
        }),
        Packet::Publish(Publish {
            dup: true,
            qos: QoS::ExactlyOnce,
            retain: true,
            topic: bs("a/b"),
            packet_id: Some(id(7)),
            payload: Bytes::new(),
            properties: props(Properties {
                payload_format_indicator: Some(1),
                message_expiry_interval: Some(30),
                response_topic: Some(bs("reply/here")),
                correlation_data: Some(Bytes::from_static(b"corr")),
                subscription_identifiers: vec![1, 268_435_455],
                topic_alias: Some(3),
                user_properties: rich_properties().user_properties,
                ..Properties::default()
            }),
        }),
        Packet::PubAck(PubResponse::new(id(1))),
        Packet::PubRec(PubResponse {
            packet_id: id(2),
            reason: reason(ReasonCode::NO_MATCHING_SUBSCRIBERS),
            properties: Default::default(),
        }),
        Packet::PubRel(PubResponse {
            packet_id: id(3),
            reason: reason(ReasonCode::PACKET_IDENTIFIER_NOT_FOUND),
            properties: props(rich_properties()),
        }),
        Packet::PubComp(PubResponse::new(id(65535))),
        Packet::Subscribe(Subscribe {
            packet_id: id(10),
            filters: vec![
                (bs("a/+/c"), SubscriptionOptions::default()),
                (
                    bs("$share/g/x/#"),
                    SubscriptionOptions {
                        qos: QoS::ExactlyOnce,
                        no_local: false,
                        retain_as_published: v5,
                        retain_handling: if v5 {
                            RetainHandling::DoNotSend
                        } else {
                            RetainHandling::SendAtSubscribe
                        },
                    },
                ),
            ],
            properties: props(Properties {
                subscription_identifiers: vec![42],
                ..Properties::default()
            }),
        }),
        Packet::SubAck(SubAck {
            packet_id: id(10),
            reasons: vec![ReasonCode::GRANTED_QOS_1, ReasonCode::UNSPECIFIED_ERROR],
            properties: props(rich_properties()),
        }),
        Packet::Unsubscribe(Unsubscribe {
            packet_id: id(11),
            filters: vec![bs("a/+/c"), bs("#")],
            properties: props(Properties {
                user_properties: rich_properties().user_properties,
                ..Properties::default()
            }),
        }),
        Packet::UnsubAck(UnsubAck {
            packet_id: id(11),
            reasons: if v5 {
                vec![ReasonCode::SUCCESS, ReasonCode::NO_SUBSCRIPTION_EXISTED]
            } else {
                vec![]
            },
            properties: props(rich_properties()),
        }),
        Packet::PingReq,
        Packet::PingResp,
        Packet::Disconnect(Disconnect::default()),
    ];
    if v5 {
        out.extend([
            Packet::Disconnect(Disconnect {
                reason: ReasonCode::DISCONNECT_WITH_WILL,
                properties: Default::default(),
            }),
            Packet::Disconnect(Disconnect {
                reason: ReasonCode::SERVER_MOVED,
                properties: Properties {
                    server_reference: Some(bs("other:1883")),
                    session_expiry_interval: Some(0),
                    ..Properties::default()
                }
                .into(),
            }),
            Packet::Auth(Auth::default()),
            Packet::Auth(Auth {
                reason: ReasonCode::CONTINUE_AUTHENTICATION,
                properties: Properties {
                    authentication_method: Some(bs("SCRAM-SHA-1")),
                    authentication_data: Some(Bytes::from_static(b"abc")),
                    ..Properties::default()
                }
                .into(),
            }),
            Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic: bs(""),
                packet_id: Some(id(9)),
                payload: Bytes::from_static(b"aliased"),
                properties: Properties {
                    topic_alias: Some(1),
                    ..Properties::default()
                }
                .into(),
            }),
        ]);
    }
    out
}

#[test]
fn samples_round_trip_at_every_level() {
    for v in VERSIONS {
        for p in samples(v) {
            let bytes = encode(&p, v);
            assert_eq!(bytes.len(), encoded_len(&p, v), "{v:?} {p:?}");
            let back = decode_as(&bytes, &p, v);
            assert_eq!(back, Ok(Some(p.clone())), "{v:?}");
        }
    }
}

#[test]
fn known_encodings() {
    let cases: Vec<(ProtocolVersion, Packet, &[u8])> = vec![
        (V311, Packet::PingReq, &[0xC0, 0]),
        (
            V311,
            Packet::PubAck(PubResponse::new(id(0x0102))),
            &[0x40, 2, 1, 2],
        ),
        (
            V5,
            Packet::PubAck(PubResponse::new(id(1))),
            &[0x40, 2, 0, 1],
        ),
        (
            V311,
            Packet::PubRel(PubResponse::new(id(1))),
            &[0x62, 2, 0, 1],
        ),
        (V5, Packet::Disconnect(Disconnect::default()), &[0xE0, 0]),
        (
            V5,
            Packet::Disconnect(Disconnect {
                reason: ReasonCode::SESSION_TAKEN_OVER,
                properties: Default::default(),
            }),
            &[0xE0, 1, 0x8E],
        ),
        (
            V311,
            Packet::ConnAck(ConnAck {
                session_present: true,
                code: 0,
                properties: Default::default(),
            }),
            &[0x20, 2, 1, 0],
        ),
        (
            V5,
            Packet::ConnAck(ConnAck {
                session_present: false,
                code: 0x86,
                properties: Default::default(),
            }),
            &[0x20, 3, 0, 0x86, 0],
        ),
        (
            V311,
            Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: true,
                topic: bs("a/b"),
                packet_id: Some(id(10)),
                payload: Bytes::from_static(b"hi"),
                properties: Default::default(),
            }),
            &[0x33, 9, 0, 3, b'a', b'/', b'b', 0, 10, b'h', b'i'],
        ),
        (
            V31,
            Packet::Connect(Box::new(Connect {
                protocol: V31,
                clean_start: true,
                keep_alive: 10,
                client_id: bs("c"),
                will: None,
                username: None,
                password: None,
                properties: Default::default(),
            })),
            &[
                0x10, 15, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 2, 0, 10, 0, 1, b'c',
            ],
        ),
        (
            // 3.x knows no SUBACK code but 0, 1, 2 and 0x80.
            V311,
            Packet::SubAck(SubAck {
                packet_id: id(1),
                reasons: vec![ReasonCode::GRANTED_QOS_2, ReasonCode::NOT_AUTHORIZED],
                properties: rich_properties().into(),
            }),
            &[0x90, 4, 0, 1, 2, 0x80],
        ),
    ];
    for (v, p, want) in cases {
        assert_eq!(&encode(&p, v)[..], want, "{v:?} {p:?}");
        assert_eq!(encoded_len(&p, v), want.len());
    }
}

#[test]
fn large_remaining_lengths_round_trip() {
    for size in [127usize, 128, 16_383, 16_384, 2_097_151, 2_097_152] {
        let p = Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: bs("t"),
            packet_id: None,
            payload: Bytes::from(vec![7u8; size - 3]),
            properties: Default::default(),
        });
        let bytes = encode(&p, V311);
        assert_eq!(bytes.len(), encoded_len(&p, V311));
        assert_eq!(decode_as(&bytes, &p, V311), Ok(Some(p)));
    }
}

#[test]
fn partial_input_waits_at_every_split_point() {
    for v in VERSIONS {
        for p in samples(v) {
            let bytes = encode(&p, v);
            let version = if matches!(p, Packet::Connect(_)) {
                None
            } else {
                Some(v)
            };
            for cut in 0..bytes.len() {
                let mut buf = BytesMut::from(&bytes[..cut]);
                assert_eq!(
                    decode_packet(&mut buf, version, usize::MAX),
                    Ok(None),
                    "{v:?} {p:?} cut at {cut}"
                );
                assert_eq!(buf.len(), cut, "nothing consumed");
            }
        }
    }
}

#[test]
fn encode_errors() {
    let mut buf = BytesMut::from(&b"keep"[..]);
    let long = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: ByteString::from("t".repeat(65_536)),
        packet_id: None,
        payload: Bytes::new(),
        properties: Default::default(),
    });
    assert_eq!(
        encode_packet(&long, V311, &mut buf),
        Err(EncodeError::FieldTooLong(65_536))
    );
    assert_eq!(&buf[..], b"keep", "nothing appended on error");

    let huge = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: bs("t"),
        packet_id: None,
        payload: Bytes::from(vec![0u8; 268_435_455]),
        properties: Default::default(),
    });
    assert_eq!(
        encode_packet(&huge, V311, &mut buf),
        Err(EncodeError::PacketTooLarge(268_435_458))
    );
    let missing_id = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: bs("t"),
        packet_id: None,
        payload: Bytes::new(),
        properties: Default::default(),
    });
    assert!(matches!(
        encode_packet(&missing_id, V5, &mut buf),
        Err(EncodeError::PacketIdMismatch { .. })
    ));
    assert_eq!(
        encode_packet(&Packet::Auth(Auth::default()), V311, &mut buf),
        Err(EncodeError::AuthRequiresV5)
    );
    let bad_sub_id = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: bs("t"),
        packet_id: None,
        payload: Bytes::new(),
        properties: Properties {
            subscription_identifiers: vec![0],
            ..Properties::default()
        }
        .into(),
    });
    assert_eq!(
        encode_packet(&bad_sub_id, V5, &mut buf),
        Err(EncodeError::InvalidSubscriptionIdentifier(0))
    );
    assert_eq!(&buf[..], b"keep");
}

/// Writes the fuzz seed corpus: `cargo test -p midge-codec -- --ignored write_fuzz_corpus`.
#[test]
#[ignore]
fn write_fuzz_corpus() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    let decode_dir = root.join("decode_packet");
    std::fs::create_dir_all(&decode_dir).unwrap();
    for (vi, v) in VERSIONS.iter().enumerate() {
        for (i, p) in samples(*v).iter().enumerate() {
            // The fuzz target's first byte picks the version: 0 None, 1 3.1, 2 3.1.1, 3 5.0.
            let selector = if matches!(p, Packet::Connect(_)) {
                0
            } else {
                vi as u8 + 1
            };
            let mut bytes = vec![selector];
            bytes.extend_from_slice(&encode(p, *v));
            std::fs::write(decode_dir.join(format!("{v:?}-{i:02}")), bytes).unwrap();
        }
    }
    let topic_dir = root.join("topic_filter");
    std::fs::create_dir_all(&topic_dir).unwrap();
    let topics = [
        "a/b/c",
        "+/b/#",
        "#",
        "$share/group/a/+",
        "$SYS/broker/load",
        "/",
        "a//b",
        "sport/tennis/player1/#",
        "$share/g",
        "a/#/b",
        "caf\u{e9}/+",
    ];
    for (i, t) in topics.iter().enumerate() {
        std::fs::write(topic_dir.join(format!("topic-{i:02}")), t).unwrap();
    }
}

// ---- property tests ----

fn text() -> impl Strategy<Value = ByteString> {
    "[^\u{0}]{0,12}".prop_map(ByteString::from)
}

fn binary() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..24).prop_map(Bytes::from)
}

fn topic_name() -> impl Strategy<Value = ByteString> {
    "[a-zA-Z0-9/_$ \u{e9}\u{4e2d}]{1,16}".prop_map(ByteString::from)
}

fn plain_filter() -> impl Strategy<Value = String> {
    (
        vec(prop_oneof![Just("+".to_string()), "[a-z0-9$]{0,4}"], 1..5),
        any::<bool>(),
    )
        .prop_map(|(levels, hash)| {
            let mut f = levels.join("/");
            if hash {
                f.push_str(if f.is_empty() { "#" } else { "/#" });
            }
            f
        })
        .prop_filter("valid filter", |f| validate_topic_filter(f).is_ok())
}

fn topic_filter() -> impl Strategy<Value = ByteString> {
    (plain_filter(), of("[a-z0-9]{1,5}")).prop_map(|(f, group)| match group {
        Some(g) => ByteString::from(format!("$share/{g}/{f}")),
        None => ByteString::from(f),
    })
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn pid() -> impl Strategy<Value = PacketId> {
    (1u16..).prop_map(id)
}

fn flag() -> impl Strategy<Value = Option<u8>> {
    of(0u8..=1)
}

/// Any valid property set; `restrict` then keeps what a packet may carry.
fn all_properties() -> impl Strategy<Value = Properties> {
    (
        (
            flag(),
            of(any::<u32>()),
            of(text()),
            of(topic_name()),
            of(binary()),
            vec(1..=MAX_VARIABLE_BYTE_INTEGER, 0..3),
        ),
        (
            of(any::<u32>()),
            of(text()),
            of(any::<u16>()),
            of(text()),
            of(binary()),
            flag(),
        ),
        (
            of(any::<u32>()),
            flag(),
            of(text()),
            of(text()),
            of(text()),
            of(1u16..),
        ),
        (
            of(any::<u16>()),
            of(any::<u16>()),
            flag(),
            flag(),
            vec((text(), text()), 0..3),
            of(1u32..),
        ),
        (flag(), flag(), flag()),
    )
        .prop_map(|(a, b, c, d, e)| Properties {
            payload_format_indicator: a.0,
            message_expiry_interval: a.1,
            content_type: a.2,
            response_topic: a.3,
            correlation_data: a.4,
            subscription_identifiers: a.5,
            session_expiry_interval: b.0,
            assigned_client_identifier: b.1,
            server_keep_alive: b.2,
            authentication_method: b.3,
            authentication_data: b.4,
            request_problem_information: b.5,
            will_delay_interval: c.0,
            request_response_information: c.1,
            response_information: c.2,
            server_reference: c.3,
            reason_string: c.4,
            receive_maximum: c.5,
            topic_alias_maximum: d.0,
            topic_alias: d.1,
            maximum_qos: d.2,
            retain_available: d.3,
            user_properties: d.4,
            maximum_packet_size: d.5,
            wildcard_subscription_available: e.0,
            subscription_identifier_available: e.1,
            shared_subscription_available: e.2,
        })
}

fn restrict(mut p: Properties, ctx: PropertyContext) -> Properties {
    use crate::properties as id;
    fn keep<T>(field: &mut Option<T>, ctx: PropertyContext, id: u8) {
        if ctx.allows(id) != Some(true) {
            *field = None;
        }
    }
    keep(
        &mut p.payload_format_indicator,
        ctx,
        id::PAYLOAD_FORMAT_INDICATOR,
    );
    keep(
        &mut p.message_expiry_interval,
        ctx,
        id::MESSAGE_EXPIRY_INTERVAL,
    );
    keep(&mut p.content_type, ctx, id::CONTENT_TYPE);
    keep(&mut p.response_topic, ctx, id::RESPONSE_TOPIC);
    keep(&mut p.correlation_data, ctx, id::CORRELATION_DATA);
    keep(
        &mut p.session_expiry_interval,
        ctx,
        id::SESSION_EXPIRY_INTERVAL,
    );
    keep(
        &mut p.assigned_client_identifier,
        ctx,
        id::ASSIGNED_CLIENT_IDENTIFIER,
    );
    keep(&mut p.server_keep_alive, ctx, id::SERVER_KEEP_ALIVE);
    keep(&mut p.authentication_method, ctx, id::AUTHENTICATION_METHOD);
    keep(&mut p.authentication_data, ctx, id::AUTHENTICATION_DATA);
    keep(
        &mut p.request_problem_information,
        ctx,
        id::REQUEST_PROBLEM_INFORMATION,
    );
    keep(&mut p.will_delay_interval, ctx, id::WILL_DELAY_INTERVAL);
    keep(
        &mut p.request_response_information,
        ctx,
        id::REQUEST_RESPONSE_INFORMATION,
    );
    keep(&mut p.response_information, ctx, id::RESPONSE_INFORMATION);
    keep(&mut p.server_reference, ctx, id::SERVER_REFERENCE);
    keep(&mut p.reason_string, ctx, id::REASON_STRING);
    keep(&mut p.receive_maximum, ctx, id::RECEIVE_MAXIMUM);
    keep(&mut p.topic_alias_maximum, ctx, id::TOPIC_ALIAS_MAXIMUM);
    keep(&mut p.topic_alias, ctx, id::TOPIC_ALIAS);
    keep(&mut p.maximum_qos, ctx, id::MAXIMUM_QOS);
    keep(&mut p.retain_available, ctx, id::RETAIN_AVAILABLE);
    keep(&mut p.maximum_packet_size, ctx, id::MAXIMUM_PACKET_SIZE);
    keep(
        &mut p.wildcard_subscription_available,
        ctx,
        id::WILDCARD_SUBSCRIPTION_AVAILABLE,
    );
    keep(
        &mut p.subscription_identifier_available,
        ctx,
        id::SUBSCRIPTION_IDENTIFIER_AVAILABLE,
    );
    keep(
        &mut p.shared_subscription_available,
        ctx,
        id::SHARED_SUBSCRIPTION_AVAILABLE,
    );
    match ctx {
        PropertyContext::Publish => {}
        PropertyContext::Subscribe => p.subscription_identifiers.truncate(1),
        _ => p.subscription_identifiers.clear(),
    }
    if p.authentication_data.is_some() && p.authentication_method.is_none() {
        p.authentication_data = None;
    }
    p
}

fn props_for(v: ProtocolVersion, ctx: PropertyContext) -> BoxedStrategy<Properties> {
    if v.is_v5() {
        all_properties().prop_map(move |p| restrict(p, ctx)).boxed()
    } else {
        Just(Properties::default()).boxed()
    }
}

fn reason(v: ProtocolVersion, packet_type: u8) -> BoxedStrategy<ReasonCode> {
    if v.is_v5() {
        let codes: Vec<ReasonCode> = (0..=255u8)
            .filter(|c| reason_allowed(packet_type, *c))
            .map(ReasonCode)
            .collect();
        select(codes).boxed()
    } else {
        Just(ReasonCode::SUCCESS).boxed()
    }
}

fn connect(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let will = (
        topic_name(),
        binary(),
        qos(),
        any::<bool>(),
        props_for(v, PropertyContext::Will),
    )
        .prop_map(|(topic, payload, qos, retain, properties)| LastWill {
            topic,
            payload,
            qos,
            retain,
            properties: properties.into(),
        });
    (
        any::<bool>(),
        any::<u16>(),
        text(),
        of(will),
        of(text()),
        of(binary()),
        props_for(v, PropertyContext::Connect),
    )
        .prop_map(
            move |(clean_start, keep_alive, client_id, will, username, password, properties)| {
                // 3.x forbids a password without a user name [MQTT-3.1.2-22].
                let password = if v.is_v5() || username.is_some() {
                    password
                } else {
                    None
                };
                Packet::Connect(Box::new(Connect {
                    protocol: v,
                    clean_start,
                    keep_alive,
                    client_id,
                    will,
                    username,
                    password,
                    properties: properties.into(),
                }))
            },
        )
}

fn connack(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let code = if v.is_v5() {
        reason(v, 2).prop_map(|r| r.0).boxed()
    } else {
        (0u8..=5).boxed()
    };
    (any::<bool>(), code, props_for(v, PropertyContext::ConnAck)).prop_map(
        |(sp, code, properties)| {
            Packet::ConnAck(ConnAck {
                session_present: sp && code == 0,
                code,
                properties: properties.into(),
            })
        },
    )
}

fn publish(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        any::<bool>(),
        qos(),
        any::<bool>(),
        topic_name(),
        any::<bool>(),
        pid(),
        binary(),
        props_for(v, PropertyContext::Publish),
    )
        .prop_map(
            move |(dup, qos, retain, topic, use_alias, id, payload, mut properties)| {
                let qos0 = qos == QoS::AtMostOnce;
                let topic = if v.is_v5() && use_alias && properties.topic_alias.is_some() {
                    ByteString::new()
                } else {
                    topic
                };
                if !v.is_v5() {
                    properties = Properties::default();
                }
                Packet::Publish(Publish {
                    dup: dup && !qos0,
                    qos,
                    retain,
                    topic,
                    packet_id: (!qos0).then_some(id),
                    payload,
                    properties: properties.into(),
                })
            },
        )
}

fn pub_response(v: ProtocolVersion, packet_type: u8) -> impl Strategy<Value = Packet> {
    (
        pid(),
        reason(v, packet_type),
        props_for(v, PropertyContext::PubResponse),
    )
        .prop_map(move |(packet_id, reason, properties)| {
            let r = PubResponse {
                packet_id,
                reason,
                properties: properties.into(),
            };
            match packet_type {
                4 => Packet::PubAck(r),
                5 => Packet::PubRec(r),
                6 => Packet::PubRel(r),
                _ => Packet::PubComp(r),
            }
        })
}

fn subscribe(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let option = (topic_filter(), qos(), any::<bool>(), any::<bool>(), 0u8..=2).prop_map(
        move |(f, qos, nl, rap, rh)| {
            let v5 = v.is_v5();
            let shared = parse_shared(&f).is_some();
            let retain_handling = match rh {
                _ if !v5 => RetainHandling::SendAtSubscribe,
                0 => RetainHandling::SendAtSubscribe,
                1 => RetainHandling::SendAtSubscribeIfNew,
                _ => RetainHandling::DoNotSend,
            };
            (
                f,
                SubscriptionOptions {
                    qos,
                    no_local: v5 && nl && !shared,
                    retain_as_published: v5 && rap,
                    retain_handling,
                },
            )
        },
    );
    (
        pid(),
        vec(option, 1..4),
        props_for(v, PropertyContext::Subscribe),
    )
        .prop_map(|(packet_id, filters, properties)| {
            Packet::Subscribe(Subscribe {
                packet_id,
                filters,
                properties: properties.into(),
            })
        })
}

fn suback(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let code = if v.is_v5() {
        reason(v, 9)
    } else {
        select(vec![
            ReasonCode(0),
            ReasonCode(1),
            ReasonCode(2),
            ReasonCode(0x80),
        ])
        .boxed()
    };
    (
        pid(),
        vec(code, 1..4),
        props_for(v, PropertyContext::SubAck),
    )
        .prop_map(|(packet_id, reasons, properties)| {
            Packet::SubAck(SubAck {
                packet_id,
                reasons,
                properties: properties.into(),
            })
        })
}

fn unsubscribe(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        pid(),
        vec(topic_filter(), 1..4),
        props_for(v, PropertyContext::Unsubscribe),
    )
        .prop_map(|(packet_id, filters, properties)| {
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                filters,
                properties: properties.into(),
            })
        })
}

fn unsuback(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let n = if v.is_v5() { 1..4 } else { 0..1 };
    (
        pid(),
        vec(reason(v, 11), n),
        props_for(v, PropertyContext::UnsubAck),
    )
        .prop_map(|(packet_id, reasons, properties)| {
            Packet::UnsubAck(UnsubAck {
                packet_id,
                reasons,
                properties: properties.into(),
            })
        })
}

fn disconnect(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (reason(v, 14), props_for(v, PropertyContext::Disconnect)).prop_map(|(reason, properties)| {
        Packet::Disconnect(Disconnect {
            reason,
            properties: properties.into(),
        })
    })
}

fn auth() -> impl Strategy<Value = Packet> {
    (reason(V5, 15), props_for(V5, PropertyContext::Auth)).prop_map(|(reason, properties)| {
        Packet::Auth(Auth {
            reason,
            properties: properties.into(),
        })
    })
}

fn packet(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    let mut s = vec![
        connect(v).boxed(),
        connack(v).boxed(),
        publish(v).boxed(),
        pub_response(v, 4).boxed(),
        pub_response(v, 5).boxed(),
        pub_response(v, 6).boxed(),
        pub_response(v, 7).boxed(),
        subscribe(v).boxed(),
        suback(v).boxed(),
        unsubscribe(v).boxed(),
        unsuback(v).boxed(),
        Just(Packet::PingReq).boxed(),
        Just(Packet::PingResp).boxed(),
        disconnect(v).boxed(),
    ];
    if v.is_v5() {
        s.push(auth().boxed());
    }
    proptest::strategy::Union::new(s).boxed()
}

fn version() -> impl Strategy<Value = ProtocolVersion> {
    select(VERSIONS.to_vec())
}

fn any_version() -> impl Strategy<Value = Option<ProtocolVersion>> {
    of(version())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decode_of_encode_is_identity((v, p) in version().prop_flat_map(|v| (Just(v), packet(v)))) {
        let bytes = encode(&p, v);
        prop_assert_eq!(bytes.len(), encoded_len(&p, v));
        if let Packet::Publish(publish) = &p {
            prop_assert_eq!(bytes.len(), crate::publish_encoded_len(publish, v));
        }
        prop_assert_eq!(decode_as(&bytes, &p, v), Ok(Some(p)));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..300), v in any_version(), max in 0usize..400) {
        let mut buf = BytesMut::from(&bytes[..]);
        if let Ok(Some(p)) = decode_packet(&mut buf, v, max) {
            let v = match (&p, v) { (Packet::Connect(c), _) => c.protocol, (_, Some(v)) => v, (_, None) => unreachable!() };
            let again = encode(&p, v);
            prop_assert_eq!(decode_as(&again, &p, v), Ok(Some(p)));
        }
    }

    #[test]
    fn mutated_packets_never_panic(
        (v, p) in version().prop_flat_map(|v| (Just(v), packet(v))),
        flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        as_v in any_version(),
    ) {
        let mut bytes = encode(&p, v).to_vec();
        for (at, byte) in flips {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        let _ = decode_packet(&mut BytesMut::from(&bytes[..]), as_v, usize::MAX);
    }
}
