//! VRRP on the wire: a zero-copy [`Packet`] view over the VRRP message (what follows the IP
//! header), a [`Repr`] that parses and emits it, the IPv4/IPv6 headers around it, and the
//! gratuitous ARP / unsolicited NA frames a new master announces itself with.
//!
//! Versions: VRRPv3 (RFC 5798/9568) over IPv4 and IPv6, VRRPv2 (RFC 3768) over IPv4 with
//! authentication type 0 (none) or 1 (simple text), the forms keepalived sends. Every check a
//! receiver must make (RFC 5798 §7.1) that needs no configuration happens here and fails with
//! an [`Invalid`] reason; the checks that need the instance's configuration (VRID, auth,
//! interval) happen in [`super::machine`]. Malformed input is an `Err`, never a panic.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

/// IP protocol number (IPv4 protocol / IPv6 next header) of VRRP.
pub const PROTOCOL: u8 = 112;
/// The only TTL / hop limit a receiver accepts (RFC 5798 §7.1): proof the sender is on-link.
pub const TTL: u8 = 255;
/// IPv4 multicast group of VRRP.
pub const MULTICAST_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// IPv6 multicast group of VRRP.
pub const MULTICAST_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// Length of the fixed VRRP header.
pub const HEADER_LEN: usize = 8;
/// Length of the VRRPv2 authentication data, present whatever the authentication type.
pub const AUTH_DATA_LEN: usize = 8;
/// VRRP message type of an advertisement, the only type defined.
pub const TYPE_ADVERTISEMENT: u8 = 1;
/// Largest VRRPv3 Max Adver Int: a 12-bit field, in centiseconds.
pub const MAX_ADVER_INT_CS: u16 = 0x0fff;
/// Traffic class / TOS keepalived puts on adverts (network control).
pub const TOS_NETWORK_CONTROL: u8 = 0xc0;

/// An Ethernet MAC address.
pub type Mac = [u8; 6];
/// The Ethernet broadcast address.
pub const BROADCAST: Mac = [0xff; 6];

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERNET_LEN: usize = 14;

/// VRRP protocol version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Version {
    /// RFC 3768: IPv4 only, whole-second intervals, authentication data.
    V2,
    /// RFC 5798: IPv4 and IPv6, centisecond intervals, pseudo-header checksum.
    V3,
}

impl Version {
    /// The number in the version nibble.
    pub fn number(self) -> u8 {
        match self {
            Version::V2 => 2,
            Version::V3 => 3,
        }
    }

    fn from_number(n: u8) -> Option<Version> {
        match n {
            2 => Some(Version::V2),
            3 => Some(Version::V3),
            _ => None,
        }
    }
}

/// Address family of a VRRP instance: the addresses in an advert are all of the family of the
/// IP packet that carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// The family of an address.
    pub fn of(addr: IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// Bytes per address in the advert.
    pub fn addr_len(self) -> usize {
        match self {
            Family::V4 => 4,
            Family::V6 => 16,
        }
    }

    /// The VRRP multicast group of this family.
    pub fn multicast_group(self) -> IpAddr {
        match self {
            Family::V4 => IpAddr::V4(MULTICAST_V4),
            Family::V6 => IpAddr::V6(MULTICAST_V6),
        }
    }

    /// The Ethernet address the VRRP multicast group maps to.
    pub fn multicast_mac(self) -> Mac {
        match self {
            Family::V4 => [0x01, 0x00, 0x5e, 0x00, 0x00, 0x12],
            Family::V6 => [0x33, 0x33, 0x00, 0x00, 0x00, 0x12],
        }
    }

    /// The virtual router MAC of a VRID (RFC 5798 §7.3), for the optional VMAC mode.
    pub fn virtual_mac(self, vrid: u8) -> Mac {
        let kind = match self {
            Family::V4 => 0x01,
            Family::V6 => 0x02,
        };
        [0x00, 0x00, 0x5e, 0x00, kind, vrid]
    }
}

/// Why a received packet was not accepted as an advertisement for an instance.
///
/// Every reason has a stable snake_case [`name`](Invalid::name), used as a counter name. The
/// first group is found by the codec alone; the second by [`super::machine::Machine`], which
/// knows the instance's configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Invalid {
    /// Shorter than its headers or than the length its headers announce.
    Truncated,
    /// The VRRP message is longer than its address count allows, or a length field is absurd.
    LengthMismatch,
    /// The frame carries neither IPv4 nor IPv6 (nor ARP, where ARP is expected).
    NotIp,
    /// IP version nibble or IPv4 header length is wrong.
    BadIpHeader,
    /// IPv4 header checksum is wrong.
    BadIpChecksum,
    /// An IPv4 fragment: VRRP messages are never fragmented.
    Fragment,
    /// IP protocol / next header is not the one expected (112 for VRRP).
    BadProtocol,
    /// TTL / hop limit is not 255: the sender is not on this link.
    BadTtl,
    /// VRRP version is neither 2 nor 3.
    BadVersion,
    /// VRRP type is not 1 (advertisement).
    BadType,
    /// Count of addresses is 0.
    BadAddrCount,
    /// VRRP checksum is wrong under every convention accepted (see [`ChecksumKind`]).
    BadChecksum,
    /// Advertisement interval is 0.
    BadInterval,
    /// VRRPv2 authentication type other than 0 (none) or 1 (simple text).
    UnsupportedAuth,
    /// VRRPv2 over IPv6, or addresses of the other family than the instance's.
    AddressFamily,
    /// The VRID is not the instance's.
    WrongVrid,
    /// The VRRP version is not the instance's.
    VersionMismatch,
    /// VRRPv2 authentication type or password differs from the instance's.
    AuthMismatch,
    /// VRRPv2 advertisement interval differs from the instance's (RFC 3768 §7.1: discard).
    IntervalMismatch,
    /// This node owns the addresses (priority 255): RFC 5798 §7.1 says to discard.
    LocalOwner,
    /// The advert comes from this node's own primary address (looped back).
    FromSelf,
    /// The instance is not running (Initialize state).
    NotRunning,
    /// A unicast instance received an advert from an address that is not one of its peers
    /// (keepalived drops those too). Found by the IO layer, which knows the peers.
    UnknownPeer,
}

impl Invalid {
    /// Every reason, in declaration order.
    pub const ALL: [Invalid; 23] = [
        Invalid::Truncated,
        Invalid::LengthMismatch,
        Invalid::NotIp,
        Invalid::BadIpHeader,
        Invalid::BadIpChecksum,
        Invalid::Fragment,
        Invalid::BadProtocol,
        Invalid::BadTtl,
        Invalid::BadVersion,
        Invalid::BadType,
        Invalid::BadAddrCount,
        Invalid::BadChecksum,
        Invalid::BadInterval,
        Invalid::UnsupportedAuth,
        Invalid::AddressFamily,
        Invalid::WrongVrid,
        Invalid::VersionMismatch,
        Invalid::AuthMismatch,
        Invalid::IntervalMismatch,
        Invalid::LocalOwner,
        Invalid::FromSelf,
        Invalid::NotRunning,
        Invalid::UnknownPeer,
    ];

    /// Stable snake_case name, for counters and logs.
    pub fn name(self) -> &'static str {
        match self {
            Invalid::Truncated => "truncated",
            Invalid::LengthMismatch => "length_mismatch",
            Invalid::NotIp => "not_ip",
            Invalid::BadIpHeader => "bad_ip_header",
            Invalid::BadIpChecksum => "bad_ip_checksum",
            Invalid::Fragment => "fragment",
            Invalid::BadProtocol => "bad_protocol",
            Invalid::BadTtl => "bad_ttl",
            Invalid::BadVersion => "bad_version",
            Invalid::BadType => "bad_type",
            Invalid::BadAddrCount => "bad_addr_count",
            Invalid::BadChecksum => "bad_checksum",
            Invalid::BadInterval => "bad_interval",
            Invalid::UnsupportedAuth => "unsupported_auth",
            Invalid::AddressFamily => "address_family",
            Invalid::WrongVrid => "wrong_vrid",
            Invalid::VersionMismatch => "version_mismatch",
            Invalid::AuthMismatch => "auth_mismatch",
            Invalid::IntervalMismatch => "interval_mismatch",
            Invalid::LocalOwner => "local_owner",
            Invalid::FromSelf => "from_self",
            Invalid::NotRunning => "not_running",
            Invalid::UnknownPeer => "unknown_peer",
        }
    }

    fn index(self) -> usize {
        // ALL is in declaration order, so the discriminant is the index.
        self as usize
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::error::Error for Invalid {}

/// One counter per [`Invalid`] reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    counts: [u64; Invalid::ALL.len()],
}

impl Counters {
    /// Counts one packet dropped for `reason`.
    pub fn record(&mut self, reason: Invalid) {
        let slot = &mut self.counts[reason.index()];
        *slot = slot.saturating_add(1);
    }

    /// How many packets were dropped for `reason`.
    pub fn get(&self, reason: Invalid) -> u64 {
        self.counts[reason.index()]
    }

    /// All packets dropped, whatever the reason.
    pub fn total(&self) -> u64 {
        self.counts.iter().fold(0u64, |a, &c| a.saturating_add(c))
    }

    /// Every reason with its count (zeros included, so a scrape always sees every name).
    pub fn iter(&self) -> impl Iterator<Item = (Invalid, u64)> + '_ {
        Invalid::ALL.iter().map(|&r| (r, self.get(r)))
    }
}

/// Which checksum convention a received VRRP message satisfied; for sending, which one to use.
///
/// VRRPv2 has only [`Message`](ChecksumKind::Message). VRRPv3 senders met in the wild use three:
/// keepalived and the RFCs use [`PseudoHeader`](ChecksumKind::PseudoHeader); keepalived's
/// `old_unicast_checksum` uses [`OldUnicast`](ChecksumKind::OldUnicast); some routers send the
/// v2-style [`Message`](ChecksumKind::Message) sum with v3 over IPv4. A receiver accepts all
/// three over IPv4 so it interoperates, and reports which one matched so the IO layer can count
/// per peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChecksumKind {
    /// Internet checksum over the VRRP message only (VRRPv2; v3 from some routers).
    Message,
    /// Over the IPv4/IPv6 pseudo-header with the real IP destination, then the message
    /// (RFC 5798 §5.2.8).
    PseudoHeader,
    /// Over the IPv4 pseudo-header with 224.0.0.18 as destination although the packet is
    /// unicast (keepalived's `old_unicast_checksum`).
    OldUnicast,
}

impl ChecksumKind {
    /// Stable snake_case name, for counters.
    pub fn name(self) -> &'static str {
        match self {
            ChecksumKind::Message => "message",
            ChecksumKind::PseudoHeader => "pseudo_header",
            ChecksumKind::OldUnicast => "old_unicast",
        }
    }

    /// The convention a sender of `version` uses by default.
    pub fn default_for(version: Version) -> ChecksumKind {
        match version {
            Version::V2 => ChecksumKind::Message,
            Version::V3 => ChecksumKind::PseudoHeader,
        }
    }
}

/// Why a [`Repr`] (or a frame) could not be emitted: programming or configuration errors, not
/// bad input from the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmitError {
    /// The buffer is shorter than [`Repr::buffer_len`].
    BufferTooSmall,
    /// No addresses, or more than 255.
    AddressCount,
    /// Addresses of mixed families, of the other family than the IP endpoints, or VRRPv2
    /// over IPv6.
    AddressFamily,
    /// Interval 0, over 4095 cs (v3), or not whole seconds up to 255 s (v2).
    Interval,
    /// Authentication with VRRPv3, which has none.
    Auth,
    /// A checksum convention the version does not have (pseudo-header with v2, old unicast
    /// over IPv6).
    Checksum,
}

impl fmt::Display for EmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EmitError::BufferTooSmall => "buffer too small for the VRRP message",
            EmitError::AddressCount => "a VRRP advert carries 1 to 255 addresses",
            EmitError::AddressFamily => {
                "addresses and IP endpoints must be of one family (VRRPv2: IPv4)"
            }
            EmitError::Interval => "advert interval out of range for the VRRP version",
            EmitError::Auth => "VRRPv3 has no authentication",
            EmitError::Checksum => "checksum convention not available for this version/family",
        })
    }
}

impl std::error::Error for EmitError {}

// ---------------------------------------------------------------------------------------
// Internet checksum

/// Adds `data` as big-endian 16-bit words to a one's-complement accumulator.
fn sum_words(mut acc: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u32::from(*last) << 8;
    }
    // Fold as we go so a caller can chain any number of slices without overflow.
    (acc & 0xffff) + (acc >> 16)
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

fn pseudo_header_sum(src: IpAddr, dst: IpAddr, protocol: u8, len: usize) -> u32 {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let acc = sum_words(0, &s.octets());
            let acc = sum_words(acc, &d.octets());
            // Lengths here come from 16-bit fields, so the truncation is exact.
            sum_words(acc, &[0, protocol, (len >> 8) as u8, len as u8])
        }
        _ => {
            let to16 = |a: IpAddr| match a {
                IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
                IpAddr::V6(v6) => v6.octets(),
            };
            let acc = sum_words(0, &to16(src));
            let acc = sum_words(acc, &to16(dst));
            let len = (len as u32).to_be_bytes();
            let acc = sum_words(acc, &len);
            sum_words(acc, &[0, 0, 0, protocol])
        }
    }
}

/// The checksum field value for `data` (whose checksum field is zero) after `acc`.
fn finish(acc: u32, data: &[u8]) -> u16 {
    !fold(sum_words(acc, data))
}

/// Whether `data`, checksum field included, sums to all ones after `acc`.
fn verifies(acc: u32, data: &[u8]) -> bool {
    fold(sum_words(acc, data)) == 0xffff
}

// ---------------------------------------------------------------------------------------
// VRRP message: zero-copy view

mod field {
    pub const VER_TYPE: usize = 0;
    pub const VRID: usize = 1;
    pub const PRIORITY: usize = 2;
    pub const COUNT: usize = 3;
    /// VRRPv2 authentication type.
    pub const AUTH_TYPE: usize = 4;
    /// VRRPv2 advertisement interval, seconds.
    pub const ADVER_INT: usize = 5;
    /// VRRPv3: 4 reserved bits, then the 12-bit Max Adver Int.
    pub const MAX_ADVER_INT: std::ops::Range<usize> = 4..6;
    pub const CHECKSUM: std::ops::Range<usize> = 6..8;
    pub const ADDRS: usize = 8;
}

/// A read/write view over a VRRP message (the bytes after the IP header), smoltcp-style.
///
/// The address size depends on the family of the IP packet that carried the message, so the
/// view carries it. Build it with [`new_checked`](Packet::new_checked) for input from the
/// network: every accessor is then in bounds. [`new_unchecked`](Packet::new_unchecked) is for
/// buffers about to be emitted into.
#[derive(Clone, Debug)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
    family: Family,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it; accessors may panic if it is too short.
    pub const fn new_unchecked(buffer: T, family: Family) -> Packet<T> {
        Packet { buffer, family }
    }

    /// Wraps a buffer after [`check_len`](Packet::check_len).
    pub fn new_checked(buffer: T, family: Family) -> Result<Packet<T>, Invalid> {
        let packet = Packet::new_unchecked(buffer, family);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds exactly the message its header describes.
    ///
    /// The layout depends on the version (v2 has authentication data), so an unknown version
    /// is reported here. Trailing bytes are an error: the caller hands over exactly the IP
    /// payload, whose length comes from the IP header, so padding is already gone.
    pub fn check_len(&self) -> Result<(), Invalid> {
        let data = self.buffer.as_ref();
        if data.len() < HEADER_LEN {
            return Err(Invalid::Truncated);
        }
        let version = Version::from_number(self.version()).ok_or(Invalid::BadVersion)?;
        if version == Version::V2 && self.family == Family::V6 {
            return Err(Invalid::AddressFamily);
        }
        let expected = Packet::<&[u8]>::buffer_len(version, self.family, self.addr_count());
        match data.len().cmp(&expected) {
            std::cmp::Ordering::Less => Err(Invalid::Truncated),
            std::cmp::Ordering::Greater => Err(Invalid::LengthMismatch),
            std::cmp::Ordering::Equal => Ok(()),
        }
    }

    /// Length of a message of `version` with `count` addresses of `family`.
    pub fn buffer_len(version: Version, family: Family, count: u8) -> usize {
        let auth = match version {
            Version::V2 => AUTH_DATA_LEN,
            Version::V3 => 0,
        };
        HEADER_LEN + usize::from(count) * family.addr_len() + auth
    }

    /// Consumes the view, returning the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The family the view was built for.
    pub fn family(&self) -> Family {
        self.family
    }

    /// Version nibble.
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TYPE] >> 4
    }

    /// Type nibble (1: advertisement).
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TYPE] & 0x0f
    }

    /// Virtual router ID.
    pub fn vrid(&self) -> u8 {
        self.buffer.as_ref()[field::VRID]
    }

    /// Priority (0: the master is stopping; 255: the address owner).
    pub fn priority(&self) -> u8 {
        self.buffer.as_ref()[field::PRIORITY]
    }

    /// Count IPvX Addrs.
    pub fn addr_count(&self) -> u8 {
        self.buffer.as_ref()[field::COUNT]
    }

    /// VRRPv2 authentication type (0 none, 1 simple text, 2 IP AH).
    pub fn auth_type(&self) -> u8 {
        self.buffer.as_ref()[field::AUTH_TYPE]
    }

    /// VRRPv2 advertisement interval, whole seconds.
    pub fn adver_int(&self) -> u8 {
        self.buffer.as_ref()[field::ADVER_INT]
    }

    /// VRRPv3 reserved bits (sent as 0, ignored on receipt).
    pub fn reserved(&self) -> u8 {
        self.buffer.as_ref()[field::MAX_ADVER_INT.start] >> 4
    }

    /// VRRPv3 Max Adver Int, centiseconds (12 bits).
    pub fn max_adver_int(&self) -> u16 {
        let d = self.buffer.as_ref();
        u16::from_be_bytes([
            d[field::MAX_ADVER_INT.start],
            d[field::MAX_ADVER_INT.start + 1],
        ]) & MAX_ADVER_INT_CS
    }

    /// The advertisement interval in centiseconds whatever the version: v2 seconds × 100.
    pub fn interval_cs(&self) -> u16 {
        match self.version() {
            2 => u16::from(self.adver_int()) * 100,
            _ => self.max_adver_int(),
        }
    }

    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        let d = self.buffer.as_ref();
        u16::from_be_bytes([d[field::CHECKSUM.start], d[field::CHECKSUM.start + 1]])
    }

    /// Address number `index` (0-based, below [`addr_count`](Packet::addr_count)).
    pub fn addr(&self, index: usize) -> IpAddr {
        let len = self.family.addr_len();
        let start = field::ADDRS + index * len;
        let bytes = &self.buffer.as_ref()[start..start + len];
        match self.family {
            Family::V4 => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
            Family::V6 => {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(bytes);
                IpAddr::V6(Ipv6Addr::from(octets))
            }
        }
    }

    /// The addresses, in the order sent.
    pub fn addrs(&self) -> impl Iterator<Item = IpAddr> + '_ {
        (0..usize::from(self.addr_count())).map(move |i| self.addr(i))
    }

    /// VRRPv2 authentication data (the 8 bytes after the addresses).
    pub fn auth_data(&self) -> &[u8] {
        let d = self.buffer.as_ref();
        let start = field::ADDRS + usize::from(self.addr_count()) * self.family.addr_len();
        &d[start..start + AUTH_DATA_LEN]
    }

    /// Which checksum convention the message satisfies between `src` and `dst`, if any.
    ///
    /// v3 over IPv4 tries the RFC's pseudo-header, then keepalived's old unicast form, then the
    /// v2-style sum; v3 over IPv6 only the pseudo-header (the kernel computes it for every
    /// sender we know of, through `IPV6_CHECKSUM`).
    pub fn checksum_kind(&self, src: IpAddr, dst: IpAddr) -> Option<ChecksumKind> {
        let data = self.buffer.as_ref();
        if self.version() == 2 {
            return verifies(0, data).then_some(ChecksumKind::Message);
        }
        let with = |dst| verifies(pseudo_header_sum(src, dst, PROTOCOL, data.len()), data);
        if with(dst) {
            return Some(ChecksumKind::PseudoHeader);
        }
        if self.family == Family::V4 {
            let group = IpAddr::V4(MULTICAST_V4);
            if dst != group && with(group) {
                return Some(ChecksumKind::OldUnicast);
            }
            if verifies(0, data) {
                return Some(ChecksumKind::Message);
            }
        }
        None
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets version and type.
    pub fn set_version_type(&mut self, version: Version, msg_type: u8) {
        self.buffer.as_mut()[field::VER_TYPE] = version.number() << 4 | (msg_type & 0x0f);
    }

    /// Sets the VRID.
    pub fn set_vrid(&mut self, vrid: u8) {
        self.buffer.as_mut()[field::VRID] = vrid;
    }

    /// Sets the priority.
    pub fn set_priority(&mut self, priority: u8) {
        self.buffer.as_mut()[field::PRIORITY] = priority;
    }

    /// Sets Count IPvX Addrs.
    pub fn set_addr_count(&mut self, count: u8) {
        self.buffer.as_mut()[field::COUNT] = count;
    }

    /// Sets the VRRPv2 authentication type.
    pub fn set_auth_type(&mut self, auth_type: u8) {
        self.buffer.as_mut()[field::AUTH_TYPE] = auth_type;
    }

    /// Sets the VRRPv2 advertisement interval (seconds).
    pub fn set_adver_int(&mut self, seconds: u8) {
        self.buffer.as_mut()[field::ADVER_INT] = seconds;
    }

    /// Sets the VRRPv3 Max Adver Int (centiseconds, 12 bits) with the reserved bits zero.
    pub fn set_max_adver_int(&mut self, cs: u16) {
        let bytes = (cs & MAX_ADVER_INT_CS).to_be_bytes();
        self.buffer.as_mut()[field::MAX_ADVER_INT].copy_from_slice(&bytes);
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, checksum: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&checksum.to_be_bytes());
    }

    /// Sets address number `index`; its family must be the view's.
    pub fn set_addr(&mut self, index: usize, addr: IpAddr) {
        let len = self.family.addr_len();
        let start = field::ADDRS + index * len;
        let dst = &mut self.buffer.as_mut()[start..start + len];
        match addr {
            IpAddr::V4(a) => dst.copy_from_slice(&a.octets()),
            IpAddr::V6(a) => dst.copy_from_slice(&a.octets()),
        }
    }

    /// The VRRPv2 authentication data, writable.
    pub fn auth_data_mut(&mut self) -> &mut [u8] {
        let start = field::ADDRS + usize::from(self.addr_count()) * self.family.addr_len();
        &mut self.buffer.as_mut()[start..start + AUTH_DATA_LEN]
    }

    /// Computes and writes the checksum in the given convention; `dst` is the IP destination
    /// the packet is sent to.
    pub fn fill_checksum(&mut self, kind: ChecksumKind, src: IpAddr, dst: IpAddr) {
        self.set_checksum(0);
        let data = self.buffer.as_ref();
        let acc = match kind {
            ChecksumKind::Message => 0,
            ChecksumKind::PseudoHeader => pseudo_header_sum(src, dst, PROTOCOL, data.len()),
            ChecksumKind::OldUnicast => {
                pseudo_header_sum(src, IpAddr::V4(MULTICAST_V4), PROTOCOL, data.len())
            }
        };
        let sum = finish(acc, data);
        self.set_checksum(sum);
    }
}

// ---------------------------------------------------------------------------------------
// VRRP message: high-level representation

/// VRRPv2 authentication, as configured and as carried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Auth {
    /// Type 0. Also the only value for VRRPv3.
    #[default]
    None,
    /// Type 1, simple text: the password NUL-padded to 8 bytes.
    Pass([u8; AUTH_DATA_LEN]),
}

impl Auth {
    /// A simple-text password; `None` if longer than 8 bytes. keepalived truncates longer
    /// passwords silently, which hides typos, so we refuse them.
    pub fn pass(password: &str) -> Option<Auth> {
        let bytes = password.as_bytes();
        if bytes.len() > AUTH_DATA_LEN {
            return None;
        }
        let mut data = [0u8; AUTH_DATA_LEN];
        data[..bytes.len()].copy_from_slice(bytes);
        Some(Auth::Pass(data))
    }

    /// The authentication type number.
    pub fn type_number(&self) -> u8 {
        match self {
            Auth::None => 0,
            Auth::Pass(_) => 1,
        }
    }
}

/// Where a VRRP message was received: the IP header fields a receiver must check.
///
/// The IPv4 raw socket hands over the IP header; for IPv6 these come from the socket's
/// ancillary data (`IPV6_HOPLIMIT`, `IPV6_PKTINFO`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpContext {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// TTL (IPv4) or hop limit (IPv6).
    pub ttl: u8,
}

/// A VRRP advertisement, parsed or to be emitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Repr {
    pub version: Version,
    pub vrid: u8,
    pub priority: u8,
    /// Advertisement interval in centiseconds. VRRPv2 carries whole seconds: parsing
    /// multiplies by 100, emitting needs a multiple of 100.
    pub interval_cs: u16,
    /// Always [`Auth::None`] for VRRPv3.
    pub auth: Auth,
    /// The virtual addresses, all of one family, in the order sent.
    pub addrs: Vec<IpAddr>,
}

impl Repr {
    /// Parses and validates a message received in `ip`, returning which checksum convention
    /// it used.
    ///
    /// Checks, in RFC 5798 §7.1 order: TTL, version, length against the address count, type,
    /// checksum; then what the fields must hold (count ≥ 1, interval ≥ 1, v2 auth type 0/1).
    /// VRRPv2 authentication data is ignored with type 0 (RFC 3768 §5.3.6).
    pub fn parse<T: AsRef<[u8]>>(
        packet: &Packet<T>,
        ip: &IpContext,
    ) -> Result<(Repr, ChecksumKind), Invalid> {
        if Family::of(ip.src) != packet.family() || Family::of(ip.dst) != packet.family() {
            return Err(Invalid::AddressFamily);
        }
        if ip.ttl != TTL {
            return Err(Invalid::BadTtl);
        }
        packet.check_len()?;
        let version = Version::from_number(packet.version()).ok_or(Invalid::BadVersion)?;
        if packet.msg_type() != TYPE_ADVERTISEMENT {
            return Err(Invalid::BadType);
        }
        let kind = packet
            .checksum_kind(ip.src, ip.dst)
            .ok_or(Invalid::BadChecksum)?;
        if packet.addr_count() == 0 {
            return Err(Invalid::BadAddrCount);
        }
        let interval_cs = packet.interval_cs();
        if interval_cs == 0 {
            return Err(Invalid::BadInterval);
        }
        let auth = match version {
            Version::V3 => Auth::None,
            Version::V2 => match packet.auth_type() {
                0 => Auth::None,
                1 => {
                    let mut data = [0u8; AUTH_DATA_LEN];
                    data.copy_from_slice(packet.auth_data());
                    Auth::Pass(data)
                }
                _ => return Err(Invalid::UnsupportedAuth),
            },
        };
        let repr = Repr {
            version,
            vrid: packet.vrid(),
            priority: packet.priority(),
            interval_cs,
            auth,
            addrs: packet.addrs().collect(),
        };
        Ok((repr, kind))
    }

    /// The family of the addresses (of the first; [`emit`](Repr::emit) checks they agree).
    pub fn family(&self) -> Option<Family> {
        self.addrs.first().map(|&a| Family::of(a))
    }

    /// Length of the emitted message.
    pub fn buffer_len(&self) -> usize {
        let family = self.family().unwrap_or(Family::V4);
        let count = u8::try_from(self.addrs.len()).unwrap_or(u8::MAX);
        Packet::<&[u8]>::buffer_len(self.version, family, count)
    }

    fn check_emit(
        &self,
        src: IpAddr,
        dst: IpAddr,
        kind: ChecksumKind,
    ) -> Result<Family, EmitError> {
        let family = self.family().ok_or(EmitError::AddressCount)?;
        if self.addrs.len() > usize::from(u8::MAX) {
            return Err(EmitError::AddressCount);
        }
        if self.addrs.iter().any(|&a| Family::of(a) != family)
            || Family::of(src) != family
            || Family::of(dst) != family
        {
            return Err(EmitError::AddressFamily);
        }
        match self.version {
            Version::V2 => {
                if family != Family::V4 {
                    return Err(EmitError::AddressFamily);
                }
                if self.interval_cs == 0
                    || !self.interval_cs.is_multiple_of(100)
                    || self.interval_cs > 25_500
                {
                    return Err(EmitError::Interval);
                }
                if kind != ChecksumKind::Message {
                    return Err(EmitError::Checksum);
                }
            }
            Version::V3 => {
                if self.interval_cs == 0 || self.interval_cs > MAX_ADVER_INT_CS {
                    return Err(EmitError::Interval);
                }
                if self.auth != Auth::None {
                    return Err(EmitError::Auth);
                }
                if kind == ChecksumKind::OldUnicast && family == Family::V6 {
                    return Err(EmitError::Checksum);
                }
            }
        }
        Ok(family)
    }

    /// Writes the message into `buffer` (at least [`buffer_len`](Repr::buffer_len) bytes),
    /// with the checksum in convention `kind` for a packet from `src` to `dst`. Returns the
    /// number of bytes written.
    pub fn emit(
        &self,
        buffer: &mut [u8],
        src: IpAddr,
        dst: IpAddr,
        kind: ChecksumKind,
    ) -> Result<usize, EmitError> {
        let family = self.check_emit(src, dst, kind)?;
        let len = self.buffer_len();
        let buffer = buffer.get_mut(..len).ok_or(EmitError::BufferTooSmall)?;
        let mut packet = Packet::new_unchecked(buffer, family);
        packet.set_version_type(self.version, TYPE_ADVERTISEMENT);
        packet.set_vrid(self.vrid);
        packet.set_priority(self.priority);
        // check_emit bounds the count by 255.
        packet.set_addr_count(self.addrs.len() as u8);
        match self.version {
            Version::V2 => {
                packet.set_auth_type(self.auth.type_number());
                packet.set_adver_int((self.interval_cs / 100) as u8);
            }
            Version::V3 => packet.set_max_adver_int(self.interval_cs),
        }
        for (i, &addr) in self.addrs.iter().enumerate() {
            packet.set_addr(i, addr);
        }
        if self.version == Version::V2 {
            let data = match self.auth {
                Auth::None => [0u8; AUTH_DATA_LEN],
                Auth::Pass(data) => data,
            };
            packet.auth_data_mut().copy_from_slice(&data);
        }
        packet.fill_checksum(kind, src, dst);
        Ok(len)
    }

    /// [`emit`](Repr::emit) into a new buffer.
    pub fn to_bytes(
        &self,
        src: IpAddr,
        dst: IpAddr,
        kind: ChecksumKind,
    ) -> Result<Vec<u8>, EmitError> {
        let mut buf = vec![0u8; self.buffer_len()];
        self.emit(&mut buf, src, dst, kind)?;
        Ok(buf)
    }
}

mod announce;
mod ip;

pub use announce::*;
pub use ip::*;

#[cfg(test)]
mod tests;
