//! ICMP errors about balanced flows, so that path MTU discovery (fragmentation needed,
//! packet too big) and unreachable/time-exceeded reports reach the host that sent the
//! packet in question.
//!
//! An error is addressed to the sender of the packet it quotes, so its outer destination is
//! the quoted source. Three cases are recognised by the quoted packet (never by the outer
//! sender, which is usually a router):
//! - it was sent from a VIP (`src` = VIP address/port) toward a client: the error came from
//!   the client's side. For a DR VIP the backend itself sent that packet, so the error goes
//!   to the flow's backend by MAC, untouched. For a NAT VIP this node translated it, so the
//!   error is translated to the backend (outer destination, quoted source) and routed.
//! - it was sent toward a NAT backend on a client's behalf (the quoted tuple, reversed, is
//!   in `NAT_CONNS`): the error came from the backend's side and is translated back (quoted
//!   destination → VIP, and the outer source too if the backend sent the error itself).
//! - anything else (errors about the node's own traffic, echo, neighbour discovery) goes to
//!   the kernel (`pass_icmp`).
//!
//! The flow's backend is the one its flow table entry names, or else the lookup table's
//! choice; ICMP never creates or refreshes an entry.

use aya_ebpf::programs::XdpContext;
use lb_common::{
    backend::BACKEND_F_MAC_VALID,
    flow::FlowKey,
    stats::Reason,
    vip::{VipInfo, MODE_DR, MODE_NAT},
};

use crate::{
    dr, flow,
    maps::{flow_key, vip_key, IFACES, NAT_CONNS, VIPS},
    nat::{self, addr_eq, IcmpTranslation, Side},
    parse::{byte, embedded, Embedded, Parsed},
};

const ICMP_HLEN: usize = 8;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMPV6_DEST_UNREACH: u8 = 1;
const ICMPV6_PKT_TOOBIG: u8 = 2;
const ICMPV6_TIME_EXCEED: u8 = 3;

/// `ip` is ICMP or ICMPv6: the packet quoted by an error about TCP or UDP; anything else
/// is left to the kernel.
#[inline(always)]
pub fn parse_error(ctx: &XdpContext, ip: &Parsed) -> Result<Embedded, Reason> {
    let (l4, end) = (ip.l4(), ip.end());
    if l4 + ICMP_HLEN > end {
        return Err(Reason::PassMalformed);
    }
    let kind = byte(ctx, l4).ok_or(Reason::PassMalformed)?;
    let error = if ip.v6 {
        matches!(
            kind,
            ICMPV6_DEST_UNREACH | ICMPV6_PKT_TOOBIG | ICMPV6_TIME_EXCEED
        )
    } else {
        matches!(kind, ICMP_DEST_UNREACH | ICMP_TIME_EXCEEDED)
    };
    if !error {
        return Err(Reason::PassIcmp);
    }
    embedded(ctx, l4 + ICMP_HLEN, ip.v6, end).ok_or(Reason::PassIcmp)
}

/// The tuple of the other direction.
#[inline(always)]
fn reversed(f: &FlowKey) -> FlowKey {
    flow_key(f.dst, f.src, f.dport_be, f.sport_be, f.proto)
}

/// Sends an ICMP error about a balanced flow where it belongs (see the module docs).
#[inline(never)]
pub fn handle(ctx: &XdpContext, outer: &Parsed, inner: &Embedded) -> Reason {
    if !addr_eq(&outer.flow.dst, &inner.flow.src) {
        return Reason::PassIcmp;
    }
    let key = vip_key(inner.flow.src, inner.flow.sport_be, inner.flow.proto);
    // SAFETY: VIPS entries are only replaced whole by the agent.
    if let Some(vip) = unsafe { VIPS.get(key) } {
        return from_client_side(ctx, outer, inner, vip);
    }
    if !nat::in_use() {
        return Reason::PassIcmp;
    }
    // SAFETY: entries are plain data written whole by this program.
    if let Some(entry) = unsafe { NAT_CONNS.get(reversed(&inner.flow)) } {
        // The backend's own errors (port unreachable, ...) must come from the VIP too.
        let outer_addr = if addr_eq(&outer.flow.src, &inner.flow.dst) {
            entry.vip
        } else {
            outer.flow.src
        };
        let t = IcmpTranslation {
            outer: Side::Src,
            outer_addr,
            inner: Side::Dst,
            inner_addr: entry.vip,
            inner_port_be: entry.vip_port_be,
        };
        return nat::icmp(ctx, outer, inner, &t);
    }
    Reason::PassIcmp
}

/// An error about a packet sent from `vip` to a client.
#[inline(always)]
fn from_client_side(ctx: &XdpContext, outer: &Parsed, inner: &Embedded, vip: &VipInfo) -> Reason {
    let Some(backend) = flow::backend_of(&reversed(&inner.flow), vip).and_then(flow::backend)
    else {
        return Reason::PassIcmp;
    };
    match vip.mode {
        MODE_DR => {
            // SAFETY: IFACES entries are only replaced whole by the agent.
            let Some(iface) = (unsafe { IFACES.get(ctx.ingress_ifindex() as u32) }) else {
                return Reason::PassUnknownIface;
            };
            if backend.flags & BACKEND_F_MAC_VALID == 0 {
                return Reason::DropMacUnresolved;
            }
            if !dr::rewrite_macs(ctx, backend.mac, iface.mac) {
                return Reason::PassMalformed;
            }
            Reason::ForwardedIcmpDr
        }
        MODE_NAT => {
            let t = IcmpTranslation {
                outer: Side::Dst,
                outer_addr: backend.addr,
                inner: Side::Src,
                inner_addr: backend.addr,
                inner_port_be: backend.port_be,
            };
            nat::icmp(ctx, outer, inner, &t)
        }
        _ => Reason::PassIcmp,
    }
}
