use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use super::*;
use crate::vrrp::captures::{self, Node, LB1, LB2};

// ---------------------------------------------------------------------------------------
// What the README of shared/vrrp-captures documents, file by file.

/// A run of consecutive adverts from one node with one priority and checksum.
struct Run {
    from: Node,
    priority: u8,
    checksum: u16,
    count: usize,
}

const fn run(from: Node, priority: u8, checksum: u16, count: usize) -> Run {
    Run {
        from,
        priority,
        checksum,
        count,
    }
}

struct Spec {
    file: &'static str,
    frames: usize,
    version: Version,
    vrid: u8,
    interval_cs: u16,
    pass: Option<&'static str>,
    v6: bool,
    /// Unicast: each node sends to the other; otherwise to the multicast group.
    unicast: bool,
    vips: &'static [&'static str],
    adverts: &'static [Run],
    /// IPv4 only: the IP ID of each node's first advert (then +1 per advert).
    first_ids: &'static [(Node, u16)],
    /// Gratuitous ARPs (IPv4) or unsolicited NAs (IPv6).
    announcements: usize,
    /// NAs carry the Router flag (IPv6 forwarding on).
    router: bool,
    /// ARP frames that are not gratuitous (the kernel resolving a unicast peer, replies).
    other_arp: usize,
    /// ICMP protocol unreachable from a stopped node.
    icmp: usize,
}

const VIP1: &[&str] = &["10.77.0.50"];
const VIP3: &[&str] = &["10.77.0.50", "10.77.0.51", "10.77.0.52"];
const VIP6: &[&str] = &["fe80::77:50", "fd77::50"];

const SPECS: &[Spec] = &[
    Spec {
        file: "v2-mcast-pass-1vip.pcap",
        frames: 17,
        version: Version::V2,
        vrid: 51,
        interval_cs: 100,
        pass: Some("kacap42"),
        v6: false,
        unicast: false,
        vips: VIP1,
        adverts: &[run(LB1, 150, 0xcc53, 7)],
        first_ids: &[(LB1, 1)],
        announcements: 10,
        router: false,
        other_arp: 0,
        icmp: 0,
    },
    Spec {
        file: "v2-mcast-noauth-3vip.pcap",
        frames: 37,
        version: Version::V2,
        vrid: 52,
        interval_cs: 100,
        pass: None,
        v6: false,
        unicast: false,
        vips: VIP3,
        adverts: &[run(LB1, 150, 0x2947, 7)],
        first_ids: &[(LB1, 1)],
        announcements: 30,
        router: false,
        other_arp: 0,
        icmp: 0,
    },
    Spec {
        file: "v3-ipv4-mcast-1s-3vip.pcap",
        frames: 37,
        version: Version::V3,
        vrid: 53,
        interval_cs: 100,
        pass: None,
        v6: false,
        unicast: false,
        vips: VIP3,
        adverts: &[run(LB1, 150, 0x2df4, 7)],
        first_ids: &[(LB1, 1)],
        announcements: 30,
        router: false,
        other_arp: 0,
        icmp: 0,
    },
    Spec {
        file: "v3-ipv4-mcast-100ms-3vip.pcap",
        frames: 86,
        version: Version::V3,
        vrid: 54,
        interval_cs: 10,
        pass: None,
        v6: false,
        unicast: false,
        vips: VIP3,
        adverts: &[run(LB1, 150, 0x2e4d, 56)],
        first_ids: &[(LB1, 1)],
        announcements: 30,
        router: false,
        other_arp: 0,
        icmp: 0,
    },
    Spec {
        file: "v3-ipv4-strict.pcap",
        frames: 17,
        version: Version::V3,
        vrid: 67,
        interval_cs: 100,
        pass: None,
        v6: false,
        unicast: false,
        vips: VIP1,
        adverts: &[run(LB1, 150, 0x42f1, 7)],
        first_ids: &[(LB1, 1)],
        announcements: 10,
        router: false,
        other_arp: 0,
        icmp: 0,
    },
    Spec {
        file: "v3-ipv6-mcast-takeover.pcap",
        frames: 40,
        version: Version::V3,
        vrid: 55,
        interval_cs: 100,
        pass: None,
        v6: true,
        unicast: false,
        vips: VIP6,
        adverts: &[run(LB1, 150, 0x3d9c, 3), run(LB2, 100, 0x6f9b, 7)],
        first_ids: &[],
        announcements: 30,
        router: false,
        other_arp: 0,
        icmp: 0,
    },
    Spec {
        file: "v3-ipv6-forwarding-on.pcap",
        frames: 12,
        version: Version::V3,
        vrid: 65,
        interval_cs: 100,
        pass: None,
        v6: true,
        unicast: false,
        vips: VIP6,
        adverts: &[run(LB1, 150, 0x3d92, 2)],
        first_ids: &[],
        announcements: 10,
        router: true,
        other_arp: 0,
        icmp: 0,
    },
    Spec {
        file: "v2-unicast-pass.pcap",
        frames: 27,
        version: Version::V2,
        vrid: 56,
        interval_cs: 100,
        pass: Some("kacap42"),
        v6: false,
        unicast: true,
        vips: VIP1,
        adverts: &[
            run(LB1, 150, 0xcc4e, 4),
            run(LB1, 0, 0x624f, 1),
            run(LB2, 100, 0xfe4e, 5),
        ],
        first_ids: &[(LB1, 1), (LB2, 1)],
        announcements: 10,
        router: false,
        other_arp: 2,
        icmp: 5,
    },
    Spec {
        file: "v3-ipv4-unicast.pcap",
        frames: 27,
        version: Version::V3,
        vrid: 57,
        interval_cs: 100,
        pass: None,
        v6: false,
        unicast: true,
        vips: VIP1,
        adverts: &[
            run(LB1, 150, 0x18b5, 4),
            run(LB1, 0, 0xaeb5, 1),
            run(LB2, 100, 0x4ab5, 5),
        ],
        first_ids: &[(LB1, 1), (LB2, 1)],
        announcements: 10,
        router: false,
        other_arp: 2,
        icmp: 5,
    },
    Spec {
        file: "v2-takeover-sigkill.pcap",
        frames: 19,
        version: Version::V2,
        vrid: 58,
        interval_cs: 100,
        pass: None,
        v6: false,
        unicast: false,
        vips: VIP1,
        adverts: &[run(LB1, 150, 0x3e44, 2), run(LB2, 100, 0x7044, 7)],
        first_ids: &[(LB1, 8), (LB2, 1)],
        announcements: 10,
        router: false,
        other_arp: 0,
        icmp: 0,
    },
    Spec {
        file: "v2-graceful-stop.pcap",
        frames: 21,
        version: Version::V2,
        vrid: 59,
        interval_cs: 100,
        pass: None,
        v6: false,
        unicast: false,
        vips: VIP1,
        adverts: &[
            run(LB1, 150, 0x3e43, 2),
            run(LB1, 0, 0xd443, 1),
            run(LB2, 100, 0x7043, 8),
        ],
        first_ids: &[(LB1, 8), (LB2, 1)],
        announcements: 10,
        router: false,
        other_arp: 0,
        icmp: 0,
    },
    Spec {
        file: "v3-ipv4-takeover-sigkill-100ms.pcap",
        frames: 75,
        version: Version::V3,
        vrid: 60,
        interval_cs: 10,
        pass: None,
        v6: false,
        unicast: false,
        vips: VIP1,
        adverts: &[run(LB1, 150, 0x4352, 7), run(LB2, 100, 0x7551, 58)],
        first_ids: &[(LB1, 67), (LB2, 1)],
        announcements: 10,
        router: false,
        other_arp: 0,
        icmp: 0,
    },
    Spec {
        file: "v3-ipv4-graceful-stop-100ms.pcap",
        frames: 86,
        version: Version::V3,
        vrid: 61,
        interval_cs: 10,
        pass: None,
        v6: false,
        unicast: false,
        vips: VIP1,
        adverts: &[
            run(LB1, 150, 0x4351, 7),
            run(LB1, 0, 0xd951, 1),
            run(LB2, 100, 0x7550, 68),
        ],
        first_ids: &[(LB1, 67), (LB2, 1)],
        announcements: 10,
        router: false,
        other_arp: 0,
        icmp: 0,
    },
    Spec {
        file: "v2-preempt.pcap",
        frames: 23,
        version: Version::V2,
        vrid: 62,
        interval_cs: 100,
        pass: None,
        v6: false,
        unicast: false,
        vips: VIP1,
        adverts: &[run(LB2, 100, 0x7040, 5), run(LB1, 150, 0x3e40, 7)],
        first_ids: &[(LB2, 8), (LB1, 1)],
        announcements: 10,
        router: false,
        other_arp: 1,
        icmp: 0,
    },
    Spec {
        file: "v2-split-brain-heal.pcap",
        frames: 83,
        version: Version::V2,
        vrid: 64,
        interval_cs: 100,
        pass: None,
        v6: false,
        unicast: false,
        vips: VIP1,
        adverts: &[
            run(LB1, 150, 0x3e3e, 1),
            run(LB2, 100, 0x703e, 1),
            run(LB1, 150, 0x3e3e, 2),
            run(LB2, 100, 0x703e, 1),
            run(LB1, 150, 0x3e3e, 1),
            run(LB2, 100, 0x703e, 1),
            run(LB1, 150, 0x3e3e, 1),
            run(LB2, 100, 0x703e, 1),
            run(LB1, 150, 0x3e3e, 1),
            run(LB2, 100, 0x703e, 1),
            run(LB1, 150, 0x3e3e, 7),
        ],
        first_ids: &[(LB1, 1), (LB2, 1)],
        announcements: 65,
        router: false,
        other_arp: 0,
        icmp: 0,
    },
];

/// What one captured frame turned out to be.
enum Kind {
    Advert(AdvertFrame),
    Arp(Arp),
    Na(NeighborAdvert),
    Icmp,
}

fn classify(file: &str, index: usize, data: &[u8]) -> Kind {
    if let Ok(advert) = AdvertFrame::parse(data) {
        return Kind::Advert(advert);
    }
    if let Ok(arp) = Arp::parse(data) {
        return Kind::Arp(arp);
    }
    if let Ok(na) = NeighborAdvert::parse(data) {
        return Kind::Na(na);
    }
    if data.len() > 14 && data[12..14] == [0x08, 0x00] {
        if let Ok((h, icmp)) = Ipv4Header::parse(&data[14..], 1) {
            // Type 3 code 2: protocol unreachable, quoting a VRRP packet.
            assert_eq!(
                &icmp[..2],
                &[3, 2],
                "{file} frame {}: ICMP type/code",
                index + 1
            );
            assert_eq!(
                icmp[8 + 9],
                PROTOCOL,
                "{file} frame {}: quoted protocol",
                index + 1
            );
            assert_eq!(h.ttl, 64);
            return Kind::Icmp;
        }
    }
    panic!(
        "{file} frame {}: neither a VRRP advert, ARP, NA nor ICMP: {:?}",
        index + 1,
        AdvertFrame::parse(data).err()
    );
}

fn vips(spec: &Spec) -> Vec<IpAddr> {
    spec.vips.iter().map(|v| v.parse().unwrap()).collect()
}

fn peer(node: Node) -> Node {
    if node == LB1 {
        LB2
    } else {
        LB1
    }
}

#[test]
fn vrrp_every_capture_file_has_a_spec() {
    let on_disk = captures::files();
    let mut specified: Vec<String> = SPECS.iter().map(|s| s.file.to_string()).collect();
    specified.sort();
    assert_eq!(on_disk, specified, "capture files and specs disagree");
    assert_eq!(on_disk.len(), 15);
}

/// Every frame of every capture: adverts decoded field by field against the README and
/// re-encoded to the same bytes; GARPs and NAs checked and re-emitted byte for byte.
#[test]
fn vrrp_captures_decode_and_reencode() {
    let mut total_adverts = 0;
    for spec in SPECS {
        let file = spec.file;
        let frames = captures::load(file);
        assert_eq!(frames.len(), spec.frames, "{file}: frame count");
        let vips = vips(spec);

        let mut adverts: Vec<(Node, u8, u16)> = Vec::new();
        let mut next_id: HashMap<&str, u16> =
            spec.first_ids.iter().map(|(n, id)| (n.name, *id)).collect();
        let mut announced: HashMap<&str, usize> = HashMap::new();
        let (mut announcements, mut other_arp, mut icmp) = (0, 0, 0);

        for (i, frame) in frames.iter().enumerate() {
            let at = format!("{file} frame {}", i + 1);
            match classify(file, i, &frame.data) {
                Kind::Advert(f) => {
                    let from = Node::by_mac(f.src_mac).unwrap_or_else(|| panic!("{at}: sender"));
                    let a = &f.advert;
                    let v = &a.vrrp;
                    // IP header.
                    assert_eq!(a.ip.src(), from.addr(spec.v6), "{at}: source");
                    let dst = if spec.unicast {
                        peer(from).addr(spec.v6)
                    } else if spec.v6 {
                        IpAddr::V6(MULTICAST_V6)
                    } else {
                        IpAddr::V4(MULTICAST_V4)
                    };
                    assert_eq!(a.ip.dst(), dst, "{at}: destination");
                    assert_eq!(a.ip.ttl(), 255, "{at}: TTL");
                    let dst_mac = if spec.unicast {
                        peer(from).mac
                    } else {
                        a.ip.family().multicast_mac()
                    };
                    assert_eq!(f.dst_mac, dst_mac, "{at}: destination MAC");
                    match &a.ip {
                        IpHeader::V4(h) => {
                            assert_eq!(h.tos, 0xc0, "{at}: TOS");
                            assert!(!h.dont_fragment, "{at}: DF");
                            let id = next_id
                                .get_mut(from.name)
                                .unwrap_or_else(|| panic!("{at}: no first id"));
                            assert_eq!(h.ident, *id, "{at}: IP ID");
                            *id += 1;
                        }
                        IpHeader::V6(h) => {
                            assert_eq!(h.traffic_class, 0xc0, "{at}: traffic class");
                            assert_eq!(h.flow_label, from.flow_label, "{at}: flow label");
                        }
                    }
                    // VRRP fields.
                    assert_eq!(v.version, spec.version, "{at}: version");
                    assert_eq!(v.vrid, spec.vrid, "{at}: VRID");
                    assert_eq!(v.interval_cs, spec.interval_cs, "{at}: interval");
                    let auth = spec
                        .pass
                        .map(|p| Auth::pass(p).unwrap())
                        .unwrap_or(Auth::None);
                    assert_eq!(v.auth, auth, "{at}: auth");
                    assert_eq!(v.addrs, vips, "{at}: addresses");
                    let expected_kind = match spec.version {
                        Version::V2 => ChecksumKind::Message,
                        Version::V3 => ChecksumKind::PseudoHeader,
                    };
                    assert_eq!(a.checksum, expected_kind, "{at}: checksum convention");
                    // The view agrees with the Repr, and sees the raw fields.
                    let ip_len = if spec.v6 {
                        Ipv6Header::LEN
                    } else {
                        Ipv4Header::LEN
                    };
                    let payload = &frame.data[14 + ip_len..];
                    let family = if spec.v6 { Family::V6 } else { Family::V4 };
                    let view = Packet::new_checked(payload, family).unwrap();
                    assert_eq!(view.msg_type(), 1);
                    assert_eq!(usize::from(view.addr_count()), vips.len());
                    match spec.version {
                        Version::V2 => {
                            assert_eq!(payload[0], 0x21);
                            assert_eq!(view.adver_int(), 1);
                            assert_eq!(view.auth_type(), u8::from(spec.pass.is_some()));
                            let mut data = [0u8; 8];
                            if let Some(p) = spec.pass {
                                data[..p.len()].copy_from_slice(p.as_bytes());
                            }
                            assert_eq!(view.auth_data(), &data, "{at}: auth data");
                        }
                        Version::V3 => {
                            assert_eq!(payload[0], 0x31);
                            assert_eq!(view.reserved(), 0);
                            assert_eq!(view.max_adver_int(), spec.interval_cs);
                        }
                    }
                    let expected_len = match (spec.version, spec.v6) {
                        (Version::V2, _) => 16 + 4 * vips.len(),
                        (Version::V3, false) => 8 + 4 * vips.len(),
                        (Version::V3, true) => 8 + 16 * vips.len(),
                    };
                    assert_eq!(payload.len(), expected_len, "{at}: VRRP length");
                    adverts.push((from, v.priority, view.checksum()));
                    // Re-encoding gives the captured bytes: the VRRP message and the frame.
                    let reencoded = v.to_bytes(a.ip.src(), a.ip.dst(), a.checksum).unwrap();
                    assert_eq!(reencoded, payload, "{at}: VRRP message re-encoded");
                    assert_eq!(f.to_bytes().unwrap(), frame.data, "{at}: frame re-encoded");
                    total_adverts += 1;
                }
                Kind::Arp(arp) if arp.is_gratuitous() => {
                    assert!(!spec.v6, "{at}: GARP in an IPv6 capture");
                    let from = Node::by_mac(arp.src_mac).unwrap_or_else(|| panic!("{at}: sender"));
                    assert_eq!(arp.sender_mac, from.mac, "{at}: sender MAC");
                    assert_eq!(arp.target_mac, BROADCAST, "{at}: target MAC");
                    let n = announced.entry(from.name).or_default();
                    // Bursts go round the VIPs in config order.
                    assert_eq!(
                        IpAddr::V4(arp.target_ip),
                        vips[*n % vips.len()],
                        "{at}: target"
                    );
                    *n += 1;
                    assert_eq!(
                        emit_gratuitous_arp(from.mac, arp.target_ip),
                        frame.data,
                        "{at}: GARP re-emitted"
                    );
                    announcements += 1;
                }
                Kind::Arp(arp) => {
                    assert!(
                        Node::by_mac(arp.src_mac).is_some(),
                        "{at}: ARP from a stranger"
                    );
                    other_arp += 1;
                }
                Kind::Na(na) => {
                    assert!(spec.v6, "{at}: NA in an IPv4 capture");
                    assert!(na.is_unsolicited(), "{at}: not unsolicited");
                    let from = Node::by_mac(na.src_mac).unwrap_or_else(|| panic!("{at}: sender"));
                    assert_eq!(
                        na.dst_mac,
                        [0x33, 0x33, 0, 0, 0, 1],
                        "{at}: destination MAC"
                    );
                    assert_eq!(na.target_mac, Some(from.mac), "{at}: TLLA");
                    assert_eq!(na.src, na.target, "{at}: NA comes from the VIP itself");
                    assert!(na.override_flag, "{at}: Override");
                    assert_eq!(na.router, spec.router, "{at}: Router flag");
                    let n = announced.entry(from.name).or_default();
                    assert_eq!(IpAddr::V6(na.target), vips[*n % vips.len()], "{at}: target");
                    *n += 1;
                    let again = emit_unsolicited_na(from.mac, na.target, na.target, spec.router);
                    assert_eq!(again, frame.data, "{at}: NA re-emitted");
                    announcements += 1;
                }
                Kind::Icmp => icmp += 1,
            }
        }

        // The sequence of (sender, priority, checksum) is the README's, run by run.
        let mut expected = Vec::new();
        for r in spec.adverts {
            expected.extend(std::iter::repeat_n(
                (r.from, r.priority, r.checksum),
                r.count,
            ));
        }
        assert_eq!(adverts.len(), expected.len(), "{file}: advert count");
        for (i, (got, want)) in adverts.iter().zip(&expected).enumerate() {
            assert_eq!(
                (got.0.name, got.1, got.2),
                (want.0.name, want.1, want.2),
                "{file}: advert {} (sender, priority, checksum)",
                i + 1
            );
        }
        assert_eq!(announcements, spec.announcements, "{file}: GARP/NA count");
        assert_eq!(other_arp, spec.other_arp, "{file}: other ARP count");
        assert_eq!(icmp, spec.icmp, "{file}: ICMP count");
    }
    // The README counts 310 VRRP frames in all files; its own per-file tables add up to
    // 307, which is what the files hold.
    assert_eq!(total_adverts, 307);
}

/// A frame from the README's hex dump (v3-ipv4-strict frame 1), independent of the pcap reader.
#[test]
fn vrrp_readme_hex_dump_decodes() {
    let frame = hex(
        "0100 5e00 0012 0277 0000 0011 0800 45c0 0020 0001 0000 ff70 d042 0a4d 000b e000
         0012 3143 9601 0064 42f1 0a4d 0032",
    );
    let f = AdvertFrame::parse(&frame).unwrap();
    assert_eq!(f.src_mac, LB1.mac);
    let a = &f.advert;
    assert_eq!(a.ip.src(), IpAddr::V4(Ipv4Addr::new(10, 77, 0, 11)));
    assert_eq!(a.checksum, ChecksumKind::PseudoHeader);
    assert_eq!(
        a.vrrp,
        Repr {
            version: Version::V3,
            vrid: 67,
            priority: 150,
            interval_cs: 100,
            auth: Auth::None,
            addrs: vec![IpAddr::V4(Ipv4Addr::new(10, 77, 0, 50))],
        }
    );
    assert_eq!(f.to_bytes().unwrap(), frame);
}

fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

/// On a real NIC short frames arrive padded to 60 bytes (and may carry an FCS): lengths come
/// from the IP header, so the result is the same.
#[test]
fn vrrp_padded_frames_decode_the_same() {
    for file in captures::files() {
        for frame in captures::load(&file) {
            let Ok(plain) = AdvertFrame::parse(&frame.data) else {
                continue;
            };
            let mut padded = frame.data.clone();
            padded.resize(padded.len().max(60), 0);
            padded.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
            assert_eq!(AdvertFrame::parse(&padded).unwrap(), plain, "{file}");
        }
    }
}

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn parse_everything(data: &[u8]) -> Option<AdvertFrame> {
    let _ = Arp::parse(data);
    let _ = NeighborAdvert::parse(data);
    if data.len() >= 14 {
        let _ = Advert::parse_ip(&data[14..]);
        for family in [Family::V4, Family::V6] {
            if let Ok(p) = Packet::new_checked(&data[14..], family) {
                let _ = (p.addrs().count(), p.interval_cs(), p.checksum());
            }
        }
    }
    AdvertFrame::parse(data).ok()
}

/// Every truncation and thousands of random byte changes of every captured frame: no panic;
/// a truncated advert is an error; whatever still parses re-encodes and parses the same.
#[test]
fn vrrp_truncations_and_byte_flips_never_panic() {
    let mut rng = Rng(0x5eed_0000_0000_0112);
    let mut parsed_after_flip = 0usize;
    for file in captures::files() {
        for frame in captures::load(&file) {
            let data = &frame.data;
            let is_advert = AdvertFrame::parse(data).is_ok();
            for len in 0..data.len() {
                let got = parse_everything(&data[..len]);
                if is_advert {
                    assert!(
                        got.is_none(),
                        "{file}: advert truncated to {len} bytes parsed"
                    );
                }
            }
            for _ in 0..2000 {
                let mut m = data.clone();
                for _ in 0..1 + rng.below(3) {
                    let at = rng.below(m.len());
                    m[at] = rng.next() as u8;
                }
                if rng.below(8) == 0 {
                    m.truncate(rng.below(m.len() + 1));
                }
                if let Some(f) = parse_everything(&m) {
                    parsed_after_flip += 1;
                    let bytes = f.to_bytes().expect("a parsed advert re-encodes");
                    let again = AdvertFrame::parse(&bytes).expect("re-encoded advert parses");
                    assert_eq!(
                        (&again.advert.ip, &again.advert.vrrp),
                        (&f.advert.ip, &f.advert.vrrp)
                    );
                }
            }
        }
    }
    // Flips that miss every checked field (MACs, IPv6 flow label) still parse: the loop
    // did reach the re-encoding path.
    assert!(
        parsed_after_flip > 1000,
        "only {parsed_after_flip} mutated frames parsed"
    );
}

// ---------------------------------------------------------------------------------------
// Each reason, from a known-good frame.

fn good_v2() -> AdvertFrame {
    let frames = captures::load("v2-mcast-pass-1vip.pcap");
    AdvertFrame::parse(&frames[0].data).unwrap()
}

fn good_v3_v6() -> AdvertFrame {
    let frames = captures::load("v3-ipv6-mcast-takeover.pcap");
    AdvertFrame::parse(&frames[0].data).unwrap()
}

/// Rewrites the IPv4 header checksum and the VRRP checksum (in the convention of the version)
/// after a test changed some bytes, so only the intended defect remains.
fn refix_v4(frame: &mut [u8]) {
    frame[24..26].copy_from_slice(&[0, 0]);
    let sum = finish(0, &frame[14..34]);
    frame[24..26].copy_from_slice(&sum.to_be_bytes());
    let total = usize::from(u16::from_be_bytes([frame[16], frame[17]]));
    let end = (14 + total).min(frame.len()).max(34);
    let src = IpAddr::V4(Ipv4Addr::new(frame[26], frame[27], frame[28], frame[29]));
    let dst = IpAddr::V4(Ipv4Addr::new(frame[30], frame[31], frame[32], frame[33]));
    let vrrp = &mut frame[34..end];
    if vrrp.len() >= 8 {
        let acc = if vrrp[0] >> 4 == 3 {
            pseudo_header_sum(src, dst, PROTOCOL, vrrp.len())
        } else {
            0
        };
        vrrp[6..8].copy_from_slice(&[0, 0]);
        let sum = finish(acc, vrrp);
        vrrp[6..8].copy_from_slice(&sum.to_be_bytes());
    }
}

#[test]
fn vrrp_each_wire_reason() {
    let base = good_v2().to_bytes().unwrap();
    let case = |edit: &dyn Fn(&mut Vec<u8>), refix: bool| {
        let mut f = base.clone();
        edit(&mut f);
        if refix {
            refix_v4(&mut f);
        }
        AdvertFrame::parse(&f).map(|_| ())
    };
    assert_eq!(case(&|_| {}, true), Ok(()));
    assert_eq!(case(&|f| f.truncate(10), false), Err(Invalid::Truncated));
    assert_eq!(case(&|f| f.truncate(40), false), Err(Invalid::Truncated));
    assert_eq!(
        case(&|f| f.truncate(f.len() - 1), false),
        Err(Invalid::Truncated)
    );
    assert_eq!(
        case(&|f| f[12..14].copy_from_slice(&[0x88, 0x47]), false),
        Err(Invalid::NotIp)
    );
    assert_eq!(case(&|f| f[14] = 0x55, true), Err(Invalid::BadIpHeader));
    assert_eq!(case(&|f| f[14] = 0x44, false), Err(Invalid::BadIpHeader));
    assert_eq!(
        case(&|f| f[14 + 12] ^= 1, false),
        Err(Invalid::BadIpChecksum)
    );
    assert_eq!(case(&|f| f[14 + 6] = 0x20, true), Err(Invalid::Fragment));
    assert_eq!(case(&|f| f[14 + 7] = 0x08, true), Err(Invalid::Fragment));
    assert_eq!(case(&|f| f[14 + 6] = 0x40, true), Ok(()), "DF is fine");
    assert_eq!(case(&|f| f[14 + 9] = 17, true), Err(Invalid::BadProtocol));
    assert_eq!(case(&|f| f[14 + 8] = 64, true), Err(Invalid::BadTtl));
    assert_eq!(case(&|f| f[14 + 8] = 254, true), Err(Invalid::BadTtl));
    // IP total length shorter than the VRRP message says: the view sees fewer bytes.
    let shorter = |f: &mut Vec<u8>| {
        f.truncate(f.len() - 4);
        let total = (f.len() - 14) as u16;
        f[16..18].copy_from_slice(&total.to_be_bytes());
    };
    assert_eq!(case(&shorter, true), Err(Invalid::Truncated));
    // Trailing bytes inside the IP payload: the count does not explain them.
    let longer = |f: &mut Vec<u8>| {
        f.extend_from_slice(&[0; 4]);
        let total = (f.len() - 14) as u16;
        f[16..18].copy_from_slice(&total.to_be_bytes());
    };
    assert_eq!(case(&longer, true), Err(Invalid::LengthMismatch));
    assert_eq!(
        case(&|f| f[16..18].copy_from_slice(&[0, 10]), true),
        Err(Invalid::LengthMismatch)
    );
    assert_eq!(case(&|f| f[34] = 0x41, true), Err(Invalid::BadVersion));
    assert_eq!(case(&|f| f[34] = 0x11, true), Err(Invalid::BadVersion));
    assert_eq!(case(&|f| f[34] = 0x22, true), Err(Invalid::BadType));
    assert_eq!(case(&|f| f[34 + 2] ^= 1, false), Err(Invalid::BadChecksum));
    // Count 0 with a length that matches it: 8 + 8 bytes.
    let count0 = |f: &mut Vec<u8>| {
        f[34 + 3] = 0;
        f.drain(42..46);
        let total = (f.len() - 14) as u16;
        f[16..18].copy_from_slice(&total.to_be_bytes());
    };
    assert_eq!(case(&count0, true), Err(Invalid::BadAddrCount));
    // Count 2 with one address: the message is short.
    assert_eq!(case(&|f| f[34 + 3] = 2, true), Err(Invalid::Truncated));
    assert_eq!(case(&|f| f[34 + 5] = 0, true), Err(Invalid::BadInterval));
    assert_eq!(
        case(&|f| f[34 + 4] = 2, true),
        Err(Invalid::UnsupportedAuth)
    );
    // VRRPv2 inside IPv6.
    let v6 = good_v3_v6().to_bytes().unwrap();
    let mut v2in6 = v6.clone();
    v2in6[54] = 0x21;
    assert_eq!(
        AdvertFrame::parse(&v2in6).map(|_| ()),
        Err(Invalid::AddressFamily)
    );
    // IPv6: hop limit, next header, payload length.
    let mut hl = v6.clone();
    hl[14 + 7] = 1;
    assert_eq!(AdvertFrame::parse(&hl).map(|_| ()), Err(Invalid::BadTtl));
    let mut nh = v6.clone();
    nh[14 + 6] = 0; // hop-by-hop options: extension headers are not supported
    assert_eq!(
        AdvertFrame::parse(&nh).map(|_| ()),
        Err(Invalid::BadProtocol)
    );
    let mut plen = v6.clone();
    plen[14 + 5] += 1;
    assert_eq!(
        AdvertFrame::parse(&plen).map(|_| ()),
        Err(Invalid::Truncated)
    );
    // An IPv6 packet behind the IPv4 ethertype.
    let mut mixed = v6.clone();
    mixed[12..14].copy_from_slice(&[0x08, 0x00]);
    assert_eq!(
        AdvertFrame::parse(&mixed).map(|_| ()),
        Err(Invalid::BadIpHeader)
    );
}

#[test]
fn vrrp_repr_parse_checks_the_ip_context() {
    let f = good_v3_v6();
    let bytes = f
        .advert
        .vrrp
        .to_bytes(
            f.advert.ip.src(),
            f.advert.ip.dst(),
            ChecksumKind::PseudoHeader,
        )
        .unwrap();
    let view = Packet::new_checked(&bytes[..], Family::V6).unwrap();
    let good = f.advert.ip.context();
    assert!(Repr::parse(&view, &good).is_ok());
    assert_eq!(
        Repr::parse(&view, &IpContext { ttl: 1, ..good }).err(),
        Some(Invalid::BadTtl)
    );
    let v4 = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    assert_eq!(
        Repr::parse(&view, &IpContext { src: v4, ..good }).err(),
        Some(Invalid::AddressFamily)
    );
    // The pseudo-header covers the destination: another destination breaks the sum.
    let other = IpAddr::V6(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x13));
    assert_eq!(
        Repr::parse(&view, &IpContext { dst: other, ..good }).err(),
        Some(Invalid::BadChecksum)
    );
    // A view of the wrong family does not even have the right length.
    assert_eq!(
        Packet::new_checked(&bytes[..], Family::V4).err(),
        Some(Invalid::LengthMismatch)
    );
}

/// VRRPv3 over IPv4 is accepted in all three checksum conventions seen in the wild and
/// reports which one; over IPv6 only the pseudo-header form.
#[test]
fn vrrp_v3_checksum_conventions() {
    let frames = captures::load("v3-ipv4-unicast.pcap");
    let f = AdvertFrame::parse(&frames[2].data).unwrap();
    let (src, dst) = (f.advert.ip.src(), f.advert.ip.dst());
    assert_ne!(dst, IpAddr::V4(MULTICAST_V4), "a unicast advert");
    for kind in [
        ChecksumKind::PseudoHeader,
        ChecksumKind::OldUnicast,
        ChecksumKind::Message,
    ] {
        let bytes = f.advert.vrrp.to_bytes(src, dst, kind).unwrap();
        let view = Packet::new_checked(&bytes[..], Family::V4).unwrap();
        assert_eq!(view.checksum_kind(src, dst), Some(kind));
        let (_, got) = Repr::parse(&view, &f.advert.ip.context()).unwrap();
        assert_eq!(got, kind);
    }
    // keepalived's old_unicast_checksum: 224.0.0.18 in the pseudo-header.
    let old = f
        .advert
        .vrrp
        .to_bytes(src, IpAddr::V4(MULTICAST_V4), ChecksumKind::PseudoHeader)
        .unwrap();
    let old_unicast = f
        .advert
        .vrrp
        .to_bytes(src, dst, ChecksumKind::OldUnicast)
        .unwrap();
    assert_eq!(old, old_unicast);

    let f6 = good_v3_v6();
    let (src, dst) = (f6.advert.ip.src(), f6.advert.ip.dst());
    let plain = f6
        .advert
        .vrrp
        .to_bytes(src, dst, ChecksumKind::Message)
        .unwrap();
    let view = Packet::new_checked(&plain[..], Family::V6).unwrap();
    assert_eq!(view.checksum_kind(src, dst), None);
    assert_eq!(
        f6.advert.vrrp.to_bytes(src, dst, ChecksumKind::OldUnicast),
        Err(EmitError::Checksum)
    );
}

#[test]
fn vrrp_emit_refuses_what_the_wire_cannot_carry() {
    let v4 = |s: &str| IpAddr::V4(s.parse().unwrap());
    let v6 = |s: &str| IpAddr::V6(s.parse().unwrap());
    let (src, dst) = (v4("10.0.0.1"), v4("224.0.0.18"));
    let base = Repr {
        version: Version::V3,
        vrid: 1,
        priority: 100,
        interval_cs: 100,
        auth: Auth::None,
        addrs: vec![v4("10.0.0.50")],
    };
    let pseudo = ChecksumKind::PseudoHeader;
    assert!(base.to_bytes(src, dst, pseudo).is_ok());
    let with = |f: &dyn Fn(&mut Repr)| {
        let mut r = base.clone();
        f(&mut r);
        r
    };
    assert_eq!(
        with(&|r| r.addrs.clear()).to_bytes(src, dst, pseudo),
        Err(EmitError::AddressCount)
    );
    assert_eq!(
        with(&|r| r.addrs = vec![v4("10.0.0.50"); 256]).to_bytes(src, dst, pseudo),
        Err(EmitError::AddressCount)
    );
    assert!(with(&|r| r.addrs = vec![v4("10.0.0.50"); 255])
        .to_bytes(src, dst, pseudo)
        .is_ok());
    assert_eq!(
        with(&|r| r.addrs.push(v6("fd00::1"))).to_bytes(src, dst, pseudo),
        Err(EmitError::AddressFamily)
    );
    assert_eq!(
        base.to_bytes(v6("fe80::1"), dst, pseudo),
        Err(EmitError::AddressFamily)
    );
    assert_eq!(
        with(&|r| r.interval_cs = 0).to_bytes(src, dst, pseudo),
        Err(EmitError::Interval)
    );
    assert_eq!(
        with(&|r| r.interval_cs = 4096).to_bytes(src, dst, pseudo),
        Err(EmitError::Interval)
    );
    assert_eq!(
        with(&|r| r.auth = Auth::pass("x").unwrap()).to_bytes(src, dst, pseudo),
        Err(EmitError::Auth)
    );
    let v2 = with(&|r| r.version = Version::V2);
    let msg = ChecksumKind::Message;
    assert!(v2.to_bytes(src, dst, msg).is_ok());
    assert_eq!(v2.to_bytes(src, dst, pseudo), Err(EmitError::Checksum));
    let mut v2_10 = v2.clone();
    v2_10.interval_cs = 10;
    assert_eq!(v2_10.to_bytes(src, dst, msg), Err(EmitError::Interval));
    let mut v2_6 = v2.clone();
    v2_6.addrs = vec![v6("fd00::1")];
    assert_eq!(
        v2_6.to_bytes(v6("fe80::1"), v6("ff02::12"), msg),
        Err(EmitError::AddressFamily)
    );
    let mut small = [0u8; 11];
    assert_eq!(
        base.emit(&mut small, src, dst, pseudo),
        Err(EmitError::BufferTooSmall)
    );
    let mut big = [0xaau8; 64];
    assert_eq!(base.emit(&mut big, src, dst, pseudo), Ok(12));
    assert_eq!(big[12], 0xaa, "bytes past the message are untouched");
}

#[test]
fn vrrp_reason_names_are_stable_and_unique() {
    let mut seen = std::collections::HashSet::new();
    for (i, r) in Invalid::ALL.iter().enumerate() {
        assert_eq!(r.index(), i);
        let name = r.name();
        assert!(
            name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "{name}"
        );
        assert!(seen.insert(name), "duplicate {name}");
        assert_eq!(r.to_string(), name);
    }
    let mut c = Counters::default();
    c.record(Invalid::BadTtl);
    c.record(Invalid::BadTtl);
    c.record(Invalid::WrongVrid);
    assert_eq!(c.get(Invalid::BadTtl), 2);
    assert_eq!(c.total(), 3);
    assert_eq!(c.iter().count(), Invalid::ALL.len());
}

#[test]
fn vrrp_auth_pass_pads_and_refuses_long_passwords() {
    assert_eq!(Auth::pass("kacap42"), Some(Auth::Pass(*b"kacap42\0")));
    assert_eq!(Auth::pass("12345678"), Some(Auth::Pass(*b"12345678")));
    assert_eq!(Auth::pass("123456789"), None);
    assert_eq!(Auth::pass("").map(|a| a.type_number()), Some(1));
}

#[test]
fn vrrp_announcement_parsers_reject_garbage() {
    let garp = emit_gratuitous_arp(LB1.mac, Ipv4Addr::new(10, 77, 0, 50));
    assert_eq!(garp.len(), 42);
    assert!(Arp::parse(&garp).unwrap().is_gratuitous());
    assert_eq!(Arp::parse(&garp[..41]).err(), Some(Invalid::Truncated));
    let na = emit_unsolicited_na(
        LB1.mac,
        "fd77::50".parse().unwrap(),
        "fd77::50".parse().unwrap(),
        true,
    );
    assert_eq!(na.len(), 86);
    let parsed = NeighborAdvert::parse(&na).unwrap();
    assert!(parsed.router && parsed.override_flag && !parsed.solicited && parsed.is_unsolicited());
    let mut bad = na.clone();
    bad[80] ^= 1;
    assert_eq!(
        NeighborAdvert::parse(&bad).err(),
        Some(Invalid::BadChecksum)
    );
    let mut zero_opt = na.clone();
    zero_opt[14 + 40 + 25] = 0;
    // The checksum no longer matches either; fix it to reach the option walk.
    zero_opt[14 + 40 + 2..14 + 40 + 4].copy_from_slice(&[0, 0]);
    let src: Ipv6Addr = "fd77::50".parse().unwrap();
    let acc = pseudo_header_sum(IpAddr::V6(src), IpAddr::V6(ALL_NODES), 58, 32);
    let sum = finish(acc, &zero_opt[54..]);
    zero_opt[56..58].copy_from_slice(&sum.to_be_bytes());
    assert_eq!(
        NeighborAdvert::parse(&zero_opt).err(),
        Some(Invalid::LengthMismatch)
    );
}
