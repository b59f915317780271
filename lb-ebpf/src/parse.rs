//! Header parsing. Every read and write of packet memory goes through [`ptr_at`], the one
//! place that checks bounds against `data_end`.

use aya_ebpf::programs::XdpContext;
use lb_common::{
    addr::{from_v4_raw, Addr},
    flow::FlowKey,
    stats::Reason,
};

use crate::{icmp, maps::flow_key};

pub const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 4;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const ETH_P_IPV6: u16 = 0x86dd;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;
const IPPROTO_VRRP: u8 = 112;
pub const IPV4_MIN_HLEN: usize = 20;
pub const IPV6_HLEN: usize = 40;
const TCP_MIN_HLEN: usize = 20;
const UDP_HLEN: usize = 8;
/// More-fragments flag and fragment offset bits of the IPv4 `frag_off` field.
const IP_MF_OFFSET_MASK: u16 = 0x3fff;

/// IPv6 extension headers the walk steps over (RFC 8200 section 4).
const NEXTHDR_HOP: u8 = 0;
const NEXTHDR_ROUTING: u8 = 43;
const NEXTHDR_FRAGMENT: u8 = 44;
const NEXTHDR_DEST: u8 = 60;
/// At most this many extension headers are walked; a packet with more is left to the
/// kernel (`pass_ipv6_ext`). Real traffic carries zero to two.
const MAX_EXT_HEADERS: usize = 6;

/// Returns a pointer to a `T` at `offset` bytes into the packet, or `None` if it would
/// reach past the end.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    // For a 1-byte read LLVM would rewrite `p + 1 > end` as `p >= end`, which proves nothing
    // to the verifier about a pointer with a variable offset; hiding the size keeps the
    // comparison as written.
    let size = if core::mem::size_of::<T>() == 1 {
        core::hint::black_box(1)
    } else {
        core::mem::size_of::<T>()
    };
    if start + offset + size > end {
        return None;
    }
    Some((start + offset) as *mut T)
}

/// Reads `N` 16-bit words at `offset`, as they sit in memory (network order).
///
/// Every header field the program reads or writes is at an even offset from the frame's
/// start, and frames start at an even address (the XDP headroom is a multiple of 64 bytes),
/// so these are aligned 2-byte accesses. Reading bytes one by one instead makes LLVM
/// assemble words from single-byte loads and spill them, which overflows the 512-byte stack.
#[inline(always)]
pub fn words<const N: usize>(ctx: &XdpContext, offset: usize) -> Option<[u16; N]> {
    let p = ptr_at::<[u16; N]>(ctx, offset)?;
    // SAFETY: bounds checked by ptr_at; 2-byte aligned (see above).
    Some(unsafe { p.read() })
}

#[inline(always)]
pub fn set_words<const N: usize>(ctx: &XdpContext, offset: usize, value: [u16; N]) -> Option<()> {
    let p = ptr_at::<[u16; N]>(ctx, offset)?;
    // SAFETY: as in `words`.
    unsafe { p.write(value) };
    Some(())
}

/// Reads a big-endian u16 at `offset`.
#[inline(always)]
fn be16(ctx: &XdpContext, offset: usize) -> Option<u16> {
    raw16(ctx, offset).map(u16::from_be)
}

#[inline(always)]
pub fn byte(ctx: &XdpContext, offset: usize) -> Option<u8> {
    // SAFETY: bounds checked by ptr_at.
    ptr_at::<u8>(ctx, offset).map(|p| unsafe { *p })
}

#[inline(always)]
pub fn set_byte(ctx: &XdpContext, offset: usize, value: u8) -> Option<()> {
    // SAFETY: bounds checked by ptr_at.
    ptr_at::<u8>(ctx, offset).map(|p| unsafe { *p = value })
}

/// Reads 2 bytes at `offset` as a u16 in memory (network) order: the form checksums,
/// ports and addresses are kept in, so no byte swapping is ever needed.
#[inline(always)]
pub fn raw16(ctx: &XdpContext, offset: usize) -> Option<u16> {
    words::<1>(ctx, offset).map(|[w]| w)
}

/// Writes a u16 kept in memory (network) order at `offset`.
#[inline(always)]
pub fn set_raw16(ctx: &XdpContext, offset: usize, value: u16) -> Option<()> {
    set_words(ctx, offset, [value])
}

/// Reads 4 bytes at `offset` as a u32 in memory (network) order.
#[inline(always)]
pub fn raw32(ctx: &XdpContext, offset: usize) -> Option<u32> {
    // SAFETY: [u16; 2] and u32 have the same size; any bit pattern is valid.
    words::<2>(ctx, offset).map(|w| unsafe { core::mem::transmute::<[u16; 2], u32>(w) })
}

/// Reads an IP address at `offset`: 16 bytes for IPv6, 4 (stored IPv4-mapped) for IPv4.
#[inline(always)]
pub fn addr(ctx: &XdpContext, offset: usize, v6: bool) -> Option<Addr> {
    if v6 {
        // SAFETY: [u16; 8] and [u32; 4] have the same size; any bit pattern is valid.
        words::<8>(ctx, offset).map(|w| unsafe { core::mem::transmute::<[u16; 8], Addr>(w) })
    } else {
        raw32(ctx, offset).map(from_v4_raw)
    }
}

/// Writes an address at `offset` (see [`addr`]) and returns the words it replaced.
#[inline(always)]
pub fn set_addr_words(ctx: &XdpContext, offset: usize, v6: bool, new: &Addr) -> Option<[u16; 8]> {
    // SAFETY: same size, any bit pattern is valid.
    let new: [u16; 8] = unsafe { core::mem::transmute::<Addr, [u16; 8]>(*new) };
    if v6 {
        let old = words::<8>(ctx, offset)?;
        set_words(ctx, offset, new)?;
        Some(old)
    } else {
        // An IPv4 address is the last 4 bytes of the mapped form.
        let [a, b] = words::<2>(ctx, offset)?;
        set_words(ctx, offset, [new[6], new[7]])?;
        Some([0, 0, 0, 0, 0, 0, a, b])
    }
}

pub const TCP_FLAG_SYN: u8 = 0x02;
pub const TCP_FLAG_ACK: u8 = 0x10;

/// Offsets are kept as u16 (a frame's linear part is at most a page) and read back masked
/// to this, so that to the verifier every offset is a bounded unknown, whatever header
/// layout produced it.
const OFFSET_MASK: u16 = 0x3fff;

/// An IPv4 or IPv6 packet whose addresses (and ports, for TCP and UDP) are known, with the
/// offsets that rewriting it needs.
#[derive(Clone, Copy)]
pub struct Parsed {
    /// The 5-tuple as on the wire; for ICMP the ports are 0 and `proto` is 1 or 58.
    pub flow: FlowKey,
    /// TCP flags byte; 0 for UDP.
    pub tcp_flags: u8,
    pub v6: bool,
    /// The frame carries a VLAN tag.
    pub vlan: bool,
    l3: u16,
    l4: u16,
    end: u16,
}

impl Parsed {
    #[inline(always)]
    fn new(flow: FlowKey, v6: bool, vlan: bool, l3: usize, l4: usize, end: usize) -> Parsed {
        Parsed {
            flow,
            tcp_flags: 0,
            v6,
            vlan,
            l3: l3 as u16,
            l4: l4 as u16,
            end: end as u16,
        }
    }

    /// Offset of the IP header.
    #[inline(always)]
    pub fn l3(&self) -> usize {
        (self.l3 & OFFSET_MASK) as usize
    }

    /// Offset of the TCP, UDP or ICMP header.
    #[inline(always)]
    pub fn l4(&self) -> usize {
        (self.l4 & OFFSET_MASK) as usize
    }

    /// Offset just past the IP packet (a frame may carry Ethernet padding after it).
    #[inline(always)]
    pub fn end(&self) -> usize {
        (self.end & OFFSET_MASK) as usize
    }

    /// A connection-opening SYN (without ACK).
    #[inline(always)]
    pub fn is_syn(&self) -> bool {
        self.tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK) == TCP_FLAG_SYN
    }
}

/// The TCP or UDP packet quoted by an ICMP error: its tuple as written in it (so `src` is
/// the sender of the packet that caused the error) and where its headers are.
#[derive(Clone, Copy)]
pub struct Embedded {
    pub flow: FlowKey,
    l3: u16,
    l4: u16,
}

impl Embedded {
    /// Offset of the quoted IP header.
    #[inline(always)]
    pub fn l3(&self) -> usize {
        (self.l3 & OFFSET_MASK) as usize
    }

    /// Offset of the quoted TCP/UDP header (at least its first 8 bytes are present).
    #[inline(always)]
    pub fn l4(&self) -> usize {
        (self.l4 & OFFSET_MASK) as usize
    }
}

/// What [`parse`] found; the headers are in the [`Scratch`] it filled.
pub enum Kind {
    /// TCP or UDP: `Scratch::pkt`.
    Transport,
    /// An ICMP or ICMPv6 error (`Scratch::pkt`, whose `l4` is the ICMP header) quoting a
    /// TCP or UDP packet (`Scratch::inner`).
    IcmpError,
}

/// The parsed headers, in a per-CPU map value rather than on the 512-byte stack.
pub struct Scratch {
    pub pkt: Parsed,
    pub inner: Embedded,
}

/// Parses Ethernet (with at most one VLAN tag), IPv4 (with options) or IPv6 (with up to
/// [`MAX_EXT_HEADERS`] extension headers), then TCP or UDP ports, or an ICMP error and the
/// packet it quotes, into `out`. Anything else yields the reason it is left to the kernel.
//
// A BPF subprogram of its own: its callers read the offsets back from the map, which the
// verifier does not track, so everything after parsing is verified once instead of once
// per header layout (VLAN or not, each count of IPv6 extension headers).
#[inline(never)]
pub fn parse(ctx: &XdpContext, out: &mut Scratch) -> Result<Kind, Reason> {
    let mut ethertype = be16(ctx, 12).ok_or(Reason::PassMalformed)?;
    let mut l3 = ETH_HLEN;
    let mut vlan = false;
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        ethertype = be16(ctx, ETH_HLEN + 2).ok_or(Reason::PassMalformed)?;
        l3 += VLAN_HLEN;
        vlan = true;
    }
    let ip = match ethertype {
        ETH_P_IP => ipv4(ctx, l3, vlan)?,
        ETH_P_IPV6 => ipv6(ctx, l3, vlan)?,
        ETH_P_ARP => return Err(Reason::PassArp),
        _ => return Err(Reason::PassNotIp),
    };
    match (ip.flow.proto, ip.v6) {
        (IPPROTO_TCP | IPPROTO_UDP, _) => {
            out.pkt = transport(ctx, ip)?;
            Ok(Kind::Transport)
        }
        (IPPROTO_ICMP, false) | (IPPROTO_ICMPV6, true) => {
            out.inner = icmp::parse_error(ctx, &ip)?;
            out.pkt = ip;
            Ok(Kind::IcmpError)
        }
        (IPPROTO_VRRP, _) => Err(Reason::PassVrrp),
        _ => Err(Reason::PassNotTcpUdp),
    }
}

/// An untagged IPv4 TCP or UDP packet without IP options that [`parse`] would take whole
/// (valid lengths, not a fragment), read in line: most traffic is this, and it needs neither
/// the scratch map's round trip nor a subprogram call to parse. `None` for anything else,
/// which [`parse`] handles.
#[inline(always)]
pub fn plain_ipv4(ctx: &XdpContext) -> Option<Parsed> {
    const L4: usize = ETH_HLEN + IPV4_MIN_HLEN;
    if raw16(ctx, 12)? != ETH_P_IP.to_be() {
        return None;
    }
    // SAFETY: [u16; 10] and [u8; 20] have the same size; any bit pattern is valid.
    let h: [u8; IPV4_MIN_HLEN] = unsafe { core::mem::transmute(words::<10>(ctx, ETH_HLEN)?) };
    let total_len = u16::from_be_bytes([h[2], h[3]]) as usize;
    let proto = h[9];
    let min_l4 = match proto {
        IPPROTO_TCP => TCP_MIN_HLEN,
        IPPROTO_UDP => UDP_HLEN,
        _ => return None,
    };
    let whole = h[0] == 0x45
        && u16::from_be_bytes([h[6], h[7]]) & IP_MF_OFFSET_MASK == 0
        && IPV4_MIN_HLEN + min_l4 <= total_len
        && ctx.data() + ETH_HLEN + total_len <= ctx.data_end();
    if !whole {
        return None;
    }
    let [sport_be, dport_be] = words::<2>(ctx, L4)?;
    let src = u32::from_ne_bytes([h[12], h[13], h[14], h[15]]);
    let dst = u32::from_ne_bytes([h[16], h[17], h[18], h[19]]);
    let flow = flow_key(
        from_v4_raw(src),
        from_v4_raw(dst),
        sport_be,
        dport_be,
        proto,
    );
    let mut pkt = Parsed::new(flow, false, false, ETH_HLEN, L4, ETH_HLEN + total_len);
    if proto == IPPROTO_TCP {
        pkt.tcp_flags = byte(ctx, L4 + 13)?;
    }
    Some(pkt)
}

/// The IPv4 header: addresses, protocol and where the payload is.
#[inline(always)]
fn ipv4(ctx: &XdpContext, l3: usize, vlan: bool) -> Result<Parsed, Reason> {
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
    let saddr = raw32(ctx, l3 + 12).ok_or(Reason::PassMalformed)?;
    let daddr = raw32(ctx, l3 + 16).ok_or(Reason::PassMalformed)?;
    let flow = flow_key(from_v4_raw(saddr), from_v4_raw(daddr), 0, 0, proto);
    Ok(Parsed::new(flow, false, vlan, l3, l3 + ihl, l3 + total_len))
}

/// The IPv6 header and a bounded walk over hop-by-hop, routing and destination options
/// headers. A fragment header means a fragment (`pass_fragment`); a routing header that
/// still has segments left means the destination is not final (`pass_ipv6_ext`); AH, ESP
/// and anything else end the walk as an upper-layer protocol the program does not balance.
#[inline(always)]
fn ipv6(ctx: &XdpContext, l3: usize, vlan: bool) -> Result<Parsed, Reason> {
    let version = byte(ctx, l3).ok_or(Reason::PassMalformed)? >> 4;
    if version != 6 || ptr_at::<[u8; IPV6_HLEN]>(ctx, l3).is_none() {
        return Err(Reason::PassMalformed);
    }
    let payload_len = be16(ctx, l3 + 4).ok_or(Reason::PassMalformed)? as usize;
    let end = l3 + IPV6_HLEN + payload_len;
    if ctx.data() + end > ctx.data_end() {
        return Err(Reason::PassMalformed);
    }
    let mut next = byte(ctx, l3 + 6).ok_or(Reason::PassMalformed)?;
    let src = addr(ctx, l3 + 8, true).ok_or(Reason::PassMalformed)?;
    let dst = addr(ctx, l3 + 24, true).ok_or(Reason::PassMalformed)?;
    let mut off = l3 + IPV6_HLEN;
    for _ in 0..MAX_EXT_HEADERS {
        match next {
            NEXTHDR_HOP | NEXTHDR_DEST | NEXTHDR_ROUTING => {
                if next == NEXTHDR_ROUTING && byte(ctx, off + 3).ok_or(Reason::PassMalformed)? != 0
                {
                    return Err(Reason::PassIpv6Ext);
                }
                let len = (byte(ctx, off + 1).ok_or(Reason::PassMalformed)? as usize + 1) * 8;
                next = byte(ctx, off).ok_or(Reason::PassMalformed)?;
                off += len;
            }
            NEXTHDR_FRAGMENT => return Err(Reason::PassFragment),
            _ => break,
        }
    }
    if matches!(
        next,
        NEXTHDR_HOP | NEXTHDR_DEST | NEXTHDR_ROUTING | NEXTHDR_FRAGMENT
    ) {
        return Err(Reason::PassIpv6Ext);
    }
    if off > end {
        return Err(Reason::PassMalformed);
    }
    let flow = flow_key(src, dst, 0, 0, next);
    Ok(Parsed::new(flow, true, vlan, l3, off, end))
}

/// The TCP or UDP ports (and TCP flags) of `ip`, whose header must be within the IP packet.
#[inline(always)]
fn transport(ctx: &XdpContext, mut ip: Parsed) -> Result<Parsed, Reason> {
    let tcp = ip.flow.proto == IPPROTO_TCP;
    let min = if tcp { TCP_MIN_HLEN } else { UDP_HLEN };
    let l4 = ip.l4();
    if l4 + min > ip.end() {
        return Err(Reason::PassMalformed);
    }
    ip.flow.sport_be = raw16(ctx, l4).ok_or(Reason::PassMalformed)?;
    ip.flow.dport_be = raw16(ctx, l4 + 2).ok_or(Reason::PassMalformed)?;
    if tcp {
        ip.tcp_flags = byte(ctx, l4 + 13).ok_or(Reason::PassMalformed)?;
    }
    Ok(ip)
}

/// The quoted packet of an ICMP error at `at` (just past the 8-byte ICMP header): an IP
/// header of the outer packet's family without extension headers, then TCP or UDP. `None`
/// if it is something else or cut short.
#[inline(always)]
pub fn embedded(ctx: &XdpContext, at: usize, v6: bool, end: usize) -> Option<Embedded> {
    let ver_ihl = byte(ctx, at)?;
    let (proto, l4) = if v6 {
        if ver_ihl >> 4 != 6 {
            return None;
        }
        (byte(ctx, at + 6)?, at + IPV6_HLEN)
    } else {
        let ihl = ((ver_ihl & 0x0f) as usize) * 4;
        // Only a first fragment (offset 0) quotes the ports.
        if ver_ihl >> 4 != 4 || ihl < IPV4_MIN_HLEN || be16(ctx, at + 6)? & 0x1fff != 0 {
            return None;
        }
        (byte(ctx, at + 9)?, at + ihl)
    };
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
        return None;
    }
    // RFC 792 and RFC 4443 guarantee the first 8 bytes of the quoted transport header.
    if l4 + 8 > end {
        return None;
    }
    let (src, dst) = if v6 {
        (addr(ctx, at + 8, true)?, addr(ctx, at + 24, true)?)
    } else {
        (addr(ctx, at + 12, false)?, addr(ctx, at + 16, false)?)
    };
    Some(Embedded {
        flow: flow_key(src, dst, raw16(ctx, l4)?, raw16(ctx, l4 + 2)?, proto),
        l3: at as u16,
        l4: l4 as u16,
    })
}
