//! The XDP load balancer: parse → VIP → flow / lookup table → backend → rewrite (DR: MACs;
//! NAT: addresses, ports, checksums, then the FIB's route) → count → verdict. Packets that
//! are not for a VIP may be NAT replies or ICMP errors about balanced flows.
#![no_std]
#![no_main]

mod bench;
mod csum;
mod dr;
mod fib;
mod flow;
mod flow_cache;
mod icmp;
mod maps;
mod nat;
mod parse;
mod stats;

use aya_ebpf::{macros::xdp, programs::XdpContext};
use lb_common::{
    backend::{Backend, BACKEND_F_MAC_VALID},
    iface::IfaceInfo,
    stats::Reason,
    vip::{VipInfo, MODE_DR, MODE_NAT},
};

use maps::{SCRATCH, VIPS};
use parse::{Kind, Parsed};

/// Built as `lb_next` (see Cargo.toml): a changed program for upgrade tests.
const NEXT: bool = is_next(option_env!("CARGO_BIN_NAME"));

const fn is_next(bin: Option<&str>) -> bool {
    match bin {
        Some(name) => {
            let (a, b) = (name.as_bytes(), b"lb_next");
            if a.len() != b.len() {
                return false;
            }
            let mut i = 0;
            while i < a.len() {
                if a[i] != b[i] {
                    return false;
                }
                i += 1;
            }
            true
        }
        None => false,
    }
}

#[xdp]
pub fn xdp_lb(ctx: XdpContext) -> u32 {
    run(&ctx)
}

/// The program; also the core of the benchmark's entry points (`bench.rs`).
#[inline(always)]
fn run(ctx: &XdpContext) -> u32 {
    let mut bytes = (ctx.data_end() - ctx.data()) as u64;
    if NEXT {
        // A round trip through the stack: other instructions, the same result.
        bytes = core::hint::black_box(bytes);
    }
    let reason = balance(ctx, bytes);
    stats::count_reason(reason, bytes);
    reason.verdict() as u32
}

#[inline(always)]
fn balance(ctx: &XdpContext, bytes: u64) -> Reason {
    // Most of what a node receives is for no VIP. Unless it may be a NAT reply, a plain
    // IPv4 packet to an address the VIP filter does not know is passed at once: the
    // verdict and reason that `transport` would reach.
    let plain = parse::plain_ipv4(ctx);
    if let Some(pkt) = &plain {
        if maps::may_be_vip(&pkt.flow.dst) {
            // Most packets for a VIP belong to an established flow: this CPU's flow cache
            // forwards those before anything else is looked up (or copied).
            if let Some(hit) = flow_cache::lookup(pkt) {
                return cached(ctx, hit, bytes);
            }
        } else if !nat::in_use() {
            return Reason::PassNotVip;
        }
    }
    // The one entry of a per-CPU array always exists.
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return Reason::PassMalformed;
    };
    // SAFETY: this CPU's entry, used by this program run alone.
    let scratch = unsafe { &mut *scratch };
    if let Some(pkt) = plain {
        scratch.pkt = pkt;
        return transport(ctx, &scratch.pkt, bytes, true);
    }
    match parse::parse(ctx, scratch) {
        Ok(Kind::Transport) => transport(ctx, &scratch.pkt, bytes, false),
        Ok(Kind::IcmpError) => icmp::handle(ctx, &scratch.pkt, &scratch.inner),
        Err(reason) => reason,
    }
}

/// A TCP or UDP packet: to a VIP (DR or NAT), a NAT backend's reply, or neither.
/// `cache_checked`: the flow cache has been asked already.
#[inline(always)]
fn transport(ctx: &XdpContext, pkt: &Parsed, bytes: u64, cache_checked: bool) -> Reason {
    // Most of what a node receives is for no VIP; the address filter says so cheaper than
    // the hash lookup of the key would.
    let may_be_vip = maps::may_be_vip(&pkt.flow.dst);
    if may_be_vip && !cache_checked {
        if let Some(hit) = flow_cache::lookup(pkt) {
            return cached(ctx, hit, bytes);
        }
    }
    let key = maps::vip_key(pkt.flow.dst, pkt.flow.dport_be, pkt.flow.proto);
    let vip = if may_be_vip {
        // SAFETY: VIPS entries are only replaced whole by the agent; a racing update
        // yields the old or the new VIP, both valid.
        unsafe { VIPS.get(key) }
    } else {
        None
    };
    let Some(vip) = vip else {
        // Checked here rather than in the subprogram: calling it costs more than the check.
        if !nat::in_use() {
            return Reason::PassNotVip;
        }
        return nat::reply(ctx, pkt).unwrap_or_else(|mtu| icmp::send_too_big(ctx, pkt, mtu));
    };
    match vip.mode {
        MODE_DR => direct_return(ctx, pkt, vip, bytes),
        MODE_NAT => nat::forward(ctx, pkt, &key, vip)
            .unwrap_or_else(|mtu| icmp::send_too_big(ctx, pkt, mtu)),
        _ => Reason::PassNotVip,
    }
}

/// DR for a flow this CPU's flow cache knows.
#[inline(always)]
fn cached(ctx: &XdpContext, hit: flow_cache::Hit, bytes: u64) -> Reason {
    let Some(iface) = maps::iface(ctx.ingress_ifindex() as u32) else {
        return Reason::PassUnknownIface;
    };
    stats::count_vip(hit.vip_id, bytes);
    stats::count_cache_hit();
    send_to(ctx, iface, hit.backend_id, hit.backend, bytes)
}

/// DR: the frame goes to the backend's MAC, out of the interface it came in on.
// Each path is a BPF subprogram of its own: inlined together, their locals exceed the
// 512-byte stack.
#[inline(never)]
fn direct_return(ctx: &XdpContext, pkt: &Parsed, vip: &VipInfo, bytes: u64) -> Reason {
    let Some(iface) = maps::iface(ctx.ingress_ifindex() as u32) else {
        return Reason::PassUnknownIface;
    };
    stats::count_vip(vip.id, bytes);
    let Some((backend_id, shared)) = flow::backend_for(pkt, vip, flow::now(), true) else {
        return flow::no_backend(vip);
    };
    let Some(backend) = flow::backend(backend_id) else {
        return flow::no_backend(vip);
    };
    flow_cache::fill(pkt, vip.id, backend_id, shared);
    send_to(ctx, iface, backend_id, backend, bytes)
}

/// The end of both DR paths: to the backend's MAC, from ours.
#[inline(always)]
fn send_to(
    ctx: &XdpContext,
    iface: &IfaceInfo,
    backend_id: u32,
    backend: &Backend,
    bytes: u64,
) -> Reason {
    if backend.flags & BACKEND_F_MAC_VALID == 0 {
        return Reason::DropMacUnresolved;
    }
    if !dr::rewrite_macs(ctx, backend.mac, iface.mac) {
        return Reason::PassMalformed;
    }
    stats::count_backend(backend_id, bytes);
    Reason::ForwardedDr
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
