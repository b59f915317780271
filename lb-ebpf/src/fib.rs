//! Routing a NAT-translated packet with the kernel's FIB (`bpf_fib_lookup`), and sending it:
//! `XDP_TX` when the egress interface is the ingress one, else `XDP_REDIRECT` through the
//! `TX_PORTS` devmap.
//!
//! What each FIB answer leads to, and why:
//! - success: TTL/hop limit decremented, MACs from the FIB, sent;
//! - no neighbour (`NO_NEIGH`): the translated packet goes to the kernel, which forwards it
//!   and resolves the next hop on the way, so later packets find the neighbour;
//! - bigger than the egress MTU: a TCP/UDP packet that must not be fragmented (IPv4 with
//!   don't-fragment, all IPv6) is answered with ICMP "fragmentation needed" / "packet too
//!   big" from its destination (`icmp::send_too_big`): the kernel would quote the translated
//!   packet, which the sender cannot match to its socket. Anything else (IPv4 that may be
//!   fragmented, ICMP errors) goes translated to the kernel, which fragments or drops it;
//! - forwarding disabled, not a forwarding route (local, broadcast, multicast), a tunnel
//!   route (`UNSUPP_LWT`): the translated packet goes to the kernel, which does what it
//!   does for any routed packet (delivers locally, or drops it and counts it);
//! - blackhole, unreachable, prohibit: dropped, as the route says.
//!
//! A packet handed to the kernel keeps its TTL: the kernel decrements it when it forwards.

use aya_ebpf::{
    bindings::{
        bpf_fib_lookup as FibParams, BPF_FIB_LKUP_RET_BLACKHOLE, BPF_FIB_LKUP_RET_FRAG_NEEDED,
        BPF_FIB_LKUP_RET_FWD_DISABLED, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_PROHIBIT,
        BPF_FIB_LKUP_RET_SUCCESS, BPF_FIB_LKUP_RET_UNREACHABLE,
    },
    helpers::bpf_fib_lookup,
    programs::XdpContext,
    EbpfContext as _,
};
use lb_common::{addr::Addr, stats::Reason};

use crate::{
    csum::{self, Diff},
    dr,
    maps::TX_PORTS,
    parse::{byte, raw16, set_byte, set_raw16},
};

const _: () = assert!(core::mem::size_of::<FibParams>() == 64);
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// The next hop the FIB chose: out of `ifindex` to `dmac`, from `smac`.
pub struct Hop {
    pub ifindex: u32,
    pub smac: [u8; 6],
    pub dmac: [u8; 6],
}

/// Where the FIB sends a packet.
pub enum Route {
    Forward(Hop),
    /// Larger than the egress MTU (given).
    TooBig(u16),
    /// Leave it (translated) to the kernel, counted under this reason.
    Kernel(Reason),
    /// Drop it (untranslated), counted under this reason.
    Drop(Reason),
}

/// Asks the FIB for the route of a packet (`len` bytes of IP) from `src`/`sport` to
/// `dst`/`dport` as it arrived on the ingress interface.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn lookup(
    ctx: &XdpContext,
    v6: bool,
    proto: u8,
    src: &Addr,
    dst: &Addr,
    sport_be: u16,
    dport_be: u16,
    len: usize,
) -> Route {
    // Built from whole words (an IPv4 address is the first word of the IPv6 one): zeroing
    // the struct, or its MAC arrays, would be a byte-at-a-time `memset` call.
    #[repr(C)]
    struct Words {
        family_proto: u16,
        sport: u16,
        dport: u16,
        tot_len: u16,
        ifindex: u32,
        flowinfo: u32,
        src: Addr,
        dst: Addr,
        tbid: u32,
        macs: [u32; 3],
    }
    let (family, src, dst) = if v6 {
        (AF_INET6, *src, *dst)
    } else {
        (AF_INET, [src[3], 0, 0, 0], [dst[3], 0, 0, 0])
    };
    let words = Words {
        family_proto: u16::from_ne_bytes([family, proto]),
        sport: sport_be,
        dport: dport_be,
        // The kernel compares it with the egress MTU (IPv4 total length, IPv6 header +
        // payload).
        tot_len: len as u16,
        ifindex: ctx.ingress_ifindex() as u32,
        flowinfo: 0,
        src,
        dst,
        tbid: 0,
        // Outputs. Not zero: LLVM would merge 16 zero bytes into a `memset` call.
        macs: [1, 1, 1],
    };
    // SAFETY: same size (asserted below) and layout as bpf_fib_lookup; any bits are valid.
    let mut p = unsafe { core::mem::transmute::<Words, FibParams>(words) };
    // SAFETY: ctx is the program's context; p is a valid, writable bpf_fib_lookup.
    let rc = unsafe {
        bpf_fib_lookup(
            ctx.as_ptr(),
            &mut p,
            core::mem::size_of::<FibParams>() as i32,
            0,
        )
    };
    match rc as u32 {
        BPF_FIB_LKUP_RET_SUCCESS => Route::Forward(Hop {
            ifindex: p.ifindex,
            smac: p.smac,
            dmac: p.dmac,
        }),
        BPF_FIB_LKUP_RET_NO_NEIGH => Route::Kernel(Reason::PassFibNoNeigh),
        BPF_FIB_LKUP_RET_FWD_DISABLED => Route::Kernel(Reason::PassFibFwdDisabled),
        // SAFETY: on FRAG_NEEDED the kernel stored the MTU in the union.
        BPF_FIB_LKUP_RET_FRAG_NEEDED => Route::TooBig(unsafe { p.__bindgen_anon_1.mtu_result }),
        BPF_FIB_LKUP_RET_BLACKHOLE | BPF_FIB_LKUP_RET_UNREACHABLE | BPF_FIB_LKUP_RET_PROHIBIT => {
            Route::Drop(Reason::DropFibUnreachable)
        }
        // NOT_FWDED, UNSUPP_LWT, and anything a newer kernel adds.
        _ => Route::Kernel(Reason::PassFibNotForwarded),
    }
}

/// The TTL (IPv4) or hop limit (IPv6) of the packet at `l3`.
#[inline(always)]
pub fn ttl(ctx: &XdpContext, l3: usize, v6: bool) -> Option<u8> {
    byte(ctx, if v6 { l3 + 7 } else { l3 + 8 })
}

/// Decrements the TTL (fixing the IPv4 header checksum) or the hop limit; the caller has
/// checked it is above 1.
#[inline(always)]
fn decrement_ttl(ctx: &XdpContext, l3: usize, v6: bool) -> Option<()> {
    if v6 {
        let hops = byte(ctx, l3 + 7)?;
        return set_byte(ctx, l3 + 7, hops.wrapping_sub(1));
    }
    // TTL and protocol share a checksummed word.
    let old = raw16(ctx, l3 + 8)?;
    let [ttl, proto] = old.to_ne_bytes();
    let new = u16::from_ne_bytes([ttl.wrapping_sub(1), proto]);
    set_raw16(ctx, l3 + 8, new)?;
    let mut d = Diff::default();
    d.word(old, new);
    csum::update(ctx, l3 + 10, d).map(drop)
}

/// Sends a translated packet to `hop`: counted as `tx` when it leaves by the interface it
/// came in on, as `redirect` (through `TX_PORTS`) otherwise. An egress interface missing
/// from `TX_PORTS` leaves the packet, translated, to the kernel.
#[inline(always)]
pub fn send(
    ctx: &XdpContext,
    l3: usize,
    v6: bool,
    hop: &Hop,
    tx: Reason,
    redirect: Reason,
) -> Reason {
    let reason = if hop.ifindex == ctx.ingress_ifindex() as u32 {
        tx
    } else {
        // Only records the target; the redirect happens when the program returns.
        match TX_PORTS.redirect(hop.ifindex, 0) {
            Ok(_) => redirect,
            Err(_) => return Reason::PassNoTxPort,
        }
    };
    if decrement_ttl(ctx, l3, v6).is_none() || !dr::rewrite_macs(ctx, hop.dmac, hop.smac) {
        return Reason::PassMalformed;
    }
    reason
}
