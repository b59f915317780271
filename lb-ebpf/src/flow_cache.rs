//! The per-CPU flow cache in front of `FLOWS` (see `lb_common::flow::FlowCacheEntry`): an
//! established DR flow is forwarded from an array slot of this CPU, with no hash-map
//! lookup, and asks the shared flow table again only once a second. Two-way set
//! associative: a flow may sit in either slot of its set, so two busy flows whose tuples
//! hash alike both stay cached instead of evicting each other at every packet.

use aya_ebpf::helpers::{bpf_get_smp_processor_id, bpf_jiffies64};
use lb_common::{
    backend::Backend,
    flow::{flow_cache_slot, FlowCacheEntry, FlowEntry, FlowKey},
    settings::Settings,
};

use crate::{
    flow,
    maps::{FLOWS, FLOW_CACHE, SETTINGS},
    parse::{Parsed, IPPROTO_TCP},
};

/// A cache hit: the flow's VIP and backend.
pub struct Hit {
    pub vip_id: u32,
    pub backend_id: u32,
    pub backend: &'static Backend,
}

#[inline(always)]
fn words(key: &FlowKey) -> &[u32; 10] {
    // SAFETY: FlowKey is 40 bytes of plain data, 4-byte aligned.
    unsafe { &*(key as *const FlowKey as *const [u32; 10]) }
}

/// Whether two tuples are equal, compared a word at a time (a derived comparison of the
/// arrays becomes a `bcmp` call, which BPF does not have).
#[inline(always)]
fn same(a: &FlowKey, b: &FlowKey) -> bool {
    let (a, b) = (words(a), words(b));
    let mut diff = 0;
    let mut i = 0;
    while i < 10 {
        diff |= a[i] ^ b[i];
        i += 1;
    }
    diff == 0
}

/// The kernel's tick counter: the verifier turns the helper into one load, where the
/// coarse clock is a call that costs several ns per packet.
#[inline(always)]
fn ticks() -> u64 {
    // SAFETY: no preconditions.
    unsafe { bpf_jiffies64() }
}

/// The two `FLOW_CACHE` indexes of `key`'s set in this CPU's slots: an even slot and the
/// odd one after it. (With one slot per CPU, that slot twice: a direct-mapped cache.)
#[inline(always)]
fn set(settings: &Settings, key: &FlowKey) -> (u32, u32) {
    let mask = settings.flow_cache_mask;
    // SAFETY: no preconditions. XDP runs with migration disabled: the CPU stays the same
    // for the whole program run.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let first = cpu.wrapping_mul(mask.wrapping_add(1)) + (flow_cache_slot(key, mask) & !1);
    (first, first + (mask & 1))
}

/// The entry at `index`, if it holds `key`.
#[inline(always)]
fn holding(index: u32, key: &FlowKey) -> Option<&'static mut FlowCacheEntry> {
    // SAFETY: one of this CPU's slots; no other program run uses them meanwhile.
    let e = unsafe { &mut *FLOW_CACHE.get_ptr_mut(index)? };
    same(&e.key, key).then_some(e)
}

/// The cached backend of `pkt`'s flow, if a slot of its set on this CPU holds the flow,
/// of the current epoch, filled less than a second (or the flow's idle timeout) ago
/// (`Settings::tcp_cache_ticks`), and its backend is still present. A SYN never hits: it may
/// start a new connection on a reused tuple. The entry of a connection's SYN enters `FLOWS`
/// here, with the connection's next packet.
#[inline(always)]
pub fn lookup(pkt: &Parsed) -> Option<Hit> {
    if pkt.is_syn() {
        return None;
    }
    let settings = SETTINGS.get(0)?;
    let (first, second) = set(settings, &pkt.flow);
    let e = match holding(first, &pkt.flow) {
        Some(e) => e,
        None => holding(second, &pkt.flow)?,
    };
    if e.epoch != settings.flow_cache_epoch {
        return None;
    }
    let valid_ticks = if pkt.flow.proto == IPPROTO_TCP {
        settings.tcp_cache_ticks
    } else {
        settings.udp_cache_ticks
    };
    let ticks = ticks();
    if ticks.wrapping_sub(e.filled_ticks) >= valid_ticks as u64 {
        return None;
    }
    // A removed or failed backend: the full path re-balances the flow, as it would have.
    let backend = flow::backend(e.backend_id)?;
    if e.shared == 0 {
        let entry = FlowEntry {
            backend_id: e.backend_id,
            vip_id: e.vip_id,
            last_seen_ns: flow::now(),
        };
        // As in `flow::backend_for`: failing to pin means the next packet is hashed again.
        let _ = FLOWS.insert(pkt.flow, entry, 0);
        e.shared = 1;
        e.filled_ticks = ticks;
    }
    Some(Hit {
        vip_id: e.vip_id,
        backend_id: e.backend_id,
        backend,
    })
}

/// Records what the full path decided for `pkt`'s flow; `shared` says whether `FLOWS`
/// holds it. The flow replaces its own entry if its set has one, or else the entry filled
/// longer ago (one of an older epoch first).
#[inline(always)]
pub fn fill(pkt: &Parsed, vip_id: u32, backend_id: u32, shared: bool) {
    let Some(settings) = SETTINGS.get(0) else {
        return;
    };
    let (first, second) = set(settings, &pkt.flow);
    let Some(a) = FLOW_CACHE.get_ptr_mut(first) else {
        return;
    };
    let now = ticks();
    // SAFETY: this CPU's slots, as in `lookup`.
    let target = unsafe {
        match FLOW_CACHE.get_ptr_mut(second) {
            Some(b) if !same(&(*a).key, &pkt.flow) => {
                let age = |e: &FlowCacheEntry| {
                    if e.epoch != settings.flow_cache_epoch {
                        u64::MAX
                    } else {
                        now.wrapping_sub(e.filled_ticks)
                    }
                };
                if same(&(*b).key, &pkt.flow) || age(&*b) > age(&*a) {
                    b
                } else {
                    a
                }
            }
            _ => a,
        }
    };
    // SAFETY: as above.
    unsafe {
        target.write(FlowCacheEntry {
            key: pkt.flow,
            backend_id,
            vip_id,
            filled_ticks: now,
            epoch: settings.flow_cache_epoch,
            shared: shared as u32,
        })
    };
}
