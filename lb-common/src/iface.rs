//! The `IFACES` hash map: ingress ifindex → what the program needs to know about the
//! interface it runs on.

/// Upper bound on interfaces the program is attached to.
pub const MAX_IFACES: u32 = 64;

/// Value of `IFACES`, keyed by ifindex (`u32`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct IfaceInfo {
    /// Source MAC of frames the program sends out of this interface.
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<IfaceInfo>() == 8);
