//! The client side of the QoS flows, sans-IO: message identifiers, the
//! outgoing messages in flight, and incoming QoS 2 messages waiting for their
//! PUBREL.
//!
//! It owns no socket and no clock: the connection hands in each acknowledgement
//! and gets back what to send and what is complete, so every flow is unit
//! tested without a broker. It does not resend after a reconnect (the tools
//! use clean sessions unless `-c`, and then the broker resends to us).

use std::collections::{BTreeMap, HashMap};

use midge_codec::{Packet, PacketId, PubResponse, Publish, QoS, ReasonCode};

/// Where an outgoing QoS 1 or 2 message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutState {
    /// QoS 1 sent, waiting for PUBACK.
    AwaitPubAck,
    /// QoS 2 sent, waiting for PUBREC.
    AwaitPubRec,
    /// PUBREL sent, waiting for PUBCOMP.
    AwaitPubComp,
}

/// What an acknowledgement from the broker means for us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckOutcome {
    /// The flow of message `mid` is finished, with the broker's reason code.
    Completed { mid: u16, reason: ReasonCode },
    /// Send this (a PUBREL) and keep waiting.
    Reply(Box<Packet>),
    /// No message in flight has this identifier: ignored, as mosquitto does.
    Unknown,
}

/// What an incoming PUBLISH or PUBREL asks of us.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Incoming {
    /// The acknowledgement to send first.
    pub reply: Option<Packet>,
    /// The message to hand to the application, after the reply is sent.
    pub deliver: Option<Publish>,
}

/// Why a message cannot be sent now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("too many messages in flight")]
    InflightFull,
}

/// Client QoS state for one connection.
#[derive(Debug)]
pub struct Session {
    last_mid: u16,
    max_inflight: usize,
    outgoing: BTreeMap<u16, OutState>,
    /// Identifiers of SUBSCRIBE/UNSUBSCRIBE waiting for their ack.
    pending_acks: Vec<u16>,
    incoming_qos2: HashMap<u16, Publish>,
}

impl Session {
    /// `max_inflight` bounds the outgoing QoS 1/2 messages not yet complete
    /// (mosquitto's `-M`, default 20); it is raised to at least 1.
    pub fn new(max_inflight: usize) -> Self {
        Session {
            last_mid: 0,
            max_inflight: max_inflight.max(1),
            outgoing: BTreeMap::new(),
            pending_acks: Vec::new(),
            incoming_qos2: HashMap::new(),
        }
    }

    /// Lowers the in-flight bound to the broker's Receive Maximum (5.0).
    pub fn limit_inflight(&mut self, receive_maximum: u16) {
        self.max_inflight = self.max_inflight.min(usize::from(receive_maximum).max(1));
    }

    /// The next message identifier. Like libmosquitto, every PUBLISH gets one,
    /// QoS 0 included (it shows in `-d` output but is not sent); zero is
    /// skipped and so are identifiers still in use.
    pub fn next_mid(&mut self) -> u16 {
        loop {
            self.last_mid = self.last_mid.wrapping_add(1);
            if self.last_mid == 0 {
                self.last_mid = 1;
            }
            let m = self.last_mid;
            if !self.outgoing.contains_key(&m) && !self.pending_acks.contains(&m) {
                return m;
            }
        }
    }

    /// Whether another QoS 1/2 message may be sent now.
    pub fn can_send(&self) -> bool {
        self.outgoing.len() < self.max_inflight
    }

    /// Messages sent and not complete.
    pub fn inflight(&self) -> usize {
        self.outgoing.len()
    }

    /// True when nothing we sent awaits an acknowledgement.
    pub fn is_idle(&self) -> bool {
        self.outgoing.is_empty() && self.pending_acks.is_empty()
    }

    /// Starts a publish: returns its identifier, tracked when `qos` > 0.
    pub fn begin_publish(&mut self, qos: QoS) -> Result<u16, SessionError> {
        if qos != QoS::AtMostOnce && !self.can_send() {
            return Err(SessionError::InflightFull);
        }
        let mid = self.next_mid();
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                self.outgoing.insert(mid, OutState::AwaitPubAck);
            }
            QoS::ExactlyOnce => {
                self.outgoing.insert(mid, OutState::AwaitPubRec);
            }
        }
        Ok(mid)
    }

    /// Allocates an identifier for SUBSCRIBE or UNSUBSCRIBE.
    pub fn begin_request(&mut self) -> u16 {
        let mid = self.next_mid();
        self.pending_acks.push(mid);
        mid
    }

    /// SUBACK or UNSUBACK arrived: true when we were waiting for it.
    pub fn complete_request(&mut self, id: PacketId) -> bool {
        let before = self.pending_acks.len();
        self.pending_acks.retain(|m| *m != id.get());
        before != self.pending_acks.len()
    }

    pub fn state(&self, mid: u16) -> Option<OutState> {
        self.outgoing.get(&mid).copied()
    }

    pub fn on_puback(&mut self, ack: &PubResponse) -> AckOutcome {
        let mid = ack.packet_id.get();
        if self.outgoing.get(&mid) != Some(&OutState::AwaitPubAck) {
            return AckOutcome::Unknown;
        }
        self.outgoing.remove(&mid);
        AckOutcome::Completed {
            mid,
            reason: ack.reason,
        }
    }

    /// PUBREC: answer with PUBREL, unless the broker refused the message
    /// (5.0 reason code >= 0x80), which ends the flow.
    pub fn on_pubrec(&mut self, ack: &PubResponse) -> AckOutcome {
        let mid = ack.packet_id.get();
        match self.outgoing.get(&mid) {
            Some(OutState::AwaitPubRec) | Some(OutState::AwaitPubComp) => {}
            _ => return AckOutcome::Unknown,
        }
        if ack.reason.is_error() {
            self.outgoing.remove(&mid);
            return AckOutcome::Completed {
                mid,
                reason: ack.reason,
            };
        }
        self.outgoing.insert(mid, OutState::AwaitPubComp);
        AckOutcome::Reply(Box::new(Packet::PubRel(PubResponse::new(ack.packet_id))))
    }

    pub fn on_pubcomp(&mut self, ack: &PubResponse) -> AckOutcome {
        let mid = ack.packet_id.get();
        if self.outgoing.get(&mid) != Some(&OutState::AwaitPubComp) {
            return AckOutcome::Unknown;
        }
        self.outgoing.remove(&mid);
        AckOutcome::Completed {
            mid,
            reason: ack.reason,
        }
    }

    /// An incoming PUBLISH. QoS 2 is delivered on PUBREL, once: a resent
    /// PUBLISH with the same identifier is answered again but not delivered
    /// twice.
    pub fn on_publish(&mut self, publish: Publish) -> Incoming {
        match (publish.qos, publish.packet_id) {
            (QoS::AtLeastOnce, Some(id)) => Incoming {
                reply: Some(Packet::PubAck(PubResponse::new(id))),
                deliver: Some(publish),
            },
            (QoS::ExactlyOnce, Some(id)) => {
                self.incoming_qos2.entry(id.get()).or_insert(publish);
                Incoming {
                    reply: Some(Packet::PubRec(PubResponse::new(id))),
                    deliver: None,
                }
            }
            _ => Incoming {
                reply: None,
                deliver: Some(publish),
            },
        }
    }

    /// PUBREL for an incoming QoS 2 message: always answered with PUBCOMP;
    /// the message is delivered if it was still held.
    pub fn on_pubrel(&mut self, rel: &PubResponse) -> Incoming {
        let held = self.incoming_qos2.remove(&rel.packet_id.get());
        let mut comp = PubResponse::new(rel.packet_id);
        if held.is_none() {
            comp.reason = ReasonCode::PACKET_IDENTIFIER_NOT_FOUND;
        }
        Incoming {
            reply: Some(Packet::PubComp(comp)),
            deliver: held,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn pid(n: u16) -> PacketId {
        PacketId::new(n).expect("non-zero")
    }

    fn ack(n: u16) -> PubResponse {
        PubResponse::new(pid(n))
    }

    fn publish(qos: QoS, id: Option<u16>) -> Publish {
        Publish {
            dup: false,
            qos,
            retain: false,
            topic: "t".into(),
            packet_id: id.map(pid),
            payload: Bytes::from_static(b"x"),
            properties: Default::default(),
        }
    }

    #[test]
    fn qos1_completes_on_puback() {
        let mut s = Session::new(20);
        let mid = s.begin_publish(QoS::AtLeastOnce).unwrap();
        assert_eq!(mid, 1);
        assert_eq!(s.state(1), Some(OutState::AwaitPubAck));
        assert_eq!(
            s.on_puback(&ack(1)),
            AckOutcome::Completed {
                mid: 1,
                reason: ReasonCode::SUCCESS
            }
        );
        assert!(s.is_idle());
        // A second PUBACK for the same id is unknown.
        assert_eq!(s.on_puback(&ack(1)), AckOutcome::Unknown);
    }

    #[test]
    fn qos2_goes_through_pubrec_pubrel_pubcomp() {
        let mut s = Session::new(20);
        let mid = s.begin_publish(QoS::ExactlyOnce).unwrap();
        // PUBACK is the wrong answer for QoS 2.
        assert_eq!(s.on_puback(&ack(mid)), AckOutcome::Unknown);
        // PUBCOMP before PUBREC is too.
        assert_eq!(s.on_pubcomp(&ack(mid)), AckOutcome::Unknown);
        assert_eq!(
            s.on_pubrec(&ack(mid)),
            AckOutcome::Reply(Box::new(Packet::PubRel(ack(mid))))
        );
        assert_eq!(s.state(mid), Some(OutState::AwaitPubComp));
        // A repeated PUBREC gets PUBREL again.
        assert_eq!(
            s.on_pubrec(&ack(mid)),
            AckOutcome::Reply(Box::new(Packet::PubRel(ack(mid))))
        );
        assert!(matches!(
            s.on_pubcomp(&ack(mid)),
            AckOutcome::Completed { mid: 1, .. }
        ));
        assert!(s.is_idle());
    }

    #[test]
    fn qos2_refused_by_pubrec_reason_ends_flow() {
        let mut s = Session::new(20);
        let mid = s.begin_publish(QoS::ExactlyOnce).unwrap();
        let mut rec = ack(mid);
        rec.reason = ReasonCode::NOT_AUTHORIZED;
        assert_eq!(
            s.on_pubrec(&rec),
            AckOutcome::Completed {
                mid,
                reason: ReasonCode::NOT_AUTHORIZED
            }
        );
        assert!(s.is_idle());
    }

    #[test]
    fn qos0_uses_a_mid_but_is_not_tracked() {
        let mut s = Session::new(1);
        assert_eq!(s.begin_publish(QoS::AtMostOnce), Ok(1));
        assert_eq!(s.begin_publish(QoS::AtMostOnce), Ok(2));
        assert!(s.is_idle());
    }

    #[test]
    fn inflight_bound_is_enforced() {
        let mut s = Session::new(2);
        let a = s.begin_publish(QoS::AtLeastOnce).unwrap();
        let _b = s.begin_publish(QoS::ExactlyOnce).unwrap();
        assert_eq!(
            s.begin_publish(QoS::AtLeastOnce),
            Err(SessionError::InflightFull)
        );
        // QoS 0 is never held back.
        assert!(s.begin_publish(QoS::AtMostOnce).is_ok());
        s.on_puback(&ack(a));
        assert!(s.begin_publish(QoS::AtLeastOnce).is_ok());
        s.limit_inflight(1);
        assert!(!s.can_send());
    }

    #[test]
    fn mids_wrap_and_skip_ids_in_use() {
        let mut s = Session::new(100);
        s.last_mid = 65534;
        assert_eq!(s.begin_publish(QoS::AtLeastOnce), Ok(65535));
        assert_eq!(s.next_mid(), 1);
        s.last_mid = 65534;
        // 65535 is in flight, so it is skipped.
        assert_eq!(s.next_mid(), 1);
        let r = s.begin_request();
        assert!(!s.is_idle());
        assert!(s.complete_request(pid(r)));
        assert!(!s.complete_request(pid(r)));
    }

    #[test]
    fn incoming_qos1_is_acked_and_delivered() {
        let mut s = Session::new(20);
        let inc = s.on_publish(publish(QoS::AtLeastOnce, Some(7)));
        assert_eq!(inc.reply, Some(Packet::PubAck(ack(7))));
        assert!(inc.deliver.is_some());
    }

    #[test]
    fn incoming_qos2_is_delivered_once_on_pubrel() {
        let mut s = Session::new(20);
        let inc = s.on_publish(publish(QoS::ExactlyOnce, Some(9)));
        assert_eq!(inc.reply, Some(Packet::PubRec(ack(9))));
        assert!(inc.deliver.is_none());
        // Resent PUBLISH (DUP): PUBREC again, still nothing delivered.
        let again = s.on_publish(publish(QoS::ExactlyOnce, Some(9)));
        assert_eq!(again.reply, Some(Packet::PubRec(ack(9))));
        let rel = s.on_pubrel(&ack(9));
        assert_eq!(rel.reply, Some(Packet::PubComp(ack(9))));
        assert!(rel.deliver.is_some());
        // A repeated PUBREL is answered but delivers nothing.
        let rel2 = s.on_pubrel(&ack(9));
        assert!(rel2.deliver.is_none());
        assert!(matches!(rel2.reply, Some(Packet::PubComp(_))));
    }

    #[test]
    fn incoming_qos0_is_delivered_without_reply() {
        let mut s = Session::new(20);
        let inc = s.on_publish(publish(QoS::AtMostOnce, None));
        assert!(inc.reply.is_none());
        assert!(inc.deliver.is_some());
    }
}
