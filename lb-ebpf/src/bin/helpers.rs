//! Small programs that are not the load balancer, in an object of their own so that
//! loading them creates none of the balancer's maps:
//! - `xdp_pass` for the far end of a veth: native XDP_TX frames are only accepted by a
//!   veth whose peer runs an XDP program (see docs/lab.md);
//! - `xdp_tx_baseline`, the least a forwarding program does, for benchmarks.
#![no_std]
#![no_main]

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

#[xdp]
pub fn xdp_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Swaps source and destination MAC and bounces the frame.
#[xdp]
pub fn xdp_tx_baseline(ctx: XdpContext) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + 12 > end {
        return xdp_action::XDP_PASS;
    }
    let eth = start as *mut [[u8; 6]; 2];
    // SAFETY: the 12 bytes were bounds-checked above.
    unsafe {
        let [dst, src] = *eth;
        *eth = [src, dst];
    }
    xdp_action::XDP_TX
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
