//! The real XDP program run by the kernel (`BPF_PROG_TEST_RUN`) on crafted frames. Each
//! test asserts the verdict, the exact output bytes and the reason counter that moved.

use lb_common::stats::{Reason, Verdict};
use lb_tests::{
    frames,
    program::{with_macs, Harness, CLIENT, EMPTY_VIP_PORT, LB_MAC, UNRESOLVED_VIP_PORT, VIP},
};

/// Runs `frame` and asserts it comes out untouched with `XDP_PASS` for `reason`.
fn assert_passed_untouched(h: &mut Harness, frame: &[u8], reason: Reason) {
    let (verdict, out, got) = h.run(frame);
    assert_eq!(
        Verdict::from_u32(verdict),
        Some(Verdict::Pass),
        "reason {got:?}"
    );
    assert_eq!(out, frame, "a passed frame must be byte-for-byte unchanged");
    assert_eq!(got, reason);
}

macro_rules! harness {
    () => {{
        if !lb_tests::require_root(module_path!()) {
            return;
        }
        Harness::load()
    }};
}

#[test]
fn vip_tcp_is_sent_back_out_to_the_flows_backend_with_only_macs_rewritten() {
    let mut h = harness!();
    for sport in [40000, 40001, 51234, 1024] {
        let frame = frames::vip_tcp(sport);
        let (verdict, out, reason) = h.run(&frame);
        assert_eq!(Verdict::from_u32(verdict), Some(Verdict::Tx));
        assert_eq!(reason, Reason::ForwardedDr);
        assert_eq!(
            out,
            with_macs(&frame, h.expected_mac(CLIENT, sport, 80, 6), LB_MAC)
        );
    }
}

#[test]
fn vip_udp_is_sent_back_out_to_the_flows_backend_with_only_macs_rewritten() {
    let mut h = harness!();
    for sport in [53000, 53001, 5353] {
        let frame = frames::vip_udp(sport);
        let (verdict, out, reason) = h.run(&frame);
        assert_eq!(Verdict::from_u32(verdict), Some(Verdict::Tx));
        assert_eq!(reason, Reason::ForwardedDr);
        assert_eq!(
            out,
            with_macs(&frame, h.expected_mac(CLIENT, sport, 80, 17), LB_MAC)
        );
    }
}

#[test]
fn every_packet_of_a_flow_reaches_the_same_backend_and_flows_spread() {
    let mut h = harness!();
    let mut seen = std::collections::HashSet::new();
    for sport in 30000..30060u16 {
        let macs: Vec<[u8; 6]> = (0..3)
            .map(|_| h.run(&frames::vip_tcp(sport)).1[0..6].try_into().unwrap())
            .collect();
        assert!(
            macs.iter().all(|m| *m == macs[0]),
            "flow from port {sport} split over {macs:?}"
        );
        seen.insert(macs[0]);
    }
    assert_eq!(seen.len(), 3, "60 flows should reach all three backends");
}

#[test]
fn non_vip_address_passes_untouched() {
    let mut h = harness!();
    let other = std::net::Ipv4Addr::new(10, 99, 0, 10);
    assert_passed_untouched(
        &mut h,
        &frames::tcp(CLIENT, 40000, other, 80),
        Reason::PassNotVip,
    );
    assert_passed_untouched(
        &mut h,
        &frames::udp(CLIENT, 40000, other, 80),
        Reason::PassNotVip,
    );
}

#[test]
fn vip_address_on_a_wrong_port_passes_untouched() {
    let mut h = harness!();
    assert_passed_untouched(
        &mut h,
        &frames::tcp(CLIENT, 40000, VIP, 81),
        Reason::PassNotVip,
    );
    assert_passed_untouched(
        &mut h,
        &frames::tcp(CLIENT, 40000, VIP, 22),
        Reason::PassNotVip,
    );
}

#[test]
fn vip_address_and_port_with_the_wrong_protocol_passes_untouched() {
    let mut h = harness!();
    // UDP/8080 and TCP/53 exist only for the other protocol.
    assert_passed_untouched(
        &mut h,
        &frames::udp(CLIENT, 40000, VIP, UNRESOLVED_VIP_PORT),
        Reason::PassNotVip,
    );
    assert_passed_untouched(
        &mut h,
        &frames::tcp(CLIENT, 40000, VIP, EMPTY_VIP_PORT),
        Reason::PassNotVip,
    );
}

#[test]
fn arp_passes_untouched() {
    let mut h = harness!();
    assert_passed_untouched(&mut h, &frames::arp_who_has_vip(), Reason::PassArp);
}

#[test]
fn vrrp_passes_untouched_even_to_the_vip() {
    let mut h = harness!();
    assert_passed_untouched(
        &mut h,
        &frames::vrrp("224.0.0.18".parse().unwrap()),
        Reason::PassVrrp,
    );
    assert_passed_untouched(&mut h, &frames::vrrp(VIP), Reason::PassVrrp);
}

#[test]
fn ipv6_not_for_a_vip_passes_untouched() {
    let mut h = harness!();
    let other: std::net::IpAddr = "2001:db8::10".parse().unwrap();
    let client = lb_tests::program::CLIENT6.into();
    let vip6 = lb_tests::program::VIP6.into();
    for frame in [
        frames::Frame::new(client, 40000, other, 80).tcp(),
        frames::Frame::new(client, 40000, other, 80).udp(),
        frames::Frame::new(client, 40000, vip6, 81).tcp(),
        frames::Frame::new(client, 40000, vip6, 53).udp(),
    ] {
        assert_passed_untouched(&mut h, &frame, Reason::PassNotVip);
    }
}

#[test]
fn ipv4_with_options_to_the_vip_is_forwarded() {
    let mut h = harness!();
    let frame = frames::vip_tcp_with_options(40000);
    assert_eq!(frame[14] & 0x0f, 7, "fixture must carry 8 bytes of options");
    let (verdict, out, reason) = h.run(&frame);
    assert_eq!(
        (Verdict::from_u32(verdict), reason),
        (Some(Verdict::Tx), Reason::ForwardedDr)
    );
    assert_eq!(
        out,
        with_macs(&frame, h.expected_mac(CLIENT, 40000, 80, 6), LB_MAC)
    );
}

#[test]
fn fragments_to_the_vip_pass_untouched() {
    let mut h = harness!();
    // More-fragments set (first fragment), a middle fragment and a last fragment.
    for word in [0x2000u16, 0x2005, 0x0010] {
        assert_passed_untouched(
            &mut h,
            &frames::vip_tcp_fragment(word),
            Reason::PassFragment,
        );
    }
    // Don't-fragment alone is not a fragment.
    let (verdict, _, reason) = h.run(&frames::vip_tcp_fragment(0x4000));
    assert_eq!(
        (Verdict::from_u32(verdict), reason),
        (Some(Verdict::Tx), Reason::ForwardedDr)
    );
}

#[test]
fn vlan_tagged_vip_tcp_is_forwarded_with_its_tag_kept() {
    let mut h = harness!();
    let frame = frames::vlan_vip_tcp(40000);
    assert_eq!(&frame[12..14], &[0x81, 0x00]);
    let (verdict, out, reason) = h.run(&frame);
    assert_eq!(
        (Verdict::from_u32(verdict), reason),
        (Some(Verdict::Tx), Reason::ForwardedDr)
    );
    assert_eq!(
        out,
        with_macs(&frame, h.expected_mac(CLIENT, 40000, 80, 6), LB_MAC)
    );
}

#[test]
fn vip_without_backends_is_dropped() {
    let mut h = harness!();
    let frame = frames::udp(CLIENT, 40000, VIP, EMPTY_VIP_PORT);
    let (verdict, out, reason) = h.run(&frame);
    assert_eq!(
        (Verdict::from_u32(verdict), reason),
        (Some(Verdict::Drop), Reason::DropNoBackend)
    );
    assert_eq!(out, frame);
}

#[test]
fn backend_with_unresolved_mac_gets_nothing() {
    let mut h = harness!();
    let frame = frames::tcp(CLIENT, 40000, VIP, UNRESOLVED_VIP_PORT);
    let (verdict, out, reason) = h.run(&frame);
    assert_eq!(
        (Verdict::from_u32(verdict), reason),
        (Some(Verdict::Drop), Reason::DropMacUnresolved)
    );
    assert_eq!(out, frame);
}

#[test]
fn truncated_at_every_byte_offset_passes_untouched() {
    let mut h = harness!();
    let fixtures = [
        ("tcp", frames::vip_tcp(40000)),
        ("udp", frames::vip_udp(40000)),
        ("vlan", frames::vlan_vip_tcp(40000)),
        ("options", frames::vip_tcp_with_options(40000)),
    ];
    for (name, frame) in fixtures {
        for len in 0..frame.len() {
            let cut = &frame[..len];
            // The kernel refuses test frames shorter than an Ethernet header.
            if len < 14 {
                continue;
            }
            let (verdict, out, reason) = h.run(cut);
            assert_eq!(
                Verdict::from_u32(verdict),
                Some(Verdict::Pass),
                "{name} cut at {len}: {reason:?}"
            );
            assert_eq!(out, cut, "{name} cut at {len}");
            assert_eq!(reason, Reason::PassMalformed, "{name} cut at {len}");
        }
    }
}

#[test]
fn per_vip_and_per_backend_counters_count_forwarded_bytes() {
    let mut h = harness!();
    let frame = frames::vip_tcp(41000);
    let mac = h.expected_mac(CLIENT, 41000, 80, 6);
    let backend = lb_tests::program::BACKEND_MACS
        .iter()
        .position(|m| *m == mac)
        .unwrap() as u32;
    let (vip0, b0) = (
        h.dp.vip_counter(0).unwrap(),
        h.dp.backend_counter(backend).unwrap(),
    );
    for _ in 0..5 {
        h.run(&frame);
    }
    let (vip1, b1) = (
        h.dp.vip_counter(0).unwrap(),
        h.dp.backend_counter(backend).unwrap(),
    );
    assert_eq!(
        (vip1.packets - vip0.packets, vip1.bytes - vip0.bytes),
        (5, 5 * frame.len() as u64)
    );
    assert_eq!(
        (b1.packets - b0.packets, b1.bytes - b0.bytes),
        (5, 5 * frame.len() as u64)
    );
}

#[test]
fn vips_added_and_removed_at_runtime_are_seen_by_the_address_filter() {
    use lb_common::vip::{VipInfo, MODE_DR};
    use lb_tests::program::{vip_key_of, TABLE_SIZE};
    let mut h = harness!();
    let addr = std::net::Ipv4Addr::new(10, 99, 0, 77);
    let frame = frames::tcp(CLIENT, 40000, addr, 80);
    assert_passed_untouched(&mut h, &frame, Reason::PassNotVip);
    let info = VipInfo {
        id: 0,
        mode: MODE_DR,
        table_offset: 0,
        table_size: TABLE_SIZE,
        flags: 0,
    };
    let (http, https) = (
        vip_key_of(addr.into(), 80, 6),
        vip_key_of(addr.into(), 443, 6),
    );
    h.dp.set_vip(http, info).unwrap();
    h.dp.set_vip(https, info).unwrap();
    // Replacing a VIP is not adding one, nor is removing one that is not there.
    h.dp.set_vip(https, info).unwrap();
    assert!(h.dp.remove_vip(&vip_key_of(addr.into(), 8443, 6)).is_err());
    assert_eq!(h.run(&frame).2, Reason::ForwardedDr);
    // The address still has a VIP (TCP/80) after its other one goes.
    h.dp.remove_vip(&https).unwrap();
    assert_eq!(h.run(&frame).2, Reason::ForwardedDr);
    h.dp.remove_vip(&http).unwrap();
    assert_passed_untouched(&mut h, &frame, Reason::PassNotVip);
    // The filter's counts rebuilt from VIPS (for maps that outlived their agent) say the same.
    h.dp.set_vip(http, info).unwrap();
    h.dp.recount_vip_filter().unwrap();
    assert_eq!(h.run(&frame).2, Reason::ForwardedDr);
}

#[test]
fn an_address_sharing_a_vips_filter_slot_is_still_not_a_vip() {
    use lb_common::{addr::from_ip, vip::vip_filter_slot};
    let mut h = harness!();
    let slot = vip_filter_slot(&from_ip(VIP.into()));
    let twin = (0..=u32::MAX)
        .map(|i| std::net::Ipv4Addr::from(0x0a00_0000 | (i & 0x00ff_ffff)))
        .find(|a| *a != VIP && vip_filter_slot(&from_ip((*a).into())) == slot)
        .expect("65,536 slots: some address in 10/8 shares one");
    assert_passed_untouched(
        &mut h,
        &frames::tcp(CLIENT, 40000, twin, 80),
        Reason::PassNotVip,
    );
}

#[test]
fn the_source_mac_is_the_ingress_interfaces_cached_or_not() {
    use lb_common::iface::IFACE_CACHE_SLOTS;
    use lb_tests::program::LOOPBACK_IFINDEX;
    if !lb_tests::require_root(module_path!()) {
        return;
    }
    let frame = frames::vip_tcp(40000);
    // A changed MAC reaches the cache slot its interface holds.
    let mut h = Harness::load_in_fibnet();
    let new_mac = [0x02, 0x99, 0, 0, 0, 0x11];
    h.dp.set_iface(LOOPBACK_IFINDEX, new_mac).unwrap();
    let backend = h.expected_mac(CLIENT, 40000, 80, 6);
    assert_eq!(h.run(&frame).1, with_macs(&frame, backend, new_mac));
    // An interface whose slot another holds is found in IFACES.
    let idle = h.net().idle;
    let idle_mac = [0x02, 0x99, 0, 0, 0, 0x12];
    h.dp.set_iface(idle + IFACE_CACHE_SLOTS, [0x02, 0x99, 0, 0, 0, 0x13])
        .unwrap();
    h.dp.set_iface(idle, idle_mac).unwrap();
    let (_, out, reason) = h.run_on(idle, &frame);
    assert_eq!(reason, Reason::ForwardedDr);
    assert_eq!(out, with_macs(&frame, backend, idle_mac));
}
