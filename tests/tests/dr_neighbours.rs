//! The agent keeps backend MACs current from the kernel's neighbour table: a MAC the
//! kernel learns is in the map at once, and a backend the kernel forgot is re-resolved.

use std::time::{Duration, Instant};

use lb_tests::{lab::mac_string, netns, require_root, Lab, SourcePorts};
use lb_userspace::control::StatsReport;

const NEW_MAC: &str = "02:99:00:00:01:21";

fn b1_mac(stats: &StatsReport) -> Option<String> {
    stats.vips[0]
        .backends
        .iter()
        .find(|b| b.address.to_string() == "10.99.0.21")
        .and_then(|b| b.mac.clone())
}

/// Polls the agent until b1's MAC is `want`; returns how long it took.
fn wait_for_mac(lbd: &lb_tests::LbdGuard<'_>, want: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let mac = b1_mac(&lbd.stats().expect("stats"));
        if mac.as_deref() == Some(want) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "b1's MAC is {mac:?} after {limit:?}, expected {want}\n{}",
            lbd.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn backend_mac_changes_reach_the_data_plane() {
    if !require_root("backend_mac_changes_reach_the_data_plane") {
        return;
    }
    let lab = Lab::new().expect("lab setup");
    let config = lab.write_lbd_config("");
    let lbd = lab.start_lbd(&config).expect("lbd starts");
    let b1 = &lab.backends()[0];
    let lb = &lab.lb().ns;
    assert_eq!(
        b1_mac(&lbd.stats().unwrap()).as_deref(),
        Some(mac_string(b1.node.mac).as_str())
    );

    // The backend's NIC is replaced: new MAC. Then the LB's kernel forgets the neighbour
    // (as when an entry is garbage-collected); the agent must ask for it again at once and
    // follow the answer, well before its periodic refresh.
    netns::ip(&b1.node.ns, &["link", "set", "eth0", "address", NEW_MAC]).unwrap();
    netns::ip(lb, &["neigh", "del", "10.99.0.21", "dev", "eth0"]).unwrap();
    let took = wait_for_mac(&lbd, NEW_MAC, Duration::from_secs(3));
    eprintln!("re-resolved the new MAC in {took:?}");

    // The new MAC carries traffic: b1 serves its share again.
    let before = b1.servers.tcp_connections();
    let results = lab.tcp_requests_from(
        lab.vip(),
        SourcePorts::From(42_000),
        60,
        1,
        Duration::from_secs(2),
    );
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    assert!(
        b1.servers.tcp_connections() > before,
        "b1 got no connection after its MAC changed"
    );

    // A MAC the kernel learns directly (here: set by hand) is in the map within moments,
    // through the neighbour event stream rather than the periodic refresh.
    let original = mac_string(b1.node.mac);
    netns::ip(&b1.node.ns, &["link", "set", "eth0", "address", &original]).unwrap();
    netns::ip(
        lb,
        &[
            "neigh",
            "replace",
            "10.99.0.21",
            "lladdr",
            &original,
            "dev",
            "eth0",
            "nud",
            "reachable",
        ],
    )
    .unwrap();
    let took = wait_for_mac(&lbd, &original, Duration::from_secs(2));
    eprintln!("followed a neighbour event in {took:?}");
}
