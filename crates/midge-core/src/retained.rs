//! Retained messages indexed by topic name.
//!
//! This module owns the index that answers "which retained messages match this
//! topic filter" when a client subscribes, under the matching rules of
//! [`crate::topic_tree::filter_matches`]. It does not decide what to retain
//! (empty payloads clearing, expiry, persistence are the caller's), and it does
//! not validate topic names or filters.
//!
//! Shape: one node per topic level, children keyed by level string. A filter
//! walks only the branches it can match: a literal level is one lookup, `+`
//! visits every child of one node, `#` visits one subtree. Each node holding a
//! message keeps its full topic, so a match hands out `&str` without building it
//! again. Walks are iterative, like the subscription tree's, so that topics tens
//! of thousands of levels deep cannot overflow the stack.

use std::collections::hash_map;
use std::collections::HashMap;

use crate::topic_tree::{split_level, Level, Stack};

/// Retained messages indexed by topic name, answering "which retained messages
/// match this filter".
pub struct RetainedIndex<V> {
    root: Node<V>,
    len: usize,
}

struct Node<V> {
    children: HashMap<Level, Node<V>>,
    /// The retained message whose topic ends at this node, with that topic.
    message: Option<(Box<str>, V)>,
}

impl<V> Node<V> {
    fn new() -> Self {
        Node {
            children: HashMap::new(),
            message: None,
        }
    }

    fn content(&self) -> usize {
        self.children.len() + usize::from(self.message.is_some())
    }

    /// Detaches the child at `level`; returns it so the caller drops it.
    fn take_child(&mut self, level: &str) -> Option<Self> {
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

impl<V> Drop for Node<V> {
    /// Iterative, so that dropping a very deep chain cannot overflow the stack.
    fn drop(&mut self) {
        if self.children.is_empty() {
            return;
        }
        let mut pending: Vec<Node<V>> = self.children.drain().map(|(_, n)| n).collect();
        while let Some(mut node) = pending.pop() {
            pending.extend(node.children.drain().map(|(_, n)| n));
        }
    }
}

/// Pending work of a filter walk.
enum Frame<'a, V> {
    /// Children of a node reached by the filter's levels before a `+`, and the
    /// filter after that `+`.
    Plus {
        children: hash_map::Iter<'a, Level, Node<V>>,
        rest: Option<&'a str>,
        skip_dollar: bool,
    },
    /// Children of a node under a `#`: every message below matches.
    Subtree {
        children: hash_map::Iter<'a, Level, Node<V>>,
        skip_dollar: bool,
    },
}

impl<V> Default for RetainedIndex<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V> RetainedIndex<V> {
    pub fn new() -> Self {
        RetainedIndex {
            root: Node::new(),
            len: 0,
        }
    }

    /// Sets or replaces the retained message of `topic`; returns the previous one.
    pub fn insert(&mut self, topic: &str, value: V) -> Option<V> {
        let mut node = &mut self.root;
        for level in topic.split('/') {
            let key = level.as_bytes();
            if !node.children.contains_key(key) {
                node.children.insert(Level::new(level), Node::new());
            }
            node = node.children.get_mut(key).expect("inserted above");
        }
        match &mut node.message {
            Some((_, old)) => Some(std::mem::replace(old, value)),
            None => {
                node.message = Some((topic.into(), value));
                self.len += 1;
                None
            }
        }
    }

    /// Clears the retained message of `topic`; returns it. Prunes empty nodes.
    pub fn remove(&mut self, topic: &str) -> Option<V> {
        let mut node = &mut self.root;
        for level in topic.split('/') {
            node = node.children.get_mut(level.as_bytes())?;
        }
        let (_, value) = node.message.take()?;
        self.len -= 1;
        if !node.children.is_empty() {
            return Some(value);
        }

        // Cut the chain of nodes that held only this message, at the deepest
        // ancestor that holds something else (or at the root).
        let mut cut = 0;
        let mut node = &self.root;
        for (depth, level) in topic.split('/').enumerate() {
            if node.content() > 1 {
                cut = depth;
            }
            node = &node.children[level.as_bytes()];
        }
        let mut levels = topic.split('/');
        let mut node = &mut self.root;
        for level in levels.by_ref().take(cut) {
            node = node
                .children
                .get_mut(level.as_bytes())
                .expect("path exists: walked above");
        }
        if let Some(level) = levels.next() {
            drop(node.take_child(level));
        }
        Some(value)
    }

    pub fn get(&self, topic: &str) -> Option<&V> {
        let mut node = &self.root;
        for level in topic.split('/') {
            node = node.children.get(level.as_bytes())?;
        }
        node.message.as_ref().map(|(_, v)| v)
    }

    /// Calls f for every retained message whose topic matches `filter` (may
    /// contain + and #).
    pub fn for_each_match(&self, filter: &str, mut f: impl FnMut(&str, &V)) {
        let f = &mut f;
        let mut stack: Stack<Frame<'_, V>, 16> = Stack::new();
        descend(&self.root, Some(filter), true, &mut stack, f);
        while let Some(frame) = stack.last_mut() {
            match frame {
                Frame::Plus {
                    children,
                    rest,
                    skip_dollar,
                } => match children.next() {
                    Some((level, _)) if *skip_dollar && level.as_bytes().starts_with(b"$") => {}
                    Some((_, child)) => {
                        let rest = *rest;
                        descend(child, rest, false, &mut stack, f);
                    }
                    None => {
                        stack.pop();
                    }
                },
                Frame::Subtree {
                    children,
                    skip_dollar,
                } => match children.next() {
                    Some((level, _)) if *skip_dollar && level.as_bytes().starts_with(b"$") => {}
                    Some((_, child)) => {
                        emit(child, f);
                        if !child.children.is_empty() {
                            stack.push(Frame::Subtree {
                                children: child.children.iter(),
                                skip_dollar: false,
                            });
                        }
                    }
                    None => {
                        stack.pop();
                    }
                },
            }
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<V> std::fmt::Debug for RetainedIndex<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetainedIndex")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

#[inline]
fn emit<V>(node: &Node<V>, f: &mut impl FnMut(&str, &V)) {
    if let Some((topic, value)) = &node.message {
        f(topic, value);
    }
}

/// Follows `rest` (the filter after the levels that led to `node`) through
/// literal levels, emitting what matches and leaving a frame on `stack` for a
/// wildcard. `at_root` is true while no level has been consumed: wildcards there
/// skip topics starting with `$` ([MQTT-4.7.2-1]).
fn descend<'a, V, const N: usize>(
    mut node: &'a Node<V>,
    mut rest: Option<&'a str>,
    mut at_root: bool,
    stack: &mut Stack<Frame<'a, V>, N>,
    f: &mut impl FnMut(&str, &V),
) {
    loop {
        let Some(filter) = rest else {
            emit(node, f);
            return;
        };
        let (level, after) = split_level(filter);
        match level {
            "#" => {
                // `x/#` matches `x` itself (the root holds no message).
                emit(node, f);
                if !node.children.is_empty() {
                    stack.push(Frame::Subtree {
                        children: node.children.iter(),
                        skip_dollar: at_root,
                    });
                }
                return;
            }
            "+" => {
                if !node.children.is_empty() {
                    stack.push(Frame::Plus {
                        children: node.children.iter(),
                        rest: after,
                        skip_dollar: at_root,
                    });
                }
                return;
            }
            _ => match node.children.get(level.as_bytes()) {
                Some(child) => {
                    node = child;
                    rest = after;
                    at_root = false;
                }
                None => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic_tree::filter_matches;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    const TOPICS: &[&str] = &[
        "sport",
        "sport/",
        "sport/tennis",
        "sport/tennis/player1",
        "sport/tennis/player1/ranking",
        "sport/tennis/player1/score/wimbledon",
        "sport/tennis/player2",
        "sport//player1",
        "/",
        "/finance",
        "finance",
        "a//b",
        "a/b",
        "$SYS",
        "$SYS/monitor/Clients",
        "$SYS/x",
        "SYS/monitor/Clients",
        "a/$x",
    ];

    const FILTERS: &[&str] = &[
        "#",
        "+",
        "+/+",
        "/+",
        "+/#",
        "sport/#",
        "sport/+",
        "sport/tennis/player1/#",
        "sport/tennis/+",
        "sport/+/player1",
        "+/monitor/Clients",
        "$SYS/#",
        "$SYS/monitor/+",
        "$SYS",
        "a/+",
        "a/+/b",
        "a//b",
        "nothing/#",
        "nothing/+",
    ];

    #[test]
    fn table_against_filter_matches() {
        let mut index = RetainedIndex::new();
        for (i, topic) in TOPICS.iter().enumerate() {
            assert_eq!(index.insert(topic, i), None);
        }
        assert_eq!(index.len(), TOPICS.len());
        for filter in FILTERS {
            let mut got = Vec::new();
            index.for_each_match(filter, |t, v| {
                assert_eq!(TOPICS[*v], t);
                got.push(t.to_owned());
            });
            got.sort_unstable();
            let mut want: Vec<_> = (TOPICS.iter())
                .filter(|t| filter_matches(filter, t))
                .map(|t| t.to_string())
                .collect();
            want.sort_unstable();
            assert_eq!(got, want, "filter {filter:?}");
        }
    }

    #[test]
    fn dollar_topics() {
        let mut index = RetainedIndex::new();
        index.insert("$SYS/x", 1);
        index.insert("x", 2);
        let all = |filter: &str| {
            let mut got = Vec::new();
            index.for_each_match(filter, |_, v| got.push(*v));
            got.sort_unstable();
            got
        };
        assert_eq!(all("#"), [2]);
        assert_eq!(all("+/x"), Vec::<i32>::new());
        assert_eq!(all("+"), [2]);
        assert_eq!(all("$SYS/#"), [1]);
        assert_eq!(all("$SYS/+"), [1]);
    }

    #[test]
    fn insert_get_remove_prune() {
        let mut index = RetainedIndex::new();
        assert!(index.is_empty());
        assert_eq!(index.insert("a/b/c", "one"), None);
        assert_eq!(index.insert("a/b/c", "two"), Some("one"));
        assert_eq!(index.insert("a", "top"), None);
        assert_eq!(index.len(), 2);
        assert_eq!(index.get("a/b/c"), Some(&"two"));
        assert_eq!(index.get("a/b"), None);
        assert_eq!(index.get("a/b/c/d"), None);
        assert_eq!(index.remove("a/b"), None);
        assert_eq!(index.remove("a/b/c"), Some("two"));
        assert_eq!(index.remove("a/b/c"), None);
        assert!(index.root.children[&b"a"[..]].children.is_empty());
        assert_eq!(index.remove("a"), Some("top"));
        assert!(index.is_empty());
        assert_eq!(index.root.content(), 0);
        assert_eq!(index.root.children.capacity(), 0);
    }

    #[test]
    fn very_deep_topics_do_not_overflow_the_stack() {
        let depth = 40_000;
        let topic = vec!["a"; depth].join("/");
        let mut index = RetainedIndex::new();
        index.insert(&topic, 1);
        index.insert(&topic[..depth - 1], 2); // half as deep
        let count = |filter: &str| {
            let mut n = 0;
            index.for_each_match(filter, |_, _| n += 1);
            n
        };
        assert_eq!(count("#"), 2);
        assert_eq!(count(&vec!["+"; depth].join("/")), 1);
        assert_eq!(count(&topic), 1);
        assert_eq!(index.remove(&topic), Some(1));
        drop(index);
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

    fn check(index: &RetainedIndex<u32>, model: &BTreeMap<String, u32>, filters: &[String]) {
        assert_eq!(index.len(), model.len());
        for (topic, value) in model {
            assert_eq!(index.get(topic), Some(value));
        }
        for filter in filters {
            let mut got = Vec::new();
            index.for_each_match(filter, |t, v| got.push((t.to_owned(), *v)));
            got.sort_unstable();
            let want: Vec<_> = (model.iter())
                .filter(|(t, _)| filter_matches(filter, t))
                .map(|(t, v)| (t.clone(), *v))
                .collect();
            assert_eq!(got, want, "filter {filter:?}");
        }
    }

    proptest! {
        #[test]
        fn index_agrees_with_filter_matches(
            topics in prop::collection::vec(topic(), 0..40),
            filters in prop::collection::vec(filter(), 1..20),
            removes in prop::collection::vec(any::<prop::sample::Index>(), 0..40),
        ) {
            let mut index = RetainedIndex::new();
            let mut model = BTreeMap::new();
            for (i, topic) in topics.iter().enumerate() {
                let previous = model.insert(topic.clone(), i as u32);
                prop_assert_eq!(index.insert(topic, i as u32), previous);
            }
            check(&index, &model, &filters);
            if !topics.is_empty() {
                for i in &removes {
                    let topic = i.get(&topics);
                    prop_assert_eq!(index.remove(topic), model.remove(topic));
                }
                check(&index, &model, &filters);
            }
            for topic in &topics {
                index.remove(topic);
            }
            prop_assert!(index.is_empty());
            prop_assert_eq!(index.root.content(), 0);
        }
    }
}
