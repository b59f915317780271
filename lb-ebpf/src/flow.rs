//! The flow table: established flows keep their backend when the lookup table changes.

use aya_ebpf::helpers::bpf_ktime_get_coarse_ns;
use lb_common::{
    backend::{Backend, BACKEND_F_PRESENT, NO_BACKEND},
    flow::{FlowEntry, FlowKey},
    stats::Reason,
    vip::{VipInfo, VIP_F_ALL_DOWN_PASS, VIP_F_SOURCE_AFFINITY},
};

use crate::{
    maps::{BACKENDS, BACKEND_TABLE, FLOWS, SETTINGS},
    parse::{Parsed, IPPROTO_TCP},
    stats,
};

/// The clock of flow and NAT entries: `CLOCK_MONOTONIC` at tick resolution (1-10 ms).
/// Idle timeouts are seconds, and the precise clock (`bpf_ktime_get_ns`) costs about as
/// much as a flow-table lookup per packet (bench/README.md, `xdp`).
#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: no preconditions.
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// The flow table key of `flow`: with source affinity every connection of a client shares
/// one entry and one hash.
#[inline(always)]
pub fn key_of(flow: &FlowKey, vip: &VipInfo) -> FlowKey {
    let mut key = *flow;
    if vip.flags & VIP_F_SOURCE_AFFINITY != 0 {
        key.sport_be = 0;
    }
    key
}

/// What happens to a packet of `vip` when it has no usable backend: its `all_down` policy.
#[inline(always)]
pub fn no_backend(vip: &VipInfo) -> Reason {
    if vip.flags & VIP_F_ALL_DOWN_PASS != 0 {
        Reason::PassNoBackend
    } else {
        Reason::DropNoBackend
    }
}

/// The hash seed and the idle timeout of `proto`'s flows.
#[inline(always)]
fn settings(proto: u8) -> (u32, u64) {
    match SETTINGS.get(0) {
        Some(s) if proto == IPPROTO_TCP => (s.hash_seed, s.tcp_idle_ns),
        Some(s) => (s.hash_seed, s.udp_idle_ns),
        None => (0, 0),
    }
}

/// The lookup table's choice for `key`.
#[inline(always)]
fn hashed(key: &FlowKey, vip: &VipInfo, seed: u32) -> Option<u32> {
    if vip.table_size == 0 {
        return None;
    }
    let slot = vip
        .table_offset
        .wrapping_add(lb_common::flow::flow_hash(key, seed) % vip.table_size);
    match BACKEND_TABLE.get(slot) {
        Some(&id) if id != NO_BACKEND => Some(id),
        _ => None,
    }
}

/// Picks the backend id for `pkt`: the pinned one if the flow is known, its backend still
/// exists and the entry is fresh; otherwise the lookup table's choice, which is then
/// pinned, except for a SYN when `syn_in_cache` (DR: the flow cache pins it on this CPU
/// until the connection's next packet). Also says whether `FLOWS` holds the flow. `None`
/// when the VIP has no backend.
#[inline(always)]
pub fn backend_for(
    pkt: &Parsed,
    vip: &VipInfo,
    now: u64,
    syn_in_cache: bool,
) -> Option<(u32, bool)> {
    let affinity = vip.flags & VIP_F_SOURCE_AFFINITY != 0;
    let key = key_of(&pkt.flow, vip);
    let (seed, idle_ns) = settings(pkt.flow.proto);

    // A new SYN on a known tuple is a new connection (port reuse): balance it afresh.
    // With affinity the point is to stick, so a SYN keeps the client's entry.
    let fresh_syn = pkt.is_syn() && !affinity;
    if !fresh_syn {
        if let Some(entry) = FLOWS.get_ptr_mut(key) {
            // SAFETY: the pointer comes from the lookup; a concurrent update of the same
            // entry by another CPU writes the same fields with equally valid values.
            let e = unsafe { &mut *entry };
            if e.vip_id == vip.id
                && now.wrapping_sub(e.last_seen_ns) < idle_ns
                && backend(e.backend_id).is_some()
            {
                // The clock moves once a tick: storing only then keeps the entry's cache
                // line clean on the other CPUs between ticks.
                if e.last_seen_ns != now {
                    e.last_seen_ns = now;
                }
                return Some((e.backend_id, true));
            }
        }
    }

    stats::count_hashed();
    let id = hashed(&key, vip, seed)?;
    if fresh_syn && syn_in_cache {
        return Some((id, false));
    }
    // A full table evicts its least recently used entry; failing to pin only means the
    // next packet is hashed again, to the same backend while the set is unchanged.
    let _ = FLOWS.insert(
        key,
        FlowEntry {
            backend_id: id,
            vip_id: vip.id,
            last_seen_ns: now,
        },
        0,
    );
    Some((id, true))
}

/// The backend `flow` (client → VIP) is pinned to, or else the lookup table's choice,
/// without pinning or refreshing anything: for an ICMP error about the flow.
#[inline(always)]
pub fn backend_of(flow: &FlowKey, vip: &VipInfo) -> Option<u32> {
    let key = key_of(flow, vip);
    let (seed, idle_ns) = settings(flow.proto);
    // SAFETY: entries are plain data; a racing update yields an old or new valid entry.
    if let Some(e) = unsafe { FLOWS.get(key) } {
        let now = now();
        if e.vip_id == vip.id
            && now.wrapping_sub(e.last_seen_ns) < idle_ns
            && backend(e.backend_id).is_some()
        {
            return Some(e.backend_id);
        }
    }
    hashed(&key, vip, seed)
}

/// Backend `id` if its entry is in use.
#[inline(always)]
pub fn backend(id: u32) -> Option<&'static Backend> {
    match BACKENDS.get(id) {
        Some(b) if b.flags & BACKEND_F_PRESENT != 0 => Some(b),
        _ => None,
    }
}
