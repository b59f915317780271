//! The only code that touches the XDP program and its maps: loading, attaching, writing
//! what the agent wants, reading counters.
//!
//! Writers compare with what they last wrote and send only the difference, so a table
//! update never leaves the program looking at a half-written table.

mod pins;

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _};
use aya::{
    maps::{Array, DevMapHash, HashMap, MapData, PerCpuArray, PerCpuValues},
    programs::{
        links::{FdLink, PinnedLink},
        xdp::{XdpLink, XdpLinkId},
        ProgramError, TestRun as _, TestRunOptions, Xdp,
    },
    util::nr_cpus,
    Ebpf, EbpfLoader,
};
use lb_common::{
    backend::{Backend, BACKEND_F_PRESENT},
    flow::{FlowEntry, FlowKey, DEFAULT_FLOW_CACHE_SLOTS},
    iface::{IfaceInfo, IfaceSlot, IFACE_CACHE_SLOTS},
    nat::NatEntry,
    settings::Settings,
    stats::{Counter, Reason},
    vip::{vip_filter_slot, VipInfo, VipKey, VIP_FILTER_SLOTS},
};

use crate::config::XdpMode;

pub use pins::{cleanup, Adoption, Cleanup, MAP_VERSIONS};

/// The compiled XDP object (built by build.rs from the `lb-ebpf` crate).
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb"));

/// The same program built as `lb_next`: different instructions, same maps and behaviour.
/// Only for tests of upgrades (lbd never references it, so it is not in the binary).
#[doc(hidden)]
pub static NEXT_OBJECT_FOR_TESTS: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb_next"));

/// Helper programs (`xdp_pass`, `xdp_tx_baseline`) in an object without maps.
pub static HELPERS_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/helpers"));

/// The packet-rate benchmark's traffic loop (`pktloop`: counts what the balancer sends and
/// sends it back as the next flow's frame), with its maps.
pub static PKTGEN_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/pktgen"));

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
    attached: Option<Attachment>,
    /// Further interfaces the program runs on ([`Dataplane::attach_also`]).
    also: Vec<Attachment>,
    /// Where maps and links are pinned, when they are ([`Dataplane::load_with`]).
    pins: Option<pins::PinDir>,
    adoption: Adoption,
    /// Map entries and table slots written (only differences are written).
    writes: u64,
    /// `Settings::flow_cache_epoch` and `flow_cache_mask`, which `set_settings` adds to
    /// whatever settings it is given.
    flow_cache_epoch: u32,
    flow_cache_mask: u32,
}

/// The program attached to one interface.
struct Attachment {
    ifindex: u32,
    link: Link,
}

enum Link {
    /// Owned by the program object: detached when it is dropped.
    Managed(XdpLinkId),
    /// Pinned on bpffs: outlives this process until unpinned (or detached).
    Pinned(PinnedLink),
}

/// Where a [`Dataplane`] comes from.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions<'a> {
    /// Pin maps and links here and adopt what a previous run pinned.
    pub pin_dir: Option<&'a Path>,
    /// Load this object file instead of the embedded one (an upgrade test, a custom build).
    pub object: Option<&'a Path>,
    /// With `pin_dir`: the interface the program serves and the further ones (NAT). A
    /// pinned link on one of them is taken over; links elsewhere are detached.
    pub ifindex: u32,
    pub also: &'a [u32],
    /// Slots per CPU of the flow cache, a power of two; 0: the default
    /// (`lb_common::flow::DEFAULT_FLOW_CACHE_SLOTS`).
    pub flow_cache_slots: u32,
}

/// The length of a kernel tick (a jiffy, 1-10 ms): the resolution of the coarse clocks.
fn kernel_tick_ns() -> u64 {
    let mut res = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `res` is a valid timespec to write to.
    let rc = unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut res) };
    if rc != 0 {
        // The longest tick Linux has (HZ=100): cache entries then refresh early, never late.
        return 10_000_000;
    }
    (res.tv_sec as u64 * 1_000_000_000 + res.tv_nsec as u64).max(1)
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
    /// `flow_capacity` entries each. Nothing is pinned.
    pub fn load(table_capacity: u32, flow_capacity: u32) -> anyhow::Result<Dataplane> {
        Dataplane::load_with(&LoadOptions::default(), table_capacity, flow_capacity)
    }

    /// Loads the program with its maps pinned under `options.pin_dir`, adopting the maps
    /// and the XDP links a previous run pinned there (see [`pins`] for the compatibility
    /// rule): the adopted links are switched to this run's program atomically
    /// (`BPF_LINK_UPDATE`), so the interface never runs without a program, and the flow
    /// table and everything else the maps hold carry over.
    pub fn load_with(
        options: &LoadOptions<'_>,
        table_capacity: u32,
        flow_capacity: u32,
    ) -> anyhow::Result<Dataplane> {
        let file;
        let object: &[u8] = match options.object {
            Some(path) => {
                file = std::fs::read(path)
                    .with_context(|| format!("reading the XDP object {}", path.display()))?;
                &file
            }
            None => EBPF_OBJECT,
        };
        let cache_slots = match options.flow_cache_slots {
            0 => DEFAULT_FLOW_CACHE_SLOTS,
            n if n.is_power_of_two() => n,
            n => bail!("flow cache slots must be a power of two, not {n}"),
        };
        // Each CPU's slots in one page-aligned array (see the map's comment).
        let cpus = nr_cpus().map_err(|(_, e)| e)?;
        let cache_entries = u32::try_from(cpus)
            .ok()
            .and_then(|c| c.checked_mul(cache_slots))
            .with_context(|| {
                format!(
                    "a flow cache of {cache_slots} slots for each of {cpus} CPUs is more than a \
                     map holds: lower agent.flow_cache_size"
                )
            })?;
        let sizes = std::collections::HashMap::from([
            ("BACKEND_TABLE", table_capacity),
            ("FLOWS", flow_capacity),
            ("NAT_CONNS", flow_capacity),
            ("FLOW_CACHE", cache_entries),
        ]);
        let mut adoption = Adoption::default();
        let pin_dir = options.pin_dir.map(pins::PinDir::open).transpose()?;
        let pinned: Vec<(&str, PathBuf)> = match &pin_dir {
            Some(p) => p.prepare_maps(object, &sizes, &mut adoption)?,
            None => Vec::new(),
        };
        let mut loader = EbpfLoader::new();
        for (name, size) in &sizes {
            loader.map_max_entries(name, *size);
        }
        for (name, path) in &pinned {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(object).context(
            "loading the XDP object into the kernel (needs root, or CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN: see docs/operations.md)",
        )?;
        let prog: &mut Xdp = program(&mut ebpf)?;
        prog.load().map_err(verifier_error)?;
        let table = MappedTable::new(&ebpf, table_capacity)?;
        let mut dp = Dataplane {
            ebpf,
            table,
            attached: None,
            also: Vec::new(),
            pins: None,
            adoption,
            writes: 0,
            flow_cache_epoch: 0,
            flow_cache_mask: cache_slots - 1,
        };
        // Adopted settings go on with their epoch: the cache itself is not adopted (the
        // program that replaces the adopted one starts with an empty one), and changes
        // from here on move the epoch on from where it is.
        dp.flow_cache_epoch = array::<Settings>(&mut dp.ebpf, "SETTINGS")?
            .get(&0, 0)?
            .flow_cache_epoch;
        if let Some(p) = pin_dir {
            dp.adopt_links(&p, options.ifindex, options.also)?;
            p.remove_stale_maps(&pinned)?;
            dp.pins = Some(p);
        }
        Ok(dp)
    }

    /// Takes over the links pinned for `ifindex` and `also`, running this program from now
    /// on; detaches the others (interfaces no longer configured).
    fn adopt_links(&mut self, p: &pins::PinDir, ifindex: u32, also: &[u32]) -> anyhow::Result<()> {
        let ours = self.program_tag()?;
        for (i, path) in p.links()? {
            if i != ifindex && !also.contains(&i) {
                tracing::info!(
                    ifindex = i,
                    "detaching a pinned XDP link of an interface no longer configured"
                );
                if let Err(e) = pins::link_detach_pinned(&path) {
                    tracing::warn!("{e:#}");
                }
                std::fs::remove_file(&path)
                    .with_context(|| format!("removing {}", path.display()))?;
                continue;
            }
            let pinned = PinnedLink::from_pin(&path)
                .with_context(|| format!("opening the pinned link {}", path.display()))?;
            let fd: FdLink = pinned.into();
            let before = fd.info().ok().map(|info| info.program_id());
            let before_tag = before.and_then(program_tag_of);
            let xdp = XdpLink::try_from(fd)
                .with_context(|| format!("{} is not an XDP link", path.display()))?;
            let prog = program(&mut self.ebpf)?;
            // The link stays where it is; only the program it runs changes, atomically.
            let id = prog.attach_to_link(xdp).with_context(|| {
                format!(
                    "replacing the program of the pinned link {}",
                    path.display()
                )
            })?;
            let link = prog.take_link(id)?;
            let fd: FdLink = link
                .try_into()
                .context("an XDP link without a descriptor")?;
            // Pinning again at the same path needs the old pin gone; the link lives on
            // through our descriptor meanwhile.
            std::fs::remove_file(&path)
                .with_context(|| format!("re-pinning {}", path.display()))?;
            let pinned = fd
                .pin(&path)
                .with_context(|| format!("re-pinning {}", path.display()))?;
            let changed = before_tag.map(|t| t != ours);
            self.adoption.program_changed = match (self.adoption.program_changed, changed) {
                (Some(a), Some(b)) => Some(a || b),
                (a, b) => a.or(b),
            };
            self.adoption.links.push(i);
            let att = Attachment {
                ifindex: i,
                link: Link::Pinned(pinned),
            };
            if i == ifindex {
                self.attached = Some(att);
            } else {
                self.also.push(att);
            }
        }
        Ok(())
    }

    /// The kernel's tag (a hash of the instructions) of this run's program.
    fn program_tag(&mut self) -> anyhow::Result<u64> {
        Ok(program(&mut self.ebpf)?.info()?.tag())
    }

    /// What [`Dataplane::load_with`] took over from a previous run.
    pub fn adoption(&self) -> &Adoption {
        &self.adoption
    }

    /// Map entries and table slots written so far.
    pub fn writes(&self) -> u64 {
        self.writes
    }

    /// The pin directory, if the maps are pinned.
    pub fn pin_dir(&self) -> Option<&Path> {
        self.pins.as_ref().map(pins::PinDir::path)
    }

    /// Kernel ids of the pinned maps by name (what `bpftool map show` lists), to check
    /// that a map is the same object across restarts.
    pub fn map_ids(&self) -> anyhow::Result<std::collections::BTreeMap<String, u32>> {
        let mut ids = std::collections::BTreeMap::new();
        for (name, map) in self.ebpf.maps() {
            let data: &MapData = match map {
                aya::maps::Map::Array(d)
                | aya::maps::Map::HashMap(d)
                | aya::maps::Map::LruHashMap(d)
                | aya::maps::Map::PerCpuArray(d)
                | aya::maps::Map::DevMapHash(d) => d,
                _ => continue,
            };
            ids.insert(name.to_owned(), data.info()?.id());
        }
        Ok(ids)
    }

    /// Backend entries that carry a MAC, by address: what the previous run had resolved,
    /// so an adopting agent does not rewrite them as unresolved.
    pub fn backend_macs(&self) -> anyhow::Result<Vec<(std::net::IpAddr, [u8; 6])>> {
        let m = self
            .ebpf
            .map("BACKENDS")
            .ok_or_else(|| anyhow!("map BACKENDS missing"))?;
        let backends = Array::<_, Backend>::try_from(m)?;
        let mut macs = Vec::new();
        for id in 0..backends.len() {
            let b = backends.get(&id, 0)?;
            if b.flags & lb_common::backend::BACKEND_F_MAC_VALID != 0 {
                macs.push((lb_common::addr::to_ip(b.addr), b.mac));
            }
        }
        Ok(macs)
    }

    /// Every VIP entry of the map.
    pub fn vip_entries(&self) -> anyhow::Result<Vec<(VipKey, VipInfo)>> {
        let m = self
            .ebpf
            .map("VIPS")
            .ok_or_else(|| anyhow!("map VIPS missing"))?;
        Ok(HashMap::<_, VipKey, VipInfo>::try_from(m)?
            .iter()
            .collect::<Result<_, _>>()?)
    }

    /// Backend entries marked present, by id.
    pub fn present_backends(&self) -> anyhow::Result<Vec<(u32, Backend)>> {
        let m = self
            .ebpf
            .map("BACKENDS")
            .ok_or_else(|| anyhow!("map BACKENDS missing"))?;
        let backends = Array::<_, Backend>::try_from(m)?;
        let mut present = Vec::new();
        for id in 0..backends.len() {
            let b = backends.get(&id, 0)?;
            if b.flags & BACKEND_F_PRESENT != 0 {
                present.push((id, b));
            }
        }
        Ok(present)
    }

    /// The VIP entry for `key`, if the map has one.
    pub fn vip(&self, key: &VipKey) -> Option<VipInfo> {
        let m = self.ebpf.map("VIPS")?;
        HashMap::<_, VipKey, VipInfo>::try_from(m)
            .ok()?
            .get(key, 0)
            .ok()
    }

    /// Backend entry `id` as the map holds it.
    pub fn backend(&self, id: u32) -> Option<Backend> {
        let m = self.ebpf.map("BACKENDS")?;
        Array::<_, Backend>::try_from(m).ok()?.get(&id, 0).ok()
    }

    /// Writes the node-wide settings; the flow cache's fields are the dataplane's own.
    pub fn set_settings(&mut self, settings: Settings) -> anyhow::Result<()> {
        let settings = Settings {
            flow_cache_epoch: self.flow_cache_epoch,
            flow_cache_mask: self.flow_cache_mask,
            ..settings
        }
        .with_cache_ticks(kernel_tick_ns());
        let mut a = array::<Settings>(&mut self.ebpf, "SETTINGS")?;
        if a.get(&0, 0).ok() != Some(settings) {
            a.set(0, settings, 0)?;
            self.writes += 1;
        }
        Ok(())
    }

    /// Makes every CPU's flow cache forget what it holds: after a change that may forward a
    /// cached flow differently (a VIP removed or redefined, a backend removed or down). The
    /// flows themselves stay pinned in `FLOWS`.
    fn invalidate_flow_cache(&mut self) -> anyhow::Result<()> {
        self.flow_cache_epoch = self.flow_cache_epoch.wrapping_add(1);
        let current = array::<Settings>(&mut self.ebpf, "SETTINGS")?.get(&0, 0)?;
        self.set_settings(current)
    }

    /// Records interface `ifindex`'s MAC in `IFACES`, and in its `IFACE_CACHE` slot unless
    /// another interface holds that slot.
    pub fn set_iface(&mut self, ifindex: u32, mac: [u8; 6]) -> anyhow::Result<()> {
        let info = IfaceInfo { mac, _pad: [0; 2] };
        let mut m = hash_map::<u32, IfaceInfo>(&mut self.ebpf, "IFACES")?;
        if m.get(&ifindex, 0).ok() != Some(info) {
            m.insert(ifindex, info, 0)?;
            self.writes += 1;
        }
        let slot = ifindex % IFACE_CACHE_SLOTS;
        let mut cache = array::<IfaceSlot>(&mut self.ebpf, "IFACE_CACHE")?;
        let held = cache.get(&slot, 0)?;
        let want = IfaceSlot { ifindex, info };
        if (held.ifindex == 0 || held.ifindex == ifindex) && held != want {
            cache.set(slot, want, 0)?;
            self.writes += 1;
        }
        Ok(())
    }

    /// Lets NAT send packets out of `ifindex` (`XDP_REDIRECT` through the `TX_PORTS`
    /// devmap) when the FIB routes them there and they came in on another interface. Every
    /// interface NAT traffic may leave by needs an entry, and its driver must support
    /// XDP redirect targets (`ndo_xdp_xmit`; for a veth, its peer must run an XDP program).
    pub fn set_tx_port(&mut self, ifindex: u32) -> anyhow::Result<()> {
        let mut m =
            DevMapHash::try_from(map(&mut self.ebpf, "TX_PORTS")?).context("map TX_PORTS")?;
        if m.get(ifindex, 0).is_ok_and(|v| v.if_index == ifindex) {
            return Ok(());
        }
        m.insert(ifindex, ifindex, None, 0)
            .with_context(|| format!("adding ifindex {ifindex} to TX_PORTS"))?;
        self.writes += 1;
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
        let mut m = hash_map::<VipKey, VipInfo>(&mut self.ebpf, "VIPS")?;
        let old = m.get(&key, 0).ok();
        if old != Some(info) {
            m.insert(key, info, 0)?;
            self.writes += 1;
        }
        // A new table (offset, size) is what pinned flows outlive; anything else is not.
        if old.is_some_and(|o| (o.id, o.mode, o.flags) != (info.id, info.mode, info.flags)) {
            self.invalidate_flow_cache()?;
        }
        Ok(())
    }

    /// Removes a VIP, then counts it out of `VIP_FILTER`.
    pub fn remove_vip(&mut self, key: &VipKey) -> anyhow::Result<()> {
        let had = self.has_vip(key)?;
        hash_map::<VipKey, VipInfo>(&mut self.ebpf, "VIPS")?.remove(key)?;
        self.writes += 1;
        self.invalidate_flow_cache()?;
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
            if filter.get(&slot, 0)? != n {
                filter.set(slot, n, 0)?;
            }
        }
        for slot in 0..VIP_FILTER_SLOTS {
            if !counts.contains_key(&slot) && filter.get(&slot, 0)? != 0 {
                filter.set(slot, 0, 0)?;
            }
        }
        Ok(())
    }

    pub fn set_backend(&mut self, id: u32, backend: Backend) -> anyhow::Result<()> {
        let mut a = array::<Backend>(&mut self.ebpf, "BACKENDS")?;
        let old = a.get(&id, 0).ok();
        if old != Some(backend) {
            a.set(id, backend, 0)?;
            self.writes += 1;
        }
        // Gone or down, or the id given to another backend: cached flows must not follow.
        let present = |b: &Backend| b.flags & BACKEND_F_PRESENT != 0;
        if old.is_some_and(|o| present(&o) && (!present(&backend) || o.addr != backend.addr)) {
            self.invalidate_flow_cache()?;
        }
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
        self.writes += written as u64;
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
        if matches!(&self.attached, Some(a) if a.ifindex == ifindex) {
            return Ok(());
        }
        self.detach()?;
        self.attached = Some(self.attach_link(ifindex, mode)?);
        Ok(())
    }

    /// Attaches the program to `ifindex` as well as where it is attached (NAT: the
    /// interfaces the backends' replies come in by); a no-op if already attached there.
    /// [`Dataplane::detach`] detaches it from these too.
    pub fn attach_also(&mut self, ifindex: u32, mode: XdpMode) -> anyhow::Result<()> {
        if self.also.iter().any(|a| a.ifindex == ifindex) {
            return Ok(());
        }
        let att = self.attach_link(ifindex, mode)?;
        self.also.push(att);
        Ok(())
    }

    fn attach_link(&mut self, ifindex: u32, mode: XdpMode) -> anyhow::Result<Attachment> {
        let aya_mode = match mode {
            XdpMode::Native => aya::programs::XdpMode::Driver,
            XdpMode::Generic => aya::programs::XdpMode::Skb,
        };
        let prog = program(&mut self.ebpf)?;
        let id = prog
            .attach_to_if_index(ifindex, aya_mode)
            .with_context(|| format!("attaching XDP ({mode} mode) to ifindex {ifindex}; if the driver lacks native XDP, set agent.xdp_mode = \"generic\""))?;
        let Some(pins) = &self.pins else {
            return Ok(Attachment {
                ifindex,
                link: Link::Managed(id),
            });
        };
        // Pinned, the link outlives a crash of this process: the next run adopts it.
        let path = pins.link_path(ifindex);
        let _ = std::fs::remove_file(&path);
        let pinned = FdLink::try_from(prog.take_link(id)?)
            .context("XDP attached through netlink, not a BPF link: it cannot be pinned")
            .and_then(|fd| {
                fd.pin(&path)
                    .with_context(|| format!("pinning the XDP link at {}", path.display()))
            })?;
        Ok(Attachment {
            ifindex,
            link: Link::Pinned(pinned),
        })
    }

    fn detach_link(&mut self, att: Attachment) -> anyhow::Result<()> {
        match att.link {
            Link::Managed(id) => program(&mut self.ebpf)?
                .detach(id)
                .with_context(|| format!("detaching XDP from ifindex {}", att.ifindex)),
            Link::Pinned(pinned) => {
                // Unpinned and closed, the link goes with the last descriptor; detach
                // explicitly so a descriptor held elsewhere cannot keep it attached.
                if let Some(pins) = &self.pins {
                    pins::link_detach_pinned(&pins.link_path(att.ifindex))?;
                }
                pinned.unpin().with_context(|| {
                    format!("unpinning the XDP link of ifindex {}", att.ifindex)
                })?;
                Ok(())
            }
        }
    }

    /// Detaches the program from everywhere it is attached.
    pub fn detach(&mut self) -> anyhow::Result<()> {
        for att in std::mem::take(&mut self.also) {
            self.detach_link(att)?;
        }
        if let Some(att) = self.attached.take() {
            self.detach_link(att)?;
        }
        Ok(())
    }

    /// Leaves everything as it is for the next run to adopt: the links stay attached and
    /// pinned, the maps pinned. (Dropping a pinned `Dataplane` does the same; this only
    /// says it.)
    pub fn leave(self) {}

    /// Detaches and removes every pin: nothing is left for a next run to adopt.
    pub fn unpin_all(mut self) -> anyhow::Result<()> {
        self.detach()?;
        if let Some(p) = self.pins.take() {
            let dir = p.path().to_owned();
            drop(p);
            pins::cleanup(&dir)?;
        }
        Ok(())
    }

    pub fn attached_ifindex(&self) -> Option<u32> {
        self.attached.as_ref().map(|a| a.ifindex)
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
        count_flows(m)
    }

    /// A read-only handle on the flow table with a file descriptor of its own, so a long
    /// walk can run on another thread while the agent's loop (and VRRP in it) goes on.
    pub fn flow_reader(&self) -> anyhow::Result<FlowReader> {
        let Some(aya::maps::Map::LruHashMap(m)) = self.ebpf.map("FLOWS") else {
            bail!("map FLOWS missing from the XDP object, or not an LRU hash");
        };
        let id = m.info()?.id();
        Ok(FlowReader(aya::maps::Map::LruHashMap(MapData::from_id(
            id,
        )?)))
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
        self.flow_stat(lb_common::flow::FLOW_STAT_HASHED)
    }

    /// DR packets forwarded from the flow cache (`lb_common::flow::FLOW_STAT_CACHE_HITS`),
    /// over all CPUs.
    pub fn flow_cache_hits(&self) -> anyhow::Result<u64> {
        self.flow_stat(lb_common::flow::FLOW_STAT_CACHE_HITS)
    }

    /// Slots of the flow cache, per CPU.
    pub fn flow_cache_slots(&self) -> u32 {
        self.flow_cache_mask + 1
    }

    fn flow_stat(&self, index: u32) -> anyhow::Result<u64> {
        let m = self
            .ebpf
            .map("FLOW_STATS")
            .ok_or_else(|| anyhow!("map FLOW_STATS missing from the XDP object"))?;
        let values = PerCpuArray::<_, u64>::try_from(m)?.get(&index, 0)?;
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
        // Pinned links stay attached (a crash or `leave` hands them to the next run);
        // managed ones go with the program anyway.
        if self.pins.is_none() {
            if let Err(e) = self.detach() {
                tracing::warn!("while unloading: {e:#}");
            }
        }
    }
}

/// The tag of the loaded program with kernel id `id`.
fn program_tag_of(id: u32) -> Option<u64> {
    aya::programs::loaded_programs()
        .flatten()
        .find(|p| p.id() == id)
        .map(|p| p.tag())
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

/// See [`Dataplane::flow_reader`]. It only reads.
#[derive(Debug)]
pub struct FlowReader(aya::maps::Map);

impl FlowReader {
    /// [`Dataplane::flows_per_backend`], from this handle.
    pub fn flows_per_backend(&self) -> anyhow::Result<std::collections::HashMap<u32, u64>> {
        count_flows(&self.0)
    }
}

fn count_flows(m: &aya::maps::Map) -> anyhow::Result<std::collections::HashMap<u32, u64>> {
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
