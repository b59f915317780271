//! The real XDP program loaded (not attached) with a known set of VIPs and backends, for
//! `BPF_PROG_TEST_RUN` tests and the per-packet benchmark.
//!
//! DR needs nothing from the kernel but the frame. NAT asks the kernel's FIB where to send
//! a translated packet, and `BPF_PROG_TEST_RUN` looks routes up in the calling thread's
//! network namespace; [`Harness::load_in_fibnet`] therefore builds a namespace of its own
//! ([`FibNet`]) with fixed interfaces, routes and permanent neighbour entries, and moves
//! the calling thread into it for the harness's lifetime.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::Context as _;
use lb_common::{
    addr,
    backend::{Backend, BACKEND_F_MAC_VALID, BACKEND_F_PRESENT},
    flow::{flow_hash, FlowKey},
    settings::Settings,
    stats::{Counter, Reason},
    vip::{VipInfo, VipKey, MODE_DR, MODE_NAT},
};
use lb_userspace::{
    dataplane::Dataplane,
    maglev::{self, BackendKey},
};

use crate::netns;

pub const LB_MAC: [u8; 6] = [0x02, 0x99, 0, 0, 0, 0x10];
pub const CLIENT_MAC: [u8; 6] = [0x02, 0x99, 0, 0, 0, 0x64];
pub const BACKEND_MACS: [[u8; 6]; 3] = [
    [0x02, 0x99, 0, 0, 0, 0x21],
    [0x02, 0x99, 0, 0, 0, 0x22],
    [0x02, 0x99, 0, 0, 0, 0x23],
];
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 50);
/// A VIP (UDP port 53) whose table is empty.
pub const EMPTY_VIP_PORT: u16 = 53;
/// A VIP (TCP port 8080) whose only backend has no resolved MAC.
pub const UNRESOLVED_VIP_PORT: u16 = 8080;
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 100);
pub const SEED: u32 = 0x5eed_1234;
pub const TABLE_SIZE: u32 = 4099;
/// Size of each NAT VIP's table (prime; two of them share the last `TABLE_SIZE` slots).
pub const NAT_TABLE_SIZE: u32 = 2039;
/// `BPF_PROG_TEST_RUN` without a context runs as if received on loopback.
pub const LOOPBACK_IFINDEX: u32 = 1;
pub const UNRESOLVED_BACKEND_ID: u32 = 3;

/// IPv6 DR VIP (TCP/80, UDP/80) over three IPv6 backends with `BACKEND_MACS`.
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x50);
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x64);
/// NAT VIPs (TCP/80, UDP/80), IPv4 and IPv6, over backends behind `bk0` at port 8080.
pub const NAT_VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 60);
pub const NAT_VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x60);
pub const NAT_PORT: u16 = 80;
pub const NAT_BACKEND_PORT: u16 = 8080;
pub const NAT_BACKEND_MACS: [[u8; 6]; 3] = [
    [0x02, 0x99, 0, 0, 1, 0x21],
    [0x02, 0x99, 0, 0, 1, 0x22],
    [0x02, 0x99, 0, 0, 1, 0x23],
];
/// The balancer's MAC on the backend side (`bk0` in the [`FibNet`]).
pub const LB_BK_MAC: [u8; 6] = [0x02, 0x99, 0, 0, 1, 0x10];
/// The client side's default gateway (in the [`FibNet`]).
pub const ROUTER: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 254);
pub const ROUTER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xfe);
pub const ROUTER_MAC: [u8; 6] = [0x02, 0x99, 0, 0, 0, 0xfe];
/// On the backend subnet but without a neighbour entry (FIB: no neighbour).
pub const NO_NEIGH_BACKEND: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 29);
/// Behind a blackhole route (FIB: blackhole).
pub const BLACKHOLED_BACKEND: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 5);

/// Backend ids: DR IPv4 0..3, unresolved 3, DR IPv6 4..7, NAT IPv4 8..11, NAT IPv6 12..15.
pub const DR6_BACKEND_BASE: u32 = 4;
pub const NAT_BACKEND_BASE: u32 = 8;
pub const NAT6_BACKEND_BASE: u32 = 12;
/// VIP ids of the NAT VIPs: IPv4 TCP, IPv4 UDP, IPv6 TCP, IPv6 UDP.
pub const NAT_VIP_IDS: [u32; 4] = [6, 7, 8, 9];

pub fn nat_backend(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 1, 0, 21 + i as u8)
}

pub fn nat_backend6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 0x21 + i as u16)
}

pub fn dr_backend6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x21 + i as u16)
}

/// Loads the real program and configures: VIP 10.99.0.50 TCP/80 and UDP/80 over three
/// backends, UDP/53 with no backends, TCP/8080 with an unresolved backend; the IPv6 DR VIP
/// [`VIP6`]; the NAT VIPs [`NAT_VIP`] and [`NAT_VIP6`].
pub struct Harness {
    pub dp: Dataplane,
    /// The IPv4 DR VIPs' lookup table (backend ids).
    pub table: Vec<u32>,
    pub table6: Vec<u32>,
    pub nat_table: Vec<u32>,
    pub nat_table6: Vec<u32>,
    /// Dropped last: the namespace goes after the program.
    pub net: Option<FibNet>,
    /// The harness's thread stays on one CPU while the harness lives.
    _cpu: CpuPin,
}

/// Flow entries stay fresh for the length of any test.
pub const IDLE: std::time::Duration = std::time::Duration::from_secs(3600);
pub const FLOW_CAPACITY: u32 = 1 << 16;
/// Lookup-table slots the harness's own VIPs use (from slot 0).
pub const HARNESS_SLOTS: u32 = 4 * TABLE_SIZE;

/// The three backends as Maglev sees them; index i has id i and `BACKEND_MACS[i]`.
pub fn backend_keys() -> Vec<(BackendKey, u32)> {
    keys(
        (0..3).map(|i| IpAddr::V4(Ipv4Addr::new(10, 99, 0, 21 + i))),
        80,
    )
}

fn keys(addrs: impl Iterator<Item = IpAddr>, port: u16) -> Vec<(BackendKey, u32)> {
    addrs
        .map(|address| (BackendKey { address, port }, 1))
        .collect()
}

pub fn vip_key(port: u16, proto: u8) -> VipKey {
    vip_key_of(IpAddr::V4(VIP), port, proto)
}

pub fn vip_key_of(vip: IpAddr, port: u16, proto: u8) -> VipKey {
    VipKey {
        addr: addr::from_ip(vip),
        port_be: port.to_be(),
        proto,
        _pad: 0,
    }
}

fn vip_info(id: u32, mode: u32, table_offset: u32, table_size: u32) -> VipInfo {
    VipInfo {
        id,
        mode,
        table_offset,
        table_size,
        flags: 0,
    }
}

/// A present backend entry.
pub fn backend(ip: IpAddr, mac: Option<[u8; 6]>, port: u16) -> Backend {
    Backend {
        addr: addr::from_ip(ip),
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

/// Builds a table over `keys` and returns it as backend ids from `base`.
fn table_of(keys: &[(BackendKey, u32)], size: u32, base: u32) -> Vec<u32> {
    maglev::build(keys, size, SEED)
        .into_iter()
        .map(|i| base + i)
        .collect()
}

impl Harness {
    /// The harness in the calling thread's namespace: enough for DR, whose result does not
    /// depend on routes.
    pub fn load() -> Harness {
        Harness::configure(None, HARNESS_SLOTS, FLOW_CAPACITY)
            .expect("load and configure the XDP program")
    }

    /// The harness in a fresh [`FibNet`] namespace, which the calling thread enters until
    /// the harness is dropped: NAT's FIB lookups see exactly the routes and neighbours the
    /// namespace was built with.
    pub fn load_in_fibnet() -> Harness {
        Harness::load_in_fibnet_sized(HARNESS_SLOTS, FLOW_CAPACITY)
    }

    /// [`Harness::load_in_fibnet`] with a lookup table of `table_capacity` slots (slots
    /// from [`HARNESS_SLOTS`] on are free for the caller's VIPs) and a flow table of
    /// `flow_capacity` entries: for the benchmark's larger configurations.
    pub fn load_in_fibnet_sized(table_capacity: u32, flow_capacity: u32) -> Harness {
        let net = FibNet::create().expect("build the FIB namespace");
        Harness::configure(Some(net), table_capacity, flow_capacity)
            .expect("load and configure the XDP program")
    }

    fn configure(
        net: Option<FibNet>,
        table_capacity: u32,
        flow_capacity: u32,
    ) -> anyhow::Result<Harness> {
        // A test run runs on the calling thread's CPU. Like a NIC's RSS, which keeps a
        // flow on one CPU, the harness keeps its frames on one: the flow cache is per CPU,
        // and a connection's SYN is pinned in it alone (`Harness::move_to_cpu` tests
        // the other case).
        let cpu = CpuPin::here()?;
        let mut dp = Dataplane::load(table_capacity.max(HARNESS_SLOTS), flow_capacity)?;
        dp.set_settings(Settings {
            hash_seed: SEED,
            tcp_idle_ns: IDLE.as_nanos() as u64,
            udp_idle_ns: IDLE.as_nanos() as u64,
            ..Settings::default()
        })?;
        dp.set_iface(LOOPBACK_IFINDEX, LB_MAC)?;
        if let Some(net) = &net {
            dp.set_iface(net.cl0, LB_MAC)?;
            dp.set_iface(net.bk0, LB_BK_MAC)?;
            dp.set_tx_port(net.cl0)?;
            dp.set_tx_port(net.bk0)?;
            // Attached somewhere (a veth that is down and receives nothing), the
            // program stays in the kernel's XDP dispatcher; otherwise every
            // BPF_PROG_TEST_RUN adds and removes it there and waits for an RCU grace period
            // twice, which takes milliseconds on a busy machine.
            dp.attach(net.idle, lb_userspace::config::XdpMode::Generic)?;
        }
        for (i, mac) in BACKEND_MACS.iter().enumerate() {
            let ip = Ipv4Addr::new(10, 99, 0, 21 + i as u8);
            dp.set_backend(i as u32, backend(ip.into(), Some(*mac), 80))?;
            dp.set_backend(
                DR6_BACKEND_BASE + i as u32,
                backend(dr_backend6(i).into(), Some(*mac), 80),
            )?;
            dp.set_backend(
                NAT_BACKEND_BASE + i as u32,
                backend(nat_backend(i).into(), None, NAT_BACKEND_PORT),
            )?;
            dp.set_backend(
                NAT6_BACKEND_BASE + i as u32,
                backend(nat_backend6(i).into(), None, NAT_BACKEND_PORT),
            )?;
        }
        dp.set_backend(
            UNRESOLVED_BACKEND_ID,
            Backend {
                addr: addr::from_ip(Ipv4Addr::new(10, 99, 0, 24).into()),
                mac: [0; 6],
                port_be: 0,
                flags: BACKEND_F_PRESENT,
            },
        )?;
        let table = maglev::build(&backend_keys(), TABLE_SIZE, SEED);
        dp.write_table(0, &table)?;
        dp.write_table(
            TABLE_SIZE,
            &vec![UNRESOLVED_BACKEND_ID; TABLE_SIZE as usize],
        )?;
        let table6 = table_of(
            &keys((0..3).map(|i| dr_backend6(i).into()), 80),
            TABLE_SIZE,
            DR6_BACKEND_BASE,
        );
        dp.write_table(2 * TABLE_SIZE, &table6)?;
        let nat_table = table_of(
            &keys((0..3).map(|i| nat_backend(i).into()), NAT_BACKEND_PORT),
            NAT_TABLE_SIZE,
            NAT_BACKEND_BASE,
        );
        dp.write_table(3 * TABLE_SIZE, &nat_table)?;
        let nat_table6 = table_of(
            &keys((0..3).map(|i| nat_backend6(i).into()), NAT_BACKEND_PORT),
            NAT_TABLE_SIZE,
            NAT6_BACKEND_BASE,
        );
        dp.write_table(3 * TABLE_SIZE + NAT_TABLE_SIZE, &nat_table6)?;

        let vips = [
            (vip_key(80, 6), vip_info(0, MODE_DR, 0, TABLE_SIZE)),
            (vip_key(80, 17), vip_info(1, MODE_DR, 0, TABLE_SIZE)),
            (vip_key(EMPTY_VIP_PORT, 17), vip_info(2, MODE_DR, 0, 0)),
            (
                vip_key(UNRESOLVED_VIP_PORT, 6),
                vip_info(3, MODE_DR, TABLE_SIZE, TABLE_SIZE),
            ),
            (
                vip_key_of(VIP6.into(), 80, 6),
                vip_info(4, MODE_DR, 2 * TABLE_SIZE, TABLE_SIZE),
            ),
            (
                vip_key_of(VIP6.into(), 80, 17),
                vip_info(5, MODE_DR, 2 * TABLE_SIZE, TABLE_SIZE),
            ),
            (
                vip_key_of(NAT_VIP.into(), NAT_PORT, 6),
                vip_info(6, MODE_NAT, 3 * TABLE_SIZE, NAT_TABLE_SIZE),
            ),
            (
                vip_key_of(NAT_VIP.into(), NAT_PORT, 17),
                vip_info(7, MODE_NAT, 3 * TABLE_SIZE, NAT_TABLE_SIZE),
            ),
            (
                vip_key_of(NAT_VIP6.into(), NAT_PORT, 6),
                vip_info(8, MODE_NAT, 3 * TABLE_SIZE + NAT_TABLE_SIZE, NAT_TABLE_SIZE),
            ),
            (
                vip_key_of(NAT_VIP6.into(), NAT_PORT, 17),
                vip_info(9, MODE_NAT, 3 * TABLE_SIZE + NAT_TABLE_SIZE, NAT_TABLE_SIZE),
            ),
        ];
        for (key, info) in vips {
            dp.set_vip(key, info)?;
        }
        Ok(Harness {
            dp,
            table,
            table6,
            nat_table,
            nat_table6,
            net,
            _cpu: cpu,
        })
    }

    /// The namespace of a harness from [`Harness::load_in_fibnet`].
    pub fn net(&self) -> &FibNet {
        self.net
            .as_ref()
            .expect("this test needs Harness::load_in_fibnet")
    }

    /// Replaces the balanced VIPs' lookup table (as the agent does on a backend change).
    pub fn set_table(&mut self, table: Vec<u32>) {
        self.dp.write_table(0, &table).unwrap();
        self.table = table;
    }

    /// Adds or removes backend `id` (0..3) the way the agent does: the entry's presence.
    pub fn set_backend_present(&mut self, id: u32, present: bool) {
        let backend = if present {
            backend(
                Ipv4Addr::new(10, 99, 0, 21 + id as u8).into(),
                Some(BACKEND_MACS[id as usize]),
                80,
            )
        } else {
            Backend::default()
        };
        self.dp.set_backend(id, backend).unwrap();
    }

    /// The backend index the lookup table gives a TCP flow from the client's `sport`.
    pub fn expected_mac_index(&self, sport: u16) -> usize {
        let mac = self.expected_mac(CLIENT, sport, 80, 6);
        BACKEND_MACS.iter().position(|m| *m == mac).unwrap()
    }

    /// Which backend (index into `BACKEND_MACS`) a forwarded frame was sent to.
    pub fn backend_of(out: &[u8]) -> usize {
        BACKEND_MACS
            .iter()
            .position(|m| out[..6] == m[..])
            .expect("destination MAC is a backend's")
    }

    /// CPUs online (the harness's own thread is restricted to one).
    pub fn cpus() -> usize {
        // SAFETY: no preconditions.
        unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize
    }

    /// From now on, runs frames on `cpu` (and so with its flow cache).
    pub fn move_to_cpu(&mut self, cpu: usize) {
        move_thread_to_cpu(cpu).unwrap();
    }

    /// Runs one frame and returns the verdict, the output bytes and the one reason whose
    /// counter moved.
    pub fn run(&mut self, frame: &[u8]) -> (u32, Vec<u8>, Reason) {
        self.run_on(LOOPBACK_IFINDEX, frame)
    }

    /// [`Harness::run`] as if `frame` arrived on interface `ifindex`.
    pub fn run_on(&mut self, ifindex: u32, frame: &[u8]) -> (u32, Vec<u8>, Reason) {
        let before = self.dp.reason_counters().unwrap();
        let (verdict, out) = self.dp.test_run_on(ifindex, frame).unwrap();
        let after = self.dp.reason_counters().unwrap();
        let moved: Vec<Reason> = before
            .iter()
            .zip(&after)
            .filter(|((_, b), (_, a))| a.packets != b.packets)
            .map(|((r, _), _)| *r)
            .collect();
        assert_eq!(
            moved.len(),
            1,
            "exactly one reason counter must move per packet, moved: {moved:?}"
        );
        let (_, b) = before[moved[0] as usize];
        let (_, a) = after[moved[0] as usize];
        assert_eq!(
            a,
            Counter {
                packets: b.packets + 1,
                bytes: b.bytes + frame.len() as u64
            }
        );
        assert_eq!(
            verdict,
            moved[0].verdict() as u32,
            "the verdict is the reason's"
        );
        (verdict, out, moved[0])
    }

    /// The backend MAC the program must pick for a TCP/UDP flow to the balanced VIP.
    pub fn expected_mac(&self, src: Ipv4Addr, sport: u16, dport: u16, proto: u8) -> [u8; 6] {
        let id = self.expected_backend(src.into(), sport, VIP.into(), dport, proto);
        BACKEND_MACS[id as usize]
    }

    /// The backend id the lookup table gives a new flow to one of the balanced VIPs (by
    /// its address: [`VIP`], [`VIP6`], [`NAT_VIP`], [`NAT_VIP6`]).
    pub fn expected_backend(
        &self,
        src: IpAddr,
        sport: u16,
        vip: IpAddr,
        dport: u16,
        proto: u8,
    ) -> u32 {
        let key = flow_key(src, sport, vip, dport, proto);
        let table = if vip == IpAddr::V4(VIP) {
            &self.table
        } else if vip == IpAddr::V6(VIP6) {
            &self.table6
        } else if vip == IpAddr::V4(NAT_VIP) {
            &self.nat_table
        } else if vip == IpAddr::V6(NAT_VIP6) {
            &self.nat_table6
        } else {
            panic!("{vip} is not a balanced VIP of the harness")
        };
        table[(flow_hash(&key, SEED) % table.len() as u32) as usize]
    }
}

/// `frame` as DR forwarding must leave it: new MACs, every other byte unchanged.
pub fn with_macs(frame: &[u8], dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    let mut out = frame.to_vec();
    out[0..6].copy_from_slice(&dst);
    out[6..12].copy_from_slice(&src);
    out
}

/// A network namespace for deterministic FIB answers, entered by the thread that created
/// it until dropped (then left and deleted):
///
/// ```text
///   cl0 (LB_MAC)     10.99.0.1/24, 2001:db8::1/64   peer cl1   client side
///       neighbours   CLIENT, CLIENT6 → CLIENT_MAC; ROUTER, ROUTER6 → ROUTER_MAC
///       default routes via ROUTER / ROUTER6
///   bk0 (LB_BK_MAC)  10.1.0.1/24, fd00:1::1/64      peer bk1   backend side
///       neighbours   nat_backend(i), nat_backend6(i) → NAT_BACKEND_MACS[i] (not NO_NEIGH_BACKEND)
///   blackhole 10.2.0.0/24; forwarding on for both families
/// ```
pub struct FibNet {
    pub name: String,
    pub cl0: u32,
    pub bk0: u32,
    /// A veth, down: the program is attached there only to stay loaded in the
    /// XDP dispatcher.
    pub idle: u32,
    guard: Option<netns::NetnsGuard>,
}

impl FibNet {
    pub fn create() -> anyhow::Result<FibNet> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "lbf{:x}{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        netns::add(&name)?;
        // From here on, dropping `net` deletes the namespace, also when setup fails.
        let mut net = FibNet {
            name,
            cl0: 0,
            bk0: 0,
            idle: 0,
            guard: None,
        };
        net.setup()
            .with_context(|| format!("setting up namespace {}", net.name))?;
        Ok(net)
    }

    fn setup(&mut self) -> anyhow::Result<()> {
        let mac = |m: [u8; 6]| {
            m.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":")
        };
        let mut lines = vec![
            "link set lo up".to_owned(),
            format!(
                "link add cl0 address {} type veth peer name cl1",
                mac(LB_MAC)
            ),
            format!(
                "link add bk0 address {} type veth peer name bk1",
                mac(LB_BK_MAC)
            ),
        ];
        lines.push("link add idle0 type veth peer name idle1".to_owned());
        for dev in ["cl0", "cl1", "bk0", "bk1"] {
            lines.push(format!("link set {dev} up"));
        }
        lines.extend([
            "addr add 10.99.0.1/24 dev cl0".to_owned(),
            "addr add 2001:db8::1/64 dev cl0 nodad".to_owned(),
            "addr add 10.1.0.1/24 dev bk0".to_owned(),
            "addr add fd00:1::1/64 dev bk0 nodad".to_owned(),
        ]);
        for (ip, m) in [
            (IpAddr::from(CLIENT), CLIENT_MAC),
            (CLIENT6.into(), CLIENT_MAC),
            (ROUTER.into(), ROUTER_MAC),
            (ROUTER6.into(), ROUTER_MAC),
        ] {
            lines.push(format!(
                "neigh add {ip} lladdr {} dev cl0 nud permanent",
                mac(m)
            ));
        }
        for (i, m) in NAT_BACKEND_MACS.iter().enumerate() {
            for ip in [IpAddr::from(nat_backend(i)), nat_backend6(i).into()] {
                lines.push(format!(
                    "neigh add {ip} lladdr {} dev bk0 nud permanent",
                    mac(*m)
                ));
            }
        }
        lines.extend([
            format!("route add default via {ROUTER} dev cl0"),
            format!("route add default via {ROUTER6} dev cl0"),
            "route add blackhole 10.2.0.0/24".to_owned(),
        ]);
        netns::ip_batch(&self.name, &lines)?;
        netns::sysctl(
            &self.name,
            &["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"],
        )?;
        self.cl0 = netns::ifindex(&self.name, "cl0")?;
        self.bk0 = netns::ifindex(&self.name, "bk0")?;
        self.idle = netns::ifindex(&self.name, "idle0")?;
        self.guard = Some(netns::enter(&self.name)?);
        Ok(())
    }

    /// Sets a sysctl in the namespace (e.g. to turn forwarding off).
    pub fn sysctl(&self, setting: &str) -> anyhow::Result<()> {
        netns::sysctl(&self.name, &[setting])
    }
}

impl Drop for FibNet {
    fn drop(&mut self) {
        // Leave first: a namespace being deleted must not be the thread's.
        drop(self.guard.take());
        if let Err(e) = netns::del(&self.name) {
            eprintln!("cannot delete namespace {}: {e:#}", self.name);
        }
    }
}

/// Restricts the calling thread to `cpu`.
fn move_thread_to_cpu(cpu: usize) -> anyhow::Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET stays within it for cpu < 1024.
    let set = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        set
    };
    set_affinity(&set).with_context(|| format!("moving the harness's thread to CPU {cpu}"))
}

fn set_affinity(set: &libc::cpu_set_t) -> anyhow::Result<()> {
    // SAFETY: the set outlives the call; the size is the set's.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) };
    if rc != 0 {
        anyhow::bail!("sched_setaffinity: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Keeps the calling thread on the CPU it runs on; dropped, gives it back the CPUs it had.
struct CpuPin {
    previous: libc::cpu_set_t,
}

impl CpuPin {
    fn here() -> anyhow::Result<CpuPin> {
        // SAFETY: a zeroed cpu_set_t is a valid set to write to; the size is the set's.
        let previous = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
                anyhow::bail!("sched_getaffinity: {}", std::io::Error::last_os_error());
            }
            set
        };
        // SAFETY: no preconditions.
        let cpu = unsafe { libc::sched_getcpu() };
        move_thread_to_cpu(usize::try_from(cpu).context("sched_getcpu")?)?;
        Ok(CpuPin { previous })
    }
}

impl Drop for CpuPin {
    fn drop(&mut self) {
        if let Err(e) = set_affinity(&self.previous) {
            eprintln!("giving the harness's thread its CPUs back: {e:#}");
        }
    }
}

/// The program's flow key of a packet, as the parser builds it from the wire.
pub fn flow_key(src: IpAddr, sport: u16, dst: IpAddr, dport: u16, proto: u8) -> FlowKey {
    FlowKey {
        src: addr::from_ip(src),
        dst: addr::from_ip(dst),
        sport_be: sport.to_be(),
        dport_be: dport.to_be(),
        proto,
        _pad: [0; 3],
    }
}
