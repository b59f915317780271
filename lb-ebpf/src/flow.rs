//! The flow table: established flows keep their backend when the lookup table changes.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use lb_common::{
    backend::{BACKEND_F_PRESENT, NO_BACKEND},
    flow::{FlowEntry, FlowKey},
    vip::{VipInfo, VIP_F_SOURCE_AFFINITY},
};

use crate::{
    maps::{BACKENDS, BACKEND_TABLE, FLOWS, SETTINGS},
    parse::{Parsed, IPPROTO_TCP},
};

/// Picks the backend id for `pkt`: the pinned one if the flow is known, its backend still
/// exists and the entry is fresh; otherwise the lookup table's choice, which is then
/// pinned. `None` when the VIP has no backend.
#[inline(always)]
pub fn backend_for(pkt: &Parsed, vip: &VipInfo) -> Option<u32> {
    let affinity = vip.flags & VIP_F_SOURCE_AFFINITY != 0;
    let mut key: FlowKey = pkt.flow;
    if affinity {
        // Every connection of a client shares one entry and one hash.
        key.sport_be = 0;
    }
    let (seed, idle_ns) = match SETTINGS.get(0) {
        Some(s) if pkt.flow.proto == IPPROTO_TCP => (s.hash_seed, s.tcp_idle_ns),
        Some(s) => (s.hash_seed, s.udp_idle_ns),
        None => (0, 0),
    };
    // SAFETY: ktime has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };

    // A new SYN on a known tuple is a new connection (port reuse): balance it afresh.
    // With affinity the point is to stick, so a SYN keeps the client's entry.
    if !pkt.is_syn() || affinity {
        if let Some(entry) = FLOWS.get_ptr_mut(&key) {
            // SAFETY: the pointer comes from the lookup; a concurrent update of the same
            // entry by another CPU writes the same fields with equally valid values.
            let e = unsafe { &mut *entry };
            if e.vip_id == vip.id
                && now.wrapping_sub(e.last_seen_ns) < idle_ns
                && backend_present(e.backend_id)
            {
                e.last_seen_ns = now;
                return Some(e.backend_id);
            }
        }
    }

    if vip.table_size == 0 {
        return None;
    }
    let slot = vip
        .table_offset
        .wrapping_add(lb_common::flow::flow_hash(&key, seed) % vip.table_size);
    let id = match BACKEND_TABLE.get(slot) {
        Some(&id) if id != NO_BACKEND => id,
        _ => return None,
    };
    // A full table evicts its least recently used entry; failing to pin only means the
    // next packet is hashed again, to the same backend while the set is unchanged.
    let _ = FLOWS.insert(
        &key,
        &FlowEntry {
            backend_id: id,
            vip_id: vip.id,
            last_seen_ns: now,
        },
        0,
    );
    Some(id)
}

#[inline(always)]
fn backend_present(id: u32) -> bool {
    matches!(BACKENDS.get(id), Some(b) if b.flags & BACKEND_F_PRESENT != 0)
}
