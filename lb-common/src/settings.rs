//! The `SETTINGS` array (one entry): node-wide data plane parameters.

/// Value of `SETTINGS[0]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Settings {
    /// Seed of the flow hash. All nodes of a cluster use the same value so that they
    /// pick the same backend for the same flow.
    pub hash_seed: u32,
    pub _reserved: u32,
}
const _: () = assert!(core::mem::size_of::<Settings>() == 8);
