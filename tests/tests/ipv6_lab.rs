//! IPv6 direct return through the real agent in the namespace lab (`LabBuilder::ipv6`):
//! every node also has `fd99::N`, the balancer holds the VIP's twin `fd99::50` on `eth0`,
//! the backends on `lo`, and lbd balances `[fd99::50]:80` (TCP and UDP) beside the IPv4
//! VIP. The backend MACs come from the kernel's IPv6 neighbour table, as for IPv4.
//!
//! Needs root; run with `cargo xtask test` or
//! `cargo test -p lb-tests --test ipv6_lab -- --nocapture`.

use std::time::Duration;

use lb_tests::{agent::reason_packets, client::shares, lab, require_root, Lab};

const TIMEOUT: Duration = Duration::from_secs(2);
const RUNS: usize = 60;
const REQUESTS_PER_RUN: usize = 3;

#[test]
fn ipv6_dr_balances_real_tcp_connections_and_udp_flows() {
    if !require_root(module_path!()) {
        return;
    }
    let lab = Lab::builder().ipv6().build().expect("lab setup");
    let config = lab.write_lbd_config("");
    let lbd = lab.start_lbd(&config).expect("lbd starts and attaches");
    let before = lbd.stats().expect("stats before");
    let tcp = lab.tcp_requests(lab.vip6(), RUNS, REQUESTS_PER_RUN, TIMEOUT);
    let udp = lab.udp_requests(lab.vip6(), RUNS, REQUESTS_PER_RUN, TIMEOUT);
    let after = lbd.stats().expect("stats after");
    let tcp_share = shares("TCP connections", &tcp);
    let udp_share = shares("UDP flows", &udp);
    eprintln!("TCP {tcp_share:?}, UDP {udp_share:?}");
    for b in lab.backends() {
        assert!(
            tcp_share.contains_key(b.name()) && udp_share.contains_key(b.name()),
            "{} got no TCP connection or no UDP flow: {tcp_share:?} {udp_share:?}",
            b.name()
        );
    }

    // The balancer forwarded them (a backend answering neighbour solicitations for the VIP
    // would also "work", bypassing it).
    let forwarded =
        reason_packets(&after, "forwarded_dr") - reason_packets(&before, "forwarded_dr");
    let min = (RUNS * (REQUESTS_PER_RUN + 3) + RUNS * REQUESTS_PER_RUN) as u64;
    assert!(forwarded >= min, "forwarded_dr grew by {forwarded} < {min}");
    let v6_vips: Vec<_> = after.vips.iter().filter(|v| v.address.is_ipv6()).collect();
    assert_eq!(v6_vips.len(), 2, "{after:#?}");
    for v in v6_vips {
        for b in &v.backends {
            assert!(
                b.packets > 0,
                "{} backend {} got nothing",
                v.name,
                b.address
            );
            // Resolved through IPv6 neighbour discovery: the lab's MAC of its IPv4 twin.
            let twin = lab
                .backends()
                .iter()
                .find(|x| std::net::IpAddr::V6(lab::v6(x.node.addr)) == b.address)
                .expect("a lab backend");
            assert_eq!(
                b.mac.as_deref(),
                Some(lab::mac_string(twin.node.mac).as_str()),
                "{}",
                b.address
            );
        }
    }
    // IPv4 beside it.
    shares(
        "IPv4 TCP connections",
        &lab.tcp_requests(lab.vip(), 10, 1, TIMEOUT),
    );
}
