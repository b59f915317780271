//! The `SETTINGS` array (one entry): node-wide data plane parameters.

/// Value of `SETTINGS[0]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Settings {
    /// Seed of the flow hash. All nodes of a cluster use the same value so that they
    /// pick the same backend for the same flow.
    pub hash_seed: u32,
    pub _pad: u32,
    /// A TCP flow entry idle this long no longer pins its flow (nanoseconds).
    pub tcp_idle_ns: u64,
    /// The same for UDP and anything else.
    pub udp_idle_ns: u64,
}
const _: () = assert!(core::mem::size_of::<Settings>() == 24);
