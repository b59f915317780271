//! The packet-rate benchmark's traffic source and sink, in an object of its own (no
//! balancer maps): `pktloop`, attached to the bridge-side end of the balancer's veth.
//!
//! The benchmark seeds a few hundred frames for the VIP; from then on they circulate. Each
//! frame the balancer sends back (DR: addressed to a backend's MAC) is counted here per
//! destination MAC, then rewritten into the next flow's frame (the generator's MACs, the
//! next source address and port) and sent back to the balancer with XDP_TX. No frame is
//! allocated or copied on the way: the loop costs what a generator and a sink in XDP cost,
//! and it runs on kernels that refuse `BPF_F_TEST_XDP_LIVE_FRAMES` or have no pktgen module.
//! Setting the stop flag drops what arrives, which empties the loop.
//! Everything else (ARP, the agent's own traffic) is passed.
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
/// The destination (host order) of the circulating frames.
const CFG_DST: u32 = 4;
/// The Ethernet addresses the frames are sent back with, 12 bytes from slot 5 (native
/// order): destination the balancer, source the generator.
const CFG_MACS: u32 = 5;
/// Non-zero: drop the circulating frames (counted first), which stops the loop.
const CFG_STOP: u32 = 8;

#[map]
static PKTGEN_CONFIG: Array<u32> = Array::with_max_entries(9, 0);
/// Per CPU: the next flow to send, so loops on several CPUs need no atomics.
#[map]
static PKTGEN_NEXT: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);
/// Per CPU, indexed by the last byte of the destination MAC: frames that came back.
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
pub fn pktloop(ctx: XdpContext) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + L4_SPORT + 2 > end {
        return xdp_action::XDP_PASS;
    }
    let p = start as *mut u8;
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
    if config(CFG_STOP) != 0 {
        return xdp_action::XDP_DROP;
    }
    let Some(next) = PKTGEN_NEXT.get_ptr_mut(0) else {
        return xdp_action::XDP_DROP;
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
