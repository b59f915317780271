//! The real XDP program loaded (not attached) with a known set of VIPs and backends, for
//! `BPF_PROG_TEST_RUN` tests and the per-packet benchmark.

use std::net::{IpAddr, Ipv4Addr};

use lb_common::{
    addr,
    backend::{Backend, BACKEND_F_MAC_VALID, BACKEND_F_PRESENT},
    flow::{flow_hash, FlowKey},
    settings::Settings,
    stats::{Counter, Reason},
    vip::{VipInfo, VipKey, MODE_DR},
};
use lb_userspace::{
    dataplane::Dataplane,
    maglev::{self, BackendKey},
};

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
/// `BPF_PROG_TEST_RUN` without a context runs as if received on loopback.
pub const LOOPBACK_IFINDEX: u32 = 1;
const UNRESOLVED_BACKEND_ID: u32 = 3;

/// Loads the real program and configures: VIP 10.99.0.50 TCP/80 and UDP/80 over three
/// backends, UDP/53 with no backends, TCP/8080 with an unresolved backend.
pub struct Harness {
    pub dp: Dataplane,
    pub table: Vec<u32>,
}

/// Flow entries stay fresh for the length of any test.
pub const IDLE: std::time::Duration = std::time::Duration::from_secs(3600);
pub const FLOW_CAPACITY: u32 = 4096;

/// The three backends as Maglev sees them; index i has id i and `BACKEND_MACS[i]`.
pub fn backend_keys() -> Vec<(BackendKey, u32)> {
    (0..3)
        .map(|i| {
            (
                BackendKey {
                    address: IpAddr::V4(Ipv4Addr::new(10, 99, 0, 21 + i)),
                    port: 80,
                },
                1,
            )
        })
        .collect()
}

pub fn vip_key(port: u16, proto: u8) -> VipKey {
    VipKey {
        addr: addr::from_ip(IpAddr::V4(VIP)),
        port_be: port.to_be(),
        proto,
        _pad: 0,
    }
}

impl Harness {
    pub fn load() -> Harness {
        let mut dp = Dataplane::load(4 * TABLE_SIZE, FLOW_CAPACITY).expect("load the XDP program");
        dp.set_settings(Settings {
            hash_seed: SEED,
            _pad: 0,
            tcp_idle_ns: IDLE.as_nanos() as u64,
            udp_idle_ns: IDLE.as_nanos() as u64,
        })
        .unwrap();
        dp.set_iface(LOOPBACK_IFINDEX, LB_MAC).unwrap();
        for (id, mac) in BACKEND_MACS.iter().enumerate() {
            let ip = Ipv4Addr::new(10, 99, 0, 21 + id as u8);
            dp.set_backend(
                id as u32,
                Backend {
                    addr: addr::from_ip(ip.into()),
                    mac: *mac,
                    port_be: 80u16.to_be(),
                    flags: BACKEND_F_PRESENT | BACKEND_F_MAC_VALID,
                },
            )
            .unwrap();
        }
        dp.set_backend(
            UNRESOLVED_BACKEND_ID,
            Backend {
                addr: addr::from_ip(Ipv4Addr::new(10, 99, 0, 24).into()),
                mac: [0; 6],
                port_be: 0,
                flags: BACKEND_F_PRESENT,
            },
        )
        .unwrap();
        let table = maglev::build(&backend_keys(), TABLE_SIZE, SEED);
        dp.write_table(0, &table).unwrap();
        dp.write_table(
            TABLE_SIZE,
            &vec![UNRESOLVED_BACKEND_ID; TABLE_SIZE as usize],
        )
        .unwrap();
        dp.set_vip(
            vip_key(80, 6),
            VipInfo {
                id: 0,
                mode: MODE_DR,
                table_offset: 0,
                table_size: TABLE_SIZE,
                flags: 0,
            },
        )
        .unwrap();
        dp.set_vip(
            vip_key(80, 17),
            VipInfo {
                id: 1,
                mode: MODE_DR,
                table_offset: 0,
                table_size: TABLE_SIZE,
                flags: 0,
            },
        )
        .unwrap();
        dp.set_vip(
            vip_key(EMPTY_VIP_PORT, 17),
            VipInfo {
                id: 2,
                mode: MODE_DR,
                table_offset: 0,
                table_size: 0,
                flags: 0,
            },
        )
        .unwrap();
        dp.set_vip(
            vip_key(UNRESOLVED_VIP_PORT, 6),
            VipInfo {
                id: 3,
                mode: MODE_DR,
                table_offset: TABLE_SIZE,
                table_size: TABLE_SIZE,
                flags: 0,
            },
        )
        .unwrap();
        Harness { dp, table }
    }

    /// Replaces the balanced VIPs' lookup table (as the agent does on a backend change).
    pub fn set_table(&mut self, table: Vec<u32>) {
        self.dp.write_table(0, &table).unwrap();
        self.table = table;
    }

    /// Adds or removes backend `id` (0..3) the way the agent does: the entry's presence.
    pub fn set_backend_present(&mut self, id: u32, present: bool) {
        let backend = if present {
            Backend {
                addr: addr::from_ip(Ipv4Addr::new(10, 99, 0, 21 + id as u8).into()),
                mac: BACKEND_MACS[id as usize],
                port_be: 80u16.to_be(),
                flags: BACKEND_F_PRESENT | BACKEND_F_MAC_VALID,
            }
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

    /// Runs one frame and returns the verdict, the output bytes and the one reason whose
    /// counter moved.
    pub fn run(&mut self, frame: &[u8]) -> (u32, Vec<u8>, Reason) {
        let before = self.dp.reason_counters().unwrap();
        let (verdict, out) = self.dp.test_run(frame).unwrap();
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
        (verdict, out, moved[0])
    }

    /// The backend MAC the program must pick for a TCP/UDP flow to the balanced VIP.
    pub fn expected_mac(&self, src: Ipv4Addr, sport: u16, dport: u16, proto: u8) -> [u8; 6] {
        let key = FlowKey {
            src: addr::from_ip(src.into()),
            dst: addr::from_ip(VIP.into()),
            sport_be: sport.to_be(),
            dport_be: dport.to_be(),
            proto,
            _pad: [0; 3],
        };
        let slot = flow_hash(&key, SEED) % TABLE_SIZE;
        BACKEND_MACS[self.table[slot as usize] as usize]
    }
}

/// `frame` as DR forwarding must leave it: new MACs, every other byte unchanged.
pub fn with_macs(frame: &[u8], dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    let mut out = frame.to_vec();
    out[0..6].copy_from_slice(&dst);
    out[6..12].copy_from_slice(&src);
    out
}
