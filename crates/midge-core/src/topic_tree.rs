//! Subscription tree: which subscribers' topic filters match a published topic.
//!
//! This module owns the index from topic filters to subscribers and the MQTT
//! matching rules (3.1.1 §4.7, 5.0 §4.7). It does not validate filters or topic
//! names (the caller has), does not know about shared subscriptions (`$share/...`
//! filters are stored as plain filters; grouping them is done elsewhere) and does
//! not interpret the subscription options it stores.
//!
//! Shape: one node per filter level, children keyed by level string, with
//! dedicated slots for the `+` child and for the subscribers of `<node>/#`. A
//! publish walks the topic's levels and only visits nodes that can match, so its
//! cost depends on the topic's depth and the number of matches, never on how many
//! subscriptions exist.
//!
//! Every walk is iterative: a filter or topic may have tens of thousands of
//! levels (65535 bytes of `/`), and recursion that deep would overflow the
//! stack, when matching and even when dropping the tree.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::mem;

/// Subscriptions indexed by topic filter. K identifies a subscriber (a small
/// Copy key such as a session index), V is what the subscriber asked for
/// (options).
pub struct SubscriptionTree<K, V> {
    root: Node<K, V>,
    len: usize,
}

struct Node<K, V> {
    children: HashMap<Level, Node<K, V>>,
    /// The `+` child.
    plus: Option<Box<Node<K, V>>>,
    /// Subscribers of `<this node>/#`. `#` is always the last level, so it needs
    /// no node of its own. Boxed: most nodes have none.
    hash: Option<Box<Subscribers<K, V>>>,
    /// Subscribers whose filter ends at this node.
    subs: Subscribers<K, V>,
}

/// The subscribers of one filter: a dense Vec so that delivery is a tight slice
/// loop, plus a key → position index once the set is large, so that insert and
/// remove stay O(1) with 100k subscribers on one filter.
struct Subscribers<K, V> {
    entries: Vec<(K, V)>,
    /// Built when `entries` grows past `INDEX_ABOVE`, dropped when it shrinks to
    /// half that: below it a linear scan of a few keys beats hashing, and most
    /// filters have one subscriber, which then pays for no map at all. Boxed so
    /// that an absent index costs 8 bytes in every node, not 48.
    #[allow(clippy::box_collection)]
    index: Option<Box<HashMap<K, usize>>>,
}

const INDEX_ABOVE: usize = 16;

impl<K: Copy + Eq + Hash, V> Subscribers<K, V> {
    const fn new() -> Self {
        Subscribers {
            entries: Vec::new(),
            index: None,
        }
    }

    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn position(&self, key: K) -> Option<usize> {
        match &self.index {
            Some(index) => index.get(&key).copied(),
            None => self.entries.iter().position(|(k, _)| *k == key),
        }
    }

    fn insert(&mut self, key: K, value: V) -> Option<V> {
        if let Some(i) = self.position(key) {
            return Some(mem::replace(&mut self.entries[i].1, value));
        }
        self.entries.push((key, value));
        let n = self.entries.len();
        match &mut self.index {
            Some(index) => {
                index.insert(key, n - 1);
            }
            None if n > INDEX_ABOVE => {
                let index = self.entries.iter().enumerate().map(|(i, (k, _))| (*k, i));
                self.index = Some(Box::new(index.collect()));
            }
            None => {}
        }
        None
    }

    fn remove(&mut self, key: K) -> Option<V> {
        let i = match &mut self.index {
            Some(index) => index.remove(&key)?,
            None => self.position(key)?,
        };
        let (_, value) = self.entries.swap_remove(i);
        let n = self.entries.len();
        if let Some(index) = &mut self.index {
            if n <= INDEX_ABOVE / 2 {
                self.index = None;
            } else {
                if i < n {
                    index.insert(self.entries[i].0, i);
                }
                if index.capacity() > 4 * n {
                    index.shrink_to(2 * n);
                }
            }
        }
        if n == 0 {
            self.entries = Vec::new();
        } else if self.entries.capacity() > 4 * n.max(4) {
            self.entries.shrink_to(2 * n);
        }
        Some(value)
    }

    #[inline]
    fn for_each(&self, f: &mut impl FnMut(K, &V)) {
        for (k, v) in &self.entries {
            f(*k, v);
        }
    }
}

impl<K, V> Node<K, V> {
    fn new() -> Self {
        Node {
            children: HashMap::new(),
            plus: None,
            hash: None,
            subs: Subscribers {
                entries: Vec::new(),
                index: None,
            },
        }
    }

    /// How many of children, `+` child, `#` subscribers and own subscribers this
    /// node holds: 0 means it can be pruned.
    fn content(&self) -> usize {
        self.children.len()
            + usize::from(self.plus.is_some())
            + usize::from(self.hash.is_some())
            + usize::from(!self.subs.entries.is_empty())
    }

    fn child(&self, level: &str) -> Option<&Self> {
        if level == "+" {
            self.plus.as_deref()
        } else {
            self.children.get(level.as_bytes())
        }
    }

    fn child_mut(&mut self, level: &str) -> Option<&mut Self> {
        if level == "+" {
            self.plus.as_deref_mut()
        } else {
            self.children.get_mut(level.as_bytes())
        }
    }

    fn child_or_insert(&mut self, level: &str) -> &mut Self {
        if level == "+" {
            return self.plus.get_or_insert_with(|| Box::new(Node::new()));
        }
        let key = level.as_bytes();
        if !self.children.contains_key(key) {
            self.children.insert(Level::new(level), Node::new());
        }
        self.children.get_mut(key).expect("inserted above")
    }

    /// Detaches the child at `level`; returns it so the caller drops it.
    fn take_child(&mut self, level: &str) -> Option<Self> {
        if level == "+" {
            return self.plus.take().map(|b| *b);
        }
        let child = self.children.remove(level.as_bytes());
        let n = self.children.len();
        if n == 0 {
            self.children = HashMap::new();
        } else if self.children.capacity() > 4 * n.max(4) {
            self.children.shrink_to(2 * n);
        }
        child
    }
}

impl<K, V> Drop for Node<K, V> {
    /// Iterative, so that dropping a very deep chain cannot overflow the stack:
    /// each node's children are moved into a flat list before it is dropped.
    fn drop(&mut self) {
        if self.children.is_empty() && self.plus.is_none() {
            return;
        }
        let mut pending: Vec<Node<K, V>> = Vec::new();
        pending.extend(self.children.drain().map(|(_, n)| n));
        pending.extend(self.plus.take().map(|b| *b));
        while let Some(mut node) = pending.pop() {
            pending.extend(node.children.drain().map(|(_, n)| n));
            pending.extend(node.plus.take().map(|b| *b));
            // `node` now has no children: its own drop returns at once.
        }
    }
}

/// A level string as a map key. Short ones (nearly all) are stored inline in
/// the map's bucket: in a large tree a lookup then compares bytes on the cache
/// line it already loaded instead of following a pointer to another one (the
/// profile of a retained `+` scan showed that miss as a third of the time). Keyed
/// by bytes rather than `str` so that reading a key needs no UTF-8 check.
#[derive(Clone)]
pub(crate) enum Level {
    Inline { len: u8, bytes: [u8; Level::INLINE] },
    Heap(Box<[u8]>),
}

impl Level {
    const INLINE: usize = 22;

    pub(crate) fn new(level: &str) -> Self {
        let b = level.as_bytes();
        if b.len() <= Self::INLINE {
            let mut bytes = [0; Self::INLINE];
            bytes[..b.len()].copy_from_slice(b);
            Level::Inline {
                len: b.len() as u8,
                bytes,
            }
        } else {
            Level::Heap(b.into())
        }
    }

    #[inline]
    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            Level::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Level::Heap(b) => b,
        }
    }
}

impl Borrow<[u8]> for Level {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl PartialEq for Level {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Level {}

impl Hash for Level {
    /// Must hash as the `[u8]` it borrows as.
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

/// Splits a filter into the levels leading to its node and whether it ends in
/// `#` (whose subscribers live in that node's `hash` slot).
fn filter_path(filter: &str) -> (impl Iterator<Item = &str> + Clone, bool) {
    let (body, hash) = if filter == "#" {
        (None, true)
    } else if let Some(body) = filter.strip_suffix("/#") {
        (Some(body), true)
    } else {
        (Some(filter), false)
    };
    (body.into_iter().flat_map(|b| b.split('/')), hash)
}

/// First level of `s`, and the rest after the `/` if there is one.
#[inline]
pub(crate) fn split_level(s: &str) -> (&str, Option<&str>) {
    match s.find('/') {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    }
}

/// A LIFO stack that holds its first `N` items inline, so that ordinary walks
/// (topics of fewer than `N` levels) never allocate; deeper ones spill to the
/// heap rather than to the call stack.
pub(crate) struct Stack<T, const N: usize> {
    inline: [Option<T>; N],
    len: usize,
    spill: Vec<T>,
}

impl<T, const N: usize> Stack<T, N> {
    #[inline]
    pub(crate) fn new() -> Self {
        Stack {
            inline: [const { None }; N],
            len: 0,
            spill: Vec::new(),
        }
    }

    #[inline]
    pub(crate) fn push(&mut self, item: T) {
        if self.len < N {
            self.inline[self.len] = Some(item);
            self.len += 1;
        } else {
            self.spill.push(item);
        }
    }

    #[inline]
    pub(crate) fn pop(&mut self) -> Option<T> {
        if let Some(item) = self.spill.pop() {
            return Some(item);
        }
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        self.inline[self.len].take()
    }

    #[inline]
    pub(crate) fn last_mut(&mut self) -> Option<&mut T> {
        if !self.spill.is_empty() {
            return self.spill.last_mut();
        }
        match self.len {
            0 => None,
            n => self.inline[n - 1].as_mut(),
        }
    }
}

impl<K: Copy + Eq + Hash, V> Default for SubscriptionTree<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Copy + Eq + Hash, V> SubscriptionTree<K, V> {
    pub fn new() -> Self {
        SubscriptionTree {
            root: Node::new(),
            len: 0,
        }
    }

    /// Adds or replaces K's subscription to `filter`; returns the previous value
    /// for that (filter, K).
    pub fn insert(&mut self, filter: &str, key: K, value: V) -> Option<V> {
        let (levels, hash) = filter_path(filter);
        let mut node = &mut self.root;
        for level in levels {
            node = node.child_or_insert(level);
        }
        let subs = if hash {
            node.hash
                .get_or_insert_with(|| Box::new(Subscribers::new()))
        } else {
            &mut node.subs
        };
        let previous = subs.insert(key, value);
        if previous.is_none() {
            self.len += 1;
        }
        previous
    }

    /// Removes K's subscription to `filter`; returns it. Prunes empty nodes.
    pub fn remove(&mut self, filter: &str, key: K) -> Option<V> {
        let (levels, hash) = filter_path(filter);

        let mut node = &mut self.root;
        for level in levels.clone() {
            node = node.child_mut(level)?;
        }
        let value = if hash {
            let subs = node.hash.as_deref_mut()?;
            let value = subs.remove(key)?;
            if subs.is_empty() {
                node.hash = None;
            }
            value
        } else {
            node.subs.remove(key)?
        };
        self.len -= 1;
        if node.content() > 0 {
            return Some(value);
        }

        // The filter's node is now empty. Cut the chain of nodes above it that
        // hold nothing else, at the deepest ancestor that holds something else
        // (or at the root).
        let mut cut = 0;
        let mut node = &self.root;
        for (depth, level) in levels.clone().enumerate() {
            if node.content() > 1 {
                cut = depth;
            }
            node = node.child(level).expect("path exists: walked above");
        }
        let mut levels = levels;
        let mut node = &mut self.root;
        for level in levels.by_ref().take(cut) {
            node = node.child_mut(level).expect("path exists: walked above");
        }
        if let Some(level) = levels.next() {
            drop(node.take_child(level));
        }
        Some(value)
    }

    /// Calls `f` once per subscription whose filter matches `topic` (a topic
    /// name, no wildcards).
    pub fn for_each_match(&self, topic: &str, mut f: impl FnMut(K, &V)) {
        let f = &mut f;
        let root = &self.root;
        let (first, rest) = split_level(topic);
        // [MQTT-4.7.2-1]: a filter starting with a wildcard does not match a
        // topic starting with `$`.
        let dollar = first.starts_with('$');

        // Nodes reached by consuming one topic level, with what remains after it.
        let mut stack: Stack<(&Node<K, V>, Option<&str>), 16> = Stack::new();
        if !dollar {
            if let Some(hash) = &root.hash {
                hash.for_each(f);
            }
            if let Some(plus) = &root.plus {
                stack.push((plus, rest));
            }
        }
        if let Some(child) = root.children.get(first.as_bytes()) {
            stack.push((child, rest));
        }
        while let Some((node, rest)) = stack.pop() {
            // `x/#` matches `x` itself and everything below it.
            if let Some(hash) = &node.hash {
                hash.for_each(f);
            }
            match rest {
                None => node.subs.for_each(f),
                Some(rest) => {
                    let (level, rest) = split_level(rest);
                    if let Some(plus) = &node.plus {
                        stack.push((plus, rest));
                    }
                    if let Some(child) = node.children.get(level.as_bytes()) {
                        stack.push((child, rest));
                    }
                }
            }
        }
    }

    /// Number of (filter, key) subscriptions.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<K, V> std::fmt::Debug for SubscriptionTree<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriptionTree")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// True when `filter` matches `topic` under MQTT rules (3.1.1 §4.7, 5.0 §4.7):
/// the reference implementation the tree is tested against.
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    let mut filter_levels = filter.split('/');
    let mut topic_levels = topic.split('/');
    if topic.starts_with('$') && matches!(split_level(filter).0, "+" | "#") {
        return false; // [MQTT-4.7.2-1]
    }
    loop {
        match (filter_levels.next(), topic_levels.next()) {
            // `#` matches the parent level and any number of child levels.
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(f), Some(t)) if f == t => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// (filter, topic, matches)
    const CASES: &[(&str, &str, bool)] = &[
        // Spec examples, 4.7.1.2 multi-level wildcard.
        ("sport/tennis/player1/#", "sport/tennis/player1", true),
        (
            "sport/tennis/player1/#",
            "sport/tennis/player1/ranking",
            true,
        ),
        (
            "sport/tennis/player1/#",
            "sport/tennis/player1/score/wimbledon",
            true,
        ),
        ("sport/tennis/player1/#", "sport/tennis/player2", false),
        ("sport/tennis/player1/#", "sport/tennis", false),
        ("sport/#", "sport", true),
        ("sport/#", "sport/", true),
        ("sport/#", "sports", false),
        ("#", "sport", true),
        ("#", "sport/tennis/player1", true),
        ("#", "/", true),
        ("#", "/a", true),
        ("#", "a/", true),
        // 4.7.1.3 single-level wildcard.
        ("sport/tennis/+", "sport/tennis/player1", true),
        ("sport/tennis/+", "sport/tennis/player2", true),
        ("sport/tennis/+", "sport/tennis/player1/ranking", false),
        ("sport/+", "sport", false),
        ("sport/+", "sport/", true),
        ("+", "sport", true),
        ("+", "sport/", false),
        ("+", "/", false),
        ("+", "", true),
        ("+/+", "/finance", true),
        ("+/+", "a/b", true),
        ("+/+", "a", false),
        ("+/+", "a/b/c", false),
        ("/+", "/finance", true),
        ("/+", "finance", false),
        ("+", "/finance", false),
        ("+/tennis/#", "sport/tennis", true),
        ("+/tennis/#", "sport/tennis/player1", true),
        ("sport/+/player1", "sport/tennis/player1", true),
        ("sport/+/player1", "sport//player1", true),
        ("sport/+/player1", "sport/player1", false),
        ("+/+/#", "a/b", true),
        ("+/+/#", "a", false),
        ("+/#", "a", true),
        // Empty levels are levels.
        ("a//b", "a//b", true),
        ("a//b", "a/b", false),
        ("a/+/b", "a//b", true),
        ("a/", "a/", true),
        ("a/", "a", false),
        ("a", "a/", false),
        ("/a", "/a", true),
        ("/a", "a", false),
        ("/#", "/", true),
        ("/#", "/a/b", true),
        ("/#", "a", false),
        ("a/+", "a/", true),
        // Exact matches, case sensitivity.
        ("sport/tennis", "sport/tennis", true),
        ("sport/tennis", "Sport/tennis", false),
        ("sport/tennis", "sport/tennis/", false),
        ("sport/tennis", "sport", false),
        // 4.7.2 topics beginning with `$`.
        ("#", "$SYS", false),
        ("#", "$SYS/broker/clients", false),
        ("+/monitor/Clients", "$SYS/monitor/Clients", false),
        ("+/monitor/Clients", "SYS/monitor/Clients", true),
        ("+", "$SYS", false),
        ("+/#", "$SYS/x", false),
        ("$SYS/#", "$SYS/monitor/Clients", true),
        ("$SYS/#", "$SYS/x", true),
        ("$SYS/#", "$SYS", true),
        ("$SYS/monitor/+", "$SYS/monitor/Clients", true),
        ("$SYS/monitor/+", "$SYS/monitor", false),
        ("$SYS/+", "$SYS/x", true),
        ("$SYS", "$SYS", true),
        ("$x/+", "$x/y", true),
        // `$` only matters at the first level.
        ("a/+", "a/$x", true),
        ("a/#", "a/$x/y", true),
        ("#", "a$b", true),
        ("+", "a$", true),
        // `$share/...` filters are plain filters here.
        ("$share/g/a/+", "$share/g/a/b", true),
        ("$share/g/a/+", "a/b", false),
    ];

    fn tree_matches(filter: &str, topic: &str) -> bool {
        let mut tree = SubscriptionTree::new();
        tree.insert(filter, 1u32, ());
        let mut n = 0;
        tree.for_each_match(topic, |_, _| n += 1);
        assert!(n <= 1);
        n == 1
    }

    #[test]
    fn table() {
        for &(filter, topic, expected) in CASES {
            assert_eq!(
                filter_matches(filter, topic),
                expected,
                "filter_matches({filter:?}, {topic:?})"
            );
            assert_eq!(
                tree_matches(filter, topic),
                expected,
                "tree: {filter:?} vs {topic:?}"
            );
        }
    }

    #[test]
    fn table_in_one_tree() {
        let mut tree = SubscriptionTree::new();
        let filters: Vec<&str> = CASES.iter().map(|c| c.0).collect();
        for (i, filter) in filters.iter().enumerate() {
            tree.insert(filter, i, *filter);
        }
        for &(_, topic, _) in CASES {
            let mut got = Vec::new();
            tree.for_each_match(topic, |k, v| got.push((k, *v)));
            got.sort_unstable();
            let want: Vec<_> = (filters.iter().enumerate())
                .filter(|(_, f)| filter_matches(f, topic))
                .map(|(i, f)| (i, *f))
                .collect();
            assert_eq!(got, want, "topic {topic:?}");
        }
    }

    #[test]
    fn insert_replaces_and_remove_returns() {
        let mut tree = SubscriptionTree::new();
        assert!(tree.is_empty());
        assert_eq!(tree.insert("a/+", 1u8, "first"), None);
        assert_eq!(tree.insert("a/+", 1, "second"), Some("first"));
        assert_eq!(tree.insert("a/+", 2, "other"), None);
        assert_eq!(tree.insert("a/#", 1, "hash"), None);
        assert_eq!(tree.insert("#", 1, "all"), None);
        assert_eq!(tree.len(), 4);
        let mut got = Vec::new();
        tree.for_each_match("a/b", |k, v| got.push((k, *v)));
        got.sort_unstable();
        assert_eq!(got, [(1, "all"), (1, "hash"), (1, "second"), (2, "other")]);

        assert_eq!(tree.remove("a/+", 3), None);
        assert_eq!(tree.remove("a/b", 1), None);
        assert_eq!(tree.remove("b/#", 1), None);
        assert_eq!(tree.remove("a/+", 1), Some("second"));
        assert_eq!(tree.remove("a/+", 1), None);
        assert_eq!(tree.len(), 3);
        assert_eq!(tree.remove("#", 1), Some("all"));
        assert_eq!(tree.remove("a/#", 1), Some("hash"));
        assert_eq!(tree.remove("a/+", 2), Some("other"));
        assert!(tree.is_empty());
        assert_eq!(tree.root.content(), 0);
    }

    #[test]
    fn prunes_only_empty_branches() {
        let mut tree = SubscriptionTree::new();
        tree.insert("a/b/c/d", 1u8, ());
        tree.insert("a/b", 1, ());
        tree.insert("a/+/x/#", 1, ());
        tree.remove("a/b/c/d", 1);
        // `a/b` still holds a subscriber: only `c/d` below it went.
        let b = &tree.root.children[&b"a"[..]].children[&b"b"[..]];
        assert_eq!(b.content(), 1);
        assert!(b.children.is_empty());
        tree.remove("a/+/x/#", 1);
        assert!(tree.root.children[&b"a"[..]].plus.is_none());
        tree.remove("a/b", 1);
        assert_eq!(tree.root.content(), 0);
        assert_eq!(tree.root.children.capacity(), 0);
    }

    #[test]
    fn many_keys_on_one_filter() {
        let mut tree = SubscriptionTree::new();
        let n = 10_000u32;
        for k in 0..n {
            assert_eq!(tree.insert("news/#", k, k), None);
        }
        assert_eq!(tree.insert("news/#", 77, 1), Some(77));
        assert_eq!(tree.len(), n as usize);
        for k in (0..n).filter(|k| k % 3 != 0) {
            let want = if k == 77 { 1 } else { k };
            assert_eq!(tree.remove("news/#", k), Some(want));
        }
        let mut got = Vec::new();
        tree.for_each_match("news/x", |k, v| got.push((k, *v)));
        got.sort_unstable();
        let want: Vec<_> = (0..n).filter(|k| k % 3 == 0).map(|k| (k, k)).collect();
        assert_eq!(got, want);
        for k in (0..n).filter(|k| k % 3 == 0) {
            assert_eq!(tree.remove("news/#", k), Some(k));
        }
        assert!(tree.is_empty());
        assert_eq!(tree.root.content(), 0);
    }

    #[test]
    fn very_deep_filters_and_topics_do_not_overflow_the_stack() {
        let depth = 40_000;
        let filter = vec!["+"; depth].join("/");
        let topic = vec!["a"; depth].join("/");
        let mut tree = SubscriptionTree::new();
        tree.insert(&filter, 1u8, ());
        tree.insert(&topic, 2, ());
        tree.insert(&format!("{topic}/#"), 3, ());
        let mut got = Vec::new();
        tree.for_each_match(&topic, |k, _| got.push(k));
        got.sort_unstable();
        assert_eq!(got, [1, 2, 3]);
        assert_eq!(tree.remove(&filter, 1), Some(()));
        // Dropped with the remaining deep branch.
        drop(tree);
    }

    fn level() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec!["a", "b", "", "$x", "$"])
    }

    fn topic() -> impl Strategy<Value = String> {
        prop::collection::vec(level(), 1..5).prop_map(|l| l.join("/"))
    }

    fn filter() -> impl Strategy<Value = String> {
        let level = prop_oneof![3 => level(), 2 => Just("+")];
        (prop::collection::vec(level, 0..5), any::<bool>()).prop_map(|(mut l, hash)| {
            if hash || l.is_empty() {
                l.push("#");
            }
            l.join("/")
        })
    }

    fn check(
        tree: &SubscriptionTree<u8, u32>,
        model: &BTreeMap<(String, u8), u32>,
        topics: &[String],
    ) {
        assert_eq!(tree.len(), model.len());
        for topic in topics {
            let mut got = Vec::new();
            tree.for_each_match(topic, |k, v| got.push((k, *v)));
            got.sort_unstable();
            let mut want: Vec<_> = (model.iter())
                .filter(|((f, _), _)| filter_matches(f, topic))
                .map(|((_, k), v)| (*k, *v))
                .collect();
            want.sort_unstable();
            assert_eq!(got, want, "topic {topic:?}");
        }
    }

    proptest! {
        #[test]
        fn tree_agrees_with_filter_matches(
            subs in prop::collection::vec((filter(), 0u8..4), 0..40),
            topics in prop::collection::vec(topic(), 1..20),
            removes in prop::collection::vec(any::<prop::sample::Index>(), 0..40),
        ) {
            let mut tree = SubscriptionTree::new();
            let mut model = BTreeMap::new();
            for (i, (filter, key)) in subs.iter().enumerate() {
                let previous = model.insert((filter.clone(), *key), i as u32);
                prop_assert_eq!(tree.insert(filter, *key, i as u32), previous);
            }
            check(&tree, &model, &topics);
            if !subs.is_empty() {
                for index in &removes {
                    let (filter, key) = index.get(&subs);
                    let previous = model.remove(&(filter.clone(), *key));
                    prop_assert_eq!(tree.remove(filter, *key), previous);
                }
                check(&tree, &model, &topics);
            }
            for (filter, key) in &subs {
                tree.remove(filter, *key);
            }
            prop_assert!(tree.is_empty());
            prop_assert_eq!(tree.root.content(), 0);
        }
    }
}
