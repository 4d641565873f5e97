//! The records a reader has already believed, to refuse copies written again.

use std::collections::{HashMap, VecDeque};

/// Records remembered per reader: about 6 MiB. Older ones are forgotten first; a copy
/// of a record that old still meets the per-message-id deduplication every consumer
/// does, and on command topics the freshness window.
pub const CAPACITY: usize = 100_000;

/// Signature digest → where the record was read.
pub struct Seen {
    at: HashMap<[u8; 16], Option<super::record::Position>>,
    order: VecDeque<[u8; 16]>,
    capacity: usize,
}

impl Seen {
    pub fn new(capacity: usize) -> Seen {
        Seen { at: HashMap::new(), order: VecDeque::new(), capacity: capacity.max(1) }
    }

    /// True the first time a signature is seen, and again when the same record is read
    /// again at the same position (a redelivery, not a replay).
    pub fn first_time(&mut self, key_id: &str, sig: &[u8; 64], at: Option<super::record::Position>) -> bool {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(key_id.as_bytes());
        h.update([0]);
        h.update(sig);
        let digest: [u8; 16] = h.finalize()[..16].try_into().unwrap_or([0; 16]);
        match self.at.get(&digest) {
            Some(seen_at) => at.is_some() && *seen_at == at,
            None => {
                if self.order.len() >= self.capacity
                    && let Some(old) = self.order.pop_front()
                {
                    self.at.remove(&old);
                }
                self.order.push_back(digest);
                self.at.insert(digest, at);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_are_forgotten_at_capacity() {
        let mut s = Seen::new(2);
        let (a, b, c) = ([1u8; 64], [2u8; 64], [3u8; 64]);
        assert!(s.first_time("k", &a, None));
        assert!(!s.first_time("k", &a, None), "no position: every repeat is a replay");
        assert!(s.first_time("k", &b, None));
        assert!(s.first_time("k", &c, None));
        assert!(s.first_time("k", &a, None), "forgotten");
        assert!(s.first_time("other", &b, None) || !s.first_time("other", &b, None));
    }
}
