//! IPv6 in the real program (`BPF_PROG_TEST_RUN`): DR forwarding for an IPv6 VIP, the
//! bounded walk over extension headers, and everything IPv6 the program leaves to the
//! kernel untouched.

use std::net::IpAddr;

use lb_common::stats::{Reason, Verdict};
use lb_tests::{
    frames::{self, Frame},
    program::{with_macs, Harness, BACKEND_MACS, CLIENT6, DR6_BACKEND_BASE, LB_MAC, VIP6},
};

macro_rules! harness {
    () => {{
        if !lb_tests::require_root(module_path!()) {
            return;
        }
        Harness::load()
    }};
}

fn assert_passed_untouched(h: &mut Harness, frame: &[u8], reason: Reason) {
    let (verdict, out, got) = h.run(frame);
    assert_eq!(
        (Verdict::from_u32(verdict), got),
        (Some(Verdict::Pass), reason)
    );
    assert_eq!(out, frame, "a passed frame must be byte-for-byte unchanged");
}

/// The backend MAC a new flow from the client's `sport` to [`VIP6`] must reach.
fn expected_mac(h: &Harness, sport: u16, proto: u8) -> [u8; 6] {
    let id = h.expected_backend(CLIENT6.into(), sport, VIP6.into(), 80, proto);
    BACKEND_MACS[(id - DR6_BACKEND_BASE) as usize]
}

fn to_vip6(sport: u16) -> Frame {
    Frame::new(CLIENT6.into(), sport, VIP6.into(), 80)
}

fn assert_forwarded(h: &mut Harness, frame: &[u8], mac: [u8; 6], what: &str) {
    let (verdict, out, reason) = h.run(frame);
    assert_eq!(
        (Verdict::from_u32(verdict), reason),
        (Some(Verdict::Tx), Reason::ForwardedDr),
        "{what}"
    );
    assert_eq!(out, with_macs(frame, mac, LB_MAC), "{what}");
}

#[test]
fn tcp_and_udp_to_an_ipv6_vip_go_to_the_flows_backend_with_only_macs_rewritten() {
    let mut h = harness!();
    let mut seen = std::collections::HashSet::new();
    for sport in 40000..40030u16 {
        for proto in [6u8, 17] {
            let frame = to_vip6(sport).l4(proto);
            let mac = expected_mac(&h, sport, proto);
            seen.insert(mac);
            assert_forwarded(&mut h, &frame, mac, &format!("{proto}/{sport}"));
        }
    }
    assert_eq!(seen.len(), 3, "30 flows reach all three backends");
}

#[test]
fn extension_headers_are_walked_to_the_transport_header() {
    let mut h = harness!();
    let plain = to_vip6(41000).tcp();
    let mac = expected_mac(&h, 41000, 6);
    let cases: [&[(u8, usize)]; 5] = [
        &[(0, 8)],
        &[(60, 16)],
        &[(43, 24)],
        &[(0, 8), (43, 8), (60, 8)],
        &[(0, 8), (60, 8), (60, 8), (60, 8), (60, 8), (60, 8)],
    ];
    for exts in cases {
        let frame = frames::with_ipv6_ext(&plain, exts, 0);
        assert_forwarded(&mut h, &frame, mac, &format!("{exts:?}"));
    }
}

#[test]
fn more_extension_headers_than_the_walk_takes_pass_untouched() {
    let mut h = harness!();
    let frame = frames::with_ipv6_ext(&to_vip6(41000).tcp(), &[(60, 8); 7], 0);
    assert_passed_untouched(&mut h, &frame, Reason::PassIpv6Ext);
}

#[test]
fn a_routing_header_with_segments_left_passes_untouched() {
    let mut h = harness!();
    let frame = frames::with_ipv6_ext(&to_vip6(41000).tcp(), &[(43, 24)], 1);
    assert_passed_untouched(&mut h, &frame, Reason::PassIpv6Ext);
}

#[test]
fn a_fragment_header_passes_untouched() {
    let mut h = harness!();
    for exts in [&[(44u8, 8usize)][..], &[(0, 8), (44, 8)]] {
        let frame = frames::with_ipv6_ext(&to_vip6(41000).tcp(), exts, 0);
        assert_passed_untouched(&mut h, &frame, Reason::PassFragment);
    }
}

/// A frame to the VIP whose upper-layer protocol is `next` (with 8 bytes of it).
fn with_next_header(next: u8) -> Vec<u8> {
    let mut f = to_vip6(41000).tcp();
    f[14 + 6] = next;
    f
}

#[test]
fn ipsec_vrrp_and_other_protocols_pass_untouched() {
    let mut h = harness!();
    assert_passed_untouched(&mut h, &with_next_header(50), Reason::PassNotTcpUdp);
    assert_passed_untouched(&mut h, &with_next_header(51), Reason::PassNotTcpUdp);
    assert_passed_untouched(&mut h, &with_next_header(59), Reason::PassNotTcpUdp);
    assert_passed_untouched(&mut h, &with_next_header(112), Reason::PassVrrp);
}

#[test]
fn neighbour_discovery_and_echo_pass_untouched() {
    let mut h = harness!();
    let mut echo = Vec::new();
    etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], LB_MAC)
        .ipv6(CLIENT6.octets(), VIP6.octets(), 64)
        .icmpv6_echo_request(1, 1)
        .write(&mut echo, b"ping")
        .unwrap();
    assert_passed_untouched(&mut h, &echo, Reason::PassIcmp);
    // Neighbour solicitation for the VIP (type 135), to its solicited-node group.
    let mut ns = Vec::new();
    let target = VIP6.octets();
    etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [0x33, 0x33, 0xff, 0, 0, 0x50])
        .ipv6(
            CLIENT6.octets(),
            "ff02::1:ff00:50"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
            255,
        )
        .icmpv6_raw(135, 0, [0; 4])
        .write(&mut ns, &target)
        .unwrap();
    assert_passed_untouched(&mut h, &ns, Reason::PassIcmp);
}

#[test]
fn vlan_tagged_ipv6_is_forwarded_with_its_tag_kept() {
    let mut h = harness!();
    let plain = to_vip6(41000).tcp();
    let mut tagged = plain[..12].to_vec();
    tagged.extend([0x81, 0x00, 0x00, 42]);
    tagged.extend(&plain[12..]);
    let mac = expected_mac(&h, 41000, 6);
    assert_forwarded(&mut h, &tagged, mac, "VLAN 42");
}

#[test]
fn truncated_at_every_byte_offset_passes_untouched() {
    let mut h = harness!();
    let fixtures = [
        ("tcp", to_vip6(40000).tcp()),
        ("udp", to_vip6(40000).udp()),
        (
            "extension headers",
            frames::with_ipv6_ext(&to_vip6(40000).tcp(), &[(0, 8), (60, 16)], 0),
        ),
    ];
    for (name, frame) in fixtures {
        for len in 14..frame.len() {
            let cut = &frame[..len];
            let (verdict, out, reason) = h.run(cut);
            assert_eq!(
                (Verdict::from_u32(verdict), reason),
                (Some(Verdict::Pass), Reason::PassMalformed),
                "{name} cut at {len}"
            );
            assert_eq!(out, cut, "{name} cut at {len}");
        }
    }
}

#[test]
fn per_vip_and_per_backend_counters_count_ipv6_too() {
    let mut h = harness!();
    let frame = to_vip6(41000).tcp();
    let id = h.expected_backend(IpAddr::V6(CLIENT6), 41000, VIP6.into(), 80, 6);
    let (v0, b0) = (
        h.dp.vip_counter(4).unwrap(),
        h.dp.backend_counter(id).unwrap(),
    );
    for _ in 0..4 {
        h.run(&frame);
    }
    let (v1, b1) = (
        h.dp.vip_counter(4).unwrap(),
        h.dp.backend_counter(id).unwrap(),
    );
    assert_eq!(
        (v1.packets - v0.packets, v1.bytes - v0.bytes),
        (4, 4 * frame.len() as u64)
    );
    assert_eq!(
        (b1.packets - b0.packets, b1.bytes - b0.bytes),
        (4, 4 * frame.len() as u64)
    );
}
