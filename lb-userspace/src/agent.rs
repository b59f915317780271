//! The agent core: the one owner of state. It holds the effective config, where each VIP
//! and backend lives in the maps, what it knows of backend MACs, and the data plane, and
//! it turns events (a new config, a neighbour change, a control request) into the
//! smallest set of map writes.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Instant,
};

use anyhow::{anyhow, bail, Context as _};
use lb_common::{
    addr,
    backend::{Backend, BACKEND_F_MAC_VALID, BACKEND_F_PRESENT, MAX_BACKENDS, NO_BACKEND},
    settings::Settings,
    vip::{
        VipInfo, VipKey, MAX_VIPS, MODE_DR, MODE_NAT, VIP_F_ALL_DOWN_PASS, VIP_F_SOURCE_AFFINITY,
    },
};
use prometheus_client::metrics::histogram::exponential_buckets;
use serde::Serialize;
use tracing::{info, warn};

use crate::{
    config::{
        self, AgentConfig, AllDown, BackendConfig, Config, ForwardingMode, Protocol, VipConfig,
    },
    control::{
        BackendStats, Command, FlowCacheStats, ReasonStats, Response, StatsReport, StatusReport,
        VerdictStats, VipStats,
    },
    dataplane::Dataplane,
    edit::{self, Edit},
    health::{
        BackendId, Forced, HealthHandle, Reason as HealthReason, State as HealthState, Transition,
    },
    layout::{IdPool, SlotPool},
    maglev::{self, BackendKey},
    metrics::Durations,
    net::{format_mac, Link},
};

/// A VIP as it lives in the maps.
#[derive(Clone, Debug)]
struct VipState {
    config: VipConfig,
    key: VipKey,
    info: VipInfo,
    /// Parallel to `config.backends`.
    backend_ids: Vec<u32>,
}

impl VipState {
    fn identity(&self) -> (IpAddr, u16, Protocol) {
        identity(&self.config)
    }
}

fn identity(v: &VipConfig) -> (IpAddr, u16, Protocol) {
    (v.address, v.port, v.protocol)
}

/// What a config change did, for logs and the reply to `reload`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ApplySummary {
    pub vips_added: usize,
    pub vips_removed: usize,
    pub vips_changed: usize,
    pub backends_added: usize,
    pub backends_removed: usize,
    /// Lookup-table slots rewritten (only slots whose backend changed are written).
    pub slots_written: usize,
}

/// Map placement planned for a config before anything is written.
struct Placement {
    vip_ids: IdPool,
    backend_ids: IdPool,
    slots: SlotPool,
    /// Parallel to the new config's VIPs.
    vips: Vec<VipState>,
}

pub struct Agent {
    config: Config,
    /// The file the config came from: `reload` re-reads it, `config save` writes it.
    config_path: PathBuf,
    link: Link,
    /// `agent.nat_interfaces`, resolved ([`Agent::set_nat_links`]).
    nat_links: Vec<Link>,
    dp: Dataplane,
    vips: Vec<VipState>,
    vip_ids: IdPool,
    backend_ids: IdPool,
    slots: SlotPool,
    macs: HashMap<IpAddr, [u8; 6]>,
    /// Health (or forced) state of backends that are not simply up, by backend id.
    states: HashMap<u32, HealthState>,
    /// Backends of VIPs with a health check are registered here; the runner reports
    /// their transitions back through [`Agent::on_health`].
    health: HealthHandle,
    started: Instant,
    /// How long each Maglev table build took (`/metrics`).
    maglev_builds: Durations,
}

impl Agent {
    /// Programs every map from `config` (the program is not attached yet).
    pub fn new(
        config: Config,
        config_path: PathBuf,
        link: Link,
        mut dp: Dataplane,
        health: HealthHandle,
    ) -> anyhow::Result<Agent> {
        dp.set_iface(link.index, link.mac)?;
        // NAT sends a reply that came in by another interface out of this one.
        if let Err(e) = dp.set_tx_port(link.index) {
            warn!(
                "NAT cannot redirect out of {}: {e:#}",
                config.agent.interface
            );
        }
        let empty = Config {
            agent: config.agent.clone(),
            vips: Vec::new(),
            vrrp: config.vrrp.clone(),
        };
        // Adopted maps already carry the MACs the previous run resolved; without them the
        // first apply would rewrite every live backend entry as unresolved.
        let macs = dp.backend_macs()?.into_iter().collect();
        let mut agent = Agent {
            vip_ids: IdPool::new(MAX_VIPS),
            backend_ids: IdPool::new(MAX_BACKENDS),
            slots: SlotPool::new(config.agent.table_capacity),
            config: empty,
            config_path,
            link,
            nat_links: Vec::new(),
            dp,
            vips: Vec::new(),
            macs,
            states: HashMap::new(),
            health,
            started: Instant::now(),
            // 10 µs to about 2.6 s: a small table builds in microseconds, 1,000 backends
            // over 655,373 slots in tens of milliseconds.
            maglev_builds: Durations::new(exponential_buckets(0.00001, 4.0, 10)),
        };
        agent.write_settings()?;
        if agent.dp.adoption().maps.iter().any(|m| m == "VIPS") {
            // The filter may be younger than the VIPs it sits beside (a new program version)
            // or have missed a count: make it agree before anything else is written.
            agent.dp.recount_vip_filter()?;
            agent.adopt_placement(&config)?;
        }
        agent.apply(config)?;
        Ok(agent)
    }

    /// Takes the placement (VIP ids, table ranges, backend ids) from adopted maps, so the
    /// first apply keeps every id the previous run gave out, however that run got there
    /// (runtime changes, FIFO reuse), instead of placing the config afresh: a flow pinned
    /// to a backend id must find the same backend behind it after a restart.
    ///
    /// A VIP's backends are the ids its table names; a present backend no table names (a
    /// drained or zero-weight one) joins the one VIP of `config` that lists its address, if
    /// exactly one does, and is otherwise cleared and placed afresh. VIPs the configuration
    /// no longer has are removed here. Anything inconsistent (an id or a range used twice)
    /// abandons the adoption of the placement, not the maps.
    fn adopt_placement(&mut self, config: &Config) -> anyhow::Result<()> {
        let entries = self.dp.vip_entries()?;
        let backends: HashMap<u32, Backend> = self.dp.present_backends()?.into_iter().collect();
        let mut vip_ids = IdPool::new(MAX_VIPS);
        let mut backend_ids = IdPool::new(MAX_BACKENDS);
        let mut slots = SlotPool::new(config.agent.table_capacity);
        let mut vips = Vec::new();
        // Ids seen in some table (kept or removed), and those that stay placed.
        let mut owned: HashSet<u32> = HashSet::new();
        let mut kept: HashSet<u32> = HashSet::new();
        for (key, info) in entries {
            let protocol = match key.proto {
                6 => Protocol::Tcp,
                17 => Protocol::Udp,
                _ => continue,
            };
            let address = addr::to_ip(key.addr);
            let port = u16::from_be(key.port_be);
            let mut ids: Vec<u32> = self
                .dp
                .read_table(info.table_offset, info.table_size)
                .into_iter()
                .filter(|id| *id != NO_BACKEND && backends.contains_key(id))
                .collect();
            ids.sort_unstable();
            ids.dedup();
            let Some(mut vip) = config
                .vips
                .iter()
                .find(|v| identity(v) == (address, port, protocol))
                .cloned()
            else {
                // Gone from the configuration: removed here, as a reload would.
                self.dp.remove_vip(&key)?;
                for id in &ids {
                    self.dp.set_backend(*id, Backend::default())?;
                }
                owned.extend(&ids);
                info!(vip = %format!("{address}:{port}/{protocol}"), "VIP removed (adopted, no longer configured)");
                continue;
            };
            if !vip_ids.take(info.id) || !slots.take(info.table_offset, info.table_size) {
                warn!("adopted VIP entries overlap; placing the configuration afresh");
                return Ok(());
            }
            vip.backends = ids
                .iter()
                .map(|id| backend_config(&vip, &backends[id]))
                .collect();
            owned.extend(&ids);
            kept.extend(&ids);
            vips.push(VipState {
                config: vip,
                key,
                info,
                backend_ids: ids,
            });
        }
        let mut orphans: Vec<(u32, Backend)> = backends
            .iter()
            .filter(|(id, _)| !owned.contains(id))
            .map(|(&id, &b)| (id, b))
            .collect();
        orphans.sort_by_key(|(id, _)| *id);
        for (id, b) in &orphans {
            let ip = addr::to_ip(b.addr);
            let homes: Vec<usize> = vips
                .iter()
                .enumerate()
                .filter(|(_, v)| {
                    !v.config.backends.iter().any(|x| x.address == ip)
                        && config.vips.iter().any(|c| {
                            identity(c) == v.identity()
                                && c.backends.iter().any(|x| x.address == ip)
                        })
                })
                .map(|(i, _)| i)
                .collect();
            if let [i] = homes[..] {
                let entry = backend_config(&vips[i].config, b);
                vips[i].config.backends.push(entry);
                vips[i].backend_ids.push(*id);
                kept.insert(*id);
            } else {
                // No telling whose it is: absent, its flows are balanced again.
                self.dp.set_backend(*id, Backend::default())?;
            }
        }
        for &id in &kept {
            if !backend_ids.take(id) {
                warn!("adopted backend ids overlap; placing the configuration afresh");
                return Ok(());
            }
        }
        // The config's own order and settings where it agrees, so an unchanged config
        // compares equal and the first apply logs no change.
        for v in &mut vips {
            if let Some(c) = config.vips.iter().find(|c| identity(c) == v.identity()) {
                let mut pairs: Vec<(BackendConfig, u32)> = Vec::new();
                for b in &c.backends {
                    if let Some(j) = v
                        .config
                        .backends
                        .iter()
                        .position(|x| x.address == b.address)
                    {
                        pairs.push((b.clone(), v.backend_ids[j]));
                    }
                }
                for (b, &id) in v.config.backends.iter().zip(&v.backend_ids) {
                    if !c.backends.iter().any(|x| x.address == b.address) {
                        pairs.push((b.clone(), id));
                    }
                }
                (v.config.backends, v.backend_ids) = pairs.into_iter().unzip();
            }
        }
        info!(
            vips = vips.len(),
            backends = kept.len(),
            "placement adopted from the maps: VIPs and backends keep their ids"
        );
        self.config.vips = vips.iter().map(|v| v.config.clone()).collect();
        self.vips = vips;
        self.vip_ids = vip_ids;
        self.backend_ids = backend_ids;
        self.slots = slots;
        Ok(())
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A handle to walk the flow table on another thread ([`Agent::stats_with_flows`]).
    pub fn flow_reader(&self) -> anyhow::Result<crate::dataplane::FlowReader> {
        self.dp.flow_reader()
    }

    /// Backend ids of each VIP, in config order (parallel to the VIPs and backends of
    /// [`Agent::stats`]).
    pub fn backend_ids(&self) -> Vec<Vec<u32>> {
        self.vips.iter().map(|v| v.backend_ids.clone()).collect()
    }

    /// Durations of the Maglev table builds so far (a handle to the live histogram).
    pub fn maglev_builds(&self) -> &Durations {
        &self.maglev_builds
    }

    pub fn ifindex(&self) -> u32 {
        self.link.index
    }

    /// The data plane, for reads (what was adopted, map ids, writes so far).
    pub fn dataplane(&self) -> &Dataplane {
        &self.dp
    }

    /// Hands the data plane back, for the way lbd stops: left for the next run, or
    /// detached and unpinned.
    pub fn into_dataplane(self) -> Dataplane {
        self.dp
    }

    /// Registers the interfaces of `agent.nat_interfaces` (in config order): NAT may send
    /// packets out of them (`TX_PORTS`, with their MACs in `IFACES`), and the program is
    /// attached to them too whenever it is attached, to translate the backends' replies.
    pub fn set_nat_links(&mut self, links: Vec<Link>) -> anyhow::Result<()> {
        for (name, l) in self.config.agent.nat_interfaces.iter().zip(&links) {
            self.dp.set_iface(l.index, l.mac)?;
            self.dp
                .set_tx_port(l.index)
                .with_context(|| format!("agent.nat_interfaces: {name}"))?;
        }
        self.nat_links = links;
        if self.attached() {
            for l in &self.nat_links {
                self.dp.attach_also(l.index, self.config.agent.xdp_mode)?;
            }
        }
        Ok(())
    }

    /// Makes `new` the effective config, writing only what differs. Everything is planned
    /// first: if the new config cannot be applied, nothing changes.
    pub fn apply(&mut self, new: Config) -> anyhow::Result<ApplySummary> {
        check_live_agent_keys(&self.config.agent, &new.agent)?;
        if new.vrrp != self.config.vrrp {
            bail!("the [[vrrp]] instances cannot change while lbd runs; nothing was applied. Restart lbd to change them (the other node keeps serving meanwhile)");
        }
        let plan = self.place(&new)?;
        check_forwarding(&new, &self.config)?;
        let mut summary = ApplySummary::default();

        if new.agent.hash_seed != self.config.agent.hash_seed
            || new.agent.tcp_idle_timeout != self.config.agent.tcp_idle_timeout
            || new.agent.udp_idle_timeout != self.config.agent.udp_idle_timeout
        {
            if new.agent.hash_seed != self.config.agent.hash_seed && !self.vips.is_empty() {
                warn!("agent.hash_seed changed: new flows are spread differently; established flows keep their backends");
            }
            self.config.agent = new.agent.clone();
            self.write_settings()?;
        }

        let old: HashMap<_, VipState> = self.vips.drain(..).map(|v| (v.identity(), v)).collect();
        // Additions and changes first (new backends, then tables, then VIP entries), so the
        // program never reads a slot naming a backend that is not there yet.
        for v in &plan.vips {
            let before = old.get(&v.identity());
            let old_ids: HashSet<u32> = before
                .map(|b| b.backend_ids.iter().copied().collect())
                .unwrap_or_default();
            for (b, &id) in v.config.backends.iter().zip(&v.backend_ids) {
                if !old_ids.contains(&id) {
                    // An entry adopted from a previous run keeps its counters.
                    let adopted = self.dp.backend(id).is_some_and(|e| {
                        e.flags & BACKEND_F_PRESENT != 0 && e.addr == addr::from_ip(b.address)
                    });
                    if !adopted {
                        self.dp.reset_backend_counter(id)?;
                    }
                    summary.backends_added += 1;
                    // A new VIP's backends are counted in its own line.
                    if before.is_some() {
                        info!(vip = %v.config.name, backend = %b.address, weight = b.weight, "backend added");
                    }
                }
            }
            self.register_health_checks(v)?;
            summary.slots_written += self.sync_vip(v, new.agent.hash_seed)?;
            match before {
                None => {
                    if self.dp.vip(&v.key).map(|i| i.id) != Some(v.info.id) {
                        self.dp.reset_vip_counter(v.info.id)?;
                    }
                    summary.vips_added += 1;
                    info!(vip = %v.config.name, address = %v.config.address, port = v.config.port, protocol = %v.config.protocol,
                          backends = v.config.backends.len(), table_size = v.info.table_size, "VIP added");
                }
                Some(b) if b.config != v.config => {
                    summary.vips_changed += 1;
                    info!(vip = %v.config.name, backends = v.config.backends.len(), "VIP changed");
                }
                Some(_) => {}
            }
            if before.map(|b| b.info) != Some(v.info) {
                self.dp
                    .set_vip(v.key, v.info)
                    .with_context(|| format!("adding VIP {}", v.config.name))?;
            }
        }
        // Then removals: VIP entries, then the backends no table names any more.
        let kept: HashSet<u32> = plan
            .vips
            .iter()
            .flat_map(|v| v.backend_ids.iter().copied())
            .collect();
        let new_identities: HashSet<_> = plan.vips.iter().map(|v| v.identity()).collect();
        for (ident, v) in &old {
            if !new_identities.contains(ident) {
                self.dp.remove_vip(&v.key)?;
                summary.vips_removed += 1;
                info!(vip = %v.config.name, "VIP removed");
            }
            for (b, &id) in v.config.backends.iter().zip(&v.backend_ids) {
                if !kept.contains(&id) {
                    // Flows pinned to this id find it absent and are re-hashed.
                    self.dp.set_backend(id, Backend::default())?;
                    self.states.remove(&id);
                    let _ = self.health.remove_backend(BackendId(id as u64));
                    summary.backends_removed += 1;
                    info!(vip = %v.config.name, backend = %b.address, "backend removed");
                }
            }
        }

        self.vips = plan.vips;
        self.vip_ids = plan.vip_ids;
        self.backend_ids = plan.backend_ids;
        self.slots = plan.slots;
        self.config = new;
        Ok(summary)
    }

    /// Plans ids and table ranges for `new`, keeping those of VIPs and backends that stay.
    fn place(&self, new: &Config) -> anyhow::Result<Placement> {
        let mut vip_ids = self.vip_ids.clone();
        let mut backend_ids = self.backend_ids.clone();
        let mut slots = self.slots.clone();
        let old: HashMap<_, &VipState> = self.vips.iter().map(|v| (v.identity(), v)).collect();
        let new_identities: HashSet<_> = new.vips.iter().map(identity).collect();
        // Release what goes away first, so a same-size replacement fits. Released ids are
        // reused last (FIFO), so they stay unused as long as possible.
        for v in self
            .vips
            .iter()
            .filter(|v| !new_identities.contains(&v.identity()))
        {
            vip_ids.release(v.info.id);
            slots.release(v.info.table_offset, v.info.table_size);
            v.backend_ids.iter().for_each(|&id| backend_ids.release(id));
        }
        let mut vips = Vec::with_capacity(new.vips.len());
        for cfg in &new.vips {
            let before = old.get(&identity(cfg));
            let old_backends: HashMap<IpAddr, u32> = before
                .map(|b| {
                    b.config
                        .backends
                        .iter()
                        .map(|x| x.address)
                        .zip(b.backend_ids.iter().copied())
                        .collect()
                })
                .unwrap_or_default();
            let new_addresses: HashSet<IpAddr> = cfg.backends.iter().map(|b| b.address).collect();
            for (&address, &id) in &old_backends {
                if !new_addresses.contains(&address) {
                    backend_ids.release(id);
                }
            }
            let mut ids = Vec::with_capacity(cfg.backends.len());
            for b in &cfg.backends {
                let id = match old_backends.get(&b.address) {
                    Some(&id) => id,
                    None => backend_ids.alloc().ok_or_else(|| {
                        anyhow!("no backend id left (at most {MAX_BACKENDS} backends)")
                    })?,
                };
                ids.push(id);
            }
            let (id, table_offset) = match before {
                Some(b) if b.info.table_size == cfg.table_size => (b.info.id, b.info.table_offset),
                Some(b) => {
                    let offset = slots
                        .alloc(cfg.table_size)
                        .ok_or_else(|| no_room(cfg, &new.agent))?;
                    slots.release(b.info.table_offset, b.info.table_size);
                    (b.info.id, offset)
                }
                None => {
                    let id = vip_ids
                        .alloc()
                        .ok_or_else(|| anyhow!("no VIP id left (at most {MAX_VIPS} VIPs)"))?;
                    let offset = slots
                        .alloc(cfg.table_size)
                        .ok_or_else(|| no_room(cfg, &new.agent))?;
                    (id, offset)
                }
            };
            let info = VipInfo {
                id,
                mode: match cfg.mode {
                    ForwardingMode::Dr => MODE_DR,
                    ForwardingMode::Nat => MODE_NAT,
                },
                table_offset,
                table_size: cfg.table_size,
                flags: if cfg.source_affinity {
                    VIP_F_SOURCE_AFFINITY
                } else {
                    0
                } | match cfg.all_down {
                    AllDown::Drop => 0,
                    AllDown::Pass => VIP_F_ALL_DOWN_PASS,
                },
            };
            let key = VipKey {
                addr: addr::from_ip(cfg.address),
                port_be: cfg.port.to_be(),
                proto: cfg.protocol.number(),
                _pad: 0,
            };
            vips.push(VipState {
                config: cfg.clone(),
                key,
                info,
                backend_ids: ids,
            });
        }
        Ok(Placement {
            vip_ids,
            backend_ids,
            slots,
            vips,
        })
    }

    fn write_settings(&mut self) -> anyhow::Result<()> {
        let a = &self.config.agent;
        self.dp.set_settings(Settings {
            hash_seed: a.hash_seed,
            tcp_idle_ns: a.tcp_idle_timeout.as_nanos().min(u64::MAX as u128) as u64,
            udp_idle_ns: a.udp_idle_timeout.as_nanos().min(u64::MAX as u128) as u64,
            ..Settings::default()
        })
    }

    /// Writes a VIP's backend entries and its Maglev table as the backends' states say:
    /// a down backend is absent (its pinned flows re-hash at their next packet) and out of
    /// the table; a drained one stays present (its flows stay) but out of the table.
    /// Returns the table slots written.
    fn sync_vip(&mut self, v: &VipState, seed: u32) -> anyhow::Result<usize> {
        for (b, &id) in v.config.backends.iter().zip(&v.backend_ids) {
            let entry = match self.state_of(id) {
                HealthState::Down => Backend::default(),
                _ => self.backend_entry(b.address, b.port_for(v.config.port)),
            };
            self.dp.set_backend(id, entry)?;
        }
        let started = Instant::now();
        let table = maglev_table(v, seed, |id| self.state_of(id) == HealthState::Up);
        self.maglev_builds.observe(started.elapsed());
        self.dp.write_table(v.info.table_offset, &table)
    }

    fn state_of(&self, id: u32) -> HealthState {
        self.states.get(&id).copied().unwrap_or(HealthState::Up)
    }

    /// Registers (or re-registers, keeping their state) the backends of a VIP with a health
    /// check; a VIP without one has its backends unregistered and considered up.
    fn register_health_checks(&mut self, v: &VipState) -> anyhow::Result<()> {
        let spec = match &v.config.health_check {
            Some(hc) => Some(Arc::new(hc.to_spec().map_err(|issues| {
                anyhow!(
                    "health check of VIP {}: {}",
                    v.config.name,
                    issues
                        .iter()
                        .map(|i| format!("{}: {}", i.key, i.message))
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            })?)),
            None => None,
        };
        for (b, &id) in v.config.backends.iter().zip(&v.backend_ids) {
            match &spec {
                Some(spec) => {
                    let target = std::net::SocketAddr::new(b.address, b.port_for(v.config.port));
                    self.health
                        .add_backend(BackendId(id as u64), target, spec.clone())
                        .map_err(|e| anyhow!("health checker: {e}"))?;
                }
                None => {
                    let _ = self.health.remove_backend(BackendId(id as u64));
                    self.states.remove(&id);
                }
            }
        }
        Ok(())
    }

    /// Applies a health (or forced) state change: the backend leaves or rejoins its VIP's
    /// table; a down backend's flows move at their next packet.
    pub fn on_health(&mut self, t: &Transition) -> anyhow::Result<()> {
        let Ok(id) = u32::try_from(t.backend.0) else {
            return Ok(());
        };
        let Some(vi) = self.vips.iter().position(|v| v.backend_ids.contains(&id)) else {
            return Ok(()); // removed meanwhile
        };
        let v = self.vips[vi].clone();
        let address = v.config.backends[v
            .backend_ids
            .iter()
            .position(|&b| b == id)
            .expect("found above")]
        .address;
        match t.to {
            HealthState::Up => {
                info!(vip = %v.config.name, backend = %address, "backend up: {}", t.reason)
            }
            _ => {
                warn!(vip = %v.config.name, backend = %address, state = %t.to, "backend {}: {}", t.to, t.reason)
            }
        }
        if t.to == HealthState::Up {
            self.states.remove(&id);
        } else {
            self.states.insert(id, t.to);
        }
        let written = self.sync_vip(&v, self.config.agent.hash_seed)?;
        if !self.has_usable_backend(&v) {
            warn!(vip = %v.config.name, all_down = %v.config.all_down,
                  "no backend of this VIP is usable: its packets follow its all_down policy");
        }
        tracing::debug!(slots = written, "table updated after a health change");
        Ok(())
    }

    /// Names of the VIPs that have no usable backend (none up with a weight above 0): what
    /// their `all_down` policy applies to, and what VRRP tracking follows.
    pub fn vips_without_backend(&self) -> HashSet<String> {
        self.vips
            .iter()
            .filter(|v| !self.has_usable_backend(v))
            .map(|v| v.config.name.clone())
            .collect()
    }

    /// Whether some backend of `v` is up with a weight above 0.
    fn has_usable_backend(&self, v: &VipState) -> bool {
        v.config
            .backends
            .iter()
            .zip(&v.backend_ids)
            .any(|(b, &id)| self.state_of(id) == HealthState::Up && b.effective_weight() > 0)
    }

    /// The backend id for `address` in VIP `vip` (name or ADDRESS:PORT/PROTOCOL), and
    /// whether that VIP has a health check.
    pub fn backend_id(&self, vip: &str, address: IpAddr) -> Result<(u32, bool), String> {
        let i = edit::find_vip(&self.config, vip)?;
        let v = &self.vips[i];
        let j = v
            .config
            .backends
            .iter()
            .position(|b| b.address == address)
            .ok_or_else(|| format!("VIP {} has no backend {address}", v.config.name))?;
        Ok((v.backend_ids[j], v.config.health_check.is_some()))
    }

    /// Forces a backend of a VIP without health checks (with checks, the scheduler owns
    /// forced states and reports them as transitions).
    pub fn force_unchecked(&mut self, id: u32, forced: Option<Forced>) -> anyhow::Result<()> {
        let from = self.state_of(id);
        let to = forced.map(HealthState::from).unwrap_or(HealthState::Up);
        let reason = forced
            .map(HealthReason::Forced)
            .unwrap_or(HealthReason::ForceCleared);
        self.on_health(&Transition {
            backend: BackendId(id as u64),
            from,
            to,
            reason,
        })
    }

    /// Backend id → (VIP name, address), for naming backends in health reports.
    pub fn backend_names(&self) -> HashMap<u32, (String, IpAddr)> {
        self.vips
            .iter()
            .flat_map(|v| {
                v.config
                    .backends
                    .iter()
                    .zip(&v.backend_ids)
                    .map(|(b, &id)| (id, (v.config.name.clone(), b.address)))
            })
            .collect()
    }

    fn backend_entry(&self, address: IpAddr, port: u16) -> Backend {
        let mac = self.macs.get(&address).copied();
        Backend {
            addr: addr::from_ip(address),
            mac: mac.unwrap_or_default(),
            port_be: port.to_be(),
            flags: BACKEND_F_PRESENT
                | if mac.is_some() {
                    BACKEND_F_MAC_VALID
                } else {
                    0
                },
        }
    }

    /// Distinct backend addresses whose MAC is unknown.
    pub fn unresolved(&self) -> Vec<IpAddr> {
        let mut ips: Vec<IpAddr> = self
            .backend_addresses()
            .into_iter()
            .filter(|ip| !self.macs.contains_key(ip))
            .collect();
        ips.dedup();
        ips
    }

    /// Distinct addresses of the backends whose MAC the program needs: those of DR VIPs
    /// (NAT routes through the kernel's FIB, which finds the next hop itself).
    pub fn backend_addresses(&self) -> Vec<IpAddr> {
        let mut ips: Vec<IpAddr> = self
            .vips
            .iter()
            .filter(|v| v.config.mode == ForwardingMode::Dr)
            .flat_map(|v| v.config.backends.iter().map(|b| b.address))
            .collect();
        ips.sort();
        ips.dedup();
        ips
    }

    /// Records the kernel's current MAC for `ip`; rewrites the backend entries only when
    /// it changed. A neighbour that lost its address keeps the last known MAC: traffic
    /// keeps flowing while the kernel re-resolves.
    pub fn on_neighbour(&mut self, ip: IpAddr, mac: Option<[u8; 6]>) -> anyhow::Result<()> {
        let Some(mac) = mac else { return Ok(()) };
        let old = self.macs.insert(ip, mac);
        if old == Some(mac) {
            return Ok(());
        }
        match old {
            None => info!(backend = %ip, mac = %format_mac(&mac), "backend MAC resolved"),
            Some(old) => {
                warn!(backend = %ip, old = %format_mac(&old), new = %format_mac(&mac), "backend MAC changed")
            }
        }
        let entries: Vec<(u32, u16)> = self
            .vips
            .iter()
            .flat_map(|v| {
                v.config
                    .backends
                    .iter()
                    .zip(&v.backend_ids)
                    .filter(|(b, _)| b.address == ip)
                    .map(|(b, &id)| (id, b.port_for(v.config.port)))
            })
            .collect();
        for (id, port) in entries {
            if self.state_of(id) != HealthState::Down {
                self.dp.set_backend(id, self.backend_entry(ip, port))?;
            }
        }
        Ok(())
    }

    pub fn attached(&self) -> bool {
        self.dp.attached_ifindex().is_some()
    }

    pub fn attach(&mut self) -> anyhow::Result<()> {
        if self.attached() {
            return Ok(());
        }
        self.dp
            .attach(self.link.index, self.config.agent.xdp_mode)?;
        for (name, l) in self.config.agent.nat_interfaces.iter().zip(&self.nat_links) {
            if let Err(e) = self.dp.attach_also(l.index, self.config.agent.xdp_mode) {
                let _ = self.dp.detach();
                return Err(e.context(format!("agent.nat_interfaces: {name}")));
            }
        }
        info!(interface = %self.config.agent.interface, ifindex = self.link.index, nat_interfaces = ?self.config.agent.nat_interfaces, mode = %self.config.agent.xdp_mode, "XDP program attached");
        Ok(())
    }

    pub fn detach(&mut self) -> anyhow::Result<()> {
        if self.dp.attached_ifindex().is_some() {
            self.dp.detach()?;
            info!(interface = %self.config.agent.interface, "XDP program detached");
        }
        Ok(())
    }

    /// Answers a control request. Every mutation is planned and validated in full before
    /// anything is written, so a refused request leaves the state exactly as it was.
    pub fn handle(&mut self, command: &Command) -> Response {
        let vip = |v: &String| v.clone();
        let edit = match command {
            Command::Status => return Response::ok(self.status()),
            Command::Stats => {
                return self.stats().map_or_else(
                    |e| Response::err(format!("reading counters: {e:#}")),
                    Response::ok,
                )
            }
            Command::Reload => {
                return self
                    .reload("lbctl reload")
                    .map_or_else(Response::err, Response::ok)
            }
            Command::VipList => return Response::ok(&self.config.vips),
            Command::VipShow { vip } => {
                return self.vip_show(vip).map_or_else(Response::err, Response::ok)
            }
            Command::BackendList { vip } => {
                return self
                    .vip_show(vip)
                    .map_or_else(Response::err, |s| Response::ok(s.backends));
            }
            Command::ConfigShow => {
                return Response::ok(serde_json::json!({ "toml": config::to_toml(&self.config) }))
            }
            Command::ConfigSave { path } => {
                return self
                    .config_save(path.as_deref())
                    .map_or_else(Response::err, Response::ok)
            }
            Command::State => {
                return match self.dp.snapshot() {
                    Ok(maps) => Response::ok(
                        serde_json::json!({ "config": config::to_toml(&self.config), "maps": maps }),
                    ),
                    Err(e) => Response::err(format!("reading maps: {e:#}")),
                };
            }
            Command::BackendUp { .. }
            | Command::BackendDown { .. }
            | Command::BackendAuto { .. }
            | Command::Health => {
                return Response::err("health commands are handled by lbd's main loop");
            }
            Command::VipAdd { vip } => Edit::VipAdd(vip.clone()),
            Command::VipDel { vip: v } => Edit::VipDel { vip: vip(v) },
            Command::BackendAdd {
                vip: v,
                address,
                weight,
                port,
            } => Edit::BackendAdd {
                vip: vip(v),
                address: *address,
                weight: *weight,
                port: *port,
            },
            Command::BackendDel { vip: v, address } => Edit::BackendDel {
                vip: vip(v),
                address: *address,
            },
            Command::BackendWeight {
                vip: v,
                address,
                weight,
            } => Edit::BackendWeight {
                vip: vip(v),
                address: *address,
                weight: *weight,
            },
            Command::BackendDrain { vip: v, address } => Edit::BackendDrain {
                vip: vip(v),
                address: *address,
                drain: true,
            },
            Command::BackendUndrain { vip: v, address } => Edit::BackendDrain {
                vip: vip(v),
                address: *address,
                drain: false,
            },
        };
        let result = edit::apply(&self.config, &edit)
            .and_then(|new| self.apply(new).map_err(|e| format!("{e:#}")));
        match result {
            Ok(summary) => {
                info!(?edit, ?summary, "runtime change applied (not saved: `lbctl config save` keeps it across restarts)");
                Response::ok(summary)
            }
            Err(e) => Response::err(format!("{e}; nothing was changed")),
        }
    }

    /// Re-reads the config file and applies the difference; on any error nothing changes
    /// and the error says why (with every config problem located). The outcome is logged
    /// once, with `trigger` (what asked for the reload).
    pub fn reload(&mut self, trigger: &str) -> Result<ApplySummary, String> {
        let result = config::load(&self.config_path)
            .map_err(|e| format!("{e}reload refused: the running configuration is unchanged"))
            .and_then(|config| {
                self.apply(config)
                    .map_err(|e| format!("reload refused: {e:#}"))
            });
        match &result {
            Ok(summary) => info!(
                trigger,
                ?summary,
                "configuration reloaded from {}",
                self.config_path.display()
            ),
            Err(e) => warn!(trigger, "{e}"),
        }
        result
    }

    fn config_save(&self, path: Option<&Path>) -> Result<serde_json::Value, String> {
        let path = path.unwrap_or(&self.config_path);
        let text = config::to_toml(&self.config);
        // Write beside and rename: a crash mid-write never leaves half a config.
        let tmp = path.with_extension("toml.tmp");
        std::fs::write(&tmp, &text)
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        info!("effective configuration saved to {}", path.display());
        Ok(serde_json::json!({ "path": path, "bytes": text.len() }))
    }

    fn vip_show(&self, selector: &str) -> Result<VipStats, String> {
        let i = edit::find_vip(&self.config, selector)?;
        let stats = self
            .stats()
            .map_err(|e| format!("reading counters: {e:#}"))?;
        Ok(stats
            .vips
            .into_iter()
            .nth(i)
            .expect("stats list every VIP in config order"))
    }

    pub fn status(&self) -> StatusReport {
        StatusReport {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            interface: self.config.agent.interface.clone(),
            ifindex: self.link.index,
            xdp_mode: self.config.agent.xdp_mode.to_string(),
            attached: self.dp.attached_ifindex().is_some(),
            uptime_secs: self.started.elapsed().as_secs(),
            vips: self.vips.len(),
            backends: self.vips.iter().map(|v| v.backend_ids.len()).sum(),
            unresolved_backends: self.unresolved().len(),
            adopted: self.dp.adoption().clone(),
            map_writes: self.dp.writes(),
            vrrp: Vec::new(),
        }
    }

    pub fn stats(&self) -> anyhow::Result<StatsReport> {
        self.stats_with_flows(&self.dp.flows_per_backend()?)
    }

    /// [`Agent::stats`] with flow-table entries per backend id counted by the caller
    /// (from a [`Agent::flow_reader`], off the agent's loop).
    pub fn stats_with_flows(&self, flows: &HashMap<u32, u64>) -> anyhow::Result<StatsReport> {
        let mut vips = Vec::with_capacity(self.vips.len());
        for v in &self.vips {
            let c = self.dp.vip_counter(v.info.id)?;
            let mut backends = Vec::new();
            for (b, &id) in v.config.backends.iter().zip(&v.backend_ids) {
                let bc = self.dp.backend_counter(id)?;
                backends.push(BackendStats {
                    address: b.address,
                    port: (v.config.mode == ForwardingMode::Nat).then(|| b.port_for(v.config.port)),
                    weight: b.weight,
                    drain: b.drain,
                    state: self.state_of(id).to_string(),
                    active_flows: flows.get(&id).copied().unwrap_or(0),
                    mac: self.macs.get(&b.address).map(format_mac),
                    packets: bc.packets,
                    bytes: bc.bytes,
                });
            }
            vips.push(VipStats {
                name: v.config.name.clone(),
                address: v.config.address,
                port: v.config.port,
                protocol: v.config.protocol.to_string(),
                packets: c.packets,
                bytes: c.bytes,
                backends,
            });
        }
        let counters = self.dp.reason_counters()?;
        let mut verdicts: Vec<VerdictStats> = Vec::new();
        for (r, c) in &counters {
            let name = format!("{:?}", r.verdict()).to_lowercase();
            match verdicts.iter_mut().find(|v| v.verdict == name) {
                Some(v) => {
                    v.packets += c.packets;
                    v.bytes += c.bytes;
                }
                None => verdicts.push(VerdictStats {
                    verdict: name,
                    packets: c.packets,
                    bytes: c.bytes,
                }),
            }
        }
        let reasons = counters
            .into_iter()
            .map(|(r, c)| ReasonStats {
                reason: r.name().to_owned(),
                verdict: format!("{:?}", r.verdict()).to_lowercase(),
                description: r.describe().to_owned(),
                packets: c.packets,
                bytes: c.bytes,
            })
            .collect();
        Ok(StatsReport {
            vips,
            verdicts,
            reasons,
            flow_cache: FlowCacheStats {
                hits: self.dp.flow_cache_hits()?,
                slots_per_cpu: self.dp.flow_cache_slots(),
            },
        })
    }
}

/// VRRP decides when this node serves: the program is attached while at least one
/// instance is master.
impl crate::vrrp::instance::Serving for Agent {
    fn set_serving(&mut self, on: bool) -> anyhow::Result<()> {
        if on {
            self.attach()
        } else {
            self.detach()
        }
    }

    fn serving(&self) -> bool {
        self.attached()
    }
}

/// The VIP's Maglev table as backend ids; backends for which `in_table` is false (down,
/// drained by health) get no slots.
fn maglev_table(v: &VipState, seed: u32, in_table: impl Fn(u32) -> bool) -> Vec<u32> {
    let set: Vec<(BackendKey, u32)> = v
        .config
        .backends
        .iter()
        .zip(&v.backend_ids)
        .map(|(b, &id)| {
            let weight = if in_table(id) {
                b.effective_weight()
            } else {
                0
            };
            (
                BackendKey {
                    address: b.address,
                    port: b.port_for(v.config.port),
                },
                weight,
            )
        })
        .collect();
    maglev::build(&set, v.info.table_size, seed)
        .into_iter()
        .map(|i| {
            if i == maglev::EMPTY {
                NO_BACKEND
            } else {
                v.backend_ids[i as usize]
            }
        })
        .collect()
}

/// A backend as an adopted map entry describes it, within `vip`.
fn backend_config(vip: &VipConfig, b: &Backend) -> BackendConfig {
    let port = u16::from_be(b.port_be);
    BackendConfig {
        address: addr::to_ip(b.addr),
        port: (vip.mode == ForwardingMode::Nat && port != vip.port).then_some(port),
        weight: 1,
        drain: false,
    }
}

fn no_room(v: &VipConfig, agent: &AgentConfig) -> anyhow::Error {
    anyhow!(
        "no room for VIP {}'s table of {} slots in agent.table_capacity = {}; raise table_capacity (needs a restart) or lower table_size",
        v.name,
        v.table_size,
        agent.table_capacity
    )
}

/// Keys fixed at load or attach time: changing them needs a restart.
fn check_live_agent_keys(old: &AgentConfig, new: &AgentConfig) -> anyhow::Result<()> {
    let fixed = [
        ("interface", old.interface != new.interface),
        ("xdp_mode", old.xdp_mode != new.xdp_mode),
        ("control_socket", old.control_socket != new.control_socket),
        ("pin_dir", old.pin_dir != new.pin_dir),
        ("control_group", old.control_group != new.control_group),
        ("table_capacity", old.table_capacity != new.table_capacity),
        (
            "flow_table_size",
            old.flow_table_size != new.flow_table_size,
        ),
        (
            "flow_cache_size",
            old.flow_cache_size != new.flow_cache_size,
        ),
        ("xdp_on_backup", old.xdp_on_backup != new.xdp_on_backup),
        ("nat_interfaces", old.nat_interfaces != new.nat_interfaces),
        ("metrics_listen", old.metrics_listen != new.metrics_listen),
    ];
    let changed: Vec<&str> = fixed.iter().filter(|(_, c)| *c).map(|(k, _)| *k).collect();
    if !changed.is_empty() {
        bail!(
            "agent.{} cannot change while lbd runs; nothing was applied. Restart lbd to change {}",
            changed.join(", agent."),
            if changed.len() == 1 { "it" } else { "them" }
        );
    }
    Ok(())
}

/// NAT VIPs need the kernel to forward: the program routes with the FIB, which refuses
/// when forwarding is off (and hands the packet to the kernel, which would not forward it
/// either). lbd does not turn forwarding on itself: it changes how the whole host treats
/// packets (for IPv6 it also stops accepting router advertisements), so the operator
/// decides. Checked when a config with a NAT VIP of a family is applied whose previous
/// config had none of that family (at start, reload, `lbctl vip add`).
fn check_forwarding(new: &Config, old: &Config) -> anyhow::Result<()> {
    let nat_families = |c: &Config| -> (bool, bool) {
        let nat = c.vips.iter().filter(|v| v.mode == ForwardingMode::Nat);
        let v4 = nat.clone().any(|v| v.address.is_ipv4());
        let v6 = nat.clone().any(|v| v.address.is_ipv6());
        (v4, v6)
    };
    let (new4, new6) = nat_families(new);
    let (old4, old6) = nat_families(old);
    for (wanted, had, sysctl) in [
        (new4, old4, "net.ipv4.ip_forward"),
        (new6, old6, "net.ipv6.conf.all.forwarding"),
    ] {
        if !wanted || had {
            continue;
        }
        let path = format!("/proc/sys/{}", sysctl.replace('.', "/"));
        match std::fs::read_to_string(&path) {
            Ok(v) if v.trim() != "0" => {}
            Ok(_) => bail!(
                "NAT VIPs need IP forwarding, and {sysctl} is 0; nothing was applied. Turn it on (`sysctl -w {sysctl}=1`, and in /etc/sysctl.d to keep it) and try again"
            ),
            Err(e) => bail!("NAT VIPs need IP forwarding, and {path} cannot be read ({e}); nothing was applied"),
        }
    }
    Ok(())
}
