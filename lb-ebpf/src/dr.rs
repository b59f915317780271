//! Direct-return forwarding: the frame goes back out of the interface it came in on,
//! addressed to the backend's MAC. IP and L4 are untouched; the backend holds the VIP on
//! its loopback and answers the client directly.

use aya_ebpf::programs::XdpContext;

use crate::parse::set_words;

/// Rewrites destination MAC = backend, source MAC = our interface (keeping the client's
/// MAC as source would teach switches that the client lives on our port).
#[inline(always)]
pub fn rewrite_macs(ctx: &XdpContext, dst: [u8; 6], src: [u8; 6]) -> bool {
    // Six 2-byte stores rather than a byte-at-a-time copy.
    let w = |m: [u8; 6], i: usize| u16::from_ne_bytes([m[i], m[i + 1]]);
    let words = [
        w(dst, 0),
        w(dst, 2),
        w(dst, 4),
        w(src, 0),
        w(src, 2),
        w(src, 4),
    ];
    set_words(ctx, 0, words).is_some()
}
