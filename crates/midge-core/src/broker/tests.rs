//! Protocol flows driven through the sans-IO core with a virtual clock.

use super::*;
use bytes::Bytes;
use midge_codec::{
    PacketId, PubResponse, Publish, QoS, Subscribe, SubscriptionOptions, Unsubscribe,
};
use std::collections::{HashMap, HashSet};
use std::num::NonZeroU16;

pub(super) struct Harness {
    pub(super) broker: Broker,
    now: Instant,
    next_conn: u64,
    inbox: HashMap<ConnId, Vec<Packet>>,
    closed: HashSet<ConnId>,
}

pub(super) fn pid(n: u16) -> PacketId {
    NonZeroU16::new(n).expect("non-zero")
}

pub(super) fn connect_packet(
    client_id: &str,
    clean: bool,
    keep_alive: u16,
    protocol: ProtocolVersion,
) -> Packet {
    Packet::Connect(Box::new(Connect {
        protocol,
        clean_start: clean,
        keep_alive,
        client_id: client_id.into(),
        will: None,
        username: None,
        password: None,
        properties: Default::default(),
    }))
}

pub(super) fn publish(
    topic: &str,
    payload: &str,
    qos: QoS,
    retain: bool,
    id: Option<u16>,
) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain,
        topic: topic.into(),
        packet_id: id.map(pid),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        properties: Default::default(),
    })
}

pub(super) fn subscribe(id: u16, filters: &[(&str, QoS)]) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: pid(id),
        filters: filters
            .iter()
            .map(|(f, q)| {
                (
                    ByteString::from(*f),
                    SubscriptionOptions {
                        qos: *q,
                        ..Default::default()
                    },
                )
            })
            .collect(),
        properties: Default::default(),
    })
}

pub(super) fn publishes(packets: &[Packet]) -> Vec<&Publish> {
    packets
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some(p),
            _ => None,
        })
        .collect()
}

impl Harness {
    pub(super) fn new(config: BrokerConfig) -> Self {
        Harness {
            broker: Broker::new(config),
            now: Instant::now(),
            next_conn: 1,
            inbox: HashMap::new(),
            closed: HashSet::new(),
        }
    }

    pub(super) fn now(&self) -> Instant {
        self.now
    }

    pub(super) fn open(&mut self) -> ConnId {
        let id = ConnId(self.next_conn);
        self.next_conn += 1;
        self.broker.connection_opened(id, self.now);
        id
    }

    pub(super) fn send(&mut self, conn: ConnId, packet: Packet) {
        self.broker.handle_packet(conn, packet, self.now);
        self.collect();
    }

    fn collect(&mut self) {
        while let Some(t) = self.broker.poll_transmit() {
            self.inbox.entry(t.conn).or_default().extend(t.packets);
            if t.close {
                self.closed.insert(t.conn);
            }
        }
    }

    /// Everything sent to `conn` since the last call.
    pub(super) fn take(&mut self, conn: ConnId) -> Vec<Packet> {
        self.collect();
        self.inbox.remove(&conn).unwrap_or_default()
    }

    pub(super) fn is_closed(&self, conn: ConnId) -> bool {
        self.closed.contains(&conn)
    }

    pub(super) fn advance(&mut self, d: Duration) {
        self.now += d;
        self.broker.handle_timeout(self.now);
        self.collect();
    }

    pub(super) fn lose(&mut self, conn: ConnId) {
        self.broker.connection_lost(conn, self.now);
        self.collect();
    }

    /// Opens a connection and connects it; returns it and the CONNACK.
    pub(super) fn connect_with(&mut self, packet: Packet) -> (ConnId, ConnAck) {
        let conn = self.open();
        self.send(conn, packet);
        let mut out = self.take(conn);
        assert!(!out.is_empty(), "no CONNACK");
        match out.remove(0) {
            Packet::ConnAck(a) => {
                self.inbox.insert(conn, out);
                (conn, a)
            }
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    pub(super) fn connect(&mut self, client_id: &str, clean: bool) -> ConnId {
        let (conn, ack) =
            self.connect_with(connect_packet(client_id, clean, 0, ProtocolVersion::V311));
        assert_eq!(ack.code, 0);
        conn
    }

    pub(super) fn subscribe(&mut self, conn: ConnId, filter: &str, qos: QoS) {
        self.send(conn, subscribe(1, &[(filter, qos)]));
        let out = self.take(conn);
        assert!(
            matches!(out.first(), Some(Packet::SubAck(a)) if a.reasons == vec![ReasonCode(qos as u8)]),
            "{out:?}"
        );
        self.inbox.insert(conn, out.into_iter().skip(1).collect());
    }
}

#[test]
fn connect_accepted_and_refused_by_client_id_rules() {
    let mut h = Harness::new(BrokerConfig::default());
    let (_, ack) = h.connect_with(connect_packet("a", true, 60, ProtocolVersion::V311));
    assert_eq!((ack.code, ack.session_present), (0, false));

    // 3.1.1: empty id with clean session gets an id; without, refused with 2.
    let (_, ack) = h.connect_with(connect_packet("", true, 60, ProtocolVersion::V311));
    assert_eq!(ack.code, 0);
    let (c, ack) = h.connect_with(connect_packet("", false, 60, ProtocolVersion::V311));
    assert_eq!(ack.code, connect_return_code::IDENTIFIER_REJECTED);
    assert!(h.is_closed(c));
    // 3.1 requires an id.
    let (c, ack) = h.connect_with(connect_packet("", true, 60, ProtocolVersion::V31));
    assert_eq!(ack.code, connect_return_code::IDENTIFIER_REJECTED);
    assert!(h.is_closed(c));
    // 5.0: assigned id is returned in CONNACK.
    let (_, ack) = h.connect_with(connect_packet("", true, 60, ProtocolVersion::V5));
    assert_eq!(ack.code, 0);
    let id = ack
        .properties
        .assigned_client_identifier
        .clone()
        .expect("assigned id");
    assert!(id.starts_with("auto-") && id.len() == 41, "{id}");
    assert_eq!(ack.properties.receive_maximum, Some(20));
}

#[test]
fn anonymous_refused_when_not_allowed() {
    let mut h = Harness::new(BrokerConfig {
        allow_anonymous: false,
        ..Default::default()
    });
    let (c, ack) = h.connect_with(connect_packet("a", true, 60, ProtocolVersion::V311));
    assert_eq!(ack.code, connect_return_code::NOT_AUTHORIZED);
    assert!(h.is_closed(c));
}

#[test]
fn packet_before_connect_and_second_connect_close_the_connection() {
    let mut h = Harness::new(BrokerConfig::default());
    let c = h.open();
    h.send(c, Packet::PingReq);
    assert!(h.is_closed(c));

    let c = h.connect("x", true);
    h.send(c, connect_packet("x", true, 0, ProtocolVersion::V311));
    assert!(h.is_closed(c));
    assert_eq!(h.broker.session_count(), 0);
}

#[test]
fn qos1_flow_and_downgrade() {
    let mut h = Harness::new(BrokerConfig::default());
    let sub = h.connect("sub", true);
    h.subscribe(sub, "t/#", QoS::AtLeastOnce);
    let sub0 = h.connect("sub0", true);
    h.subscribe(sub0, "t/1", QoS::AtMostOnce);
    let pub_ = h.connect("pub", true);
    h.send(
        pub_,
        publish("t/1", "hello", QoS::ExactlyOnce, false, Some(9)),
    );
    assert!(matches!(h.take(pub_).as_slice(), [Packet::PubRec(r)] if r.packet_id == pid(9)));

    let got = h.take(sub);
    let p = publishes(&got);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].qos, QoS::AtLeastOnce);
    assert_eq!(&p[0].payload[..], b"hello");
    assert!(!p[0].retain && !p[0].dup);
    let id = p[0].packet_id.expect("id");
    let got0 = h.take(sub0);
    assert_eq!(publishes(&got0)[0].qos, QoS::AtMostOnce);
    assert_eq!(publishes(&got0)[0].packet_id, None);

    h.send(sub, Packet::PubAck(PubResponse::new(id)));
    let key = h.broker.sessions.find("sub").expect("session of sub");
    assert!(h
        .broker
        .sessions
        .get(key)
        .expect("session")
        .inflight
        .is_empty());
}

#[test]
fn qos2_incoming_is_delivered_exactly_once() {
    let mut h = Harness::new(BrokerConfig::default());
    let sub = h.connect("sub", true);
    h.subscribe(sub, "q", QoS::ExactlyOnce);
    let pub_ = h.connect("pub", false);
    h.send(pub_, publish("q", "once", QoS::ExactlyOnce, false, Some(7)));
    // The publisher did not see PUBREC and sends again with DUP.
    if let Packet::Publish(mut p) = publish("q", "once", QoS::ExactlyOnce, false, Some(7)) {
        p.dup = true;
        h.send(pub_, Packet::Publish(p));
    }
    let acks = h.take(pub_);
    assert_eq!(
        acks.iter()
            .filter(|p| matches!(p, Packet::PubRec(_)))
            .count(),
        2
    );
    assert_eq!(publishes(&h.take(sub)).len(), 1);

    // Reconnect in between: the id is remembered by the session.
    h.lose(pub_);
    let pub_ = h.connect("pub", false);
    resend_then_release(&mut h, pub_, sub, "once", 7);
    // Released: the same id now carries a new message.
    h.send(
        pub_,
        publish("q", "again", QoS::ExactlyOnce, false, Some(7)),
    );
    assert_eq!(publishes(&h.take(sub)).len(), 1);
}

/// The publisher, back, resends its QoS 2 message `id` on `q` (DUP): it
/// is answered with PUBREC and not delivered to `sub` again; then its
/// PUBREL gets a successful PUBCOMP ([MQTT-4.3.3-10]).
fn resend_then_release(h: &mut Harness, pub_: ConnId, sub: ConnId, payload: &str, id: u16) {
    if let Packet::Publish(mut p) = publish("q", payload, QoS::ExactlyOnce, false, Some(id)) {
        p.dup = true;
        h.send(pub_, Packet::Publish(p));
    }
    assert_eq!(publishes(&h.take(sub)).len(), 0);
    h.send(pub_, Packet::PubRel(PubResponse::new(pid(id))));
    assert!(
        matches!(h.take(pub_).as_slice(), [Packet::PubRec(_), Packet::PubComp(c)] if c.packet_id == pid(id) && c.reason == ReasonCode::SUCCESS)
    );
}

#[test]
fn an_adopted_unreleased_qos2_message_is_delivered_once_and_its_pubrel_answered() {
    let mut h = Harness::new(BrokerConfig {
        persistence: true,
        ..BrokerConfig::default()
    });
    let sub = h.connect("sub", true);
    h.subscribe(sub, "q", QoS::ExactlyOnce);
    // The publisher's session, offline, as an import leaves it.
    let pub_ = h.connect("pub", false);
    h.lose(pub_);
    h.broker.take_store_ops();
    let message = |payload: &'static str| {
        Message::plain(
            "q",
            Bytes::from_static(payload.as_bytes()),
            QoS::ExactlyOnce,
            false,
        )
    };
    let now = h.now();
    assert!(h
        .broker
        .adopt_unreleased_qos2("pub", pid(7), message("held"), now));
    assert!(
        !h.broker
            .adopt_unreleased_qos2("pub", pid(7), message("held"), now),
        "the same id twice"
    );
    assert!(!h
        .broker
        .adopt_unreleased_qos2("nobody", pid(8), message("x"), now));
    let delivered = h.take(sub);
    assert_eq!(publishes(&delivered).len(), 1, "{delivered:?}");
    assert_eq!(&publishes(&delivered)[0].payload[..], b"held");
    // The id is made durable with the session.
    assert!(h.broker.take_store_ops().iter().any(|op| matches!(
        op,
        crate::StoreOp::PutIncomingQos2 { client_id, packet_id: 7 } if client_id == "pub"
    )));

    // The client comes back: a resent PUBLISH is not delivered again, and
    // its PUBREL gets PUBCOMP.
    let pub_ = h.connect("pub", false);
    resend_then_release(&mut h, pub_, sub, "held", 7);
}

#[test]
fn queued_packets_counts_what_poll_transmit_has_not_taken() {
    let mut h = Harness::new(BrokerConfig::default());
    let subs: Vec<ConnId> = (0..3)
        .map(|i| {
            let c = h.connect(&format!("s{i}"), true);
            h.subscribe(c, "f", QoS::AtMostOnce);
            c
        })
        .collect();
    let p = h.connect("p", true);
    assert_eq!(h.broker.queued_packets(), 0);
    // Two messages to three subscribers: six packets, held until taken.
    let now = h.now();
    for _ in 0..2 {
        h.broker
            .handle_packet(p, publish("f", "x", QoS::AtMostOnce, false, None), now);
    }
    assert_eq!(h.broker.queued_packets(), 6);
    // A connection lost with packets pending takes them along.
    h.broker.connection_lost(subs[0], now);
    assert_eq!(h.broker.queued_packets(), 4);
    while h.broker.poll_transmit().is_some() {}
    assert_eq!(h.broker.queued_packets(), 0);
}

#[test]
fn qos2_outgoing_flow_resumes_after_reconnect() {
    let mut h = Harness::new(BrokerConfig::default());
    let sub = h.connect("sub", false);
    h.subscribe(sub, "q", QoS::ExactlyOnce);
    let pub_ = h.connect("pub", true);
    h.send(pub_, publish("q", "m", QoS::ExactlyOnce, false, Some(1)));
    let got = h.take(sub);
    let id = publishes(&got)[0].packet_id.expect("id");
    h.send(sub, Packet::PubRec(PubResponse::new(id)));
    assert!(matches!(h.take(sub).as_slice(), [Packet::PubRel(r)] if r.packet_id == id));

    // Connection lost before PUBCOMP: PUBREL is sent again on resume.
    h.lose(sub);
    let (sub, ack) = h.connect_with(connect_packet("sub", false, 0, ProtocolVersion::V311));
    assert!(ack.session_present);
    assert!(matches!(h.take(sub).as_slice(), [Packet::PubRel(r)] if r.packet_id == id));
    h.send(sub, Packet::PubComp(PubResponse::new(id)));
    let key = h.broker.sessions.find("sub").expect("session of sub");
    assert!(h
        .broker
        .sessions
        .get(key)
        .expect("session")
        .inflight
        .is_empty());
}

#[test]
fn unacknowledged_qos1_is_redelivered_with_dup_on_reconnect() {
    let mut h = Harness::new(BrokerConfig::default());
    let sub = h.connect("sub", false);
    h.subscribe(sub, "r", QoS::AtLeastOnce);
    let pub_ = h.connect("pub", true);
    h.send(pub_, publish("r", "x", QoS::AtLeastOnce, false, Some(3)));
    let first = h.take(sub);
    let p = publishes(&first)[0].clone();
    h.lose(sub);
    let sub = h.connect("sub", false);
    let again = h.take(sub);
    let q = publishes(&again);
    assert_eq!(q.len(), 1);
    assert!(q[0].dup);
    assert_eq!(q[0].packet_id, p.packet_id);
    assert_eq!(q[0].payload, p.payload);
}

#[test]
fn overlapping_subscriptions_deliver_once_at_highest_qos() {
    let mut h = Harness::new(BrokerConfig::default());
    let sub = h.connect("sub", true);
    h.send(
        sub,
        subscribe(
            1,
            &[
                ("a/#", QoS::AtLeastOnce),
                ("a/+", QoS::ExactlyOnce),
                ("#", QoS::AtMostOnce),
            ],
        ),
    );
    h.take(sub);
    let pub_ = h.connect("pub", true);
    h.send(pub_, publish("a/b", "x", QoS::ExactlyOnce, false, Some(1)));
    let got = h.take(sub);
    let p = publishes(&got);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].qos, QoS::ExactlyOnce);
}

#[test]
fn offline_persistent_session_queues_and_respects_inflight_window() {
    let mut h = Harness::new(BrokerConfig {
        max_inflight_messages: 2,
        max_queued_messages: 4,
        ..Default::default()
    });
    let sub = h.connect("sub", false);
    h.subscribe(sub, "s", QoS::AtLeastOnce);
    h.lose(sub);
    let pub_ = h.connect("pub", true);
    for i in 0..6u16 {
        h.send(
            pub_,
            publish("s", &format!("m{i}"), QoS::AtLeastOnce, false, Some(i + 1)),
        );
        // QoS 0 is not queued for offline sessions by default.
        h.send(pub_, publish("s", "zero", QoS::AtMostOnce, false, None));
    }
    assert_eq!(h.broker.stats().messages_dropped, 2);
    let (sub, ack) = h.connect_with(connect_packet("sub", false, 0, ProtocolVersion::V311));
    assert!(ack.session_present);
    let got = h.take(sub);
    let p = publishes(&got);
    let payloads: Vec<&[u8]> = p.iter().map(|p| &p.payload[..]).collect();
    assert_eq!(payloads, vec![&b"m0"[..], b"m1"]);
    // Each PUBACK lets one more through, in order.
    let mut seen = vec![];
    let mut next: Vec<PacketId> = p.iter().filter_map(|p| p.packet_id).collect();
    while let Some(id) = next.pop() {
        h.send(sub, Packet::PubAck(PubResponse::new(id)));
        for p in publishes(&h.take(sub)) {
            seen.push(p.payload.clone());
            next.push(p.packet_id.expect("id"));
        }
    }
    assert_eq!(
        seen,
        vec![Bytes::from_static(b"m2"), Bytes::from_static(b"m3")]
    );
}

#[test]
fn clean_session_discards_state() {
    let mut h = Harness::new(BrokerConfig::default());
    let sub = h.connect("sub", false);
    h.subscribe(sub, "s", QoS::AtLeastOnce);
    h.lose(sub);
    let (sub, ack) = h.connect_with(connect_packet("sub", true, 0, ProtocolVersion::V311));
    assert!(!ack.session_present);
    let pub_ = h.connect("pub", true);
    h.send(pub_, publish("s", "x", QoS::AtLeastOnce, false, Some(1)));
    assert!(publishes(&h.take(sub)).is_empty());
    assert_eq!(h.broker.subscription_count(), 0);
}

#[test]
fn takeover_closes_the_old_connection_and_keeps_the_session() {
    let mut h = Harness::new(BrokerConfig::default());
    let watcher = h.connect("watcher", true);
    h.subscribe(watcher, "will", QoS::AtMostOnce);
    let old = h.open();
    if let Packet::Connect(mut c) = connect_packet("dev", false, 0, ProtocolVersion::V311) {
        c.will = Some(LastWill {
            topic: "will".into(),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: Default::default(),
        });
        h.send(old, Packet::Connect(c));
    }
    h.take(old);
    h.subscribe(old, "d", QoS::AtLeastOnce);
    let (new, ack) = h.connect_with(connect_packet("dev", false, 0, ProtocolVersion::V311));
    assert!(ack.session_present);
    assert!(h.is_closed(old));
    assert!(!h.is_closed(new));
    // The new one is known by the session's name (the old one is gone).
    assert_eq!(h.broker.client_id(old), None);
    assert_eq!(h.broker.client_id(new), Some("dev"));
    // 3.1.1: the old connection's will is published.
    assert_eq!(publishes(&h.take(watcher)).len(), 1);
    // A late socket error on the old connection does not touch the session.
    h.lose(old);
    let pub_ = h.connect("pub", true);
    h.send(pub_, publish("d", "x", QoS::AtLeastOnce, false, Some(1)));
    assert_eq!(publishes(&h.take(new)).len(), 1);
}

fn connect_with_will(h: &mut Harness, id: &str, keep_alive: u16) -> ConnId {
    let c = h.open();
    if let Packet::Connect(mut p) = connect_packet(id, true, keep_alive, ProtocolVersion::V311) {
        p.will = Some(LastWill {
            topic: "wills".into(),
            payload: Bytes::from_static(b"bye"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Default::default(),
        });
        h.send(c, Packet::Connect(p));
    }
    assert!(matches!(h.take(c).as_slice(), [Packet::ConnAck(a)] if a.code == 0));
    c
}

#[test]
fn will_published_on_keep_alive_expiry_not_before() {
    let mut h = Harness::new(BrokerConfig::default());
    let watcher = h.connect("watcher", true);
    h.subscribe(watcher, "wills", QoS::AtLeastOnce);
    let c = connect_with_will(&mut h, "dev", 10);
    assert!(h.broker.poll_timeout().is_some());
    h.advance(Duration::from_secs(14));
    assert!(!h.is_closed(c));
    h.send(c, Packet::PingReq);
    assert!(matches!(h.take(c).as_slice(), [Packet::PingResp]));
    // Activity at t=14 moves the deadline to 14 + 15 = 29.
    h.advance(Duration::from_secs(14));
    assert!(!h.is_closed(c));
    h.advance(Duration::from_millis(1001));
    assert!(h.is_closed(c));
    let got = h.take(watcher);
    let p = publishes(&got);
    assert_eq!(p.len(), 1);
    assert_eq!(&p[0].payload[..], b"bye");
}

#[test]
fn will_on_connection_loss_but_not_after_disconnect() {
    let mut h = Harness::new(BrokerConfig::default());
    let watcher = h.connect("watcher", true);
    h.subscribe(watcher, "wills", QoS::AtLeastOnce);
    let c = connect_with_will(&mut h, "a", 0);
    h.send(c, Packet::Disconnect(Disconnect::default()));
    assert!(h.is_closed(c));
    h.lose(c);
    assert!(publishes(&h.take(watcher)).is_empty());

    let c = connect_with_will(&mut h, "b", 0);
    h.lose(c);
    assert_eq!(publishes(&h.take(watcher)).len(), 1);
}

#[test]
fn retained_set_replace_clear_and_dollar_topics() {
    let mut h = Harness::new(BrokerConfig::default());
    let pub_ = h.connect("pub", true);
    h.send(pub_, publish("r/a", "1", QoS::AtLeastOnce, true, Some(1)));
    h.send(pub_, publish("r/a", "2", QoS::AtMostOnce, true, None));
    h.send(pub_, publish("r/b", "3", QoS::AtLeastOnce, true, Some(2)));
    h.send(pub_, publish("$x/y", "4", QoS::AtMostOnce, true, None));
    assert_eq!(h.broker.retained_count(), 3);

    let sub = h.connect("sub", true);
    h.subscribe(sub, "#", QoS::AtLeastOnce);
    let got = h.take(sub);
    let mut p: Vec<(String, QoS, bool)> = publishes(&got)
        .iter()
        .map(|p| {
            (
                String::from_utf8_lossy(&p.payload).into_owned(),
                p.qos,
                p.retain,
            )
        })
        .collect();
    p.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        p,
        vec![
            ("2".to_owned(), QoS::AtMostOnce, true),
            ("3".to_owned(), QoS::AtLeastOnce, true)
        ]
    );
    h.subscribe(sub, "$x/#", QoS::AtMostOnce);
    assert_eq!(publishes(&h.take(sub)).len(), 1);

    // A live message to a subscriber has retain 0, and an empty retained
    // payload clears.
    h.send(pub_, publish("r/a", "", QoS::AtMostOnce, true, None));
    let live = h.take(sub);
    assert!(!publishes(&live)[0].retain);
    assert_eq!(h.broker.retained_count(), 2);
}

#[test]
fn unsubscribe_stops_delivery() {
    let mut h = Harness::new(BrokerConfig::default());
    let sub = h.connect("sub", true);
    h.subscribe(sub, "u/+", QoS::AtMostOnce);
    h.send(
        sub,
        Packet::Unsubscribe(Unsubscribe {
            packet_id: pid(2),
            filters: vec!["u/+".into()],
            properties: Default::default(),
        }),
    );
    assert!(matches!(h.take(sub).as_slice(), [Packet::UnsubAck(a)] if a.packet_id == pid(2)));
    let pub_ = h.connect("pub", true);
    h.send(pub_, publish("u/1", "x", QoS::AtMostOnce, false, None));
    assert!(h.take(sub).is_empty());
}

#[test]
fn connection_without_connect_times_out() {
    let mut h = Harness::new(BrokerConfig::default());
    let c = h.open();
    h.advance(Duration::from_secs(9));
    assert!(!h.is_closed(c));
    h.advance(Duration::from_secs(2));
    assert!(h.is_closed(c));
}

#[test]
fn keep_alive_shorter_than_the_connect_timeout_is_enforced_on_time() {
    // Keep-alive 2 s: closed after 1.5 × 2 = 3 s of silence, long before
    // the 10 s connect timeout's entry comes due.
    let mut h = Harness::new(BrokerConfig::default());
    let c = h.open();
    h.send(c, connect_packet("short", true, 2, ProtocolVersion::V311));
    assert!(matches!(h.take(c).as_slice(), [Packet::ConnAck(a)] if a.code == 0));
    h.advance(Duration::from_millis(2900));
    assert!(!h.is_closed(c));
    h.advance(Duration::from_millis(200));
    assert!(h.is_closed(c));
}

#[test]
fn connections_that_come_and_go_leave_no_pile_of_timers() {
    // A reconnect storm: 20 000 connections, each closed after CONNECT,
    // long before its timers come due. Their entries must not pile up.
    let mut h = Harness::new(BrokerConfig::default());
    let (keep, _) = h.connect_with(connect_packet("stays", true, 60, ProtocolVersion::V311));
    for i in 0..20_000 {
        let c = h.open();
        h.send(
            c,
            connect_packet(&format!("c{i}"), true, 60, ProtocolVersion::V311),
        );
        h.send(c, Packet::Disconnect(Disconnect::default()));
        h.lose(c);
    }
    let entries = h.broker.timers.len();
    assert!(
        entries <= 3 * 1024,
        "{entries} timer entries for 1 connection"
    );
    // The one that stayed is still watched: closed after 90 s of silence.
    h.advance(Duration::from_secs(89));
    assert!(!h.is_closed(keep));
    h.advance(Duration::from_secs(2));
    assert!(h.is_closed(keep));
}

#[test]
fn v5_session_expiry_and_topic_alias() {
    let mut h = Harness::new(BrokerConfig::default());
    let c = h.open();
    if let Packet::Connect(mut p) = connect_packet("v5", false, 0, ProtocolVersion::V5) {
        p.properties.session_expiry_interval = Some(60);
        h.send(c, Packet::Connect(p));
    }
    h.take(c);
    h.subscribe(c, "e", QoS::AtLeastOnce);
    h.lose(c);
    assert_eq!(h.broker.session_count(), 1);
    h.advance(Duration::from_secs(61));
    assert_eq!(h.broker.session_count(), 0);

    let (c, _) = h.connect_with(connect_packet("v5b", true, 0, ProtocolVersion::V5));
    if let Packet::Publish(mut p) = publish("t", "x", QoS::AtMostOnce, false, None) {
        // Above the Topic Alias Maximum of 10 we granted.
        p.properties.topic_alias = Some(11);
        h.send(c, Packet::Publish(p));
    }
    assert!(h.is_closed(c));
    assert!(
        matches!(h.take(c).as_slice(), [Packet::Disconnect(d)] if d.reason == ReasonCode::TOPIC_ALIAS_INVALID)
    );
}

#[test]
fn max_inflight_bytes_limits_the_window() {
    let mut h = Harness::new(BrokerConfig {
        max_inflight_bytes: 10,
        ..Default::default()
    });
    let sub = h.connect("sub", true);
    h.subscribe(sub, "b", QoS::AtLeastOnce);
    let p = h.connect("pub", true);
    for i in 1..=3 {
        h.send(p, publish("b", "123456", QoS::AtLeastOnce, false, Some(i)));
    }
    // 6 bytes in flight; another 6 would pass 10.
    let got = h.take(sub);
    let ids: Vec<_> = publishes(&got).iter().filter_map(|p| p.packet_id).collect();
    assert_eq!(ids.len(), 1);
    h.send(sub, Packet::PubAck(PubResponse::new(ids[0])));
    assert_eq!(publishes(&h.take(sub)).len(), 1);
}

#[test]
fn memory_limit_refuses_publishes() {
    let mut h = Harness::new(BrokerConfig::default());
    let sub = h.connect("sub", true);
    h.subscribe(sub, "m", QoS::AtMostOnce);
    h.broker.set_memory_exceeded(true);
    let p = h.connect("pub", true);
    h.send(p, publish("m", "x", QoS::AtLeastOnce, false, Some(1)));
    assert!(matches!(h.take(p).as_slice(), [Packet::PubAck(_)]));
    assert!(publishes(&h.take(sub)).is_empty());
    h.broker.set_memory_exceeded(false);
    h.send(p, publish("m", "y", QoS::AtLeastOnce, false, Some(2)));
    assert_eq!(publishes(&h.take(sub)).len(), 1);
}

#[test]
fn mount_point_prefixes_topics_and_filters() {
    let mut h = Harness::new(BrokerConfig::default());
    let outside = h.connect("outside", true);
    h.subscribe(outside, "#", QoS::AtMostOnce);
    let a = h.open();
    h.broker.set_mount_point(a, "tenant1/".into());
    h.send(a, connect_packet("a", true, 0, ProtocolVersion::V311));
    h.take(a);
    h.subscribe(a, "x/#", QoS::AtMostOnce);
    // Published inside the mount: seen outside with the prefix, inside without.
    h.send(a, publish("x/1", "in", QoS::AtMostOnce, false, None));
    assert_eq!(publishes(&h.take(outside))[0].topic, "tenant1/x/1");
    assert_eq!(publishes(&h.take(a))[0].topic, "x/1");
    // From outside, only topics under the mount reach the mounted client.
    h.send(
        outside,
        publish("tenant1/x/2", "to", QoS::AtMostOnce, false, None),
    );
    h.send(outside, publish("x/2", "not", QoS::AtMostOnce, false, None));
    let got = h.take(a);
    let p = publishes(&got);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].topic, "x/2");
    assert_eq!(&p[0].payload[..], b"to");
}

#[test]
fn without_anonymous_access_a_bare_user_name_is_not_enough() {
    // No password file to check it against: refused, as Mosquitto 2.0 does.
    let mut h = Harness::new(BrokerConfig {
        allow_anonymous: false,
        ..Default::default()
    });
    let Packet::Connect(mut c) = connect_packet("u", true, 0, ProtocolVersion::V311) else {
        unreachable!()
    };
    c.username = Some("someone".into());
    let (conn, ack) = h.connect_with(Packet::Connect(c));
    assert_eq!(ack.code, connect_return_code::NOT_AUTHORIZED);
    assert!(h.is_closed(conn));
}

/// The client id and user name are copied out of the CONNECT: a slice of
/// it would keep the whole packet, password included, for as long as the
/// connection or the session lasts.
#[test]
fn a_connection_keeps_nothing_of_its_connect_packet() {
    let mut h = Harness::new(BrokerConfig::default());
    // Not static: a static buffer counts as never unique.
    let packet = Bytes::copy_from_slice(b"client-7userpass");
    let text = |r: std::ops::Range<usize>| ByteString::try_from(packet.slice(r)).expect("UTF-8");
    let connect = Packet::Connect(Box::new(Connect {
        protocol: ProtocolVersion::V311,
        clean_start: false,
        keep_alive: 0,
        client_id: text(0..8),
        will: None,
        username: Some(text(8..12)),
        password: Some(packet.slice(12..)),
        properties: Default::default(),
    }));
    let (conn, ack) = h.connect_with(connect);
    assert_eq!(ack.code, 0);
    assert!(packet.is_unique(), "the CONNECT's bytes are still held");
    let key = h.broker.sessions.find("client-7").expect("session");
    let session = h.broker.sessions.get(key).expect("session");
    assert_eq!(session.username.as_deref(), Some("user"));
    assert_eq!(h.broker.client_id(conn), Some("client-7"));
}

/// Every idle connection has one (issue 4: memory per connection); the
/// rare parts live in `extras`.
#[test]
fn a_core_connection_stays_small() {
    let size = std::mem::size_of::<super::Connection>();
    println!("Connection: {size} bytes");
    // 72 bytes take an 80-byte chunk from glibc's allocator. The client
    // id is the session's (`Broker::client_id`).
    assert!(size <= 72, "a connection is {size} bytes");
}
