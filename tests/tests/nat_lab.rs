//! NAT through the real agent in the namespace lab's NAT topology (`LabBuilder::nat`):
//! backends on 10.98.0.0/24 behind the balancer's `eth1`, their default route via the
//! balancer, servers on :8080 only, VIP:80 in `mode = "nat"`. A connection or a UDP
//! exchange that succeeds proves the whole path: the request was translated to
//! backend:8080 (nothing listens on :80 there), the reply was translated back to VIP:80
//! (the client's sockets are connected to VIP:80 and drop anything else), and it went
//! through the program both ways (its counters say so).
//!
//! Needs root; run with `cargo xtask test` or
//! `cargo test -p lb-tests --test nat_lab -- --nocapture`.

use std::{net::SocketAddr, time::Duration};

use lb_tests::{
    agent::{lbctl, reason_packets},
    client::shares,
    lab, netns, require_root, Lab, LbdGuard,
};

const TIMEOUT: Duration = Duration::from_secs(2);
const RUNS: usize = 60;
const REQUESTS_PER_RUN: usize = 3;

#[test]
fn nat_remaps_vip_80_to_backend_8080_for_tcp_and_udp_and_the_client_sees_only_the_vip() {
    if !require_root(module_path!()) {
        return;
    }
    let lab = Lab::builder().nat().build().expect("lab setup");
    let config = lab.write_lbd_config("");
    let lbd = lab.start_lbd(&config).expect("lbd starts and attaches");
    exchange(&lab, &lbd, lab.vip());
    let lb = &lab.lb().ns;
    assert!(Lab::xdp_attached(lb, "eth0").unwrap(), "program on eth0");
    assert!(
        Lab::xdp_attached(lb, "eth1").unwrap(),
        "program on eth1 (agent.nat_interfaces), where the replies come in"
    );
}

#[test]
fn nat_over_ipv6_remaps_and_translates_back() {
    if !require_root(module_path!()) {
        return;
    }
    let lab = Lab::builder().nat().ipv6().build().expect("lab setup");
    let config = lab.write_lbd_config("");
    let lbd = lab.start_lbd(&config).expect("lbd starts and attaches");
    exchange(&lab, &lbd, lab.vip6());
    // IPv4 still works beside it.
    let tcp = lab.tcp_requests(lab.vip(), 10, 1, TIMEOUT);
    shares("IPv4 TCP connections", &tcp);
}

#[test]
fn a_nat_vip_without_ip_forwarding_is_refused_naming_the_sysctl() {
    if !require_root(module_path!()) {
        return;
    }
    let lab = Lab::builder().nat().backends(1).build().expect("lab setup");
    netns::sysctl(&lab.lb().ns, &["net.ipv4.ip_forward=0"]).unwrap();
    let config = lab.write_lbd_config("");
    let err = lab
        .start_lbd(&config)
        .err()
        .expect("lbd refuses NAT without forwarding");
    let log = std::fs::read_to_string(lab.dir().join("lbd-lb.log")).unwrap_or_default();
    assert!(
        log.contains("net.ipv4.ip_forward is 0")
            || format!("{err:#}").contains("net.ipv4.ip_forward"),
        "error: {err:#}\nlog:\n{log}"
    );
}

#[test]
fn lbctl_adds_a_nat_vip_and_a_remapped_backend_at_runtime() {
    if !require_root(module_path!()) {
        return;
    }
    let lab = Lab::builder().nat().backends(1).build().expect("lab setup");
    let config = lab.write_lbd_config("");
    let lbd = lab.start_lbd(&config).expect("lbd starts and attaches");
    let socket = lbd.socket().to_owned();
    let run = |args: &[&str]| {
        let (code, out) = lbctl(&socket, args);
        assert_eq!(code, 0, "lbctl {args:?}: {out}");
        out
    };
    run(&[
        "vip",
        "add",
        "10.99.0.50:81/tcp",
        "--name",
        "alt",
        "--mode",
        "nat",
    ]);
    let b1 = lab.backends()[0].node.addr.to_string();
    // DR cannot change the port: refused, nothing changed.
    run(&["vip", "add", "10.99.0.50:82/tcp", "--name", "dr"]);
    let (code, out) = lbctl(&socket, &["backend", "add", "dr", &b1, "--port", "8080"]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("needs mode = \"nat\""), "{out}");
    run(&["backend", "add", "alt", &b1, "--port", "8080"]);
    let list = run(&["vip", "list"]);
    assert!(list.contains("nat"), "{list}");
    let backends = run(&["backend", "list", "alt"]);
    assert!(backends.contains(&format!("{b1}:8080")), "{backends}");
    let alt = SocketAddr::from((lab::VIP, 81));
    shares(
        "connections to VIP:81",
        &lab.tcp_requests(alt, 5, 2, TIMEOUT),
    );
}

/// TCP connections and UDP flows to `vip` all succeed, every backend takes part, the
/// servers saw exactly what the client saw, and the program translated both ways.
fn exchange(lab: &Lab, lbd: &LbdGuard<'_>, vip: SocketAddr) {
    let before = lbd.stats().expect("stats before");
    let tcp = lab.tcp_requests(vip, RUNS, REQUESTS_PER_RUN, TIMEOUT);
    let udp = lab.udp_requests(vip, RUNS, REQUESTS_PER_RUN, TIMEOUT);
    let after = lbd.stats().expect("stats after");
    let tcp_share = shares("TCP connections", &tcp);
    let udp_share = shares("UDP flows", &udp);
    eprintln!("{vip}: TCP {tcp_share:?}, UDP {udp_share:?}");
    for b in lab.backends() {
        assert!(
            tcp_share.contains_key(b.name()) && udp_share.contains_key(b.name()),
            "{} got no TCP connection or no UDP flow: {tcp_share:?} {udp_share:?}",
            b.name()
        );
    }
    let served_tcp: u64 = lab
        .backends()
        .iter()
        .map(|b| b.servers.tcp_requests())
        .sum();
    let served_udp: u64 = lab
        .backends()
        .iter()
        .map(|b| b.servers.udp_datagrams())
        .sum();
    assert!(
        served_tcp >= (RUNS * REQUESTS_PER_RUN) as u64,
        "served {served_tcp}"
    );
    assert!(
        served_udp >= (RUNS * REQUESTS_PER_RUN) as u64,
        "served {served_udp}"
    );

    let grew = |names: &[&str]| -> u64 {
        names
            .iter()
            .map(|n| reason_packets(&after, n) - reason_packets(&before, n))
            .sum()
    };
    let requests = grew(&["redirected_nat", "forwarded_nat"]);
    let replies = grew(&["redirected_nat_reply", "forwarded_nat_reply"]);
    eprintln!("program: requests translated {requests}, replies translated {replies}");
    // Per connection at least SYN, ACK, the requests and FIN; the first packet of each
    // direction may go to the kernel while the neighbour is resolved.
    let min = (RUNS * (REQUESTS_PER_RUN + 3) + RUNS * REQUESTS_PER_RUN) as u64 - 4;
    assert!(requests >= min, "requests translated {requests} < {min}");
    assert!(
        replies >= (RUNS * (REQUESTS_PER_RUN + 1) + RUNS * REQUESTS_PER_RUN) as u64 - 4,
        "replies translated {replies}"
    );
    for v in after.vips.iter().filter(|v| v.address == vip.ip()) {
        for b in &v.backends {
            assert!(
                b.packets > 0,
                "{} backend {} got nothing: {after:#?}",
                v.name,
                b.address
            );
        }
    }
}

/// Path MTU discovery through NAT: the balancer's backend-side link has a smaller MTU than the
/// client's, so the client's full-size segments (DF set) do not fit. The program answers
/// them with ICMP fragmentation-needed quoting the packet as the client sent it, the client
/// lowers its path MTU, and a 1 MiB upload completes.
#[test]
fn a_smaller_mtu_behind_the_balancer_still_completes_a_large_transfer() {
    if !require_root(module_path!()) {
        return;
    }
    use std::io::{BufRead as _, BufReader, Write as _};
    let lab = Lab::builder().nat().backends(1).build().expect("lab setup");
    let config = lab.write_lbd_config("");
    let lbd = lab.start_lbd(&config).expect("lbd starts and attaches");
    netns::ip(&lab.lb().ns, &["link", "set", "eth1", "mtu", "1280"]).unwrap();
    let before = lbd.stats().unwrap();
    let vip = lab.vip();
    let (lines, answered) = netns::run_in(&lab.client().ns, || {
        let socket = lb_tests::client::tcp_connect(vip, 0, Duration::from_secs(5))?;
        socket.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut conn = BufReader::new(socket);
        let line = format!("{}\n", "x".repeat(4095));
        let mut answered = 0;
        for _ in 0..256 {
            conn.get_mut().write_all(line.as_bytes())?;
            let mut answer = String::new();
            conn.read_line(&mut answer)?;
            if !answer.trim().is_empty() {
                answered += 1;
            }
        }
        Ok((256, answered))
    })
    .expect("the 1 MiB upload through a 1280-byte link completes");
    assert_eq!(
        answered, lines,
        "every 4 KiB line of the upload was answered"
    );
    let after = lbd.stats().unwrap();
    assert!(
        reason_packets(&after, "sent_icmp_too_big") > reason_packets(&before, "sent_icmp_too_big"),
        "the program told the client about the smaller MTU"
    );
}
