//! Shared subscriptions (`$share/{group}/{filter}`, MQTT 5.0 §4.8.2, also
//! offered to 3.1.1 clients as Mosquitto does): each matching message goes
//! to one member of each group, in turn, preferring members that are online.

use bytestring::ByteString;
use std::collections::HashMap;

use crate::ids::SessionKey;
use crate::session::Subscription;
use crate::topic_tree::SubscriptionTree;

#[derive(Debug)]
struct Group {
    members: Vec<(SessionKey, Subscription)>,
    /// Round-robin cursor into `members`.
    next: usize,
    name: ByteString,
    filter: ByteString,
}

#[derive(Debug, Default)]
pub struct SharedGroups {
    tree: SubscriptionTree<u32, ()>,
    groups: Vec<Option<Group>>,
    free: Vec<u32>,
    by_name: HashMap<(ByteString, ByteString), u32>,
}

impl SharedGroups {
    /// Adds or updates `key` in the group; returns true when it was already a member.
    pub fn subscribe(
        &mut self,
        name: &str,
        filter: &str,
        key: SessionKey,
        sub: Subscription,
    ) -> bool {
        let name_key = (ByteString::from(name), ByteString::from(filter));
        let gid = match self.by_name.get(&name_key) {
            Some(&g) => g,
            None => {
                let group = Group {
                    members: Vec::new(),
                    next: 0,
                    name: name_key.0.clone(),
                    filter: name_key.1.clone(),
                };
                let g = match self.free.pop() {
                    Some(g) => {
                        self.groups[g as usize] = Some(group);
                        g
                    }
                    None => {
                        self.groups.push(Some(group));
                        (self.groups.len() - 1) as u32
                    }
                };
                self.tree.insert(filter, g, ());
                self.by_name.insert(name_key, g);
                g
            }
        };
        let Some(Some(group)) = self.groups.get_mut(gid as usize) else {
            return false;
        };
        match group.members.iter_mut().find(|(k, _)| *k == key) {
            Some(m) => {
                m.1 = sub;
                true
            }
            None => {
                group.members.push((key, sub));
                false
            }
        }
    }

    /// Removes `key` from the group; returns true when it was a member.
    pub fn unsubscribe(&mut self, name: &str, filter: &str, key: SessionKey) -> bool {
        let name_key = (ByteString::from(name), ByteString::from(filter));
        let Some(&gid) = self.by_name.get(&name_key) else {
            return false;
        };
        let Some(Some(group)) = self.groups.get_mut(gid as usize) else {
            return false;
        };
        let Some(pos) = group.members.iter().position(|(k, _)| *k == key) else {
            return false;
        };
        group.members.remove(pos);
        if group.next > pos {
            group.next -= 1;
        }
        if group.members.is_empty() {
            self.tree.remove(&group.filter, gid);
            self.by_name
                .remove(&(group.name.clone(), group.filter.clone()));
            self.groups[gid as usize] = None;
            self.free.push(gid);
        }
        true
    }

    /// Calls `f` with every group whose filter matches `topic`.
    pub fn for_each_match(&self, topic: &str, mut f: impl FnMut(u32)) {
        self.tree.for_each_match(topic, |gid, _| f(gid));
    }

    /// The next member to receive a message: the next online one in turn,
    /// else the next one at all. `exclude` skips a member (the one a
    /// message is being taken back from).
    pub fn pick(
        &mut self,
        gid: u32,
        online: impl Fn(SessionKey) -> bool,
        exclude: Option<SessionKey>,
    ) -> Option<(SessionKey, Subscription)> {
        let group = self.groups.get_mut(gid as usize)?.as_mut()?;
        let n = group.members.len();
        let candidates = |want_online: bool| {
            (0..n).map(|i| (group.next + i) % n).find(|&i| {
                let k = group.members[i].0;
                Some(k) != exclude && (!want_online || online(k))
            })
        };
        let i = candidates(true).or_else(|| candidates(false))?;
        group.next = (i + 1) % n;
        Some(group.members[i])
    }

    /// Number of (group, member) subscriptions.
    pub fn len(&self) -> usize {
        self.groups.iter().flatten().map(|g| g.members.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}
