//! The XDP load balancer: parse → VIP → flow / lookup table → backend → rewrite → count →
//! verdict.
#![no_std]
#![no_main]

mod dr;
mod flow;
mod maps;
mod parse;
mod stats;

use aya_ebpf::{macros::xdp, programs::XdpContext};
use lb_common::{
    backend::{BACKEND_F_MAC_VALID, BACKEND_F_PRESENT},
    stats::Reason,
    vip::VipKey,
};

use maps::{BACKENDS, IFACES, VIPS};

#[xdp]
pub fn xdp_lb(ctx: XdpContext) -> u32 {
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    let reason = balance(&ctx, bytes);
    stats::count_reason(reason, bytes);
    reason.verdict() as u32
}

#[inline(always)]
fn balance(ctx: &XdpContext, bytes: u64) -> Reason {
    let pkt = match parse::parse(ctx) {
        Ok(p) => p,
        Err(reason) => return reason,
    };
    let key = VipKey {
        addr: pkt.flow.dst,
        port_be: pkt.flow.dport_be,
        proto: pkt.flow.proto,
        _pad: 0,
    };
    // SAFETY: VIPS entries are only replaced whole by the agent; a racing update yields
    // the old or the new VIP, both valid.
    let Some(vip) = (unsafe { VIPS.get(key) }) else {
        return Reason::PassNotVip;
    };
    let ifindex = ctx.ingress_ifindex() as u32;
    // SAFETY: as above.
    let Some(iface) = (unsafe { IFACES.get(ifindex) }) else {
        return Reason::PassUnknownIface;
    };
    stats::count_vip(vip.id, bytes);

    let Some(backend_id) = flow::backend_for(&pkt, vip) else {
        return Reason::DropNoBackend;
    };
    let Some(backend) = BACKENDS.get(backend_id) else {
        return Reason::DropNoBackend;
    };
    if backend.flags & BACKEND_F_PRESENT == 0 {
        return Reason::DropNoBackend;
    }
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
