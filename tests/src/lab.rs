//! The direct-return lab of `docs/lab.md`: a client, load-balancer node(s) and backends,
//! each in its own network namespace, joined by a bridge in a namespace of its own.
//!
//! ```text
//!  <p>-cl  10.99.0.100 ─┐
//!  <p>-lb  10.99.0.10  ─┤ veth: `eth0` inside each namespace,   <p>-br: br0 with ports
//!         + VIP/32     ─┤       the peer is a port of br0             pcl plb pb1 pb2 ...
//!  <p>-b1.. 10.99.0.21.. + VIP/32 on lo, TCP+UDP servers on :80
//! ```
//!
//! With [`LabBuilder::nat`] the backends move to a subnet of their own behind the
//! balancer's second interface, with their default route via the balancer:
//!
//! ```text
//!  <p>-lb  eth1 10.98.0.1  ── br1 ── <p>-b1.. 10.98.0.21.., servers on :8080 (no VIP)
//! ```
//!
//! With [`LabBuilder::ipv6`] every address has an IPv6 twin, [`v6`]: `fd99::21` for
//! `10.99.0.21`, and the agent config has the same VIPs over IPv6.
//!
//! A [`Lab`] owns everything it creates and removes it on drop, also when a test panics or
//! setup fails halfway. Namespace names are global, so each lab gets a unique prefix;
//! addresses, MACs and link names are the same in every lab, because they only exist
//! inside the lab's namespaces.

use std::{
    fmt::Write as _,
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU32, Ordering},
        Arc, Mutex, MutexGuard, Weak,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context as _, Result};

use crate::{
    agent::{LbdGuard, Ready},
    client::{self, SourcePorts},
    netns, servers,
    servers::ServerCounters,
};

/// The service address the load balancer announces and every backend holds on `lo`.
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 50);
/// The port of both services (TCP and UDP) on the VIP.
pub const SERVICE_PORT: u16 = 80;
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 100);
/// Load-balancer node `i` (from 0) has `10.99.0.(10 + i)`.
pub const FIRST_LB_ADDR: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 10);
/// Backend `i` (from 0) has `10.99.0.(21 + i)`.
pub const FIRST_BACKEND_ADDR: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 21);
pub const PREFIX_LEN: u8 = 24;
/// NAT labs: the balancer's address on the backends' subnet (`eth1`).
pub const LB_NAT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 1);
/// NAT labs: backend `i` (from 0) has `10.98.0.(21 + i)`.
pub const FIRST_NAT_BACKEND_ADDR: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 21);
/// NAT labs: the port the backends listen on (the VIP's is [`SERVICE_PORT`]).
pub const NAT_BACKEND_PORT: u16 = 8080;

/// The IPv6 twin of a lab address: `10.99.0.21` → `fd99::21` (the digits read the same).
pub fn v6(addr: Ipv4Addr) -> Ipv6Addr {
    let o = addr.octets();
    format!("fd{}::{}", o[1], o[3])
        .parse()
        .expect("lab addresses have decimal digits only")
}

const MAX_LB_NODES: usize = 9;
/// Backend addresses must stay below the VIP.
const MAX_BACKENDS: usize = (50 - 21) as usize;

/// Every lab interface's MAC is `02:99:00:00:00:NN` where NN reads like the last octet of
/// its address (10.99.0.21 has `..:21`, the balancer `..:10`), so a MAC in a counter or a
/// capture names its node at a glance. Octets from 100 up (the client) have NN = the octet
/// in hex (`..:64`).
pub fn mac_for(addr: Ipv4Addr) -> [u8; 6] {
    let [_, net, _, last] = addr.octets();
    let nn = if last < 100 {
        ((last / 10) << 4) | (last % 10)
    } else {
        last
    };
    [0x02, ((net / 10) << 4) | (net % 10), 0, 0, 0, nn]
}

/// `aa:bb:cc:dd:ee:ff`, the way `ip` and the agent print MACs.
pub fn mac_string(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// One namespace attached to the bridge.
#[derive(Clone, Debug)]
pub struct Node {
    /// Short role name: `cl`, `lb`, `lb2`, `b1`, ...
    pub role: String,
    /// The namespace, `<prefix>-<role>`.
    pub ns: String,
    /// Address of `eth0`.
    pub addr: Ipv4Addr,
    pub mac: [u8; 6],
    /// This node's port on `br0`, in the bridge namespace.
    pub bridge_port: String,
}

/// A backend: its node plus what its servers have served.
#[derive(Clone, Debug)]
pub struct Backend {
    pub node: Node,
    pub servers: ServerCounters,
}

impl Backend {
    /// The name its servers answer with (`b1`, `b2`, ...).
    pub fn name(&self) -> &str {
        &self.node.role
    }
}

/// Options for [`Lab`]; start from [`Lab::builder`].
#[derive(Clone, Debug)]
pub struct LabBuilder {
    backends: usize,
    lb_nodes: usize,
    floating_vip: bool,
    fail_setup: bool,
    nat: bool,
    ipv6: bool,
    lb_queues: u32,
    lb_port_xdp_pass: bool,
}

impl Default for LabBuilder {
    fn default() -> Self {
        LabBuilder {
            backends: 3,
            lb_nodes: 1,
            floating_vip: false,
            fail_setup: false,
            nat: false,
            ipv6: false,
            lb_queues: 1,
            lb_port_xdp_pass: true,
        }
    }
}

impl LabBuilder {
    /// Number of backends (default 3).
    pub fn backends(mut self, n: usize) -> Self {
        self.backends = n;
        self
    }

    /// Number of load-balancer nodes (default 1). Only the first holds the VIP; moving it
    /// between nodes is the job of whatever runs on them.
    pub fn lb_nodes(mut self, n: usize) -> Self {
        self.lb_nodes = n;
        self
    }

    /// Leaves the VIP off every load-balancer node: whatever runs there (lbd's or
    /// keepalived's VRRP) adds it to the master and removes it from the others.
    pub fn floating_vip(mut self) -> Self {
        self.floating_vip = true;
        self
    }

    /// NAT topology (one load-balancer node): backends on `10.98.0.0/24` behind the
    /// balancer's `eth1`, default route via it, servers on [`NAT_BACKEND_PORT`], no VIP on
    /// `lo`; forwarding on in the balancer; [`Lab::lbd_config`] writes NAT VIPs.
    pub fn nat(mut self) -> Self {
        self.nat = true;
        self
    }

    /// IPv6 on: every node also has its address's [`v6`] twin (no DAD), the VIP's twin
    /// is held like the VIP, and [`Lab::lbd_config`] has the VIPs over IPv6 as well.
    pub fn ipv6(mut self) -> Self {
        self.ipv6 = true;
        self
    }

    /// RX and TX queues of each load-balancer node's veth pair (default 1). veth spreads
    /// XDP frames over its peer's queues by the sending CPU, so more queues let the
    /// program run on more CPUs at once.
    pub fn lb_queues(mut self, n: u32) -> Self {
        self.lb_queues = n;
        self
    }

    /// Whether the bridge-side end of each load-balancer node's veth gets the `xdp_pass`
    /// program that native XDP_TX needs (default yes). Off for a caller that attaches a
    /// program of its own there (the packet-rate benchmark's sink).
    pub fn lb_port_xdp_pass(mut self, on: bool) -> Self {
        self.lb_port_xdp_pass = on;
        self
    }

    /// Makes setup fail at its last step, with everything else up: for testing that a
    /// failed setup cleans up.
    #[doc(hidden)]
    pub fn fail_setup_for_test(mut self) -> Self {
        self.fail_setup = true;
        self
    }

    /// Creates the lab. On error, everything created so far is removed again.
    pub fn build(self) -> Result<Lab> {
        ensure!(
            (1..=MAX_BACKENDS).contains(&self.backends),
            "a lab has 1..={MAX_BACKENDS} backends, not {}",
            self.backends
        );
        ensure!(
            (1..=MAX_LB_NODES).contains(&self.lb_nodes),
            "a lab has 1..={MAX_LB_NODES} load-balancer nodes, not {}",
            self.lb_nodes
        );
        ensure!(
            !self.nat || self.lb_nodes == 1,
            "a NAT lab has one load-balancer node"
        );
        let first_backend = if self.nat {
            FIRST_NAT_BACKEND_ADDR
        } else {
            FIRST_BACKEND_ADDR
        };
        let prefix = unique_prefix();
        let node = |role: String, addr: Ipv4Addr, port: String| Node {
            ns: format!("{prefix}-{role}"),
            role,
            addr,
            mac: mac_for(addr),
            bridge_port: port,
        };
        let client = node("cl".into(), CLIENT_ADDR, "pcl".into());
        let lbs = (0..self.lb_nodes)
            .map(|i| {
                let suffix = if i == 0 {
                    String::new()
                } else {
                    (i + 1).to_string()
                };
                node(
                    format!("lb{suffix}"),
                    offset(FIRST_LB_ADDR, i),
                    format!("plb{suffix}"),
                )
            })
            .collect();
        let backends = (0..self.backends)
            .map(|i| Backend {
                node: node(
                    format!("b{}", i + 1),
                    offset(first_backend, i),
                    format!("pb{}", i + 1),
                ),
                servers: ServerCounters::default(),
            })
            .collect();

        let teardown = Teardown::register();
        let dir = std::env::temp_dir().join(&prefix);
        let mut lab = Lab {
            bridge_ns: format!("{prefix}-br"),
            prefix,
            client,
            lbs,
            backends,
            dir,
            teardown,
            floating_vip: self.floating_vip,
            nat: self.nat,
            ipv6: self.ipv6,
            lb_queues: self.lb_queues,
            lb_port_xdp_pass: self.lb_port_xdp_pass,
            xdp_pass: Vec::new(),
        };
        let prefix = lab.prefix.clone();
        lab.setup(self.fail_setup)
            .with_context(|| format!("setting up lab {prefix}"))?;
        Ok(lab)
    }
}

fn offset(base: Ipv4Addr, i: usize) -> Ipv4Addr {
    let i = u32::try_from(i).expect("node index fits u32");
    Ipv4Addr::from(u32::from(base) + i)
}

/// `lbt<pid in hex><counter>`: unique among labs of this process and of any other process
/// alive at the same time, and short, because every namespace name starts with it.
fn unique_prefix() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "lbt{:x}{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A running lab. Dropping it stops its servers and processes and deletes its namespaces
/// and temporary directory.
pub struct Lab {
    prefix: String,
    client: Node,
    lbs: Vec<Node>,
    backends: Vec<Backend>,
    bridge_ns: String,
    dir: PathBuf,
    teardown: Arc<Teardown>,
    floating_vip: bool,
    nat: bool,
    ipv6: bool,
    lb_queues: u32,
    lb_port_xdp_pass: bool,
    // Declared last so it is dropped last: the links go away with the namespaces anyway,
    // and closing them afterwards is harmless.
    xdp_pass: Vec<aya::Ebpf>,
}

impl std::fmt::Debug for Lab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lab")
            .field("prefix", &self.prefix)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Lab {
    pub fn builder() -> LabBuilder {
        LabBuilder::default()
    }

    /// The default lab: one load-balancer node, three backends.
    pub fn new() -> Result<Lab> {
        Lab::builder().build()
    }

    fn setup(&mut self, fail: bool) -> Result<()> {
        fs::create_dir(&self.dir)
            .with_context(|| format!("creating lab directory {}", self.dir.display()))?;
        self.teardown.state().dir = Some(self.dir.clone());
        ensure_pin_root()?;
        self.teardown.state().pin_dirs = self.lbs.iter().map(|n| pin_dir_of(&n.ns)).collect();

        let mut namespaces = vec![self.bridge_ns.clone()];
        namespaces.extend(self.nodes().map(|n| n.ns.clone()));
        for ns in &namespaces {
            self.teardown.add_namespace(ns)?;
            // Right away, so no IPv6 frame (DAD, MLD, ND) ever reaches the program and the
            // counters hold only what the test sent.
            if self.ipv6 {
                // No DAD: addresses are usable at once, never left tentative.
                netns::sysctl(
                    ns,
                    &[
                        "net.ipv6.conf.all.accept_dad=0",
                        "net.ipv6.conf.default.accept_dad=0",
                        "net.ipv6.conf.default.router_solicitations=0",
                    ],
                )?;
            } else {
                netns::sysctl(
                    ns,
                    &[
                        "net.ipv6.conf.all.disable_ipv6=1",
                        "net.ipv6.conf.default.disable_ipv6=1",
                    ],
                )?;
            }
        }

        let mut bridge = vec![
            "link add br0 type bridge mcast_snooping 0".to_owned(),
            "link set br0 up".to_owned(),
        ];
        if self.nat {
            bridge.push("link add br1 type bridge mcast_snooping 0".to_owned());
            bridge.push("link set br1 up".to_owned());
            bridge.push(format!(
                "link add plbn type veth peer name eth1 address {} netns {}",
                mac_string(mac_for(LB_NAT_ADDR)),
                self.lbs[0].ns
            ));
            bridge.push("link set plbn master br1 up".to_owned());
        }
        for n in self.nodes() {
            let queues = if self.lbs.iter().any(|l| l.ns == n.ns) && self.lb_queues > 1 {
                let q = self.lb_queues;
                (
                    format!(" numrxqueues {q} numtxqueues {q}"),
                    format!(" numrxqueues {q} numtxqueues {q}"),
                )
            } else {
                Default::default()
            };
            bridge.push(format!(
                "link add {}{} type veth peer name eth0 address {}{} netns {}",
                n.bridge_port,
                queues.0,
                mac_string(n.mac),
                queues.1,
                n.ns
            ));
            let is_backend = self.backends.iter().any(|b| b.node.ns == n.ns);
            let br = if self.nat && is_backend { "br1" } else { "br0" };
            bridge.push(format!("link set {} master {br} up", n.bridge_port));
        }
        netns::ip_batch(&self.bridge_ns, &bridge)?;

        let (vip6, lb_nat6) = (v6(VIP), v6(LB_NAT_ADDR));
        for n in self.nodes() {
            let is_backend = self.backends.iter().any(|b| b.node.ns == n.ns);
            let is_lb = n.ns == self.lbs[0].ns;
            let mut cmds = vec![
                "link set lo up".to_owned(),
                format!("addr add {}/{PREFIX_LEN} dev eth0", n.addr),
                "link set eth0 up".to_owned(),
            ];
            if self.ipv6 {
                cmds.push(format!("addr add {}/64 dev eth0 nodad", v6(n.addr)));
            }
            if is_lb && !self.floating_vip {
                cmds.push(format!("addr add {VIP}/32 dev eth0"));
                if self.ipv6 {
                    cmds.push(format!("addr add {vip6}/128 dev eth0 nodad"));
                }
            }
            if is_lb && self.nat {
                cmds.push(format!("addr add {LB_NAT_ADDR}/{PREFIX_LEN} dev eth1"));
                if self.ipv6 {
                    cmds.push(format!("addr add {lb_nat6}/64 dev eth1 nodad"));
                }
                cmds.push("link set eth1 up".to_owned());
            }
            if is_backend && self.nat {
                cmds.push(format!("route add default via {LB_NAT_ADDR}"));
                if self.ipv6 {
                    cmds.push(format!("route add default via {lb_nat6}"));
                }
            } else if is_backend {
                cmds.push(format!("addr add {VIP}/32 dev lo"));
                if self.ipv6 {
                    cmds.push(format!("addr add {vip6}/128 dev lo"));
                }
            }
            netns::ip_batch(&n.ns, &cmds)?;
        }

        if self.nat {
            let mut forwarding = vec!["net.ipv4.ip_forward=1"];
            if self.ipv6 {
                forwarding.push("net.ipv6.conf.all.forwarding=1");
            }
            netns::sysctl(&self.lbs[0].ns, &forwarding)?;
        }

        for b in self.backends.iter().filter(|_| !self.nat) {
            // Without these a backend answers the client's ARP for the VIP (it holds the
            // VIP on lo), the client talks to it directly and the balancer sees nothing.
            netns::sysctl(
                &b.node.ns,
                &[
                    "net.ipv4.conf.all.arp_ignore=1",
                    "net.ipv4.conf.eth0.arp_ignore=1",
                    "net.ipv4.conf.all.arp_announce=2",
                    "net.ipv4.conf.eth0.arp_announce=2",
                ],
            )?;
        }

        // veth offloads the TX checksum; native XDP_TX turns the skb into a bare frame and
        // the backend would get the unfinished checksum.
        netns::exec(&self.client.ns, "ethtool", &["-K", "eth0", "tx", "off"])?;
        // NAT: the backends' replies go through the balancer's program too.
        for b in self.backends.iter().filter(|_| self.nat) {
            netns::exec(&b.node.ns, "ethtool", &["-K", "eth0", "tx", "off"])?;
        }

        // Native XDP_TX frames from the balancer are dropped by the peer veth unless the
        // peer has an XDP program of its own.
        for lb in self.lbs.iter().filter(|_| self.lb_port_xdp_pass) {
            let ebpf = attach_xdp_pass(&self.bridge_ns, &lb.bridge_port)?;
            self.xdp_pass.push(ebpf);
        }
        if self.nat {
            let ebpf = attach_xdp_pass(&self.bridge_ns, "plbn")?;
            self.xdp_pass.push(ebpf);
        }

        let stop = self.teardown.state().stop.clone();
        for b in &mut self.backends {
            let mut addrs: Vec<IpAddr> = vec![b.node.addr.into()];
            if !self.nat {
                addrs.push(VIP.into());
            }
            if self.ipv6 {
                addrs.extend(addrs.clone().into_iter().map(|a| match a {
                    IpAddr::V4(a) => IpAddr::V6(v6(a)),
                    v6 => v6,
                }));
            }
            let port = if self.nat {
                NAT_BACKEND_PORT
            } else {
                SERVICE_PORT
            };
            let (counters, threads) =
                servers::start(&b.node.ns, &b.node.role, &addrs, port, &stop)?;
            b.servers = counters;
            self.teardown.state().threads.extend(threads);
        }

        let to_client = SocketAddr::from((self.client.addr, 9));
        for n in &self.lbs {
            servers::announce(&n.ns, to_client)?;
        }
        let to = if self.nat {
            SocketAddr::from((LB_NAT_ADDR, 9))
        } else {
            to_client
        };
        for b in &self.backends {
            servers::announce(&b.node.ns, to)?;
        }
        ensure!(!fail, "failing on request (fail_setup_for_test)");
        Ok(())
    }

    /// All nodes on the bridge: client, load balancers, backends.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        std::iter::once(&self.client)
            .chain(self.lbs.iter())
            .chain(self.backends.iter().map(|b| &b.node))
    }

    /// The prefix every namespace of this lab starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Every namespace this lab created, the bridge's first.
    pub fn namespaces(&self) -> Vec<String> {
        std::iter::once(self.bridge_ns.clone())
            .chain(self.nodes().map(|n| n.ns.clone()))
            .collect()
    }

    pub fn bridge_ns(&self) -> &str {
        &self.bridge_ns
    }

    pub fn client(&self) -> &Node {
        &self.client
    }

    /// The first load-balancer node, the one holding the VIP (unless it floats).
    pub fn lb(&self) -> &Node {
        &self.lbs[0]
    }

    pub fn lb_nodes(&self) -> &[Node] {
        &self.lbs
    }

    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    /// The backend whose servers answer `name`.
    pub fn backend(&self, name: &str) -> Option<&Backend> {
        self.backends.iter().find(|b| b.name() == name)
    }

    /// `VIP:80`.
    pub fn vip(&self) -> SocketAddr {
        SocketAddrV4::new(VIP, SERVICE_PORT).into()
    }

    /// `[fd99::50]:80`, the VIP's IPv6 twin (labs built with [`LabBuilder::ipv6`]).
    pub fn vip6(&self) -> SocketAddr {
        SocketAddr::from((v6(VIP), SERVICE_PORT))
    }

    /// The lab's temporary directory (configs, sockets, logs); removed on drop.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// TCP connections from the client namespace, from kernel-chosen ports; see
    /// [`client::tcp_requests`].
    pub fn tcp_requests(
        &self,
        addr: SocketAddr,
        n_conns: usize,
        requests_per_conn: usize,
        timeout: Duration,
    ) -> Vec<Result<String>> {
        self.tcp_requests_from(
            addr,
            SourcePorts::Ephemeral,
            n_conns,
            requests_per_conn,
            timeout,
        )
    }

    /// [`Lab::tcp_requests`] with chosen source ports.
    pub fn tcp_requests_from(
        &self,
        addr: SocketAddr,
        ports: SourcePorts,
        n_conns: usize,
        requests_per_conn: usize,
        timeout: Duration,
    ) -> Vec<Result<String>> {
        client::tcp_requests(
            &self.client.ns,
            addr,
            ports,
            n_conns,
            requests_per_conn,
            timeout,
        )
    }

    /// UDP flows from the client namespace, from kernel-chosen ports; see
    /// [`client::udp_requests`].
    pub fn udp_requests(
        &self,
        addr: SocketAddr,
        n_flows: usize,
        datagrams_per_flow: usize,
        timeout: Duration,
    ) -> Vec<Result<String>> {
        self.udp_requests_from(
            addr,
            SourcePorts::Ephemeral,
            n_flows,
            datagrams_per_flow,
            timeout,
        )
    }

    /// [`Lab::udp_requests`] with chosen source ports.
    pub fn udp_requests_from(
        &self,
        addr: SocketAddr,
        ports: SourcePorts,
        n_flows: usize,
        datagrams_per_flow: usize,
        timeout: Duration,
    ) -> Vec<Result<String>> {
        client::udp_requests(
            &self.client.ns,
            addr,
            ports,
            n_flows,
            datagrams_per_flow,
            timeout,
        )
    }

    /// Writes `contents` to `name` in the lab directory.
    pub fn write_file(&self, name: &str, contents: &str) -> Result<PathBuf> {
        let path = self.dir.join(name);
        fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// Where the agent on load-balancer node `node` listens, per [`Lab::lbd_config`].
    pub fn control_socket(&self, node: usize) -> PathBuf {
        self.dir.join(format!("lbd-{}.sock", self.lbs[node].role))
    }

    /// Where the agent on load-balancer node `node` pins its maps and links, per
    /// [`Lab::lbd_config`]: on bpffs, which is global, so named after the lab's prefix.
    /// Removed on teardown (links detached first), whatever the agent left there.
    pub fn pin_dir(&self, node: usize) -> PathBuf {
        pin_dir_of(&self.lbs[node].ns)
    }

    /// An agent config for load-balancer node `node`: native XDP on `eth0`, the control
    /// socket in the lab directory, and VIP:80 over TCP (`web`) and UDP (`web-udp`) to
    /// every backend with weight 1.
    pub fn lbd_config(&self, node: usize) -> String {
        let backends: Vec<_> = self.backends.iter().map(|b| (b.node.addr, 1)).collect();
        self.lbd_config_with(node, &backends)
    }

    /// [`Lab::lbd_config`] with a chosen set of backends and weights.
    pub fn lbd_config_with(&self, node: usize, backends: &[(Ipv4Addr, u32)]) -> String {
        render_lbd_config(
            &self.control_socket(node),
            &self.pin_dir(node),
            backends,
            LabKind {
                nat: self.nat,
                ipv6: self.ipv6,
            },
        )
    }

    /// Writes [`Lab::lbd_config`] for the first node plus `extra` (appended verbatim) to the
    /// lab directory and returns its path.
    pub fn write_lbd_config(&self, extra: &str) -> PathBuf {
        self.write_lbd_config_on(0, extra)
    }

    /// [`Lab::write_lbd_config`] for load-balancer node `node`.
    pub fn write_lbd_config_on(&self, node: usize, extra: &str) -> PathBuf {
        let text = format!("{}\n{extra}", self.lbd_config(node));
        let name = format!("lbd-{}.toml", self.lbs[node].role);
        self.write_file(&name, &text)
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Starts `lbd --config <config>` on the first load-balancer node; see
    /// [`Lab::start_lbd_on`].
    pub fn start_lbd(&self, config: &Path) -> Result<LbdGuard<'_>> {
        self.start_lbd_on(0, config)
    }

    /// Starts the agent on load-balancer node `node` and waits until it reports its program
    /// attached. Its output goes to `lbd-<role>.log` in the lab directory.
    pub fn start_lbd_on(&self, node: usize, config: &Path) -> Result<LbdGuard<'_>> {
        self.start_lbd_with(node, config, &[])
    }

    /// [`Lab::start_lbd_on`] with further `lbd` arguments (`--log-format json`).
    pub fn start_lbd_with(
        &self,
        node: usize,
        config: &Path,
        args: &[&str],
    ) -> Result<LbdGuard<'_>> {
        let n = &self.lbs[node];
        let log = self.dir.join(format!("lbd-{}.log", n.role));
        LbdGuard::start(self, &n.ns, config, args, &log, Ready::Attached, &[], &[])
    }

    /// [`Lab::start_lbd_on`] through `wrapper`, a command that execs its arguments, such
    /// as `setpriv --reuid=...` to run the agent as another user with chosen capabilities.
    pub fn start_lbd_wrapped(
        &self,
        node: usize,
        config: &Path,
        wrapper: &[String],
    ) -> Result<LbdGuard<'_>> {
        let n = &self.lbs[node];
        let log = self.dir.join(format!("lbd-{}.log", n.role));
        LbdGuard::start(
            self,
            &n.ns,
            config,
            &[],
            &log,
            Ready::Attached,
            &[],
            wrapper,
        )
    }

    /// Starts the agent on node `node` and waits until it answers on its control socket,
    /// attached or not: a VRRP node starts as backup. Each start appends to the node's log.
    pub fn spawn_lbd_on(&self, node: usize, config: &Path) -> Result<LbdGuard<'_>> {
        let n = &self.lbs[node];
        let log = self.dir.join(format!("lbd-{}.log", n.role));
        LbdGuard::start(self, &n.ns, config, &[], &log, Ready::Answering, &[], &[])
    }

    /// [`Lab::spawn_lbd_on`] with extra environment variables for the agent (e.g.
    /// `LBD_XDP_OBJECT`, another program to load).
    pub fn spawn_lbd_with_env(
        &self,
        node: usize,
        config: &Path,
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Result<LbdGuard<'_>> {
        let n = &self.lbs[node];
        let log = self.dir.join(format!("lbd-{}.log", n.role));
        LbdGuard::start(self, &n.ns, config, &[], &log, Ready::Answering, env, &[])
    }

    /// The addresses on `ifname` in `ns`.
    pub fn addresses(ns: &str, ifname: &str) -> Result<Vec<std::net::IpAddr>> {
        let out = netns::ip(ns, &["-j", "addr", "show", "dev", ifname])?;
        let v: serde_json::Value = serde_json::from_str(&out)
            .with_context(|| format!("parsing `ip -j addr` in {ns}: {out}"))?;
        Ok(v.get(0)
            .and_then(|l| l.get("addr_info"))
            .and_then(serde_json::Value::as_array)
            .map(|infos| {
                infos
                    .iter()
                    .filter_map(|i| i.get("local")?.as_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Whether `ifname` in `ns` has an XDP program attached.
    pub fn xdp_attached(ns: &str, ifname: &str) -> Result<bool> {
        let out = netns::ip(ns, &["-j", "-d", "link", "show", "dev", ifname])?;
        let v: serde_json::Value = serde_json::from_str(&out)
            .with_context(|| format!("parsing `ip -j link` in {ns}: {out}"))?;
        Ok(v.get(0).and_then(|l| l.get("xdp")).is_some())
    }

    /// The kernel id of the XDP program attached to `ifname` in `ns`, if any.
    pub fn xdp_program_id(ns: &str, ifname: &str) -> Result<Option<u32>> {
        let out = netns::ip(ns, &["-j", "-d", "link", "show", "dev", ifname])?;
        let v: serde_json::Value = serde_json::from_str(&out)
            .with_context(|| format!("parsing `ip -j link` in {ns}: {out}"))?;
        let Some(xdp) = v.get(0).and_then(|l| l.get("xdp")) else {
            return Ok(None);
        };
        // One program: {"mode":..,"prog":{..}}; several modes at once: {"attached":[..]}.
        let prog = xdp.get("prog").or_else(|| {
            xdp.get("attached")
                .and_then(|a| a.get(0))
                .and_then(|a| a.get("prog"))
        });
        Ok(prog
            .and_then(|p| p.get("id"))
            .and_then(serde_json::Value::as_u64)
            .and_then(|id| u32::try_from(id).ok()))
    }

    pub(crate) fn teardown(&self) -> &Arc<Teardown> {
        &self.teardown
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.teardown.run();
    }
}

#[derive(Clone, Copy, Default)]
struct LabKind {
    nat: bool,
    ipv6: bool,
}

/// VIP:80 over TCP (`web`) and UDP (`web-udp`), and with IPv6 the same on the VIP's twin
/// (`web6`, `web6-udp`, to the backends' twins); NAT VIPs to port 8080 in a NAT lab.
fn render_lbd_config(
    control_socket: &Path,
    pin_dir: &Path,
    backends: &[(Ipv4Addr, u32)],
    kind: LabKind,
) -> String {
    let mut s = format!(
        "[agent]\n\
         interface = \"eth0\"\n\
         xdp_mode = \"native\"\n\
         hash_seed = 0\n\
         control_socket = \"{}\"\n\
         pin_dir = \"{}\"\n",
        control_socket.display(),
        pin_dir.display()
    );
    if kind.nat {
        s.push_str("nat_interfaces = [\"eth1\"]\n");
    }
    let mode = if kind.nat { "nat" } else { "dr" };
    let families: &[bool] = if kind.ipv6 { &[false, true] } else { &[false] };
    for &six in families {
        let vip: IpAddr = if six { v6(VIP).into() } else { VIP.into() };
        let tag = if six { "6" } else { "" };
        for (name, proto) in [("web", "tcp"), ("web-udp", "udp")] {
            let name = name.replacen("web", &format!("web{tag}"), 1);
            let _ = write!(
                s,
                "\n[[vip]]\n\
                 name = \"{name}\"\n\
                 address = \"{vip}\"\n\
                 port = {SERVICE_PORT}\n\
                 protocol = \"{proto}\"\n\
                 mode = \"{mode}\"\n"
            );
            for (b, weight) in backends {
                let b: IpAddr = if six { v6(*b).into() } else { (*b).into() };
                let _ = write!(
                    s,
                    "\n[[vip.backend]]\naddress = \"{b}\"\nweight = {weight}\n"
                );
                if kind.nat {
                    let _ = writeln!(s, "port = {NAT_BACKEND_PORT}");
                }
            }
        }
    }
    s
}

/// Where the lab's agents pin. Not `/sys/fs/bpf`: `ip netns exec` mounts a sysfs of the
/// namespace over `/sys`, which hides the host's bpffs from the agent. A bpffs of the labs'
/// own outside `/sys` is seen the same from inside and outside the namespaces.
pub const PIN_ROOT: &str = "/run/lb-tests/bpf";

/// `PIN_ROOT/<namespace>`: unique as long as the namespace name is.
fn pin_dir_of(ns: &str) -> PathBuf {
    Path::new(PIN_ROOT).join(ns)
}

/// Mounts a bpffs at [`PIN_ROOT`] unless one is there; under a lock, so labs of several
/// processes starting at once mount it once (a second mount would hide the first's pins).
fn ensure_pin_root() -> Result<()> {
    use std::os::fd::AsRawFd as _;
    fs::create_dir_all(PIN_ROOT).with_context(|| format!("creating {PIN_ROOT}"))?;
    let lock_path = Path::new(PIN_ROOT).with_extension("lock");
    let lock = fs::File::create(&lock_path)
        .with_context(|| format!("creating {}", lock_path.display()))?;
    // SAFETY: flock on a descriptor we own; released when `lock` closes.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error()).context("locking the pin root");
    }
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let dir = fs::File::open(PIN_ROOT)?;
    // SAFETY: fstatfs into a zeroed struct we own.
    if unsafe { libc::fstatfs(dir.as_raw_fd(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error()).context("statfs of the pin root");
    }
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    #[allow(clippy::unnecessary_cast)]
    if st.f_type as i64 != BPF_FS_MAGIC {
        netns::run(std::process::Command::new("mount").args(["-t", "bpf", "bpf", PIN_ROOT]))
            .context("mounting a bpffs for the labs' pins")?;
    }
    Ok(())
}

fn attach_xdp_pass(ns: &str, ifname: &str) -> Result<aya::Ebpf> {
    netns::run_in(ns, || {
        let mut ebpf = aya::Ebpf::load(lb_userspace::dataplane::HELPERS_OBJECT)
            .context("loading the eBPF object")?;
        let prog: &mut aya::programs::Xdp = ebpf
            .program_mut("xdp_pass")
            .context("the eBPF object has no program xdp_pass")?
            .try_into()?;
        prog.load().context("loading xdp_pass")?;
        // The ifindex is looked up in this thread's namespace, the bridge's.
        prog.attach(ifname, aya::programs::XdpMode::Driver)
            .with_context(|| format!("attaching xdp_pass to {ifname} in {ns}"))?;
        Ok(ebpf)
    })
}

/// What a lab must undo, shared with the global registry so [`teardown_all`] can reach
/// labs owned by other threads.
pub(crate) struct Teardown {
    state: Mutex<TeardownState>,
}

#[derive(Default)]
pub(crate) struct TeardownState {
    done: bool,
    namespaces: Vec<String>,
    /// Processes still running inside the lab (the agents).
    pub(crate) pids: Vec<u32>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    dir: Option<PathBuf>,
    /// The agents' pin directories on bpffs (global, so they outlive the namespaces).
    pin_dirs: Vec<PathBuf>,
}

static LABS: Mutex<Vec<Weak<Teardown>>> = Mutex::new(Vec::new());

impl Teardown {
    fn register() -> Arc<Teardown> {
        let t = Arc::new(Teardown {
            state: Mutex::new(TeardownState::default()),
        });
        let mut labs = LABS.lock().unwrap_or_else(|p| p.into_inner());
        labs.retain(|w| w.strong_count() > 0);
        labs.push(Arc::downgrade(&t));
        t
    }

    /// Creates namespace `ns` under the lock, so a concurrent [`teardown_all`] either sees
    /// and deletes it or has already run, and then it is not created.
    fn add_namespace(&self, ns: &str) -> Result<()> {
        let mut st = self.state();
        ensure!(!st.done, "lab was torn down during setup");
        netns::add(ns)?;
        st.namespaces.push(ns.to_owned());
        Ok(())
    }

    /// Registers an agent's PID for teardown; kills it at once if teardown already ran.
    pub(crate) fn add_pid(&self, pid: u32) {
        let mut st = self.state();
        if st.done {
            drop(st);
            terminate(pid, Duration::from_secs(3));
        } else {
            st.pids.push(pid);
        }
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, TeardownState> {
        // A panic while holding the lock must not stop the cleanup.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Idempotent; errors are printed, not returned, so one stuck step does not leave the
    /// rest behind.
    fn run(&self) {
        let mut st = self.state();
        if st.done {
            return;
        }
        st.done = true;
        for pid in std::mem::take(&mut st.pids) {
            terminate(pid, Duration::from_secs(3));
        }
        st.stop.store(true, Ordering::Relaxed);
        for t in std::mem::take(&mut st.threads) {
            let _ = t.join();
        }
        // After the agents are gone, before the namespaces: a killed agent's pinned
        // links are still attached to the lab's interfaces.
        for dir in std::mem::take(&mut st.pin_dirs) {
            if let Err(e) = lb_userspace::dataplane::cleanup(&dir) {
                eprintln!(
                    "lab teardown: removing the pins in {}: {e:#}",
                    dir.display()
                );
            }
        }
        for ns in std::mem::take(&mut st.namespaces) {
            if let Err(e) = netns::del(&ns) {
                eprintln!("lab teardown: {e:#}");
            }
        }
        if let Some(dir) = st.dir.take() {
            if let Err(e) = fs::remove_dir_all(&dir) {
                eprintln!("lab teardown: removing {}: {e}", dir.display());
            }
        }
    }
}

/// Tears down every lab of this process that is still alive, from any thread; for signal
/// handlers (Ctrl-C in the demo). The labs' owners find them already gone.
pub fn teardown_all() {
    let labs: Vec<_> = LABS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter_map(Weak::upgrade)
        .collect();
    for t in labs {
        t.run();
    }
}

/// SIGTERM, then SIGKILL if `pid` still runs after `grace`. Only for PIDs of unreaped
/// children, which the kernel cannot hand to another process.
pub(crate) fn terminate(pid: u32, grace: Duration) {
    let Ok(raw) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(raw, libc::SIGTERM) };
    let deadline = Instant::now() + grace;
    while running(pid) {
        if Instant::now() >= deadline {
            // SAFETY: as above.
            unsafe { libc::kill(raw, libc::SIGKILL) };
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `pid` exists and is not a zombie.
pub(crate) fn running(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may contain spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

/// Which of `names` still exist as namespaces.
pub fn leftover_namespaces(names: &[String]) -> Result<Vec<String>> {
    Ok(netns::list()?
        .into_iter()
        .filter(|n| names.contains(n))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_read_like_the_last_octet() {
        assert_eq!(mac_string(mac_for(FIRST_BACKEND_ADDR)), "02:99:00:00:00:21");
        assert_eq!(mac_string(mac_for(FIRST_LB_ADDR)), "02:99:00:00:00:10");
        assert_eq!(mac_string(mac_for(CLIENT_ADDR)), "02:99:00:00:00:64");
    }

    #[test]
    fn prefixes_are_unique_and_short() {
        let (a, b) = (unique_prefix(), unique_prefix());
        assert_ne!(a, b);
        // Room for `-<role>` within a readable name; the namespace name itself has no
        // length limit, but it shows up in every error message.
        assert!(a.len() <= 12, "{a}");
    }

    #[test]
    fn the_generated_agent_config_is_valid_for_the_agent() {
        let backends = [FIRST_BACKEND_ADDR, offset(FIRST_BACKEND_ADDR, 1)];
        let weighted: Vec<_> = backends.iter().map(|&b| (b, 2)).collect();
        let pins = Path::new("/sys/fs/bpf/x");
        let text = render_lbd_config(
            Path::new("/tmp/x/lbd.sock"),
            pins,
            &weighted,
            LabKind::default(),
        );
        let config = lb_userspace::config::parse(&text).unwrap_or_else(|d| panic!("{d:?}\n{text}"));
        assert_eq!(config.agent.interface, "eth0");
        assert_eq!(config.agent.control_socket, Path::new("/tmp/x/lbd.sock"));
        assert_eq!(config.agent.pin_dir, pins);
        assert_eq!(config.vips.len(), 2);
        for v in &config.vips {
            assert_eq!(v.address, std::net::IpAddr::V4(VIP));
            assert_eq!(v.port, SERVICE_PORT);
            let addrs: Vec<_> = v.backends.iter().map(|b| b.address).collect();
            assert_eq!(addrs, backends.map(std::net::IpAddr::V4));
            assert!(v.backends.iter().all(|b| b.weight == 2));
        }
        let kind = LabKind {
            nat: true,
            ipv6: true,
        };
        let text = render_lbd_config(Path::new("/tmp/x/lbd.sock"), pins, &weighted, kind);
        let config = lb_userspace::config::parse(&text).unwrap_or_else(|d| panic!("{d:?}\n{text}"));
        assert_eq!(config.agent.nat_interfaces, ["eth1"]);
        assert_eq!(config.vips.len(), 4);
        assert_eq!(config.vips[2].address, std::net::IpAddr::V6(v6(VIP)));
        assert_eq!(config.vips[3].backends[1].address.to_string(), "fd99::22");
        assert_eq!(config.vips[3].backends[1].port, Some(NAT_BACKEND_PORT));
    }
}
