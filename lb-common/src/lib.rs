//! Types that cross the kernel/user boundary: the key and value of every BPF map the XDP
//! program uses, plus the flow hash both sides must compute identically.
//!
//! Everything here is `#[repr(C)]`, `Copy`, free of implicit padding, and has its size
//! asserted at compile time, so the layout the agent writes is the layout the program reads.
#![no_std]

pub mod addr;
pub mod backend;
pub mod flow;
pub mod iface;
pub mod nat;
pub mod settings;
pub mod stats;
pub mod vip;

/// Implements `aya::Pod` for map types when built for userspace.
#[cfg(feature = "user")]
macro_rules! impl_pod {
    ($($t:ty),* $(,)?) => {
        // SAFETY: every listed type is #[repr(C)], Copy, has no padding (sizes are
        // asserted next to each definition) and is valid for any bit pattern.
        $(unsafe impl aya::Pod for $t {})*
    };
}

#[cfg(feature = "user")]
impl_pod!(
    vip::VipKey,
    vip::VipInfo,
    backend::Backend,
    flow::FlowKey,
    flow::FlowEntry,
    flow::FlowCacheEntry,
    iface::IfaceInfo,
    iface::IfaceSlot,
    nat::NatEntry,
    settings::Settings,
    stats::Counter,
);
