//! The store against an in-memory model, with crashes injected: process
//! crashes after a write, power loss tearing or garbling the unsynced tail,
//! and real corruption of synced data; plus encoding round trips, the
//! version header, expiry at load, and checkpoints.
//!
//! The model is the reference: after any crash the recovered state must be
//! the model's state at a group boundary no earlier than the last sync.

use bytes::Bytes;
use bytestring::ByteString;
use midge_codec::{
    LastWill, PacketId, Properties, ProtocolVersion, QoS, RetainHandling, SubscriptionOptions,
};
use midge_core::session::{OutState, SubIds, Subscription, NEVER_EXPIRES};
use midge_core::{Message, RestoredState, StoreOp, StoredState};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::codec::{decode_op, encode_one, Clock, Op, StoredMessage};
use crate::format;
use crate::store::{open_tuned, JournalStore, Tuning};
use crate::{Store, StoreOptions, SyncPolicy};

// ---------------------------------------------------------------- helpers

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }
}

fn message(topic: &str, payload: &str, qos: QoS, expires_at: Option<Instant>) -> Arc<Message> {
    let mut properties = Properties::default();
    if payload.len().is_multiple_of(3) {
        properties.content_type = Some("text/plain".into());
        properties
            .user_properties
            .push(("k".into(), payload.into()));
    }
    Arc::new(Message {
        topic: topic.into(),
        payload: Bytes::from(payload.to_string()),
        qos,
        retain: false,
        properties: properties.into(),
        publisher: Some(midge_core::SessionKey(7)),
        expires_at,
    })
}

fn will(delay: Option<u32>) -> LastWill {
    let properties = Properties {
        will_delay_interval: delay,
        message_expiry_interval: Some(60),
        correlation_data: Some(Bytes::from_static(b"\x00\x01")),
        ..Default::default()
    };
    LastWill {
        topic: "wills/x".into(),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: properties.into(),
    }
}

fn tuned(dir: &Path, compact_min: u64) -> (JournalStore, crate::Recovery) {
    let options = StoreOptions::new(dir);
    open_tuned(
        &options,
        Tuning {
            compact_min,
            chunk: 300,
        },
    )
    .expect("open")
}

fn store_path(dir: &Path) -> PathBuf {
    dir.join(crate::DEFAULT_FILE_NAME)
}

fn aside_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().contains(".corrupt-"))
        .collect();
    v.sort();
    v
}

// ---------------------------------------------------------------- canonical state

/// A state with the parts that depend on the clock reduced to what the
/// model can predict.
#[derive(Debug, Clone, PartialEq, Default)]
struct Canon {
    retained: BTreeMap<String, (Message, bool)>,
    sessions: BTreeMap<String, CanonSession>,
}

type CanonDelivery = (Message, QoS, bool, SubIds, StoredState, bool);

#[derive(Debug, Clone, PartialEq, Default)]
struct CanonSession {
    protocol: Option<ProtocolVersion>,
    expiry: u32,
    will: Option<LastWill>,
    subs: BTreeMap<String, Subscription>,
    deliveries: BTreeMap<u64, CanonDelivery>,
    incoming: BTreeSet<u16>,
}

fn plain(m: &Message) -> Message {
    let mut m = m.clone();
    m.publisher = None;
    m.expires_at = None;
    m
}

fn canon(state: &RestoredState) -> Canon {
    let mut c = Canon::default();
    for (m, exp) in &state.retained {
        let old = c
            .retained
            .insert(m.topic.to_string(), (plain(m), exp.is_some()));
        assert!(old.is_none(), "retained topic twice");
    }
    for s in &state.sessions {
        let cs = CanonSession {
            protocol: Some(s.protocol),
            expiry: s.expiry_interval,
            will: s.pending_will.as_ref().map(|(w, _)| w.clone()),
            subs: s
                .subscriptions
                .iter()
                .map(|(f, sub)| (f.to_string(), *sub))
                .collect(),
            deliveries: s
                .deliveries
                .iter()
                .map(|d| {
                    (
                        d.seq,
                        (
                            plain(&d.message),
                            d.qos,
                            d.retain,
                            d.sub_ids.clone(),
                            d.state,
                            d.expires_in.is_some(),
                        ),
                    )
                })
                .collect(),
            incoming: s.incoming_qos2.iter().copied().collect(),
        };
        let seqs: Vec<u64> = s.deliveries.iter().map(|d| d.seq).collect();
        let mut sorted = seqs.clone();
        sorted.sort_unstable();
        assert_eq!(seqs, sorted, "deliveries are restored in seq order");
        assert!(
            c.sessions.insert(s.client_id.to_string(), cs).is_none(),
            "session twice"
        );
    }
    c
}

// ---------------------------------------------------------------- the model

/// The reference store (sessions never expire in the random runs).
#[derive(Debug, Clone, Default)]
struct Model {
    state: Canon,
    next_seq: BTreeMap<String, u64>,
}

impl Model {
    fn apply(&mut self, ops: &[StoreOp]) {
        for op in ops {
            let st = &mut self.state;
            match op {
                StoreOp::PutRetained { message } => {
                    st.retained.insert(
                        message.topic.to_string(),
                        (plain(message), message.expires_at.is_some()),
                    );
                }
                StoreOp::DeleteRetained { topic } => {
                    st.retained.remove(&**topic);
                }
                StoreOp::PutSession {
                    client_id,
                    protocol,
                    expiry_interval,
                } => {
                    let s = st.sessions.entry(client_id.to_string()).or_default();
                    s.protocol = Some(*protocol);
                    s.expiry = *expiry_interval;
                    s.will = None;
                }
                StoreOp::SessionOffline { client_id, will } => {
                    st.sessions.get_mut(&**client_id).expect("session").will = will.clone();
                }
                StoreOp::DeleteSession { client_id } => {
                    st.sessions.remove(&**client_id);
                }
                StoreOp::PutSubscription {
                    client_id,
                    filter,
                    subscription,
                } => {
                    st.sessions
                        .get_mut(&**client_id)
                        .expect("session")
                        .subs
                        .insert(filter.to_string(), *subscription);
                }
                StoreOp::DeleteSubscription { client_id, filter } => {
                    if let Some(s) = st.sessions.get_mut(&**client_id) {
                        s.subs.remove(&**filter);
                    }
                }
                StoreOp::PutDelivery {
                    client_id,
                    seq,
                    message,
                    qos,
                    retain,
                    sub_ids,
                    state,
                } => {
                    st.sessions
                        .get_mut(&**client_id)
                        .expect("session")
                        .deliveries
                        .insert(
                            *seq,
                            (
                                plain(message),
                                *qos,
                                *retain,
                                sub_ids.clone(),
                                *state,
                                message.expires_at.is_some(),
                            ),
                        );
                }
                StoreOp::DeleteDelivery { client_id, seq } => {
                    if let Some(s) = st.sessions.get_mut(&**client_id) {
                        s.deliveries.remove(seq);
                    }
                }
                StoreOp::PutIncomingQos2 {
                    client_id,
                    packet_id,
                } => {
                    st.sessions
                        .get_mut(&**client_id)
                        .expect("session")
                        .incoming
                        .insert(*packet_id);
                }
                StoreOp::DeleteIncomingQos2 {
                    client_id,
                    packet_id,
                } => {
                    if let Some(s) = st.sessions.get_mut(&**client_id) {
                        s.incoming.remove(packet_id);
                    }
                }
                _ => unreachable!("the generator makes no other op"),
            }
        }
    }

    /// A random operation that makes sense in the current state, as the
    /// core would send it, applied to the model.
    fn random_op(&mut self, rng: &mut Rng) -> StoreOp {
        let op = self.make_op(rng);
        self.apply(std::slice::from_ref(&op));
        op
    }

    fn make_op(&mut self, rng: &mut Rng) -> StoreOp {
        const CLIENTS: [&str; 5] = ["c0", "c1", "c2", "client/with/slashes", "ü-3"];
        const TOPICS: [&str; 4] = ["t/0", "t/1", "a/b/c", "t/ü"];
        const FILTERS: [&str; 4] = ["t/#", "a/+/c", "$share/g/t/1", "#"];
        let sessions: Vec<String> = self.state.sessions.keys().cloned().collect();
        let soon = Instant::now() + Duration::from_secs(3600);
        let kind = if sessions.is_empty() {
            rng.below(3)
        } else {
            rng.below(16)
        };
        let client = |rng: &mut Rng| ByteString::from(rng.pick(&sessions).as_str());
        match kind {
            0 => StoreOp::PutSession {
                client_id: (*rng.pick(&CLIENTS)).into(),
                protocol: *rng.pick(&[
                    ProtocolVersion::V31,
                    ProtocolVersion::V311,
                    ProtocolVersion::V5,
                ]),
                expiry_interval: *rng.pick(&[3600, NEVER_EXPIRES, 86_400]),
            },
            1 => StoreOp::PutRetained {
                message: message(
                    rng.pick::<&str>(&TOPICS),
                    &format!("r{}", rng.below(1000)),
                    *rng.pick(&[QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]),
                    rng.chance(30).then_some(soon),
                ),
            },
            2 => StoreOp::DeleteRetained {
                topic: (*rng.pick(&TOPICS)).into(),
            },
            3 => StoreOp::SessionOffline {
                client_id: client(rng),
                will: rng
                    .chance(50)
                    .then(|| will(rng.chance(70).then_some(rng.below(100) as u32))),
            },
            4 if rng.chance(30) => StoreOp::DeleteSession {
                client_id: client(rng),
            },
            4 | 5 => StoreOp::PutSubscription {
                client_id: client(rng),
                filter: (*rng.pick(&FILTERS)).into(),
                subscription: Subscription {
                    options: SubscriptionOptions {
                        qos: *rng.pick(&[QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]),
                        no_local: rng.chance(50),
                        retain_as_published: rng.chance(50),
                        retain_handling: *rng.pick(&[
                            RetainHandling::SendAtSubscribe,
                            RetainHandling::SendAtSubscribeIfNew,
                            RetainHandling::DoNotSend,
                        ]),
                    },
                    identifier: rng.chance(50).then(|| 1 + rng.below(1000) as u32),
                },
            },
            6 => StoreOp::DeleteSubscription {
                client_id: client(rng),
                filter: (*rng.pick(&FILTERS)).into(),
            },
            7..=10 => {
                let c = client(rng);
                let existing: Vec<u64> = self.state.sessions[&*c]
                    .deliveries
                    .keys()
                    .copied()
                    .collect();
                let seq = if existing.is_empty() || rng.chance(60) {
                    let n = self.next_seq.entry(c.to_string()).or_insert(1);
                    *n += 1 + rng.below(3);
                    *n
                } else {
                    *rng.pick(&existing)
                };
                let qos = *rng.pick(&[QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]);
                let big = rng.chance(5);
                let payload = if big {
                    "x".repeat(2000 + rng.below(3000) as usize)
                } else {
                    format!("m{seq}-{}", rng.below(100))
                };
                StoreOp::PutDelivery {
                    client_id: c,
                    seq,
                    message: message(
                        rng.pick::<&str>(&TOPICS),
                        &payload,
                        qos,
                        rng.chance(20).then_some(soon),
                    ),
                    qos,
                    retain: rng.chance(20),
                    sub_ids: match rng.below(3) {
                        0 => SubIds::None,
                        1 => SubIds::One(1 + rng.below(50) as u32),
                        _ => SubIds::Many(vec![1, 2 + rng.below(50) as u32]),
                    },
                    state: if rng.chance(50) {
                        StoredState::Queued
                    } else {
                        StoredState::InFlight(
                            PacketId::new(1 + rng.below(65_000) as u16).expect("non-zero"),
                            *rng.pick(&[OutState::AwaitAck, OutState::AwaitComp]),
                        )
                    },
                }
            }
            11 | 12 => {
                let c = client(rng);
                let existing: Vec<u64> = self.state.sessions[&*c]
                    .deliveries
                    .keys()
                    .copied()
                    .collect();
                StoreOp::DeleteDelivery {
                    seq: if existing.is_empty() {
                        1
                    } else {
                        *rng.pick(&existing)
                    },
                    client_id: c,
                }
            }
            13 => StoreOp::PutIncomingQos2 {
                client_id: client(rng),
                packet_id: 1 + rng.below(20) as u16,
            },
            14 => StoreOp::DeleteIncomingQos2 {
                client_id: client(rng),
                packet_id: 1 + rng.below(20) as u16,
            },
            _ => StoreOp::PutSession {
                client_id: client(rng),
                protocol: ProtocolVersion::V5,
                expiry_interval: 3600,
            },
        }
    }
}

// ---------------------------------------------------------------- encoding

fn all_ops() -> Vec<StoreOp> {
    let later = Instant::now() + Duration::from_secs(120);
    vec![
        StoreOp::PutRetained {
            message: message("r/t", "hello", QoS::AtLeastOnce, Some(later)),
        },
        StoreOp::DeleteRetained {
            topic: "r/t".into(),
        },
        StoreOp::PutSession {
            client_id: "c".into(),
            protocol: ProtocolVersion::V5,
            expiry_interval: 300,
        },
        StoreOp::SessionOffline {
            client_id: "c".into(),
            will: Some(will(Some(30))),
        },
        StoreOp::SessionOffline {
            client_id: "c".into(),
            will: None,
        },
        StoreOp::DeleteSession {
            client_id: "c".into(),
        },
        StoreOp::PutSubscription {
            client_id: "c".into(),
            filter: "$share/g/a/+".into(),
            subscription: Subscription {
                options: SubscriptionOptions {
                    qos: QoS::ExactlyOnce,
                    no_local: true,
                    retain_as_published: true,
                    retain_handling: RetainHandling::DoNotSend,
                },
                identifier: Some(268_435_455),
            },
        },
        StoreOp::DeleteSubscription {
            client_id: "c".into(),
            filter: "a/#".into(),
        },
        StoreOp::PutDelivery {
            client_id: "c".into(),
            seq: u64::MAX,
            message: message("d/t", "abc", QoS::ExactlyOnce, None),
            qos: QoS::AtLeastOnce,
            retain: true,
            sub_ids: SubIds::Many(vec![1, 99]),
            state: StoredState::InFlight(PacketId::new(65_535).expect("id"), OutState::AwaitComp),
        },
        StoreOp::PutDelivery {
            client_id: "c".into(),
            seq: 1,
            message: message("d/t", "", QoS::AtMostOnce, None),
            qos: QoS::AtMostOnce,
            retain: false,
            sub_ids: SubIds::One(5),
            state: StoredState::Queued,
        },
        StoreOp::DeleteDelivery {
            client_id: "c".into(),
            seq: 7,
        },
        StoreOp::PutIncomingQos2 {
            client_id: "c".into(),
            packet_id: 9,
        },
        StoreOp::DeleteIncomingQos2 {
            client_id: "c".into(),
            packet_id: 9,
        },
    ]
}

#[test]
fn every_op_round_trips() {
    let clock = Clock::now();
    for op in all_ops() {
        let bytes = encode_one(&op, &clock).expect("encode");
        let decoded = decode_op(&bytes, true).expect("decode");
        let expiry_ms = |m: &Message| {
            m.expires_at
                .map(|at| clock.wall_ms() + (at - clock.mono).as_millis() as u64)
        };
        let expected = match &op {
            StoreOp::PutRetained { message } => Op::PutRetained {
                topic: message.topic.clone(),
                message: Some(StoredMessage {
                    message: plain(message),
                    expires_at_ms: expiry_ms(message),
                }),
            },
            StoreOp::DeleteRetained { topic } => Op::DeleteRetained {
                topic: topic.clone(),
            },
            StoreOp::PutSession {
                client_id,
                protocol,
                expiry_interval,
            } => Op::PutSession {
                client_id: client_id.clone(),
                protocol: *protocol,
                expiry_interval: *expiry_interval,
            },
            StoreOp::SessionOffline { client_id, will } => Op::SessionOffline {
                client_id: client_id.clone(),
                at_ms: clock.wall_ms(),
                will: will.clone(),
            },
            StoreOp::DeleteSession { client_id } => Op::DeleteSession {
                client_id: client_id.clone(),
            },
            StoreOp::PutSubscription {
                client_id,
                filter,
                subscription,
            } => Op::PutSubscription {
                client_id: client_id.clone(),
                filter: filter.clone(),
                subscription: *subscription,
            },
            StoreOp::DeleteSubscription { client_id, filter } => Op::DeleteSubscription {
                client_id: client_id.clone(),
                filter: filter.clone(),
            },
            StoreOp::PutDelivery {
                client_id,
                seq,
                message,
                qos,
                retain,
                sub_ids,
                state,
            } => Op::PutDelivery {
                client_id: client_id.clone(),
                seq: *seq,
                qos: *qos,
                retain: *retain,
                sub_ids: sub_ids.clone(),
                state: *state,
                message: Some(StoredMessage {
                    message: plain(message),
                    expires_at_ms: expiry_ms(message),
                }),
            },
            StoreOp::DeleteDelivery { client_id, seq } => Op::DeleteDelivery {
                client_id: client_id.clone(),
                seq: *seq,
            },
            StoreOp::PutIncomingQos2 {
                client_id,
                packet_id,
            } => Op::PutIncomingQos2 {
                client_id: client_id.clone(),
                packet_id: *packet_id,
            },
            StoreOp::DeleteIncomingQos2 {
                client_id,
                packet_id,
            } => Op::DeleteIncomingQos2 {
                client_id: client_id.clone(),
                packet_id: *packet_id,
            },
            _ => unreachable!(),
        };
        assert_eq!(decoded, expected, "{op:?}");
        // Every proper prefix is refused, never a panic.
        for cut in 0..bytes.len() {
            assert!(
                decode_op(&bytes[..cut], true).is_err(),
                "prefix {cut} of {op:?}"
            );
        }
        // Trailing bytes are refused too.
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert!(decode_op(&longer, true).is_err());
    }
}

#[test]
fn garbage_never_panics_the_decoder() {
    let mut rng = Rng::new(1);
    let clock = Clock::now();
    let encoded: Vec<Bytes> = all_ops()
        .iter()
        .map(|op| encode_one(op, &clock).expect("encode"))
        .collect();
    for _ in 0..20_000 {
        let mut b = rng.pick(&encoded).to_vec();
        for _ in 0..1 + rng.below(4) {
            let i = rng.below(b.len() as u64) as usize;
            b[i] = rng.next() as u8;
        }
        let _ = decode_op(&b, true);
        let _ = decode_op(&b, false);
    }
}

#[test]
fn header_versions() {
    let h = format::header(123);
    assert_eq!(format::check_header(&h), format::Header::Valid);
    assert_eq!(
        format::check_header(&format::header_with_version(format::FORMAT_VERSION + 1, 1)),
        format::Header::Future(format::FORMAT_VERSION + 1)
    );
    assert!(matches!(
        format::check_header(&format::header_with_version(0, 1)),
        format::Header::Invalid(_)
    ));
    let mut bad = h;
    bad[17] ^= 1;
    assert!(matches!(
        format::check_header(&bad),
        format::Header::Invalid(_)
    ));
    assert_eq!(format::check_header(&h[..5]), format::Header::Unwritten);
    assert_eq!(format::check_header(&[]), format::Header::Unwritten);
    assert!(matches!(
        format::check_header(b"SQLite"),
        format::Header::Invalid(_)
    ));
}

// ---------------------------------------------------------------- behaviour

#[test]
fn reopen_gives_back_what_was_applied_and_twice_the_same() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut model = Model::default();
    let mut rng = Rng::new(42);
    {
        let (mut store, rec) = tuned(dir.path(), 1 << 30);
        assert!(rec.warnings.is_empty());
        for _ in 0..200 {
            let ops: Vec<StoreOp> = (0..1 + rng.below(5))
                .map(|_| model.random_op(&mut rng))
                .collect();
            store.apply(&ops).expect("apply");
            store.sync().expect("sync");
        }
    }
    let (_, first) = tuned(dir.path(), 1 << 30);
    assert!(first.warnings.is_empty(), "{:?}", first.warnings);
    assert_eq!(canon(&first.state), model.state);
    let (_, second) = tuned(dir.path(), 1 << 30);
    assert_eq!(canon(&second.state), model.state);
    assert!(first.stats.ops > 0 && first.stats.records > 0);
}

#[test]
fn checkpoint_keeps_state_and_shrinks_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut model = Model::default();
    let mut rng = Rng::new(7);
    let (mut store, _) = tuned(dir.path(), 1 << 30);
    for _ in 0..300 {
        let ops: Vec<StoreOp> = (0..1 + rng.below(5))
            .map(|_| model.random_op(&mut rng))
            .collect();
        store.apply(&ops).expect("apply");
    }
    store.sync().expect("sync");
    let before = store.len();
    store.checkpoint().expect("checkpoint");
    assert!(store.len() < before, "{} < {before}", store.len());
    assert_eq!(
        store.len(),
        fs::metadata(store_path(dir.path())).expect("meta").len()
    );
    // Appends after a checkpoint go to the new file.
    let ops = vec![model.random_op(&mut rng)];
    store.apply(&ops).expect("apply");
    drop(store);
    let (_, rec) = tuned(dir.path(), 1 << 30);
    assert!(rec.warnings.is_empty(), "{:?}", rec.warnings);
    assert_eq!(canon(&rec.state), model.state);
}

#[test]
fn the_journal_compacts_itself_when_it_grows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut store, _) = tuned(dir.path(), 16 << 10);
    let put = StoreOp::PutSession {
        client_id: "c".into(),
        protocol: ProtocolVersion::V5,
        expiry_interval: 60,
    };
    store.apply(&[put]).expect("apply");
    for seq in 0..2000u64 {
        let ops = [
            StoreOp::PutDelivery {
                client_id: "c".into(),
                seq,
                message: message(
                    "t",
                    "0123456789012345678901234567890123456789",
                    QoS::AtLeastOnce,
                    None,
                ),
                qos: QoS::AtLeastOnce,
                retain: false,
                sub_ids: SubIds::None,
                state: StoredState::Queued,
            },
            StoreOp::DeleteDelivery {
                client_id: "c".into(),
                seq: seq.wrapping_sub(1),
            },
        ];
        store.apply(&ops).expect("apply");
        store.sync().expect("sync");
        assert!(
            store.len() < 64 << 10,
            "compaction bounds the file: {}",
            store.len()
        );
    }
    drop(store);
    let (_, rec) = tuned(dir.path(), 16 << 10);
    assert_eq!(rec.state.sessions[0].deliveries.len(), 1);
    assert_eq!(rec.state.sessions[0].deliveries[0].seq, 1999);
}

#[test]
fn expiry_is_enforced_at_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = Instant::now();
    let past = now.checked_sub(Duration::from_secs(5));
    {
        let (mut store, _) = tuned(dir.path(), 1 << 30);
        let mut ops = vec![
            StoreOp::PutRetained {
                message: message(
                    "keep",
                    "k",
                    QoS::AtMostOnce,
                    Some(now + Duration::from_secs(100)),
                ),
            },
            StoreOp::PutRetained {
                message: message("forever", "f", QoS::AtMostOnce, None),
            },
        ];
        if let Some(past) = past {
            ops.push(StoreOp::PutRetained {
                message: message("gone", "g", QoS::AtMostOnce, Some(past)),
            });
        }
        for (id, expiry, will_delay, offline) in [
            ("expired", 0, None, true),
            ("expired-with-will", 0, Some(30), true),
            ("offline", 3600, Some(30), true),
            ("online", 0, None, false),
            ("back", 3600, Some(30), true),
        ] {
            ops.push(StoreOp::PutSession {
                client_id: id.into(),
                protocol: ProtocolVersion::V5,
                expiry_interval: expiry,
            });
            ops.push(StoreOp::PutDelivery {
                client_id: id.into(),
                seq: 1,
                message: message(
                    "t",
                    "x",
                    QoS::AtLeastOnce,
                    Some(now + Duration::from_secs(50)),
                ),
                qos: QoS::AtLeastOnce,
                retain: false,
                sub_ids: SubIds::None,
                state: StoredState::Queued,
            });
            if offline {
                ops.push(StoreOp::SessionOffline {
                    client_id: id.into(),
                    will: will_delay.map(|d| will(Some(d))),
                });
            }
        }
        // Reconnected: online again, no will pending.
        ops.push(StoreOp::PutSession {
            client_id: "back".into(),
            protocol: ProtocolVersion::V5,
            expiry_interval: 3600,
        });
        store.apply(&ops).expect("apply");
        store.sync().expect("sync");
    }
    let (_, rec) = tuned(dir.path(), 1 << 30);
    let topics: BTreeSet<String> = rec
        .state
        .retained
        .iter()
        .map(|(m, _)| m.topic.to_string())
        .collect();
    assert_eq!(
        topics,
        ["forever", "keep"].into_iter().map(String::from).collect()
    );
    let keep = rec
        .state
        .retained
        .iter()
        .find(|(m, _)| &*m.topic == "keep")
        .expect("keep");
    let left = keep.1.expect("expiry");
    assert!(
        left <= Duration::from_secs(100) && left > Duration::from_secs(90),
        "{left:?}"
    );

    let sessions: BTreeMap<String, _> = rec
        .state
        .sessions
        .iter()
        .map(|s| (s.client_id.to_string(), s))
        .collect();
    assert_eq!(
        sessions.keys().cloned().collect::<Vec<_>>(),
        ["back", "expired-with-will", "offline", "online"]
    );
    let ew = sessions["expired-with-will"];
    assert!(ew.pending_will.is_some(), "its will must still go out");
    assert!(ew.deliveries.is_empty());
    let off = sessions["offline"];
    let (w, left) = off.pending_will.as_ref().expect("will");
    assert_eq!(w, &will(Some(30)));
    assert!(*left <= Duration::from_secs(30) && *left > Duration::from_secs(20));
    assert!(off.offline_for < Duration::from_secs(10));
    let d = &off.deliveries[0];
    let e = d.expires_in.expect("expiry");
    assert!(
        e <= Duration::from_secs(50) && e > Duration::from_secs(40),
        "{e:?}"
    );
    assert!(sessions["back"].pending_will.is_none());
    assert_eq!(sessions["back"].offline_for, Duration::ZERO);
    assert_eq!(sessions["online"].offline_for, Duration::ZERO);
    // What was dropped at load is gone from the store as well.
    drop(rec);
    let (_, again) = tuned(dir.path(), 1 << 30);
    assert!(again.warnings.is_empty(), "{:?}", again.warnings);
    assert!(again
        .state
        .sessions
        .iter()
        .all(|s| &*s.client_id != "expired"));
}

#[test]
fn a_store_from_a_future_version_is_set_aside() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = store_path(dir.path());
    let mut bytes = format::header_with_version(format::FORMAT_VERSION + 1, 0).to_vec();
    bytes.extend_from_slice(b"records of a format we cannot read");
    fs::write(&path, &bytes).expect("write");
    let (mut store, rec) = tuned(dir.path(), 1 << 30);
    assert_eq!(rec.warnings.len(), 1, "{:?}", rec.warnings);
    assert!(
        rec.warnings[0].contains("newer Midge"),
        "{}",
        rec.warnings[0]
    );
    assert!(rec.state.sessions.is_empty() && rec.state.retained.is_empty());
    let aside = aside_files(dir.path());
    assert_eq!(aside.len(), 1);
    assert_eq!(
        fs::read(&aside[0]).expect("read"),
        bytes,
        "set aside untouched"
    );
    // The new store works.
    store
        .apply(&[StoreOp::DeleteRetained { topic: "x".into() }])
        .expect("apply");
    drop(store);
    let (_, rec) = tuned(dir.path(), 1 << 30);
    assert!(rec.warnings.is_empty());
}

#[test]
fn foreign_and_half_created_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = store_path(dir.path());
    fs::write(&path, b"this is not a store at all, just some text").expect("write");
    let (_, rec) = tuned(dir.path(), 1 << 30);
    assert!(
        rec.warnings[0].contains("not readable"),
        "{:?}",
        rec.warnings
    );
    assert_eq!(aside_files(dir.path()).len(), 1);

    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(store_path(dir.path()), &format::header(0)[..10]).expect("write");
    let (_, rec) = tuned(dir.path(), 1 << 30);
    assert_eq!(rec.warnings.len(), 1);
    assert!(aside_files(dir.path()).is_empty(), "nothing worth keeping");

    // A leftover checkpoint file is removed; the store stays.
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(dir.path().join("midge.db.tmp"), b"half").expect("write");
    let (_, rec) = tuned(dir.path(), 1 << 30);
    assert!(rec.warnings[0].contains("unfinished checkpoint"));
    assert!(!dir.path().join("midge.db.tmp").exists());
}

#[test]
fn open_fails_only_when_the_directory_is_unusable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("a-file");
    fs::write(&file, b"x").expect("write");
    let Err(err) = crate::open(&StoreOptions::new(file.join("sub"))) else {
        panic!("opened a store under a file");
    };
    assert!(err.to_string().contains("a-file"), "{err}");
}

#[test]
fn every_policy_survives_a_process_crash() {
    for policy in [
        SyncPolicy::Always,
        SyncPolicy::Interval(Duration::from_secs(3600)),
        SyncPolicy::Never,
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut options = StoreOptions::new(dir.path());
        options.sync = policy;
        let mut model = Model::default();
        let mut rng = Rng::new(3);
        {
            let (mut store, _) = crate::open(&options).expect("open");
            for _ in 0..50 {
                let ops: Vec<StoreOp> = (0..3).map(|_| model.random_op(&mut rng)).collect();
                store.apply(&ops).expect("apply");
                store.sync().expect("sync");
            }
            // kill -9: the store is dropped with nothing more done.
        }
        let (_, rec) = crate::open(&options).expect("open");
        assert_eq!(canon(&rec.state), model.state, "{policy:?}");
    }
}

#[test]
fn the_store_says_which_deliveries_it_holds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut store, _) = tuned(dir.path(), 1 << 30);
    let put = |seq: u64| StoreOp::PutDelivery {
        client_id: "sub".into(),
        seq,
        message: message("t", "payload", QoS::AtLeastOnce, None),
        qos: QoS::AtLeastOnce,
        retain: false,
        sub_ids: SubIds::None,
        state: StoredState::Queued,
    };
    let session = StoreOp::PutSession {
        client_id: "sub".into(),
        protocol: ProtocolVersion::V311,
        expiry_interval: NEVER_EXPIRES,
    };
    store.apply(&[session, put(1), put(2)]).expect("apply");
    let deleted = StoreOp::DeleteDelivery {
        client_id: "sub".into(),
        seq: 1,
    };
    store.apply(&[deleted]).expect("apply");
    assert!(!store.holds_delivery("sub", 1));
    assert!(store.holds_delivery("sub", 2));
    assert!(!store.holds_delivery("other", 2));
    // And after a restart, from what was recovered.
    store.sync().expect("sync");
    drop(store);
    let (store, _) = tuned(dir.path(), 1 << 30);
    assert!(store.holds_delivery("sub", 2) && !store.holds_delivery("sub", 1));
}

// ---------------------------------------------------------------- crashes

#[derive(Debug, Clone, Copy)]
enum Crash {
    /// The process dies after writing, before syncing.
    Process,
    /// Power loss cuts the file somewhere after the last sync.
    TruncateUnsynced,
    /// Power loss leaves garbage in the unsynced tail.
    GarbleUnsynced,
    /// The disk loses or corrupts synced data.
    TruncateSynced,
    GarbleSynced,
}

/// One random run: groups applied to store and model, syncs and
/// checkpoints at random, then a crash, then recovery checked.
fn crash_run(seed: u64, crash: Crash) {
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = store_path(dir.path());
    let compact_min = if rng.chance(50) { 2048 } else { 1 << 30 };
    let (mut store, _) = tuned(dir.path(), compact_min);
    let mut model = Model::default();
    // Model states after each group, and the file offset where each group
    // ends in the current file (since the last checkpoint).
    let mut states = vec![model.state.clone()];
    let mut bounds: Vec<(u64, usize)> = vec![(store.len(), 0)];
    let mut synced_group = 0usize;
    let mut checkpointed = false;
    let groups = 5 + rng.below(40) as usize;
    for g in 1..=groups {
        let ops: Vec<StoreOp> = (0..1 + rng.below(8))
            .map(|_| model.random_op(&mut rng))
            .collect();
        store.apply(&ops).expect("apply");
        states.push(model.state.clone());
        bounds.push((store.len(), g));
        if rng.chance(40) {
            let before = store.len();
            store.sync().expect("sync");
            synced_group = g;
            if store.len() != before {
                // Compacted on its own: the file starts afresh.
                bounds = vec![(store.len(), g)];
                checkpointed = true;
            }
        }
        if rng.chance(5) {
            store.checkpoint().expect("checkpoint");
            synced_group = g;
            bounds = vec![(store.len(), g)];
            checkpointed = true;
        }
    }
    let synced_len = store.synced_len();
    let len = store.len();
    drop(store);
    assert_eq!(fs::metadata(&path).expect("meta").len(), len);
    let group_at = |offset: u64| -> usize {
        bounds
            .iter()
            .rev()
            .find(|(end, _)| *end <= offset)
            .map(|(_, g)| *g)
            .expect("a boundary before")
    };
    let state_at = |offset: u64| -> &Canon { &states[group_at(offset)] };

    let mut bytes = fs::read(&path).expect("read");
    let (expected, must_warn): (Option<&Canon>, bool) = match crash {
        Crash::Process => (Some(&states[groups]), false),
        Crash::TruncateUnsynced => {
            let cut = synced_len + rng.below(len - synced_len + 1);
            bytes.truncate(cut as usize);
            assert!(group_at(cut) >= synced_group, "a sync covers its groups");
            (Some(state_at(cut)), false)
        }
        Crash::GarbleUnsynced => {
            if len == synced_len {
                return;
            }
            let at = synced_len + rng.below(len - synced_len);
            garble(&mut rng, &mut bytes, at as usize);
            assert!(group_at(at) >= synced_group, "a sync covers its groups");
            (Some(state_at(at)), true)
        }
        Crash::TruncateSynced => {
            let cut = rng.below(synced_len) as usize;
            // Record ends (of groups, and of checkpoint chunks): a cut there
            // leaves a well-formed shorter file, which nothing can tell apart.
            let mut ends = vec![format::HEADER_LEN];
            format::scan(&bytes, |payload| {
                ends.push(payload.end);
                Ok(())
            });
            let at_boundary = ends.contains(&cut);
            bytes.truncate(cut);
            let exact = (!checkpointed && cut >= format::HEADER_LEN).then(|| state_at(cut as u64));
            (exact, cut >= format::HEADER_LEN && !at_boundary)
        }
        Crash::GarbleSynced => {
            let at = rng.below(synced_len) as usize;
            garble(&mut rng, &mut bytes, at);
            let exact = (!checkpointed && at >= format::HEADER_LEN).then(|| state_at(at as u64));
            (exact, true)
        }
    };
    fs::write(&path, &bytes).expect("write");

    let (mut store, rec) = tuned(dir.path(), compact_min);
    let got = canon(&rec.state);
    if let Some(expected) = expected {
        assert_eq!(&got, expected, "seed {seed} {crash:?}: {:?}", rec.warnings);
    }
    // Never anything the model did not have at some point.
    assert!(
        expected.is_some() || states.contains(&got) || checkpointed || got == Canon::default(),
        "seed {seed} {crash:?}"
    );
    if must_warn {
        assert!(
            !rec.warnings.is_empty(),
            "seed {seed} {crash:?}: damage not reported"
        );
    }
    let discarded = rec.stats.bytes_discarded as usize;
    let tail = &bytes[bytes.len() - discarded.min(bytes.len())..];
    assert_eq!(
        tail.iter().any(|b| *b != 0),
        !aside_files(dir.path()).is_empty(),
        "seed {seed} {crash:?}: damaged bytes are kept aside, and only then: {:?}",
        rec.warnings
    );
    if matches!(crash, Crash::GarbleSynced | Crash::GarbleUnsynced) {
        assert!(!aside_files(dir.path()).is_empty(), "seed {seed} {crash:?}");
    }

    // The recovered store is clean and keeps working.
    let extra = vec![StoreOp::DeleteRetained {
        topic: "t/0".into(),
    }];
    store.apply(&extra).expect("apply");
    store.sync().expect("sync");
    drop(store);
    let mut after = got.clone();
    after.retained.remove("t/0");
    let (_, again) = tuned(dir.path(), compact_min);
    assert!(
        again.warnings.is_empty(),
        "seed {seed} {crash:?}: {:?}",
        again.warnings
    );
    assert_eq!(canon(&again.state), after, "seed {seed} {crash:?}: reopen");
}

/// Overwrites up to 4 bytes from `at` (a burst CRC-32C always detects).
fn garble(rng: &mut Rng, bytes: &mut [u8], at: usize) {
    let n = (1 + rng.below(4) as usize).min(bytes.len() - at);
    for b in &mut bytes[at..at + n] {
        *b ^= 1 + rng.below(255) as u8;
    }
}

fn seeds() -> u64 {
    std::env::var("MIDGE_STORE_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(150)
}

#[test]
fn crash_process_after_write() {
    for seed in 0..seeds() {
        crash_run(seed, Crash::Process);
    }
}

#[test]
fn crash_power_loss_truncates_unsynced_tail() {
    for seed in 0..seeds() {
        crash_run(seed, Crash::TruncateUnsynced);
    }
}

#[test]
fn crash_power_loss_garbles_unsynced_tail() {
    for seed in 0..seeds() {
        crash_run(seed, Crash::GarbleUnsynced);
    }
}

#[test]
fn corruption_truncates_synced_data() {
    for seed in 0..seeds() {
        crash_run(seed, Crash::TruncateSynced);
    }
}

#[test]
fn corruption_garbles_synced_data() {
    for seed in 0..seeds() {
        crash_run(seed, Crash::GarbleSynced);
    }
}

/// Recovery time for 1M queued messages (run in release:
/// `cargo test --release -p midge-store -- --ignored --nocapture recovery_time`).
#[test]
#[ignore]
fn recovery_time_for_a_million_queued_messages() {
    let dir =
        tempfile::tempdir_in(std::env::var("MIDGE_STORE_BENCH_DIR").unwrap_or_else(|_| ".".into()))
            .expect("tempdir");
    let mut options = StoreOptions::new(dir.path());
    options.sync = SyncPolicy::Never;
    const SESSIONS: u64 = 1000;
    const MESSAGES: u64 = 1_000_000;
    let write = Instant::now();
    {
        let (mut store, _) = crate::open(&options).expect("open");
        let sessions: Vec<StoreOp> = (0..SESSIONS)
            .map(|i| StoreOp::PutSession {
                client_id: format!("client-{i}").into(),
                protocol: ProtocolVersion::V311,
                expiry_interval: NEVER_EXPIRES,
            })
            .collect();
        store.apply(&sessions).expect("apply");
        let msg = message(
            "sensors/building-7/floor-3/temp",
            "{\"t\":21.5,\"h\":40}",
            QoS::AtLeastOnce,
            None,
        );
        let mut group = Vec::with_capacity(256);
        for n in 0..MESSAGES {
            group.push(StoreOp::PutDelivery {
                client_id: format!("client-{}", n % SESSIONS).into(),
                seq: n / SESSIONS + 1,
                message: msg.clone(),
                qos: QoS::AtLeastOnce,
                retain: false,
                sub_ids: SubIds::None,
                state: StoredState::Queued,
            });
            if group.len() == 256 {
                store.apply(&group).expect("apply");
                store.sync().expect("sync");
                group.clear();
            }
        }
        store.apply(&group).expect("apply");
    }
    println!("wrote {MESSAGES} messages in {:?}", write.elapsed());
    for round in 0..3 {
        // Round 0 replays the journal as written (3,907 group commits), the
        // later rounds the checkpoint round 0 ends with.
        let size = fs::metadata(store_path(dir.path())).expect("meta").len();
        let t = Instant::now();
        let (mut store, rec) = crate::open(&options).expect("open");
        let total = t.elapsed();
        assert_eq!(rec.stats.deliveries as u64, MESSAGES);
        assert!(rec.warnings.is_empty());
        println!(
            "recovery {round}: {:?} from {} MiB ({} records, {} ops)",
            total,
            size >> 20,
            rec.stats.records,
            rec.stats.ops
        );
        if round == 0 {
            let t = Instant::now();
            store.checkpoint().expect("checkpoint");
            println!("checkpoint of 1M messages: {:?}", t.elapsed());
        }
        drop(store);
    }
}

#[test]
fn a_store_open_elsewhere_is_refused_until_it_is_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = StoreOptions::new(dir.path());
    let (first, _) = crate::open(&options).expect("open");
    match crate::open(&options) {
        Err(e @ crate::StoreError::Locked { .. }) => {
            let text = e.to_string();
            assert!(text.contains("midge.db.lock"), "{text}");
            assert!(text.contains("another process"), "{text}");
        }
        other => panic!(
            "a second opener must be refused, got {:?}",
            other.map(|_| ())
        ),
    }
    drop(first);
    crate::open(&options).expect("free again once the first is closed");
}
