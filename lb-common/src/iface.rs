//! The `IFACES` hash map: ingress ifindex → what the program needs to know about the
//! interface it runs on.

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
