//! The `NAT_CONNS` LRU table: how to translate a NAT backend's reply back to the VIP.
//!
//! The key is the reply's 5-tuple as it arrives from the backend ([`crate::flow::FlowKey`]
//! with `src` = backend address/port, `dst` = client address/port). The first packet of a
//! connection to a NAT VIP creates the entry; every later one refreshes it.
//!
//! When the table is full the least recently used entry is evicted (lookups of replies and
//! of forward packets both count as use). The next packet from the client re-creates it, but
//! a reply that arrives while its entry is missing is not a NAT reply to the program: it is
//! passed to the kernel untranslated, which routes it to the client with the backend's
//! address as source, and the client answers with a reset. Size the table for the number of
//! concurrent connections through NAT VIPs (the agent gives it the flow table's capacity).

use crate::addr::Addr;

/// Default number of entries of `NAT_CONNS` (the agent sizes it like `FLOWS` at load).
pub const DEFAULT_NAT_CAPACITY: u32 = 1 << 18;

/// Value of `NAT_CONNS`: the VIP a reply must appear to come from.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NatEntry {
    /// The VIP's address (the reply's new source).
    pub vip: Addr,
    /// The VIP's port, network byte order (the reply's new source port).
    pub vip_port_be: u16,
    pub _pad: u16,
    /// The VIP's id, for `VIP_REPLY_STATS`.
    pub vip_id: u32,
    /// The backend's id, for `BACKEND_REPLY_STATS`.
    pub backend_id: u32,
    pub _pad2: u32,
    /// `bpf_ktime_get_coarse_ns()` (`CLOCK_MONOTONIC` at tick resolution) of the connection's last packet from the client (diagnostics;
    /// ageing is the LRU's).
    pub last_seen_ns: u64,
}
const _: () = assert!(core::mem::size_of::<NatEntry>() == 40);
