//! The session table: a slab of boxed sessions, found by index on the
//! publish path, and an index by client id for CONNECT.
//!
//! The index holds only slab indices (4 bytes each) and hashes the client
//! id the session itself holds, so the id is not kept a second time.

use std::hash::BuildHasher;

use hashbrown::HashTable;

use crate::ids::SessionKey;
use crate::session::Session;

#[derive(Debug, Default)]
pub(super) struct Sessions {
    slots: Vec<Option<Box<Session>>>,
    free: Vec<u32>,
    by_client_id: HashTable<SessionKey>,
    /// Randomly keyed, so that clients cannot choose ids that collide.
    hasher: std::collections::hash_map::RandomState,
}

impl Sessions {
    /// Adds a session. Its client id must not have one already (see
    /// [`Sessions::find`]).
    pub(super) fn insert(&mut self, session: Session) -> SessionKey {
        debug_assert!(self.find(&session.client_id).is_none());
        let hash = self.hasher.hash_one(&*session.client_id);
        let key = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Some(Box::new(session));
                SessionKey(i)
            }
            None => {
                self.slots.push(Some(Box::new(session)));
                SessionKey((self.slots.len() - 1) as u32)
            }
        };
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.by_client_id.insert_unique(hash, key, |k| {
            let id = slot(slots, *k).map_or("", |s| &*s.client_id);
            hasher.hash_one(id)
        });
        key
    }

    pub(super) fn remove(&mut self, key: SessionKey) -> Option<Session> {
        let s = self.slots.get_mut(key.0 as usize)?.take()?;
        self.free.push(key.0);
        let hash = self.hasher.hash_one(&*s.client_id);
        if let Ok(entry) = self.by_client_id.find_entry(hash, |k| *k == key) {
            entry.remove();
        }
        Some(*s)
    }

    /// The session of a client id.
    pub(super) fn find(&self, client_id: &str) -> Option<SessionKey> {
        let hash = self.hasher.hash_one(client_id);
        self.by_client_id
            .find(hash, |k| {
                slot(&self.slots, *k).is_some_and(|s| &*s.client_id == client_id)
            })
            .copied()
    }

    pub(super) fn get(&self, key: SessionKey) -> Option<&Session> {
        slot(&self.slots, key)
    }

    pub(super) fn get_mut(&mut self, key: SessionKey) -> Option<&mut Session> {
        self.slots.get_mut(key.0 as usize)?.as_deref_mut()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &Session> {
        self.slots.iter().flatten().map(|s| &**s)
    }

    pub(super) fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }
}

fn slot(slots: &[Option<Box<Session>>], key: SessionKey) -> Option<&Session> {
    slots.get(key.0 as usize)?.as_deref()
}

#[cfg(test)]
mod tests {
    use super::*;
    use midge_codec::ProtocolVersion;

    fn session(id: &str) -> Session {
        Session::new(id, ProtocolVersion::V311, 0)
    }

    #[test]
    fn sessions_are_found_by_client_id_until_removed() {
        let mut sessions = Sessions::default();
        // Enough to make the index grow (and rehash) several times.
        let keys: Vec<SessionKey> = (0..5000)
            .map(|i| sessions.insert(session(&format!("client-{i}"))))
            .collect();
        assert_eq!(sessions.len(), 5000);
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(sessions.find(&format!("client-{i}")), Some(*key));
        }
        assert_eq!(sessions.find("client-5000"), None);
        assert_eq!(sessions.find(""), None);

        for key in keys.iter().step_by(2) {
            assert!(sessions.remove(*key).is_some());
        }
        assert!(sessions.remove(keys[0]).is_none(), "removed twice");
        for (i, key) in keys.iter().enumerate() {
            let found = sessions.find(&format!("client-{i}"));
            assert_eq!(found, (i % 2 == 1).then_some(*key), "client-{i}");
        }
        // A freed slot is reused, under the new id only.
        let again = sessions.insert(session("newcomer"));
        assert_eq!(again, keys[4998]);
        assert_eq!(sessions.find("newcomer"), Some(again));
        assert_eq!(sessions.find("client-4998"), None);
        assert_eq!(sessions.len(), 2501);
        assert_eq!(sessions.iter().count(), 2501);
    }
}
