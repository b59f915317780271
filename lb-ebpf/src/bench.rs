//! Entry points for the per-packet benchmark (`bench/src/xdp.rs`) only; the agent loads
//! `xdp_lb` alone. They share the balancer's maps, so the benchmark configures them through
//! the agent's own map writer:
//! - `bench_cycle` gives each run the next of 65,536 source ports, then runs the balancer:
//!   `repeat` alone would run one flow, this makes the flow table's working set 65,536
//!   flows (no cache holds their entries);
//! - `bench_handshake` starts connections: runs alternate between the SYN and the first
//!   ACK of the next of 65,536 connections (the SYN is balanced and pinned on this CPU,
//!   the ACK puts the flow into the shared flow table), so two runs are what starting a
//!   connection costs;
//! - `bench_restore` keeps the frame's first 80 bytes (Ethernet, IPv6 and TCP headers), runs
//!   the balancer and writes them back, so that `repeat` runs every iteration on the frame
//!   as given even where the balancer rewrites it (NAT); `bench_restore_floor` does the same
//!   keeping and writing back, and only swaps MACs;
//! - `bench_cycle_floor` does the same port rewrite, then only swaps MACs and returns
//!   XDP_TX: the rewrite's own cost, which the benchmark subtracts;
//! - `bench_stage_*` run the balancer's first stages and stop (XDP_PASS when the stage
//!   found what it looks for, XDP_ABORTED otherwise), so that successive rows show what each
//!   stage costs.

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{Array, PerCpuArray},
    programs::XdpContext,
};

use crate::{
    flow,
    maps::{self, vip_key, FLOWS, SCRATCH, VIPS},
    parse::{self, raw16, set_raw16, Kind, Parsed, ETH_HLEN, TCP_FLAG_ACK, TCP_FLAG_SYN},
};

/// The next source port. Shared by the CPUs, not per CPU: a long test run may migrate
/// between its iterations (it reschedules when asked to), and the sequence of ports must go
/// on where it stopped, or some flows are never pinned by the warm-up. Only one test run
/// uses it at a time.
#[map]
static BENCH_PORT: Array<u32> = Array::with_max_entries(1, 0);

/// The next value of `BENCH_PORT`.
#[inline(always)]
fn next_index() -> Option<u32> {
    let n = BENCH_PORT.get_ptr_mut(0)?;
    // SAFETY: the benchmark's test runs are its only users, one at a time.
    unsafe {
        let i = *n;
        *n = i.wrapping_add(1);
        Some(i)
    }
}

/// Writes source port `port` into an untagged IPv4 TCP/UDP frame without IP options
/// (the TCP/UDP checksum is left stale: DR forwarding does not read it).
#[inline(always)]
fn set_port(ctx: &XdpContext, port: u16) -> bool {
    let ipv4_no_options =
        raw16(ctx, 12) == Some(0x0800u16.to_be()) && parse::byte(ctx, ETH_HLEN) == Some(0x45);
    ipv4_no_options && set_raw16(ctx, ETH_HLEN + 20, port.to_be()).is_some()
}

/// Writes the next source port (see `set_port`).
#[inline(always)]
fn next_port(ctx: &XdpContext) -> bool {
    next_index().is_some_and(|i| set_port(ctx, i as u16))
}

#[xdp]
pub fn bench_cycle(ctx: XdpContext) -> u32 {
    if !next_port(&ctx) {
        return xdp_action::XDP_ABORTED;
    }
    crate::run(&ctx)
}

/// Even runs: the SYN of connection `i / 2`; odd runs: its ACK. The port counter moves
/// by whole cycles of 65,536 elsewhere, so the pairs stay in step.
#[xdp]
pub fn bench_handshake(ctx: XdpContext) -> u32 {
    let Some(i) = next_index() else {
        return xdp_action::XDP_ABORTED;
    };
    let flags = if i & 1 == 0 {
        TCP_FLAG_SYN
    } else {
        TCP_FLAG_ACK
    };
    // TCP flags of an IPv4 frame without options (`set_port` checks that it is one).
    if !set_port(&ctx, (i >> 1) as u16)
        || parse::set_byte(&ctx, ETH_HLEN + 20 + 13, flags).is_none()
    {
        return xdp_action::XDP_ABORTED;
    }
    crate::run(&ctx)
}

/// Header bytes `bench_restore` keeps, as 2-byte words: Ethernet (14), IPv6 (40) and TCP
/// (20) headers, rounded up. Its frames must be at least this long.
const KEPT_WORDS: usize = 40;

/// The headers `bench_restore` keeps while the balancer runs (the program's stack has no
/// room for them).
#[map]
static BENCH_KEPT: PerCpuArray<[u16; KEPT_WORDS]> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn keep(ctx: &XdpContext) -> bool {
    let (Some(kept), Some(head)) = (
        BENCH_KEPT.get_ptr_mut(0),
        parse::words::<KEPT_WORDS>(ctx, 0),
    ) else {
        return false;
    };
    // SAFETY: this CPU's entry, used by this program run alone.
    unsafe { *kept = head };
    true
}

#[inline(always)]
fn write_back(ctx: &XdpContext) -> bool {
    match BENCH_KEPT.get(0) {
        Some(kept) => parse::set_words(ctx, 0, *kept).is_some(),
        None => false,
    }
}

#[xdp]
pub fn bench_restore(ctx: XdpContext) -> u32 {
    if !keep(&ctx) {
        return xdp_action::XDP_ABORTED;
    }
    let verdict = crate::run(&ctx);
    if !write_back(&ctx) {
        return xdp_action::XDP_ABORTED;
    }
    verdict
}

/// What the TX baseline does: swap the MACs.
#[inline(always)]
fn swap_macs(ctx: &XdpContext) -> bool {
    match parse::words::<6>(ctx, 0) {
        Some([a, b, c, d, e, f]) => parse::set_words(ctx, 0, [d, e, f, a, b, c]).is_some(),
        None => false,
    }
}

#[xdp]
pub fn bench_restore_floor(ctx: XdpContext) -> u32 {
    if keep(&ctx) && swap_macs(&ctx) && write_back(&ctx) {
        xdp_action::XDP_TX
    } else {
        xdp_action::XDP_ABORTED
    }
}

#[xdp]
pub fn bench_cycle_floor(ctx: XdpContext) -> u32 {
    if next_port(&ctx) && swap_macs(&ctx) {
        xdp_action::XDP_TX
    } else {
        xdp_action::XDP_ABORTED
    }
}

/// Stage 1: the parsed headers of a TCP or UDP frame.
#[inline(always)]
fn parsed(ctx: &XdpContext) -> Option<&'static Parsed> {
    let scratch = SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's entry, used by this program run alone.
    let scratch = unsafe { &mut *scratch };
    // As `balance` does: plain IPv4 in line, anything else through the parse subprogram.
    if let Some(pkt) = parse::plain_ipv4(ctx) {
        scratch.pkt = pkt;
        return Some(&scratch.pkt);
    }
    match parse::parse(ctx, scratch) {
        Ok(Kind::Transport) => Some(&scratch.pkt),
        _ => None,
    }
}

fn verdict(found: bool) -> u32 {
    if found {
        xdp_action::XDP_PASS
    } else {
        xdp_action::XDP_ABORTED
    }
}

#[xdp]
pub fn bench_stage_parse(ctx: XdpContext) -> u32 {
    verdict(parsed(&ctx).is_some())
}

/// Stage 2: the VIP lookup.
#[xdp]
pub fn bench_stage_vip(ctx: XdpContext) -> u32 {
    let Some(pkt) = parsed(&ctx) else {
        return xdp_action::XDP_ABORTED;
    };
    let key = vip_key(pkt.flow.dst, pkt.flow.dport_be, pkt.flow.proto);
    // SAFETY: read only.
    verdict(unsafe { VIPS.get(key) }.is_some())
}

/// Stage 3: the flow-table lookup (no refresh).
#[xdp]
pub fn bench_stage_flow(ctx: XdpContext) -> u32 {
    let Some(pkt) = parsed(&ctx) else {
        return xdp_action::XDP_ABORTED;
    };
    let key = vip_key(pkt.flow.dst, pkt.flow.dport_be, pkt.flow.proto);
    // SAFETY: read only.
    let Some(vip) = (unsafe { VIPS.get(key) }) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: read only.
    verdict(unsafe { FLOWS.get(flow::key_of(&pkt.flow, vip)) }.is_some())
}

/// Stage 4: the ingress interface's entry (DR's source MAC).
#[xdp]
pub fn bench_stage_iface(ctx: XdpContext) -> u32 {
    let Some(pkt) = parsed(&ctx) else {
        return xdp_action::XDP_ABORTED;
    };
    let key = vip_key(pkt.flow.dst, pkt.flow.dport_be, pkt.flow.proto);
    // SAFETY: read only.
    let Some(vip) = (unsafe { VIPS.get(key) }) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: read only.
    if unsafe { FLOWS.get(flow::key_of(&pkt.flow, vip)) }.is_none() {
        return xdp_action::XDP_ABORTED;
    }
    verdict(maps::iface(ctx.ingress_ifindex() as u32).is_some())
}
