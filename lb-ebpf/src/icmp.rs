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
//!
//! The program also sends one ICMP error itself: [`send_too_big`], when NAT would forward a
//! packet bigger than the egress MTU that must not be fragmented.

use aya_ebpf::{
    helpers::{bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use lb_common::{
    addr::Addr,
    backend::BACKEND_F_MAC_VALID,
    flow::FlowKey,
    stats::Reason,
    vip::{VipInfo, MODE_DR, MODE_NAT},
};

use crate::{
    dr, flow,
    maps::{self, flow_key, vip_key, NAT_CONNS, VIPS},
    nat::{self, addr_eq, IcmpTranslation, Side},
    parse::{
        byte, embedded, raw16, set_words, words, Embedded, Parsed, ETH_HLEN, IPPROTO_ICMP,
        IPPROTO_ICMPV6, IPV4_MIN_HLEN, IPV6_HLEN,
    },
};

const ICMP_HLEN: usize = 8;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_FRAG_NEEDED: u8 = 4;
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
            let Some(iface) = maps::iface(ctx.ingress_ifindex() as u32) else {
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

/// The largest ICMP error to send: IPv4 576 bytes (RFC 1812 4.3.2.3), IPv6 1280 (RFC 4443
/// 2.4(c)), IP header included.
const ICMP4_MAX: usize = 576;
const ICMP6_MAX: usize = 1280;
/// Words of quoted packet summed at most (an IPv6 quote of 1232 bytes).
const MAX_QUOTE_WORDS: usize = (ICMP6_MAX - IPV6_HLEN - ICMP_HLEN) / 2;

/// Answers an untagged NAT packet that is larger than the egress MTU (`mtu`) and must not be
/// fragmented: ICMP "fragmentation needed" (IPv4) or "packet too big" (IPv6) from the
/// packet's destination to its source, quoting the packet as it arrived (as much as fits),
/// sent back out of the interface it came in on. The kernel would quote the translated
/// packet, which the sender cannot match to its connection, and path MTU discovery would
/// stall.
#[inline(never)]
pub fn send_too_big(ctx: &XdpContext, pkt: &Parsed, mtu: u16) -> Reason {
    match too_big(ctx, pkt, mtu) {
        Some(()) => Reason::SentIcmpTooBig,
        None => Reason::PassMalformed,
    }
}

#[inline(always)]
fn too_big(ctx: &XdpContext, pkt: &Parsed, mtu: u16) -> Option<()> {
    let v6 = pkt.v6;
    let (hdr, max) = if v6 {
        (IPV6_HLEN, ICMP6_MAX)
    } else {
        (IPV4_MIN_HLEN, ICMP4_MAX)
    };
    // Read before anything moves.
    let macs = words::<6>(ctx, 0)?;
    let (from, to) = (pkt.flow.dst, pkt.flow.src);
    let quote = (pkt.end() - ETH_HLEN).min(max - hdr - ICMP_HLEN);
    // Cut the frame to the quote (dropping Ethernet padding too), then make room in front
    // for the new IP and ICMP headers: the quoted packet stays where it is.
    let have = ctx.data_end() - ctx.data() - ETH_HLEN;
    // SAFETY: the helpers only move the frame's bounds; every access after them goes
    // through ptr_at again.
    unsafe {
        if have > quote && bpf_xdp_adjust_tail(ctx.ctx, -((have - quote) as i32)) != 0 {
            return None;
        }
        if bpf_xdp_adjust_head(ctx.ctx, -((hdr + ICMP_HLEN) as i32)) != 0 {
            return None;
        }
    }
    let ethertype: u16 = if v6 { 0x86dd } else { 0x0800 };
    set_words(
        ctx,
        0,
        [
            macs[3],
            macs[4],
            macs[5],
            macs[0],
            macs[1],
            macs[2],
            ethertype.to_be(),
        ],
    )?;
    // SAFETY: same size, any bit pattern is valid.
    let (from, to): ([u16; 8], [u16; 8]) = unsafe {
        (
            core::mem::transmute::<Addr, [u16; 8]>(from),
            core::mem::transmute::<Addr, [u16; 8]>(to),
        )
    };
    let icmp_len = ICMP_HLEN + quote;
    let icmp = ETH_HLEN + hdr;
    // The ICMP checksum's start: its header (checksum 0) and, for ICMPv6, the pseudo-header.
    let mut sum: u32 = 0;
    if v6 {
        let mut ip = [0u16; 20];
        ip[0] = 0x6000u16.to_be();
        ip[2] = (icmp_len as u16).to_be();
        ip[3] = u16::from_ne_bytes([IPPROTO_ICMPV6, 64]);
        ip[4..12].copy_from_slice(&from);
        ip[12..20].copy_from_slice(&to);
        set_words(ctx, ETH_HLEN, ip)?;
        for i in 0..8 {
            sum += from[i] as u32 + to[i] as u32;
        }
        sum += (icmp_len as u16).to_be() as u32 + (IPPROTO_ICMPV6 as u16).to_be() as u32;
        let head = [
            u16::from_ne_bytes([ICMPV6_PKT_TOOBIG, 0]),
            0,
            0,
            mtu.to_be(),
        ];
        for w in head {
            sum += w as u32;
        }
        set_words(ctx, icmp, head)?;
    } else {
        let mut ip = [
            0x45c0u16.to_be(),
            ((hdr + icmp_len) as u16).to_be(),
            0,
            0,
            u16::from_ne_bytes([64, IPPROTO_ICMP]),
            0,
            from[6],
            from[7],
            to[6],
            to[7],
        ];
        let mut ip_sum: u32 = 0;
        for w in ip {
            ip_sum += w as u32;
        }
        ip[5] = !fold(ip_sum);
        set_words(ctx, ETH_HLEN, ip)?;
        let head = [
            u16::from_ne_bytes([ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED]),
            0,
            0,
            mtu.to_be(),
        ];
        for w in head {
            sum += w as u32;
        }
        set_words(ctx, icmp, head)?;
    }
    // The quote, word by word, to the end of the frame.
    let start = icmp + ICMP_HLEN;
    for i in 0..MAX_QUOTE_WORDS {
        let at = start + 2 * i;
        match raw16(ctx, at) {
            Some(w) => sum += w as u32,
            None => {
                if let Some(b) = byte(ctx, at) {
                    sum += u16::from_ne_bytes([b, 0]) as u32;
                }
                break;
            }
        }
    }
    set_words(ctx, icmp + 2, [!fold(sum)])
}

/// Folds a one's-complement sum to 16 bits.
#[inline(always)]
fn fold(mut s: u32) -> u16 {
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u16
}
