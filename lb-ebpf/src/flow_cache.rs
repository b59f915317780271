//! The per-CPU flow cache in front of `FLOWS` (see `lb_common::flow::FlowCacheEntry`): an
//! established DR flow is forwarded from one array slot of this CPU, with no hash-map
//! lookup, and asks the shared flow table again only once a second.

use aya_ebpf::helpers::bpf_jiffies64;
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

#[inline(always)]
fn slot(settings: &Settings, key: &FlowKey) -> Option<*mut FlowCacheEntry> {
    FLOW_CACHE.get_ptr_mut(flow_cache_slot(key, settings.flow_cache_mask))
}

/// The cached backend of `pkt`'s flow, if this CPU's slot holds the flow, of the current
/// epoch, filled less than a second (or the flow's idle timeout) ago
/// (`Settings::tcp_cache_ticks`), and its backend is still present. A SYN never hits: it may
/// start a new connection on a reused tuple. The entry of a connection's SYN enters `FLOWS`
/// here, with the connection's next packet.
#[inline(always)]
pub fn lookup(pkt: &Parsed) -> Option<Hit> {
    if pkt.is_syn() {
        return None;
    }
    let settings = SETTINGS.get(0)?;
    // SAFETY: this CPU's slot; no other program run uses it meanwhile.
    let e = unsafe { &mut *slot(settings, &pkt.flow)? };
    if !same(&e.key, &pkt.flow) || e.epoch != settings.flow_cache_epoch {
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
/// holds it.
#[inline(always)]
pub fn fill(pkt: &Parsed, vip_id: u32, backend_id: u32, shared: bool) {
    let Some(settings) = SETTINGS.get(0) else {
        return;
    };
    let Some(e) = slot(settings, &pkt.flow) else {
        return;
    };
    // SAFETY: as in `lookup`.
    unsafe {
        e.write(FlowCacheEntry {
            key: pkt.flow,
            backend_id,
            vip_id,
            filled_ticks: ticks(),
            epoch: settings.flow_cache_epoch,
            shared: shared as u32,
        })
    };
}
