//! NAT mode in the real program (`BPF_PROG_TEST_RUN`), inside a namespace whose routes and
//! neighbours are fixed (`FibNet`), so the FIB's answers are known. Every forwarded frame
//! is compared byte for byte with a frame etherparse builds from scratch with the
//! translated addresses (so its checksums are computed afresh, not incrementally), and its
//! checksums are checked once more by a plain one's-complement sum.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_common::{
    addr,
    stats::{Reason, Verdict},
};
use lb_tests::{
    frames::{self, verify_checksums, Frame},
    program::{
        backend, nat_backend, nat_backend6, Harness, BLACKHOLED_BACKEND, CLIENT, CLIENT6,
        CLIENT_MAC, LB_BK_MAC, LB_MAC, NAT_BACKEND_BASE, NAT_BACKEND_MACS, NAT_BACKEND_PORT,
        NAT_PORT, NAT_VIP, NAT_VIP6, NAT_VIP_IDS, NO_NEIGH_BACKEND, ROUTER_MAC,
    },
};

macro_rules! harness {
    () => {{
        if !lb_tests::require_root(module_path!()) {
            return;
        }
        Harness::load_in_fibnet()
    }};
}

/// The NAT VIP of `family` (4 or 6).
fn vip(v6: bool) -> IpAddr {
    if v6 {
        NAT_VIP6.into()
    } else {
        NAT_VIP.into()
    }
}

fn client(v6: bool) -> IpAddr {
    if v6 {
        CLIENT6.into()
    } else {
        CLIENT.into()
    }
}

/// Backend `i`'s address of the VIP's family.
fn backend_ip(v6: bool, i: usize) -> IpAddr {
    if v6 {
        nat_backend6(i).into()
    } else {
        nat_backend(i).into()
    }
}

/// The backend index (0..3) a new flow from `src`:`sport` to the NAT VIP must get.
fn expected_index(h: &Harness, src: IpAddr, sport: u16, proto: u8) -> usize {
    let v6 = src.is_ipv6();
    let id = h.expected_backend(src, sport, vip(v6), NAT_PORT, proto);
    let base = if v6 {
        lb_tests::program::NAT6_BACKEND_BASE
    } else {
        NAT_BACKEND_BASE
    };
    (id - base) as usize
}

/// The client's packet as it arrives on the client side (`cl0`).
fn request(src: IpAddr, sport: u16, proto: u8) -> Vec<u8> {
    Frame::new(src, sport, vip(src.is_ipv6()), NAT_PORT).l4(proto)
}

/// The same packet as the backend must receive it.
fn translated_request(src: IpAddr, sport: u16, proto: u8, i: usize) -> Vec<u8> {
    Frame::new(src, sport, backend_ip(src.is_ipv6(), i), NAT_BACKEND_PORT)
        .macs(LB_BK_MAC, NAT_BACKEND_MACS[i])
        .ttl(63)
        .l4(proto)
}

/// Backend `i`'s reply to `dst`:`dport`, as it arrives on the backend side (`bk0`).
fn reply(dst: IpAddr, dport: u16, proto: u8, i: usize) -> Vec<u8> {
    Frame::new(backend_ip(dst.is_ipv6(), i), NAT_BACKEND_PORT, dst, dport)
        .macs(NAT_BACKEND_MACS[i], LB_BK_MAC)
        .established()
        .l4(proto)
}

/// The reply as the client must receive it: from the VIP.
fn translated_reply(dst: IpAddr, dport: u16, proto: u8, dst_mac: [u8; 6]) -> Vec<u8> {
    Frame::new(vip(dst.is_ipv6()), NAT_PORT, dst, dport)
        .macs(LB_MAC, dst_mac)
        .established()
        .ttl(63)
        .l4(proto)
}

fn assert_sent(got: (u32, Vec<u8>, Reason), reason: Reason, expected: &[u8], what: &str) {
    let (verdict, out, r) = got;
    assert_eq!(r, reason, "{what}");
    assert_eq!(Verdict::from_u32(verdict), Some(reason.verdict()), "{what}");
    assert_eq!(out, expected, "{what}: output bytes");
    verify_checksums(&out).unwrap_or_else(|e| panic!("{what}: bad {e}"));
}

#[test]
fn requests_are_translated_to_the_flows_backend_and_replies_back_to_the_vip() {
    let mut h = harness!();
    let (cl0, bk0) = (h.net().cl0, h.net().bk0);
    for v6 in [false, true] {
        for proto in [6u8, 17] {
            for sport in [40000u16, 40001, 51234, 1024] {
                let what = format!("v6={v6} proto={proto} sport={sport}");
                let src = client(v6);
                let i = expected_index(&h, src, sport, proto);
                assert_sent(
                    h.run_on(cl0, &request(src, sport, proto)),
                    Reason::RedirectedNat,
                    &translated_request(src, sport, proto, i),
                    &what,
                );
                assert_sent(
                    h.run_on(bk0, &reply(src, sport, proto, i)),
                    Reason::RedirectedNatReply,
                    &translated_reply(src, sport, proto, CLIENT_MAC),
                    &what,
                );
            }
        }
    }
}

#[test]
fn a_client_behind_a_router_gets_its_replies_through_the_router() {
    let mut h = harness!();
    let (cl0, bk0) = (h.net().cl0, h.net().bk0);
    for src in [
        IpAddr::from(Ipv4Addr::new(198, 51, 100, 7)),
        "2001:db8:ffff::7".parse().unwrap(),
    ] {
        let i = expected_index(&h, src, 33000, 6);
        assert_sent(
            h.run_on(cl0, &request(src, 33000, 6)),
            Reason::RedirectedNat,
            &translated_request(src, 33000, 6, i),
            "request",
        );
        assert_sent(
            h.run_on(bk0, &reply(src, 33000, 6, i)),
            Reason::RedirectedNatReply,
            &translated_reply(src, 33000, 6, ROUTER_MAC),
            "reply",
        );
    }
}

#[test]
fn udp_without_checksum_over_ipv4_keeps_a_zero_checksum_both_ways() {
    let mut h = harness!();
    let (cl0, bk0) = (h.net().cl0, h.net().bk0);
    let src = IpAddr::from(CLIENT);
    let i = expected_index(&h, src, 5353, 17);
    assert_sent(
        h.run_on(cl0, &frames::without_udp_checksum(request(src, 5353, 17))),
        Reason::RedirectedNat,
        &frames::without_udp_checksum(translated_request(src, 5353, 17, i)),
        "request",
    );
    assert_sent(
        h.run_on(bk0, &frames::without_udp_checksum(reply(src, 5353, 17, i))),
        Reason::RedirectedNatReply,
        &frames::without_udp_checksum(translated_reply(src, 5353, 17, CLIENT_MAC)),
        "reply",
    );
}

#[test]
fn a_udp_checksum_that_would_become_zero_is_sent_as_ffff() {
    let mut h = harness!();
    let cl0 = h.net().cl0;
    // Search for a client port whose translated UDP checksum is 0xffff when computed
    // afresh (a computed 0 is sent as 0xffff), so the incremental update must produce it.
    let src = IpAddr::from(CLIENT);
    let sport = (1024..=65535u16)
        .find(|&p| {
            let i = expected_index(&h, src, p, 17);
            let t = translated_request(src, p, 17, i);
            t[14 + 20 + 6..14 + 20 + 8] == [0xff, 0xff]
        })
        .expect("some port gives checksum 0xffff");
    let i = expected_index(&h, src, sport, 17);
    assert_sent(
        h.run_on(cl0, &request(src, sport, 17)),
        Reason::RedirectedNat,
        &translated_request(src, sport, 17, i),
        "request",
    );
}

#[test]
fn ipv6_extension_headers_are_kept_and_the_transport_header_behind_them_translated() {
    let mut h = harness!();
    let cl0 = h.net().cl0;
    let src = IpAddr::from(CLIENT6);
    let exts = [(0u8, 8usize), (60, 16), (43, 8)];
    for proto in [6u8, 17] {
        let i = expected_index(&h, src, 41000, proto);
        assert_sent(
            h.run_on(
                cl0,
                &frames::with_ipv6_ext(&request(src, 41000, proto), &exts, 0),
            ),
            Reason::RedirectedNat,
            &frames::with_ipv6_ext(&translated_request(src, 41000, proto, i), &exts, 0),
            "request with extension headers",
        );
    }
}

#[test]
fn traffic_that_leaves_by_the_interface_it_came_in_on_is_sent_with_xdp_tx() {
    let mut h = harness!();
    let bk0 = h.net().bk0;
    // A client on the backend side (here: backend 1's own address, a host that is both).
    let src = IpAddr::from(nat_backend(1));
    let i = expected_index(&h, src, 42000, 6);
    assert_sent(
        h.run_on(bk0, &request(src, 42000, 6).to_vec()),
        Reason::ForwardedNat,
        &translated_request(src, 42000, 6, i),
        "request",
    );
    assert_sent(
        h.run_on(bk0, &reply(src, 42000, 6, i)),
        Reason::ForwardedNatReply,
        &Frame::new(NAT_VIP.into(), NAT_PORT, src, 42000)
            .macs(LB_BK_MAC, NAT_BACKEND_MACS[1])
            .established()
            .ttl(63)
            .tcp(),
        "reply",
    );
}

#[test]
fn a_reply_without_a_connection_entry_passes_untouched() {
    let mut h = harness!();
    let (cl0, bk0) = (h.net().cl0, h.net().bk0);
    for v6 in [false, true] {
        // Before any NAT connection exists, and after one (another client port) does.
        let frame = reply(client(v6), 44444, 6, 0);
        let (verdict, out, reason) = h.run_on(bk0, &frame);
        assert_eq!(
            (Verdict::from_u32(verdict), reason),
            (Some(Verdict::Pass), Reason::PassNotVip)
        );
        assert_eq!(out, frame);
        h.run_on(cl0, &request(client(v6), 44445, 6));
        let frame = reply(client(v6), 44444, 6, 0);
        let (verdict, out, reason) = h.run_on(bk0, &frame);
        assert_eq!(
            (Verdict::from_u32(verdict), reason),
            (Some(Verdict::Pass), Reason::PassNotVip)
        );
        assert_eq!(out, frame);
    }
}

#[test]
fn the_first_packet_records_the_connection_under_its_reply_tuple() {
    let mut h = harness!();
    let cl0 = h.net().cl0;
    let src = IpAddr::from(CLIENT);
    h.run_on(cl0, &request(src, 45000, 6));
    let i = expected_index(&h, src, 45000, 6);
    let entries = h.dp.nat_entries().unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let (key, entry) = entries[0];
    assert_eq!(addr::to_ip(key.src), IpAddr::from(nat_backend(i)));
    assert_eq!(addr::to_ip(key.dst), src);
    assert_eq!(
        (
            u16::from_be(key.sport_be),
            u16::from_be(key.dport_be),
            key.proto
        ),
        (NAT_BACKEND_PORT, 45000, 6)
    );
    assert_eq!(addr::to_ip(entry.vip), IpAddr::from(NAT_VIP));
    assert_eq!(u16::from_be(entry.vip_port_be), NAT_PORT);
    assert_eq!(
        (entry.vip_id, entry.backend_id),
        (NAT_VIP_IDS[0], NAT_BACKEND_BASE + i as u32)
    );
    // Later packets refresh it rather than adding entries.
    h.run_on(
        cl0,
        &Frame::new(src, 45000, NAT_VIP.into(), NAT_PORT)
            .established()
            .tcp(),
    );
    assert_eq!(h.dp.nat_entries().unwrap().len(), 1);
}

#[test]
fn per_vip_and_per_backend_counters_count_both_directions() {
    let mut h = harness!();
    let (cl0, bk0) = (h.net().cl0, h.net().bk0);
    let src = IpAddr::from(CLIENT);
    let i = expected_index(&h, src, 46000, 6);
    let id = NAT_BACKEND_BASE + i as u32;
    let (req, rep) = (request(src, 46000, 6), reply(src, 46000, 6, i));
    for _ in 0..3 {
        h.run_on(cl0, &req);
        h.run_on(bk0, &rep);
    }
    let n = |c: lb_common::stats::Counter| (c.packets, c.bytes);
    assert_eq!(
        n(h.dp.vip_counter(NAT_VIP_IDS[0]).unwrap()),
        (3, 3 * req.len() as u64)
    );
    assert_eq!(
        n(h.dp.backend_counter(id).unwrap()),
        (3, 3 * req.len() as u64)
    );
    assert_eq!(
        n(h.dp.vip_reply_counter(NAT_VIP_IDS[0]).unwrap()),
        (3, 3 * rep.len() as u64)
    );
    assert_eq!(
        n(h.dp.backend_reply_counter(id).unwrap()),
        (3, 3 * rep.len() as u64)
    );
}

/// Points every IPv4 NAT backend at `ip` (so whichever is chosen, the FIB sees `ip`).
fn all_backends_at(h: &mut Harness, ip: Ipv4Addr) {
    for i in 0..3 {
        h.dp.set_backend(
            NAT_BACKEND_BASE + i,
            backend(ip.into(), None, NAT_BACKEND_PORT),
        )
        .unwrap();
    }
}

/// The request translated to `ip` but otherwise as it arrived: what the kernel gets when
/// the program leaves forwarding to it (the kernel decrements the TTL when it forwards).
fn translated_for_kernel(src: IpAddr, sport: u16, ip: Ipv4Addr) -> Vec<u8> {
    Frame::new(src, sport, ip.into(), NAT_BACKEND_PORT).tcp()
}

#[test]
fn without_a_neighbour_the_translated_packet_goes_to_the_kernel() {
    let mut h = harness!();
    let cl0 = h.net().cl0;
    all_backends_at(&mut h, NO_NEIGH_BACKEND);
    let src = IpAddr::from(CLIENT);
    assert_sent(
        h.run_on(cl0, &request(src, 47000, 6)),
        Reason::PassFibNoNeigh,
        &translated_for_kernel(src, 47000, NO_NEIGH_BACKEND),
        "no neighbour",
    );
    assert_eq!(
        h.dp.nat_entries().unwrap().len(),
        1,
        "the kernel forwards it, so the reply needs the entry"
    );
}

#[test]
fn a_blackhole_route_drops_the_packet() {
    let mut h = harness!();
    let cl0 = h.net().cl0;
    all_backends_at(&mut h, BLACKHOLED_BACKEND);
    let frame = request(CLIENT.into(), 47001, 6);
    let (verdict, out, reason) = h.run_on(cl0, &frame);
    assert_eq!(
        (Verdict::from_u32(verdict), reason),
        (Some(Verdict::Drop), Reason::DropFibUnreachable)
    );
    assert_eq!(out, frame);
    assert!(h.dp.nat_entries().unwrap().is_empty());
}

#[test]
fn with_forwarding_disabled_the_translated_packet_goes_to_the_kernel() {
    let mut h = harness!();
    let cl0 = h.net().cl0;
    h.net().sysctl("net.ipv4.ip_forward=0").unwrap();
    let src = IpAddr::from(CLIENT);
    let i = expected_index(&h, src, 47002, 6);
    assert_sent(
        h.run_on(cl0, &request(src, 47002, 6)),
        Reason::PassFibFwdDisabled,
        &translated_for_kernel(src, 47002, nat_backend(i)),
        "forwarding disabled",
    );
}

#[test]
fn an_egress_interface_missing_from_tx_ports_leaves_the_packet_to_the_kernel() {
    let mut h = harness!();
    let (cl0, bk0) = (h.net().cl0, h.net().bk0);
    h.dp.remove_tx_port(bk0).unwrap();
    let src = IpAddr::from(CLIENT);
    let i = expected_index(&h, src, 47003, 6);
    assert_sent(
        h.run_on(cl0, &request(src, 47003, 6)),
        Reason::PassNoTxPort,
        &translated_for_kernel(src, 47003, nat_backend(i)),
        "no TX port",
    );
}

/// What the program must send back for a packet too big for the egress MTU: ICMP
/// fragmentation needed (IPv4: TOS 0xc0, no DF, TTL 64) or packet too big (IPv6, hop limit
/// 64) from the packet's destination to its source, quoting what arrived, as much as fits
/// in 576 (IPv4) or 1280 (IPv6) bytes, MACs swapped.
fn too_big_answer(arrived: &[u8], mtu: u16) -> Vec<u8> {
    let macs = (
        arrived[0..6].try_into().unwrap(),
        arrived[6..12].try_into().unwrap(),
    );
    let ip = &arrived[14..];
    if ip[0] >> 4 == 6 {
        let src = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[8..24]).unwrap());
        let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[24..40]).unwrap());
        let quote = &ip[..ip.len().min(1280 - 48)];
        frames::icmp6_error(
            macs,
            dst,
            src,
            64,
            etherparse::Icmpv6Type::PacketTooBig { mtu: mtu.into() },
            quote,
        )
    } else {
        let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
        let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
        let quote = &ip[..ip.len().min(576 - 28)];
        let mut f = frames::icmp4_error(
            macs,
            dst,
            src,
            64,
            etherparse::Icmpv4Type::DestinationUnreachable(
                etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded {
                    next_hop_mtu: mtu,
                },
            ),
            quote,
        );
        f[15] = 0xc0;
        f[20] = 0;
        frames::fix_ipv4_checksum(&mut f, 14);
        f
    }
}

#[test]
fn a_packet_too_big_for_the_egress_mtu_is_answered_with_icmp_from_its_destination() {
    let mut h = harness!();
    let (cl0, bk0) = (h.net().cl0, h.net().bk0);
    for dev in ["bk0", "cl0"] {
        lb_tests::netns::ip(&h.net().name, &["link", "set", dev, "mtu", "1280"]).unwrap();
    }
    for v6 in [false, true] {
        let src = client(v6);
        // Too big on the way to the backend: the client hears it from the VIP.
        let big = Frame::new(src, 47004, vip(v6), NAT_PORT)
            .payload(1400)
            .tcp();
        assert_sent(
            h.run_on(cl0, &big),
            Reason::SentIcmpTooBig,
            &too_big_answer(&big, 1280),
            &format!("request v6={v6}"),
        );
        // A request that fits opens the connection; the backend's big reply is too big
        // on the way to the client: the backend hears it from the client's address.
        let i = expected_index(&h, src, 47005, 6);
        assert_sent(
            h.run_on(cl0, &request(src, 47005, 6)),
            Reason::RedirectedNat,
            &translated_request(src, 47005, 6, i),
            "small request",
        );
        let big_reply = Frame::new(backend_ip(v6, i), NAT_BACKEND_PORT, src, 47005)
            .macs(NAT_BACKEND_MACS[i], LB_BK_MAC)
            .established()
            .payload(1400)
            .tcp();
        assert_sent(
            h.run_on(bk0, &big_reply),
            Reason::SentIcmpTooBig,
            &too_big_answer(&big_reply, 1280),
            &format!("reply v6={v6}"),
        );
    }
}

#[test]
fn an_ipv4_packet_that_may_be_fragmented_goes_to_the_kernel_to_be_fragmented() {
    let mut h = harness!();
    let cl0 = h.net().cl0;
    lb_tests::netns::ip(&h.net().name, &["link", "set", "bk0", "mtu", "1280"]).unwrap();
    let src = IpAddr::from(CLIENT);
    let i = expected_index(&h, src, 47006, 6);
    let without_df = |dst: IpAddr, dport| {
        let mut f = Frame::new(src, 47006, dst, dport).payload(1400).tcp();
        f[20] &= !0x40;
        frames::fix_ipv4_checksum(&mut f, 14);
        f
    };
    assert_sent(
        h.run_on(cl0, &without_df(NAT_VIP.into(), NAT_PORT)),
        Reason::PassFibFragNeeded,
        &without_df(nat_backend(i).into(), NAT_BACKEND_PORT),
        "bigger than the MTU, fragmentable",
    );
}

#[test]
fn an_expiring_ttl_or_hop_limit_is_dropped_untouched() {
    let mut h = harness!();
    let cl0 = h.net().cl0;
    for v6 in [false, true] {
        let frame = Frame::new(client(v6), 47005, vip(v6), NAT_PORT)
            .ttl(1)
            .tcp();
        let (verdict, out, reason) = h.run_on(cl0, &frame);
        assert_eq!(
            (Verdict::from_u32(verdict), reason),
            (Some(Verdict::Drop), Reason::DropTtlExceeded)
        );
        assert_eq!(out, frame);
    }
}

#[test]
fn vlan_tagged_nat_traffic_is_left_to_the_kernel() {
    let mut h = harness!();
    let cl0 = h.net().cl0;
    let plain = request(CLIENT.into(), 47006, 6);
    let mut tagged = plain[..12].to_vec();
    tagged.extend([0x81, 0x00, 0x00, 42]);
    tagged.extend(&plain[12..]);
    let (verdict, out, reason) = h.run_on(cl0, &tagged);
    assert_eq!(
        (Verdict::from_u32(verdict), reason),
        (Some(Verdict::Pass), Reason::PassNatVlan)
    );
    assert_eq!(out, tagged);
}

#[test]
fn a_backend_of_the_other_family_gets_nothing() {
    let mut h = harness!();
    let cl0 = h.net().cl0;
    for i in 0..3 {
        h.dp.set_backend(
            NAT_BACKEND_BASE + i,
            backend(nat_backend6(0).into(), None, NAT_BACKEND_PORT),
        )
        .unwrap();
    }
    let frame = request(CLIENT.into(), 47007, 6);
    let (verdict, out, reason) = h.run_on(cl0, &frame);
    assert_eq!(
        (Verdict::from_u32(verdict), reason),
        (Some(Verdict::Drop), Reason::DropNoBackend)
    );
    assert_eq!(out, frame);
}
