//! 120,000 random and mutated frames through the real XDP program, in a namespace with
//! fixed routes and neighbours (`FibNet`). Whatever comes in: a frame that is not for a VIP
//! (nor a NAT reply, nor an ICMP error about a balanced flow) leaves with XDP_PASS
//! byte-for-byte unchanged; nothing is ever sent anywhere but to the flow's configured
//! backend (DR, NAT) or back to the NAT connection's client; and what is sent differs from
//! what came in exactly in the fields the mode rewrites, with every checksum still summing
//! to what it summed to before (valid stays valid, a corrupt one stays exactly as corrupt).
//!
//! An independent model in this file says what each frame is, including which NAT
//! connections exist (it records them from the requests it predicts are forwarded).

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use lb_common::stats::Verdict;
use lb_tests::{
    frames::{self, icmp4_error, icmp6_error, internet_checksum, Frame},
    program::{
        Harness, BACKEND_MACS, CLIENT, CLIENT6, CLIENT_MAC, DR6_BACKEND_BASE, EMPTY_VIP_PORT,
        LB_BK_MAC, LB_MAC, NAT6_BACKEND_BASE, NAT_BACKEND_BASE, NAT_BACKEND_MACS, NAT_BACKEND_PORT,
        NAT_PORT, NAT_VIP, NAT_VIP6, ROUTER, ROUTER_MAC, UNRESOLVED_VIP_PORT, VIP, VIP6,
    },
};
use rand::{rngs::SmallRng, seq::SliceRandom, Rng, SeedableRng};

const FRAMES: usize = 120_000;

/// Clients whose route the model knows: on the client link, or behind its router.
fn far_client() -> IpAddr {
    Ipv4Addr::new(198, 51, 100, 7).into()
}
fn far_client6() -> IpAddr {
    "2001:db8:ffff::7".parse().unwrap()
}

fn be16(f: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([f[at], f[at + 1]])
}

/// One's-complement sum of `data`, folded, not inverted.
fn ones(data: &[u8]) -> u16 {
    !internet_checksum(data)
}

/// Sums that represent the same value (one's complement has two zeros).
fn same_sum(a: u16, b: u16) -> bool {
    a == b || (a == 0 && b == 0xffff) || (a == 0xffff && b == 0)
}

fn ip_at(f: &[u8], at: usize, v6: bool) -> IpAddr {
    if v6 {
        let o: [u8; 16] = f[at..at + 16].try_into().unwrap();
        Ipv6Addr::from(o).into()
    } else {
        Ipv4Addr::new(f[at], f[at + 1], f[at + 2], f[at + 3]).into()
    }
}

fn put_ip(f: &mut [u8], at: usize, ip: IpAddr) {
    match ip {
        IpAddr::V4(a) => f[at..at + 4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => f[at..at + 16].copy_from_slice(&a.octets()),
    }
}

/// IPv6 addresses the kernel's FIB never forwards between (`rt6_need_strict`: multicast,
/// link-local, loopback): NAT then leaves the translated packet to the kernel.
fn never_forwarded(a: IpAddr) -> bool {
    match a {
        IpAddr::V6(a) => a.is_multicast() || a.is_unicast_link_local() || a.is_loopback(),
        IpAddr::V4(_) => false,
    }
}

/// An IP packet as the model parses it.
#[derive(Clone, Copy, Debug)]
struct Ip {
    v6: bool,
    vlan: bool,
    l3: usize,
    l4: usize,
    end: usize,
    proto: u8,
    src: IpAddr,
    dst: IpAddr,
}

impl Ip {
    fn addr_at(&self, dst: bool) -> usize {
        match (self.v6, dst) {
            (false, false) => self.l3 + 12,
            (false, true) => self.l3 + 16,
            (true, false) => self.l3 + 8,
            (true, true) => self.l3 + 24,
        }
    }
    fn ttl_at(&self) -> usize {
        self.l3 + if self.v6 { 7 } else { 8 }
    }
}

/// Ethernet, one optional VLAN tag, IPv4 or IPv6 with the extension headers the program
/// walks. `None`: something the program leaves to the kernel whatever the addresses.
fn parse_ip(f: &[u8]) -> Option<Ip> {
    let (mut ethertype, mut l3, mut vlan) = (be16(f, 12), 14, false);
    if ethertype == 0x8100 || ethertype == 0x88a8 {
        if f.len() < 18 {
            return None;
        }
        ethertype = be16(f, 16);
        (l3, vlan) = (18, true);
    }
    match ethertype {
        0x0800 => {
            if f.len() < l3 + 20 || f[l3] >> 4 != 4 {
                return None;
            }
            let ihl = (f[l3] & 0x0f) as usize * 4;
            let total = be16(f, l3 + 2) as usize;
            if ihl < 20 || f.len() < l3 + ihl || total < ihl || f.len() < l3 + total {
                return None;
            }
            if be16(f, l3 + 6) & 0x3fff != 0 {
                return None;
            }
            Some(Ip {
                v6: false,
                vlan,
                l3,
                l4: l3 + ihl,
                end: l3 + total,
                proto: f[l3 + 9],
                src: ip_at(f, l3 + 12, false),
                dst: ip_at(f, l3 + 16, false),
            })
        }
        0x86dd => {
            if f.len() < l3 + 40 || f[l3] >> 4 != 6 {
                return None;
            }
            let end = l3 + 40 + be16(f, l3 + 4) as usize;
            if end > f.len() {
                return None;
            }
            let (mut next, mut off) = (f[l3 + 6], l3 + 40);
            for _ in 0..6 {
                if !matches!(next, 0 | 43 | 60) {
                    break;
                }
                if f.len() < off + 4 || (next == 43 && f[off + 3] != 0) {
                    return None;
                }
                next = f[off];
                off += (f[off + 1] as usize + 1) * 8;
            }
            if matches!(next, 0 | 43 | 44 | 60) || off > end {
                return None;
            }
            Some(Ip {
                v6: true,
                vlan,
                l3,
                l4: off,
                end,
                proto: next,
                src: ip_at(f, l3 + 8, true),
                dst: ip_at(f, l3 + 24, true),
            })
        }
        _ => None,
    }
}

/// A NAT connection as the model records it, by reply tuple.
type ReplyTuple = (IpAddr, u16, IpAddr, u16, u8);

/// What the program must do with a frame.
#[derive(Debug)]
enum Expect {
    Pass,
    Drop,
    /// Sent (`Tx` or `Redirect`); `bytes` is the exact output except at the checksum
    /// fields listed in `checks`, each of which must leave its covered data summing to
    /// what it summed to in the input.
    Send {
        verdict: Verdict,
        bytes: Vec<u8>,
        checks: Vec<Check>,
        kind: Kind,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Dr,
    NatRequest,
    NatReply,
    IcmpDr,
    IcmpNat,
    /// Translated, then left to the kernel (verdict `Pass`).
    NatToKernel,
}

/// A checksum field and what it covers.
#[derive(Debug, Clone, Copy)]
enum Check {
    /// IPv4 header at l3 (field l3+10).
    Ip4Header(usize),
    /// TCP/UDP of `ip` (field l4+16 or l4+6); IPv4 UDP 0 stays 0.
    Transport(Ip),
    /// ICMP/ICMPv6 message of `ip` (field l4+2).
    Icmp(Ip),
    /// The quoted transport checksum at `field` of a quoted packet whose addresses are at
    /// `addrs` (`len` bytes each) and ports at `ports`: only the words that changed can be
    /// summed, since the quoted segment is cut short.
    QuotedTransport {
        field: usize,
        addrs: usize,
        len: usize,
        ports: usize,
        zero_stays: bool,
    },
}

impl Check {
    fn field(&self) -> usize {
        match *self {
            Check::Ip4Header(l3) => l3 + 10,
            Check::Transport(ip) => ip.l4 + if ip.proto == 6 { 16 } else { 6 },
            Check::Icmp(ip) => ip.l4 + 2,
            Check::QuotedTransport { field, .. } => field,
        }
    }

    /// The folded sum of what the field covers in `f`; `None` when the field means "no
    /// checksum" (IPv4 UDP 0), which must then stay 0.
    fn sum(&self, f: &[u8]) -> Option<u16> {
        match *self {
            Check::Ip4Header(l3) => {
                let ihl = (f[l3] & 0x0f) as usize * 4;
                Some(ones(&f[l3..l3 + ihl]))
            }
            Check::Transport(ip) | Check::Icmp(ip) => {
                let field = self.field();
                if ip.proto == 17 && !ip.v6 && f[field..field + 2] == [0, 0] {
                    return None;
                }
                let seg = &f[ip.l4..ip.end];
                let (s, d) = (ip.addr_at(false), ip.addr_at(true));
                let alen = if ip.v6 { 16 } else { 4 };
                let mut data = Vec::new();
                if ip.proto != 1 {
                    data.extend(&f[s..s + alen]);
                    data.extend(&f[d..d + alen]);
                    if ip.v6 {
                        data.extend((seg.len() as u32).to_be_bytes());
                        data.extend([0, 0, 0, ip.proto]);
                    } else {
                        data.extend([0, ip.proto]);
                        data.extend((seg.len() as u16).to_be_bytes());
                    }
                }
                data.extend(seg);
                Some(ones(&data))
            }
            Check::QuotedTransport {
                field,
                addrs,
                len,
                ports,
                zero_stays,
            } => {
                if zero_stays && f[field..field + 2] == [0, 0] {
                    return None;
                }
                let data = [
                    &f[addrs..addrs + 2 * len],
                    &f[ports..ports + 4],
                    &f[field..field + 2],
                ]
                .concat();
                Some(ones(&data))
            }
        }
    }
}

struct Model {
    tables: Harness,
    cl0: u32,
    bk0: u32,
    nat: HashMap<ReplyTuple, (IpAddr, u16)>,
    /// The recorded connections whose client the model can route to, per family.
    routable: [Vec<ReplyTuple>; 2],
}

impl Model {
    fn iface_mac(&self, ifindex: u32) -> [u8; 6] {
        if ifindex == self.bk0 {
            LB_BK_MAC
        } else {
            LB_MAC
        }
    }

    /// Where the namespace's FIB sends `dst`, for the addresses the model may meet.
    fn route(&self, dst: IpAddr) -> Option<([u8; 6], u32)> {
        for (i, mac) in NAT_BACKEND_MACS.iter().enumerate() {
            if dst == IpAddr::from(lb_tests::program::nat_backend(i))
                || dst == IpAddr::from(lb_tests::program::nat_backend6(i))
            {
                return Some((*mac, self.bk0));
            }
        }
        if dst == IpAddr::from(CLIENT) || dst == IpAddr::from(CLIENT6) {
            return Some((CLIENT_MAC, self.cl0));
        }
        if dst == far_client() || dst == far_client6() {
            return Some((ROUTER_MAC, self.cl0));
        }
        None
    }

    fn dr_vip(&self, dst: IpAddr, port: u16, proto: u8) -> Option<Result<(), ()>> {
        // Some(Ok): balanced; Some(Err): a VIP whose packets are dropped.
        if dst == IpAddr::from(VIP) {
            return match (port, proto) {
                (80, 6) | (80, 17) => Some(Ok(())),
                (EMPTY_VIP_PORT, 17) | (UNRESOLVED_VIP_PORT, 6) => Some(Err(())),
                _ => None,
            };
        }
        (dst == IpAddr::from(VIP6) && port == 80 && (proto == 6 || proto == 17)).then_some(Ok(()))
    }

    fn is_nat_vip(dst: IpAddr, port: u16, proto: u8) -> bool {
        (dst == IpAddr::from(NAT_VIP) || dst == IpAddr::from(NAT_VIP6))
            && port == NAT_PORT
            && (proto == 6 || proto == 17)
    }

    /// The backend of a new flow: (index into the MAC lists, address).
    fn nat_backend(&self, src: IpAddr, sport: u16, vip: IpAddr, proto: u8) -> (usize, IpAddr) {
        let id = self
            .tables
            .expected_backend(src, sport, vip, NAT_PORT, proto);
        if vip.is_ipv6() {
            let i = (id - NAT6_BACKEND_BASE) as usize;
            (i, lb_tests::program::nat_backend6(i).into())
        } else {
            let i = (id - NAT_BACKEND_BASE) as usize;
            (i, lb_tests::program::nat_backend(i).into())
        }
    }

    fn dr_mac(&self, src: IpAddr, sport: u16, vip: IpAddr, dport: u16, proto: u8) -> [u8; 6] {
        let id = self.tables.expected_backend(src, sport, vip, dport, proto);
        BACKEND_MACS[(if vip.is_ipv6() {
            id - DR6_BACKEND_BASE
        } else {
            id
        }) as usize]
    }

    /// Packets the program counted, under any reason.
    fn packets_counted(&self) -> u64 {
        self.tables
            .dp
            .reason_counters()
            .unwrap()
            .iter()
            .map(|(_, c)| c.packets)
            .sum()
    }

    /// DR: `f` unchanged but for its MACs, sent back out of `ingress` to the backend's `mac`.
    fn dr_forward(&self, f: &[u8], mac: [u8; 6], ingress: u32, kind: Kind) -> Expect {
        let mut bytes = f.to_vec();
        bytes[..6].copy_from_slice(&mac);
        bytes[6..12].copy_from_slice(&self.iface_mac(ingress));
        Expect::Send {
            verdict: Verdict::Tx,
            bytes,
            checks: vec![],
            kind,
        }
    }

    fn classify(&mut self, f: &[u8], ingress: u32) -> Expect {
        let Some(ip) = parse_ip(f) else {
            return Expect::Pass;
        };
        match ip.proto {
            6 | 17 => self.transport(f, ip, ingress),
            1 if !ip.v6 => self.icmp(f, ip, ingress),
            58 if ip.v6 => self.icmp(f, ip, ingress),
            _ => Expect::Pass,
        }
    }

    fn transport(&mut self, f: &[u8], ip: Ip, ingress: u32) -> Expect {
        let min = if ip.proto == 6 { 20 } else { 8 };
        if ip.l4 + min > ip.end {
            return Expect::Pass;
        }
        let (sport, dport) = (be16(f, ip.l4), be16(f, ip.l4 + 2));
        match self.dr_vip(ip.dst, dport, ip.proto) {
            Some(Ok(())) => {
                let mac = self.dr_mac(ip.src, sport, ip.dst, dport, ip.proto);
                return self.dr_forward(f, mac, ingress, Kind::Dr);
            }
            Some(Err(())) => return Expect::Drop,
            None => {}
        }
        if Model::is_nat_vip(ip.dst, dport, ip.proto) {
            if ip.vlan {
                return Expect::Pass;
            }
            if f[ip.ttl_at()] <= 1 {
                return Expect::Drop;
            }
            let (_, backend) = self.nat_backend(ip.src, sport, ip.dst, ip.proto);
            let tuple = (backend, NAT_BACKEND_PORT, ip.src, sport, ip.proto);
            if self.nat.insert(tuple, (ip.dst, dport)).is_none() && self.route(ip.src).is_some() {
                self.routable[ip.v6 as usize].push(tuple);
            }
            return self.translated(
                f,
                ip,
                ingress,
                true,
                backend,
                NAT_BACKEND_PORT,
                Kind::NatRequest,
            );
        }
        let tuple = (ip.src, sport, ip.dst, dport, ip.proto);
        match self.nat.get(&tuple) {
            Some(&(vip, vport)) => {
                if ip.vlan {
                    return Expect::Pass;
                }
                if f[ip.ttl_at()] <= 1 {
                    return Expect::Drop;
                }
                self.translated(f, ip, ingress, false, vip, vport, Kind::NatReply)
            }
            None => Expect::Pass,
        }
    }

    /// `f` with its destination (`dst`) or source rewritten to `to`:`port`, TTL decremented
    /// and MACs of the route, as NAT must send it.
    #[allow(clippy::too_many_arguments)]
    fn translated(
        &self,
        f: &[u8],
        ip: Ip,
        ingress: u32,
        dst: bool,
        to: IpAddr,
        port: u16,
        kind: Kind,
    ) -> Expect {
        let (src, next_hop) = if dst { (ip.src, to) } else { (to, ip.dst) };
        let mut b = f.to_vec();
        put_ip(&mut b, ip.addr_at(dst), to);
        let p = ip.l4 + if dst { 2 } else { 0 };
        b[p..p + 2].copy_from_slice(&port.to_be_bytes());
        let mut checks = vec![Check::Transport(ip)];
        if !ip.v6 {
            checks.push(Check::Ip4Header(ip.l3));
        }
        self.routed(b, ingress, src, next_hop, ip, checks, kind)
    }

    /// A translated packet `b` (from `src` to `next_hop`) as the FIB has it sent: TTL
    /// decremented and the route's MACs, or left to the kernel as it is.
    #[allow(clippy::too_many_arguments)]
    fn routed(
        &self,
        mut b: Vec<u8>,
        ingress: u32,
        src: IpAddr,
        next_hop: IpAddr,
        ip: Ip,
        checks: Vec<Check>,
        kind: Kind,
    ) -> Expect {
        if never_forwarded(src) || never_forwarded(next_hop) {
            return Expect::Send {
                verdict: Verdict::Pass,
                bytes: b,
                checks,
                kind: Kind::NatToKernel,
            };
        }
        let Some((mac, egress)) = self.route(next_hop) else {
            panic!("the model cannot route {next_hop}");
        };
        b[ip.ttl_at()] -= 1;
        b[..6].copy_from_slice(&mac);
        b[6..12].copy_from_slice(&self.iface_mac(egress));
        Expect::Send {
            verdict: if egress == ingress {
                Verdict::Tx
            } else {
                Verdict::Redirect
            },
            bytes: b,
            checks,
            kind,
        }
    }

    fn icmp(&mut self, f: &[u8], ip: Ip, ingress: u32) -> Expect {
        if ip.l4 + 8 > ip.end {
            return Expect::Pass;
        }
        let error = if ip.v6 {
            matches!(f[ip.l4], 1..=3)
        } else {
            matches!(f[ip.l4], 3 | 11)
        };
        if !error {
            return Expect::Pass;
        }
        // The quoted packet.
        let q = ip.l4 + 8;
        if q >= f.len() {
            return Expect::Pass;
        }
        let (qproto, ql4, qsrc, qdst) = if ip.v6 {
            if f[q] >> 4 != 6 || q + 40 > f.len() {
                return Expect::Pass;
            }
            (f[q + 6], q + 40, q + 8, q + 24)
        } else {
            let ihl = (f[q] & 0x0f) as usize * 4;
            if f[q] >> 4 != 4 || ihl < 20 || q + 20 > f.len() || be16(f, q + 6) & 0x1fff != 0 {
                return Expect::Pass;
            }
            (f[q + 9], q + ihl, q + 12, q + 16)
        };
        if (qproto != 6 && qproto != 17) || ql4 + 8 > ip.end {
            return Expect::Pass;
        }
        let (qs, qd) = (ip_at(f, qsrc, ip.v6), ip_at(f, qdst, ip.v6));
        let (qsport, qdport) = (be16(f, ql4), be16(f, ql4 + 2));
        if ip.dst != qs {
            return Expect::Pass;
        }
        let alen = if ip.v6 { 16 } else { 4 };
        let quoted_check = |field_off: usize| -> Vec<Check> {
            let mut v = vec![Check::Icmp(ip)];
            let field = ql4 + field_off;
            if field + 2 <= ip.end {
                v.push(Check::QuotedTransport {
                    field,
                    addrs: qsrc,
                    len: alen,
                    ports: ql4,
                    zero_stays: qproto == 17 && !ip.v6,
                });
            }
            if !ip.v6 {
                v.push(Check::Ip4Header(ip.l3));
                v.push(Check::Ip4Header(q));
            }
            v
        };
        let csum_off = if qproto == 6 { 16 } else { 6 };
        // About a packet sent from a VIP to a client.
        match self.dr_vip(qs, qsport, qproto) {
            Some(Ok(())) => {
                let mac = self.dr_mac(qd, qdport, qs, qsport, qproto);
                return self.dr_forward(f, mac, ingress, Kind::IcmpDr);
            }
            // UDP/53 has no backend (left to the kernel); TCP/8080's backend has no MAC.
            Some(Err(())) if qproto == 17 => return Expect::Pass,
            Some(Err(())) => return Expect::Drop,
            None => {}
        }
        let (outer_dst, new_outer, new_inner, new_port, inner_dst) =
            if Model::is_nat_vip(qs, qsport, qproto) {
                if ip.vlan {
                    return Expect::Pass;
                }
                let (_, backend) = self.nat_backend(qd, qdport, qs, qproto);
                (true, backend, backend, NAT_BACKEND_PORT, false)
            } else if let Some(&(vip, vport)) = self.nat.get(&(qd, qdport, qs, qsport, qproto)) {
                if ip.vlan {
                    return Expect::Pass;
                }
                let outer_src = if ip.src == qd { vip } else { ip.src };
                (false, outer_src, vip, vport, true)
            } else {
                return Expect::Pass;
            };
        if f[ip.ttl_at()] <= 1 {
            return Expect::Drop;
        }
        let (src, next_hop) = if outer_dst {
            (ip.src, new_outer)
        } else {
            (new_outer, ip.dst)
        };
        let mut b = f.to_vec();
        put_ip(&mut b, ip.addr_at(outer_dst), new_outer);
        put_ip(&mut b, if inner_dst { qdst } else { qsrc }, new_inner);
        let p = ql4 + if inner_dst { 2 } else { 0 };
        b[p..p + 2].copy_from_slice(&new_port.to_be_bytes());
        self.routed(
            b,
            ingress,
            src,
            next_hop,
            ip,
            quoted_check(csum_off),
            Kind::IcmpNat,
        )
    }
}

/// A client the model can route to, of either family.
fn pool_client(rng: &mut SmallRng, v6: bool) -> IpAddr {
    match (v6, rng.gen_bool(0.5)) {
        (false, true) => CLIENT.into(),
        (false, false) => far_client(),
        (true, true) => CLIENT6.into(),
        (true, false) => far_client6(),
    }
}

/// A base frame and the interface it arrives on.
fn base_frame(rng: &mut SmallRng, m: &Model) -> (Vec<u8>, u32) {
    let sport = rng.gen_range(1024..=65535);
    let src = Ipv4Addr::from(rng.gen::<u32>());
    let port = *[
        80,
        80,
        80,
        EMPTY_VIP_PORT,
        UNRESOLVED_VIP_PORT,
        81,
        rng.gen(),
    ]
    .choose(rng)
    .unwrap();
    let v6 = rng.gen_bool(0.5);
    let proto = *[6u8, 17].choose(rng).unwrap();
    let cl0 = m.cl0;
    match rng.gen_range(0..22) {
        0..=2 => (frames::tcp(src, sport, VIP, port), cl0),
        3..=4 => (frames::udp(src, sport, VIP, port), cl0),
        5 => (frames::vlan_vip_tcp(sport), cl0),
        6 => (frames::vip_tcp_with_options(sport), cl0),
        7 => (
            frames::tcp(src, sport, Ipv4Addr::from(rng.gen::<u32>()), port),
            cl0,
        ),
        8 => (frames::arp_who_has_vip(), cl0),
        9 => (frames::vrrp(VIP), cl0),
        // IPv6 DR, sometimes behind extension headers.
        10..=11 => {
            let f = Frame::new(
                CLIENT6.into(),
                sport,
                VIP6.into(),
                *[80, 80, 81].choose(rng).unwrap(),
            )
            .l4(proto);
            let f = if rng.gen_bool(0.3) {
                let exts = [(0u8, 8usize), (60, 16), (43, 8)];
                frames::with_ipv6_ext(&f, &exts[..rng.gen_range(1..=3)], 0)
            } else {
                f
            };
            (f, cl0)
        }
        // NAT requests, mostly from clients the model can route replies to.
        12..=14 => {
            let client = if rng.gen_bool(0.8) {
                pool_client(rng, v6)
            } else if v6 {
                Ipv6Addr::from(rng.gen::<u128>()).into()
            } else {
                src.into()
            };
            let vip: IpAddr = if v6 { NAT_VIP6.into() } else { NAT_VIP.into() };
            let f = Frame::new(
                client,
                sport,
                vip,
                *[NAT_PORT, NAT_PORT, 81].choose(rng).unwrap(),
            );
            let f = if rng.gen_bool(0.5) {
                f.established()
            } else {
                f
            };
            // Sometimes from the backend side: leaves by the same interface (XDP_TX).
            let ingress = if rng.gen_bool(0.2) { m.bk0 } else { cl0 };
            (f.l4(proto), ingress)
        }
        // NAT replies: to a recorded connection, or to none.
        15..=16 => {
            let (b, bport, c, cport, p) = match m.routable[v6 as usize].choose(rng) {
                Some(t) if rng.gen_bool(0.85) => *t,
                _ => {
                    let i = rng.gen_range(0..3);
                    let b: IpAddr = if v6 {
                        lb_tests::program::nat_backend6(i).into()
                    } else {
                        lb_tests::program::nat_backend(i).into()
                    };
                    (b, NAT_BACKEND_PORT, pool_client(rng, v6), sport, proto)
                }
            };
            let mac = NAT_BACKEND_MACS[0];
            (
                Frame::new(b, bport, c, cport)
                    .macs(mac, LB_BK_MAC)
                    .established()
                    .l4(p),
                m.bk0,
            )
        }
        // ICMP errors: about a DR flow, or a NAT connection from either side.
        17..=19 => icmp_frame(rng, m, v6, proto, sport),
        // Echo requests to the VIPs.
        20 => {
            let mut v = Vec::new();
            let b = etherparse::PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC);
            if v6 {
                b.ipv6(CLIENT6.octets(), VIP6.octets(), 64)
                    .icmpv6_echo_request(1, 1)
                    .write(&mut v, b"ping")
            } else {
                b.ipv4(CLIENT.octets(), NAT_VIP.octets(), 64)
                    .icmpv4_echo_request(1, 1)
                    .write(&mut v, b"ping")
            }
            .unwrap();
            (v, cl0)
        }
        _ => (
            (0..rng.gen_range(14..200)).map(|_| rng.gen()).collect(),
            cl0,
        ),
    }
}

fn icmp_frame(rng: &mut SmallRng, m: &Model, v6: bool, proto: u8, sport: u16) -> (Vec<u8>, u32) {
    let kind4 = etherparse::Icmpv4Type::DestinationUnreachable(
        etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1400 },
    );
    let kind6 = etherparse::Icmpv6Type::PacketTooBig { mtu: 1400 };
    let keep = *[28usize, 48, 64, 2000].choose(rng).unwrap();
    let build = |macs, from: IpAddr, to: IpAddr, quoted: &[u8]| {
        let quoted = &quoted[14..];
        let quoted = &quoted[..keep.min(quoted.len())];
        match (from, to) {
            (IpAddr::V4(a), IpAddr::V4(b)) => icmp4_error(macs, a, b, 64, kind4, quoted),
            (IpAddr::V6(a), IpAddr::V6(b)) => icmp6_error(macs, a, b, 64, kind6, quoted),
            _ => unreachable!(),
        }
    };
    let router: IpAddr = if v6 {
        "2001:db8:99::1".parse().unwrap()
    } else {
        ROUTER.into()
    };
    let client = pool_client(rng, v6);
    match rng.gen_range(0..3) {
        // From the client side, about a packet from a DR or NAT VIP to a client.
        0 | 1 => {
            let vip: IpAddr = match (v6, rng.gen_bool(0.5)) {
                (false, true) => VIP.into(),
                (false, false) => NAT_VIP.into(),
                (true, true) => VIP6.into(),
                (true, false) => NAT_VIP6.into(),
            };
            let quoted = Frame::new(vip, 80, client, sport).established().l4(proto);
            (build((ROUTER_MAC, LB_MAC), router, vip, &quoted), m.cl0)
        }
        // From the backend side, about a translated request.
        _ => {
            let Some(&(b, bport, c, cport, p)) = m.routable[v6 as usize].choose(rng) else {
                let quoted = Frame::new(client, sport, router, 80).l4(proto);
                return (build((ROUTER_MAC, LB_MAC), router, client, &quoted), m.bk0);
            };
            let from = if rng.gen_bool(0.5) { b } else { router };
            let quoted = Frame::new(c, cport, b, bport).ttl(63).l4(p);
            (
                build((NAT_BACKEND_MACS[0], LB_BK_MAC), from, c, &quoted),
                m.bk0,
            )
        }
    }
}

fn mutate(rng: &mut SmallRng, mut f: Vec<u8>) -> Vec<u8> {
    for _ in 0..rng.gen_range(0..4) {
        match rng.gen_range(0..7) {
            // Flip a random byte anywhere.
            0 => {
                let i = rng.gen_range(0..f.len());
                f[i] = rng.gen();
            }
            // Hit the fields the parser decides on: ethertype, version/IHL, length,
            // fragment word, protocol, TTL, addresses, ports.
            1 => {
                let at = *[
                    12usize, 13, 14, 16, 17, 20, 21, 22, 23, 30, 33, 34, 35, 36, 37,
                ]
                .choose(rng)
                .unwrap();
                if at < f.len() {
                    f[at] = rng.gen();
                }
            }
            // The same for IPv6: payload length, next header, hop limit, last address
            // bytes, the first extension or transport header.
            2 => {
                let at = *[18usize, 19, 20, 21, 37, 53, 54, 55, 56, 57, 58]
                    .choose(rng)
                    .unwrap();
                if at < f.len() {
                    f[at] = rng.gen();
                }
            }
            3 => {
                let keep = rng.gen_range(14..=f.len().max(14));
                f.truncate(keep);
            }
            4 => f.extend((0..rng.gen_range(1..40)).map(|_| rng.gen::<u8>())),
            // An IPv4 version nibble with any header length.
            5 if f.len() > 15 => f[14] = 0x40 | rng.gen_range(0..16),
            _ => {}
        }
    }
    if f.len() < 14 {
        f.resize(14, 0);
    }
    f
}

#[test]
fn random_and_mutated_frames_are_passed_untouched_or_sent_only_where_they_belong() {
    if !lb_tests::require_root("random_and_mutated_frames") {
        return;
    }
    let seed = std::env::var("LB_RANDOM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x1b_5eed_u64);
    eprintln!("seed {seed} (set LB_RANDOM_SEED to replay)");
    let mut rng = SmallRng::seed_from_u64(seed);
    let h = Harness::load_in_fibnet();
    let (cl0, bk0) = (h.net().cl0, h.net().bk0);
    let mut m = Model {
        tables: h,
        cl0,
        bk0,
        nat: HashMap::new(),
        routable: [Vec::new(), Vec::new()],
    };
    let before = m.packets_counted();
    let (mut passed, mut dropped) = (0usize, 0usize);
    let mut sent: HashMap<Kind, usize> = HashMap::new();
    for n in 0..FRAMES {
        let (base, ingress) = base_frame(&mut rng, &m);
        let frame = if rng.gen_bool(0.8) {
            mutate(&mut rng, base)
        } else {
            base
        };
        let expect = m.classify(&frame, ingress);
        let (verdict, out) = m.tables.dp.test_run_on(ingress, &frame).unwrap();
        let verdict = Verdict::from_u32(verdict);
        let ctx = || {
            format!(
                "frame #{n} on ifindex {ingress} {:02x?} expected {expect:?}, got {verdict:?} {out:02x?}",
                frame
            )
        };
        match &expect {
            Expect::Pass => {
                passed += 1;
                assert_eq!(verdict, Some(Verdict::Pass), "{}", ctx());
                assert_eq!(out, frame, "{}", ctx());
            }
            Expect::Drop => {
                dropped += 1;
                assert_eq!(verdict, Some(Verdict::Drop), "{}", ctx());
            }
            Expect::Send {
                verdict: v,
                bytes,
                checks,
                kind,
            } => {
                *sent.entry(*kind).or_default() += 1;
                assert_eq!(verdict, Some(*v), "{}", ctx());
                assert_eq!(out.len(), bytes.len(), "{}", ctx());
                let mut want = bytes.clone();
                for c in checks {
                    let at = c.field();
                    want[at..at + 2].copy_from_slice(&out[at..at + 2]);
                }
                assert_eq!(out, want, "{}", ctx());
                for c in checks {
                    match (c.sum(&frame), c.sum(&out)) {
                        (Some(a), Some(b)) => {
                            assert!(same_sum(a, b), "{c:?}: {a:#06x} → {b:#06x}; {}", ctx())
                        }
                        (None, None) => {}
                        other => panic!("{c:?}: {other:?}; {}", ctx()),
                    }
                }
                let mac: [u8; 6] = out[..6].try_into().unwrap();
                assert!(
                    *kind == Kind::NatToKernel
                        || BACKEND_MACS.contains(&mac)
                        || NAT_BACKEND_MACS.contains(&mac)
                        || (matches!(kind, Kind::NatReply | Kind::IcmpNat)
                            && (mac == CLIENT_MAC || mac == ROUTER_MAC)),
                    "sent to {mac:02x?}: {}",
                    ctx()
                );
            }
        }
    }
    let after = m.packets_counted();
    assert_eq!(
        after - before,
        FRAMES as u64,
        "every frame is counted under exactly one reason"
    );
    eprintln!("passed {passed} dropped {dropped} sent {sent:?}");
    // The generator must exercise every outcome substantially, or the test proves little.
    assert!(
        passed > FRAMES / 50 && dropped > FRAMES / 200,
        "{passed} {dropped}"
    );
    for kind in [
        Kind::Dr,
        Kind::NatRequest,
        Kind::NatReply,
        Kind::IcmpDr,
        Kind::IcmpNat,
    ] {
        assert!(
            sent.get(&kind).copied().unwrap_or(0) > FRAMES / 200,
            "{kind:?}: {sent:?}"
        );
    }
    assert!(
        m.tables.dp.nat_entries().unwrap().len() == m.nat.len(),
        "the program holds exactly the NAT connections the model recorded"
    );
}
