//! Per-CPU counter updates (no atomics needed: each CPU owns its slot).

use aya_ebpf::maps::PerCpuArray;
use lb_common::{
    flow::{FLOW_STAT_CACHE_HITS, FLOW_STAT_HASHED},
    stats::{Counter, Reason},
};

use crate::maps::{
    BACKEND_REPLY_STATS, BACKEND_STATS, FLOW_STATS, REASON_STATS, VIP_REPLY_STATS, VIP_STATS,
};

#[inline(always)]
fn add(map: &PerCpuArray<Counter>, index: u32, bytes: u64) {
    if let Some(c) = map.get_ptr_mut(index) {
        // SAFETY: the pointer comes from the map lookup and this CPU's slot is ours alone.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
}

#[inline(always)]
pub fn count_reason(reason: Reason, bytes: u64) {
    add(&REASON_STATS, reason as u32, bytes);
}

#[inline(always)]
pub fn count_vip(vip_id: u32, bytes: u64) {
    add(&VIP_STATS, vip_id, bytes);
}

#[inline(always)]
pub fn count_backend(backend_id: u32, bytes: u64) {
    add(&BACKEND_STATS, backend_id, bytes);
}

#[inline(always)]
pub fn count_vip_reply(vip_id: u32, bytes: u64) {
    add(&VIP_REPLY_STATS, vip_id, bytes);
}

#[inline(always)]
pub fn count_backend_reply(backend_id: u32, bytes: u64) {
    add(&BACKEND_REPLY_STATS, backend_id, bytes);
}

#[inline(always)]
fn count_flow_stat(index: u32) {
    if let Some(c) = FLOW_STATS.get_ptr_mut(index) {
        // SAFETY: as in `add`.
        unsafe { *c += 1 };
    }
}

/// A packet balanced through the lookup table rather than by its flow's entry.
#[inline(always)]
pub fn count_hashed() {
    count_flow_stat(FLOW_STAT_HASHED);
}

/// A DR packet forwarded from the flow cache.
#[inline(always)]
pub fn count_cache_hit() {
    count_flow_stat(FLOW_STAT_CACHE_HITS);
}
