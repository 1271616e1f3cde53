//! MQTT 5.0 features through the core, with a virtual clock.

use super::tests::*;
use super::*;
use crate::auth::{AuthExchange, AuthMethod, AuthStep};
use bytes::Bytes;
use midge_codec::{
    Auth, Properties, PubResponse, Publish, QoS, RetainHandling, Subscribe, SubscriptionOptions,
};

fn v5_connect(h: &mut Harness, id: &str, clean: bool, props: Properties) -> (ConnId, ConnAck) {
    let Packet::Connect(mut c) = connect_packet(id, clean, 0, ProtocolVersion::V5) else {
        unreachable!()
    };
    c.properties = props.into();
    h.connect_with(Packet::Connect(c))
}

fn v5_publish(topic: &str, payload: &[u8], qos: QoS, id: Option<u16>, props: Properties) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        packet_id: id.map(pid),
        payload: Bytes::copy_from_slice(payload),
        properties: props.into(),
    })
}

fn sub_with(id: u16, filter: &str, options: SubscriptionOptions, sub_id: Option<u32>) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: pid(id),
        filters: vec![(filter.into(), options)],
        properties: Properties {
            subscription_identifiers: sub_id.into_iter().collect(),
            ..Default::default()
        }
        .into(),
    })
}

fn opts(qos: QoS) -> SubscriptionOptions {
    SubscriptionOptions {
        qos,
        ..Default::default()
    }
}

fn disconnect_reason(packets: &[Packet]) -> Option<ReasonCode> {
    packets.iter().find_map(|p| match p {
        Packet::Disconnect(d) => Some(d.reason),
        _ => None,
    })
}

#[test]
fn incoming_topic_aliases() {
    let mut h = Harness::new(BrokerConfig::default());
    let (sub, ack) = v5_connect(&mut h, "sub", true, Properties::default());
    assert_eq!(ack.properties.topic_alias_maximum, Some(10));
    h.subscribe(sub, "alias/#", QoS::AtMostOnce);
    let (c, _) = v5_connect(&mut h, "pub", true, Properties::default());
    let with_alias = |_: &str, alias| Properties {
        topic_alias: Some(alias),
        ..Default::default()
    };
    h.send(
        c,
        v5_publish("alias/one", b"1", QoS::AtMostOnce, None, with_alias("", 3)),
    );
    h.send(
        c,
        v5_publish("", b"2", QoS::AtMostOnce, None, with_alias("", 3)),
    );
    let got = h.take(sub);
    let p = publishes(&got);
    assert_eq!(p.len(), 2);
    assert!(p
        .iter()
        .all(|p| p.topic == "alias/one" && p.properties.topic_alias.is_none()));

    // An alias never set: protocol error.
    h.send(
        c,
        v5_publish("", b"3", QoS::AtMostOnce, None, with_alias("", 4)),
    );
    assert_eq!(
        disconnect_reason(&h.take(c)),
        Some(ReasonCode::PROTOCOL_ERROR)
    );
    assert!(h.is_closed(c));
    // Alias 0 is invalid.
    let (c, _) = v5_connect(&mut h, "pub2", true, Properties::default());
    h.send(
        c,
        v5_publish("alias/x", b"4", QoS::AtMostOnce, None, with_alias("", 0)),
    );
    assert_eq!(
        disconnect_reason(&h.take(c)),
        Some(ReasonCode::TOPIC_ALIAS_INVALID)
    );
}

#[test]
fn outgoing_topic_aliases_when_the_client_allows() {
    let mut h = Harness::new(BrokerConfig::default());
    let (sub, _) = v5_connect(
        &mut h,
        "sub",
        true,
        Properties {
            topic_alias_maximum: Some(1),
            ..Default::default()
        },
    );
    h.subscribe(sub, "#", QoS::AtMostOnce);
    let p = h.connect("pub", true);
    for t in ["a/1", "a/1", "a/2"] {
        h.send(p, publish(t, "x", QoS::AtMostOnce, false, None));
    }
    let got = h.take(sub);
    let seen: Vec<(String, Option<u16>)> = publishes(&got)
        .iter()
        .map(|p| (p.topic.to_string(), p.properties.topic_alias))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("a/1".to_owned(), Some(1)),
            (String::new(), Some(1)),
            // Only one alias allowed: the new topic goes in full.
            ("a/2".to_owned(), None)
        ]
    );
}

#[test]
fn client_receive_maximum_limits_what_is_in_flight() {
    let mut h = Harness::new(BrokerConfig::default());
    let (sub, _) = v5_connect(
        &mut h,
        "sub",
        true,
        Properties {
            receive_maximum: Some(2),
            ..Default::default()
        },
    );
    h.subscribe(sub, "r", QoS::AtLeastOnce);
    let p = h.connect("pub", true);
    for i in 1..=5 {
        h.send(p, publish("r", "x", QoS::AtLeastOnce, false, Some(i)));
    }
    let got = h.take(sub);
    let ids: Vec<_> = publishes(&got).iter().filter_map(|p| p.packet_id).collect();
    assert_eq!(ids.len(), 2);
    h.send(sub, Packet::PubAck(PubResponse::new(ids[0])));
    assert_eq!(publishes(&h.take(sub)).len(), 1);
}

#[test]
fn our_receive_maximum_exceeded_disconnects() {
    let mut h = Harness::new(BrokerConfig {
        max_inflight_messages: 2,
        ..Default::default()
    });
    let (c, ack) = v5_connect(&mut h, "pub", true, Properties::default());
    assert_eq!(ack.properties.receive_maximum, Some(2));
    for i in 1..=2 {
        h.send(
            c,
            v5_publish("q", b"x", QoS::ExactlyOnce, Some(i), Properties::default()),
        );
    }
    assert!(!h.is_closed(c));
    h.send(
        c,
        v5_publish("q", b"x", QoS::ExactlyOnce, Some(3), Properties::default()),
    );
    assert_eq!(
        disconnect_reason(&h.take(c)),
        Some(ReasonCode::RECEIVE_MAXIMUM_EXCEEDED)
    );
}

#[test]
fn messages_larger_than_the_clients_maximum_packet_size_are_not_sent() {
    let mut h = Harness::new(BrokerConfig::default());
    let (sub, _) = v5_connect(
        &mut h,
        "sub",
        true,
        Properties {
            maximum_packet_size: Some(64),
            ..Default::default()
        },
    );
    h.subscribe(sub, "m", QoS::AtLeastOnce);
    let p = h.connect("pub", true);
    h.send(
        p,
        publish("m", &"x".repeat(100), QoS::AtLeastOnce, false, Some(1)),
    );
    h.send(p, publish("m", "small", QoS::AtLeastOnce, false, Some(2)));
    let got = h.take(sub);
    let p = publishes(&got);
    assert_eq!(p.len(), 1);
    assert_eq!(&p[0].payload[..], b"small");
    // The dropped one does not hold an in-flight slot.
    let key = h.broker.sessions.find("sub").expect("session of sub");
    assert_eq!(
        h.broker.sessions.get(key).expect("session").inflight.len(),
        1
    );
}

#[test]
fn message_expiry_counts_down_and_expired_messages_are_dropped() {
    let mut h = Harness::new(BrokerConfig::default());
    let (sub, _) = v5_connect(
        &mut h,
        "sub",
        false,
        Properties {
            session_expiry_interval: Some(3600),
            ..Default::default()
        },
    );
    h.subscribe(sub, "e", QoS::AtLeastOnce);
    h.lose(sub);
    let (p, _) = v5_connect(&mut h, "pub", true, Properties::default());
    let expiring = |s| Properties {
        message_expiry_interval: Some(s),
        ..Default::default()
    };
    h.send(
        p,
        v5_publish("e", b"long", QoS::AtLeastOnce, Some(1), expiring(10)),
    );
    h.send(
        p,
        v5_publish("e", b"short", QoS::AtLeastOnce, Some(2), expiring(2)),
    );
    h.advance(Duration::from_secs(4));
    let (sub, ack) = v5_connect(&mut h, "sub", false, Properties::default());
    assert!(ack.session_present);
    let got = h.take(sub);
    let p = publishes(&got);
    assert_eq!(p.len(), 1);
    assert_eq!(&p[0].payload[..], b"long");
    assert_eq!(p[0].properties.message_expiry_interval, Some(6));
}

fn will_props(delay: u32) -> LastWill {
    LastWill {
        topic: "wills".into(),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Properties {
            will_delay_interval: Some(delay),
            ..Default::default()
        }
        .into(),
    }
}

fn connect_v5_with_will(h: &mut Harness, id: &str, expiry: u32, delay: u32) -> ConnId {
    let Packet::Connect(mut c) = connect_packet(id, false, 0, ProtocolVersion::V5) else {
        unreachable!()
    };
    c.properties.session_expiry_interval = Some(expiry);
    c.will = Some(will_props(delay));
    let (conn, ack) = h.connect_with(Packet::Connect(c));
    assert_eq!(ack.code, 0);
    conn
}

#[test]
fn will_delay_is_cancelled_by_reconnect_and_fires_after_the_delay() {
    let mut h = Harness::new(BrokerConfig::default());
    let w = h.connect("watcher", true);
    h.subscribe(w, "wills", QoS::AtMostOnce);

    let c = connect_v5_with_will(&mut h, "dev", 3600, 10);
    h.lose(c);
    h.advance(Duration::from_secs(5));
    assert!(publishes(&h.take(w)).is_empty());
    // Back within the delay: no will.
    let c = connect_v5_with_will(&mut h, "dev", 3600, 10);
    h.advance(Duration::from_secs(20));
    assert!(publishes(&h.take(w)).is_empty());
    // Gone for longer than the delay: the will is published at 10 s.
    h.lose(c);
    h.advance(Duration::from_secs(9));
    assert!(publishes(&h.take(w)).is_empty());
    h.advance(Duration::from_secs(2));
    assert_eq!(publishes(&h.take(w)).len(), 1);

    // A session ending before the delay publishes the will then.
    let c = connect_v5_with_will(&mut h, "dev2", 5, 60);
    h.lose(c);
    h.advance(Duration::from_secs(6));
    assert_eq!(publishes(&h.take(w)).len(), 1);
}

#[test]
fn one_copy_carries_every_matching_subscription_identifier() {
    let mut h = Harness::new(BrokerConfig::default());
    let (sub, _) = v5_connect(&mut h, "sub", true, Properties::default());
    h.send(sub, sub_with(1, "a/+", opts(QoS::AtMostOnce), Some(1)));
    h.send(sub, sub_with(2, "a/#", opts(QoS::AtLeastOnce), Some(2)));
    h.send(sub, sub_with(3, "a/b", opts(QoS::AtMostOnce), None));
    h.take(sub);
    let p = h.connect("pub", true);
    h.send(p, publish("a/b", "x", QoS::AtLeastOnce, false, Some(1)));
    let got = h.take(sub);
    let p = publishes(&got);
    assert_eq!(p.len(), 1);
    let mut ids = p[0].properties.subscription_identifiers.clone();
    ids.sort_unstable();
    assert_eq!(ids, vec![1, 2]);
    assert_eq!(p[0].qos, QoS::AtLeastOnce);
}

#[test]
fn no_local_retain_as_published_and_retain_handling() {
    let mut h = Harness::new(BrokerConfig::default());
    let (c, _) = v5_connect(&mut h, "me", true, Properties::default());
    let nl = SubscriptionOptions {
        no_local: true,
        ..opts(QoS::AtMostOnce)
    };
    h.send(c, sub_with(1, "nl", nl, None));
    h.take(c);
    h.send(c, publish("nl", "own", QoS::AtMostOnce, false, None));
    assert!(publishes(&h.take(c)).is_empty());

    let p = h.connect("pub", true);
    h.send(p, publish("keep", "r", QoS::AtMostOnce, true, None));
    let rap = SubscriptionOptions {
        retain_as_published: true,
        ..opts(QoS::AtMostOnce)
    };
    h.send(c, sub_with(2, "keep", rap, None));
    let got = h.take(c);
    assert!(publishes(&got)[0].retain);
    h.send(p, publish("keep", "r2", QoS::AtMostOnce, true, None));
    assert!(
        publishes(&h.take(c))[0].retain,
        "Retain As Published keeps the flag"
    );

    // Retain Handling 1: only when the subscription is new; 2: never.
    let if_new = SubscriptionOptions {
        retain_handling: RetainHandling::SendAtSubscribeIfNew,
        ..opts(QoS::AtMostOnce)
    };
    h.send(c, sub_with(3, "keep", if_new, None));
    assert!(publishes(&h.take(c)).is_empty());
    let never = SubscriptionOptions {
        retain_handling: RetainHandling::DoNotSend,
        ..opts(QoS::AtMostOnce)
    };
    let (d, _) = v5_connect(&mut h, "other", true, Properties::default());
    h.send(d, sub_with(4, "keep", never, None));
    assert!(publishes(&h.take(d)).is_empty());
}

#[test]
fn shared_subscriptions_take_turns_and_skip_retained() {
    let mut h = Harness::new(BrokerConfig::default());
    let p = h.connect("pub", true);
    h.send(
        p,
        publish("jobs/1", "retained", QoS::AtMostOnce, true, None),
    );
    let a = h.connect("a", true);
    h.subscribe(a, "$share/g/jobs/+", QoS::AtLeastOnce);
    let b = h.connect("b", true);
    h.subscribe(b, "$share/g/jobs/+", QoS::AtLeastOnce);
    assert!(publishes(&h.take(a)).is_empty() && publishes(&h.take(b)).is_empty());
    for i in 1..=4 {
        h.send(
            p,
            publish("jobs/x", &i.to_string(), QoS::AtLeastOnce, false, Some(i)),
        );
    }
    assert_eq!(publishes(&h.take(a)).len(), 2);
    assert_eq!(publishes(&h.take(b)).len(), 2);
}

#[test]
fn shared_member_dropping_mid_stream_loses_nothing() {
    let mut h = Harness::new(BrokerConfig::default());
    let a = h.connect("a", true);
    h.subscribe(a, "$share/g/work", QoS::AtLeastOnce);
    let b = h.connect("b", true);
    h.subscribe(b, "$share/g/work", QoS::AtLeastOnce);
    let p = h.connect("pub", true);
    for i in 1..=6 {
        h.send(
            p,
            publish("work", &i.to_string(), QoS::AtLeastOnce, false, Some(i)),
        );
    }
    let got_a = h.take(a);
    let mut seen: Vec<Bytes> = publishes(&got_a)
        .iter()
        .map(|p| p.payload.clone())
        .collect();
    // a vanishes without acknowledging; b must get a's share.
    h.lose(a);
    let got_b = h.take(b);
    seen.clear();
    seen.extend(publishes(&got_b).iter().map(|p| p.payload.clone()));
    seen.sort();
    let all: Vec<Bytes> = (1..=6).map(|i: i32| Bytes::from(i.to_string())).collect();
    assert_eq!(seen, all);
}

#[test]
fn invalid_utf8_with_payload_format_indicator_is_refused() {
    let mut h = Harness::new(BrokerConfig::default());
    let (c, _) = v5_connect(&mut h, "pub", true, Properties::default());
    let pfi = Properties {
        payload_format_indicator: Some(1),
        ..Default::default()
    };
    h.send(
        c,
        v5_publish("t", &[0xff, 0xfe], QoS::AtLeastOnce, Some(1), pfi),
    );
    assert!(
        matches!(h.take(c).as_slice(), [Packet::PubAck(a)] if a.reason == ReasonCode::PAYLOAD_FORMAT_INVALID)
    );
}

#[test]
fn disconnect_cannot_raise_session_expiry_from_zero() {
    let mut h = Harness::new(BrokerConfig::default());
    let (c, _) = v5_connect(&mut h, "x", true, Properties::default());
    h.send(
        c,
        Packet::Disconnect(Disconnect {
            reason: ReasonCode::NORMAL_DISCONNECTION,
            properties: Properties {
                session_expiry_interval: Some(60),
                ..Default::default()
            }
            .into(),
        }),
    );
    assert_eq!(
        disconnect_reason(&h.take(c)),
        Some(ReasonCode::PROTOCOL_ERROR)
    );
}

#[test]
fn request_response_information_is_answered_when_configured() {
    let mut h = Harness::new(BrokerConfig {
        response_information: Some("responses/".into()),
        ..Default::default()
    });
    let (_, ack) = v5_connect(
        &mut h,
        "rr",
        true,
        Properties {
            request_response_information: Some(1),
            ..Default::default()
        },
    );
    assert_eq!(
        ack.properties.response_information.as_deref(),
        Some("responses/")
    );
}

/// A toy challenge-response method: the server sends "challenge", the
/// client must answer "secret".
struct Toy;
struct ToyExchange;
impl AuthMethod for Toy {
    fn name(&self) -> &str {
        "TOY"
    }
    fn begin(
        &self,
        _: &str,
        _: Option<&str>,
        _: Option<&[u8]>,
    ) -> (AuthStep, Box<dyn AuthExchange>) {
        (
            AuthStep::Continue {
                data: Some(Bytes::from_static(b"challenge")),
            },
            Box::new(ToyExchange),
        )
    }
}
impl AuthExchange for ToyExchange {
    fn step(&mut self, data: Option<&[u8]>) -> AuthStep {
        if data == Some(b"secret") {
            AuthStep::Success { data: None }
        } else {
            AuthStep::Fail
        }
    }
}

fn auth_packet(reason: ReasonCode, data: &'static [u8]) -> Packet {
    Packet::Auth(Auth {
        reason,
        properties: Properties {
            authentication_method: Some("TOY".into()),
            authentication_data: Some(Bytes::from_static(data)),
            ..Default::default()
        }
        .into(),
    })
}

#[test]
fn enhanced_authentication_exchange() {
    let mut h = Harness::new(BrokerConfig::default());
    h.broker.register_auth_method(std::sync::Arc::new(Toy));
    let with_method = |m: &str| Properties {
        authentication_method: Some(m.into()),
        ..Default::default()
    };
    // Unknown method: 0x8C.
    let (c, ack) = v5_connect(&mut h, "x", true, with_method("NOPE"));
    assert_eq!(ack.code, ReasonCode::BAD_AUTHENTICATION_METHOD.0);
    assert!(h.is_closed(c));

    // Challenge, right answer, CONNACK.
    let c = h.open();
    let Packet::Connect(mut p) = connect_packet("y", true, 0, ProtocolVersion::V5) else {
        unreachable!()
    };
    p.properties = with_method("TOY").into();
    h.send(c, Packet::Connect(p.clone()));
    assert!(
        matches!(h.take(c).as_slice(), [Packet::Auth(a)] if a.reason == ReasonCode::CONTINUE_AUTHENTICATION)
    );
    h.send(
        c,
        auth_packet(ReasonCode::CONTINUE_AUTHENTICATION, b"secret"),
    );
    let got = h.take(c);
    assert!(
        matches!(got.as_slice(), [Packet::ConnAck(a)] if a.code == 0 && a.properties.authentication_method.as_deref() == Some("TOY")),
        "{got:?}"
    );
    // Re-authentication after CONNACK.
    h.send(c, auth_packet(ReasonCode::REAUTHENTICATE, b""));
    assert!(
        matches!(h.take(c).as_slice(), [Packet::Auth(a)] if a.reason == ReasonCode::CONTINUE_AUTHENTICATION)
    );
    h.send(
        c,
        auth_packet(ReasonCode::CONTINUE_AUTHENTICATION, b"secret"),
    );
    assert!(matches!(h.take(c).as_slice(), [Packet::Auth(a)] if a.reason == ReasonCode::SUCCESS));

    // Wrong answer: refused.
    let c = h.open();
    h.send(c, Packet::Connect(p));
    h.take(c);
    h.send(
        c,
        auth_packet(ReasonCode::CONTINUE_AUTHENTICATION, b"wrong"),
    );
    assert!(
        matches!(h.take(c).as_slice(), [Packet::ConnAck(a)] if a.code == ReasonCode::NOT_AUTHORIZED.0)
    );
    assert!(h.is_closed(c));
}

/// Deliveries with no properties to pass on carry none, without allocating
/// (the fan-out path builds one PUBLISH per subscriber).
#[test]
fn deliveries_without_properties_allocate_none() {
    let mut h = Harness::new(BrokerConfig::default());
    let (sub, _) = v5_connect(&mut h, "sub", true, Properties::default());
    h.subscribe(sub, "t/#", QoS::AtLeastOnce);
    let (tagged, _) = v5_connect(&mut h, "tagged", true, Properties::default());
    h.send(tagged, sub_with(1, "t/#", opts(QoS::AtMostOnce), Some(9)));
    h.take(tagged);
    let old = h.connect("old", true);
    h.subscribe(old, "t/#", QoS::AtMostOnce);
    let (c, _) = v5_connect(&mut h, "pub", true, Properties::default());
    let alias_only = Properties {
        topic_alias: Some(1),
        ..Default::default()
    };
    let with_user = Properties {
        user_properties: vec![("k".into(), "v".into())],
        ..Default::default()
    };
    h.send(
        c,
        v5_publish("t/a", b"1", QoS::AtMostOnce, None, Properties::default()),
    );
    // The topic alias is the publisher's: nothing is left to pass on.
    h.send(
        c,
        v5_publish("t/b", b"2", QoS::AtMostOnce, None, alias_only),
    );
    h.send(c, v5_publish("t/c", b"3", QoS::AtMostOnce, None, with_user));
    let unboxed = |mut p: Publish| p.properties.get_mut().is_none();
    // By value: a clone would hide an empty box.
    let owned = |packets: Vec<Packet>| -> Vec<Publish> {
        packets
            .into_iter()
            .filter_map(|p| match p {
                Packet::Publish(p) => Some(p),
                _ => None,
            })
            .collect()
    };

    let got = owned(h.take(sub));
    assert_eq!(got.len(), 3);
    let mut got = got.into_iter();
    assert!(unboxed(got.next().expect("t/a")));
    assert!(unboxed(got.next().expect("t/b")));
    let c3 = got.next().expect("t/c");
    assert_eq!(c3.properties.user_properties.len(), 1);
    assert!(!unboxed(c3));

    let got = owned(h.take(tagged));
    assert_eq!(got.len(), 3);
    assert!(got
        .iter()
        .all(|p| p.properties.subscription_identifiers == [9]));
    assert_eq!(got[2].properties.user_properties.len(), 1);

    let got = owned(h.take(old));
    assert_eq!(got.len(), 3);
    assert!(got.into_iter().all(unboxed));
}
