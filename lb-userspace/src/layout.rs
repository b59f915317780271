//! Where things live in the maps: ids for VIPs and backends, and each VIP's slice of the
//! shared lookup table. Pure bookkeeping, so a reload can be planned in full (and refused
//! if it does not fit) before anything is written.

use std::collections::VecDeque;

/// Hands out ids below a bound. Freed ids are reused oldest-first, so an id stays unused as
/// long as possible: flow entries that still name a removed backend's id find it absent
/// (and re-hash) rather than finding a newcomer.
#[derive(Clone, Debug)]
pub struct IdPool {
    next: u32,
    max: u32,
    free: VecDeque<u32>,
}

impl IdPool {
    pub fn new(max: u32) -> IdPool {
        IdPool {
            next: 0,
            max,
            free: VecDeque::new(),
        }
    }

    pub fn alloc(&mut self) -> Option<u32> {
        if self.next < self.max {
            self.next += 1;
            return Some(self.next - 1);
        }
        self.free.pop_front()
    }

    pub fn release(&mut self, id: u32) {
        self.free.push_back(id);
    }

    /// Marks `id` as in use (an id found in adopted maps); false if it is not free.
    pub fn take(&mut self, id: u32) -> bool {
        if id >= self.max {
            return false;
        }
        if id >= self.next {
            self.free.extend(self.next..id);
            self.next = id + 1;
            return true;
        }
        match self.free.iter().position(|&f| f == id) {
            Some(i) => {
                self.free.remove(i);
                true
            }
            None => false,
        }
    }
}

/// First-fit allocation of contiguous table ranges.
#[derive(Clone, Debug)]
pub struct SlotPool {
    /// Free ranges as (start, len), sorted by start, never adjacent.
    free: Vec<(u32, u32)>,
}

impl SlotPool {
    pub fn new(capacity: u32) -> SlotPool {
        SlotPool {
            free: if capacity > 0 {
                vec![(0, capacity)]
            } else {
                Vec::new()
            },
        }
    }

    pub fn alloc(&mut self, len: u32) -> Option<u32> {
        let i = self.free.iter().position(|&(_, l)| l >= len)?;
        let (start, l) = self.free[i];
        if l == len {
            self.free.remove(i);
        } else {
            self.free[i] = (start + len, l - len);
        }
        Some(start)
    }

    /// Marks `start..start + len` as in use (a range found in adopted maps); false if any
    /// of it is not free.
    pub fn take(&mut self, start: u32, len: u32) -> bool {
        let Some(end) = start.checked_add(len) else {
            return false;
        };
        let Some(i) = self
            .free
            .iter()
            .position(|&(s, l)| s <= start && end <= s + l)
        else {
            return false;
        };
        let (s, l) = self.free[i];
        let mut pieces = Vec::new();
        if start > s {
            pieces.push((s, start - s));
        }
        if s + l > end {
            pieces.push((end, s + l - end));
        }
        self.free.splice(i..=i, pieces);
        true
    }

    pub fn release(&mut self, start: u32, len: u32) {
        if len == 0 {
            return;
        }
        let i = self.free.partition_point(|&(s, _)| s < start);
        self.free.insert(i, (start, len));
        // Merge with the right neighbour, then the left.
        if i + 1 < self.free.len() && self.free[i].0 + self.free[i].1 == self.free[i + 1].0 {
            self.free[i].1 += self.free[i + 1].1;
            self.free.remove(i + 1);
        }
        if i > 0 && self.free[i - 1].0 + self.free[i - 1].1 == self.free[i].0 {
            self.free[i - 1].1 += self.free[i].1;
            self.free.remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_reused_oldest_first_only_when_fresh_ones_run_out() {
        let mut p = IdPool::new(3);
        assert_eq!([p.alloc(), p.alloc()], [Some(0), Some(1)]);
        p.release(0);
        assert_eq!(p.alloc(), Some(2), "a fresh id before a released one");
        p.release(1);
        assert_eq!([p.alloc(), p.alloc(), p.alloc()], [Some(0), Some(1), None]);
    }

    #[test]
    fn adopted_ids_and_ranges_are_taken_out_of_the_pools() {
        let mut p = IdPool::new(8);
        assert!(p.take(3) && p.take(1));
        assert!(!p.take(3), "taken twice");
        assert!(!p.take(8), "out of bounds");
        // The ids skipped over are free, oldest first after the fresh ones.
        let got: Vec<_> = std::iter::from_fn(|| p.alloc()).collect();
        assert_eq!(got, [4, 5, 6, 7, 0, 2]);

        let mut s = SlotPool::new(100);
        assert!(s.take(10, 20));
        assert!(!s.take(25, 10), "overlaps a taken range");
        assert_eq!(s.alloc(10), Some(0));
        assert_eq!(s.alloc(5), Some(30));
        s.release(10, 20);
        assert_eq!(s.alloc(20), Some(10));
    }

    #[test]
    fn slot_ranges_are_first_fit_and_merge_when_released() {
        let mut p = SlotPool::new(100);
        let a = p.alloc(30).unwrap();
        let b = p.alloc(30).unwrap();
        let c = p.alloc(30).unwrap();
        assert_eq!((a, b, c), (0, 30, 60));
        assert_eq!(p.alloc(20), None);
        p.release(b, 30);
        assert_eq!(p.alloc(40), None, "30 + 10 are not contiguous");
        p.release(a, 30);
        assert_eq!(p.alloc(60), Some(0), "merged with its neighbour");
        p.release(0, 60);
        p.release(c, 30);
        assert_eq!(p.alloc(100), Some(0), "everything merged back");
    }
}
