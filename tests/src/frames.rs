//! Crafted frames. Built with etherparse (valid checksums and lengths) except where a test
//! needs something etherparse refuses to build.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{IpNumber, Ipv4Header, PacketBuilder, VlanId};

use crate::program::{CLIENT, CLIENT6, CLIENT_MAC, LB_MAC, VIP, VIP6};

pub const PAYLOAD: &[u8] = b"GET / HTTP/1.1\r\n\r\n";

pub fn tcp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv4(src.octets(), dst.octets(), 64)
        .tcp(sport, dport, 1000, 64240)
        .syn();
    let mut v = Vec::new();
    b.write(&mut v, PAYLOAD).unwrap();
    v
}

pub fn udp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv4(src.octets(), dst.octets(), 64)
        .udp(sport, dport);
    let mut v = Vec::new();
    b.write(&mut v, PAYLOAD).unwrap();
    v
}

pub fn vip_tcp(sport: u16) -> Vec<u8> {
    tcp(CLIENT, sport, VIP, 80)
}

/// A segment of an established connection to the VIP (ACK, no SYN).
pub fn vip_tcp_established(sport: u16) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv4(CLIENT.octets(), VIP.octets(), 64)
        .tcp(sport, 80, 1000, 64240)
        .ack(1);
    let mut v = Vec::new();
    b.write(&mut v, PAYLOAD).unwrap();
    v
}

pub fn vip_udp(sport: u16) -> Vec<u8> {
    udp(CLIENT, sport, VIP, 80)
}

pub fn vlan_vip_tcp(sport: u16) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .single_vlan(VlanId::try_new(42).unwrap())
        .ipv4(CLIENT.octets(), VIP.octets(), 64)
        .tcp(sport, 80, 1000, 64240)
        .syn();
    let mut v = Vec::new();
    b.write(&mut v, PAYLOAD).unwrap();
    v
}

/// TCP to the VIP with 8 bytes of IPv4 options (NOP, NOP, and a timestamp-less record route).
pub fn vip_tcp_with_options(sport: u16) -> Vec<u8> {
    let mut ip = Ipv4Header::new(0, 64, IpNumber::TCP, CLIENT.octets(), VIP.octets()).unwrap();
    ip.options = (&[1u8, 1, 7, 7, 4, 0, 0, 0][..]).try_into().unwrap();
    let b = PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ip(etherparse::IpHeaders::Ipv4(ip, Default::default()))
        .tcp(sport, 80, 1000, 64240)
        .syn();
    let mut v = Vec::new();
    b.write(&mut v, PAYLOAD).unwrap();
    v
}

/// A TCP packet to the VIP with the given flags/fragment-offset word, checksum fixed up.
pub fn vip_tcp_fragment(frag_word: u16) -> Vec<u8> {
    let mut v = vip_tcp(40000);
    v[14 + 6..14 + 8].copy_from_slice(&frag_word.to_be_bytes());
    fix_ipv4_checksum(&mut v, 14);
    v
}

/// VRRP advertisement (IP protocol 112) as keepalived sends it, to the VIP's group.
pub fn vrrp(dst: Ipv4Addr) -> Vec<u8> {
    let mut ip = Ipv4Header::new(20, 255, IpNumber(112), [10, 99, 0, 11], dst.octets()).unwrap();
    ip.header_checksum = ip.calc_header_checksum();
    let mut v = Vec::new();
    v.extend_from_slice(&[0x01, 0x00, 0x5e, 0x00, 0x00, 0x12]);
    v.extend_from_slice(&[0x00, 0x00, 0x5e, 0x00, 0x01, 0x33]);
    v.extend_from_slice(&[0x08, 0x00]);
    ip.write(&mut v).unwrap();
    // VRRPv2: version/type, VRID 51, priority 100, 1 address, no auth, 1 s, checksum, VIP, auth.
    v.extend_from_slice(&[
        0x21, 51, 100, 1, 0, 1, 0, 0, 10, 99, 0, 50, 0, 0, 0, 0, 0, 0, 0, 0,
    ]);
    v
}

/// ARP request "who has the VIP".
pub fn arp_who_has_vip() -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&[0xff; 6]);
    v.extend_from_slice(&CLIENT_MAC);
    v.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    v.extend_from_slice(&CLIENT_MAC);
    v.extend_from_slice(&CLIENT.octets());
    v.extend_from_slice(&[0; 6]);
    v.extend_from_slice(&VIP.octets());
    v
}

/// TCP SYN from the client to [`VIP6`] port 80.
pub fn ipv6_tcp() -> Vec<u8> {
    Frame::new(CLIENT6.into(), 40000, VIP6.into(), 80).tcp()
}

/// A TCP or UDP packet of either family, built with etherparse (valid lengths and
/// checksums), from the client's MAC to the balancer's unless told otherwise.
#[derive(Clone, Copy, Debug)]
pub struct Frame {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: IpAddr,
    pub sport: u16,
    pub dst: IpAddr,
    pub dport: u16,
    /// TTL or hop limit.
    pub ttl: u8,
    /// TCP: a SYN; otherwise an ACK of an established connection.
    pub syn: bool,
    /// Payload bytes; `None` is [`PAYLOAD`].
    pub payload_len: Option<usize>,
}

impl Frame {
    pub fn new(src: IpAddr, sport: u16, dst: IpAddr, dport: u16) -> Frame {
        Frame {
            src_mac: CLIENT_MAC,
            dst_mac: LB_MAC,
            src,
            sport,
            dst,
            dport,
            ttl: 64,
            syn: true,
            payload_len: None,
        }
    }

    /// The same frame with `len` bytes of payload.
    pub fn payload(self, len: usize) -> Frame {
        Frame {
            payload_len: Some(len),
            ..self
        }
    }

    fn payload_bytes(&self) -> Vec<u8> {
        match self.payload_len {
            None => PAYLOAD.to_vec(),
            Some(n) => (0..n).map(|i| (i % 251) as u8).collect(),
        }
    }

    /// The same frame between other MACs.
    pub fn macs(self, src_mac: [u8; 6], dst_mac: [u8; 6]) -> Frame {
        Frame {
            src_mac,
            dst_mac,
            ..self
        }
    }

    pub fn ttl(self, ttl: u8) -> Frame {
        Frame { ttl, ..self }
    }

    pub fn established(self) -> Frame {
        Frame { syn: false, ..self }
    }

    fn ip(&self) -> etherparse::PacketBuilderStep<etherparse::IpHeaders> {
        let eth = PacketBuilder::ethernet2(self.src_mac, self.dst_mac);
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), self.ttl),
            (IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), self.ttl),
            _ => panic!("mixed address families"),
        }
    }

    pub fn tcp(&self) -> Vec<u8> {
        let b = self.ip().tcp(self.sport, self.dport, 1000, 64240);
        let b = if self.syn { b.syn() } else { b.ack(1) };
        let mut v = Vec::new();
        b.write(&mut v, &self.payload_bytes()).unwrap();
        v
    }

    pub fn udp(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.ip()
            .udp(self.sport, self.dport)
            .write(&mut v, &self.payload_bytes())
            .unwrap();
        v
    }

    /// TCP (`proto` 6) or UDP (17).
    pub fn l4(&self, proto: u8) -> Vec<u8> {
        match proto {
            6 => self.tcp(),
            17 => self.udp(),
            _ => panic!("protocol {proto} is neither TCP nor UDP"),
        }
    }
}

/// Sets the UDP checksum of an untagged IPv4 frame to 0 ("no checksum").
pub fn without_udp_checksum(mut frame: Vec<u8>) -> Vec<u8> {
    let ihl = (frame[14] & 0x0f) as usize * 4;
    assert_eq!(frame[14 + 9], 17, "not UDP");
    frame[14 + ihl + 6..14 + ihl + 8].copy_from_slice(&[0, 0]);
    frame
}

/// Inserts IPv6 extension headers after the fixed header of an untagged IPv6 frame:
/// `(next header value, length in bytes)`, lengths multiples of 8. Hop-by-hop and
/// destination options are filled with PadN; a routing header (43) gets `segments_left`.
/// The TCP/UDP checksum does not cover extension headers, so it stays valid.
pub fn with_ipv6_ext(frame: &[u8], exts: &[(u8, usize)], segments_left: u8) -> Vec<u8> {
    let (eth, rest) = frame.split_at(14);
    let (fixed, payload) = rest.split_at(40);
    let mut fixed = fixed.to_vec();
    let upper = fixed[6];
    let mut chain = Vec::new();
    for (i, &(kind, len)) in exts.iter().enumerate() {
        assert!(len >= 8 && len % 8 == 0);
        let next = exts.get(i + 1).map_or(upper, |e| e.0);
        let mut h = vec![0u8; len];
        h[0] = next;
        h[1] = (len / 8 - 1) as u8;
        if kind == 43 {
            h[2] = 4; // segment routing header type; only segments left matters here
            h[3] = segments_left;
        } else {
            h[2] = 1; // PadN over the rest
            h[3] = (len - 4) as u8;
        }
        chain.extend(h);
    }
    fixed[6] = exts.first().map_or(upper, |e| e.0);
    let plen = (payload.len() + chain.len()) as u16;
    fixed[4..6].copy_from_slice(&plen.to_be_bytes());
    [eth, &fixed, &chain, payload].concat()
}

/// An ICMPv4 error from `from` to `to` quoting `quoted` (an IP packet, maybe cut short).
pub fn icmp4_error(
    macs: ([u8; 6], [u8; 6]),
    from: Ipv4Addr,
    to: Ipv4Addr,
    ttl: u8,
    kind: etherparse::Icmpv4Type,
    quoted: &[u8],
) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(macs.0, macs.1)
        .ipv4(from.octets(), to.octets(), ttl)
        .icmpv4(kind)
        .write(&mut v, quoted)
        .unwrap();
    v
}

/// An ICMPv6 error from `from` to `to` quoting `quoted`.
pub fn icmp6_error(
    macs: ([u8; 6], [u8; 6]),
    from: Ipv6Addr,
    to: Ipv6Addr,
    ttl: u8,
    kind: etherparse::Icmpv6Type,
    quoted: &[u8],
) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(macs.0, macs.1)
        .ipv6(from.octets(), to.octets(), ttl)
        .icmpv6(kind)
        .write(&mut v, quoted)
        .unwrap();
    v
}

/// Checks every checksum of a frame with a plain one's-complement sum, written here and
/// independent of the program: the IPv4 header, TCP/UDP/ICMPv6 with their pseudo-headers,
/// ICMPv4, and for an ICMP error the quoted IPv4 header and, when quoted whole, the quoted
/// TCP/UDP checksum. IPv4 UDP with checksum 0 ("none") passes.
pub fn verify_checksums(frame: &[u8]) -> Result<(), String> {
    let be16 = |at: usize| u16::from_be_bytes([frame[at], frame[at + 1]]);
    let mut l3 = 14;
    let mut ethertype = be16(12);
    if ethertype == 0x8100 || ethertype == 0x88a8 {
        ethertype = be16(16);
        l3 = 18;
    }
    let ip = &frame[l3..];
    let (proto, segment, pseudo, v6) = match ethertype {
        0x0800 => {
            let ihl = (ip[0] & 0x0f) as usize * 4;
            if internet_checksum(&ip[..ihl]) != 0 {
                return Err("IPv4 header checksum".into());
            }
            let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
            let seg = &ip[ihl..total];
            (
                ip[9],
                seg,
                pseudo_header(&ip[12..16], &ip[16..20], ip[9], seg.len()),
                false,
            )
        }
        0x86dd => {
            let (mut next, mut off) = (ip[6], 40);
            while matches!(next, 0 | 43 | 60) {
                next = ip[off];
                off += (ip[off + 1] as usize + 1) * 8;
            }
            let end = 40 + u16::from_be_bytes([ip[4], ip[5]]) as usize;
            let seg = &ip[off..end];
            (
                next,
                seg,
                pseudo_header(&ip[8..24], &ip[24..40], next, seg.len()),
                true,
            )
        }
        other => return Err(format!("ethertype {other:#06x}")),
    };
    match proto {
        17 if !v6 && segment[6..8] == [0, 0] => Ok(()),
        6 | 17 | 58 => {
            if internet_checksum(&[&pseudo[..], segment].concat()) != 0 {
                return Err(format!("protocol {proto} checksum"));
            }
            if proto == 58 {
                verify_quoted(&segment[8..], true)?;
            }
            Ok(())
        }
        1 => {
            if internet_checksum(segment) != 0 {
                return Err("ICMP checksum".into());
            }
            verify_quoted(&segment[8..], false)
        }
        other => Err(format!("protocol {other}")),
    }
}

/// The checksums of a quoted packet that are there to check.
fn verify_quoted(q: &[u8], v6: bool) -> Result<(), String> {
    let (proto, l4, total, pseudo) = if v6 {
        let total = 40 + u16::from_be_bytes([q[4], q[5]]) as usize;
        (
            q[6],
            40,
            total,
            pseudo_header(&q[8..24], &q[24..40], q[6], total - 40),
        )
    } else {
        let ihl = (q[0] & 0x0f) as usize * 4;
        if q.len() >= ihl && internet_checksum(&q[..ihl]) != 0 {
            return Err("quoted IPv4 header checksum".into());
        }
        let total = u16::from_be_bytes([q[2], q[3]]) as usize;
        (
            q[9],
            ihl,
            total,
            pseudo_header(&q[12..16], &q[16..20], q[9], total - ihl),
        )
    };
    if q.len() < total || (proto == 17 && !v6 && q[l4 + 6..l4 + 8] == [0, 0]) {
        return Ok(());
    }
    if internet_checksum(&[&pseudo[..], &q[l4..total]].concat()) != 0 {
        return Err(format!("quoted protocol {proto} checksum"));
    }
    Ok(())
}

fn pseudo_header(src: &[u8], dst: &[u8], proto: u8, len: usize) -> Vec<u8> {
    let mut p = [src, dst].concat();
    if src.len() == 4 {
        p.extend([0, proto]);
        p.extend((len as u16).to_be_bytes());
    } else {
        p.extend((len as u32).to_be_bytes());
        p.extend([0, 0, 0, proto]);
    }
    p
}

pub fn fix_ipv4_checksum(frame: &mut [u8], l3: usize) {
    let ihl = ((frame[l3] & 0x0f) as usize) * 4;
    frame[l3 + 10..l3 + 12].copy_from_slice(&[0, 0]);
    let sum = internet_checksum(&frame[l3..l3 + ihl]);
    frame[l3 + 10..l3 + 12].copy_from_slice(&sum.to_be_bytes());
}

pub fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32)
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
