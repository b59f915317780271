//! One address representation for both families: 16 bytes as four `u32` words in
//! memory (network) order. IPv4 is stored IPv4-mapped (`::ffff:a.b.c.d`), so a single
//! map key type serves IPv4 and IPv6 VIPs.

use core::net::{IpAddr, Ipv6Addr};

/// An address as the data plane stores it.
pub type Addr = [u32; 4];

/// Word 2 of an IPv4-mapped address (`00 00 ff ff` in memory).
pub const V4_MAPPED_WORD: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

/// Maps an IPv4 address read straight from a packet (memory order) to an [`Addr`].
#[inline(always)]
pub fn from_v4_raw(raw: u32) -> Addr {
    [0, 0, V4_MAPPED_WORD, raw]
}

/// Converts a standard address into the data plane's representation.
pub fn from_ip(ip: IpAddr) -> Addr {
    let v6 = match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    let o = v6.octets();
    let w = |i: usize| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
    [w(0), w(4), w(8), w(12)]
}

/// Converts back; IPv4-mapped addresses become `IpAddr::V4`.
pub fn to_ip(addr: Addr) -> IpAddr {
    let mut o = [0u8; 16];
    for (i, word) in addr.iter().enumerate() {
        o[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
    }
    let v6 = Ipv6Addr::from(o);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::Ipv4Addr;

    #[test]
    fn v4_round_trips_and_matches_raw_packet_order() {
        let ip = Ipv4Addr::new(10, 99, 0, 50);
        let raw = u32::from_ne_bytes(ip.octets());
        assert_eq!(from_ip(IpAddr::V4(ip)), from_v4_raw(raw));
        assert_eq!(to_ip(from_v4_raw(raw)), IpAddr::V4(ip));
    }

    #[test]
    fn v6_round_trips() {
        let ip: IpAddr = "2001:db8::50".parse().unwrap();
        assert_eq!(to_ip(from_ip(ip)), ip);
    }
}
