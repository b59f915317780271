//! Direct-return forwarding: the frame goes back out of the interface it came in on,
//! addressed to the backend's MAC. IP and L4 are untouched; the backend holds the VIP on
//! its loopback and answers the client directly.

use aya_ebpf::programs::XdpContext;

use crate::parse::ptr_at;

/// Rewrites destination MAC = backend, source MAC = our interface (keeping the client's
/// MAC as source would teach switches that the client lives on our port).
#[inline(always)]
pub fn rewrite_macs(ctx: &XdpContext, dst: [u8; 6], src: [u8; 6]) -> bool {
    match ptr_at::<[[u8; 6]; 2]>(ctx, 0) {
        Some(eth) => {
            // SAFETY: bounds checked by ptr_at.
            unsafe { *eth = [dst, src] };
            true
        }
        None => false,
    }
}
