//! Health checks through the real agent against real servers in the lab: a backend whose
//! server stops (refused) or goes silent (nftables drop, so connects time out) leaves its
//! VIP within interval × fall + one interval, comes back after `rise` good checks, and the
//! other backends' connections never break. HTTP checks tell 200 from 503; HTTPS checks
//! verify a real TLS server's certificate.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::Path,
    sync::{
        atomic::{AtomicBool, AtomicU16, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use lb_tests::{
    client::{self, ask},
    http, lab, netns, require_root, servers, Lab, SourcePorts,
};
use lb_userspace::control::{self, Command, HealthReport};

const PORT: u16 = 8080;
const INTERVAL: Duration = Duration::from_millis(200);
const FALL: u32 = 2;
const RISE: u32 = 2;
/// What the poll loop itself may add to a measured detection time.
const POLL_SLACK: Duration = Duration::from_millis(100);

fn health(socket: &Path) -> Vec<HealthReport> {
    serde_json::from_value(control::request(socket, &Command::Health).expect("health")).unwrap()
}

/// Waits until `target`'s state is `want`; returns how long that took.
fn wait_state(socket: &Path, target: &str, want: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let all = health(socket);
        let me = all
            .iter()
            .find(|h| h.target == target)
            .unwrap_or_else(|| panic!("{target} not checked: {all:?}"));
        if me.state == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit * 3,
            "{target} still {} after {:?}: {me:?}",
            me.state,
            start.elapsed()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn spread(lab: &Lab, vip: SocketAddr, first_port: u16) -> BTreeMap<String, usize> {
    let mut s = BTreeMap::new();
    for r in lab.tcp_requests_from(
        vip,
        SourcePorts::From(first_port),
        60,
        1,
        Duration::from_secs(2),
    ) {
        *s.entry(r.expect("new connection")).or_default() += 1;
    }
    s
}

#[test]
fn tcp_checks_remove_a_refusing_and_a_silent_backend_and_bring_them_back() {
    if !require_root("tcp_checks_remove_a_refusing_and_a_silent_backend_and_bring_them_back") {
        return;
    }
    let lab = Lab::new().expect("lab setup");
    let names: Vec<String> = lab.backends().iter().map(|b| b.name().to_owned()).collect();
    let ns1 = lab.backends()[0].node.ns.clone();
    let b1 = format!("{}:{PORT}", lab.backends()[0].node.addr);
    let start_server = |i: usize, stop: &Arc<AtomicBool>| {
        let b = &lab.backends()[i];
        servers::start(&b.node.ns, b.name(), &[], PORT, stop)
            .expect("server starts")
            .1
    };
    let stops: Vec<Arc<AtomicBool>> = (0..3).map(|_| Arc::new(AtomicBool::new(false))).collect();
    let mut threads: Vec<_> = (0..3).map(|i| start_server(i, &stops[i])).collect();

    let socket = lab.control_socket(0);
    let mut text = format!(
        "[agent]\ninterface = \"eth0\"\ncontrol_socket = \"{}\"\npin_dir = \"{}\"\n\n[[vip]]\nname = \"svc\"\naddress = \"{}\"\nport = {PORT}\nprotocol = \"tcp\"\n\
         [vip.health_check]\ntype = \"tcp\"\ninterval = \"{}ms\"\ntimeout = \"100ms\"\nrise = {RISE}\nfall = {FALL}\n",
        socket.display(),
        lab.pin_dir(0).display(),
        lab::VIP,
        INTERVAL.as_millis()
    );
    for b in lab.backends() {
        text += &format!("\n[[vip.backend]]\naddress = \"{}\"\n", b.node.addr);
    }
    let config = lab.write_file("lbd.toml", &text).unwrap();
    let lbd = lab.start_lbd(&config).expect("lbd starts");
    let vip = SocketAddr::from((lab::VIP, PORT));
    wait_state(&socket, &b1, "up", INTERVAL * 4);
    assert_eq!(spread(&lab, vip, 40_000).len(), 3);

    // Long-lived connections to b2 and b3 stream through everything that follows.
    let mut conns =
        client::long_lived(&lab.client().ns, vip, 24, 30_000, Duration::from_secs(2)).unwrap();
    conns.retain(|(_, n)| *n != names[0]);
    assert!(!conns.is_empty());
    let mut stream_all = |phase: &str| {
        for (c, n) in conns.iter_mut() {
            assert_eq!(
                &ask(c).unwrap_or_else(|e| panic!("{phase}: connection to {n} broke: {e}")),
                n,
                "{phase}"
            );
        }
    };
    let bound = INTERVAL * FALL + INTERVAL + POLL_SLACK;

    // 1. b1's server stops: connects are refused.
    stops[0].store(true, Ordering::Relaxed);
    threads
        .remove(0)
        .into_iter()
        .for_each(|t| t.join().unwrap());
    let took = wait_state(&socket, &b1, "down", bound);
    stream_all("after b1 stopped");
    eprintln!("refused: down after {took:?} (bound {bound:?})");
    assert!(
        took <= bound,
        "refusing backend down after {took:?}, bound {bound:?}"
    );
    let s = spread(&lab, vip, 41_000);
    assert!(
        !s.contains_key(&names[0]),
        "new connections reached the down backend: {s:?}"
    );
    let report = health(&socket)
        .into_iter()
        .find(|h| h.target == b1)
        .unwrap();
    assert!(
        report
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("connection refused"),
        "{report:?}"
    );

    // Back: after `rise` good checks it gets new flows again.
    let restart = Arc::new(AtomicBool::new(false));
    let t1 = start_server(0, &restart);
    let took = wait_state(&socket, &b1, "up", INTERVAL * RISE + INTERVAL + POLL_SLACK);
    eprintln!("restarted: up after {took:?}");
    assert!(took <= INTERVAL * RISE + INTERVAL + POLL_SLACK);
    assert!(spread(&lab, vip, 42_000).contains_key(&names[0]));
    stream_all("after b1 came back");

    // 2. b1 goes silent: nftables drops its traffic, so checks time out.
    netns::exec(&ns1, "nft", &["add table inet lbt; add chain inet lbt in { type filter hook input priority 0; }; add rule inet lbt in tcp dport 8080 drop"])
        .expect("nft rule");
    let took = wait_state(&socket, &b1, "down", bound);
    eprintln!("silent: down after {took:?} (bound {bound:?})");
    assert!(
        took <= bound,
        "silent backend down after {took:?}, bound {bound:?}"
    );
    stream_all("after b1 went silent");
    let s = spread(&lab, vip, 43_000);
    assert!(!s.contains_key(&names[0]), "{s:?}");
    let report = health(&socket)
        .into_iter()
        .find(|h| h.target == b1)
        .unwrap();
    assert!(
        report
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("timed out"),
        "{report:?}"
    );
    netns::exec(&ns1, "nft", &["delete table inet lbt"]).expect("nft cleanup");
    wait_state(&socket, &b1, "up", INTERVAL * RISE + INTERVAL + POLL_SLACK);
    assert!(spread(&lab, vip, 44_000).contains_key(&names[0]));
    stream_all("at the end");

    restart.store(true, Ordering::Relaxed);
    stops.iter().for_each(|s| s.store(true, Ordering::Relaxed));
    drop(lbd);
    drop(t1);
}

#[test]
fn http_checks_tell_200_from_503_and_https_checks_verify_a_real_tls_server() {
    if !require_root("http_checks_tell_200_from_503_and_https_checks_verify_a_real_tls_server") {
        return;
    }
    let lab = Lab::new().expect("lab setup");
    let pki = http::Pki::new(lab.dir()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let statuses: Vec<Arc<AtomicU16>> = (0..3)
        .map(|i| Arc::new(AtomicU16::new(if i == 0 { 503 } else { 200 })))
        .collect();
    for (i, b) in lab.backends().iter().enumerate() {
        http::start(&b.node.ns, b.name(), 8081, statuses[i].clone(), None, &stop).unwrap();
        http::start(
            &b.node.ns,
            b.name(),
            8443,
            Arc::new(AtomicU16::new(200)),
            Some(pki.server.clone()),
            &stop,
        )
        .unwrap();
    }
    let socket = lab.control_socket(0);
    let mut text = format!(
        "[agent]\ninterface = \"eth0\"\ncontrol_socket = \"{}\"\npin_dir = \"{}\"\n",
        socket.display(),
        lab.pin_dir(0).display()
    );
    let checks = [
        (
            "web",
            8081,
            "type = \"http\"
path = \"/health\"
expect_status = [200]"
                .to_owned(),
        ),
        (
            "tls",
            8443,
            format!(
                "type = \"https\"\nserver_name = \"{}\"\nca_file = \"{}\"",
                http::SERVER_NAME,
                pki.ca_file.display()
            ),
        ),
        (
            "tls-wrong-name",
            8444,
            format!(
                "type = \"https\"\nport = 8443\nserver_name = \"other.lab\"\nca_file = \"{}\"",
                pki.ca_file.display()
            ),
        ),
    ];
    for (name, port, check) in &checks {
        text += &format!(
            "\n[[vip]]\nname = \"{name}\"\naddress = \"{}\"\nport = {port}\nprotocol = \"tcp\"\n[vip.health_check]\n{check}\ninterval = \"100ms\"\nrise = 1\nfall = 1\n",
            lab::VIP
        );
        for b in lab.backends() {
            text += &format!("[[vip.backend]]\naddress = \"{}\"\n", b.node.addr);
        }
    }
    let config = lab.write_file("lbd.toml", &text).unwrap();
    let _lbd = lab.start_lbd(&config).expect("lbd starts");
    let b = |i: usize, port: u16| format!("{}:{port}", lab.backends()[i].node.addr);

    // HTTP: the backend answering 503 is down, the others up; fix it and it comes up.
    wait_state(&socket, &b(0, 8081), "down", Duration::from_secs(1));
    wait_state(&socket, &b(1, 8081), "up", Duration::from_secs(1));
    let report = health(&socket)
        .into_iter()
        .find(|h| h.target == b(0, 8081))
        .unwrap();
    assert!(
        report
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("HTTP status 503"),
        "{report:?}"
    );
    statuses[0].store(200, Ordering::Relaxed);
    wait_state(&socket, &b(0, 8081), "up", Duration::from_secs(1));
    statuses[2].store(503, Ordering::Relaxed);
    wait_state(&socket, &b(2, 8081), "down", Duration::from_secs(1));

    // HTTPS: the certificate verifies against the lab CA and the server name, so the checks
    // pass; the same server checked under another name fails in the TLS handshake.
    std::thread::sleep(Duration::from_millis(400));
    let all = health(&socket);
    for h in all.iter().filter(|h| h.vip == "tls") {
        assert!(
            h.state == "up" && h.checks >= 2 && h.last_error.is_none(),
            "{h:?}"
        );
    }
    for h in all.iter().filter(|h| h.vip == "tls-wrong-name") {
        assert_eq!(h.state, "down", "{h:?}");
        assert!(
            h.last_error.as_deref().unwrap_or("").contains("TLS"),
            "{h:?}"
        );
    }
    stop.store(true, Ordering::Relaxed);
}
