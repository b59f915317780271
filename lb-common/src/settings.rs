//! The `SETTINGS` array (one entry): node-wide data plane parameters.

/// Value of `SETTINGS[0]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Settings {
    /// Seed of the flow hash. All nodes of a cluster use the same value so that they
    /// pick the same backend for the same flow.
    pub hash_seed: u32,
    /// Generation of the per-CPU flow cache (`lb_common::flow::FlowCacheEntry`): the agent
    /// moves it on whenever a cached flow may no longer be forwarded as cached (a VIP
    /// removed or redefined, a backend removed or down), and every entry of an older
    /// generation is ignored.
    pub flow_cache_epoch: u32,
    /// A TCP flow entry idle this long no longer pins its flow (nanoseconds).
    pub tcp_idle_ns: u64,
    /// The same for UDP and anything else.
    pub udp_idle_ns: u64,
    /// Slots of `FLOW_CACHE` (per CPU) minus one: a power of two minus one, 0 when the
    /// cache has one slot.
    pub flow_cache_mask: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<Settings>() == 32);
