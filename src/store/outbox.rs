//! Bookkeeping of the MQTT outbox tree: its size, and which messages to drop when it is full.
//!
//! The outbox keeps ready-to-send messages while the broker is unreachable, within a message
//! count and a byte budget. When a new message does not fit, the least severe, oldest queued
//! message goes first; a new message is dropped itself only when everything queued is more
//! severe. Every drop is counted by severity.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};

use crate::config::Severity;

/// What a batch of new messages does to the outbox.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Queued messages to drop to make room.
    pub evict: Vec<u64>,
    /// For each new message: whether it is queued (false: dropped, nothing less severe to evict).
    pub admit: Vec<bool>,
}

/// Size and drop-order index of the outbox, rebuilt from the tree at start.
#[derive(Debug)]
pub struct Index {
    /// Drop order: least severe first (`Reverse`: `Severity` sorts most severe first), then oldest.
    order: BTreeSet<(Reverse<Severity>, u64)>,
    entries: HashMap<u64, (Severity, usize)>,
    bytes: usize,
    max_messages: usize,
    max_bytes: usize,
    /// The newest key whose write has been flushed; readers see nothing newer.
    pub durable: u64,
}

impl Index {
    /// An empty index with the configured bounds.
    pub fn new(max_messages: usize, max_bytes: usize) -> Index {
        Index { order: BTreeSet::new(), entries: HashMap::new(), bytes: 0, max_messages, max_bytes, durable: 0 }
    }

    /// Records a queued message.
    pub fn add(&mut self, key: u64, severity: Severity, size: usize) {
        if self.entries.insert(key, (severity, size)).is_none() {
            self.order.insert((Reverse(severity), key));
            self.bytes += size;
        }
    }

    /// Forgets a message (acknowledged or dropped); its severity if it was queued.
    pub fn remove(&mut self, key: u64) -> Option<Severity> {
        let (severity, size) = self.entries.remove(&key)?;
        self.order.remove(&(Reverse(severity), key));
        self.bytes -= size;
        Some(severity)
    }

    /// Queued messages and their bytes.
    pub fn depth(&self) -> (usize, usize) {
        (self.entries.len(), self.bytes)
    }

    /// Decides which queued messages make room for `new` (severity, size) messages, in order.
    pub fn plan(&self, new: &[(Severity, usize)]) -> Plan {
        let mut plan = Plan::default();
        let (mut count, mut bytes) = (self.entries.len(), self.bytes);
        let mut candidates = self.order.iter().peekable();
        for &(severity, size) in new {
            let mut fits = size <= self.max_bytes;
            while fits && (count + 1 > self.max_messages || bytes + size > self.max_bytes) {
                // Only messages as severe as the new one or less make room for it.
                match candidates.next_if(|(Reverse(queued), _)| *queued >= severity) {
                    Some(&(_, key)) => {
                        plan.evict.push(key);
                        count -= 1;
                        bytes -= self.entries[&key].1;
                    }
                    None => fits = false,
                }
            }
            if fits {
                count += 1;
                bytes += size;
            }
            plan.admit.push(fits);
        }
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_outbox_drops_least_severe_oldest_first() {
        let mut i = Index::new(3, 1000);
        i.add(1, Severity::Minor, 10);
        i.add(2, Severity::Warning, 10);
        i.add(3, Severity::Critical, 10);
        // A major message evicts the warning (least severe), then the minor one.
        let plan = i.plan(&[(Severity::Major, 10), (Severity::Major, 10)]);
        assert_eq!(plan, Plan { evict: vec![2, 1], admit: vec![true, true] });
        // A warning cannot push out anything more severe than itself: it is dropped.
        let mut full = Index::new(2, 1000);
        full.add(7, Severity::Critical, 10);
        full.add(8, Severity::Major, 10);
        assert_eq!(full.plan(&[(Severity::Warning, 10)]), Plan { evict: vec![], admit: vec![false] });
    }

    #[test]
    fn byte_budget_counts_and_oversized_messages_are_refused() {
        let mut i = Index::new(100, 100);
        i.add(1, Severity::Minor, 60);
        let plan = i.plan(&[(Severity::Minor, 50), (Severity::Critical, 101)]);
        assert_eq!(plan, Plan { evict: vec![1], admit: vec![true, false] });
        assert_eq!(i.remove(1), Some(Severity::Minor));
        assert_eq!(i.remove(1), None);
        assert_eq!(i.depth(), (0, 0));
    }
}
