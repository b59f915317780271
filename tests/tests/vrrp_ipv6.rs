//! VRRPv3 over IPv6 in the namespace lab (`LabBuilder::ipv6`), the VIP `fd99::50` floating:
//! adverts from the link-local address to ff02::12 with hop limit 255, the VIP added
//! without DAD (usable at once), unsolicited neighbour advertisements that move the
//! client's neighbour entry to the new master. Between two lbd nodes (election, kill -9,
//! takeover, traffic through XDP before and after), and with keepalived as the master lbd
//! takes over from.
//!
//! Needs root; `cargo xtask test -- --test vrrp_ipv6`.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use lb_tests::{
    keepalived::{holds, Instance, Keepalived},
    lab::{v6, VIP},
    require_root,
    vrrp::{last_change, require_instance, wait_lbd_state},
    Lab, LbdGuard,
};

const INTERVAL: Duration = Duration::from_millis(100);
const SLACK: Duration = Duration::from_millis(80);

fn vip6() -> IpAddr {
    IpAddr::V6(v6(VIP))
}

fn config(lab: &Lab, node: usize, priority: u8) -> std::path::PathBuf {
    lab.write_lbd_config_on(
        node,
        &format!(
            "\n[[vrrp]]\nname = \"vi6\"\nvrid = 51\npriority = {priority}\nadvert_interval = \"100ms\"\n\
             addresses = [\"{}/128\"]\n",
            v6(VIP)
        ),
    )
}

fn is_link_local(a: IpAddr) -> bool {
    matches!(a, IpAddr::V6(v) if v.segments()[0] & 0xffc0 == 0xfe80)
}

fn v6_packets(lbd: &LbdGuard<'_>) -> u64 {
    lbd.stats()
        .unwrap()
        .vips
        .iter()
        .filter(|v| v.address.is_ipv6())
        .map(|v| v.packets)
        .sum()
}

/// New TCP connections and UDP flows to `[fd99::50]:80` succeed, through `lbd`'s program.
fn traffic_through(lab: &Lab, lbd: &LbdGuard<'_>) {
    let before = v6_packets(lbd);
    for r in lab
        .tcp_requests(lab.vip6(), 10, 2, Duration::from_secs(2))
        .iter()
        .chain(&lab.udp_requests(lab.vip6(), 10, 2, Duration::from_secs(2)))
    {
        if let Err(e) = r {
            panic!("IPv6 traffic to the VIP: {e:#}");
        }
    }
    let moved = v6_packets(lbd) - before;
    assert!(
        moved >= 10 * 3 + 10 * 2,
        "the master's program forwarded {moved} packets"
    );
}

#[test]
fn vrrp_ipv6_two_lbd_nodes_elect_and_fail_over() {
    if !require_root("vrrp_ipv6_two_lbd_nodes_elect_and_fail_over") {
        return;
    }
    let lab = Lab::builder()
        .ipv6()
        .backends(2)
        .lb_nodes(2)
        .floating_vip()
        .build()
        .expect("lab setup");
    let (cfg_a, cfg_b) = (config(&lab, 0, 150), config(&lab, 1, 100));
    let mut a = lab.spawn_lbd_on(0, &cfg_a).expect("lbd A starts");
    let b = lab.spawn_lbd_on(1, &cfg_b).expect("lbd B starts");
    let sa = wait_lbd_state(a.socket(), "master", Duration::from_secs(3)).unwrap();
    assert!(
        is_link_local(sa.address),
        "adverts from {}, not the link-local address",
        sa.address
    );
    let settle = Instant::now();
    let sb = loop {
        let sb = require_instance(b.socket()).unwrap();
        if sb.master == Some(sa.address) || settle.elapsed() > 4 * INTERVAL {
            break sb;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(sb.state, "backup", "{sb:#?}");
    assert_eq!(sb.master, Some(sa.address), "{sb:#?}");
    assert!(sb.ignored.is_empty(), "{sb:#?}");
    assert_eq!(sb.peers[0].checksum, "pseudo_header");
    assert!(holds(&lab, 0, vip6()).unwrap() && !holds(&lab, 1, vip6()).unwrap());
    traffic_through(&lab, &a);

    let killed = Instant::now();
    a.kill().unwrap();
    let sb = wait_lbd_state(b.socket(), "master", Duration::from_secs(2)).unwrap();
    let took = last_change(&sb, Instant::now()) - killed;
    eprintln!("IPv6: B master {took:?} after kill -9");
    assert!(took <= 3 * INTERVAL + INTERVAL + SLACK, "took {took:?}");
    // The client's neighbour entry for the VIP followed B's unsolicited NA.
    traffic_through(&lab, &b);
    let neigh = lb_tests::netns::ip(
        &lab.client().ns,
        &["-6", "neigh", "show", &v6(VIP).to_string()],
    )
    .unwrap();
    let b_mac = lb_tests::lab::mac_string(lab.lb_nodes()[1].mac);
    assert!(
        neigh.contains(&b_mac),
        "client's entry for the VIP: {neigh}"
    );
}

#[test]
fn vrrp_ipv6_lbd_takes_over_from_keepalived() {
    if !require_root("vrrp_ipv6_lbd_takes_over_from_keepalived") {
        return;
    }
    let lab = Lab::builder()
        .ipv6()
        .backends(1)
        .lb_nodes(2)
        .floating_vip()
        .build()
        .expect("lab setup");
    let mut ka = Keepalived::start(
        &lab,
        0,
        &Instance {
            start_master: true,
            vip: vip6(),
            ..Instance::v3(51, 150, 0.1)
        },
    )
    .unwrap();
    ka.wait_state("MASTER", Duration::from_secs(2)).unwrap();
    let lbd = lab
        .spawn_lbd_on(1, &config(&lab, 1, 100))
        .expect("lbd starts");
    wait_lbd_state(lbd.socket(), "backup", Duration::from_secs(2)).unwrap();
    std::thread::sleep(4 * INTERVAL + INTERVAL / 2);
    let st = require_instance(lbd.socket()).unwrap();
    assert_eq!(st.state, "backup", "{st:#?}");
    assert_eq!(st.became_master, 0, "{st:#?}");
    assert!(st.master.is_some_and(is_link_local), "{st:#?}");
    assert!(
        st.ignored.is_empty(),
        "lbd ignored keepalived's IPv6 adverts: {st:#?}"
    );
    assert!(holds(&lab, 0, vip6()).unwrap());

    let stopped = Instant::now();
    ka.terminate();
    let st = wait_lbd_state(lbd.socket(), "master", INTERVAL + SLACK).unwrap();
    let took = last_change(&st, Instant::now()) - stopped;
    eprintln!("IPv6: lbd master {took:?} after keepalived's SIGTERM");
    assert!(st.priority_zero_received >= 1);
    ka.stop().unwrap();
    traffic_through(&lab, &lbd);
}
