//! Live backend changes through the real agent: established connections keep streaming to
//! their backend while a backend is added and another removed; only the removed backend's
//! clients move, and new connections spread over the new set by weight.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Write},
    net::{Ipv4Addr, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use lb_tests::{netns, require_root, Lab, SourcePorts};
use lb_userspace::{agent::ApplySummary, control::Command};

const LONG_LIVED: u16 = 60;
const NEW_CONNECTIONS: usize = 300;

/// One request/answer on an open connection: the answer is the serving backend's name.
fn ask(stream: &mut BufReader<TcpStream>) -> std::io::Result<String> {
    stream.get_mut().write_all(b"ping\n")?;
    let mut line = String::new();
    if stream.read_line(&mut line)? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(line.trim().to_owned())
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

    // Long-lived connections from fixed source ports, opened inside the client's namespace
    // (the sockets stay there; the test thread uses them afterwards).
    let vip = lab.vip();
    let conns: Vec<(BufReader<TcpStream>, String)> = netns::run_in(&lab.client().ns, || {
        (0..LONG_LIVED)
            .map(|_| {
                let socket = std::net::TcpStream::connect_timeout(&vip, Duration::from_secs(2))?;
                socket.set_read_timeout(Some(Duration::from_secs(2)))?;
                let mut r = BufReader::new(socket);
                let name = ask(&mut r)?;
                Ok((r, name))
            })
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(Into::into)
    })
    .expect("long-lived connections open");
    let mut per_backend: BTreeMap<String, usize> = BTreeMap::new();
    for (_, n) in &conns {
        *per_backend.entry(n.clone()).or_default() += 1;
    }
    for n in &names[..3] {
        assert!(
            per_backend.get(n.as_str()).copied().unwrap_or(0) > 0,
            "no long-lived connection on {n}: {per_backend:?}"
        );
    }

    // Stream on every connection while the change is applied.
    let stop = Arc::new(AtomicBool::new(false));
    let streamer = {
        let stop = stop.clone();
        let removed = names[2].clone();
        let mut conns = conns;
        std::thread::spawn(move || {
            let mut rounds = 0;
            let mut cut: Vec<usize> = Vec::new();
            while !stop.load(Ordering::Relaxed) || rounds < 5 {
                for (i, (conn, name)) in conns.iter_mut().enumerate() {
                    if cut.contains(&i) {
                        continue;
                    }
                    match ask(conn) {
                        Ok(answer) => assert_eq!(
                            &answer, name,
                            "connection {i} moved from {name} to {answer}"
                        ),
                        // Only the removed backend's connections may break.
                        Err(_) if *name == removed => cut.push(i),
                        Err(e) => panic!("connection {i} to {name} broke: {e}"),
                    }
                }
                rounds += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            (rounds, cut.len(), conns)
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    std::fs::write(&config, lab.lbd_config_with(0, &after)).unwrap();
    let summary: ApplySummary =
        serde_json::from_value(lbd.request(&Command::Reload).expect("reload")).unwrap();
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
    let (rounds, cut, conns) = streamer
        .join()
        .expect("surviving connections kept their backend");
    let removed_count = per_backend[&names[2]];
    eprintln!("{rounds} streaming rounds; {cut} of {removed_count} connections on the removed backend were cut; long-lived spread {per_backend:?}");
    assert_eq!(
        cut, removed_count,
        "every connection of the removed backend moves (its packets now reach another backend)"
    );
    drop(conns);

    // The removed backend's clients reconnect, to the others; new connections follow the
    // new weights (1:1:2) within ±25 %, and none reaches the removed backend.
    let b3_before = lab.backends()[2].servers.tcp_connections();
    let results = lab.tcp_requests_from(
        vip,
        SourcePorts::From(44_000),
        NEW_CONNECTIONS,
        1,
        Duration::from_secs(2),
    );
    let mut spread: BTreeMap<String, usize> = BTreeMap::new();
    for r in results {
        *spread.entry(r.expect("new connection")).or_default() += 1;
    }
    eprintln!("new connections: {spread:?}");
    assert_eq!(
        lab.backends()[2].servers.tcp_connections(),
        b3_before,
        "the removed backend got new connections"
    );
    assert!(!spread.contains_key(&names[2]));
    for (i, weight) in [(0usize, 1.0), (1, 1.0), (3, 2.0)] {
        let expected = NEW_CONNECTIONS as f64 * weight / 4.0;
        let got = spread.get(&names[i]).copied().unwrap_or(0) as f64;
        assert!(
            (got - expected).abs() <= expected * 0.25,
            "{} got {got}, expected {expected} ± 25%: {spread:?}",
            names[i]
        );
    }
}
