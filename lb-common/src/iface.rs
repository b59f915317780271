//! The `IFACES` hash map (and its direct-mapped copy `IFACE_CACHE`): ingress ifindex →
//! what the program needs to know about the interface it runs on.

/// Upper bound on interfaces the program is attached to, and on entries of `TX_PORTS`.
pub const MAX_IFACES: u32 = 64;

// `TX_PORTS` (a `BPF_MAP_TYPE_DEVMAP_HASH`, key = value = ifindex) lists the interfaces NAT
// may send a packet out of when the FIB's egress interface is not the one it came in on
// (`XDP_REDIRECT`). Its value is the kernel's `struct bpf_devmap_val`, so it has no type here.

/// Value of `IFACES`, keyed by ifindex (`u32`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct IfaceInfo {
    /// Source MAC of frames the program sends out of this interface.
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<IfaceInfo>() == 8);

/// Slots of `IFACE_CACHE`, a direct-mapped copy of `IFACES`: interface `ifindex` may hold
/// slot `ifindex % IFACE_CACHE_SLOTS`, which the program reads without hashing (an array
/// read instead of a hash lookup on every forwarded packet). An interface whose slot
/// another one holds is found in `IFACES`, which stays the whole truth.
pub const IFACE_CACHE_SLOTS: u32 = 256;

/// Value of `IFACE_CACHE`; `ifindex` 0 (no interface has it) marks a free slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct IfaceSlot {
    pub ifindex: u32,
    pub info: IfaceInfo,
}
const _: () = assert!(core::mem::size_of::<IfaceSlot>() == 12);
