//! ICMP errors about balanced flows in the real program (`BPF_PROG_TEST_RUN`, inside a
//! `FibNet` namespace): for DR, an error from a router on the client side about a packet the
//! backend sent reaches that backend (so its path MTU discovery works); for NAT, errors are
//! translated both ways, quoted packet included. Expected frames are built from scratch by
//! etherparse with the translated addresses; checksums are checked once more by a plain
//! one's-complement sum.

use std::net::{IpAddr, Ipv4Addr};

use etherparse::{icmpv4, icmpv6, Icmpv4Type, Icmpv6Type};
use lb_common::stats::{Reason, Verdict};
use lb_tests::{
    frames::{icmp4_error, icmp6_error, verify_checksums, Frame},
    program::{
        nat_backend, nat_backend6, with_macs, Harness, BACKEND_MACS, CLIENT, CLIENT6, CLIENT_MAC,
        DR6_BACKEND_BASE, LB_BK_MAC, LB_MAC, NAT_BACKEND_BASE, NAT_BACKEND_MACS, NAT_BACKEND_PORT,
        NAT_PORT, NAT_VIP, NAT_VIP6, ROUTER, ROUTER6, ROUTER_MAC, TABLE_SIZE, VIP, VIP6,
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

const FRAG_NEEDED: Icmpv4Type =
    Icmpv4Type::DestinationUnreachable(icmpv4::DestUnreachableHeader::FragmentationNeeded {
        next_hop_mtu: 1400,
    });
const TOO_BIG: Icmpv6Type = Icmpv6Type::PacketTooBig { mtu: 1400 };

/// The IP packet of an Ethernet frame, cut to `keep` bytes if given (as routers quote).
fn quote(frame: &[u8], keep: Option<usize>) -> Vec<u8> {
    let ip = &frame[14..];
    ip[..keep.unwrap_or(ip.len()).min(ip.len())].to_vec()
}

fn assert_sent(got: (u32, Vec<u8>, Reason), reason: Reason, expected: &[u8], what: &str) {
    let (verdict, out, r) = got;
    assert_eq!(r, reason, "{what}");
    assert_eq!(Verdict::from_u32(verdict), Some(reason.verdict()), "{what}");
    assert_eq!(out, expected, "{what}: output bytes");
    verify_checksums(&out).unwrap_or_else(|e| panic!("{what}: bad {e}"));
}

fn assert_passed_untouched(h: &mut Harness, ingress: u32, frame: &[u8], what: &str) {
    let (verdict, out, reason) = h.run_on(ingress, frame);
    assert_eq!(
        (Verdict::from_u32(verdict), reason),
        (Some(Verdict::Pass), Reason::PassIcmp),
        "{what}"
    );
    assert_eq!(out, frame, "{what}");
}

/// Forwards a client's TCP SYN to the DR VIP and the handshake's ACK (which puts the flow
/// into the shared flow table: a too-big error answers the backend's data, so it comes
/// after the handshake), then makes the lookup table point every new flow elsewhere, so
/// only the flow table still knows the flow's backend. Returns it.
fn pin_dr_flow(h: &mut Harness, vip: IpAddr, sport: u16) -> [u8; 6] {
    let client: IpAddr = if vip.is_ipv6() {
        CLIENT6.into()
    } else {
        CLIENT.into()
    };
    let (_, out, reason) = h.run(&Frame::new(client, sport, vip, 80).tcp());
    assert_eq!(reason, Reason::ForwardedDr);
    let (_, ack_out, reason) = h.run(&Frame::new(client, sport, vip, 80).established().tcp());
    assert_eq!(reason, Reason::ForwardedDr);
    assert_eq!(ack_out[..6], out[..6], "the ACK follows its SYN");
    let first = BACKEND_MACS.iter().position(|m| out[..6] == m[..]).unwrap();
    let other = ((first + 1) % 3) as u32;
    if vip.is_ipv6() {
        let t = vec![DR6_BACKEND_BASE + other; TABLE_SIZE as usize];
        h.dp.write_table(2 * TABLE_SIZE, &t).unwrap();
        h.table6 = t;
    } else {
        h.set_table(vec![other; TABLE_SIZE as usize]);
    }
    BACKEND_MACS[first]
}

#[test]
fn dr_frag_needed_from_a_router_reaches_the_flows_backend() {
    let mut h = harness!();
    let cl0 = h.net().cl0;
    let mac = pin_dr_flow(&mut h, VIP.into(), 40000);
    // The backend's segment (VIP → client) that was too big for a link on the client side.
    let sent = Frame::new(VIP.into(), 80, CLIENT.into(), 40000)
        .established()
        .payload(1460)
        .tcp();
    for keep in [Some(28), Some(576 - 28), None] {
        let icmp = icmp4_error(
            (ROUTER_MAC, LB_MAC),
            Ipv4Addr::new(192, 0, 2, 1),
            VIP,
            250,
            FRAG_NEEDED,
            &quote(&sent, keep),
        );
        assert_sent(
            h.run_on(cl0, &icmp),
            Reason::ForwardedIcmpDr,
            &with_macs(&icmp, mac, LB_MAC),
            &format!("quote of {keep:?} bytes"),
        );
    }
}

#[test]
fn dr_packet_too_big_from_a_router_reaches_the_flows_backend() {
    let mut h = harness!();
    let cl0 = h.net().cl0;
    let mac = pin_dr_flow(&mut h, VIP6.into(), 40001);
    let sent = Frame::new(VIP6.into(), 80, CLIENT6.into(), 40001)
        .established()
        .payload(1440)
        .tcp();
    for keep in [Some(48), Some(1280 - 48), None] {
        let icmp = icmp6_error(
            (ROUTER_MAC, LB_MAC),
            "2001:db8:99::1".parse().unwrap(),
            VIP6,
            250,
            TOO_BIG,
            &quote(&sent, keep),
        );
        assert_sent(
            h.run_on(cl0, &icmp),
            Reason::ForwardedIcmpDr,
            &with_macs(&icmp, mac, LB_MAC),
            &format!("quote of {keep:?} bytes"),
        );
    }
}

#[test]
fn dr_errors_about_unseen_flows_follow_the_lookup_table_and_udp_is_handled_too() {
    let mut h = harness!();
    let cl0 = h.net().cl0;
    for sport in [50000u16, 50001, 50002, 50003] {
        let mac = h.expected_mac(CLIENT, sport, 80, 17);
        let sent = Frame::new(VIP.into(), 80, CLIENT.into(), sport).udp();
        for kind in [
            Icmpv4Type::TimeExceeded(icmpv4::TimeExceededCode::TtlExceededInTransit),
            Icmpv4Type::DestinationUnreachable(icmpv4::DestUnreachableHeader::Port),
        ] {
            let icmp = icmp4_error(
                (ROUTER_MAC, LB_MAC),
                CLIENT,
                VIP,
                64,
                kind.clone(),
                &quote(&sent, None),
            );
            assert_sent(
                h.run_on(cl0, &icmp),
                Reason::ForwardedIcmpDr,
                &with_macs(&icmp, mac, LB_MAC),
                &format!("{kind:?} about {sport}"),
            );
        }
    }
}

#[test]
fn icmp_that_is_not_an_error_about_a_balanced_flow_passes_untouched() {
    let mut h = harness!();
    let cl0 = h.net().cl0;
    let sent = |src: IpAddr, sport, dst: IpAddr| Frame::new(src, sport, dst, 40000).tcp();
    let err = |to: Ipv4Addr, quoted: Vec<u8>| {
        icmp4_error((ROUTER_MAC, LB_MAC), ROUTER, to, 64, FRAG_NEEDED, &quoted)
    };
    let mut echo = Vec::new();
    etherparse::PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv4(CLIENT.octets(), VIP.octets(), 64)
        .icmpv4_echo_request(1, 1)
        .write(&mut echo, b"ping")
        .unwrap();
    let cases = [
        ("echo request to the VIP", echo),
        (
            "quoting the VIP on a port that is not balanced",
            err(VIP, quote(&sent(VIP.into(), 81, CLIENT.into()), None)),
        ),
        (
            "addressed to someone else than the quoted sender",
            err(
                Ipv4Addr::new(10, 99, 0, 1),
                quote(&sent(VIP.into(), 80, CLIENT.into()), None),
            ),
        ),
        (
            "quoting the node's own traffic",
            err(
                Ipv4Addr::new(10, 99, 0, 1),
                quote(
                    &sent(Ipv4Addr::new(10, 99, 0, 1).into(), 22, CLIENT.into()),
                    None,
                ),
            ),
        ),
        (
            "quote cut before the ports",
            err(VIP, quote(&sent(VIP.into(), 80, CLIENT.into()), Some(21))),
        ),
        (
            "a quoted NAT reply nobody asked for",
            err(
                CLIENT,
                quote(&sent(CLIENT.into(), 40000, nat_backend(0).into()), None),
            ),
        ),
    ];
    for (what, frame) in cases {
        assert_passed_untouched(&mut h, cl0, &frame, what);
    }
}

/// Sends a client's request to the NAT VIP of `client`'s family; returns the backend index.
fn open_nat_flow(h: &mut Harness, client: IpAddr, sport: u16, proto: u8) -> usize {
    let vip: IpAddr = if client.is_ipv6() {
        NAT_VIP6.into()
    } else {
        NAT_VIP.into()
    };
    let cl0 = h.net().cl0;
    let (_, out, reason) = h.run_on(cl0, &Frame::new(client, sport, vip, NAT_PORT).l4(proto));
    assert_eq!(reason, Reason::RedirectedNat);
    NAT_BACKEND_MACS
        .iter()
        .position(|m| out[..6] == m[..])
        .unwrap()
}

fn backend_ip(v6: bool, i: usize) -> IpAddr {
    if v6 {
        nat_backend6(i).into()
    } else {
        nat_backend(i).into()
    }
}

#[test]
fn nat_an_error_from_the_client_side_is_translated_to_the_backend() {
    let mut h = harness!();
    let cl0 = h.net().cl0;
    for (v6, proto) in [(false, 6u8), (false, 17), (true, 6), (true, 17)] {
        let (client, vip): (IpAddr, IpAddr) = if v6 {
            (CLIENT6.into(), NAT_VIP6.into())
        } else {
            (CLIENT.into(), NAT_VIP.into())
        };
        let i = open_nat_flow(&mut h, client, 41000, proto);
        let backend = backend_ip(v6, i);
        // What the client side saw (the translated reply) and what the backend sent; small
        // enough that the error quoting all of it fits the MTU (as ICMPv6 errors must).
        let seen = Frame::new(vip, NAT_PORT, client, 41000)
            .established()
            .ttl(62)
            .payload(1000)
            .l4(proto);
        let sent = Frame::new(backend, NAT_BACKEND_PORT, client, 41000)
            .established()
            .ttl(62)
            .payload(1000)
            .l4(proto);
        let keeps = if v6 {
            [Some(48), Some(600), None]
        } else {
            [Some(28), Some(548), None]
        };
        for keep in keeps {
            let what = format!("v6={v6} proto={proto} quote {keep:?}");
            let (input, expected) = match (client, backend) {
                (IpAddr::V4(_), IpAddr::V4(b)) => (
                    icmp4_error(
                        (ROUTER_MAC, LB_MAC),
                        ROUTER,
                        NAT_VIP,
                        64,
                        FRAG_NEEDED,
                        &quote(&seen, keep),
                    ),
                    icmp4_error(
                        (LB_BK_MAC, NAT_BACKEND_MACS[i]),
                        ROUTER,
                        b,
                        63,
                        FRAG_NEEDED,
                        &quote(&sent, keep),
                    ),
                ),
                (IpAddr::V6(_), IpAddr::V6(b)) => (
                    icmp6_error(
                        (ROUTER_MAC, LB_MAC),
                        ROUTER6,
                        NAT_VIP6,
                        64,
                        TOO_BIG,
                        &quote(&seen, keep),
                    ),
                    icmp6_error(
                        (LB_BK_MAC, NAT_BACKEND_MACS[i]),
                        ROUTER6,
                        b,
                        63,
                        TOO_BIG,
                        &quote(&sent, keep),
                    ),
                ),
                _ => unreachable!(),
            };
            assert_sent(
                h.run_on(cl0, &input),
                Reason::RedirectedIcmpNat,
                &expected,
                &what,
            );
        }
    }
}

#[test]
fn nat_an_error_from_the_backend_side_is_translated_back_to_the_client() {
    let mut h = harness!();
    let bk0 = h.net().bk0;
    for (v6, proto) in [(false, 17u8), (false, 6), (true, 17), (true, 6)] {
        let (client, vip): (IpAddr, IpAddr) = if v6 {
            (CLIENT6.into(), NAT_VIP6.into())
        } else {
            (CLIENT.into(), NAT_VIP.into())
        };
        let i = open_nat_flow(&mut h, client, 42000, proto);
        let backend = backend_ip(v6, i);
        // What reached the backend side (translated) and what the client sent.
        let seen = Frame::new(client, 42000, backend, NAT_BACKEND_PORT)
            .ttl(63)
            .l4(proto);
        let sent = Frame::new(client, 42000, vip, NAT_PORT).ttl(63).l4(proto);
        // The backend itself answers (port unreachable), or a router between us and it.
        let backend_side_router: IpAddr = if v6 {
            "fd00:1::fe".parse().unwrap()
        } else {
            Ipv4Addr::new(10, 1, 0, 254).into()
        };
        for (from, shown_as) in [(backend, vip), (backend_side_router, backend_side_router)] {
            let what = format!("v6={v6} proto={proto} from {from}");
            let (input, expected) = match (from, shown_as, client) {
                (IpAddr::V4(f), IpAddr::V4(s), IpAddr::V4(c)) => {
                    let kind =
                        Icmpv4Type::DestinationUnreachable(icmpv4::DestUnreachableHeader::Port);
                    (
                        icmp4_error(
                            (NAT_BACKEND_MACS[i], LB_BK_MAC),
                            f,
                            c,
                            64,
                            kind.clone(),
                            &quote(&seen, None),
                        ),
                        icmp4_error((LB_MAC, CLIENT_MAC), s, c, 63, kind, &quote(&sent, None)),
                    )
                }
                (IpAddr::V6(f), IpAddr::V6(s), IpAddr::V6(c)) => {
                    let kind =
                        Icmpv6Type::DestinationUnreachable(icmpv6::DestUnreachableCode::Port);
                    (
                        icmp6_error(
                            (NAT_BACKEND_MACS[i], LB_BK_MAC),
                            f,
                            c,
                            64,
                            kind,
                            &quote(&seen, None),
                        ),
                        icmp6_error((LB_MAC, CLIENT_MAC), s, c, 63, kind, &quote(&sent, None)),
                    )
                }
                _ => unreachable!(),
            };
            assert_sent(
                h.run_on(bk0, &input),
                Reason::RedirectedIcmpNat,
                &expected,
                &what,
            );
        }
    }
}

#[test]
fn nat_a_backend_side_error_about_an_unknown_connection_passes_untouched() {
    let mut h = harness!();
    let bk0 = h.net().bk0;
    // Other connections exist (so the NAT table is consulted), not this one.
    open_nat_flow(&mut h, CLIENT.into(), 43001, 17);
    open_nat_flow(&mut h, CLIENT6.into(), 43001, 17);
    let seen = Frame::new(
        CLIENT.into(),
        43000,
        nat_backend(0).into(),
        NAT_BACKEND_PORT,
    )
    .udp();
    let icmp = icmp4_error(
        (NAT_BACKEND_MACS[0], LB_BK_MAC),
        nat_backend(0),
        CLIENT,
        64,
        Icmpv4Type::DestinationUnreachable(icmpv4::DestUnreachableHeader::Port),
        &quote(&seen, None),
    );
    assert_passed_untouched(&mut h, bk0, &icmp, "no NAT entry");
    let seen6 = Frame::new(
        CLIENT6.into(),
        43000,
        nat_backend6(0).into(),
        NAT_BACKEND_PORT,
    )
    .udp();
    let icmp6 = icmp6_error(
        (NAT_BACKEND_MACS[0], LB_BK_MAC),
        nat_backend6(0),
        CLIENT6,
        64,
        TOO_BIG,
        &quote(&seen6, None),
    );
    assert_passed_untouched(&mut h, bk0, &icmp6, "no NAT entry (IPv6)");
}

#[test]
fn nat_client_side_errors_follow_the_pinned_backend() {
    let mut h = harness!();
    let cl0 = h.net().cl0;
    let i = open_nat_flow(&mut h, CLIENT.into(), 44000, 6);
    // Every new flow now goes to another backend; the pinned flow does not move, nor do
    // errors about it.
    let other = NAT_BACKEND_BASE + ((i as u32 + 1) % 3);
    h.dp.write_table(
        3 * TABLE_SIZE,
        &vec![other; lb_tests::program::NAT_TABLE_SIZE as usize],
    )
    .unwrap();
    let seen = Frame::new(NAT_VIP.into(), NAT_PORT, CLIENT.into(), 44000)
        .established()
        .tcp();
    let icmp = icmp4_error(
        (ROUTER_MAC, LB_MAC),
        ROUTER,
        NAT_VIP,
        64,
        FRAG_NEEDED,
        &quote(&seen, Some(28)),
    );
    let (_, out, reason) = h.run_on(cl0, &icmp);
    assert_eq!(reason, Reason::RedirectedIcmpNat);
    assert_eq!(out[..6], NAT_BACKEND_MACS[i][..]);
}
