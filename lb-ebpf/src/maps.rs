//! Every map the program uses. Key and value types come from `lb-common`, so the agent
//! reads and writes exactly these layouts.

use aya_ebpf::{
    bindings::BPF_F_MMAPABLE,
    macros::map,
    maps::{Array, DevMapHash, HashMap, LruHashMap, PerCpuArray},
};
use lb_common::{
    addr::Addr,
    backend::{Backend, DEFAULT_TABLE_CAPACITY, MAX_BACKENDS},
    flow::{
        FlowCacheEntry, FlowEntry, FlowKey, DEFAULT_FLOW_CACHE_SLOTS, DEFAULT_FLOW_CAPACITY,
        FLOW_STATS_LEN,
    },
    iface::{IfaceInfo, IfaceSlot, IFACE_CACHE_SLOTS, MAX_IFACES},
    nat::{NatEntry, DEFAULT_NAT_CAPACITY},
    settings::Settings,
    stats::{Counter, Reason},
    vip::{vip_filter_slot, VipInfo, VipKey, MAX_VIPS, VIP_FILTER_SLOTS},
};

use crate::parse::Scratch;

#[map]
pub static VIPS: HashMap<VipKey, VipInfo> = HashMap::with_max_entries(MAX_VIPS, 0);

/// See `lb_common::vip::VIP_FILTER_SLOTS`. The agent counts a VIP in before adding it to
/// `VIPS` and out after removing it, so a VIP is never filtered out.
#[map]
pub static VIP_FILTER: Array<u32> = Array::with_max_entries(VIP_FILTER_SLOTS, 0);

/// Slot → backend id. Each VIP owns `table_size` slots from `table_offset`. The agent
/// may resize this map at load time. Memory-mappable, so the agent rewrites changed slots
/// with plain stores instead of one syscall per slot.
#[map]
pub static BACKEND_TABLE: Array<u32> =
    Array::with_max_entries(DEFAULT_TABLE_CAPACITY, BPF_F_MMAPABLE);

/// Established flows → their backend. One LRU shared by all CPUs rather than per-CPU
/// tables: a flow whose packets land on another CPU (RSS rehash, generic XDP, veth) must
/// still find its entry, or a backend change would move it. The cost difference is
/// measured in bench/README.md. When full, the least recently used flow is evicted; its
/// next packet is re-hashed through the lookup table, which gives the same backend unless
/// the backend set changed in between.
#[map]
pub static FLOWS: LruHashMap<FlowKey, FlowEntry> =
    LruHashMap::with_max_entries(DEFAULT_FLOW_CAPACITY, 0);

/// Per CPU: the flow cache in front of `FLOWS` (see `lb_common::flow::FlowCacheEntry`),
/// CPU `c`'s slots at `c * slots ..`. One plain array rather than a per-CPU one: a per-CPU
/// array reaches each element through a pointer table and aligns it to 8 bytes only, so a
/// 64-byte entry could span two cache lines; `BPF_F_MMAPABLE` page-aligns this array's
/// values, so each entry is one line. The agent sizes it at load (slots per CPU times the
/// possible CPUs) and tells the program the slots per CPU (`Settings::flow_cache_mask`).
/// A connection's SYN is pinned here alone, on its CPU, until the connection's next packet
/// puts it into `FLOWS`: should that packet arrive on another CPU (no RSS, or its
/// indirection changed) while the lookup table changed between the two packets, the
/// handshake lands on the new backend, which resets it, and the client retries.
#[map]
pub static FLOW_CACHE: Array<FlowCacheEntry> =
    Array::with_max_entries(DEFAULT_FLOW_CACHE_SLOTS, BPF_F_MMAPABLE);

/// NAT connections by reply tuple → the VIP their replies must come from (see
/// `lb_common::nat`, also for what happens when it is full). The agent sizes it at load.
#[map]
pub static NAT_CONNS: LruHashMap<FlowKey, NatEntry> =
    LruHashMap::with_max_entries(DEFAULT_NAT_CAPACITY, 0);

/// Entry 0 becomes 1 when this program records its first NAT connection. Until then no
/// packet can be a NAT reply, and the reply lookup (a hash of 40 bytes) is skipped: traffic
/// that is not for a VIP costs what it cost before NAT existed on nodes that do not use it.
#[map]
pub static NAT_IN_USE: Array<u32> = Array::with_max_entries(1, 0);

/// Interfaces NAT may redirect to (key = ifindex, value = the same ifindex), filled by the
/// agent. A FIB egress interface missing here sends the packet to the kernel instead.
#[map]
pub static TX_PORTS: DevMapHash = DevMapHash::with_max_entries(MAX_IFACES, 0);

#[map]
pub static BACKENDS: Array<Backend> = Array::with_max_entries(MAX_BACKENDS, 0);

#[map]
pub static IFACES: HashMap<u32, IfaceInfo> = HashMap::with_max_entries(MAX_IFACES, 0);

/// See `lb_common::iface::IFACE_CACHE_SLOTS`.
#[map]
pub static IFACE_CACHE: Array<IfaceSlot> = Array::with_max_entries(IFACE_CACHE_SLOTS, 0);

#[map]
pub static SETTINGS: Array<Settings> = Array::with_max_entries(1, 0);

#[map]
pub static VIP_STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(MAX_VIPS, 0);

#[map]
pub static BACKEND_STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(MAX_BACKENDS, 0);

/// Per-CPU room for the parsed headers (see `parse::Scratch`); not used by the agent.
#[map]
pub static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// See `lb_common::flow::FLOW_STAT_HASHED` and `FLOW_STAT_CACHE_HITS`.
#[map]
pub static FLOW_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(FLOW_STATS_LEN, 0);

#[map]
pub static REASON_STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(Reason::COUNT, 0);

/// NAT replies translated back to the client, per VIP and per backend.
#[map]
pub static VIP_REPLY_STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(MAX_VIPS, 0);

#[map]
pub static BACKEND_REPLY_STATS: PerCpuArray<Counter> =
    PerCpuArray::with_max_entries(MAX_BACKENDS, 0);

/// `FlowKey` built from whole words: written field by field, its 3 padding bytes make LLVM
/// call a byte-at-a-time `memset`.
#[inline(always)]
pub fn flow_key(src: Addr, dst: Addr, sport_be: u16, dport_be: u16, proto: u8) -> FlowKey {
    #[repr(C)]
    struct Words {
        src: Addr,
        dst: Addr,
        ports: u32,
        proto: u32,
    }
    let [a, b] = sport_be.to_ne_bytes();
    let [c, d] = dport_be.to_ne_bytes();
    let w = Words {
        src,
        dst,
        ports: u32::from_ne_bytes([a, b, c, d]),
        proto: u32::from_ne_bytes([proto, 0, 0, 0]),
    };
    // SAFETY: same size (asserted) and field offsets as FlowKey's; any bits are valid.
    unsafe { core::mem::transmute::<Words, FlowKey>(w) }
}

/// `VipKey` built from whole words, like [`flow_key`].
#[inline(always)]
pub fn vip_key(addr: Addr, port_be: u16, proto: u8) -> VipKey {
    #[repr(C)]
    struct Words {
        addr: Addr,
        rest: u32,
    }
    let [a, b] = port_be.to_ne_bytes();
    let w = Words {
        addr,
        rest: u32::from_ne_bytes([a, b, proto, 0]),
    };
    // SAFETY: same size (asserted) and field offsets as VipKey's; any bits are valid.
    unsafe { core::mem::transmute::<Words, VipKey>(w) }
}

/// Whether some VIP has `addr` as its address (or shares its filter slot).
#[inline(always)]
pub fn may_be_vip(addr: &Addr) -> bool {
    !matches!(VIP_FILTER.get(vip_filter_slot(addr)), Some(&0))
}

/// The agent's entry for interface `ifindex`: from its cache slot if it holds one, else
/// from `IFACES`.
#[inline(always)]
pub fn iface(ifindex: u32) -> Option<&'static IfaceInfo> {
    match IFACE_CACHE.get(ifindex % IFACE_CACHE_SLOTS) {
        Some(slot) if slot.ifindex == ifindex => Some(&slot.info),
        // SAFETY: IFACES entries are only replaced whole by the agent.
        _ => unsafe { IFACES.get(ifindex) },
    }
}
