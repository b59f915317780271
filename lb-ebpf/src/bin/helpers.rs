//! Small programs that are not the load balancer, in an object of their own so that
//! loading them creates none of the balancer's maps:
//! - `xdp_pass` for the far end of a veth: native XDP_TX frames are only accepted by a
//!   veth whose peer runs an XDP program (see docs/lab.md);
//! - `xdp_tx_baseline`, the least a forwarding program does, for benchmarks;
//! - `flow_lru_shared` / `flow_lru_percpu`: the flow-table lookup-or-insert on a shared
//!   LRU and on a per-CPU LRU, so the benchmark can compare the two map types;
//! - `flow_lru_insert`: an insert that replaces the entry of the same key, the work a SYN
//!   does in the flow table, on its own.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    helpers::bpf_ktime_get_ns,
    macros::{map, xdp},
    maps::{LruHashMap, LruPerCpuHashMap},
    programs::XdpContext,
};
use lb_common::flow::{FlowEntry, FlowKey};

#[map]
static BENCH_LRU_SHARED: LruHashMap<FlowKey, FlowEntry> = LruHashMap::with_max_entries(4096, 0);
#[map]
static BENCH_LRU_PERCPU: LruPerCpuHashMap<FlowKey, FlowEntry> =
    LruPerCpuHashMap::with_max_entries(4096, 0);

/// The 40 bytes after the Ethernet header stand in for a flow key.
#[inline(always)]
fn key_of(ctx: &XdpContext) -> Option<FlowKey> {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + 14 + core::mem::size_of::<FlowKey>() > end {
        return None;
    }
    // SAFETY: bounds checked above; FlowKey is plain data, read unaligned.
    Some(unsafe { ((start + 14) as *const FlowKey).read_unaligned() })
}

macro_rules! lookup_or_insert {
    ($map:expr, $ctx:expr) => {{
        let Some(key) = key_of(&$ctx) else {
            return xdp_action::XDP_PASS;
        };
        // SAFETY: ktime has no preconditions.
        let now = unsafe { bpf_ktime_get_ns() };
        match $map.get_ptr_mut(&key) {
            // SAFETY: pointer from the lookup.
            Some(e) => unsafe { (*e).last_seen_ns = now },
            None => {
                let _ = $map.insert(
                    &key,
                    &FlowEntry {
                        backend_id: 1,
                        vip_id: 0,
                        last_seen_ns: now,
                    },
                    0,
                );
            }
        }
        xdp_action::XDP_PASS
    }};
}

#[xdp]
pub fn flow_lru_shared(ctx: XdpContext) -> u32 {
    lookup_or_insert!(BENCH_LRU_SHARED, ctx)
}

#[xdp]
pub fn flow_lru_percpu(ctx: XdpContext) -> u32 {
    lookup_or_insert!(BENCH_LRU_PERCPU, ctx)
}

#[xdp]
pub fn flow_lru_insert(ctx: XdpContext) -> u32 {
    let Some(key) = key_of(&ctx) else {
        return xdp_action::XDP_ABORTED;
    };
    let entry = FlowEntry {
        backend_id: 1,
        vip_id: 0,
        last_seen_ns: 0,
    };
    match BENCH_LRU_SHARED.insert(key, entry, 0) {
        Ok(()) => xdp_action::XDP_PASS,
        Err(_) => xdp_action::XDP_ABORTED,
    }
}

#[xdp]
pub fn xdp_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Swaps source and destination MAC and bounces the frame.
#[xdp]
pub fn xdp_tx_baseline(ctx: XdpContext) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + 12 > end {
        return xdp_action::XDP_PASS;
    }
    let eth = start as *mut [[u8; 6]; 2];
    // SAFETY: the 12 bytes were bounds-checked above.
    unsafe {
        let [dst, src] = *eth;
        *eth = [src, dst];
    }
    xdp_action::XDP_TX
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
