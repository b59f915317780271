//! The only code that touches the XDP program and its maps: loading, attaching, writing
//! what the agent wants, reading counters.
//!
//! Writers compare with what they last wrote and send only the difference, so a table
//! update never leaves the program looking at a half-written table.

use anyhow::{anyhow, bail, Context as _};
use aya::{
    maps::{Array, DevMapHash, HashMap, MapData, PerCpuArray, PerCpuValues},
    programs::{xdp::XdpLinkId, ProgramError, TestRun as _, TestRunOptions, Xdp},
    util::nr_cpus,
    Ebpf, EbpfLoader,
};
use lb_common::{
    backend::Backend,
    flow::{FlowEntry, FlowKey},
    iface::{IfaceInfo, IfaceSlot, IFACE_CACHE_SLOTS},
    nat::NatEntry,
    settings::Settings,
    stats::{Counter, Reason},
    vip::{vip_filter_slot, VipInfo, VipKey, VIP_FILTER_SLOTS},
};

use crate::config::XdpMode;

/// The compiled XDP object (built by build.rs from the `lb-ebpf` crate).
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb"));

/// Helper programs (`xdp_pass`, `xdp_tx_baseline`) in an object without maps.
pub static HELPERS_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/helpers"));

/// The configuration maps in a comparable form (see [`Dataplane::snapshot`]).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MapSnapshot {
    pub vips: Vec<String>,
    pub backends: Vec<String>,
}

/// The balancing program's name in the object.
pub const PROGRAM: &str = "xdp_lb";

/// A loaded (and maybe attached) instance of the program with its maps.
pub struct Dataplane {
    ebpf: Ebpf,
    table: MappedTable,
    attached: Option<(u32, XdpLinkId)>,
    /// Further interfaces the program runs on ([`Dataplane::attach_also`]).
    also: Vec<(u32, XdpLinkId)>,
}

/// `BACKEND_TABLE` mapped into our memory (the map is created `BPF_F_MMAPABLE`). The
/// kernel lays array elements out 8 bytes apart; each slot is one aligned `u32` store,
/// which the program reads whole: a slot is always the old or the new backend id.
struct MappedTable {
    base: *mut u8,
    bytes: usize,
    slots: usize,
}

/// Distance between array elements in the mapping (`round_up(value_size, 8)`).
const TABLE_STRIDE: usize = 8;

impl MappedTable {
    fn new(ebpf: &Ebpf, slots: u32) -> anyhow::Result<MappedTable> {
        use std::os::fd::{AsFd as _, AsRawFd as _};
        let fd = match ebpf.map("BACKEND_TABLE") {
            Some(aya::maps::Map::Array(data)) => data.fd().as_fd().as_raw_fd(),
            _ => {
                return Err(anyhow!(
                    "map BACKEND_TABLE missing from the XDP object or not an array"
                ))
            }
        };
        // SAFETY: page size query has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let bytes = (slots as usize * TABLE_STRIDE).div_ceil(page) * page;
        // SAFETY: a shared read-write mapping of a BPF array created with BPF_F_MMAPABLE;
        // the kernel keeps the map alive while the mapping exists; unmapped in Drop.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error()).context("mmap of BACKEND_TABLE");
        }
        Ok(MappedTable {
            base: base.cast(),
            bytes,
            slots: slots as usize,
        })
    }

    fn slot(&self, i: usize) -> *mut u32 {
        debug_assert!(i < self.slots);
        // SAFETY: i < slots, and slots * STRIDE <= bytes.
        unsafe { self.base.add(i * TABLE_STRIDE).cast() }
    }
}

impl Drop for MappedTable {
    fn drop(&mut self) {
        // SAFETY: base/bytes come from the successful mmap in `new`.
        unsafe { libc::munmap(self.base.cast(), self.bytes) };
    }
}

// SAFETY: the mapping is owned by the Dataplane, which is used from one thread at a time.
unsafe impl Send for MappedTable {}

impl Dataplane {
    /// Loads the program into the kernel (not attached) with a lookup table of
    /// `table_capacity` slots, and a flow table and a NAT connection table of
    /// `flow_capacity` entries each.
    pub fn load(table_capacity: u32, flow_capacity: u32) -> anyhow::Result<Dataplane> {
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("BACKEND_TABLE", table_capacity)
            .map_max_entries("FLOWS", flow_capacity)
            .map_max_entries("NAT_CONNS", flow_capacity)
            .load(EBPF_OBJECT)
            .context(
                "loading the XDP object into the kernel (needs root or CAP_BPF+CAP_NET_ADMIN)",
            )?;
        let prog: &mut Xdp = program(&mut ebpf)?;
        prog.load().map_err(verifier_error)?;
        let table = MappedTable::new(&ebpf, table_capacity)?;
        Ok(Dataplane {
            ebpf,
            table,
            attached: None,
            also: Vec::new(),
        })
    }

    pub fn set_settings(&mut self, settings: Settings) -> anyhow::Result<()> {
        array::<Settings>(&mut self.ebpf, "SETTINGS")?.set(0, settings, 0)?;
        Ok(())
    }

    /// Records interface `ifindex`'s MAC in `IFACES`, and in its `IFACE_CACHE` slot unless
    /// another interface holds that slot.
    pub fn set_iface(&mut self, ifindex: u32, mac: [u8; 6]) -> anyhow::Result<()> {
        let info = IfaceInfo { mac, _pad: [0; 2] };
        hash_map::<u32, IfaceInfo>(&mut self.ebpf, "IFACES")?.insert(ifindex, info, 0)?;
        let slot = ifindex % IFACE_CACHE_SLOTS;
        let mut cache = array::<IfaceSlot>(&mut self.ebpf, "IFACE_CACHE")?;
        let held = cache.get(&slot, 0)?.ifindex;
        if held == 0 || held == ifindex {
            cache.set(slot, IfaceSlot { ifindex, info }, 0)?;
        }
        Ok(())
    }

    /// Lets NAT send packets out of `ifindex` (`XDP_REDIRECT` through the `TX_PORTS`
    /// devmap) when the FIB routes them there and they came in on another interface. Every
    /// interface NAT traffic may leave by needs an entry, and its driver must support
    /// XDP redirect targets (`ndo_xdp_xmit`; for a veth, its peer must run an XDP program).
    pub fn set_tx_port(&mut self, ifindex: u32) -> anyhow::Result<()> {
        DevMapHash::try_from(map(&mut self.ebpf, "TX_PORTS")?)
            .context("map TX_PORTS")?
            .insert(ifindex, ifindex, None, 0)
            .with_context(|| format!("adding ifindex {ifindex} to TX_PORTS"))?;
        Ok(())
    }

    pub fn remove_tx_port(&mut self, ifindex: u32) -> anyhow::Result<()> {
        DevMapHash::try_from(map(&mut self.ebpf, "TX_PORTS")?)
            .context("map TX_PORTS")?
            .remove(ifindex)?;
        Ok(())
    }

    /// Adds or replaces a VIP. A new one is counted into `VIP_FILTER` first, so the
    /// program never filters out a VIP it has.
    pub fn set_vip(&mut self, key: VipKey, info: VipInfo) -> anyhow::Result<()> {
        if !self.has_vip(&key)? {
            self.count_vip_address(&key, true)?;
        }
        hash_map::<VipKey, VipInfo>(&mut self.ebpf, "VIPS")?.insert(key, info, 0)?;
        Ok(())
    }

    /// Removes a VIP, then counts it out of `VIP_FILTER`.
    pub fn remove_vip(&mut self, key: &VipKey) -> anyhow::Result<()> {
        let had = self.has_vip(key)?;
        hash_map::<VipKey, VipInfo>(&mut self.ebpf, "VIPS")?.remove(key)?;
        if had {
            self.count_vip_address(key, false)?;
        }
        Ok(())
    }

    fn has_vip(&mut self, key: &VipKey) -> anyhow::Result<bool> {
        match hash_map::<VipKey, VipInfo>(&mut self.ebpf, "VIPS")?.get(key, 0) {
            Ok(_) => Ok(true),
            Err(aya::maps::MapError::KeyNotFound) => Ok(false),
            Err(e) => Err(e).context("map VIPS"),
        }
    }

    /// One more (`add`) or one fewer VIP key with `key`'s address in its filter slot.
    fn count_vip_address(&mut self, key: &VipKey, add: bool) -> anyhow::Result<()> {
        let slot = vip_filter_slot(&key.addr);
        let mut filter = array::<u32>(&mut self.ebpf, "VIP_FILTER")?;
        let n = filter.get(&slot, 0)?;
        let n = if add { n + 1 } else { n.saturating_sub(1) };
        filter.set(slot, n, 0)?;
        Ok(())
    }

    /// Recounts `VIP_FILTER` from the VIPs in `VIPS`: for maps that outlived the agent
    /// that kept the counts (or a `VIP_FILTER` newer than the `VIPS` it sits beside).
    pub fn recount_vip_filter(&mut self) -> anyhow::Result<()> {
        let keys: Vec<VipKey> = hash_map::<VipKey, VipInfo>(&mut self.ebpf, "VIPS")?
            .keys()
            .collect::<Result<_, _>>()?;
        let mut counts = std::collections::HashMap::<u32, u32>::new();
        for key in &keys {
            *counts.entry(vip_filter_slot(&key.addr)).or_default() += 1;
        }
        let mut filter = array::<u32>(&mut self.ebpf, "VIP_FILTER")?;
        // Raise first, then clear what no VIP holds: no moment filters out a VIP.
        for (&slot, &n) in &counts {
            filter.set(slot, n, 0)?;
        }
        for slot in 0..VIP_FILTER_SLOTS {
            if !counts.contains_key(&slot) && filter.get(&slot, 0)? != 0 {
                filter.set(slot, 0, 0)?;
            }
        }
        Ok(())
    }

    pub fn set_backend(&mut self, id: u32, backend: Backend) -> anyhow::Result<()> {
        array::<Backend>(&mut self.ebpf, "BACKENDS")?.set(id, backend, 0)?;
        Ok(())
    }

    /// Writes `slots` at `offset` of the lookup table, touching only slots whose value
    /// changes. Returns how many were written.
    pub fn write_table(&mut self, offset: u32, slots: &[u32]) -> anyhow::Result<usize> {
        let start = offset as usize;
        if start
            .checked_add(slots.len())
            .is_none_or(|end| end > self.table.slots)
        {
            bail!(
                "table slots {start}..+{} exceed the capacity {}",
                slots.len(),
                self.table.slots
            );
        }
        let mut written = 0;
        for (i, &want) in slots.iter().enumerate() {
            let p = self.table.slot(start + i);
            // SAFETY: in bounds (checked above); aligned u32 in a live shared mapping that
            // the program reads concurrently, hence volatile.
            unsafe {
                if p.read_volatile() != want {
                    p.write_volatile(want);
                    written += 1;
                }
            }
        }
        Ok(written)
    }

    /// Reads `len` slots of the lookup table from `offset`.
    pub fn read_table(&self, offset: u32, len: u32) -> Vec<u32> {
        let start = (offset as usize).min(self.table.slots);
        let end = (start + len as usize).min(self.table.slots);
        // SAFETY: in bounds; see write_table.
        (start..end)
            .map(|i| unsafe { self.table.slot(i).read_volatile() })
            .collect()
    }

    /// Attaches the program to `ifindex`; a no-op if already attached there.
    pub fn attach(&mut self, ifindex: u32, mode: XdpMode) -> anyhow::Result<()> {
        if matches!(&self.attached, Some((i, _)) if *i == ifindex) {
            return Ok(());
        }
        self.detach()?;
        let aya_mode = match mode {
            XdpMode::Native => aya::programs::XdpMode::Driver,
            XdpMode::Generic => aya::programs::XdpMode::Skb,
        };
        let link = program(&mut self.ebpf)?
            .attach_to_if_index(ifindex, aya_mode)
            .with_context(|| format!("attaching XDP ({mode} mode) to ifindex {ifindex}; if the driver lacks native XDP, set agent.xdp_mode = \"generic\""))?;
        self.attached = Some((ifindex, link));
        Ok(())
    }

    /// Attaches the program to `ifindex` as well as where it is attached (NAT: the
    /// interfaces the backends' replies come in by); a no-op if already attached there.
    /// [`Dataplane::detach`] detaches it from these too.
    pub fn attach_also(&mut self, ifindex: u32, mode: XdpMode) -> anyhow::Result<()> {
        if self.also.iter().any(|(i, _)| *i == ifindex) {
            return Ok(());
        }
        let aya_mode = match mode {
            XdpMode::Native => aya::programs::XdpMode::Driver,
            XdpMode::Generic => aya::programs::XdpMode::Skb,
        };
        let link = program(&mut self.ebpf)?
            .attach_to_if_index(ifindex, aya_mode)
            .with_context(|| format!("attaching XDP ({mode} mode) to ifindex {ifindex}; if the driver lacks native XDP, set agent.xdp_mode = \"generic\""))?;
        self.also.push((ifindex, link));
        Ok(())
    }

    /// Detaches the program from everywhere it is attached.
    pub fn detach(&mut self) -> anyhow::Result<()> {
        for (ifindex, link) in std::mem::take(&mut self.also) {
            program(&mut self.ebpf)?
                .detach(link)
                .with_context(|| format!("detaching XDP from ifindex {ifindex}"))?;
        }
        if let Some((ifindex, link)) = self.attached.take() {
            program(&mut self.ebpf)?
                .detach(link)
                .with_context(|| format!("detaching XDP from ifindex {ifindex}"))?;
        }
        Ok(())
    }

    pub fn attached_ifindex(&self) -> Option<u32> {
        self.attached.as_ref().map(|(i, _)| *i)
    }

    /// Zeroes a VIP's counters, NAT replies included (an id being reused must not inherit
    /// its old numbers).
    pub fn reset_vip_counter(&mut self, id: u32) -> anyhow::Result<()> {
        zero_per_cpu(&mut self.ebpf, "VIP_STATS", id)?;
        zero_per_cpu(&mut self.ebpf, "VIP_REPLY_STATS", id)
    }

    pub fn reset_backend_counter(&mut self, id: u32) -> anyhow::Result<()> {
        zero_per_cpu(&mut self.ebpf, "BACKEND_STATS", id)?;
        zero_per_cpu(&mut self.ebpf, "BACKEND_REPLY_STATS", id)
    }

    /// Flow-table entries per backend id. Walks the whole table (one syscall per entry),
    /// so it is for on-demand stats, not for a hot path.
    pub fn flows_per_backend(&self) -> anyhow::Result<std::collections::HashMap<u32, u64>> {
        let m = self
            .ebpf
            .map("FLOWS")
            .ok_or_else(|| anyhow!("map FLOWS missing from the XDP object"))?;
        let mut counts = std::collections::HashMap::new();
        // Entries evicted while we walk end the walk early or are skipped: an estimate.
        for (_, entry) in HashMap::<_, FlowKey, FlowEntry>::try_from(m)?
            .iter()
            .flatten()
        {
            *counts.entry(entry.backend_id).or_default() += 1;
        }
        Ok(counts)
    }

    /// What the configuration maps hold, in a comparable form: the VIP entries, every
    /// present backend entry, and a digest of each VIP's table slice.
    pub fn snapshot(&self) -> anyhow::Result<MapSnapshot> {
        let vips_map = self
            .ebpf
            .map("VIPS")
            .ok_or_else(|| anyhow!("map VIPS missing"))?;
        let mut vips: Vec<(VipKey, VipInfo)> = HashMap::<_, VipKey, VipInfo>::try_from(vips_map)?
            .iter()
            .collect::<Result<_, _>>()?;
        vips.sort_by_key(|(_, info)| info.id);
        let backends_map = self
            .ebpf
            .map("BACKENDS")
            .ok_or_else(|| anyhow!("map BACKENDS missing"))?;
        let backends_array = Array::<_, Backend>::try_from(backends_map)?;
        let mut backends = Vec::new();
        for id in 0..backends_array.len() {
            let b = backends_array.get(&id, 0)?;
            if b.flags != 0 {
                backends.push(format!("{id}: {b:?}"));
            }
        }
        let vips = vips
            .iter()
            .map(|(k, info)| {
                let slots = self.read_table(info.table_offset, info.table_size);
                let bytes: Vec<u8> = slots.iter().flat_map(|s| s.to_ne_bytes()).collect();
                format!(
                    "{k:?} => {info:?} table xxh3 {:016x}",
                    xxhash_rust::xxh3::xxh3_64(&bytes)
                )
            })
            .collect();
        Ok(MapSnapshot { vips, backends })
    }

    /// NAT connections (walks the table: for tests and diagnostics), keyed by the reply's
    /// 5-tuple.
    pub fn nat_entries(&self) -> anyhow::Result<Vec<(FlowKey, NatEntry)>> {
        let m = self
            .ebpf
            .map("NAT_CONNS")
            .ok_or_else(|| anyhow!("map NAT_CONNS missing from the XDP object"))?;
        Ok(HashMap::<_, FlowKey, NatEntry>::try_from(m)?
            .iter()
            .collect::<Result<_, _>>()?)
    }

    /// NAT replies translated back to clients, for VIP `id` (packets and bytes).
    pub fn vip_reply_counter(&self, id: u32) -> anyhow::Result<Counter> {
        per_cpu_sum(&self.ebpf, "VIP_REPLY_STATS", id)
    }

    /// NAT replies from backend `id` translated back to clients.
    pub fn backend_reply_counter(&self, id: u32) -> anyhow::Result<Counter> {
        per_cpu_sum(&self.ebpf, "BACKEND_REPLY_STATS", id)
    }

    pub fn vip_counter(&self, id: u32) -> anyhow::Result<Counter> {
        per_cpu_sum(&self.ebpf, "VIP_STATS", id)
    }

    pub fn backend_counter(&self, id: u32) -> anyhow::Result<Counter> {
        per_cpu_sum(&self.ebpf, "BACKEND_STATS", id)
    }

    pub fn reason_counters(&self) -> anyhow::Result<Vec<(Reason, Counter)>> {
        Reason::ALL
            .iter()
            .map(|&r| Ok((r, per_cpu_sum(&self.ebpf, "REASON_STATS", r as u32)?)))
            .collect()
    }

    /// Runs the program once on `frame` with `BPF_PROG_TEST_RUN` (ingress interface:
    /// loopback). Returns the raw verdict and the frame as the program left it.
    pub fn test_run(&mut self, frame: &[u8]) -> anyhow::Result<(u32, Vec<u8>)> {
        self.run(frame, None, 1)
            .map(|(verdict, out, _)| (verdict, out))
    }

    /// Like [`Dataplane::test_run`], as if `frame` arrived on interface `ifindex` of the
    /// calling thread's network namespace (queue 0).
    pub fn test_run_on(&mut self, ifindex: u32, frame: &[u8]) -> anyhow::Result<(u32, Vec<u8>)> {
        self.run(frame, Some(ifindex), 1)
            .map(|(verdict, out, _)| (verdict, out))
    }

    /// Like [`Dataplane::time_run`], arriving on `ifindex` (see [`Dataplane::test_run_on`]).
    pub fn time_run_on(
        &mut self,
        ifindex: u32,
        frame: &[u8],
        repeat: u32,
    ) -> anyhow::Result<std::time::Duration> {
        self.run(frame, Some(ifindex), repeat)
            .map(|(_, _, duration)| duration)
    }

    /// Runs the program `repeat` times on `frame` in the kernel and returns the mean
    /// duration per run, as the kernel measured it.
    pub fn time_run(&mut self, frame: &[u8], repeat: u32) -> anyhow::Result<std::time::Duration> {
        self.run(frame, None, repeat)
            .map(|(_, _, duration)| duration)
    }

    /// Runs another program of the object (the benchmark's entry points in
    /// `lb-ebpf/src/bench.rs`, which share this program's maps) `repeat` times on `frame`
    /// arriving on `ifindex`, loading it first if needed. Returns the last run's verdict and
    /// the mean duration per run.
    pub fn time_program(
        &mut self,
        name: &str,
        ifindex: u32,
        frame: &[u8],
        repeat: u32,
    ) -> anyhow::Result<(u32, std::time::Duration)> {
        let prog = program_named(&mut self.ebpf, name)?;
        if prog.fd().is_err() {
            prog.load().map_err(verifier_error)?;
        }
        self.run_program(name, frame, Some(ifindex), repeat)
            .map(|(verdict, _, duration)| (verdict, duration))
    }

    /// How many packets were balanced through the lookup table rather than by a flow
    /// entry (`lb_common::flow::FLOW_STAT_HASHED`), over all CPUs.
    pub fn flows_hashed(&self) -> anyhow::Result<u64> {
        let m = self
            .ebpf
            .map("FLOW_STATS")
            .ok_or_else(|| anyhow!("map FLOW_STATS missing from the XDP object"))?;
        let values =
            PerCpuArray::<_, u64>::try_from(m)?.get(&lb_common::flow::FLOW_STAT_HASHED, 0)?;
        Ok(values.iter().sum())
    }

    /// One `BPF_PROG_TEST_RUN`: the verdict, the frame as the program left it, and the mean
    /// duration per run. Without `ifindex` the kernel uses loopback as the ingress.
    fn run(
        &mut self,
        frame: &[u8],
        ifindex: Option<u32>,
        repeat: u32,
    ) -> anyhow::Result<(u32, Vec<u8>, std::time::Duration)> {
        self.run_program(PROGRAM, frame, ifindex, repeat)
    }

    fn run_program(
        &mut self,
        name: &str,
        frame: &[u8],
        ifindex: Option<u32>,
        repeat: u32,
    ) -> anyhow::Result<(u32, Vec<u8>, std::time::Duration)> {
        // Room for a program that grows the frame (encapsulation) without ENOSPC.
        let mut out = vec![0u8; frame.len() + 256];
        let ctx = ifindex.map(|i| xdp_md(i, frame.len()));
        let prog = program_named(&mut self.ebpf, name)?;
        let result = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ctx_in: ctx.as_deref(),
                repeat,
                ..Default::default()
            })
            .with_context(|| match ifindex {
                Some(i) => format!("BPF_PROG_TEST_RUN on ifindex {i}"),
                None => "BPF_PROG_TEST_RUN".to_owned(),
            })?;
        out.truncate(result.data_size_out as usize);
        Ok((result.return_value, out, result.duration))
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        if let Err(e) = self.detach() {
            tracing::warn!("while unloading: {e:#}");
        }
    }
}

/// `struct xdp_md` for `BPF_PROG_TEST_RUN` of a `len`-byte frame without metadata
/// (data = 0, data_end = len, data_meta = 0), received on `ifindex`, queue 0.
fn xdp_md(ifindex: u32, len: usize) -> Vec<u8> {
    [0u32, len as u32, 0, ifindex, 0, 0]
        .iter()
        .flat_map(|w| w.to_ne_bytes())
        .collect()
}

fn program(ebpf: &mut Ebpf) -> anyhow::Result<&mut Xdp> {
    program_named(ebpf, PROGRAM)
}

fn program_named<'a>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<&'a mut Xdp> {
    ebpf.program_mut(name)
        .ok_or_else(|| anyhow!("program {name} missing from the XDP object"))?
        .try_into()
        .context("program type")
}

/// Makes a verifier rejection readable: aya puts the verifier log in the error's Debug.
fn verifier_error(e: ProgramError) -> anyhow::Error {
    anyhow!("the kernel rejected the XDP program: {e:?}")
}

fn map<'a>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<&'a mut aya::maps::Map> {
    ebpf.map_mut(name)
        .ok_or_else(|| anyhow!("map {name} missing from the XDP object"))
}

fn array<'a, V: aya::Pod>(
    ebpf: &'a mut Ebpf,
    name: &str,
) -> anyhow::Result<Array<&'a mut MapData, V>> {
    Array::try_from(map(ebpf, name)?).with_context(|| format!("map {name}"))
}

fn hash_map<'a, K: aya::Pod, V: aya::Pod>(
    ebpf: &'a mut Ebpf,
    name: &str,
) -> anyhow::Result<HashMap<&'a mut MapData, K, V>> {
    HashMap::try_from(map(ebpf, name)?).with_context(|| format!("map {name}"))
}

fn zero_per_cpu(ebpf: &mut Ebpf, name: &str, index: u32) -> anyhow::Result<()> {
    let zeros = PerCpuValues::try_from(vec![Counter::default(); nr_cpus().map_err(|(_, e)| e)?])?;
    PerCpuArray::<_, Counter>::try_from(map(ebpf, name)?)?.set(index, zeros, 0)?;
    Ok(())
}

fn per_cpu_sum(ebpf: &Ebpf, name: &str, index: u32) -> anyhow::Result<Counter> {
    let m = ebpf
        .map(name)
        .ok_or_else(|| anyhow!("map {name} missing from the XDP object"))?;
    let values = PerCpuArray::<_, Counter>::try_from(m)?.get(&index, 0)?;
    let mut total = Counter::default();
    for c in values.iter() {
        total.add(c);
    }
    Ok(total)
}
