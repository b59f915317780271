//! Crafted frames. Built with etherparse (valid checksums and lengths) except where a test
//! needs something etherparse refuses to build.

use std::net::Ipv4Addr;

use etherparse::{IpNumber, Ipv4Header, PacketBuilder, VlanId};

use crate::program::{CLIENT, CLIENT_MAC, LB_MAC, VIP};

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

/// TCP to the VIP's port 80 over IPv6 (the v1 data plane leaves IPv6 to the kernel).
pub fn ipv6_tcp() -> Vec<u8> {
    let b = PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv6(
            [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x64],
            [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x50],
            64,
        )
        .tcp(40000, 80, 1, 64240)
        .syn();
    let mut v = Vec::new();
    b.write(&mut v, PAYLOAD).unwrap();
    v
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
