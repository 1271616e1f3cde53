//! Per-client session state: subscriptions, the outgoing in-flight window and
//! queue, and QoS 2 packet ids received but not yet released. A session may
//! outlive its connection (3.1.1 clean session 0, 5.0 session expiry).

use bytestring::ByteString;
use midge_codec::{LastWill, PacketId, ProtocolVersion, QoS, SubscriptionOptions};
use std::collections::{HashMap, HashSet, VecDeque};
use std::num::NonZeroU16;
use std::time::Instant;

use crate::ids::ConnId;
use crate::message::SharedMessage;

/// Session expiry interval meaning "never expires" (5.0: 0xFFFFFFFF).
pub const NEVER_EXPIRES: u32 = u32::MAX;

/// Where an outgoing QoS 1/2 message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutState {
    /// PUBLISH sent; waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    AwaitAck,
    /// PUBREL sent; waiting for PUBCOMP.
    AwaitComp,
}

/// Subscription identifiers a delivered copy carries (5.0 §3.3.2.3.8): one
/// copy carries the identifier of every matching subscription.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SubIds {
    #[default]
    None,
    One(u32),
    Many(Vec<u32>),
}

impl SubIds {
    pub fn push(&mut self, id: u32) {
        *self = match std::mem::take(self) {
            SubIds::None => SubIds::One(id),
            SubIds::One(a) if a == id => SubIds::One(a),
            SubIds::One(a) => SubIds::Many(vec![a, id]),
            SubIds::Many(mut v) => {
                if !v.contains(&id) {
                    v.push(id);
                }
                SubIds::Many(v)
            }
        };
    }

    /// Whether `ids` lists exactly these identifiers, in this order.
    pub fn matches(&self, ids: &[u32]) -> bool {
        match self {
            SubIds::None => ids.is_empty(),
            SubIds::One(a) => ids == [*a],
            SubIds::Many(v) => v[..] == *ids,
        }
    }

    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            SubIds::None => Vec::new(),
            SubIds::One(a) => vec![*a],
            SubIds::Many(v) => v.clone(),
        }
    }
}

/// One copy of a message on its way to this session.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub message: SharedMessage,
    pub qos: QoS,
    pub retain: bool,
    pub sub_ids: SubIds,
    /// Set when the copy came through a shared subscription: if this
    /// session goes away before acknowledging it, another member gets it.
    pub shared_group: Option<u32>,
    /// Number of the stored copy in a persisted session (0: not stored).
    pub seq: u64,
}

/// The messages sent to a session and not acknowledged yet, in the order
/// they were sent. Reads go through `Deref` to the queue; changes go through
/// these methods, which keep an index of the packet ids in use once the
/// window is large: with `max_inflight_messages 0` a window can hold 65,535
/// messages, and scanning it for a free id at every send (or for the
/// acknowledged one at every PUBACK) made a resumed session's burst
/// quadratic, long enough to stall every client.
#[derive(Default)]
pub struct InflightWindow(Option<Box<Window>>);

/// The messages in flight, boxed only while there are any: an idle
/// session carries one pointer, and gives back the queue's buffer (which
/// a `VecDeque` would keep at its largest) when the window empties.
#[derive(Default)]
struct Window {
    items: VecDeque<Inflight>,
    /// Kept only from [`INDEX_FROM`] messages on (8 KiB), a scan being
    /// cheaper below.
    index: Option<Box<WindowIndex>>,
}

/// Room a window starts with: a window that fills and drains under load
/// starts again from empty each time, and would otherwise grow through
/// 4 first.
const FIRST_ROOM: usize = 8;

/// What an empty window derefs to.
static NO_MESSAGES: VecDeque<Inflight> = VecDeque::new();

/// What a large window keeps so as not to scan itself.
struct WindowIndex {
    /// One bit per packet id in use.
    ids: [u64; 1024],
    /// The payload bytes in the window (`max_inflight_bytes`).
    bytes: u64,
}

/// Window size from which [`InflightWindow`] indexes its packet ids.
const INDEX_FROM: usize = 64;

impl std::fmt::Debug for InflightWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl std::ops::Deref for InflightWindow {
    type Target = VecDeque<Inflight>;

    fn deref(&self) -> &VecDeque<Inflight> {
        self.0.as_ref().map_or(&NO_MESSAGES, |w| &w.items)
    }
}

impl<'a> IntoIterator for &'a InflightWindow {
    type Item = &'a Inflight;
    type IntoIter = std::collections::vec_deque::Iter<'a, Inflight>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

fn id_bit(id: PacketId) -> (usize, u64) {
    let id = usize::from(id.get());
    (id / 64, 1 << (id % 64))
}

impl InflightWindow {
    pub fn push_back(&mut self, f: Inflight) {
        let w = self.0.get_or_insert_with(|| {
            Box::new(Window {
                items: VecDeque::with_capacity(FIRST_ROOM),
                index: None,
            })
        });
        if let Some(index) = w.index.as_mut() {
            let (word, bit) = id_bit(f.packet_id);
            index.ids[word] |= bit;
            index.bytes += f.delivery.message.queued_size();
        }
        w.items.push_back(f);
        if w.index.is_none() && w.items.len() >= INDEX_FROM {
            w.reindex();
        }
    }

    pub fn remove(&mut self, pos: usize) -> Option<Inflight> {
        let w = self.0.as_mut()?;
        let f = w.items.remove(pos)?;
        if w.items.is_empty() {
            self.0 = None;
        } else if let Some(index) = w.index.as_mut() {
            let (word, bit) = id_bit(f.packet_id);
            index.ids[word] &= !bit;
            index.bytes -= f.delivery.message.queued_size();
        }
        Some(f)
    }

    pub fn retain(&mut self, keep: impl FnMut(&Inflight) -> bool) {
        let Some(w) = self.0.as_mut() else {
            return;
        };
        w.items.retain(keep);
        if w.items.is_empty() {
            self.0 = None;
        } else if w.index.is_some() {
            w.reindex();
        }
    }

    /// The state of the message at `pos` (its packet id stays as it is).
    pub fn state_mut(&mut self, pos: usize) -> Option<&mut OutState> {
        self.0.as_mut()?.items.get_mut(pos).map(|f| &mut f.state)
    }

    /// Whether a message in the window holds this packet id.
    pub fn holds(&self, id: PacketId) -> bool {
        let Some(w) = &self.0 else {
            return false;
        };
        match &w.index {
            Some(index) => {
                let (word, bit) = id_bit(id);
                index.ids[word] & bit != 0
            }
            None => w.items.iter().any(|f| f.packet_id == id),
        }
    }

    /// Where the message with this packet id is. Acknowledgements mostly
    /// come in the order messages were sent: the oldest is looked at first.
    pub fn position(&self, id: PacketId) -> Option<usize> {
        if self.front().is_some_and(|f| f.packet_id == id) {
            return Some(0);
        }
        if !self.holds(id) {
            return None;
        }
        self.iter().position(|f| f.packet_id == id)
    }

    /// Payload bytes of the messages in the window.
    pub fn bytes(&self) -> u64 {
        match self.0.as_ref().map(|w| &w.index) {
            None => 0,
            Some(Some(index)) => index.bytes,
            Some(None) => self.iter().map(|f| f.delivery.message.queued_size()).sum(),
        }
    }

    /// Whether the window keeps an index of its packet ids.
    #[cfg(test)]
    fn indexed(&self) -> bool {
        self.0.as_ref().is_some_and(|w| w.index.is_some())
    }
}

impl Window {
    fn reindex(&mut self) {
        let mut index = Box::new(WindowIndex {
            ids: [0; 1024],
            bytes: 0,
        });
        for f in &self.items {
            let (word, bit) = id_bit(f.packet_id);
            index.ids[word] |= bit;
            index.bytes += f.delivery.message.queued_size();
        }
        self.index = Some(index);
    }
}

#[derive(Debug, Clone)]
pub struct Inflight {
    pub packet_id: PacketId,
    pub delivery: Delivery,
    pub state: OutState,
}

/// What was negotiated with the connection currently attached (5.0 CONNECT
/// properties); reset on every CONNECT.
#[derive(Debug, Clone, Default)]
pub struct LinkState {
    /// min(our in-flight window, the client's Receive Maximum).
    pub send_window: usize,
    /// The client's Maximum Packet Size (0 = no limit).
    pub max_packet_out: u32,
    /// The client's Topic Alias Maximum: aliases we may use towards it.
    pub alias_out_max: u16,
    /// Topic aliases in use, both ways; allocated only for a client that
    /// uses them, so other sessions do not carry two empty maps.
    pub aliases: Option<Box<Aliases>>,
}

/// Topic aliases of one connection (5.0).
#[derive(Debug, Clone, Default)]
pub struct Aliases {
    /// Ours towards the client: topic to alias.
    pub outgoing: HashMap<ByteString, u16>,
    /// The client's towards us: alias to topic.
    pub incoming: HashMap<u16, ByteString>,
}

/// SipHash under keys drawn once per process and shared by every session's
/// map of subscriptions, so that such a map carries no keys of its own (a
/// `RandomState` is 16 bytes in every session). The filters are the
/// client's choice, so the hash stays keyed.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessKeys;

impl std::hash::BuildHasher for ProcessKeys {
    type Hasher = std::collections::hash_map::DefaultHasher;

    fn build_hasher(&self) -> Self::Hasher {
        static KEYS: std::sync::OnceLock<std::collections::hash_map::RandomState> =
            std::sync::OnceLock::new();
        KEYS.get_or_init(Default::default).build_hasher()
    }
}

/// A subscription as the session remembers it (the topic tree holds a copy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscription {
    pub options: SubscriptionOptions,
    pub identifier: Option<u32>,
}

#[derive(Debug)]
pub struct Session {
    pub client_id: ByteString,
    /// The user name of the connection that last attached (for ACLs).
    pub username: Option<ByteString>,
    /// The connection currently attached, if any ([`Session::conn`]): a
    /// connection's number, which is never 0, so that this takes 8 bytes.
    conn: Option<std::num::NonZeroU64>,
    pub protocol: ProtocolVersion,
    /// Seconds the session outlives its connection: 0 ends it with the
    /// connection (3.1.1 clean session 1), [`NEVER_EXPIRES`] keeps it forever.
    pub expiry_interval: u32,
    /// When an offline session ends; `None` while connected or never.
    pub expires_at: Option<Instant>,
    pub subscriptions: HashMap<ByteString, Subscription, ProcessKeys>,
    pub inflight: InflightWindow,
    pub queue: MessageQueue,
    /// What few sessions have, behind one box: a session without any of it
    /// pays 8 bytes, not 112 (idle connections).
    extras: Option<Box<SessionExtras>>,
    pub link: LinkState,
    /// The store holds this session (persistence on, expiry above 0).
    pub stored: bool,
    /// Next number for a stored copy of a message.
    pub next_seq: u64,
    last_packet_id: u16,
    /// Marks the routing pass that last matched this session, so a message
    /// matching several of its subscriptions is delivered once.
    pub(crate) route_mark: u64,
    pub(crate) route_slot: usize,
}

/// The rarer parts of a [`Session`].
#[derive(Debug, Default)]
struct SessionExtras {
    /// The listener's `mount_point`: prefixed to this client's topics and
    /// filters, and taken off the topics it is sent.
    mount: Option<ByteString>,
    /// QoS 2 packet ids received and delivered, awaiting PUBREL ([MQTT-4.3.3-10]).
    incoming_qos2: HashSet<u16>,
    /// Boxed: a will (with its properties) is large.
    will: Option<Box<LastWill>>,
    /// A will waiting for its Will Delay Interval (5.0) to pass.
    pending_will: Option<(Box<LastWill>, Instant)>,
}

impl SessionExtras {
    fn is_empty(&self) -> bool {
        self.mount.is_none()
            && self.incoming_qos2.is_empty()
            && self.will.is_none()
            && self.pending_will.is_none()
    }
}

impl Session {
    fn extras_mut(&mut self) -> &mut SessionExtras {
        self.extras.get_or_insert_with(Box::default)
    }

    /// Gives the extras' box back once nothing is left in it, so that a
    /// session that once had a will or a QoS 2 exchange is small again.
    fn tidy_extras(&mut self) {
        if self.extras.as_ref().is_some_and(|e| e.is_empty()) {
            self.extras = None;
        }
    }

    /// The listener's `mount_point`, if the client came in on one.
    pub fn mount(&self) -> Option<&ByteString> {
        self.extras.as_ref().and_then(|e| e.mount.as_ref())
    }

    pub fn set_mount(&mut self, mount: Option<ByteString>) {
        if mount.is_some() || self.extras.is_some() {
            self.extras_mut().mount = mount;
            self.tidy_extras();
        }
    }

    pub fn set_will(&mut self, will: Option<Box<LastWill>>) {
        if will.is_some() || self.extras.is_some() {
            self.extras_mut().will = will;
            self.tidy_extras();
        }
    }

    /// Taken when the connection ends: the extras' box goes then if empty.
    pub fn take_will(&mut self) -> Option<Box<LastWill>> {
        let will = self.extras.as_mut().and_then(|e| e.will.take());
        self.tidy_extras();
        will
    }

    /// A will waiting for its delay, and when it is due.
    pub fn pending_will(&self) -> Option<&(Box<LastWill>, Instant)> {
        self.extras.as_ref().and_then(|e| e.pending_will.as_ref())
    }

    pub fn set_pending_will(&mut self, will: Box<LastWill>, due: Instant) {
        self.extras_mut().pending_will = Some((will, due));
    }

    pub fn take_pending_will(&mut self) -> Option<(Box<LastWill>, Instant)> {
        let will = self.extras.as_mut().and_then(|e| e.pending_will.take());
        self.tidy_extras();
        will
    }

    /// A QoS 2 packet id received and delivered, awaiting PUBREL.
    pub fn awaits_pubrel(&self, id: u16) -> bool {
        self.extras
            .as_ref()
            .is_some_and(|e| e.incoming_qos2.contains(&id))
    }

    /// How many QoS 2 packet ids await PUBREL.
    pub fn awaiting_pubrel(&self) -> usize {
        self.extras.as_ref().map_or(0, |e| e.incoming_qos2.len())
    }

    /// Records a QoS 2 packet id until its PUBREL; false if it was there.
    pub fn await_pubrel(&mut self, id: u16) -> bool {
        self.extras_mut().incoming_qos2.insert(id)
    }

    /// The PUBREL for `id` came; false if it was not awaited.
    ///
    /// The box stays, even when this was the last id: a client that
    /// publishes at QoS 2 would otherwise allocate it for every message.
    /// It goes when the connection does (see [`Session::take_will`]).
    pub fn release(&mut self, id: u16) -> bool {
        self.extras
            .as_mut()
            .is_some_and(|e| e.incoming_qos2.remove(&id))
    }

    /// A copy of the client id, for an event or a store operation that
    /// outlives the borrow (see [`Session::new`]).
    pub fn id_copy(&self) -> ByteString {
        ByteString::from(&*self.client_id)
    }

    /// The connection currently attached, if any.
    pub fn conn(&self) -> Option<ConnId> {
        self.conn.map(|c| ConnId(c.get()))
    }

    /// Attaches a connection, or with `None` detaches it. The server numbers
    /// connections from 1 ([`ConnId`]); a 0 would read as none.
    pub fn set_conn(&mut self, conn: Option<ConnId>) {
        self.conn = conn.and_then(|c| std::num::NonZeroU64::new(c.0));
    }

    /// A session with its own copy of `client_id`. The copy is never
    /// cloned (readers that need one owned take [`Session::id_copy`]): the
    /// first clone of a `ByteString` made from a copy puts its bytes behind
    /// a shared header, a second allocation for as long as the session
    /// lives.
    pub fn new(client_id: &str, protocol: ProtocolVersion, expiry_interval: u32) -> Self {
        Session {
            client_id: ByteString::from(client_id),
            username: None,
            conn: None,
            protocol,
            expiry_interval,
            expires_at: None,
            subscriptions: HashMap::default(),
            inflight: InflightWindow::default(),
            queue: MessageQueue::default(),
            extras: None,
            link: LinkState::default(),
            stored: false,
            next_seq: 1,
            last_packet_id: 0,
            route_mark: 0,
            route_slot: 0,
        }
    }

    /// Next packet id not in use by an in-flight message. The caller keeps the
    /// window below 65 535 so this always terminates.
    pub fn next_packet_id(&mut self) -> PacketId {
        loop {
            self.last_packet_id = self.last_packet_id.wrapping_add(1);
            if let Some(id) = NonZeroU16::new(self.last_packet_id) {
                if !self.inflight.holds(id) {
                    return id;
                }
            }
        }
    }

    /// Whether one more message of `size` bytes fits in the in-flight
    /// window (count and, when limited, bytes).
    pub fn window_has_room(&self, size: u64, max_bytes: u64) -> bool {
        if self.inflight.len() >= self.link.send_window {
            return false;
        }
        if max_bytes == 0 || self.inflight.is_empty() {
            return true;
        }
        self.inflight.bytes() + size <= max_bytes
    }

    pub fn inflight_position(&self, packet_id: PacketId) -> Option<usize> {
        self.inflight.position(packet_id)
    }

    /// Whether a message of `size` bytes fits in the queue (0 = unlimited).
    pub fn has_room(&self, size: u64, max_messages: u32, max_bytes: u64) -> bool {
        let full_count = max_messages != 0 && self.queue.len() >= max_messages as usize;
        let full_bytes = max_bytes != 0 && self.queue.bytes() + size > max_bytes;
        !(full_count || full_bytes)
    }

    /// Queues a message, refusing it when a limit is reached (0 = unlimited).
    pub fn enqueue(&mut self, item: Delivery, max_messages: u32, max_bytes: u64) -> bool {
        let size = item.message.queued_size();
        if !self.has_room(size, max_messages, max_bytes) {
            return false;
        }
        self.queue.push_back(item);
        true
    }

    pub fn dequeue(&mut self) -> Option<Delivery> {
        self.queue.pop_front()
    }
}

/// The messages waiting for a session (while it is offline, or beyond its
/// in-flight window) and their size in all. It holds an allocation only
/// while it holds messages: every idle connection has a session, and most
/// sessions never queue.
#[derive(Debug, Default)]
pub struct MessageQueue(Option<Box<Queued>>);

#[derive(Debug, Default)]
struct Queued {
    items: VecDeque<Delivery>,
    /// The sum of the items' [`crate::message::Message::queued_size`].
    bytes: u64,
}

impl MessageQueue {
    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |q| q.items.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The queued messages' size in all (`max_queued_bytes`).
    pub fn bytes(&self) -> u64 {
        self.0.as_ref().map_or(0, |q| q.bytes)
    }

    pub fn front(&self) -> Option<&Delivery> {
        self.0.as_ref().and_then(|q| q.items.front())
    }

    pub fn iter(&self) -> impl Iterator<Item = &Delivery> {
        self.0.iter().flat_map(|q| q.items.iter())
    }

    pub fn push_back(&mut self, d: Delivery) {
        let q = self.0.get_or_insert_with(Box::default);
        q.bytes += d.message.queued_size();
        q.items.push_back(d);
    }

    pub fn push_front(&mut self, d: Delivery) {
        let q = self.0.get_or_insert_with(Box::default);
        q.bytes += d.message.queued_size();
        q.items.push_front(d);
    }

    pub fn pop_front(&mut self) -> Option<Delivery> {
        let q = self.0.as_mut()?;
        let d = q.items.pop_front()?;
        q.bytes = q.bytes.saturating_sub(d.message.queued_size());
        self.let_go_if_empty();
        Some(d)
    }

    /// Keeps the messages `keep` says to keep, in order.
    pub fn retain(&mut self, keep: impl FnMut(&Delivery) -> bool) {
        if let Some(q) = self.0.as_mut() {
            q.items.retain(keep);
            q.bytes = q.items.iter().map(|d| d.message.queued_size()).sum();
        }
        self.let_go_if_empty();
    }

    fn let_go_if_empty(&mut self) {
        if self.0.as_ref().is_some_and(|q| q.items.is_empty()) {
            self.0 = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;
    use std::sync::Arc;

    /// The attached connection is kept in 8 bytes: every number the server
    /// gives (from 1) comes back as it was.
    #[test]
    fn a_session_keeps_its_connection_number() {
        let mut s = Session::new("c", ProtocolVersion::V311, 0);
        assert_eq!(s.conn(), None);
        for id in [1, 2, 1 << 40, u64::MAX] {
            s.set_conn(Some(ConnId(id)));
            assert_eq!(s.conn(), Some(ConnId(id)));
        }
        s.set_conn(None);
        assert_eq!(s.conn(), None);
    }

    /// Every idle connection has a session (issue 4: memory per
    /// connection); the rare parts live in `extras`. Print the size with
    /// `--nocapture` when changing the struct.
    #[test]
    fn a_session_stays_small() {
        let size = std::mem::size_of::<Session>();
        println!("Session: {size} bytes");
        // 200 bytes take a 208-byte chunk from glibc's allocator.
        assert!(size <= 200, "a session is {size} bytes");
    }

    #[test]
    fn rare_parts_cost_nothing_until_used() {
        let mut s = Session::new("c", ProtocolVersion::V311, 0);
        s.set_mount(None);
        s.set_will(None);
        assert!(s.extras.is_none(), "no box for nothing");
        assert!(!s.awaits_pubrel(7));
        assert!(!s.release(7));
        assert!(s.await_pubrel(7));
        assert!(!s.await_pubrel(7), "already awaited");
        assert_eq!(s.awaiting_pubrel(), 1);
        assert!(s.release(7));
        assert_eq!(s.awaiting_pubrel(), 0);
        assert!(s.extras.is_some(), "kept while the connection lasts");
        assert!(s.take_will().is_none());
        assert!(s.extras.is_none(), "the box goes with the connection");
        s.set_mount(Some("m/".into()));
        assert_eq!(s.mount().map(|m| &**m), Some("m/"));
        assert!(s.await_pubrel(8));
        assert!(s.release(8));
        assert_eq!(s.mount().map(|m| &**m), Some("m/"), "kept: not empty");
        s.set_mount(None);
        assert!(s.extras.is_none());
    }

    fn inflight(session: &mut Session) -> Inflight {
        Inflight {
            packet_id: session.next_packet_id(),
            delivery: Delivery {
                message: Arc::new(Message::plain(
                    "t",
                    bytes::Bytes::from_static(b"m"),
                    QoS::AtLeastOnce,
                    false,
                )),
                qos: QoS::AtLeastOnce,
                retain: false,
                sub_ids: SubIds::None,
                shared_group: None,
                seq: 0,
            },
            state: OutState::AwaitAck,
        }
    }

    /// A full window (max_inflight_messages 0): every id handed out is free,
    /// acknowledged ones are found, and ids freed in the middle are reused
    /// only once free.
    #[test]
    fn a_full_window_hands_out_free_ids_and_finds_acknowledged_ones() {
        let mut s = Session::new("c", ProtocolVersion::V311, 0);
        for _ in 0..65_000 {
            let f = inflight(&mut s);
            assert!(
                !s.inflight.holds(f.packet_id),
                "{:?} handed out twice",
                f.packet_id
            );
            s.inflight.push_back(f);
        }
        let ids: HashSet<u16> = s.inflight.iter().map(|f| f.packet_id.get()).collect();
        assert_eq!(ids.len(), 65_000);
        // Acknowledged out of order, in the middle: found, and free again.
        let middle = s.inflight[30_000].packet_id;
        let pos = s.inflight_position(middle).expect("in flight");
        assert_eq!(s.inflight.remove(pos).map(|f| f.packet_id), Some(middle));
        assert!(!s.inflight.holds(middle) && s.inflight_position(middle).is_none());
        // In order, from the front.
        let first = s.inflight[0].packet_id;
        assert_eq!(s.inflight_position(first), Some(0));
        s.inflight.remove(0);
        // The next ids skip every one in use, then reach the freed ones.
        let mut fresh = Vec::new();
        for _ in 0..537 {
            let f = inflight(&mut s);
            assert!(!s.inflight.holds(f.packet_id));
            fresh.push(f.packet_id);
            s.inflight.push_back(f);
        }
        assert!(fresh.contains(&middle) && fresh.contains(&first));
        // A retain rebuilds the index; emptied, the index goes.
        s.inflight.retain(|f| f.packet_id != middle);
        assert!(!s.inflight.holds(middle));
        while !s.inflight.is_empty() {
            s.inflight.remove(0);
        }
        assert!(!s.inflight.indexed());
        assert!(s.inflight.0.is_none(), "an empty window holds no memory");
    }

    /// `max_inflight_bytes` is checked against the window's payload bytes,
    /// which a large window counts as it goes rather than adding up.
    #[test]
    fn the_window_knows_its_bytes_below_and_above_the_index() {
        let mut s = Session::new("c", ProtocolVersion::V311, 0);
        let sum = |s: &Session| -> u64 {
            s.inflight
                .iter()
                .map(|f| f.delivery.message.queued_size())
                .sum()
        };
        // One-byte payloads: n messages, n bytes.
        for n in 1..=200u64 {
            let f = inflight(&mut s);
            s.inflight.push_back(f);
            assert_eq!(s.inflight.bytes(), n);
        }
        assert!(s.inflight.indexed(), "200 is past INDEX_FROM");
        s.inflight.remove(100);
        s.inflight.remove(0);
        assert_eq!(s.inflight.bytes(), 198);
        s.inflight.retain(|f| f.packet_id.get() % 2 == 0);
        assert_eq!(s.inflight.bytes(), sum(&s));
        s.link.send_window = 1000;
        assert!(s.window_has_room(1, sum(&s) + 1));
        assert!(!s.window_has_room(2, sum(&s) + 1));
        while s.inflight.len() > 10 {
            s.inflight.remove(0);
        }
        assert_eq!(s.inflight.bytes(), 10);
    }
}
