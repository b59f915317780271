//! The `BACKENDS` array (backend id → where to send) and the `BACKEND_TABLE` array
//! (lookup slot → backend id) that the hash of a flow indexes.

use crate::addr::Addr;

/// Upper bound on backends over all VIPs (entries of `BACKENDS` and `BACKEND_STATS`).
pub const MAX_BACKENDS: u32 = 4096;

/// Default number of `BACKEND_TABLE` slots shared by all VIPs (16 MiB of u32).
pub const DEFAULT_TABLE_CAPACITY: u32 = 1 << 22;

/// A table slot holding this id has no backend.
pub const NO_BACKEND: u32 = u32::MAX;

/// The entry is in use.
pub const BACKEND_F_PRESENT: u32 = 1 << 0;
/// `mac` holds the backend's resolved link-layer address.
pub const BACKEND_F_MAC_VALID: u32 = 1 << 1;

/// Value of `BACKENDS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Backend {
    pub addr: Addr,
    /// Destination MAC for direct-return forwarding.
    pub mac: [u8; 6],
    /// Backend port, network byte order (used by NAT; DR keeps the VIP port).
    pub port_be: u16,
    /// `BACKEND_F_*` bits.
    pub flags: u32,
}
const _: () = assert!(core::mem::size_of::<Backend>() == 28);
