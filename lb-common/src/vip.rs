//! The `VIPS` hash map: (address, port, protocol) → the VIP's id and its slice of the
//! backend lookup table.

use crate::addr::Addr;

/// Upper bound on configured VIPs (entries of `VIPS` and `VIP_STATS`).
pub const MAX_VIPS: u32 = 1024;

/// Slots of `VIP_FILTER`, the per-address pre-check of the VIP lookup: slot
/// [`vip_filter_slot`]`(addr)` counts the `VIPS` keys whose address maps to it. A packet
/// whose destination's slot is 0 is for no VIP, which costs one array read to learn
/// instead of a hash of the 20-byte key. With 1,000 VIP addresses about 1.5 % of other
/// addresses share a slot with one of them and pay the hash lookup as before.
pub const VIP_FILTER_SLOTS: u32 = 1 << 16;

/// The `VIP_FILTER` slot of `addr`: its words folded into one, then a multiplicative
/// (Fibonacci) hash's top 16 bits, so that neighbouring addresses land far apart.
#[inline(always)]
pub fn vip_filter_slot(addr: &Addr) -> u32 {
    let x = addr[0] ^ addr[1] ^ addr[2] ^ addr[3];
    x.wrapping_mul(0x9e37_79b1) >> (32 - VIP_FILTER_SLOTS.trailing_zeros())
}

/// Key of `VIPS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct VipKey {
    pub addr: Addr,
    /// Destination port, network byte order.
    pub port_be: u16,
    /// IP protocol number (6 = TCP, 17 = UDP).
    pub proto: u8,
    pub _pad: u8,
}
const _: () = assert!(core::mem::size_of::<VipKey>() == 20);

/// Forwarding mode of a VIP (`VipInfo::mode`): direct return. Only the MACs change; the
/// backend holds the VIP on its loopback and answers the client itself.
pub const MODE_DR: u32 = 0;
/// Forwarding mode: NAT. Destination address and port become the backend's
/// (`Backend::addr`, `Backend::port_be`), the packet is routed with the kernel's FIB, and
/// the backend's replies, routed back through this node, are translated back to the VIP.
/// A mode the program does not know makes the VIP invisible to it (`pass_not_vip`).
pub const MODE_NAT: u32 = 1;

/// `VipInfo::flags`: hash and pin on the client address only, so every connection of a
/// client reaches the same backend while its flow entry lives (keepalived's
/// `persistence_timeout`).
pub const VIP_F_SOURCE_AFFINITY: u32 = 1 << 0;

/// `VipInfo::flags`: when the VIP has no usable backend (all down, drained or weight 0),
/// its packets go to the kernel (`pass_no_backend`) instead of being dropped
/// (`drop_no_backend`): a local service, or the kernel's own answer (RST, ICMP), serves
/// them.
pub const VIP_F_ALL_DOWN_PASS: u32 = 1 << 1;

/// Value of `VIPS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct VipInfo {
    /// Index into `VIP_STATS`; stable for the VIP's lifetime.
    pub id: u32,
    /// One of the `MODE_*` constants.
    pub mode: u32,
    /// First slot of this VIP's table in `BACKEND_TABLE`.
    pub table_offset: u32,
    /// Number of slots; 0 means "no table yet" (packets have no backend).
    pub table_size: u32,
    /// `VIP_F_*` bits.
    pub flags: u32,
}
const _: () = assert!(core::mem::size_of::<VipInfo>() == 20);
