//! NAT forwarding: a packet to a NAT VIP gets the backend's address and port as
//! destination; the backend's reply, routed back through this node, gets the VIP's as
//! source; an ICMP error about either is translated the same way, quoted packet included.
//! Checksums are updated incrementally; the translated packet is routed by the kernel's FIB
//! (`fib.rs`).
//!
//! The reply direction needs to know which VIP a backend's packet stands for: the first
//! packet of a connection records it in `NAT_CONNS`, keyed by the reply's 5-tuple (see
//! `lb_common::nat` for what a full table means).

use aya_ebpf::programs::XdpContext;
use lb_common::{
    addr::{Addr, V4_MAPPED_WORD},
    backend::Backend,
    nat::NatEntry,
    stats::Reason,
    vip::{VipInfo, VipKey},
};

use crate::{
    csum::{self, Diff},
    fib::{self, Route},
    flow,
    maps::{flow_key, NAT_CONNS, NAT_IN_USE},
    parse::{byte, raw16, set_addr_words, set_raw16, Embedded, Parsed, IPPROTO_TCP},
    stats,
};

/// Which address and port of a header a translation replaces.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Src,
    Dst,
}

/// Offset of the `side` address of the IP header at `l3`.
#[inline(always)]
fn addr_offset(l3: usize, v6: bool, side: Side) -> usize {
    match (v6, side) {
        (false, Side::Src) => l3 + 12,
        (false, Side::Dst) => l3 + 16,
        (true, Side::Src) => l3 + 8,
        (true, Side::Dst) => l3 + 24,
    }
}

/// Offset of the `side` port of the TCP/UDP header at `l4`.
#[inline(always)]
fn port_offset(l4: usize, side: Side) -> usize {
    match side {
        Side::Src => l4,
        Side::Dst => l4 + 2,
    }
}

/// Offset of the TCP or UDP checksum of the header at `l4`.
#[inline(always)]
fn l4_csum_offset(l4: usize, proto: u8) -> usize {
    if proto == IPPROTO_TCP {
        l4 + 16
    } else {
        l4 + 6
    }
}

/// Replaces the address at `offset` with `new`; returns the checksum change.
#[inline(always)]
fn set_addr(ctx: &XdpContext, offset: usize, v6: bool, new: &Addr) -> Option<Diff> {
    let old = set_addr_words(ctx, offset, v6, new)?;
    // SAFETY: same size, any bit pattern is valid.
    let new: [u16; 8] = unsafe { core::mem::transmute::<Addr, [u16; 8]>(*new) };
    let mut d = Diff::default();
    // For IPv4 the first six words are equal (zero and the mapped prefix's) on both sides.
    let first = if v6 { 0 } else { 6 };
    for i in first..8 {
        d.word(old[i], new[i]);
    }
    Some(d)
}

/// Rewrites the `side` address and port of a TCP/UDP packet, fixing the IPv4 header
/// checksum and the TCP/UDP checksum (whose pseudo-header holds the addresses).
#[inline(always)]
fn translate(ctx: &XdpContext, pkt: &Parsed, side: Side, new: &Addr, port_be: u16) -> Option<()> {
    let mut d = set_addr(ctx, addr_offset(pkt.l3(), pkt.v6, side), pkt.v6, new)?;
    if !pkt.v6 {
        csum::update(ctx, pkt.l3() + 10, d)?;
    }
    let port = port_offset(pkt.l4(), side);
    d.word(raw16(ctx, port)?, port_be);
    set_raw16(ctx, port, port_be)?;
    let at = l4_csum_offset(pkt.l4(), pkt.flow.proto);
    if pkt.flow.proto == IPPROTO_TCP {
        csum::update(ctx, at, d)?;
    } else {
        csum::update_udp(ctx, at, d, pkt.v6)?;
    }
    Some(())
}

/// Address equality without a call to `bcmp`.
#[inline(always)]
pub fn addr_eq(a: &Addr, b: &Addr) -> bool {
    a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3]
}

/// Whether `a` is of the packet's family (IPv4 is stored IPv4-mapped).
#[inline(always)]
fn same_family(a: &Addr, v6: bool) -> bool {
    let mapped = a[0] == 0 && a[1] == 0 && a[2] == V4_MAPPED_WORD;
    mapped != v6
}

/// Whether the packet may not be fragmented on the way: IPv6 (only its source fragments),
/// or IPv4 with don't-fragment.
#[inline(always)]
fn must_not_fragment(ctx: &XdpContext, pkt: &Parsed) -> Option<bool> {
    if pkt.v6 {
        return Some(true);
    }
    Some(byte(ctx, pkt.l3() + 6)? & 0x40 != 0)
}

/// The checks before a NAT packet is routed: untagged, and a TTL left to decrement.
#[inline(always)]
fn routable(ctx: &XdpContext, pkt: &Parsed) -> Result<(), Reason> {
    if pkt.vlan {
        return Err(Reason::PassNatVlan);
    }
    match fib::ttl(ctx, pkt.l3(), pkt.v6) {
        Some(t) if t > 1 => Ok(()),
        Some(_) => Err(Reason::DropTtlExceeded),
        None => Err(Reason::PassMalformed),
    }
}

/// A packet to a NAT VIP: translated to its flow's backend and routed; the connection is
/// recorded for its replies. `Err(mtu)`: too big for the egress MTU and not to be
/// fragmented; the caller answers with `icmp::send_too_big` (from its own stack frame:
/// nested in this one, the two exceed the 512-byte stack).
// A BPF subprogram (at most 5 arguments) of its own, for the stack's sake.
#[inline(never)]
pub fn forward(
    ctx: &XdpContext,
    pkt: &Parsed,
    vip_key: &VipKey,
    vip: &VipInfo,
) -> Result<Reason, u16> {
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    stats::count_vip(vip.id, bytes);
    let Some((backend_id, _)) = flow::backend_for(pkt, vip, flow::now(), false) else {
        return Ok(flow::no_backend(vip));
    };
    let Some(backend) = flow::backend(backend_id) else {
        return Ok(flow::no_backend(vip));
    };
    if let Err(reason) = routable(ctx, pkt) {
        return Ok(reason);
    }
    if !same_family(&backend.addr, pkt.v6) {
        return Ok(flow::no_backend(vip));
    }
    let route = fib::lookup(
        ctx,
        pkt.v6,
        pkt.flow.proto,
        &pkt.flow.src,
        &backend.addr,
        pkt.flow.sport_be,
        backend.port_be,
        pkt.end() - pkt.l3(),
    );
    let route = match route {
        Route::Drop(reason) => return Ok(reason),
        Route::TooBig(mtu) => match must_not_fragment(ctx, pkt) {
            Some(true) => return Err(mtu),
            Some(false) => Route::Kernel(Reason::PassFibFragNeeded),
            None => return Ok(Reason::PassMalformed),
        },
        route => route,
    };
    if translate(ctx, pkt, Side::Dst, &backend.addr, backend.port_be).is_none() {
        return Ok(Reason::PassMalformed);
    }
    remember(pkt, vip_key, vip, backend_id, backend);
    Ok(match route {
        Route::Forward(hop) => {
            let reason = fib::send(
                ctx,
                pkt.l3(),
                pkt.v6,
                &hop,
                Reason::ForwardedNat,
                Reason::RedirectedNat,
            );
            if reason != Reason::PassNoTxPort && reason != Reason::PassMalformed {
                stats::count_backend(backend_id, bytes);
            }
            reason
        }
        Route::Kernel(reason) | Route::Drop(reason) => reason,
        Route::TooBig(_) => Reason::PassFibFragNeeded,
    })
}

/// Whether this program has recorded a NAT connection (see `NAT_IN_USE`).
#[inline(always)]
pub fn in_use() -> bool {
    matches!(NAT_IN_USE.get(0), Some(&v) if v != 0)
}

/// Records (or refreshes) the connection of `pkt` in `NAT_CONNS` under its reply tuple.
#[inline(always)]
fn remember(pkt: &Parsed, vip_key: &VipKey, vip: &VipInfo, backend_id: u32, backend: &Backend) {
    let key = flow_key(
        backend.addr,
        pkt.flow.src,
        backend.port_be,
        pkt.flow.sport_be,
        pkt.flow.proto,
    );
    let now = flow::now();
    if let Some(e) = NAT_CONNS.get_ptr_mut(key) {
        // SAFETY: the pointer comes from the lookup; a racing writer stores equally valid
        // values.
        let e = unsafe { &mut *e };
        if e.vip == vip_key.addr && e.vip_port_be == vip_key.port_be && e.backend_id == backend_id {
            if e.last_seen_ns != now {
                e.last_seen_ns = now;
            }
            return;
        }
    }
    if let Some(flag) = NAT_IN_USE.get_ptr_mut(0) {
        // SAFETY: the pointer comes from the lookup; written once, then only read.
        unsafe {
            if *flag == 0 {
                *flag = 1;
            }
        }
    }
    // A full table evicts its least recently used entry (see lb_common::nat).
    let _ = NAT_CONNS.insert(
        key,
        NatEntry {
            vip: vip_key.addr,
            vip_port_be: vip_key.port_be,
            _pad: 0,
            vip_id: vip.id,
            backend_id,
            _pad2: 0,
            last_seen_ns: now,
        },
        0,
    );
}

/// A packet that is not for a VIP: if it is a NAT backend's reply, translated back to the
/// VIP and routed to the client; otherwise `pass_not_vip`. `Err(mtu)` as for [`forward`].
#[inline(never)]
pub fn reply(ctx: &XdpContext, pkt: &Parsed) -> Result<Reason, u16> {
    // SAFETY: entries are plain data written whole by this program.
    let Some(entry) = (unsafe { NAT_CONNS.get(pkt.flow) }) else {
        return Ok(Reason::PassNotVip);
    };
    let (vip, vip_port_be) = (entry.vip, entry.vip_port_be);
    let (vip_id, backend_id) = (entry.vip_id, entry.backend_id);
    if let Err(reason) = routable(ctx, pkt) {
        return Ok(reason);
    }
    let route = fib::lookup(
        ctx,
        pkt.v6,
        pkt.flow.proto,
        &vip,
        &pkt.flow.dst,
        vip_port_be,
        pkt.flow.dport_be,
        pkt.end() - pkt.l3(),
    );
    let route = match route {
        Route::Drop(reason) => return Ok(reason),
        Route::TooBig(mtu) => match must_not_fragment(ctx, pkt) {
            Some(true) => return Err(mtu),
            Some(false) => Route::Kernel(Reason::PassFibFragNeeded),
            None => return Ok(Reason::PassMalformed),
        },
        route => route,
    };
    if translate(ctx, pkt, Side::Src, &vip, vip_port_be).is_none() {
        return Ok(Reason::PassMalformed);
    }
    Ok(match route {
        Route::Forward(hop) => {
            let reason = fib::send(
                ctx,
                pkt.l3(),
                pkt.v6,
                &hop,
                Reason::ForwardedNatReply,
                Reason::RedirectedNatReply,
            );
            if reason != Reason::PassNoTxPort && reason != Reason::PassMalformed {
                let bytes = (ctx.data_end() - ctx.data()) as u64;
                stats::count_vip_reply(vip_id, bytes);
                stats::count_backend_reply(backend_id, bytes);
            }
            reason
        }
        Route::Kernel(reason) | Route::Drop(reason) => reason,
        Route::TooBig(_) => Reason::PassFibFragNeeded,
    })
}

/// How to translate an ICMP error about a NAT connection.
pub struct IcmpTranslation {
    /// The outer address that changes (`Dst` for an error on its way to a backend, `Src`
    /// for one a backend sent) and its new value (which may equal the old one).
    pub outer: Side,
    pub outer_addr: Addr,
    /// The quoted packet's address and port that change.
    pub inner: Side,
    pub inner_addr: Addr,
    pub inner_port_be: u16,
}

/// An ICMP error about a NAT connection: the outer header and the quoted packet are
/// translated as `t` says, every checksum involved is fixed (outer IPv4 header, quoted IPv4
/// header, quoted TCP/UDP checksum if quoted, ICMP/ICMPv6), and it is routed.
#[inline(always)]
pub fn icmp(ctx: &XdpContext, outer: &Parsed, inner: &Embedded, t: &IcmpTranslation) -> Reason {
    if let Err(reason) = routable(ctx, outer) {
        return reason;
    }
    if !same_family(&t.outer_addr, outer.v6) || !same_family(&t.inner_addr, outer.v6) {
        return Reason::PassIcmp;
    }
    let (src, dst) = match t.outer {
        Side::Src => (&t.outer_addr, &outer.flow.dst),
        Side::Dst => (&outer.flow.src, &t.outer_addr),
    };
    let route = fib::lookup(
        ctx,
        outer.v6,
        outer.flow.proto,
        src,
        dst,
        0,
        0,
        outer.end() - outer.l3(),
    );
    let route = match route {
        Route::Drop(reason) => return reason,
        // Never an ICMP error about an ICMP error (RFC 1122 3.2.2, RFC 4443 2.4).
        Route::TooBig(_) => Route::Kernel(Reason::PassFibFragNeeded),
        route => route,
    };
    if translate_icmp(ctx, outer, inner, t).is_none() {
        return Reason::PassMalformed;
    }
    match route {
        Route::Forward(hop) => fib::send(
            ctx,
            outer.l3(),
            outer.v6,
            &hop,
            Reason::ForwardedIcmpNat,
            Reason::RedirectedIcmpNat,
        ),
        Route::Kernel(reason) | Route::Drop(reason) => reason,
        Route::TooBig(_) => Reason::PassFibFragNeeded,
    }
}

#[inline(always)]
fn translate_icmp(
    ctx: &XdpContext,
    outer: &Parsed,
    inner: &Embedded,
    t: &IcmpTranslation,
) -> Option<()> {
    let v6 = outer.v6;
    let d_outer = set_addr(ctx, addr_offset(outer.l3(), v6, t.outer), v6, &t.outer_addr)?;
    // The ICMPv6 checksum covers a pseudo-header with the outer addresses; ICMPv4's does
    // not, but the IPv4 header checksum does.
    let mut d_icmp = Diff::default();
    if v6 {
        d_icmp.add(d_outer);
    } else {
        csum::update(ctx, outer.l3() + 10, d_outer)?;
    }
    // The quoted packet, all of which the ICMP checksum covers.
    let d_addr = set_addr(ctx, addr_offset(inner.l3(), v6, t.inner), v6, &t.inner_addr)?;
    d_icmp.add(d_addr);
    let mut d_l4 = d_addr;
    let port = port_offset(inner.l4(), t.inner);
    let old_port = raw16(ctx, port)?;
    set_raw16(ctx, port, t.inner_port_be)?;
    d_l4.word(old_port, t.inner_port_be);
    d_icmp.word(old_port, t.inner_port_be);
    if !v6 {
        let (old, new) = csum::update(ctx, inner.l3() + 10, d_addr)?;
        d_icmp.word(old, new);
    }
    // The quoted TCP checksum is only there if enough of the segment was quoted.
    let at = l4_csum_offset(inner.l4(), inner.flow.proto);
    if at + 2 <= outer.end() {
        let (old, new) = if inner.flow.proto == IPPROTO_TCP {
            csum::update(ctx, at, d_l4)?
        } else {
            csum::update_udp(ctx, at, d_l4, v6)?
        };
        d_icmp.word(old, new);
    }
    csum::update(ctx, outer.l4() + 2, d_icmp).map(drop)
}
