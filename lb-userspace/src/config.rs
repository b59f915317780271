//! The TOML configuration: schema, defaults and validation. Pure: it turns text into a
//! validated [`Config`] or into a list of [`Diagnostic`]s that each name the line, column
//! and key, so an operator can fix every problem in one pass.
//!
//! Every key is documented in `docs/config.md`.

use std::{
    collections::HashSet,
    fmt,
    net::{IpAddr, SocketAddr},
    ops::Range,
    path::{Path, PathBuf},
    time::Duration,
};

use crate::health::HealthCheckConfig;
use lb_common::{
    backend::{DEFAULT_TABLE_CAPACITY, MAX_BACKENDS},
    flow::{DEFAULT_FLOW_CACHE_SLOTS, DEFAULT_FLOW_CAPACITY},
    vip::MAX_VIPS,
};
use serde::{Deserialize, Serialize};
use serde_spanned::Spanned;
pub use vrrp::{VrrpAddress, VrrpConfig};

/// Upper bound of `agent.flow_cache_size`: 64 MiB per CPU.
const MAX_FLOW_CACHE_SLOTS: u32 = 1 << 20;

/// Default control socket path.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/lbd/lbd.sock";
/// Default directory (on bpffs) where the program's maps and links are pinned.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/lbd";
/// Default lookup-table size per VIP (a prime, as Maglev needs).
pub const DEFAULT_TABLE_SIZE: u32 = 65_537;
/// How long an idle TCP flow stays pinned to its backend (LVS's default for established
/// connections).
pub const DEFAULT_TCP_IDLE: Duration = Duration::from_secs(900);
/// The same for UDP (LVS's default).
pub const DEFAULT_UDP_IDLE: Duration = Duration::from_secs(300);

/// Largest backend weight accepted.
pub const MAX_WEIGHT: u32 = 10_000;

/// How the XDP program attaches.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// In the driver: fastest, what production NICs and veth support.
    #[default]
    Native,
    /// In the kernel's generic path: works on any interface, slower.
    Generic,
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
        })
    }
}

/// Whether a VRRP backup keeps the XDP program attached (`agent.xdp_on_backup`).
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum XdpOnBackup {
    /// Attached only while master, and early when a backup's master looks gone.
    #[default]
    Detached,
    /// Attached from start to stop: a takeover never waits for the kernel's attach.
    Attached,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ForwardingMode {
    /// Direct return: rewrite MACs only; backends hold the VIP on loopback.
    #[default]
    Dr,
    /// NAT: destination address and port become the backend's; its replies, routed back
    /// through this node, are translated back to the VIP.
    Nat,
}

impl fmt::Display for ForwardingMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ForwardingMode::Dr => "dr",
            ForwardingMode::Nat => "nat",
        })
    }
}

/// What a VIP's packets get while it has no usable backend (every backend down, drained
/// or of weight 0).
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AllDown {
    /// Dropped (`drop_no_backend`): clients time out and retry, as with no listener.
    #[default]
    Drop,
    /// Passed to the kernel (`pass_no_backend`): a local service on the VIP answers, or
    /// the kernel resets the connection, so clients fail fast.
    Pass,
}

impl fmt::Display for AllDown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AllDown::Drop => "drop",
            AllDown::Pass => "pass",
        })
    }
}

/// The validated configuration. Serializes back to the TOML it was read from (`lbctl
/// config save`), so `parse(&to_toml(c)) == c`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Config {
    pub agent: AgentConfig,
    #[serde(rename = "vip")]
    pub vips: Vec<VipConfig>,
    /// VRRP instances (`[[vrrp]]`). None: the program is attached at start and stays.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub vrrp: Vec<VrrpConfig>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AgentConfig {
    pub interface: String,
    pub xdp_mode: XdpMode,
    pub hash_seed: u32,
    pub control_socket: PathBuf,
    /// Where the maps and XDP links are pinned, so a restarted lbd adopts them.
    pub pin_dir: PathBuf,
    /// Group given read/write access to the control socket (mode 0660); none: 0600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_group: Option<String>,
    pub table_capacity: u32,
    pub flow_table_size: u32,
    /// Slots per CPU of the flow cache in front of the flow table (a power of two).
    pub flow_cache_size: u32,
    #[serde(with = "humantime_serde")]
    pub tcp_idle_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub udp_idle_timeout: Duration,
    pub xdp_on_backup: XdpOnBackup,
    /// Interfaces besides `interface` that NAT traffic enters and leaves by (the program is
    /// attached there too, to translate the backends' replies).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nat_interfaces: Vec<String>,
    /// Where `/metrics` is served over HTTP; none: not served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
}

/// Also deserialized, by `lbctl`, from the agent's `vip_list` reply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VipConfig {
    pub name: String,
    pub address: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
    pub mode: ForwardingMode,
    pub table_size: u32,
    pub source_affinity: bool,
    #[serde(default)]
    pub all_down: AllDown,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckConfig>,
    #[serde(rename = "backend")]
    pub backends: Vec<BackendConfig>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackendConfig {
    pub address: IpAddr,
    /// NAT only: the backend's port, if not the VIP's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    pub weight: u32,
    /// Drained: no new flows, established ones stay; `weight` is kept for undrain.
    pub drain: bool,
}

impl BackendConfig {
    /// The port traffic reaches the backend on: its own (NAT), else the VIP's.
    pub fn port_for(&self, vip_port: u16) -> u16 {
        self.port.unwrap_or(vip_port)
    }

    /// The weight Maglev uses: 0 while drained.
    pub fn effective_weight(&self) -> u32 {
        if self.drain {
            0
        } else {
            self.weight
        }
    }
}

// The raw, span-carrying shape of the file. Validation turns it into `Config`.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    agent: Spanned<RawAgent>,
    #[serde(default, rename = "vip")]
    vips: Vec<Spanned<RawVip>>,
    #[serde(default)]
    vrrp: Vec<Spanned<vrrp::RawVrrp>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    interface: Spanned<String>,
    #[serde(default)]
    xdp_mode: XdpMode,
    #[serde(default)]
    hash_seed: u32,
    #[serde(default)]
    control_socket: Option<PathBuf>,
    #[serde(default)]
    pin_dir: Option<PathBuf>,
    control_group: Option<Spanned<String>>,
    #[serde(default)]
    table_capacity: Option<Spanned<u32>>,
    #[serde(default)]
    flow_table_size: Option<Spanned<u32>>,
    #[serde(default)]
    flow_cache_size: Option<Spanned<u32>>,
    #[serde(default, with = "humantime_serde")]
    tcp_idle_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    udp_idle_timeout: Option<Duration>,
    #[serde(default)]
    xdp_on_backup: XdpOnBackup,
    #[serde(default)]
    nat_interfaces: Vec<Spanned<String>>,
    #[serde(default)]
    metrics_listen: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVip {
    #[serde(default)]
    name: Option<Spanned<String>>,
    address: Spanned<IpAddr>,
    port: Spanned<u16>,
    protocol: Protocol,
    #[serde(default)]
    mode: ForwardingMode,
    #[serde(default)]
    table_size: Option<Spanned<u32>>,
    #[serde(default)]
    source_affinity: bool,
    #[serde(default)]
    all_down: AllDown,
    #[serde(default)]
    health_check: Option<HealthCheckConfig>,
    #[serde(default, rename = "backend")]
    backends: Vec<Spanned<RawBackend>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    address: Spanned<IpAddr>,
    #[serde(default)]
    port: Option<Spanned<u16>>,
    #[serde(default)]
    weight: Option<Spanned<u32>>,
    #[serde(default)]
    drain: bool,
}

/// One problem in a config file, located for the operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub line: usize,
    pub column: usize,
    /// Dotted path of the offending key, e.g. `vip[1].port`; empty for syntax errors.
    pub key: String,
    pub message: String,
}

/// Every problem found in one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.diagnostics.len();
        writeln!(
            f,
            "{}: {n} error{} in configuration",
            self.file.display(),
            if n == 1 { "" } else { "s" }
        )?;
        for d in &self.diagnostics {
            let key = if d.key.is_empty() {
                String::new()
            } else {
                format!("{}: ", d.key)
            };
            writeln!(
                f,
                "  {}:{}:{}: {key}{}",
                self.file.display(),
                d.line,
                d.column,
                d.message
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_owned(),
        diagnostics: vec![Diagnostic {
            line: 0,
            column: 0,
            key: String::new(),
            message: format!("cannot read the file: {e}"),
        }],
    })?;
    parse(&text).map_err(|diagnostics| ConfigError {
        file: path.to_owned(),
        diagnostics,
    })
}

/// Parses and validates config text.
pub fn parse(text: &str) -> Result<Config, Vec<Diagnostic>> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
        vec![Diagnostic {
            line,
            column,
            key: String::new(),
            message: e.message().trim().replace('\n', "; "),
        }]
    })?;
    Validator {
        text,
        diagnostics: Vec::new(),
    }
    .run(raw)
}

struct Validator<'a> {
    text: &'a str,
    diagnostics: Vec<Diagnostic>,
}

impl Validator<'_> {
    fn error(&mut self, span: Range<usize>, key: impl Into<String>, message: impl Into<String>) {
        let (line, column) = line_col(self.text, span.start);
        self.diagnostics.push(Diagnostic {
            line,
            column,
            key: key.into(),
            message: message.into(),
        });
    }

    fn run(mut self, raw: RawConfig) -> Result<Config, Vec<Diagnostic>> {
        let agent_span = raw.agent.span();
        let raw_agent = raw.agent.into_inner();
        let interface = raw_agent.interface.get_ref().trim().to_owned();
        if !valid_ifname(&interface) {
            self.error(
                raw_agent.interface.span(),
                "agent.interface",
                format!("{interface:?} is not a valid interface name (1-15 characters, no '/' or spaces)"),
            );
        }
        let mut nat_interfaces = Vec::with_capacity(raw_agent.nat_interfaces.len());
        for (k, n) in raw_agent.nat_interfaces.iter().enumerate() {
            let name = n.get_ref().trim().to_owned();
            if !valid_ifname(&name) {
                self.error(
                    n.span(),
                    format!("agent.nat_interfaces[{k}]"),
                    format!("{name:?} is not a valid interface name (1-15 characters, no '/' or spaces)"),
                );
            } else if name == interface || nat_interfaces.contains(&name) {
                self.error(
                    n.span(),
                    format!("agent.nat_interfaces[{k}]"),
                    format!("{name:?} is listed twice (agent.interface is always used)"),
                );
            }
            nat_interfaces.push(name);
        }
        let metrics_listen = raw_agent
            .metrics_listen
            .as_ref()
            .and_then(|m| match m.get_ref().trim().parse::<SocketAddr>() {
                Ok(a) if a.port() != 0 => Some(a),
                Ok(_) => {
                    self.error(m.span(), "agent.metrics_listen", "port 0 is not allowed; give the port Prometheus scrapes (e.g. \"127.0.0.1:9740\")");
                    None
                }
                Err(_) => {
                    self.error(m.span(), "agent.metrics_listen", format!("{:?} is not ADDRESS:PORT; e.g. \"127.0.0.1:9740\" or \"[::1]:9740\"", m.get_ref()));
                    None
                }
            });
        let table_capacity = match &raw_agent.table_capacity {
            Some(c) if *c.get_ref() == 0 => {
                self.error(c.span(), "agent.table_capacity", "must be at least 1");
                DEFAULT_TABLE_CAPACITY
            }
            Some(c) => *c.get_ref(),
            None => DEFAULT_TABLE_CAPACITY,
        };
        let agent = AgentConfig {
            interface,
            xdp_mode: raw_agent.xdp_mode,
            hash_seed: raw_agent.hash_seed,
            control_socket: raw_agent
                .control_socket
                .unwrap_or_else(|| DEFAULT_CONTROL_SOCKET.into()),
            pin_dir: raw_agent.pin_dir.unwrap_or_else(|| DEFAULT_PIN_DIR.into()),
            control_group: raw_agent.control_group.as_ref().and_then(|g| {
                let name = g.get_ref();
                if valid_group_name(name) {
                    Some(name.clone())
                } else {
                    self.error(
                        g.span(),
                        "agent.control_group",
                        format!("{name:?} is not a group name (1-32 characters, no ':', '/', ',' or spaces); give the name of an existing group, e.g. \"lbadmin\""),
                    );
                    None
                }
            }),
            table_capacity,
            flow_table_size: match &raw_agent.flow_table_size {
                Some(f) if *f.get_ref() == 0 => {
                    self.error(f.span(), "agent.flow_table_size", "must be at least 1");
                    DEFAULT_FLOW_CAPACITY
                }
                Some(f) => *f.get_ref(),
                None => DEFAULT_FLOW_CAPACITY,
            },
            flow_cache_size: match &raw_agent.flow_cache_size {
                Some(f) if !f.get_ref().is_power_of_two() || *f.get_ref() > MAX_FLOW_CACHE_SLOTS => {
                    let n = *f.get_ref();
                    let below = if n == 0 { 1 } else { 1u32 << (31 - n.leading_zeros()) };
                    self.error(
                        f.span(),
                        "agent.flow_cache_size",
                        format!("must be a power of two from 1 to {MAX_FLOW_CACHE_SLOTS} (slots per CPU, 64 bytes each), e.g. {}", below.min(MAX_FLOW_CACHE_SLOTS)),
                    );
                    DEFAULT_FLOW_CACHE_SLOTS
                }
                Some(f) => *f.get_ref(),
                None => DEFAULT_FLOW_CACHE_SLOTS,
            },
            tcp_idle_timeout: raw_agent.tcp_idle_timeout.unwrap_or(DEFAULT_TCP_IDLE),
            udp_idle_timeout: raw_agent.udp_idle_timeout.unwrap_or(DEFAULT_UDP_IDLE),
            xdp_on_backup: raw_agent.xdp_on_backup,
            nat_interfaces,
            metrics_listen,
        };

        if raw.vips.len() > MAX_VIPS as usize {
            self.error(
                agent_span.clone(),
                "vip",
                format!(
                    "{} VIPs configured; at most {MAX_VIPS} are supported",
                    raw.vips.len()
                ),
            );
        }
        let mut seen_vips = HashSet::new();
        let mut seen_names = HashSet::new();
        let mut vips = Vec::with_capacity(raw.vips.len());
        let mut total_backends = 0usize;
        let mut total_slots = 0u64;
        for (i, raw_vip) in raw.vips.into_iter().enumerate() {
            let vip_span = raw_vip.span();
            let v = raw_vip.into_inner();
            let at = |k: &str| format!("vip[{i}].{k}");
            let address = *v.address.get_ref();
            let port = *v.port.get_ref();
            if port == 0 {
                self.error(
                    v.port.span(),
                    at("port"),
                    "port 0 is not allowed; give the service's port (1-65535)",
                );
            }
            if address.is_unspecified() || address.is_multicast() {
                self.error(
                    v.address.span(),
                    at("address"),
                    format!("{address} cannot be a VIP; use a unicast address"),
                );
            }
            if !seen_vips.insert((address, port, v.protocol)) {
                self.error(
                    vip_span.clone(),
                    format!("vip[{i}]"),
                    format!("duplicate VIP {address}:{port}/{}", v.protocol),
                );
            }
            let name = match &v.name {
                Some(n) => {
                    if n.get_ref().is_empty() {
                        self.error(n.span(), at("name"), "must not be empty");
                    } else if !seen_names.insert(n.get_ref().clone()) {
                        self.error(
                            n.span(),
                            at("name"),
                            format!("duplicate VIP name {:?}", n.get_ref()),
                        );
                    }
                    n.get_ref().clone()
                }
                None => format!("{address}:{port}/{}", v.protocol),
            };
            if let Some(hc) = &v.health_check {
                if let Err(issues) = hc.to_spec() {
                    for issue in issues {
                        self.error(
                            issue.span,
                            format!("vip[{i}].health_check.{}", issue.key),
                            issue.message,
                        );
                    }
                }
            }
            let table_size = match &v.table_size {
                Some(t) => {
                    let size = *t.get_ref();
                    if !is_prime(size) {
                        self.error(t.span(), at("table_size"), format!("{size} is not prime; Maglev needs a prime table size (e.g. 65537, 655373)"));
                    }
                    size
                }
                None => DEFAULT_TABLE_SIZE,
            };
            total_slots += table_size as u64;

            let mut backends = Vec::with_capacity(v.backends.len());
            let mut seen_backends = HashSet::new();
            for (j, raw_backend) in v.backends.into_iter().enumerate() {
                let b = raw_backend.into_inner();
                let bat = |k: &str| format!("vip[{i}].backend[{j}].{k}");
                let baddr = *b.address.get_ref();
                if baddr.is_ipv4() != address.is_ipv4() {
                    self.error(
                        b.address.span(),
                        bat("address"),
                        format!("backend {baddr} and VIP {address} are different address families"),
                    );
                }
                if baddr.is_unspecified() || baddr.is_multicast() || baddr.is_loopback() {
                    self.error(
                        b.address.span(),
                        bat("address"),
                        format!("{baddr} cannot be a backend; use the backend's unicast address"),
                    );
                }
                if !seen_backends.insert(baddr) {
                    self.error(
                        b.address.span(),
                        bat("address"),
                        format!("backend {baddr} is listed twice for this VIP"),
                    );
                }
                let bport = match &b.port {
                    Some(p) if v.mode == ForwardingMode::Dr => {
                        self.error(
                            p.span(),
                            bat("port"),
                            "a backend port needs mode = \"nat\": direct return cannot change the port, the backend must listen on the VIP's",
                        );
                        Some(*p.get_ref())
                    }
                    Some(p) if *p.get_ref() == 0 => {
                        self.error(
                            p.span(),
                            bat("port"),
                            "port 0 is not allowed; give the backend's port (1-65535)",
                        );
                        Some(0)
                    }
                    Some(p) => Some(*p.get_ref()),
                    None => None,
                };
                let weight = match &b.weight {
                    Some(w) if *w.get_ref() > MAX_WEIGHT => {
                        self.error(
                            w.span(),
                            bat("weight"),
                            format!("{} is above the maximum weight {MAX_WEIGHT}", w.get_ref()),
                        );
                        *w.get_ref()
                    }
                    Some(w) => *w.get_ref(),
                    None => 1,
                };
                backends.push(BackendConfig {
                    address: baddr,
                    port: bport,
                    weight,
                    drain: b.drain,
                });
            }
            total_backends += backends.len();
            if backends.len() as u64 > table_size as u64 {
                self.error(
                    vip_span.clone(),
                    at("backend"),
                    format!(
                        "{} backends do not fit a table of {table_size} slots; raise table_size",
                        backends.len()
                    ),
                );
            }
            vips.push(VipConfig {
                name,
                address,
                port,
                protocol: v.protocol,
                mode: v.mode,
                table_size,
                source_affinity: v.source_affinity,
                all_down: v.all_down,
                health_check: v.health_check,
                backends,
            });
        }
        if total_backends > MAX_BACKENDS as usize {
            self.error(
                agent_span.clone(),
                "vip",
                format!(
                    "{total_backends} backends configured; at most {MAX_BACKENDS} are supported"
                ),
            );
        }
        if total_slots > table_capacity as u64 {
            self.error(agent_span, "agent.table_capacity", format!("the VIPs' tables need {total_slots} slots but table_capacity is {table_capacity}; raise it or lower table_size"));
        }

        let vip_names: Vec<&str> = vips.iter().map(|v| v.name.as_str()).collect();
        let vrrp = self.vrrp(raw.vrrp, &agent, &vip_names);

        if self.diagnostics.is_empty() {
            Ok(Config { agent, vips, vrrp })
        } else {
            self.diagnostics.sort_by_key(|d| (d.line, d.column));
            Err(self.diagnostics)
        }
    }
}

/// The config as TOML, in the file's own schema (every key written, defaults included).
pub fn to_toml(config: &Config) -> String {
    let body = toml::to_string_pretty(config).expect("a validated config always serializes");
    format!("# Written by lbd (`lbctl config save`). Reference: docs/config.md\n\n{body}")
}

fn valid_ifname(name: &str) -> bool {
    !name.is_empty() && name.len() <= 15 && !name.contains(['/', ' '])
}

/// What `groupadd` could have created: whether the group exists is only known on the
/// machine lbd starts on, so that is checked there (`control::restrict_socket`).
fn valid_group_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && !name.starts_with('-')
        && !name.contains(|c: char| c == ':' || c == '/' || c == ',' || c.is_whitespace())
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Trial division: table sizes are at most a few million, checked once per load.
pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let n = n as u64;
    (2..)
        .take_while(|d| d * d <= n)
        .all(|d| !n.is_multiple_of(d))
}

mod vrrp;

#[cfg(test)]
mod tests;
