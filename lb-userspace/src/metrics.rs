//! Prometheus metrics: what `GET /metrics` answers (every metric is described in
//! `docs/metrics.md`).
//!
//! A scrape reads nothing by itself. The HTTP server ([`http`]) asks lbd's loop, which owns
//! the agent, for a [`Snapshot`] built by [`gather`] from the same reports the control socket
//! gives (`stats`, `status`, `health`: the counters are read from the maps exactly as
//! `lbctl stats` reads them), plus the live histograms of Maglev builds and health-check
//! durations. [`render`] turns a snapshot into the OpenMetrics text, without IO, so the
//! format is unit-tested on made-up snapshots.
//!
//! The flow table is the exception: walking it costs a system call per entry (about a second
//! per million), and lbd's loop also runs VRRP, whose timers must not wait for a scrape. So
//! the loop hands out a reader with its own file descriptor, and [`Snapshot::count_flows`]
//! walks the table on a blocking thread.

use std::{fmt, net::IpAddr};

use prometheus_client::{
    collector::Collector,
    encoding::DescriptorEncoder,
    encoding::{EncodeMetric, MetricEncoder, NoLabelSet},
    metrics::{counter::ConstCounter, gauge::ConstGauge, MetricType},
    registry::{Registry, Unit},
};

use crate::{
    agent::Agent,
    control::{StatsReport, VrrpStatus},
    dataplane::FlowReader,
    health::{Health, HealthHandle},
    vrrp::instance::Vrrp,
};

pub mod http;

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Everything one scrape shows.
#[derive(Debug)]
pub struct Snapshot {
    /// As `lbctl stats` gets it: per VIP, backend (with state and flow-table entries) and
    /// reason.
    pub stats: StatsReport,
    pub attached: bool,
    pub flow_table_size: u32,
    pub vrrp: Vec<VrrpStatus>,
    /// Backends of VIPs with a health check.
    pub checks: Vec<CheckedBackend>,
    pub maglev_builds: Durations,
    /// Backend ids, parallel to `stats.vips[i].backends`; with `flows`, what
    /// [`Snapshot::count_flows`] fills `active_flows` in with.
    pub backend_ids: Vec<Vec<u32>>,
    pub flows: Option<FlowReader>,
    /// Every flow-table entry, those of removed backends included; set by
    /// [`Snapshot::count_flows`]. Without it, the entries of configured backends are shown.
    pub flow_entries: Option<u64>,
}

impl Snapshot {
    /// Counts each backend's flow-table entries into `stats`, off the calling thread.
    pub async fn count_flows(mut self) -> Result<Snapshot, String> {
        let Some(reader) = self.flows.take() else {
            return Ok(self);
        };
        let counts = tokio::task::spawn_blocking(move || reader.flows_per_backend())
            .await
            .map_err(|e| format!("counting flows: {e}"))?
            .map_err(|e| format!("counting flows: {e:#}"))?;
        self.flow_entries = Some(counts.values().sum());
        for (vip, ids) in self.stats.vips.iter_mut().zip(&self.backend_ids) {
            for (b, id) in vip.backends.iter_mut().zip(ids) {
                b.active_flows = counts.get(id).copied().unwrap_or(0);
            }
        }
        Ok(self)
    }
}

/// A health-checked backend.
#[derive(Debug)]
pub struct CheckedBackend {
    pub vip: String,
    pub backend: IpAddr,
    /// What the checks say, whatever an operator forced.
    pub healthy: bool,
    pub checks: u64,
    pub consecutive_failures: u32,
    /// None until its first check returned.
    pub durations: Option<Durations>,
}

/// Builds a snapshot, flows not counted yet ([`Snapshot::count_flows`]). Runs on lbd's
/// loop, which owns the agent: it reads, never writes.
pub async fn gather(agent: &Agent, vrrp: &Vrrp, health: &HealthHandle) -> Result<Snapshot, String> {
    let stats = agent
        .stats_with_flows(&Default::default())
        .map_err(|e| format!("reading counters: {e:#}"))?;
    let flows = agent
        .flow_reader()
        .map_err(|e| format!("opening the flow table: {e:#}"))?;
    let names = agent.backend_names();
    // Copied before the health snapshot: a check is timed after it is counted, so a
    // histogram never shows more checks than `lb_health_checks_total`.
    let mut durations = health.check_durations();
    let statuses = health
        .snapshot()
        .await
        .map_err(|e| format!("health checker: {e}"))?;
    let checks = statuses
        .into_iter()
        .filter_map(|s| {
            let (vip, backend) = names.get(&u32::try_from(s.id.0).ok()?)?.clone();
            Some(CheckedBackend {
                vip,
                backend,
                healthy: s.health == Health::Up,
                checks: s.checks,
                consecutive_failures: s.failures,
                durations: durations.remove(&s.id),
            })
        })
        .collect();
    Ok(Snapshot {
        stats,
        attached: agent.attached(),
        flow_table_size: agent.config().agent.flow_table_size,
        vrrp: vrrp.status(),
        checks,
        maglev_builds: agent.maglev_builds().clone(),
        backend_ids: agent.backend_ids(),
        flows: Some(flows),
        flow_entries: None,
    })
}

/// A histogram of durations as plain data: a snapshot is a copy, so what a scrape shows is
/// what it was when gathered (a check counted in `lb_health_checks_total` and its duration
/// come from the same instant).
#[derive(Clone, Debug, PartialEq)]
pub struct Durations {
    /// (upper bound in seconds, observations in this bucket only); the last bound is +Inf.
    buckets: Vec<(f64, u64)>,
    sum: f64,
    count: u64,
}

impl Durations {
    /// Buckets with these upper bounds (seconds, ascending), and one for the rest.
    pub fn new(bounds: impl IntoIterator<Item = f64>) -> Durations {
        let buckets = bounds
            .into_iter()
            .filter(|b| b.is_finite())
            .chain([f64::INFINITY])
            .map(|b| (b, 0))
            .collect();
        Durations {
            buckets,
            sum: 0.0,
            count: 0,
        }
    }

    pub fn observe(&mut self, d: std::time::Duration) {
        let secs = d.as_secs_f64();
        self.sum += secs;
        self.count += 1;
        if let Some(b) = self.buckets.iter_mut().find(|(bound, _)| secs <= *bound) {
            b.1 += 1;
        }
    }

    pub fn count(&self) -> u64 {
        self.count
    }
}

impl EncodeMetric for Durations {
    fn encode(&self, mut encoder: MetricEncoder) -> fmt::Result {
        encoder.encode_histogram::<NoLabelSet>(self.sum, self.count, &self.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// The OpenMetrics text exposition of `snapshot`, `# EOF` included.
pub fn render(snapshot: Snapshot) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(snapshot));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)
        .expect("writing to a String cannot fail");
    out
}

type Labels = Vec<(&'static str, String)>;

/// One metric family: its samples, each a label set and a value.
fn family<V>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric_type: MetricType,
    samples: impl IntoIterator<Item = (Labels, V)>,
    encode: impl Fn(V, prometheus_client::encoding::MetricEncoder) -> fmt::Result,
) -> fmt::Result {
    let mut m = encoder.encode_descriptor(name, help, None, metric_type)?;
    let mut samples = samples.into_iter().peekable();
    if let Some((labels, _)) = samples.peek() {
        if labels.is_empty() {
            // Through a family, an empty label set would be written as `name{}`.
            let (_, value) = samples.next().expect("peeked");
            return encode(value, m);
        }
    }
    for (labels, value) in samples {
        encode(value, m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counters(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, u64)>,
) -> fmt::Result {
    family(encoder, name, help, MetricType::Counter, samples, |v, m| {
        ConstCounter::new(v).encode(m)
    })
}

fn gauges(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, i64)>,
) -> fmt::Result {
    family(encoder, name, help, MetricType::Gauge, samples, |v, m| {
        ConstGauge::new(v).encode(m)
    })
}

fn labels<const N: usize>(pairs: [(&'static str, String); N]) -> Labels {
    pairs.into()
}

/// States a backend can be in (`lb_backend_state`), and a VRRP instance
/// (`lb_vrrp_state`): every one is exported, 1 for the current one, so a query needs no
/// knowledge of which exist.
const BACKEND_STATES: [&str; 3] = ["up", "down", "drain"];
const VRRP_STATES: [&str; 3] = ["initialize", "backup", "master"];

impl Collector for Snapshot {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let s = &self.stats;
        let vip = |name: &String| labels([("vip", name.clone())]);
        let backends = || {
            s.vips.iter().flat_map(|v| {
                v.backends.iter().map(move |b| {
                    (
                        labels([("vip", v.name.clone()), ("backend", b.address.to_string())]),
                        b,
                    )
                })
            })
        };

        gauges(
            &mut e,
            "lb_xdp_attached",
            "1 while the XDP program is attached (always, without VRRP; while master, with it)",
            [(Labels::new(), i64::from(self.attached))],
        )?;
        counters(
            &mut e,
            "lb_vip_packets",
            "Packets the program counted for the VIP",
            s.vips.iter().map(|v| (vip(&v.name), v.packets)),
        )?;
        counters(
            &mut e,
            "lb_vip_bytes",
            "Bytes of the packets counted in lb_vip_packets_total",
            s.vips.iter().map(|v| (vip(&v.name), v.bytes)),
        )?;
        gauges(
            &mut e,
            "lb_vip_flows",
            "Flow-table entries pinned to the VIP's backends",
            s.vips.iter().map(|v| {
                let flows: u64 = v.backends.iter().map(|b| b.active_flows).sum();
                (vip(&v.name), clamp(flows))
            }),
        )?;
        counters(
            &mut e,
            "lb_backend_packets",
            "Packets the program sent to the backend",
            backends().map(|(l, b)| (l, b.packets)),
        )?;
        counters(
            &mut e,
            "lb_backend_bytes",
            "Bytes of the packets counted in lb_backend_packets_total",
            backends().map(|(l, b)| (l, b.bytes)),
        )?;
        gauges(
            &mut e,
            "lb_backend_flows",
            "Flow-table entries pinned to the backend",
            backends().map(|(l, b)| (l, clamp(b.active_flows))),
        )?;
        gauges(
            &mut e,
            "lb_backend_weight",
            "Configured weight of the backend (kept while it is drained)",
            backends().map(|(l, b)| (l, i64::from(b.weight))),
        )?;
        gauges(
            &mut e,
            "lb_backend_state",
            "1 for the backend's current state (up, down, drain), 0 for the others",
            backends().flat_map(|(l, b)| {
                let current = backend_state(b);
                BACKEND_STATES.iter().map(move |&state| {
                    let mut l = l.clone();
                    l.push(("state", state.to_owned()));
                    (l, i64::from(current == state))
                })
            }),
        )?;
        counters(
            &mut e,
            "lb_packets",
            "Packets the program handled, by the reason of its verdict (docs/metrics.md lists them)",
            s.reasons.iter().map(|r| {
                (
                    labels([("reason", r.reason.clone()), ("verdict", r.verdict.clone())]),
                    r.packets,
                )
            }),
        )?;
        counters(
            &mut e,
            "lb_bytes",
            "Bytes of the packets counted in lb_packets_total",
            s.reasons.iter().map(|r| {
                (
                    labels([("reason", r.reason.clone()), ("verdict", r.verdict.clone())]),
                    r.bytes,
                )
            }),
        )?;
        let entries: u64 = self.flow_entries.unwrap_or_else(|| {
            s.vips
                .iter()
                .flat_map(|v| &v.backends)
                .map(|b| b.active_flows)
                .sum()
        });
        gauges(
            &mut e,
            "lb_flow_table_entries",
            "Entries in the flow table",
            [(Labels::new(), clamp(entries))],
        )?;
        gauges(
            &mut e,
            "lb_flow_table_capacity",
            "Entries the flow table holds (agent.flow_table_size)",
            [(Labels::new(), i64::from(self.flow_table_size))],
        )?;
        counters(
            &mut e,
            "lb_flow_cache_hits",
            "DR packets forwarded from the per-CPU flow cache, without the flow table",
            [(Labels::new(), s.flow_cache.hits)],
        )?;
        gauges(
            &mut e,
            "lb_flow_cache_slots",
            "Slots of the flow cache per CPU (agent.flow_cache_size)",
            [(Labels::new(), i64::from(s.flow_cache.slots_per_cpu))],
        )?;
        let m = e.encode_descriptor(
            "lb_maglev_build_duration",
            "Time to build one VIP's Maglev lookup table",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        self.maglev_builds.encode(m)?;

        let checked = |c: &CheckedBackend| {
            labels([("vip", c.vip.clone()), ("backend", c.backend.to_string())])
        };
        gauges(
            &mut e,
            "lb_health_check_up",
            "1 while the backend's health checks pass (rise/fall applied), whatever an operator forced",
            self.checks.iter().map(|c| (checked(c), i64::from(c.healthy))),
        )?;
        counters(
            &mut e,
            "lb_health_checks",
            "Health checks of the backend completed, timed out ones included",
            self.checks.iter().map(|c| (checked(c), c.checks)),
        )?;
        gauges(
            &mut e,
            "lb_health_check_consecutive_failures",
            "Failed health checks of the backend in a row (0 after a pass)",
            self.checks
                .iter()
                .map(|c| (checked(c), i64::from(c.consecutive_failures))),
        )?;
        let mut m = e.encode_descriptor(
            "lb_health_check_duration",
            "Time a health check took to return its result",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for c in &self.checks {
            if let Some(h) = &c.durations {
                h.encode(m.encode_family(&checked(c))?)?;
            }
        }

        // Not `instance`: Prometheus gives that label to every scrape target.
        let instance = |v: &VrrpStatus| labels([("vrrp_instance", v.name.clone())]);
        gauges(
            &mut e,
            "lb_vrrp_state",
            "1 for the VRRP instance's current state (initialize, backup, master), 0 for the others",
            self.vrrp.iter().flat_map(|v| {
                VRRP_STATES.iter().map(move |&state| {
                    (
                        labels([
                            ("vrrp_instance", v.name.clone()),
                            ("vrid", v.vrid.to_string()),
                            ("interface", v.interface.clone()),
                            ("state", state.to_owned()),
                        ]),
                        i64::from(v.state == state),
                    )
                })
            }),
        )?;
        gauges(
            &mut e,
            "lb_vrrp_priority",
            "The instance's priority in elections",
            self.vrrp
                .iter()
                .map(|v| (instance(v), i64::from(v.priority))),
        )?;
        counters(
            &mut e,
            "lb_vrrp_transitions",
            "Times the instance became master, or went from master to backup",
            self.vrrp.iter().flat_map(|v| {
                [("master", v.became_master), ("backup", v.became_backup)].map(|(to, n)| {
                    (
                        labels([("vrrp_instance", v.name.clone()), ("to", to.to_owned())]),
                        n,
                    )
                })
            }),
        )?;
        counters(
            &mut e,
            "lb_vrrp_adverts_sent",
            "VRRP adverts the instance sent (priority-0 ones included)",
            self.vrrp.iter().map(|v| (instance(v), v.adverts_sent)),
        )?;
        counters(
            &mut e,
            "lb_vrrp_adverts_received",
            "VRRP adverts the instance accepted (priority-0 ones included)",
            self.vrrp.iter().map(|v| (instance(v), v.adverts_received)),
        )?;
        counters(
            &mut e,
            "lb_vrrp_priority_zero_sent",
            "Priority-0 adverts (hand-over on stop) the instance sent",
            self.vrrp
                .iter()
                .map(|v| (instance(v), v.priority_zero_sent)),
        )?;
        counters(
            &mut e,
            "lb_vrrp_priority_zero_received",
            "Priority-0 adverts (a master stopping) the instance accepted",
            self.vrrp
                .iter()
                .map(|v| (instance(v), v.priority_zero_received)),
        )?;
        counters(
            &mut e,
            "lb_vrrp_adverts_invalid",
            "VRRP packets for the instance that were ignored, by reason (only reasons seen)",
            self.vrrp.iter().flat_map(|v| {
                v.ignored.iter().map(move |(reason, &n)| {
                    (
                        labels([
                            ("vrrp_instance", v.name.clone()),
                            ("reason", reason.clone()),
                        ]),
                        n,
                    )
                })
            }),
        )?;
        counters(
            &mut e,
            "lb_vrrp_address_list_mismatch",
            "Accepted adverts whose address list differs from the instance's (a configuration mismatch)",
            self.vrrp
                .iter()
                .map(|v| (instance(v), v.address_list_mismatch)),
        )?;
        Ok(())
    }
}

/// What the data plane does with the backend: `down` (health checks or the operator) wins,
/// then `drain`, whether from the config (`drain = true`, `lbctl backend drain`) or forced.
fn backend_state(b: &crate::control::BackendStats) -> &str {
    match b.state.as_str() {
        "down" => "down",
        _ if b.drain => "drain",
        other => other,
    }
}

/// Gauges are signed; a count past i64::MAX cannot happen, but must not wrap if it did.
fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
