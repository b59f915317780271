//! The flow 5-tuple and the hash that maps it to a lookup-table slot. The program and the
//! agent's tests compute it with this one function, so a test can predict the backend.

use crate::addr::Addr;

/// A flow's 5-tuple as seen on the wire.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    pub src: Addr,
    pub dst: Addr,
    /// Ports in network byte order.
    pub sport_be: u16,
    pub dport_be: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<FlowKey>() == 40);

/// Default number of entries of the `FLOWS` LRU table (the agent may size it at load).
pub const DEFAULT_FLOW_CAPACITY: u32 = 1 << 18;

/// Packets whose backend came from the lookup table because their flow had no usable
/// entry (a new flow, a SYN reusing a tuple, an idle entry, one left by another VIP or
/// naming a removed backend): the one entry of `FLOW_STATS`, a per-CPU `u64`. Packets
/// balanced (forwarded or not) minus these found their flow pinned.
pub const FLOW_STAT_HASHED: u32 = 0;

/// DR packets forwarded from the per-CPU flow cache, without the flow table: the second
/// entry of `FLOW_STATS`. Over `forwarded_dr` packets, the cache's hit rate.
pub const FLOW_STAT_CACHE_HITS: u32 = 1;

/// Entries of `FLOW_STATS`.
pub const FLOW_STATS_LEN: u32 = 2;

/// Value of `FLOWS`: which backend an established flow is pinned to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowEntry {
    pub backend_id: u32,
    /// The VIP the flow was balanced for; an entry left by a removed VIP whose id was
    /// reused must not steer the new VIP's traffic.
    pub vip_id: u32,
    /// `bpf_ktime_get_coarse_ns()` (`CLOCK_MONOTONIC` at tick resolution) of the flow's last packet.
    pub last_seen_ns: u64,
}
const _: () = assert!(core::mem::size_of::<FlowEntry>() == 16);

/// Default slots per CPU of `FLOW_CACHE` (64 bytes each, so 512 KiB per CPU: within a
/// CPU's own cache, where it costs a few ns even to the flows it does not hold).
pub const DEFAULT_FLOW_CACHE_SLOTS: u32 = 1 << 13;

/// How long a flow-cache entry stands for the flow table without asking it: its idle
/// timeout and LRU position are refreshed this often (or at the flow's idle timeout, if
/// shorter), not at every packet.
pub const FLOW_CACHE_REFRESH_NS: u64 = 1_000_000_000;

/// Value of `FLOW_CACHE`, a per-CPU two-way set-associative cache in front of `FLOWS` for
/// DR flows: the set of a wire 5-tuple is slot [`flow_cache_slot`] with its lowest bit
/// cleared and the slot after it. A packet whose tuple sits in its set, of the current
/// epoch and fresh, is forwarded to the cached backend with no hash-map lookup at all; any
/// other packet takes the full path, which refills its entry, or the set's older one.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowCacheEntry {
    /// The tuple as on the wire (with source affinity too: the entry caches what the
    /// client's entry in `FLOWS` says for this connection).
    pub key: FlowKey,
    pub backend_id: u32,
    pub vip_id: u32,
    /// `bpf_jiffies64()` when the full path filled the entry.
    pub filled_ticks: u64,
    /// `Settings::flow_cache_epoch` when it was filled.
    pub epoch: u32,
    /// 1 when `FLOWS` holds the flow. 0 for a SYN's entry: a connection is pinned in the
    /// cache of the CPU that saw its SYN and enters the shared table with its next
    /// packet, so SYNs that are never answered (scans, floods) never evict an
    /// established flow from `FLOWS`.
    pub shared: u32,
}
const _: () = assert!(core::mem::size_of::<FlowCacheEntry>() == 64);

/// The `FLOW_CACHE` slot of `key`: its words folded into one (no two tuples that differ
/// in the source address's last byte and the source port alone fold alike), then
/// MurmurHash3's finaliser, masked. Cheaper than [`flow_hash`]; a collision only costs
/// the full path.
#[inline(always)]
pub fn flow_cache_slot(key: &FlowKey, mask: u32) -> u32 {
    let ports = (key.sport_be as u32) | (key.dport_be as u32) << 16;
    let dst = key.dst[0] ^ key.dst[1] ^ key.dst[2] ^ key.dst[3];
    let mut h = key.src[0] ^ key.src[1] ^ key.src[2] ^ key.src[3];
    h ^= dst.rotate_left(16) ^ ports.wrapping_mul(0x9e37_79b1) ^ key.proto as u32;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    (h ^ (h >> 16)) & mask
}

#[inline(always)]
fn mix(h: u32, word: u32) -> u32 {
    let k = word
        .wrapping_mul(0xcc9e_2d51)
        .rotate_left(15)
        .wrapping_mul(0x1b87_3593);
    (h ^ k)
        .rotate_left(13)
        .wrapping_mul(5)
        .wrapping_add(0xe654_6b64)
}

/// MurmurHash3 (x86, 32-bit) over the tuple's words, seeded per cluster. Written out
/// without loops so the BPF verifier sees straight-line code.
#[inline(always)]
pub fn flow_hash(key: &FlowKey, seed: u32) -> u32 {
    let mut h = seed;
    h = mix(h, key.src[0]);
    h = mix(h, key.src[1]);
    h = mix(h, key.src[2]);
    h = mix(h, key.src[3]);
    h = mix(h, key.dst[0]);
    h = mix(h, key.dst[1]);
    h = mix(h, key.dst[2]);
    h = mix(h, key.dst[3]);
    h = mix(h, (key.sport_be as u32) << 16 | key.dport_be as u32);
    h = mix(h, key.proto as u32);
    h ^= 40;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(sport: u16) -> FlowKey {
        FlowKey {
            src: [1, 2, 3, 4],
            dst: [5, 6, 7, 8],
            sport_be: sport.to_be(),
            dport_be: 80u16.to_be(),
            proto: 6,
            _pad: [0; 3],
        }
    }

    #[test]
    fn seed_and_every_field_change_the_hash() {
        let base = flow_hash(&key(1000), 0);
        assert_ne!(base, flow_hash(&key(1000), 1));
        assert_ne!(base, flow_hash(&key(1001), 0));
        let mut k = key(1000);
        k.proto = 17;
        assert_ne!(base, flow_hash(&k, 0));
    }

    #[test]
    fn source_ports_spread_evenly_over_three_buckets() {
        let mut buckets = [0u32; 3];
        for port in 0..30_000u16 {
            buckets[(flow_hash(&key(port), 7) % 3) as usize] += 1;
        }
        for b in buckets {
            assert!((9_500..=10_500).contains(&b), "{buckets:?}");
        }
    }
}
