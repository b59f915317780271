//! Direct return through the real agent in the namespace lab, and the lab's own promises:
//! it works, several can run at once, and it leaves nothing behind, even after a panic.
//!
//! Needs root; run with `cargo xtask test` (which builds `lbd` first) or
//! `cargo test -p lb-tests --test dr_lab -- --nocapture`.

use std::{
    net::SocketAddr,
    process::ExitStatus,
    time::{Duration, Instant},
};

use lb_tests::{
    agent::{reason_packets, vip_packets},
    client::shares,
    lab, require_root, Lab, SourcePorts,
};
use lb_userspace::control::StatsReport;

const TIMEOUT: Duration = Duration::from_secs(2);

/// Connections or flows per protocol; with three backends each should get about 100.
const RUNS: usize = 300;
const REQUESTS_PER_RUN: usize = 3;

#[test]
fn dr_balances_tcp_and_udp_over_three_backends() {
    if !require_root("dr_balances_tcp_and_udp_over_three_backends") {
        return;
    }
    let lab = Lab::new().expect("lab setup");
    let config = lab.write_lbd_config("");
    let mut lbd = lab.start_lbd(&config).expect("lbd starts and attaches");
    let before = lbd.stats().expect("stats before");

    // Fixed source ports: with the kernel's random ones, some backend falls outside ±25 %
    // in about one run in a hundred, and a test must not fail by chance.
    let t = Instant::now();
    let tcp = lab.tcp_requests_from(
        lab.vip(),
        SourcePorts::From(40_000),
        RUNS,
        REQUESTS_PER_RUN,
        TIMEOUT,
    );
    let tcp_time = t.elapsed();
    let t = Instant::now();
    let udp = lab.udp_requests_from(
        lab.vip(),
        SourcePorts::From(50_000),
        RUNS,
        REQUESTS_PER_RUN,
        TIMEOUT,
    );
    let udp_time = t.elapsed();
    let after = lbd.stats().expect("stats after");

    let tcp_share = shares("TCP connections", &tcp);
    let udp_share = shares("UDP flows", &udp);
    eprintln!("TCP {tcp_share:?} in {tcp_time:?}, UDP {udp_share:?} in {udp_time:?}");
    for b in lab.backends() {
        for (what, share) in [("TCP connections", &tcp_share), ("UDP flows", &udp_share)] {
            let n = share.get(b.name()).copied().unwrap_or(0);
            // ±25 % of an even split.
            assert!(
                (75..=125).contains(&n),
                "{} got {n} of {RUNS} {what}, not within 75..=125: {share:?}",
                b.name()
            );
        }
        // The servers saw exactly what the client saw: no connection or datagram reached
        // a backend other than the one that answered it.
        assert_eq!(
            b.servers.tcp_connections(),
            tcp_share[b.name()] as u64,
            "{}: connections accepted vs. answered",
            b.name()
        );
        assert_eq!(
            b.servers.tcp_requests(),
            (tcp_share[b.name()] * REQUESTS_PER_RUN) as u64,
            "{}: TCP requests served vs. answered",
            b.name()
        );
        assert_eq!(
            b.servers.udp_datagrams(),
            (udp_share[b.name()] * REQUESTS_PER_RUN) as u64,
            "{}: datagrams served vs. answered",
            b.name()
        );
    }

    // Success alone proves nothing: a backend answering ARP for the VIP also "works",
    // with the balancer bypassed. The program's counters must show the traffic.
    let delta = |s: &StatsReport, proto: &str| vip_packets(s, proto);
    let tcp_packets = delta(&after, "tcp") - delta(&before, "tcp");
    let udp_packets = delta(&after, "udp") - delta(&before, "udp");
    // Per connection at least SYN, ACK, three requests and FIN.
    let tcp_min = (RUNS * (REQUESTS_PER_RUN + 3)) as u64;
    let udp_min = (RUNS * REQUESTS_PER_RUN) as u64;
    let forwarded =
        reason_packets(&after, "forwarded_dr") - reason_packets(&before, "forwarded_dr");
    eprintln!("program counters: VIP packets TCP {tcp_packets}, UDP {udp_packets}; forwarded_dr {forwarded}");
    assert!(
        tcp_packets >= tcp_min,
        "TCP VIP packets {tcp_packets} < {tcp_min}"
    );
    assert!(
        udp_packets >= udp_min,
        "UDP VIP packets {udp_packets} < {udp_min}"
    );
    for v in &after.vips {
        for b in &v.backends {
            assert!(
                b.packets > 0,
                "VIP {} ({}): backend {} forwarded no packets: {after:#?}",
                v.name,
                v.protocol,
                b.address
            );
        }
    }
    assert!(
        forwarded >= tcp_min + udp_min,
        "forwarded_dr grew by {forwarded}, expected at least {}",
        tcp_min + udp_min
    );

    let lb = lab.lb().ns.clone();
    assert!(
        Lab::xdp_attached(&lb, "eth0").unwrap(),
        "program attached while lbd runs"
    );
    let status: ExitStatus = lbd.stop().expect("lbd stops");
    assert!(
        status.success(),
        "lbd exit on SIGTERM: {status}\n{}",
        lbd.log()
    );
    assert!(
        !Lab::xdp_attached(&lb, "eth0").unwrap(),
        "XDP program still attached to {lb}/eth0 after lbd exited"
    );
}

#[test]
fn lab_connects_the_client_to_every_backend_directly() {
    if !require_root("lab_connects_the_client_to_every_backend_directly") {
        return;
    }
    let lab = Lab::new().expect("lab setup");
    assert!(
        Lab::xdp_attached(lab.bridge_ns(), &lab.lb().bridge_port).unwrap(),
        "xdp_pass on the balancer's bridge port"
    );
    for b in lab.backends() {
        let addr = SocketAddr::from((b.node.addr, lab::SERVICE_PORT));
        let tcp = lab.tcp_requests(addr, 5, REQUESTS_PER_RUN, TIMEOUT);
        let udp = lab.udp_requests(addr, 5, REQUESTS_PER_RUN, TIMEOUT);
        for r in tcp.into_iter().chain(udp) {
            assert_eq!(r.expect("direct request"), b.name());
        }
        assert_eq!(b.servers.tcp_connections(), 5);
        assert_eq!(b.servers.tcp_requests(), 5 * REQUESTS_PER_RUN as u64);
        assert_eq!(b.servers.udp_datagrams(), 5 * REQUESTS_PER_RUN as u64);
    }
}

#[test]
fn a_lab_can_have_a_second_balancer_node() {
    if !require_root("a_lab_can_have_a_second_balancer_node") {
        return;
    }
    let lab = Lab::builder()
        .backends(2)
        .lb_nodes(2)
        .build()
        .expect("lab setup");
    let lb2 = &lab.lb_nodes()[1];
    assert_eq!(
        (lb2.role.as_str(), lb2.addr.to_string()),
        ("lb2", "10.99.0.11".into())
    );
    assert!(
        Lab::xdp_attached(lab.bridge_ns(), &lb2.bridge_port).unwrap(),
        "xdp_pass on {}",
        lb2.bridge_port
    );
    // It is on the LAN: it reaches a backend's own address.
    let b1 = SocketAddr::from((lab.backends()[0].node.addr, lab::SERVICE_PORT));
    let answer = lb_tests::client::tcp_requests(&lb2.ns, b1, SourcePorts::Ephemeral, 1, 1, TIMEOUT);
    assert_eq!(answer[0].as_ref().expect("lb2 to b1"), "b1");
}

#[test]
fn two_labs_run_at_once() {
    if !require_root("two_labs_run_at_once") {
        return;
    }
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| Lab::new().expect("lab a"));
        let b = s.spawn(|| Lab::new().expect("lab b"));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_ne!(a.prefix(), b.prefix());
    let names: Vec<String> = a.namespaces().into_iter().chain(b.namespaces()).collect();
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        names.len(),
        "namespace names collide: {names:?}"
    );

    std::thread::scope(|s| {
        for l in [&a, &b] {
            s.spawn(move || {
                let b2 = &l.backends()[1];
                let addr = SocketAddr::from((b2.node.addr, lab::SERVICE_PORT));
                for r in l.tcp_requests(addr, 20, 2, TIMEOUT) {
                    assert_eq!(r.expect("direct TCP"), "b2", "in {}", l.prefix());
                }
                for r in l.udp_requests(addr, 20, 2, TIMEOUT) {
                    assert_eq!(r.expect("direct UDP"), "b2", "in {}", l.prefix());
                }
                assert_eq!(b2.servers.tcp_connections(), 20);
            });
        }
    });

    drop(a);
    drop(b);
    let left = lab::leftover_namespaces(&names).unwrap();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn a_lab_is_removed_when_its_test_panics() {
    if !require_root("a_lab_is_removed_when_its_test_panics") {
        return;
    }
    let names = std::sync::Mutex::new(Vec::new());
    let dir = std::sync::Mutex::new(None);
    let outcome = std::panic::catch_unwind(|| {
        let lab = Lab::new().expect("lab setup");
        *names.lock().unwrap() = lab.namespaces();
        *dir.lock().unwrap() = Some(lab.dir().to_owned());
        panic!("deliberate panic with lab {} up", lab.prefix());
    });
    assert!(outcome.is_err());
    let names = names.into_inner().unwrap();
    assert_eq!(
        names.len(),
        6,
        "bridge, client, balancer and three backends"
    );
    let left = lab::leftover_namespaces(&names).unwrap();
    assert!(left.is_empty(), "left behind: {left:?}");
    let dir = dir.into_inner().unwrap().unwrap();
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[test]
fn a_lab_whose_setup_fails_removes_what_it_made() {
    if !require_root("a_lab_whose_setup_fails_removes_what_it_made") {
        return;
    }
    let err = Lab::builder().fail_setup_for_test().build().unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("fail_setup_for_test"), "{msg}");
    // "setting up lab <prefix>: ..."
    let prefix = msg
        .strip_prefix("setting up lab ")
        .and_then(|rest| rest.split(':').next())
        .unwrap_or_else(|| panic!("no lab prefix in {msg:?}"));
    let ours = format!("{prefix}-");
    let left: Vec<_> = lb_tests::netns::list()
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with(&ours))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(!std::env::temp_dir().join(prefix).exists());
}
