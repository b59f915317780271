//! The agent core: the one owner of state. It holds the validated config, what it knows of
//! each backend (its resolved MAC), and the data plane, and it answers control requests.
//! Events (neighbour changes, control requests) come in from the IO loop in `lbd`.

use std::{net::IpAddr, time::Instant};

use anyhow::Context as _;
use lb_common::settings::Settings;
use tracing::{info, warn};

use crate::{
    config::Config,
    control::{
        BackendStats, Command, ReasonStats, Response, StatsReport, StatusReport, VerdictStats,
        VipStats,
    },
    dataplane::Dataplane,
    net::{format_mac, Link},
    plan::{self, VipPlan},
};

/// A backend as the agent tracks it.
#[derive(Clone, Debug)]
struct BackendState {
    id: u32,
    vip: usize,
    address: IpAddr,
    weight: u32,
    mac: Option<[u8; 6]>,
}

pub struct Agent {
    config: Config,
    link: Link,
    dp: Dataplane,
    vips: Vec<VipPlan>,
    backends: Vec<BackendState>,
    started: Instant,
}

impl Agent {
    /// Programs every map from `config` (the program is not attached yet).
    pub fn new(config: Config, link: Link, mut dp: Dataplane) -> anyhow::Result<Agent> {
        dp.set_settings(Settings {
            hash_seed: config.agent.hash_seed,
            _reserved: 0,
        })?;
        dp.set_iface(link.index, link.mac)?;
        let vips = plan::vips(&config);
        let mut backends = Vec::new();
        for vp in &vips {
            let vip = &config.vips[vp.index];
            for (b, &id) in vip.backends.iter().zip(&vp.backend_ids) {
                dp.set_backend(id, plan::backend_entry(b.address, vip.port, None))?;
                backends.push(BackendState {
                    id,
                    vip: vp.index,
                    address: b.address,
                    weight: b.weight,
                    mac: None,
                });
            }
            dp.write_table(vp.info.table_offset, &vp.table)?;
            dp.set_vip(vp.key, vp.info)
                .with_context(|| format!("adding VIP {}", vip.name))?;
            info!(vip = %vip.name, address = %vip.address, port = vip.port, protocol = %vip.protocol,
                  backends = vip.backends.len(), table_size = vp.info.table_size, "VIP configured");
        }
        Ok(Agent {
            config,
            link,
            dp,
            vips,
            backends,
            started: Instant::now(),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn ifindex(&self) -> u32 {
        self.link.index
    }

    /// Distinct backend addresses whose MAC is unknown.
    pub fn unresolved(&self) -> Vec<IpAddr> {
        let mut ips: Vec<IpAddr> = self
            .backends
            .iter()
            .filter(|b| b.mac.is_none())
            .map(|b| b.address)
            .collect();
        ips.sort();
        ips.dedup();
        ips
    }

    /// Distinct backend addresses.
    pub fn backend_addresses(&self) -> Vec<IpAddr> {
        let mut ips: Vec<IpAddr> = self.backends.iter().map(|b| b.address).collect();
        ips.sort();
        ips.dedup();
        ips
    }

    /// Records the kernel's current MAC for `ip`; rewrites the backend entries only when
    /// it changed. A neighbour that lost its address keeps the last known MAC: traffic
    /// keeps flowing while the kernel re-resolves.
    pub fn on_neighbour(&mut self, ip: IpAddr, mac: Option<[u8; 6]>) -> anyhow::Result<()> {
        let Some(mac) = mac else { return Ok(()) };
        for b in self
            .backends
            .iter_mut()
            .filter(|b| b.address == ip && b.mac != Some(mac))
        {
            let vip = &self.config.vips[b.vip];
            match b.mac {
                None => {
                    info!(backend = %ip, mac = %format_mac(&mac), vip = %vip.name, "backend MAC resolved")
                }
                Some(old) => {
                    warn!(backend = %ip, old = %format_mac(&old), new = %format_mac(&mac), vip = %vip.name, "backend MAC changed")
                }
            }
            self.dp
                .set_backend(b.id, plan::backend_entry(ip, vip.port, Some(mac)))?;
            b.mac = Some(mac);
        }
        Ok(())
    }

    pub fn attach(&mut self) -> anyhow::Result<()> {
        self.dp
            .attach(self.link.index, self.config.agent.xdp_mode)?;
        info!(interface = %self.config.agent.interface, ifindex = self.link.index, mode = %self.config.agent.xdp_mode, "XDP program attached");
        Ok(())
    }

    pub fn detach(&mut self) -> anyhow::Result<()> {
        if self.dp.attached_ifindex().is_some() {
            self.dp.detach()?;
            info!(interface = %self.config.agent.interface, "XDP program detached");
        }
        Ok(())
    }

    pub fn handle(&mut self, command: &Command) -> Response {
        match command {
            Command::Status => Response::ok(self.status()),
            Command::Stats => match self.stats() {
                Ok(s) => Response::ok(s),
                Err(e) => Response::err(format!("reading counters: {e:#}")),
            },
        }
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
            backends: self.backends.len(),
            unresolved_backends: self.backends.iter().filter(|b| b.mac.is_none()).count(),
        }
    }

    pub fn stats(&self) -> anyhow::Result<StatsReport> {
        let mut vips = Vec::with_capacity(self.vips.len());
        for vp in &self.vips {
            let vip = &self.config.vips[vp.index];
            let c = self.dp.vip_counter(vp.info.id)?;
            let mut backends = Vec::new();
            for b in self.backends.iter().filter(|b| b.vip == vp.index) {
                let bc = self.dp.backend_counter(b.id)?;
                backends.push(BackendStats {
                    address: b.address,
                    weight: b.weight,
                    mac: b.mac.as_ref().map(format_mac),
                    packets: bc.packets,
                    bytes: bc.bytes,
                });
            }
            vips.push(VipStats {
                name: vip.name.clone(),
                address: vip.address,
                port: vip.port,
                protocol: vip.protocol.to_string(),
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
        })
    }
}
