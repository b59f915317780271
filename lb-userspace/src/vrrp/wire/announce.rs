//! How a new master announces a VIP: gratuitous ARP (IPv4) and unsolicited neighbour
//! advertisement (IPv6), byte for byte as keepalived sends them, and parsers for checking
//! captured ones.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{
    finish, ip::ethernet, pseudo_header_sum, verifies, Invalid, Ipv6Header, Mac, BROADCAST,
    ETHERNET_LEN, ETHERTYPE_ARP, ETHERTYPE_IPV6, TTL,
};

const ARP_LEN: usize = 28;
const ICMPV6: u8 = 58;
const ICMPV6_NEIGHBOR_ADVERT: u8 = 136;
const NA_LEN: usize = 24;
const OPT_TARGET_LL: u8 = 2;
/// All-nodes multicast, where unsolicited NAs go.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// An ARP packet in an Ethernet frame (Ethernet/IPv4 only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arp {
    pub dst_mac: Mac,
    pub src_mac: Mac,
    /// 1 request, 2 reply.
    pub op: u16,
    pub sender_mac: Mac,
    pub sender_ip: Ipv4Addr,
    pub target_mac: Mac,
    pub target_ip: Ipv4Addr,
}

impl Arp {
    /// Parses an Ethernet frame carrying ARP for Ethernet/IPv4.
    pub fn parse(frame: &[u8]) -> Result<Arp, Invalid> {
        let (dst_mac, src_mac, ethertype, a) = ethernet(frame)?;
        if ethertype != ETHERTYPE_ARP {
            return Err(Invalid::BadProtocol);
        }
        if a.len() < ARP_LEN {
            return Err(Invalid::Truncated);
        }
        if a[0..6] != [0, 1, 0x08, 0x00, 6, 4] {
            return Err(Invalid::BadProtocol);
        }
        let mac = |at: usize| {
            let mut m = [0u8; 6];
            m.copy_from_slice(&a[at..at + 6]);
            m
        };
        let ip = |at: usize| Ipv4Addr::new(a[at], a[at + 1], a[at + 2], a[at + 3]);
        Ok(Arp {
            dst_mac,
            src_mac,
            op: u16::from_be_bytes([a[6], a[7]]),
            sender_mac: mac(8),
            sender_ip: ip(14),
            target_mac: mac(18),
            target_ip: ip(24),
        })
    }

    /// A gratuitous ARP: a broadcast request whose sender and target address are the same.
    pub fn is_gratuitous(&self) -> bool {
        self.op == 1 && self.dst_mac == BROADCAST && self.sender_ip == self.target_ip
    }
}

/// The gratuitous ARP keepalived sends for an IPv4 VIP: a broadcast ARP request from `mac`
/// with sender and target address `ip` and target MAC ff:ff:ff:ff:ff:ff. 42 bytes, unpadded.
pub fn emit_gratuitous_arp(mac: Mac, ip: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(ETHERNET_LEN + ARP_LEN);
    f.extend_from_slice(&BROADCAST);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ip.octets());
    f.extend_from_slice(&BROADCAST);
    f.extend_from_slice(&ip.octets());
    f
}

/// An ICMPv6 neighbour advertisement in an Ethernet frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeighborAdvert {
    pub dst_mac: Mac,
    pub src_mac: Mac,
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub hop_limit: u8,
    pub router: bool,
    pub solicited: bool,
    pub override_flag: bool,
    pub target: Ipv6Addr,
    /// The Target Link-Layer Address option, if present.
    pub target_mac: Option<Mac>,
}

impl NeighborAdvert {
    /// Parses an Ethernet frame carrying an ICMPv6 neighbour advertisement; checks the ICMPv6
    /// checksum.
    pub fn parse(frame: &[u8]) -> Result<NeighborAdvert, Invalid> {
        let (dst_mac, src_mac, ethertype, rest) = ethernet(frame)?;
        if ethertype != ETHERTYPE_IPV6 {
            return Err(Invalid::NotIp);
        }
        let (ip, icmp) = Ipv6Header::parse(rest, ICMPV6)?;
        if icmp.len() < NA_LEN {
            return Err(Invalid::Truncated);
        }
        if icmp[0] != ICMPV6_NEIGHBOR_ADVERT || icmp[1] != 0 {
            return Err(Invalid::BadType);
        }
        let acc = pseudo_header_sum(IpAddr::V6(ip.src), IpAddr::V6(ip.dst), ICMPV6, icmp.len());
        if !verifies(acc, icmp) {
            return Err(Invalid::BadChecksum);
        }
        let mut target = [0u8; 16];
        target.copy_from_slice(&icmp[8..24]);
        let mut target_mac = None;
        let mut opts = &icmp[NA_LEN..];
        // Options are (type, length in units of 8 bytes, data); a zero length is invalid and
        // would loop forever.
        while opts.len() >= 2 {
            let len = usize::from(opts[1]) * 8;
            if len == 0 || len > opts.len() {
                return Err(Invalid::LengthMismatch);
            }
            if opts[0] == OPT_TARGET_LL && len == 8 {
                let mut m = [0u8; 6];
                m.copy_from_slice(&opts[2..8]);
                target_mac = Some(m);
            }
            opts = &opts[len..];
        }
        Ok(NeighborAdvert {
            dst_mac,
            src_mac,
            src: ip.src,
            dst: ip.dst,
            hop_limit: ip.hop_limit,
            router: icmp[4] & 0x80 != 0,
            solicited: icmp[4] & 0x40 != 0,
            override_flag: icmp[4] & 0x20 != 0,
            target: Ipv6Addr::from(target),
            target_mac,
        })
    }

    /// An unsolicited NA: to all nodes, Solicited clear, hop limit 255.
    pub fn is_unsolicited(&self) -> bool {
        self.dst == ALL_NODES && !self.solicited && self.hop_limit == TTL
    }
}

/// The unsolicited neighbour advertisement keepalived sends for an IPv6 VIP: from `mac` to
/// 33:33:00:00:00:01, IPv6 from `src` to ff02::1 with hop limit 255 (traffic class and flow
/// label 0), Override set, Router set if `router`, target `target`, and a Target Link-Layer
/// Address option with `mac`. 86 bytes.
///
/// keepalived uses the VIP itself as `src` (so `src == target`), and sets Router only when the
/// node forwards IPv6; RFC 5798 §6.4.2 asks for Router always.
pub fn emit_unsolicited_na(mac: Mac, src: Ipv6Addr, target: Ipv6Addr, router: bool) -> Vec<u8> {
    let mut icmp = [0u8; NA_LEN + 8];
    icmp[0] = ICMPV6_NEIGHBOR_ADVERT;
    icmp[4] = if router { 0xa0 } else { 0x20 };
    icmp[8..24].copy_from_slice(&target.octets());
    icmp[24] = OPT_TARGET_LL;
    icmp[25] = 1;
    icmp[26..32].copy_from_slice(&mac);
    let acc = pseudo_header_sum(IpAddr::V6(src), IpAddr::V6(ALL_NODES), ICMPV6, icmp.len());
    let sum = finish(acc, &icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());

    let ip = Ipv6Header {
        src,
        dst: ALL_NODES,
        traffic_class: 0,
        flow_label: 0,
        hop_limit: TTL,
    };
    let mut f = vec![0u8; ETHERNET_LEN + Ipv6Header::LEN + icmp.len()];
    f[0..6].copy_from_slice(&[0x33, 0x33, 0, 0, 0, 1]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
    // The buffer is sized for the header and the payload length fits 16 bits.
    let _ = ip.emit(&mut f[ETHERNET_LEN..], ICMPV6, icmp.len());
    f[ETHERNET_LEN + Ipv6Header::LEN..].copy_from_slice(&icmp);
    f
}
