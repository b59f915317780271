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
    /// How long a TCP flow's cache entry stands for the flow table, in kernel ticks
    /// (jiffies, which the program reads for almost nothing): the ticks in
    /// `lb_common::flow::FLOW_CACHE_REFRESH_NS` or in `tcp_idle_ns`, whichever is shorter,
    /// rounded down.
    pub tcp_cache_ticks: u32,
    /// The same for UDP and anything else.
    pub udp_cache_ticks: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<Settings>() == 40);

impl Settings {
    /// The `*_cache_ticks` fields for a kernel tick of `tick_ns`, from the idle timeouts.
    pub fn with_cache_ticks(self, tick_ns: u64) -> Settings {
        let ticks = |idle_ns: u64| {
            let ns = idle_ns.min(crate::flow::FLOW_CACHE_REFRESH_NS);
            (ns / tick_ns.max(1)).min(u32::MAX as u64) as u32
        };
        Settings {
            tcp_cache_ticks: ticks(self.tcp_idle_ns),
            udp_cache_ticks: ticks(self.udp_idle_ns),
            ..self
        }
    }
}
