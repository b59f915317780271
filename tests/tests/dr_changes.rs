//! Live backend changes through the real agent: established connections keep streaming to
//! their backend while a backend is added and another removed; only the removed backend's
//! clients move, and new connections spread over the new set by weight.

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use lb_tests::{
    client::{self, ask, LongLived},
    require_root, Lab, SourcePorts,
};
use lb_userspace::{agent::ApplySummary, control::Command};

const LONG_LIVED: u16 = 60;
const NEW_CONNECTIONS: usize = 300;

/// Opens `LONG_LIVED` connections from the client, each pinned to its first backend.
fn open_long_lived(lab: &Lab) -> Vec<LongLived> {
    client::long_lived(
        &lab.client().ns,
        lab.vip(),
        LONG_LIVED,
        30_000,
        Duration::from_secs(2),
    )
    .expect("long-lived connections open")
}

fn spread_of<'a>(names: impl Iterator<Item = &'a String>) -> BTreeMap<String, usize> {
    let mut spread = BTreeMap::new();
    for n in names {
        *spread.entry(n.clone()).or_default() += 1;
    }
    spread
}

/// Streams on every connection until `stop`, then five more rounds. Each answer must come
/// from the connection's first backend; only connections to `may_break` may fail (they
/// are cut and counted). Returns (rounds, cut).
fn stream(
    mut conns: Vec<LongLived>,
    stop: Arc<AtomicBool>,
    may_break: Option<String>,
) -> std::thread::JoinHandle<(usize, usize)> {
    std::thread::spawn(move || {
        let mut rounds = 0;
        let mut rounds_after_stop = 0;
        let mut cut: Vec<usize> = Vec::new();
        while rounds_after_stop < 5 {
            if stop.load(Ordering::Relaxed) {
                rounds_after_stop += 1;
            }
            for (i, (conn, name)) in conns.iter_mut().enumerate() {
                if cut.contains(&i) {
                    continue;
                }
                match ask(conn) {
                    Ok(answer) => assert_eq!(
                        &answer, name,
                        "connection {i} moved from {name} to {answer}"
                    ),
                    Err(_) if may_break.as_ref() == Some(name) => cut.push(i),
                    Err(e) => panic!("connection {i} to {name} broke: {e}"),
                }
            }
            rounds += 1;
            std::thread::sleep(Duration::from_millis(10));
        }
        (rounds, cut.len())
    })
}

/// Rewrites the agent's config and asks it to reload.
fn reload(
    lab: &Lab,
    lbd: &lb_tests::LbdGuard<'_>,
    config: &std::path::Path,
    backends: &[(Ipv4Addr, u32)],
) -> ApplySummary {
    std::fs::write(config, lab.lbd_config_with(0, backends)).unwrap();
    serde_json::from_value(lbd.request(&Command::Reload).expect("reload")).unwrap()
}

/// New connections from fixed source ports; returns backend name → count.
fn new_connections(lab: &Lab, first_port: u16) -> BTreeMap<String, usize> {
    let results = lab.tcp_requests_from(
        lab.vip(),
        SourcePorts::From(first_port),
        NEW_CONNECTIONS,
        1,
        Duration::from_secs(2),
    );
    spread_of(
        results
            .into_iter()
            .map(|r| r.expect("new connection"))
            .collect::<Vec<_>>()
            .iter(),
    )
}

fn assert_weighted(spread: &BTreeMap<String, usize>, expected: &[(&str, f64)]) {
    let total: f64 = expected.iter().map(|(_, w)| w).sum();
    for (name, weight) in expected {
        let want = NEW_CONNECTIONS as f64 * weight / total;
        let got = spread.get(*name).copied().unwrap_or(0) as f64;
        assert!(
            (got - want).abs() <= want * 0.25,
            "{name} got {got}, expected {want} ± 25%: {spread:?}"
        );
    }
    let named: std::collections::HashSet<&str> = expected.iter().map(|(n, _)| *n).collect();
    assert!(
        spread.keys().all(|k| named.contains(k.as_str())),
        "connections outside the set: {spread:?}"
    );
}

#[test]
fn long_lived_connections_survive_a_backend_added_and_another_removed() {
    if !require_root("long_lived_connections_survive_a_backend_added_and_another_removed") {
        return;
    }
    let lab = Lab::builder().backends(4).build().expect("lab setup");
    let addr = |i: usize| lab.backends()[i].node.addr;
    let names: Vec<String> = lab.backends().iter().map(|b| b.name().to_owned()).collect();
    let before: Vec<(Ipv4Addr, u32)> = vec![(addr(0), 1), (addr(1), 1), (addr(2), 1)];
    // Remove b3, add b4 with twice the weight.
    let after: Vec<(Ipv4Addr, u32)> = vec![(addr(0), 1), (addr(1), 1), (addr(3), 2)];
    let config = lab
        .write_file("lbd.toml", &lab.lbd_config_with(0, &before))
        .unwrap();
    let lbd = lab.start_lbd(&config).expect("lbd starts");

    let conns = open_long_lived(&lab);
    let per_backend = spread_of(conns.iter().map(|(_, n)| n));
    for n in &names[..3] {
        assert!(
            per_backend.get(n).copied().unwrap_or(0) > 0,
            "no long-lived connection on {n}: {per_backend:?}"
        );
    }

    // Stream on every connection while the change is applied.
    let stop = Arc::new(AtomicBool::new(false));
    let streamer = stream(conns, stop.clone(), Some(names[2].clone()));
    std::thread::sleep(Duration::from_millis(200));
    let summary = reload(&lab, &lbd, &config, &after);
    // Both VIPs (TCP and UDP) lose b3 and gain b4.
    assert_eq!(
        (
            summary.backends_added,
            summary.backends_removed,
            summary.vips_added,
            summary.vips_removed
        ),
        (2, 2, 0, 0),
        "{summary:?}"
    );
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (rounds, cut) = streamer
        .join()
        .expect("surviving connections kept their backend");
    let removed_count = per_backend[&names[2]];
    eprintln!("{rounds} streaming rounds; {cut} of {removed_count} connections on the removed backend were cut; long-lived spread {per_backend:?}");
    assert_eq!(
        cut, removed_count,
        "every connection of the removed backend moves (its packets now reach another backend)"
    );

    // The removed backend's clients reconnect, to the others; new connections follow the
    // new weights (1:1:2) within ±25 %, and none reaches the removed backend.
    let b3_before = lab.backends()[2].servers.tcp_connections();
    let spread = new_connections(&lab, 44_000);
    eprintln!("new connections: {spread:?}");
    assert_eq!(
        lab.backends()[2].servers.tcp_connections(),
        b3_before,
        "the removed backend got new connections"
    );
    assert_weighted(
        &spread,
        &[(&names[0], 1.0), (&names[1], 1.0), (&names[3], 2.0)],
    );
}

#[test]
fn a_drained_backend_keeps_its_connections_and_gets_no_new_ones() {
    if !require_root("a_drained_backend_keeps_its_connections_and_gets_no_new_ones") {
        return;
    }
    let lab = Lab::new().expect("lab setup");
    let addr = |i: usize| lab.backends()[i].node.addr;
    let names: Vec<String> = lab.backends().iter().map(|b| b.name().to_owned()).collect();
    let config = lab
        .write_file(
            "lbd.toml",
            &lab.lbd_config_with(0, &[(addr(0), 1), (addr(1), 1), (addr(2), 1)]),
        )
        .unwrap();
    let lbd = lab.start_lbd(&config).expect("lbd starts");
    let conns = open_long_lived(&lab);
    let per_backend = spread_of(conns.iter().map(|(_, n)| n));
    assert!(
        per_backend.get(&names[0]).copied().unwrap_or(0) > 0,
        "{per_backend:?}"
    );

    let stop = Arc::new(AtomicBool::new(false));
    // Nothing may break: draining moves no established connection.
    let streamer = stream(conns, stop.clone(), None);
    std::thread::sleep(Duration::from_millis(200));
    let summary = reload(
        &lab,
        &lbd,
        &config,
        &[(addr(0), 0), (addr(1), 1), (addr(2), 1)],
    );
    assert_eq!(
        (
            summary.backends_added,
            summary.backends_removed,
            summary.vips_changed
        ),
        (0, 0, 2),
        "{summary:?}"
    );
    let b1_before = lab.backends()[0].servers.tcp_connections();
    let spread = new_connections(&lab, 46_000);
    stop.store(true, Ordering::Relaxed);
    let (rounds, cut) = streamer
        .join()
        .expect("every connection kept its backend, the drained one's too");
    eprintln!("{rounds} streaming rounds, {cut} cut; new connections: {spread:?}");
    assert_eq!(
        lab.backends()[0].servers.tcp_connections(),
        b1_before,
        "the drained backend got new connections"
    );
    assert_weighted(&spread, &[(&names[1], 1.0), (&names[2], 1.0)]);
}
