//! Passwords and ACL decisions as the core applies them.

use super::tests::*;
use super::*;
use crate::access::AccessControl;
use bytes::Bytes;
use midge_codec::QoS;

/// user "alice" / password "secret"; alice may write `a/#` and read `a/#`;
/// nobody may touch `secret/#`.
struct Rules;

impl AccessControl for Rules {
    fn checks_passwords(&self) -> bool {
        true
    }
    fn authenticate(&self, username: &str, password: Option<&[u8]>) -> bool {
        username == "alice" && password == Some(b"secret")
    }
    fn has_acl(&self) -> bool {
        true
    }
    fn can_publish(&self, _: &str, user: Option<&str>, topic: &str) -> bool {
        user == Some("alice") && topic.starts_with("a/")
    }
    fn can_read(&self, _: &str, _: Option<&str>, topic: &str) -> bool {
        !topic.starts_with("secret/")
    }
    fn can_subscribe(&self, _: &str, _: Option<&str>, filter: &str) -> bool {
        !filter.starts_with("secret/")
    }
}

fn login(
    h: &mut Harness,
    id: &str,
    user: &str,
    password: &'static [u8],
    protocol: ProtocolVersion,
) -> (ConnId, ConnAck) {
    let Packet::Connect(mut c) = connect_packet(id, true, 0, protocol) else {
        unreachable!()
    };
    c.username = Some(user.into());
    c.password = Some(Bytes::from_static(password));
    h.connect_with(Packet::Connect(c))
}

fn harness() -> Harness {
    let mut h = Harness::new(BrokerConfig::default());
    h.broker
        .set_access_control(Some(std::sync::Arc::new(Rules)));
    h
}

#[test]
fn passwords_are_checked() {
    let mut h = harness();
    assert_eq!(
        login(&mut h, "a", "alice", b"secret", ProtocolVersion::V311)
            .1
            .code,
        0
    );
    let (c, ack) = login(&mut h, "b", "alice", b"wrong", ProtocolVersion::V311);
    assert_eq!(ack.code, connect_return_code::NOT_AUTHORIZED);
    assert!(h.is_closed(c));
    assert_eq!(
        login(&mut h, "c", "mallory", b"secret", ProtocolVersion::V5)
            .1
            .code,
        ReasonCode::NOT_AUTHORIZED.0
    );
}

#[test]
fn publish_denied_is_acknowledged_but_not_delivered() {
    let mut h = harness();
    let sub = h.connect("watch", true);
    h.subscribe(sub, "#", QoS::AtMostOnce);
    let (p, _) = login(&mut h, "pub", "alice", b"secret", ProtocolVersion::V311);
    h.send(p, publish("b/x", "no", QoS::AtLeastOnce, false, Some(1)));
    assert!(matches!(h.take(p).as_slice(), [Packet::PubAck(a)] if a.reason == ReasonCode::SUCCESS));
    assert!(publishes(&h.take(sub)).is_empty());
    h.send(p, publish("a/x", "yes", QoS::AtLeastOnce, false, Some(2)));
    assert_eq!(publishes(&h.take(sub)).len(), 1);

    let (p5, _) = login(&mut h, "pub5", "alice", b"secret", ProtocolVersion::V5);
    h.send(p5, publish("b/x", "no", QoS::AtLeastOnce, false, Some(1)));
    assert!(
        matches!(h.take(p5).as_slice(), [Packet::PubAck(a)] if a.reason == ReasonCode::NOT_AUTHORIZED)
    );
}

#[test]
fn unreadable_topics_are_not_delivered_or_subscribed() {
    let mut h = harness();
    let (p, _) = login(&mut h, "pub", "alice", b"secret", ProtocolVersion::V311);
    let sub = h.connect("watch", true);
    h.send(
        sub,
        subscribe(1, &[("secret/#", QoS::AtMostOnce), ("#", QoS::AtMostOnce)]),
    );
    assert!(
        matches!(h.take(sub).as_slice(), [Packet::SubAck(a)] if a.reasons == vec![ReasonCode(0x80), ReasonCode(0)])
    );
    // `#` matches it, but the read rule says no.
    h.send(p, publish("a/secret/x", "ok", QoS::AtMostOnce, false, None));
    assert_eq!(publishes(&h.take(sub)).len(), 1);
}
