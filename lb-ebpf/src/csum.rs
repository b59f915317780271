//! Incremental Internet checksum updates (RFC 1624, equation 3: `HC' = ~(~HC + ~m + m')`).
//!
//! Every value here is a 16-bit word as it sits in packet memory, read without byte
//! swapping: the one's-complement sum is the same in either byte order (RFC 1071, 2.(B)),
//! so ports, addresses and checksum fields are used exactly as the packet holds them.

use aya_ebpf::programs::XdpContext;

use crate::parse::{raw16, set_raw16};

/// The change to a checksummed sum: `~m + m'` summed over every changed word.
#[derive(Clone, Copy, Default)]
pub struct Diff(u32);

impl Diff {
    /// One 16-bit word changed from `old` to `new`.
    #[inline(always)]
    pub fn word(&mut self, old: u16, new: u16) {
        // At most a few dozen words are added: no overflow before `apply` folds.
        self.0 += (!old) as u32 + new as u32;
    }

    #[inline(always)]
    pub fn add(&mut self, other: Diff) {
        self.0 += other.0;
    }
}

/// The checksum field value `csum` after the covered data changed by `d`.
#[inline(always)]
pub fn apply(csum: u16, d: Diff) -> u16 {
    let mut s = (!csum) as u32 + d.0;
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    !(s as u16)
}

/// Updates the checksum field at `offset` by `d`; returns the old and new field values (a
/// checksum covering this one, like ICMP's over a quoted header, must see that change).
#[inline(always)]
pub fn update(ctx: &XdpContext, offset: usize, d: Diff) -> Option<(u16, u16)> {
    let old = raw16(ctx, offset)?;
    let new = apply(old, d);
    set_raw16(ctx, offset, new)?;
    Some((old, new))
}

/// Like [`update`] for a UDP checksum: over IPv4 a zero checksum means "none" and stays
/// zero; a computed zero is sent as `0xffff` (RFC 768), over either family.
#[inline(always)]
pub fn update_udp(ctx: &XdpContext, offset: usize, d: Diff, v6: bool) -> Option<(u16, u16)> {
    let old = raw16(ctx, offset)?;
    if old == 0 && !v6 {
        return Some((0, 0));
    }
    let mut new = apply(old, d);
    if new == 0 {
        new = 0xffff;
    }
    set_raw16(ctx, offset, new)?;
    Some((old, new))
}
