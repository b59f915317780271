//! Malformed VRRP adverts sent at a running lbd through the real kernel path: each is
//! counted under its reason by the instance it was meant for, none is accepted, and no
//! instance changes state, although every one of them carries priority 255 (which, if
//! accepted, would make a master yield).
//!
//! Only what the kernel delivers to a protocol-112 raw socket can be tested this way. A bad
//! IP header checksum, a short IP total length, a wrong protocol or a non-IP frame never
//! reach the socket, and fragments arrive reassembled; the codec's own tests cover those
//! reasons (`vrrp::wire` tests, on frames built from keepalived's captures), and the
//! machine's tests the ones no packet from another node can trigger (`from_self`: the
//! kernel drops a packet with a local source address, `not_running`).
//!
//! Needs root; `cargo xtask test -- --test vrrp_malformed`.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, SocketAddrV4},
    path::Path,
    time::{Duration, Instant},
};

use lb_tests::{lab::FIRST_LB_ADDR, netns, require_root, vrrp::wait_lbd_state, Lab};
use lb_userspace::{
    control::{self, Command, StatusReport, VrrpStatus},
    vrrp::wire::{Auth, ChecksumKind, Ipv4Header, Repr, Version, MULTICAST_V4, PROTOCOL},
};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

const CLIENT: Ipv4Addr = lb_tests::lab::CLIENT_ADDR;
const GROUP: Ipv4Addr = MULTICAST_V4;
/// lbd's node: the destination of unicast adverts.
const NODE: Ipv4Addr = FIRST_LB_ADDR;

/// One instance per kind of check: VRRPv3 multicast, VRRPv2 with a password, an address
/// owner (priority 255), and VRRPv3 unicast with one peer (the second LB node, idle).
const CONFIG: &str = r#"
[[vrrp]]
name = "v3"
vrid = 51
priority = 200
advert_interval = "100ms"
addresses = ["10.99.0.50"]

[[vrrp]]
name = "v2"
vrid = 52
priority = 200
version = 2
advert_interval = "1s"
auth_pass = "secret1"
addresses = ["10.99.0.51"]

[[vrrp]]
name = "owner"
vrid = 53
priority = 255
advert_interval = "100ms"
addresses = ["10.99.0.52"]

[[vrrp]]
name = "unicast"
vrid = 54
priority = 200
advert_interval = "100ms"
unicast_peers = ["10.99.0.11"]
addresses = ["10.99.0.53"]
"#;

const INSTANCES: [&str; 4] = ["v3", "v2", "owner", "unicast"];

fn sum(acc: u32, data: &[u8]) -> u32 {
    let mut acc = acc;
    for c in data.chunks(2) {
        acc += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    acc
}

fn finish(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// Recomputes the checksum of a VRRP message after a test changed it, so only the
/// intended defect remains (v3: over the pseudo-header; v2: over the message).
fn refix(msg: &mut [u8], v3: bool, src: Ipv4Addr, dst: Ipv4Addr) {
    if msg.len() < 8 {
        return;
    }
    msg[6..8].copy_from_slice(&[0, 0]);
    let acc = if v3 {
        let len = msg.len() as u16;
        let acc = sum(0, &src.octets());
        let acc = sum(acc, &dst.octets());
        sum(acc, &[0, PROTOCOL, (len >> 8) as u8, len as u8])
    } else {
        0
    };
    let c = finish(sum(acc, msg));
    msg[6..8].copy_from_slice(&c.to_be_bytes());
}

/// A good advert for `vrid` with priority 255, from the client to `dst`.
fn advert(vrid: u8, version: Version, interval_cs: u16, auth: Auth, dst: Ipv4Addr) -> Vec<u8> {
    let repr = Repr {
        version,
        vrid,
        priority: 255,
        interval_cs,
        auth,
        addrs: vec![IpAddr::V4(Ipv4Addr::new(10, 99, 0, 50 + vrid - 51))],
    };
    let kind = ChecksumKind::default_for(version);
    repr.to_bytes(IpAddr::V4(CLIENT), IpAddr::V4(dst), kind)
        .unwrap()
}

fn v3(vrid: u8) -> Vec<u8> {
    advert(vrid, Version::V3, 10, Auth::None, GROUP)
}

fn v2(vrid: u8, pass: &str) -> Vec<u8> {
    advert(vrid, Version::V2, 100, Auth::pass(pass).unwrap(), GROUP)
}

/// A packet to send: the VRRP message, its IP destination and TTL.
struct Case {
    what: String,
    msg: Vec<u8>,
    dst: Ipv4Addr,
    ttl: u8,
    /// (instance, reason) of every count this packet must add.
    counts: Vec<(&'static str, &'static str)>,
}

fn case(what: impl Into<String>, msg: Vec<u8>, counts: &[(&'static str, &'static str)]) -> Case {
    Case {
        what: what.into(),
        msg,
        dst: GROUP,
        ttl: 255,
        counts: counts.to_vec(),
    }
}

fn edited(mut msg: Vec<u8>, v3: bool, edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    edit(&mut msg);
    refix(&mut msg, v3, CLIENT, GROUP);
    msg
}

fn cases() -> Vec<Case> {
    let all = |reason| INSTANCES.iter().map(|i| (*i, reason)).collect::<Vec<_>>();
    let mut c = vec![
        Case {
            ttl: 254,
            ..case("TTL 254", v3(51), &[("v3", "bad_ttl")])
        },
        Case {
            ttl: 1,
            ..case("TTL 1", v2(52, "secret1"), &[("v2", "bad_ttl")])
        },
        case(
            "version 4",
            edited(v3(51), true, |m| m[0] = 0x41),
            &[("v3", "bad_version")],
        ),
        case(
            "version 1",
            edited(v2(52, "secret1"), false, |m| m[0] = 0x11),
            &[("v2", "bad_version")],
        ),
        case(
            "type 2",
            edited(v3(51), true, |m| m[0] = 0x32),
            &[("v3", "bad_type")],
        ),
        case(
            "checksum off by one",
            {
                let mut m = v3(51);
                m[7] ^= 1;
                m
            },
            &[("v3", "bad_checksum")],
        ),
        case(
            "v2 checksum off by one",
            {
                let mut m = v2(52, "secret1");
                m[6] ^= 0x80;
                m
            },
            &[("v2", "bad_checksum")],
        ),
        case(
            "no addresses",
            edited(v3(51), true, |m| {
                m[3] = 0;
                m.truncate(8);
            }),
            &[("v3", "bad_addr_count")],
        ),
        case(
            "interval 0",
            edited(v3(51), true, |m| m[4..6].copy_from_slice(&[0, 0])),
            &[("v3", "bad_interval")],
        ),
        case(
            "four bytes more than the count explains",
            edited(v3(51), true, |m| m.extend_from_slice(&[10, 99, 0, 60])),
            &[("v3", "length_mismatch")],
        ),
        case(
            "count 2 with one address",
            edited(v3(51), true, |m| m[3] = 2),
            &[("v3", "truncated")],
        ),
        case(
            "auth type 2 (IP AH)",
            edited(v2(52, "secret1"), false, |m| m[4] = 2),
            &[("v2", "unsupported_auth")],
        ),
        case(
            "VRID of no instance",
            v3(99),
            // The unicast instance drops it earlier: it is not from its peer.
            &[
                ("v3", "wrong_vrid"),
                ("v2", "wrong_vrid"),
                ("owner", "wrong_vrid"),
                ("unicast", "unknown_peer"),
            ],
        ),
        case(
            "VRRPv2 to a VRRPv3 instance",
            advert(51, Version::V2, 100, Auth::None, GROUP),
            &[("v3", "version_mismatch")],
        ),
        case(
            "wrong password",
            v2(52, "secret2"),
            &[("v2", "auth_mismatch")],
        ),
        case(
            "no password",
            advert(52, Version::V2, 100, Auth::None, GROUP),
            &[("v2", "auth_mismatch")],
        ),
        case(
            "VRRPv2 interval 2 s against 1 s",
            advert(52, Version::V2, 200, Auth::pass("secret1").unwrap(), GROUP),
            &[("v2", "interval_mismatch")],
        ),
        case(
            "advert to the address owner",
            v3(53),
            &[("owner", "local_owner")],
        ),
        Case {
            dst: NODE,
            ..case(
                "unicast advert from a node that is not a peer",
                advert(54, Version::V3, 10, Auth::None, NODE),
                &[("unicast", "unknown_peer")],
            )
        },
    ];
    // Every truncation of a VRRPv3 and a VRRPv2 advert. Below two bytes the VRID cannot be
    // read, so every instance on the socket counts the packet.
    for (good, name) in [(v3(51), "v3"), (v2(52, "secret1"), "v2")] {
        for len in 0..good.len() {
            let counts = if len < 2 {
                all("truncated")
            } else {
                vec![(name, "truncated")]
            };
            c.push(case(
                format!("{name} advert cut to {len} bytes"),
                good[..len].to_vec(),
                &counts,
            ));
        }
    }
    c
}

fn status(socket: &Path) -> Vec<VrrpStatus> {
    let v = control::request(socket, &Command::Status).expect("status");
    serde_json::from_value::<StatusReport>(v).unwrap().vrrp
}

type Counts = BTreeMap<(String, String), u64>;

fn counts(all: &[VrrpStatus]) -> Counts {
    let mut c = Counts::new();
    for s in all {
        for (reason, n) in &s.ignored {
            c.insert((s.name.clone(), reason.clone()), *n);
        }
    }
    c
}

fn delta(after: &Counts, before: &Counts) -> Counts {
    after
        .iter()
        .map(|(k, n)| (k.clone(), n - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

#[test]
fn vrrp_malformed_adverts_are_counted_per_reason_and_change_nothing() {
    if !require_root("vrrp_malformed_adverts_are_counted_per_reason_and_change_nothing") {
        return;
    }
    let lab = Lab::builder()
        .backends(1)
        .lb_nodes(2)
        .floating_vip()
        .build()
        .expect("lab setup");
    let config = lab.write_lbd_config_on(0, CONFIG);
    let lbd = lab.spawn_lbd_on(0, &config).expect("lbd starts");
    // Alone on the link, every instance becomes master; the VRRPv2 one last, after
    // 3 s + Skew_Time.
    let start = Instant::now();
    while status(lbd.socket()).iter().any(|s| s.state != "master") {
        assert!(
            start.elapsed() < Duration::from_secs(6),
            "not all master: {:#?}",
            status(lbd.socket())
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_lbd_state(lbd.socket(), "master", Duration::from_secs(1)).unwrap();
    let before_status = status(lbd.socket());
    let before = counts(&before_status);

    let cases = cases();
    let mut want = Counts::new();
    for c in &cases {
        for (instance, reason) in &c.counts {
            *want
                .entry(((*instance).to_owned(), (*reason).to_owned()))
                .or_default() += 1;
        }
    }
    netns::run_in(&lab.client().ns, || {
        let sock = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(255)))?;
        sock.bind_device(Some(b"eth0"))?;
        for c in &cases {
            let header = Ipv4Header {
                src: CLIENT,
                dst: c.dst,
                tos: 0xc0,
                ident: 1,
                dont_fragment: false,
                ttl: c.ttl,
            };
            let mut packet = vec![0u8; Ipv4Header::LEN + c.msg.len()];
            header.emit(&mut packet, PROTOCOL, c.msg.len()).unwrap();
            packet[Ipv4Header::LEN..].copy_from_slice(&c.msg);
            sock.send_to(&packet, &SockAddr::from(SocketAddrV4::new(c.dst, 0)))
                .map_err(|e| anyhow::anyhow!("sending {:?}: {e}", c.what))?;
            // One at a time: a burst could overflow the receive buffer, and a lost
            // packet would read as a miscount.
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    })
    .expect("sending the malformed adverts");

    let deadline = Instant::now() + Duration::from_secs(3);
    let mut got = delta(&counts(&status(lbd.socket())), &before);
    while got != want && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        got = delta(&counts(&status(lbd.socket())), &before);
    }
    // Nothing arrives late either.
    std::thread::sleep(Duration::from_millis(200));
    let after_status = status(lbd.socket());
    let got = delta(&counts(&after_status), &before);
    assert_eq!(
        got,
        want,
        "counts per (instance, reason) differ; cases:\n{}",
        cases
            .iter()
            .map(|c| format!("  {}: {:?}", c.what, c.counts))
            .collect::<Vec<_>>()
            .join("\n")
    );
    eprintln!(
        "{} malformed adverts, {} counts: {:?}",
        cases.len(),
        want.values().sum::<u64>(),
        got
    );
    for (b, a) in before_status.iter().zip(&after_status) {
        assert_eq!(a.state, "master", "{a:#?}");
        assert_eq!(
            a.adverts_received, b.adverts_received,
            "{} accepted an advert: {a:#?}",
            a.name
        );
        assert_eq!(a.became_backup, 0, "{a:#?}");
        assert_eq!(a.master, b.master);
        assert!(a.peers.is_empty(), "{} learned a peer: {a:#?}", a.name);
    }
}
