//! Header parsing. Every read of packet memory goes through [`ptr_at`], the one place
//! that checks bounds against `data_end`.

use aya_ebpf::programs::XdpContext;
use lb_common::{addr::from_v4_raw, flow::FlowKey, stats::Reason};

pub const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 4;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const ETH_P_IPV6: u16 = 0x86dd;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
const IPPROTO_VRRP: u8 = 112;
const IPV4_MIN_HLEN: usize = 20;
const TCP_MIN_HLEN: usize = 20;
const UDP_HLEN: usize = 8;
/// More-fragments flag and fragment offset bits of the IPv4 `frag_off` field.
const IP_MF_OFFSET_MASK: u16 = 0x3fff;

/// Returns a pointer to a `T` at `offset` bytes into the packet, or `None` if it would
/// reach past the end.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *mut T)
}

/// Reads a big-endian u16 at `offset`.
#[inline(always)]
fn be16(ctx: &XdpContext, offset: usize) -> Option<u16> {
    let p = ptr_at::<[u8; 2]>(ctx, offset)?;
    // SAFETY: bounds checked by ptr_at.
    Some(u16::from_be_bytes(unsafe { *p }))
}

#[inline(always)]
fn byte(ctx: &XdpContext, offset: usize) -> Option<u8> {
    // SAFETY: bounds checked by ptr_at.
    ptr_at::<u8>(ctx, offset).map(|p| unsafe { *p })
}

/// Reads 4 bytes at `offset` as a u32 in memory (network) order.
#[inline(always)]
fn raw32(ctx: &XdpContext, offset: usize) -> Option<u32> {
    let p = ptr_at::<[u8; 4]>(ctx, offset)?;
    // SAFETY: bounds checked by ptr_at.
    Some(u32::from_ne_bytes(unsafe { *p }))
}

pub const TCP_FLAG_SYN: u8 = 0x02;
pub const TCP_FLAG_ACK: u8 = 0x10;

/// A TCP or UDP over IPv4 packet, ready for the VIP lookup.
pub struct Parsed {
    pub flow: FlowKey,
    /// TCP flags byte; 0 for UDP.
    pub tcp_flags: u8,
}

impl Parsed {
    /// A connection-opening SYN (without ACK).
    #[inline(always)]
    pub fn is_syn(&self) -> bool {
        self.tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK) == TCP_FLAG_SYN
    }
}

/// Parses Ethernet (with at most one VLAN tag), IPv4 (with options) and the TCP or UDP
/// ports. Anything else yields the reason it is left to the kernel.
#[inline(always)]
pub fn parse(ctx: &XdpContext) -> Result<Parsed, Reason> {
    let mut ethertype = be16(ctx, 12).ok_or(Reason::PassMalformed)?;
    let mut l3 = ETH_HLEN;
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        ethertype = be16(ctx, ETH_HLEN + 2).ok_or(Reason::PassMalformed)?;
        l3 += VLAN_HLEN;
    }
    match ethertype {
        ETH_P_IP => {}
        ETH_P_ARP => return Err(Reason::PassArp),
        ETH_P_IPV6 => return Err(Reason::PassIpv6),
        _ => return Err(Reason::PassNotIp),
    }

    let ver_ihl = byte(ctx, l3).ok_or(Reason::PassMalformed)?;
    let ihl = ((ver_ihl & 0x0f) as usize) * 4;
    if ver_ihl >> 4 != 4 || ihl < IPV4_MIN_HLEN {
        return Err(Reason::PassMalformed);
    }
    // The whole header, options included, must be in the frame.
    if ptr_at::<[u8; IPV4_MIN_HLEN]>(ctx, l3).is_none() || ctx.data() + l3 + ihl > ctx.data_end() {
        return Err(Reason::PassMalformed);
    }
    let total_len = be16(ctx, l3 + 2).ok_or(Reason::PassMalformed)? as usize;
    // A frame shorter than the IP length is truncated; longer is Ethernet padding.
    if total_len < ihl || ctx.data() + l3 + total_len > ctx.data_end() {
        return Err(Reason::PassMalformed);
    }
    let frag = be16(ctx, l3 + 6).ok_or(Reason::PassMalformed)?;
    let proto = byte(ctx, l3 + 9).ok_or(Reason::PassMalformed)?;
    if frag & IP_MF_OFFSET_MASK != 0 {
        return Err(Reason::PassFragment);
    }
    let l4_min = match proto {
        IPPROTO_TCP => TCP_MIN_HLEN,
        IPPROTO_UDP => UDP_HLEN,
        IPPROTO_VRRP => return Err(Reason::PassVrrp),
        _ => return Err(Reason::PassNotTcpUdp),
    };
    if total_len < ihl + l4_min {
        return Err(Reason::PassMalformed);
    }
    let saddr = raw32(ctx, l3 + 12).ok_or(Reason::PassMalformed)?;
    let daddr = raw32(ctx, l3 + 16).ok_or(Reason::PassMalformed)?;
    let l4 = l3 + ihl;
    let sport = be16(ctx, l4).ok_or(Reason::PassMalformed)?;
    let dport = be16(ctx, l4 + 2).ok_or(Reason::PassMalformed)?;
    let tcp_flags = if proto == IPPROTO_TCP {
        byte(ctx, l4 + 13).ok_or(Reason::PassMalformed)?
    } else {
        0
    };

    Ok(Parsed {
        flow: FlowKey {
            src: from_v4_raw(saddr),
            dst: from_v4_raw(daddr),
            sport_be: sport.to_be(),
            dport_be: dport.to_be(),
            proto,
            _pad: [0; 3],
        },
        tcp_flags,
    })
}
