//! Replays every input under `fuzz/regressions/core_sequence/` (and the seed
//! corpus `fuzz/corpus/core_sequence/`) through the driver of the
//! `core_sequence` fuzz target, which is this file's [`driver`] module: the
//! fuzz target includes this file with `#[path]`, so both run the same code.
//!
//! A regression that still fails because its bug is open is listed in
//! [`KNOWN_OPEN`] with the reason; remove the line once the core is fixed.
//! Any other failing input fails the test.
#![allow(dead_code)]

/// Regressions of bugs not fixed yet: file name, and what goes wrong.
/// (Empty: the six found so far, named in the files, were fixed in 033fb61.)
const KNOWN_OPEN: &[(&str, &str)] = &[];

#[cfg(test)]
mod replay {
    use super::{driver, KNOWN_OPEN};
    use std::path::{Path, PathBuf};

    fn inputs(dir: &str) -> Vec<PathBuf> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fuzz")
            .join(dir);
        let mut out: Vec<PathBuf> = std::fs::read_dir(&root)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        out.retain(|p| {
            p.is_file()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        });
        out.sort();
        out
    }

    fn replay(dir: &str, skip: &[(&str, &str)]) {
        let mut failed = Vec::new();
        for path in inputs(dir) {
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            let data = std::fs::read(&path).expect("read input");
            let known = skip.iter().find(|(n, _)| *n == name);
            let result = std::panic::catch_unwind(|| driver::run(&data));
            match (result.is_err(), known) {
                (true, None) => failed.push(name),
                (true, Some((_, why))) => eprintln!("{name}: still failing (known open: {why})"),
                (false, Some(_)) => eprintln!(
                    "{name}: passes now; remove it from KNOWN_OPEN in tests/fuzz_regressions.rs"
                ),
                (false, None) => {}
            }
        }
        assert!(
            failed.is_empty(),
            "failing inputs in fuzz/{dir}: {failed:?}"
        );
    }

    #[test]
    fn regressions_replay() {
        replay("regressions/core_sequence", KNOWN_OPEN);
    }

    #[test]
    fn seed_corpus_replays() {
        replay("corpus/core_sequence", &[]);
    }

    /// Replays one input, with a trace of every step:
    /// `CORE_SEQUENCE_INPUT=path CORE_SEQUENCE_TRACE=1 cargo test -p midge-core
    /// --test fuzz_regressions -- --ignored --nocapture replay_one`.
    #[test]
    #[ignore]
    fn replay_one() {
        let path = std::env::var("CORE_SEQUENCE_INPUT").expect("CORE_SEQUENCE_INPUT=path");
        driver::run(&std::fs::read(path).expect("read input"));
    }

    /// Writes the seed corpus: `cargo test -p midge-core --test
    /// fuzz_regressions -- --ignored write_core_sequence_corpus`.
    #[test]
    #[ignore]
    fn write_core_sequence_corpus() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/core_sequence");
        std::fs::create_dir_all(&dir).unwrap();
        for (name, data) in driver::seeds() {
            std::fs::write(dir.join(name), data).unwrap();
        }
    }
}

/// The `core_sequence` driver: reads the fuzz input as a broker
/// configuration and a sequence of actions, plays them against a `Broker`,
/// and panics when an invariant breaks.
///
/// Input format: 4 configuration bytes, then actions. Each action starts
/// with a byte whose value modulo [`driver::ACTIONS`] picks it; most then
/// read a connection slot (0..6) and a few bytes of parameters. Reading past
/// the end gives zeros, so every input is valid.
pub mod driver {
    use bytes::{Bytes, BytesMut};
    use midge_codec::{
        decode_packet, encode_packet, Auth, Connect, DecodeError, Disconnect, LastWill, Packet,
        PacketId, Properties, ProtocolVersion, PubResponse, Publish, QoS, ReasonCode,
        RetainHandling, Subscribe, SubscriptionOptions, Unsubscribe,
    };
    use midge_core::session::{SubIds, Subscription};
    use midge_core::{
        AccessControl, AuthExchange, AuthMethod, AuthStep, Broker, BrokerConfig, ConnId, Message,
        RestoredDelivery, RestoredSession, RestoredState, StoreOp, StoredState, Transmit,
    };
    use std::collections::{BTreeMap, HashMap, HashSet};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    pub const ACTIONS: u8 = 22;
    const SLOTS: usize = 6;
    /// Actions per input, so one input cannot run for long.
    const MAX_ACTIONS: usize = 400;

    const CLIENT_IDS: &[&str] = &["c0", "c1", "c2", "c3", ""];
    const TOPICS: &[&str] = &["a/b", "a", "a/c", "$SYS/x", "b/a/b", "x", "a/b/c", ""];
    const FILTERS: &[&str] = &[
        "#",
        "a/+",
        "a/b",
        "$share/g/a/#",
        "$share/h/#",
        "+/+",
        "$SYS/#",
        "a/#",
        "x",
        "+",
        "$share/g/x",
        "a/b/c",
    ];

    // ----- input ---------------------------------------------------------

    struct Input<'a> {
        data: &'a [u8],
        pos: usize,
    }

    impl<'a> Input<'a> {
        fn done(&self) -> bool {
            self.pos >= self.data.len()
        }

        fn u8(&mut self) -> u8 {
            let b = self.data.get(self.pos).copied().unwrap_or(0);
            self.pos += 1;
            b
        }

        fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
            xs[usize::from(self.u8()) % xs.len()]
        }

        fn bytes(&mut self, n: usize) -> &'a [u8] {
            let start = self.pos.min(self.data.len());
            let end = (self.pos + n).min(self.data.len());
            self.pos += n;
            &self.data[start..end]
        }
    }

    fn bit(b: u8, i: u8) -> bool {
        b >> i & 1 == 1
    }

    fn config(inp: &mut Input) -> (BrokerConfig, bool) {
        let c0 = inp.u8();
        let c1 = inp.u8();
        let c2 = inp.u8();
        let c3 = inp.u8();
        let config = BrokerConfig {
            max_inflight_messages: 1 + u16::from(c0 & 3) % 3,
            max_queued_messages: u32::from(c0 >> 2 & 7) % 6,
            persistence: bit(c0, 5),
            queue_qos0_messages: bit(c0, 6),
            retain_available: !bit(c0, 7),
            topic_alias_maximum: u16::from(c1 & 3),
            max_inflight_bytes: [0, 0, 4, 16, 64, 0, 0, 1][usize::from(c1 >> 2 & 7)],
            maximum_qos: [
                QoS::ExactlyOnce,
                QoS::ExactlyOnce,
                QoS::AtLeastOnce,
                QoS::AtMostOnce,
            ][usize::from(c1 >> 5 & 3)],
            allow_zero_length_clientid: !bit(c1, 7),
            message_size_limit: [0, 0, 0, 16][usize::from(c2 & 3)],
            max_queued_bytes: [0, 0, 10, 40][usize::from(c2 >> 2 & 3)],
            max_keepalive: [65535, 65535, 10, 100][usize::from(c2 >> 4 & 3)],
            connect_timeout: (!bit(c2, 6)).then(|| Duration::from_secs(10)),
            maximum_packet_size: if bit(c2, 7) { 200 } else { 0 },
            id_seed: u64::from(c3),
            response_information: bit(c3, 0).then(|| "resp/".to_owned()),
            ..BrokerConfig::default()
        };
        (config, bit(c3, 1))
    }

    // ----- authentication and access control -------------------------------

    /// Method "m": data "ok" succeeds, "more" (or none, to begin) continues,
    /// anything else fails.
    struct TestAuth;
    struct TestExchange;

    fn auth_step(data: Option<&[u8]>, begin: bool) -> AuthStep {
        match data {
            Some(b"ok") => AuthStep::Success {
                data: Some(Bytes::from_static(b"s")),
            },
            Some(b"more") => AuthStep::Continue {
                data: Some(Bytes::from_static(b"c")),
            },
            None if begin => AuthStep::Continue { data: None },
            _ => AuthStep::Fail,
        }
    }

    impl AuthMethod for TestAuth {
        fn name(&self) -> &str {
            "m"
        }
        fn begin(
            &self,
            _client_id: &str,
            _username: Option<&str>,
            data: Option<&[u8]>,
        ) -> (AuthStep, Box<dyn AuthExchange>) {
            (auth_step(data, true), Box::new(TestExchange))
        }
    }

    impl AuthExchange for TestExchange {
        fn step(&mut self, data: Option<&[u8]>) -> AuthStep {
            auth_step(data, false)
        }
    }

    /// User "u" needs password "p"; nobody publishes to `x`; `a/c` is not
    /// readable.
    struct TestAccess;

    impl AccessControl for TestAccess {
        fn checks_passwords(&self) -> bool {
            true
        }
        fn authenticate(&self, username: &str, password: Option<&[u8]>) -> bool {
            username == "u" && password == Some(b"p")
        }
        fn has_acl(&self) -> bool {
            true
        }
        fn can_publish(&self, _: &str, _: Option<&str>, topic: &str) -> bool {
            topic != "x"
        }
        fn can_read(&self, _: &str, _: Option<&str>, topic: &str) -> bool {
            topic != "a/c"
        }
        fn can_subscribe(&self, _: &str, _: Option<&str>, filter: &str) -> bool {
            filter != "a/c"
        }
    }

    // ----- store model -----------------------------------------------------

    /// The smallest store honouring the operations (as `tests_persist.rs`'s
    /// model), checking that each operation names a session it holds.
    #[derive(Default)]
    struct Model {
        retained: BTreeMap<String, Message>,
        sessions: BTreeMap<String, ModelSession>,
    }

    #[derive(Default)]
    struct ModelSession {
        protocol: Option<ProtocolVersion>,
        expiry: u32,
        offline_since: Option<Instant>,
        pending_will: Option<(LastWill, Instant)>,
        subs: BTreeMap<String, Subscription>,
        deliveries: BTreeMap<u64, (Message, QoS, bool, SubIds, StoredState)>,
        incoming: Vec<u16>,
    }

    impl Model {
        fn session<'m>(&'m mut self, id: &str, op: &str) -> &'m mut ModelSession {
            match self.sessions.get_mut(id) {
                Some(s) => s,
                None => {
                    panic!("invariant: store op {op} for session {id:?} the store does not hold")
                }
            }
        }

        fn apply(&mut self, ops: Vec<StoreOp>, now: Instant) {
            for op in ops {
                match op {
                    StoreOp::PutRetained { message } => {
                        assert!(
                            !message.topic.starts_with("$SYS/"),
                            "invariant: $SYS retained message stored: {:?}",
                            message.topic
                        );
                        assert!(
                            !message.payload.is_empty(),
                            "invariant: empty retained stored"
                        );
                        self.retained
                            .insert(message.topic.to_string(), (*message).clone());
                    }
                    StoreOp::DeleteRetained { topic } => {
                        self.retained.remove(&*topic);
                    }
                    StoreOp::PutSession {
                        client_id,
                        protocol,
                        expiry_interval,
                    } => {
                        assert!(
                            expiry_interval > 0,
                            "invariant: PutSession for {client_id:?} with expiry 0"
                        );
                        let s = self.sessions.entry(client_id.to_string()).or_default();
                        s.protocol = Some(protocol);
                        s.expiry = expiry_interval;
                        s.offline_since = None;
                        s.pending_will = None;
                    }
                    StoreOp::SessionOffline { client_id, will } => {
                        let s = self.session(&client_id, "SessionOffline");
                        s.offline_since = Some(now);
                        s.pending_will = will.map(|w| {
                            let delay = w.properties.will_delay_interval.unwrap_or(0);
                            (w, now + Duration::from_secs(u64::from(delay)))
                        });
                    }
                    StoreOp::DeleteSession { client_id } => {
                        self.session(&client_id, "DeleteSession");
                        self.sessions.remove(&*client_id);
                    }
                    StoreOp::PutSubscription {
                        client_id,
                        filter,
                        subscription,
                    } => {
                        self.session(&client_id, "PutSubscription")
                            .subs
                            .insert(filter.to_string(), subscription);
                    }
                    StoreOp::DeleteSubscription { client_id, filter } => {
                        self.session(&client_id, "DeleteSubscription")
                            .subs
                            .remove(&*filter);
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
                        assert!(seq != 0, "invariant: PutDelivery with seq 0");
                        self.session(&client_id, "PutDelivery")
                            .deliveries
                            .insert(seq, ((*message).clone(), qos, retain, sub_ids, state));
                    }
                    StoreOp::DeleteDelivery { client_id, seq } => {
                        self.session(&client_id, "DeleteDelivery")
                            .deliveries
                            .remove(&seq);
                    }
                    StoreOp::PutIncomingQos2 {
                        client_id,
                        packet_id,
                    } => {
                        let s = self.session(&client_id, "PutIncomingQos2");
                        if !s.incoming.contains(&packet_id) {
                            s.incoming.push(packet_id);
                        }
                    }
                    StoreOp::DeleteIncomingQos2 {
                        client_id,
                        packet_id,
                    } => {
                        self.session(&client_id, "DeleteIncomingQos2")
                            .incoming
                            .retain(|p| *p != packet_id);
                    }
                    _ => {}
                }
            }
            // Stored in-flight copies of one session have distinct packet ids.
            for (id, s) in &self.sessions {
                let mut seen = HashSet::new();
                for (seq, (.., state)) in &s.deliveries {
                    if let StoredState::InFlight(pid, _) = state {
                        assert!(
                            seen.insert(*pid),
                            "invariant: session {id:?} stores packet id {pid} twice in flight (seq {seq})"
                        );
                    }
                }
            }
        }

        fn restored(&self, now: Instant) -> RestoredState {
            let left = |m: &Message| m.expires_at.map(|t| t.saturating_duration_since(now));
            RestoredState {
                retained: self
                    .retained
                    .values()
                    .map(|m| (m.clone(), left(m)))
                    .collect(),
                sessions: self
                    .sessions
                    .iter()
                    .map(|(id, s)| RestoredSession {
                        client_id: id.as_str().into(),
                        protocol: s.protocol.unwrap_or(ProtocolVersion::V311),
                        expiry_interval: s.expiry,
                        offline_for: s
                            .offline_since
                            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t)),
                        pending_will: s
                            .pending_will
                            .as_ref()
                            .map(|(w, at)| (w.clone(), at.saturating_duration_since(now))),
                        subscriptions: s
                            .subs
                            .iter()
                            .map(|(f, sub)| (f.as_str().into(), *sub))
                            .collect(),
                        deliveries: s
                            .deliveries
                            .iter()
                            .map(|(seq, (m, qos, retain, ids, state))| RestoredDelivery {
                                seq: *seq,
                                message: m.clone(),
                                expires_in: left(m),
                                qos: *qos,
                                retain: *retain,
                                sub_ids: ids.clone(),
                                state: *state,
                            })
                            .collect(),
                        incoming_qos2: s.incoming.clone(),
                    })
                    .collect(),
            }
        }
    }

    // ----- the client side of each connection -----------------------------

    /// What a client's CONNECT allowed the server to send it.
    #[derive(Debug, Clone, Copy)]
    struct Limits {
        max_packet: u32,
        alias_max: u16,
        window: usize,
    }

    #[derive(Debug)]
    struct Outstanding {
        id: u16,
        qos: QoS,
        /// PUBREC sent (QoS 2): waiting for our PUBCOMP.
        received: bool,
    }

    struct Slot {
        conn: ConnId,
        /// Bytes sent but not decoded yet (a partial packet).
        buf: BytesMut,
        /// Decoding level: set by the first CONNECT, as the server does.
        version: Option<ProtocolVersion>,
        /// A decoding error stopped reading (the server waits for the close).
        dead: bool,
        /// Set by the first CONNECT handed to the broker.
        limits: Option<Limits>,
        connack_ok: bool,
        outstanding: Vec<Outstanding>,
        aliases: HashMap<u16, String>,
        /// Packet ids of QoS 2 PUBLISH we sent (for PUBREL).
        sent_qos2: Vec<u16>,
    }

    impl Slot {
        fn new(conn: ConnId) -> Self {
            Slot {
                conn,
                buf: BytesMut::new(),
                version: None,
                dead: false,
                limits: None,
                connack_ok: false,
                outstanding: Vec::new(),
                aliases: HashMap::new(),
                sent_qos2: Vec::new(),
            }
        }

        fn protocol(&self) -> ProtocolVersion {
            self.version.unwrap_or(ProtocolVersion::V311)
        }
    }

    struct Driver {
        config: BrokerConfig,
        access: bool,
        broker: Broker,
        now: Instant,
        next_conn: u64,
        slots: Vec<Option<Slot>>,
        /// Connections closed by the broker (Transmit.close) or lost.
        finished: HashSet<ConnId>,
        model: Model,
        client_ids: HashSet<String>,
        empty_id_connects: usize,
        max_in: usize,
        /// `CORE_SEQUENCE_TRACE=1`: print every step (to write findings up).
        trace: bool,
        /// Let the behaviours of [`super::KNOWN_OPEN`] bugs pass, so a fuzz
        /// campaign looks for new ones (the regression test never does).
        tolerate: bool,
    }

    fn pid(n: u16) -> PacketId {
        PacketId::new(n.max(1)).expect("non-zero")
    }

    impl Driver {
        fn new(config: BrokerConfig, access: bool) -> Self {
            let now = Instant::now();
            let max_in = match config.maximum_packet_size {
                0 => 1 << 20,
                n => n as usize,
            };
            let broker = Self::broker(&config, access);
            Driver {
                config,
                access,
                broker,
                now,
                next_conn: 1,
                slots: (0..SLOTS).map(|_| None).collect(),
                finished: HashSet::new(),
                model: Model::default(),
                client_ids: HashSet::new(),
                empty_id_connects: 0,
                max_in,
                trace: std::env::var_os("CORE_SEQUENCE_TRACE").is_some(),
                tolerate: false,
            }
        }

        fn broker(config: &BrokerConfig, access: bool) -> Broker {
            let mut b = Broker::new(config.clone());
            b.register_auth_method(Arc::new(TestAuth));
            if access {
                b.set_access_control(Some(Arc::new(TestAccess)));
            }
            b
        }

        fn open(&mut self, k: usize) {
            if let Some(old) = self.slots[k].take() {
                self.broker.connection_lost(old.conn, self.now);
                self.finished.insert(old.conn);
            }
            let conn = ConnId(self.next_conn);
            self.next_conn += 1;
            self.broker.connection_opened(conn, self.now);
            self.slots[k] = Some(Slot::new(conn));
        }

        fn lose(&mut self, k: usize) {
            if let Some(old) = self.slots[k].take() {
                self.broker.connection_lost(old.conn, self.now);
                self.finished.insert(old.conn);
            }
        }

        /// Writes `packet` on slot `k` as the client would, encoded for the
        /// connection's level; the broker sees what the codec makes of it.
        fn send(&mut self, k: usize, packet: &Packet) {
            let Some(slot) = &self.slots[k] else { return };
            let mut out = BytesMut::new();
            if encode_packet(packet, slot.protocol(), &mut out).is_err() {
                return;
            }
            self.send_bytes(k, &out);
        }

        /// Bytes from the client: decoded as the server's read loop does.
        fn send_bytes(&mut self, k: usize, bytes: &[u8]) {
            let Some(slot) = &mut self.slots[k] else {
                return;
            };
            if slot.dead {
                return;
            }
            slot.buf.extend_from_slice(bytes);
            loop {
                let Some(slot) = &mut self.slots[k] else {
                    return;
                };
                let conn = slot.conn;
                match decode_packet(&mut slot.buf, slot.version, self.max_in) {
                    Ok(Some(p)) => {
                        if let Packet::Connect(c) = &p {
                            slot.version.get_or_insert(c.protocol);
                        }
                        self.handle(k, p);
                    }
                    Ok(None) => return,
                    Err(e) => {
                        slot.dead = true;
                        match e {
                            DecodeError::UnsupportedProtocolVersion { .. } => {
                                self.broker.unsupported_protocol_version(conn, self.now)
                            }
                            e => self.broker.protocol_error(conn, e.reason_code(), self.now),
                        }
                        return;
                    }
                }
            }
        }

        /// One decoded packet to the broker, after updating what the client
        /// knows. Acknowledgements are only sent for what the client has
        /// received, so pending transmits are read first.
        fn handle(&mut self, k: usize, p: Packet) {
            if matches!(
                p,
                Packet::PubAck(_) | Packet::PubRec(_) | Packet::PubComp(_)
            ) {
                self.flush_transmits();
            }
            let Some(slot) = &mut self.slots[k] else {
                return;
            };
            match &p {
                Packet::Connect(c) if slot.limits.is_none() => {
                    let v5 = c.protocol.is_v5();
                    let props = &c.properties;
                    slot.limits = Some(Limits {
                        max_packet: if v5 {
                            props.maximum_packet_size.unwrap_or(0)
                        } else {
                            0
                        },
                        alias_max: if v5 {
                            props.topic_alias_maximum.unwrap_or(0)
                        } else {
                            0
                        },
                        window: self.config.inflight_window().min(usize::from(if v5 {
                            props.receive_maximum.unwrap_or(u16::MAX)
                        } else {
                            u16::MAX
                        })),
                    });
                    if c.client_id.is_empty() {
                        self.empty_id_connects += 1;
                    } else {
                        self.client_ids.insert(c.client_id.to_string());
                    }
                }
                Packet::PubAck(r) => {
                    let id = r.packet_id.get();
                    slot.outstanding
                        .retain(|o| !(o.id == id && o.qos == QoS::AtLeastOnce));
                }
                Packet::PubRec(r) => {
                    let id = r.packet_id.get();
                    if r.reason.is_error() {
                        slot.outstanding
                            .retain(|o| !(o.id == id && o.qos == QoS::ExactlyOnce));
                    } else if let Some(o) = slot
                        .outstanding
                        .iter_mut()
                        .find(|o| o.id == id && o.qos == QoS::ExactlyOnce)
                    {
                        o.received = true;
                    }
                }
                Packet::PubComp(r) => {
                    let id = r.packet_id.get();
                    slot.outstanding.retain(|o| !(o.id == id && o.received));
                }
                Packet::Publish(p) => {
                    if let (QoS::ExactlyOnce, Some(id)) = (p.qos, p.packet_id) {
                        if !slot.sent_qos2.contains(&id.get()) {
                            slot.sent_qos2.push(id.get());
                        }
                    }
                }
                _ => {}
            }
            let conn = slot.conn;
            if self.trace {
                eprintln!("  slot {k} {conn:?} -> broker: {p:?}");
            }
            self.broker.handle_packet(conn, p, self.now);
        }

        fn flush_transmits(&mut self) {
            while let Some(t) = self.broker.poll_transmit() {
                self.check_transmit(t);
            }
        }

        fn check_transmit(&mut self, t: Transmit) {
            let conn = t.conn;
            if self.trace {
                eprintln!(
                    "  broker -> {conn:?} ({:?}, close={}): {:?}",
                    t.protocol, t.close, t.packets
                );
            }
            assert!(
                !self.finished.contains(&conn),
                "invariant: packets for {conn:?} after it was closed or lost: {:?} close={}",
                t.packets,
                t.close
            );
            let Some(k) = self
                .slots
                .iter()
                .position(|s| s.as_ref().is_some_and(|s| s.conn == conn))
            else {
                panic!("invariant: transmit for unknown connection {conn:?}");
            };
            let Some(slot) = &mut self.slots[k] else {
                return;
            };
            // (A close alone may be for a CONNECT the broker never read: a
            // connect timeout fired first.)
            if let (Some(v), false) = (slot.version, t.packets.is_empty()) {
                assert_eq!(
                    t.protocol, v,
                    "invariant: transmit for {conn:?} at the wrong protocol level"
                );
            }
            for p in &t.packets {
                if self.tolerate && known_open_bug(p) {
                    continue;
                }
                let mut out = BytesMut::new();
                if let Err(e) = encode_packet(p, t.protocol, &mut out) {
                    panic!(
                        "invariant: packet to {conn:?} does not encode for {:?}: {e}: {p:?}",
                        t.protocol
                    );
                }
                let len = out.len();
                match decode_packet(&mut out, Some(t.protocol), usize::MAX) {
                    Ok(Some(back)) => assert_eq!(
                        &back, p,
                        "invariant: packet to {conn:?} does not decode back equal ({:?})",
                        t.protocol
                    ),
                    other => panic!(
                        "invariant: packet to {conn:?} encoded for {:?} does not decode: {other:?}: {p:?}",
                        t.protocol
                    ),
                }
                assert!(out.is_empty(), "invariant: trailing bytes after {p:?}");
                match p {
                    Packet::ConnAck(a) if a.code == 0 => slot.connack_ok = true,
                    Packet::Publish(p) => {
                        assert!(
                            slot.connack_ok,
                            "invariant: PUBLISH to {conn:?} before a successful CONNACK: {p:?}"
                        );
                        let Some(limits) = slot.limits else {
                            panic!("invariant: PUBLISH to {conn:?} that sent no CONNECT")
                        };
                        if limits.max_packet > 0 {
                            assert!(
                                len <= limits.max_packet as usize,
                                "invariant: PUBLISH of {len} bytes to {conn:?} exceeds its Maximum Packet Size {}: {p:?}",
                                limits.max_packet
                            );
                        }
                        match p.properties.topic_alias {
                            Some(a) => {
                                assert!(
                                    a >= 1 && a <= limits.alias_max,
                                    "invariant: topic alias {a} to {conn:?} above its Topic Alias Maximum {}: {p:?}",
                                    limits.alias_max
                                );
                                if p.topic.is_empty() {
                                    assert!(
                                        slot.aliases.contains_key(&a),
                                        "invariant: PUBLISH to {conn:?} uses alias {a} never set: {p:?}"
                                    );
                                } else {
                                    slot.aliases.insert(a, p.topic.to_string());
                                }
                            }
                            None => assert!(
                                !p.topic.is_empty(),
                                "invariant: PUBLISH to {conn:?} without topic or alias"
                            ),
                        }
                        if let Some(id) = p.packet_id {
                            let id = id.get();
                            assert!(
                                !slot.outstanding.iter().any(|o| o.id == id),
                                "invariant: packet id {id} to {conn:?} reused while outstanding {:?}: {p:?}",
                                slot.outstanding
                            );
                            slot.outstanding.push(Outstanding {
                                id,
                                qos: p.qos,
                                received: false,
                            });
                            assert!(
                                slot.outstanding.len() <= limits.window,
                                "invariant: {} unacknowledged QoS>0 PUBLISH to {conn:?}, window {}: {:?}",
                                slot.outstanding.len(),
                                limits.window,
                                slot.outstanding
                            );
                        }
                    }
                    _ => {}
                }
            }
            if t.close {
                self.finished.insert(conn);
                self.slots[k] = None;
            }
        }

        fn take_store_ops(&mut self) {
            let ops = self.broker.take_store_ops();
            if !self.config.persistence {
                assert!(
                    ops.is_empty(),
                    "invariant: store ops with persistence off: {ops:?}"
                );
                return;
            }
            self.model.apply(ops, self.now);
        }

        fn drain(&mut self) {
            self.flush_transmits();
            let _ = self.broker.drain_events();
            self.take_store_ops();
        }

        fn restart(&mut self, graceful: bool) {
            if graceful {
                self.broker.shutdown(self.now);
            }
            self.drain();
            for k in 0..SLOTS {
                if let Some(s) = self.slots[k].take() {
                    self.finished.insert(s.conn);
                }
            }
            self.broker = Self::broker(&self.config, self.access);
            if self.trace {
                eprintln!(
                    "  restore: {} sessions, {} retained",
                    self.model.sessions.len(),
                    self.model.retained.len()
                );
            }
            self.broker.restore(self.model.restored(self.now), self.now);
            assert_eq!(
                self.broker.session_count(),
                self.model.sessions.len(),
                "invariant: restore did not bring back every stored session"
            );
            assert_eq!(
                self.broker.retained_count(),
                self.model.retained.len(),
                "invariant: restore did not bring back every retained message"
            );
        }

        fn check_always(&mut self) {
            // A session is attached to a connection the broker still holds.
            let online = self.broker.session_count() - self.broker.offline_session_count();
            assert!(
                online <= self.broker.connection_count(),
                "invariant: {online} sessions online with {} connections",
                self.broker.connection_count()
            );
            let bound = self.client_ids.len() + self.empty_id_connects;
            assert!(
                self.broker.session_count() <= bound,
                "invariant: {} sessions for {} distinct client ids",
                self.broker.session_count(),
                bound
            );
        }

        fn pick_out_id(&self, k: usize, b: u8) -> u16 {
            let out = self.slots[k].as_ref().map(|s| &s.outstanding);
            match out {
                Some(o) if !o.is_empty() && b < 0xC0 => o[usize::from(b) % o.len()].id,
                _ => [1, 2, 3, 4, 65535][usize::from(b) % 5],
            }
        }

        fn pick_in_id(&self, k: usize, b: u8) -> u16 {
            let sent = self.slots[k].as_ref().map(|s| &s.sent_qos2);
            match sent {
                Some(o) if !o.is_empty() && b < 0xC0 => o[usize::from(b) % o.len()],
                _ => [1, 2, 3, 4, 65535][usize::from(b) % 5],
            }
        }

        fn step(&mut self, inp: &mut Input) {
            let op = inp.u8() % ACTIONS;
            let k = usize::from(inp.u8()) % SLOTS;
            let v = self.slots[k].as_ref().map(|s| s.protocol());
            if self.trace {
                let name = match op {
                    0 | 1 => "connect",
                    2..=4 => "publish",
                    5 | 6 => "subscribe",
                    7 => "unsubscribe",
                    8 => "puback",
                    9 => "pubrec",
                    10 => "pubrel",
                    11 => "pubcomp",
                    12 => "pingreq",
                    13 => "disconnect",
                    14 => "auth",
                    15 => "raw bytes",
                    16 => "lose",
                    17 => "advance time",
                    18 => "drain",
                    19 => "restart",
                    20 => "protocol error",
                    _ => "open",
                };
                eprintln!("{name} (slot {k})");
            }
            match op {
                0 | 1 => {
                    let c = connect(inp);
                    if self.slots[k].is_none() {
                        self.open(k);
                    }
                    self.send(k, &c);
                }
                2..=4 => {
                    let p = publish(inp, v.is_some_and(|v| v.is_v5()));
                    self.send(k, &p);
                }
                5 | 6 => {
                    let s = subscribe(inp);
                    self.send(k, &s);
                }
                7 => {
                    let n = 1 + usize::from(inp.u8() % 2);
                    let filters = (0..n).map(|_| inp.pick(FILTERS).into()).collect();
                    let u = Packet::Unsubscribe(Unsubscribe {
                        packet_id: pid(u16::from(inp.u8())),
                        filters,
                        properties: Default::default(),
                    });
                    self.send(k, &u);
                }
                8 => {
                    let id = self.pick_out_id(k, inp.u8());
                    self.send(k, &Packet::PubAck(PubResponse::new(pid(id))));
                }
                9 => {
                    let id = self.pick_out_id(k, inp.u8());
                    let reason = inp.pick(&[0, 0, 0, 0x10, 0x80, 0x97]);
                    let mut r = PubResponse::new(pid(id));
                    r.reason = ReasonCode(reason);
                    self.send(k, &Packet::PubRec(r));
                }
                10 => {
                    let id = self.pick_in_id(k, inp.u8());
                    self.send(k, &Packet::PubRel(PubResponse::new(pid(id))));
                }
                11 => {
                    let id = self.pick_out_id(k, inp.u8());
                    self.send(k, &Packet::PubComp(PubResponse::new(pid(id))));
                }
                12 => self.send(k, &Packet::PingReq),
                13 => {
                    let b = inp.u8();
                    let d = Packet::Disconnect(Disconnect {
                        reason: ReasonCode([0, 0, 4, 0x80][usize::from(b & 3)]),
                        properties: Properties {
                            session_expiry_interval: [
                                None,
                                None,
                                Some(0),
                                Some(10),
                                Some(u32::MAX),
                                Some(1),
                            ][usize::from(b >> 2) % 6],
                            ..Properties::default()
                        }
                        .into(),
                    });
                    self.send(k, &d);
                }
                14 => {
                    let b = inp.u8();
                    let a = Packet::Auth(Auth {
                        reason: ReasonCode([0x18, 0x19, 0x18, 0x00][usize::from(b & 3)]),
                        properties: Properties {
                            authentication_method: Some(if bit(b, 2) { "x" } else { "m" }.into()),
                            authentication_data: auth_data(b >> 3),
                            ..Properties::default()
                        }
                        .into(),
                    });
                    self.send(k, &a);
                }
                15 => {
                    let n = usize::from(inp.u8() % 64);
                    let bytes = inp.bytes(n);
                    if self.slots[k].is_none() {
                        self.open(k);
                    }
                    self.send_bytes(k, bytes);
                }
                16 => self.lose(k),
                17 => {
                    let b = inp.u8();
                    let d = if bit(b, 7) {
                        Duration::from_millis(u64::from(b & 0x7F) * 37)
                    } else {
                        Duration::from_secs(u64::from(b) % 101)
                    };
                    self.now += d;
                    self.broker.handle_timeout(self.now);
                    if let Some(t) = self.broker.poll_timeout() {
                        assert!(
                            t > self.now,
                            "invariant: a timer due now survived handle_timeout"
                        );
                    }
                }
                18 => self.drain(),
                19 => {
                    let graceful = bit(inp.u8(), 0);
                    self.restart(graceful);
                }
                20 => {
                    let b = inp.u8();
                    if let Some(s) = &mut self.slots[k] {
                        s.dead = true;
                        let conn = s.conn;
                        let reason = ReasonCode([0x81, 0x82, 0x95, 0x94][usize::from(b & 3)]);
                        self.broker.protocol_error(conn, reason, self.now);
                    }
                }
                _ => self.open(k),
            }
            self.check_always();
        }
    }

    fn auth_data(b: u8) -> Option<Bytes> {
        match b & 3 {
            0 => None,
            1 => Some(Bytes::from_static(b"ok")),
            2 => Some(Bytes::from_static(b"more")),
            _ => Some(Bytes::from_static(b"bad")),
        }
    }

    fn payload(inp: &mut Input) -> Bytes {
        let b = inp.u8();
        match b & 3 {
            0 => Bytes::new(),
            1 => Bytes::from_static(b"hi"),
            2 => Bytes::from_static(b"\xff\xfe"),
            _ => Bytes::from(vec![b'p'; usize::from(b >> 2)]),
        }
    }

    fn connect(inp: &mut Input) -> Packet {
        let f = inp.u8();
        let g = inp.u8();
        let h = inp.u8();
        let protocol = [
            ProtocolVersion::V5,
            ProtocolVersion::V311,
            ProtocolVersion::V5,
            ProtocolVersion::V31,
        ][usize::from(f & 3)];
        let v5 = protocol.is_v5();
        let will = bit(f, 3).then(|| {
            let w = inp.u8();
            LastWill {
                topic: ["a/b", "w", "$SYS/x", "a/c"][usize::from(w & 3)].into(),
                payload: payload(inp),
                qos: [
                    QoS::AtMostOnce,
                    QoS::AtLeastOnce,
                    QoS::ExactlyOnce,
                    QoS::AtLeastOnce,
                ][usize::from(w >> 2 & 3)],
                retain: bit(w, 4),
                properties: if v5 {
                    Properties {
                        will_delay_interval: [None, Some(0), Some(5), Some(50)]
                            [usize::from(w >> 5 & 3)],
                        message_expiry_interval: bit(w, 7).then_some(3),
                        ..Properties::default()
                    }
                    .into()
                } else {
                    Default::default()
                },
            }
        });
        let properties = if v5 {
            Properties {
                session_expiry_interval: [
                    None,
                    Some(0),
                    Some(5),
                    Some(100),
                    Some(u32::MAX),
                    Some(1),
                    Some(30),
                    None,
                ][usize::from(g & 7)],
                receive_maximum: [None, Some(1), Some(2), Some(3)][usize::from(g >> 3 & 3)],
                maximum_packet_size: [None, Some(20), Some(40), Some(100)][usize::from(g >> 5 & 3)],
                topic_alias_maximum: [None, Some(0), Some(1), Some(3)][usize::from(h & 3)],
                request_response_information: bit(h, 2).then_some(1),
                authentication_method: bit(h, 3).then(|| if bit(h, 4) { "x" } else { "m" }.into()),
                authentication_data: if bit(h, 3) { auth_data(h >> 5) } else { None },
                ..Properties::default()
            }
        } else {
            Properties::default()
        };
        let user = bit(g, 7);
        Packet::Connect(Box::new(Connect {
            protocol,
            clean_start: bit(f, 2),
            keep_alive: [0, 1, 5, 60][usize::from(f >> 4 & 3)],
            client_id: CLIENT_IDS
                [(usize::from(f >> 6) + usize::from(bit(h, 7))) % CLIENT_IDS.len()]
            .into(),
            will,
            username: user.then(|| "u".into()),
            password: (user && bit(h, 6)).then(|| Bytes::from_static(b"p")),
            properties: properties.into(),
        }))
    }

    fn publish(inp: &mut Input, v5: bool) -> Packet {
        let f = inp.u8();
        let g = inp.u8();
        let qos = [
            QoS::AtMostOnce,
            QoS::AtLeastOnce,
            QoS::ExactlyOnce,
            QoS::AtLeastOnce,
        ][usize::from(f & 3)];
        let topic = TOPICS[usize::from(f >> 2 & 7)];
        let packet_id = (qos != QoS::AtMostOnce).then(|| pid([1, 2, 3, 7][usize::from(g & 3)]));
        let properties = if v5 {
            Properties {
                topic_alias: [
                    None,
                    None,
                    Some(1),
                    Some(2),
                    Some(3),
                    Some(4),
                    None,
                    Some(1),
                ][usize::from(g >> 2 & 7)],
                message_expiry_interval: bit(g, 5).then_some(2),
                payload_format_indicator: bit(g, 6).then_some(1),
                response_topic: bit(g, 7).then(|| "r".into()),
                ..Properties::default()
            }
        } else {
            Properties::default()
        };
        Packet::Publish(Publish {
            dup: qos != QoS::AtMostOnce && bit(f, 5),
            qos,
            retain: bit(f, 6),
            topic: topic.into(),
            packet_id,
            payload: payload(inp),
            properties: properties.into(),
        })
    }

    fn subscribe(inp: &mut Input) -> Packet {
        let n = 1 + usize::from(inp.u8() % 3);
        let mut filters = Vec::new();
        for _ in 0..n {
            let filter = inp.pick(FILTERS);
            let o = inp.u8();
            filters.push((
                filter.into(),
                SubscriptionOptions {
                    qos: [
                        QoS::AtMostOnce,
                        QoS::AtLeastOnce,
                        QoS::ExactlyOnce,
                        QoS::ExactlyOnce,
                    ][usize::from(o & 3)],
                    no_local: bit(o, 2) && !filter.starts_with("$share/"),
                    retain_as_published: bit(o, 3),
                    retain_handling: [
                        RetainHandling::SendAtSubscribe,
                        RetainHandling::SendAtSubscribeIfNew,
                        RetainHandling::DoNotSend,
                        RetainHandling::SendAtSubscribe,
                    ][usize::from(o >> 4 & 3)],
                },
            ));
        }
        let b = inp.u8();
        Packet::Subscribe(Subscribe {
            packet_id: pid(u16::from(b & 7)),
            filters,
            properties: Properties {
                subscription_identifiers: match b >> 3 & 3 {
                    0 | 1 => vec![],
                    n => vec![u32::from(n)],
                },
                ..Properties::default()
            }
            .into(),
        })
    }

    /// Packets showing a bug of [`super::KNOWN_OPEN`], let through by
    /// [`run_tolerant`]. When a campaign keeps hitting an open bug, add a
    /// test here (or a `self.tolerate` guard at the invariant) so it looks
    /// further; remove it with the bug. (The first six found were answered
    /// this way until fixed: 0x95 in PUBACK, resends beyond Receive Maximum
    /// and Maximum Packet Size, the alias growing a packet past the limit.)
    fn known_open_bug(p: &Packet) -> bool {
        let _ = p;
        false
    }

    /// Plays `data` against a broker; panics when an invariant breaks.
    pub fn run(data: &[u8]) {
        run_with(data, false)
    }

    /// As [`run`], but the known open bugs do not count: what the fuzz
    /// target runs (unless `CORE_SEQUENCE_STRICT` is set), so a campaign
    /// finds new bugs rather than the same one again.
    pub fn run_tolerant(data: &[u8]) {
        run_with(data, true)
    }

    fn run_with(data: &[u8], tolerate: bool) {
        let mut inp = Input { data, pos: 0 };
        let (config, access) = config(&mut inp);
        let mut d = Driver::new(config, access);
        d.tolerate = tolerate;
        if d.trace {
            eprintln!("config: {:?}, access control: {access}", d.config);
        }
        let mut n = 0;
        while !inp.done() && n < MAX_ACTIONS {
            d.step(&mut inp);
            n += 1;
        }
        d.drain();
        // Every connection lost: what is left must still be consistent.
        for k in 0..SLOTS {
            d.lose(k);
        }
        d.now += Duration::from_secs(200);
        d.broker.handle_timeout(d.now);
        d.drain();
        d.check_always();
        assert_eq!(
            d.broker.offline_session_count(),
            d.broker.session_count(),
            "invariant: a session is online after every connection was lost"
        );
        if d.config.persistence {
            d.restart(false);
        }
    }

    /// Hand-written seed inputs for the corpus.
    pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
        // Config bytes: c0 = inflight 2 (1), queue 3 (3 << 2), persistence (1 << 5).
        let persist = [1 | 3 << 2 | 1 << 5, 0b0000_0011, 0, 0];
        let plain = [0, 0b0000_0010, 0, 0];
        // CONNECT op (0), slot, f, g, h.
        // f: bits 0-1 version (0 5.0, 1 3.1.1), bit 2 clean, bit 3 will, 4-5 keep-alive, 6-7 id.
        // g: 0-2 session expiry, 3-4 receive max, 5-6 max packet size, 7 user.
        // h: 0-1 alias max, 2 response info, 3 auth, 4 method x, 5-6 data, 7 id shift.
        let conn = |slot: u8, f: u8, g: u8, h: u8| vec![0, slot, f, g, h];
        // PUBLISH op (2), slot, f (qos 0-1, topic 2-4, dup 5, retain 6), g (id 0-1, alias 2-4, ...), payload byte.
        let publ = |slot: u8, f: u8, g: u8| vec![2, slot, f, g, 1];
        // SUBSCRIBE op (5), slot, count-1, (filter, options)*, id byte.
        let sub = |slot: u8, filter: u8, o: u8| vec![5, slot, 0, filter, o, 1];
        let cat = |cfg: [u8; 4], parts: Vec<Vec<u8>>| -> Vec<u8> {
            let mut v = cfg.to_vec();
            for p in parts {
                v.extend(p);
            }
            v
        };
        let drain = vec![18, 0];
        let wait = |s: u8| vec![17, 0, s];
        let lose = |slot: u8| vec![16, slot];
        let puback = |slot: u8| vec![8, slot, 0];
        let pubrec = |slot: u8| vec![9, slot, 0, 0];
        let pubcomp = |slot: u8| vec![11, slot, 0];
        let pubrel = |slot: u8| vec![10, slot, 0];
        vec![
            (
                "v311_qos1_flow",
                cat(
                    plain,
                    vec![
                        conn(0, 0b0100_0101, 0, 0),
                        sub(0, 1, 1),
                        conn(1, 0b1000_0101, 0, 0),
                        publ(1, 1, 0),
                        publ(1, 1, 1),
                        drain.clone(),
                        puback(0),
                        puback(0),
                        drain.clone(),
                    ],
                ),
            ),
            (
                "v5_qos2_alias_window",
                cat(
                    plain,
                    vec![
                        conn(0, 0b0100_0000, 0b0100_1011, 0b11),
                        sub(0, 0, 2),
                        conn(1, 0b1000_0000, 0, 0),
                        publ(1, 2, 0b1000),
                        publ(1, 2, 0b1001),
                        publ(1, 2, 0b0010),
                        drain.clone(),
                        pubrec(0),
                        pubcomp(0),
                        pubrel(1),
                        drain.clone(),
                    ],
                ),
            ),
            (
                "persist_offline_restart",
                cat(
                    persist,
                    vec![
                        conn(0, 0b0100_0000, 0b0000_0100, 0),
                        sub(0, 7, 1),
                        lose(0),
                        conn(1, 0b1000_0101, 0, 0),
                        publ(1, 1, 0),
                        publ(1, 0b0100_0001, 1),
                        drain.clone(),
                        vec![19, 0, 0],
                        conn(0, 0b0100_0000, 0b0000_0100, 0),
                        drain.clone(),
                        puback(0),
                        wait(60),
                        drain.clone(),
                    ],
                ),
            ),
            (
                "v311_persistent_resume",
                cat(
                    persist,
                    vec![
                        conn(0, 0b0100_0001, 0, 0),
                        sub(0, 0, 2),
                        conn(1, 0b1000_0101, 0, 0),
                        publ(1, 2, 0),
                        publ(1, 2, 1),
                        drain.clone(),
                        pubrec(0),
                        lose(0),
                        conn(0, 0b0100_0001, 0, 0),
                        drain.clone(),
                        pubcomp(0),
                        drain.clone(),
                    ],
                ),
            ),
            (
                "will_delay_and_shared",
                cat(
                    persist,
                    vec![
                        conn(0, 0b0100_1000, 0b0000_0011, 0),
                        vec![0b0100_0000, 1],
                        conn(1, 0b1000_0000, 0b0000_0011, 0),
                        sub(1, 3, 1),
                        conn(2, 0b1100_0000, 0b0000_0011, 0),
                        sub(2, 3, 1),
                        conn(3, 0b0000_0101, 0, 0),
                        publ(3, 0b0000_0001, 0),
                        publ(3, 0b0000_0001, 1),
                        lose(0),
                        wait(10),
                        drain.clone(),
                        vec![19, 0, 1],
                        wait(100),
                        drain.clone(),
                    ],
                ),
            ),
            (
                "auth_exchange",
                cat(
                    plain,
                    vec![
                        conn(0, 0b0000_0000, 0, 0b0100_1000),
                        vec![14, 0, 0b0001_0000],
                        drain.clone(),
                        vec![14, 0, 0b0000_1000],
                        vec![13, 0, 2],
                        drain.clone(),
                    ],
                ),
            ),
            (
                "raw_bytes",
                cat(
                    plain,
                    vec![
                        vec![15, 0, 16],
                        vec![
                            0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 0, 0, 2, b'r', b'1',
                        ],
                        vec![15, 0, 8],
                        vec![0x82, 6, 0, 1, 0, 1, b'#', 1],
                        drain.clone(),
                        vec![15, 0, 3],
                        vec![0xff, 0xff, 0xff],
                        drain.clone(),
                    ],
                ),
            ),
        ]
    }
}
