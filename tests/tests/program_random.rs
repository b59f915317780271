//! 100,000+ random and mutated frames through the real XDP program. Whatever comes in:
//! a frame not for a VIP leaves with XDP_PASS byte-for-byte unchanged, and nothing is ever
//! sent to anything but the flow's configured backend. An independent classifier in this
//! file says what each frame is.

use std::net::Ipv4Addr;

use lb_common::stats::Verdict;
use lb_tests::{
    frames,
    program::{with_macs, Harness, BACKEND_MACS, EMPTY_VIP_PORT, LB_MAC, UNRESOLVED_VIP_PORT, VIP},
};
use rand::{rngs::SmallRng, Rng, SeedableRng};

const FRAMES: usize = 120_000;

/// What the program must do with a frame, decided without the program's parser.
#[derive(Debug, PartialEq)]
enum Expect {
    Pass,
    Drop,
    Forward {
        src: Ipv4Addr,
        sport: u16,
        dport: u16,
        proto: u8,
    },
}

fn be16(f: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([f[at], f[at + 1]])
}

fn classify(f: &[u8]) -> Expect {
    if f.len() < 14 {
        return Expect::Pass;
    }
    let (mut ethertype, mut l3) = (be16(f, 12), 14);
    if ethertype == 0x8100 || ethertype == 0x88a8 {
        if f.len() < 18 {
            return Expect::Pass;
        }
        ethertype = be16(f, 16);
        l3 = 18;
    }
    if ethertype != 0x0800 || f.len() < l3 + 20 || f[l3] >> 4 != 4 {
        return Expect::Pass;
    }
    let ihl = (f[l3] & 0x0f) as usize * 4;
    let total = be16(f, l3 + 2) as usize;
    if ihl < 20 || f.len() < l3 + ihl || total < ihl || f.len() < l3 + total {
        return Expect::Pass;
    }
    let proto = f[l3 + 9];
    let l4_min = match proto {
        6 => 20,
        17 => 8,
        _ => return Expect::Pass,
    };
    if be16(f, l3 + 6) & 0x3fff != 0 || total < ihl + l4_min {
        return Expect::Pass;
    }
    let dst = Ipv4Addr::new(f[l3 + 16], f[l3 + 17], f[l3 + 18], f[l3 + 19]);
    let src = Ipv4Addr::new(f[l3 + 12], f[l3 + 13], f[l3 + 14], f[l3 + 15]);
    let (sport, dport) = (be16(f, l3 + ihl), be16(f, l3 + ihl + 2));
    if dst != VIP {
        return Expect::Pass;
    }
    match (dport, proto) {
        (80, 6) | (80, 17) => Expect::Forward {
            src,
            sport,
            dport,
            proto,
        },
        (EMPTY_VIP_PORT, 17) | (UNRESOLVED_VIP_PORT, 6) => Expect::Drop,
        _ => Expect::Pass,
    }
}

fn base_frame(rng: &mut SmallRng) -> Vec<u8> {
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
    .get(rng.gen_range(0..7))
    .unwrap();
    match rng.gen_range(0..12) {
        0..=2 => frames::tcp(src, sport, VIP, port),
        3..=4 => frames::udp(src, sport, VIP, port),
        5 => frames::vlan_vip_tcp(sport),
        6 => frames::vip_tcp_with_options(sport),
        7 => frames::tcp(src, sport, Ipv4Addr::from(rng.gen::<u32>()), port),
        8 => frames::arp_who_has_vip(),
        9 => frames::vrrp(VIP),
        // IPv6 not to a VIP (two bytes away from any VIP, so a single mutation cannot make one).
        10 => frames::Frame::new(
            lb_tests::program::CLIENT6.into(),
            sport,
            "2001:db8:1::1:10".parse().unwrap(),
            80,
        )
        .tcp(),
        _ => (0..rng.gen_range(14..200)).map(|_| rng.gen()).collect(),
    }
}

fn mutate(rng: &mut SmallRng, mut f: Vec<u8>) -> Vec<u8> {
    for _ in 0..rng.gen_range(0..4) {
        match rng.gen_range(0..6) {
            // Flip a random byte anywhere.
            0 => {
                let i = rng.gen_range(0..f.len());
                f[i] = rng.gen();
            }
            // Hit the fields the parser decides on: ethertype, version/IHL, length,
            // fragment word, protocol, destination, ports.
            1 => {
                let at = *[12usize, 13, 14, 16, 17, 20, 21, 23, 30, 33, 34, 35, 36, 37]
                    .get(rng.gen_range(0..14))
                    .unwrap();
                if at < f.len() {
                    f[at] = rng.gen();
                }
            }
            2 => {
                let keep = rng.gen_range(14..=f.len().max(14));
                f.truncate(keep);
            }
            3 => f.extend((0..rng.gen_range(1..40)).map(|_| rng.gen::<u8>())),
            // An IPv4 version nibble with any header length.
            4 if f.len() > 15 => f[14] = 0x40 | rng.gen_range(0..16),
            _ => {}
        }
    }
    if f.len() < 14 {
        f.resize(14, 0);
    }
    f
}

#[test]
fn random_and_mutated_frames_are_passed_untouched_or_forwarded_only_to_their_backend() {
    if !lb_tests::require_root("random_and_mutated_frames") {
        return;
    }
    let seed = std::env::var("LB_RANDOM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x1b_5eed_u64);
    eprintln!("seed {seed} (set LB_RANDOM_SEED to replay)");
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut h = Harness::load();
    let before: u64 =
        h.dp.reason_counters()
            .unwrap()
            .iter()
            .map(|(_, c)| c.packets)
            .sum();
    let mut tally = [0usize; 3];
    for n in 0..FRAMES {
        let base = base_frame(&mut rng);
        let frame = if rng.gen_bool(0.8) {
            mutate(&mut rng, base)
        } else {
            base
        };
        let expect = classify(&frame);
        let (verdict, out) = h.dp.test_run(&frame).unwrap();
        let verdict = Verdict::from_u32(verdict);
        let ctx = || {
            format!(
                "frame #{n} {:02x?} expected {expect:?}, got {verdict:?}",
                frame
            )
        };
        match expect {
            Expect::Pass => {
                tally[0] += 1;
                assert_eq!(verdict, Some(Verdict::Pass), "{}", ctx());
                assert_eq!(out, frame, "{}", ctx());
            }
            Expect::Drop => {
                tally[1] += 1;
                assert_eq!(verdict, Some(Verdict::Drop), "{}", ctx());
            }
            Expect::Forward {
                src,
                sport,
                dport,
                proto,
            } => {
                tally[2] += 1;
                assert_eq!(verdict, Some(Verdict::Tx), "{}", ctx());
                let mac = h.expected_mac(src, sport, dport, proto);
                assert!(BACKEND_MACS.contains(&mac));
                assert_eq!(out, with_macs(&frame, mac, LB_MAC), "{}", ctx());
            }
        }
    }
    let after: u64 =
        h.dp.reason_counters()
            .unwrap()
            .iter()
            .map(|(_, c)| c.packets)
            .sum();
    assert_eq!(
        after - before,
        FRAMES as u64,
        "every frame is counted under exactly one reason"
    );
    eprintln!(
        "passed {} dropped {} forwarded {}",
        tally[0], tally[1], tally[2]
    );
    // The generator must exercise every outcome substantially, or the test proves little.
    assert!(tally.iter().all(|&t| t > FRAMES / 50), "{tally:?}");
}
