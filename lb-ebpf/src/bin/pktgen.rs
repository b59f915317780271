//! The packet-rate benchmark's two ends, in an object of their own (no balancer maps):
//! - `pktgen`: run by `BPF_PROG_TEST_RUN` in live-frames mode on one crafted IPv4 TCP
//!   frame; it gives each copy the source address and port of the next flow and returns
//!   XDP_TX, so the kernel sends it out of the veth it was "received" on, towards the
//!   balancer. This kernel has no pktgen module, and a generator in XDP costs far less per
//!   frame than any socket.
//! - `pktsink`: attached where the balancer's output arrives; counts the generator's
//!   frames per destination MAC (the backend a DR packet was sent to) and drops them.
//!   Everything else (ARP, the agent's own traffic) is passed.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{Array, PerCpuArray},
    programs::XdpContext,
};

/// `PKTGEN_CONFIG` slots (u32, written by the benchmark before a run).
const CFG_FLOWS: u32 = 0;
const CFG_PORTS: u32 = 1;
/// First source address (host order); flow `f` has `base + f / ports`.
const CFG_SRC_BASE: u32 = 2;
/// First source port; flow `f` has `port_base + f % ports`.
const CFG_PORT_BASE: u32 = 3;
/// The destination (host order) the sink counts.
const CFG_DST: u32 = 4;
/// The Ethernet addresses, 12 bytes from slot 5 (native order): the kernel recycles the
/// pages of sent frames into the generator's next ones, and the balancer has rewritten
/// their MACs by then (the rest of the header it leaves alone).
const CFG_MACS: u32 = 5;

#[map]
static PKTGEN_CONFIG: Array<u32> = Array::with_max_entries(8, 0);
/// Per CPU: the next flow to send, so generator threads on several CPUs need no atomics.
#[map]
static PKTGEN_NEXT: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);
/// Per CPU, indexed by the last byte of the destination MAC: frames seen by the sink.
#[map]
static SINK_COUNT: PerCpuArray<u64> = PerCpuArray::with_max_entries(256, 0);

const ETH_LEN: usize = 14;
const IP_LEN: usize = 20;
const IP_SRC: usize = ETH_LEN + 12;
const IP_DST: usize = ETH_LEN + 16;
const IP_CSUM: usize = ETH_LEN + 10;
const L4_SPORT: usize = ETH_LEN + IP_LEN;

#[inline(always)]
fn config(slot: u32) -> u32 {
    PKTGEN_CONFIG.get(slot).copied().unwrap_or(0)
}

#[xdp]
pub fn pktgen(ctx: XdpContext) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + L4_SPORT + 2 > end {
        return xdp_action::XDP_ABORTED;
    }
    let Some(next) = PKTGEN_NEXT.get_ptr_mut(0) else {
        return xdp_action::XDP_ABORTED;
    };
    let (flows, ports) = (config(CFG_FLOWS).max(1), config(CFG_PORTS).max(1));
    // SAFETY: a per-CPU slot, only this CPU's program touches it.
    let flow = unsafe {
        let f = *next % flows;
        *next = f + 1;
        f
    };
    let src = config(CFG_SRC_BASE).wrapping_add(flow / ports);
    let sport = (config(CFG_PORT_BASE).wrapping_add(flow % ports)) as u16;
    let p = start as *mut u8;
    // SAFETY: every offset written below lies within the L4_SPORT + 2 bytes checked above;
    // byte-wise writes, so alignment does not matter.
    unsafe {
        let macs = [config(CFG_MACS), config(CFG_MACS + 1), config(CFG_MACS + 2)];
        (p as *mut [u32; 3]).write_unaligned(macs);
        write_be32(p.add(IP_SRC), src);
        write_be16(p.add(L4_SPORT), sport);
        write_be16(p.add(IP_CSUM), 0);
        // The header is rewritten in place, so its checksum is computed again whole: 10
        // words, cheaper than getting an incremental update right for two fields.
        let mut sum = 0u32;
        let mut i = 0;
        while i < IP_LEN {
            sum += u32::from(read_be16(p.add(ETH_LEN + i)));
            i += 2;
        }
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        write_be16(p.add(IP_CSUM), !(sum as u16));
    }
    xdp_action::XDP_TX
}

#[xdp]
pub fn pktsink(ctx: XdpContext) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + IP_DST + 4 > end {
        return xdp_action::XDP_PASS;
    }
    let p = start as *const u8;
    // SAFETY: bounds checked above.
    let (ethertype, dst, mac_last) =
        unsafe { (read_be16(p.add(12)), read_be32(p.add(IP_DST)), *p.add(5)) };
    if ethertype != 0x0800 || dst != config(CFG_DST) {
        return xdp_action::XDP_PASS;
    }
    if let Some(c) = SINK_COUNT.get_ptr_mut(u32::from(mac_last)) {
        // SAFETY: a per-CPU slot.
        unsafe { *c += 1 };
    }
    xdp_action::XDP_DROP
}

#[inline(always)]
unsafe fn read_be16(p: *const u8) -> u16 {
    u16::from_be_bytes([*p, *p.add(1)])
}

#[inline(always)]
unsafe fn read_be32(p: *const u8) -> u32 {
    u32::from_be_bytes([*p, *p.add(1), *p.add(2), *p.add(3)])
}

#[inline(always)]
unsafe fn write_be16(p: *mut u8, v: u16) {
    let b = v.to_be_bytes();
    *p = b[0];
    *p.add(1) = b[1];
}

#[inline(always)]
unsafe fn write_be32(p: *mut u8, v: u32) {
    let b = v.to_be_bytes();
    *p = b[0];
    *p.add(1) = b[1];
    *p.add(2) = b[2];
    *p.add(3) = b[3];
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
