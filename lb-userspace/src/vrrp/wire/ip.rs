//! The IPv4/IPv6 headers around a VRRP message and the Ethernet frame around those: what
//! a receiver must check there (TTL 255, protocol 112, lengths from the IP header so that
//! padding is ignored) and what keepalived puts there when it sends.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{
    finish, verifies, ChecksumKind, EmitError, Family, Invalid, IpContext, Mac, Packet, Repr,
    ETHERNET_LEN, ETHERTYPE_IPV4, ETHERTYPE_IPV6, PROTOCOL, TOS_NETWORK_CONTROL, TTL,
};

/// The IPv4 header of a VRRP packet. Options are skipped on parsing and never emitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Header {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// keepalived sends 0xc0.
    pub tos: u8,
    /// keepalived's own per-instance counter, +1 per advert.
    pub ident: u16,
    /// keepalived does not set DF.
    pub dont_fragment: bool,
    pub ttl: u8,
}

impl Ipv4Header {
    /// Length of an emitted header (no options).
    pub const LEN: usize = 20;

    /// Parses an IPv4 packet carrying `protocol`; returns the header and the payload, whose
    /// length comes from Total Length (trailing bytes, such as Ethernet padding, are ignored).
    pub fn parse(packet: &[u8], protocol: u8) -> Result<(Ipv4Header, &[u8]), Invalid> {
        if packet.len() < Self::LEN {
            return Err(Invalid::Truncated);
        }
        if packet[0] >> 4 != 4 {
            return Err(Invalid::BadIpHeader);
        }
        let header_len = usize::from(packet[0] & 0x0f) * 4;
        if header_len < Self::LEN {
            return Err(Invalid::BadIpHeader);
        }
        if packet.len() < header_len {
            return Err(Invalid::Truncated);
        }
        let total_len = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
        if total_len < header_len {
            return Err(Invalid::LengthMismatch);
        }
        if packet.len() < total_len {
            return Err(Invalid::Truncated);
        }
        if !verifies(0, &packet[..header_len]) {
            return Err(Invalid::BadIpChecksum);
        }
        let flags_frag = u16::from_be_bytes([packet[6], packet[7]]);
        // MF set or a non-zero offset: a fragment. DF (0x4000) is fine.
        if flags_frag & 0x3fff != 0 {
            return Err(Invalid::Fragment);
        }
        if packet[9] != protocol {
            return Err(Invalid::BadProtocol);
        }
        let header = Ipv4Header {
            src: Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]),
            dst: Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]),
            tos: packet[1],
            ident: u16::from_be_bytes([packet[4], packet[5]]),
            dont_fragment: flags_frag & 0x4000 != 0,
            ttl: packet[8],
        };
        Ok((header, &packet[header_len..total_len]))
    }

    /// Writes a 20-byte header for a payload of `payload_len` bytes of `protocol` into the
    /// start of `buf`, header checksum included.
    pub fn emit(&self, buf: &mut [u8], protocol: u8, payload_len: usize) -> Result<(), EmitError> {
        let total =
            u16::try_from(Self::LEN + payload_len).map_err(|_| EmitError::BufferTooSmall)?;
        let h = buf.get_mut(..Self::LEN).ok_or(EmitError::BufferTooSmall)?;
        h[0] = 0x45;
        h[1] = self.tos;
        h[2..4].copy_from_slice(&total.to_be_bytes());
        h[4..6].copy_from_slice(&self.ident.to_be_bytes());
        let flags: u16 = if self.dont_fragment { 0x4000 } else { 0 };
        h[6..8].copy_from_slice(&flags.to_be_bytes());
        h[8] = self.ttl;
        h[9] = protocol;
        h[10..12].copy_from_slice(&[0, 0]);
        h[12..16].copy_from_slice(&self.src.octets());
        h[16..20].copy_from_slice(&self.dst.octets());
        let sum = finish(0, h);
        h[10..12].copy_from_slice(&sum.to_be_bytes());
        Ok(())
    }
}

/// The IPv6 header of a VRRP packet. Extension headers are not supported: VRRP senders use
/// none, and a packet with one is reported as [`Invalid::BadProtocol`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Header {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub traffic_class: u8,
    /// 20 bits. The kernel picks it per socket; a re-encoder copies it, it is not derived.
    pub flow_label: u32,
    pub hop_limit: u8,
}

impl Ipv6Header {
    /// Length of the fixed header.
    pub const LEN: usize = 40;

    /// Parses an IPv6 packet whose next header is `next_header`; returns the header and the
    /// payload, whose length comes from Payload Length (trailing bytes are ignored).
    pub fn parse(packet: &[u8], next_header: u8) -> Result<(Ipv6Header, &[u8]), Invalid> {
        if packet.len() < Self::LEN {
            return Err(Invalid::Truncated);
        }
        if packet[0] >> 4 != 6 {
            return Err(Invalid::BadIpHeader);
        }
        let payload_len = usize::from(u16::from_be_bytes([packet[4], packet[5]]));
        if packet.len() - Self::LEN < payload_len {
            return Err(Invalid::Truncated);
        }
        if packet[6] != next_header {
            return Err(Invalid::BadProtocol);
        }
        let word = u32::from_be_bytes([packet[0], packet[1], packet[2], packet[3]]);
        let mut src = [0u8; 16];
        src.copy_from_slice(&packet[8..24]);
        let mut dst = [0u8; 16];
        dst.copy_from_slice(&packet[24..40]);
        let header = Ipv6Header {
            src: Ipv6Addr::from(src),
            dst: Ipv6Addr::from(dst),
            traffic_class: (word >> 20) as u8,
            flow_label: word & 0x000f_ffff,
            hop_limit: packet[7],
        };
        Ok((header, &packet[Self::LEN..Self::LEN + payload_len]))
    }

    /// Writes the 40-byte header for a payload of `payload_len` bytes of `next_header`.
    pub fn emit(
        &self,
        buf: &mut [u8],
        next_header: u8,
        payload_len: usize,
    ) -> Result<(), EmitError> {
        let len = u16::try_from(payload_len).map_err(|_| EmitError::BufferTooSmall)?;
        let h = buf.get_mut(..Self::LEN).ok_or(EmitError::BufferTooSmall)?;
        let word =
            6u32 << 28 | u32::from(self.traffic_class) << 20 | (self.flow_label & 0x000f_ffff);
        h[0..4].copy_from_slice(&word.to_be_bytes());
        h[4..6].copy_from_slice(&len.to_be_bytes());
        h[6] = next_header;
        h[7] = self.hop_limit;
        h[8..24].copy_from_slice(&self.src.octets());
        h[24..40].copy_from_slice(&self.dst.octets());
        Ok(())
    }
}

/// The IP header of a VRRP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpHeader {
    V4(Ipv4Header),
    V6(Ipv6Header),
}

impl IpHeader {
    /// Source address (the sender's primary address: the tie-breaker between equal priorities).
    pub fn src(&self) -> IpAddr {
        match self {
            IpHeader::V4(h) => IpAddr::V4(h.src),
            IpHeader::V6(h) => IpAddr::V6(h.src),
        }
    }

    /// Destination address (the group, or this node for unicast).
    pub fn dst(&self) -> IpAddr {
        match self {
            IpHeader::V4(h) => IpAddr::V4(h.dst),
            IpHeader::V6(h) => IpAddr::V6(h.dst),
        }
    }

    /// TTL or hop limit.
    pub fn ttl(&self) -> u8 {
        match self {
            IpHeader::V4(h) => h.ttl,
            IpHeader::V6(h) => h.hop_limit,
        }
    }

    /// The family.
    pub fn family(&self) -> Family {
        match self {
            IpHeader::V4(_) => Family::V4,
            IpHeader::V6(_) => Family::V6,
        }
    }

    /// What [`Repr::parse`] needs from this header.
    pub fn context(&self) -> IpContext {
        IpContext {
            src: self.src(),
            dst: self.dst(),
            ttl: self.ttl(),
        }
    }

    fn len(&self) -> usize {
        match self {
            IpHeader::V4(_) => Ipv4Header::LEN,
            IpHeader::V6(_) => Ipv6Header::LEN,
        }
    }

    /// An IPv4 header as keepalived builds it (TOS 0xc0, TTL 255, no DF), or the IPv6 header
    /// the kernel builds for keepalived's socket (traffic class 0xc0, hop limit 255).
    pub fn for_advert(src: IpAddr, dst: IpAddr, ident: u16, flow_label: u32) -> Option<IpHeader> {
        match (src, dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => Some(IpHeader::V4(Ipv4Header {
                src,
                dst,
                tos: TOS_NETWORK_CONTROL,
                ident,
                dont_fragment: false,
                ttl: TTL,
            })),
            (IpAddr::V6(src), IpAddr::V6(dst)) => Some(IpHeader::V6(Ipv6Header {
                src,
                dst,
                traffic_class: TOS_NETWORK_CONTROL,
                flow_label,
                hop_limit: TTL,
            })),
            _ => None,
        }
    }
}

/// A VRRP advertisement with the IP header that carried it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advert {
    pub ip: IpHeader,
    pub vrrp: Repr,
    /// The checksum convention the message used (received) or is to use (emitted).
    pub checksum: ChecksumKind,
}

impl Advert {
    /// Parses an IP packet (IPv4 or IPv6, by the version nibble) carrying a VRRP message.
    pub fn parse_ip(packet: &[u8]) -> Result<Advert, Invalid> {
        let version = packet.first().ok_or(Invalid::Truncated)? >> 4;
        let (ip, payload) = match version {
            4 => {
                let (h, p) = Ipv4Header::parse(packet, PROTOCOL)?;
                (IpHeader::V4(h), p)
            }
            6 => {
                let (h, p) = Ipv6Header::parse(packet, PROTOCOL)?;
                (IpHeader::V6(h), p)
            }
            _ => return Err(Invalid::BadIpHeader),
        };
        let view = Packet::new_unchecked(payload, ip.family());
        let (vrrp, checksum) = Repr::parse(&view, &ip.context())?;
        Ok(Advert { ip, vrrp, checksum })
    }

    /// Emits the IP packet: header, then the VRRP message.
    pub fn to_ip_bytes(&self) -> Result<Vec<u8>, EmitError> {
        let vrrp = self
            .vrrp
            .to_bytes(self.ip.src(), self.ip.dst(), self.checksum)?;
        let mut out = vec![0u8; self.ip.len() + vrrp.len()];
        match &self.ip {
            IpHeader::V4(h) => h.emit(&mut out, PROTOCOL, vrrp.len())?,
            IpHeader::V6(h) => h.emit(&mut out, PROTOCOL, vrrp.len())?,
        }
        out[self.ip.len()..].copy_from_slice(&vrrp);
        Ok(out)
    }
}

/// An Ethernet frame carrying a VRRP advertisement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdvertFrame {
    pub dst_mac: Mac,
    pub src_mac: Mac,
    pub advert: Advert,
}

impl AdvertFrame {
    /// Parses an Ethernet frame (no FCS, padded or not) carrying a VRRP advertisement.
    pub fn parse(frame: &[u8]) -> Result<AdvertFrame, Invalid> {
        let (dst_mac, src_mac, ethertype, rest) = ethernet(frame)?;
        let family = match ethertype {
            ETHERTYPE_IPV4 => Family::V4,
            ETHERTYPE_IPV6 => Family::V6,
            _ => return Err(Invalid::NotIp),
        };
        let advert = Advert::parse_ip(rest)?;
        // An IPv4 ethertype around an IPv6 packet (or the reverse) is a broken frame.
        if advert.ip.family() != family {
            return Err(Invalid::BadIpHeader);
        }
        Ok(AdvertFrame {
            dst_mac,
            src_mac,
            advert,
        })
    }

    /// Emits the frame, unpadded (the NIC pads).
    pub fn to_bytes(&self) -> Result<Vec<u8>, EmitError> {
        let ip = self.advert.to_ip_bytes()?;
        let ethertype = match self.advert.ip.family() {
            Family::V4 => ETHERTYPE_IPV4,
            Family::V6 => ETHERTYPE_IPV6,
        };
        let mut out = Vec::with_capacity(ETHERNET_LEN + ip.len());
        out.extend_from_slice(&self.dst_mac);
        out.extend_from_slice(&self.src_mac);
        out.extend_from_slice(&ethertype.to_be_bytes());
        out.extend_from_slice(&ip);
        Ok(out)
    }
}

pub(super) fn ethernet(frame: &[u8]) -> Result<(Mac, Mac, u16, &[u8]), Invalid> {
    if frame.len() < ETHERNET_LEN {
        return Err(Invalid::Truncated);
    }
    let mut dst = [0u8; 6];
    dst.copy_from_slice(&frame[0..6]);
    let mut src = [0u8; 6];
    src.copy_from_slice(&frame[6..12]);
    let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    Ok((dst, src, ethertype, &frame[ETHERNET_LEN..]))
}
