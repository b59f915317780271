//! An operator's session, through `lbctl` only, against a running `lbd` in the lab: build a
//! VIP from nothing, then drain, re-weight and remove backends while long-lived connections
//! stream; reload a changed file; save the running config.

use std::{collections::BTreeMap, path::Path, time::Duration};

use lb_tests::{
    agent::lbctl,
    client::{self, ask, LongLived},
    lab, require_root, Lab, SourcePorts,
};

/// `lbctl` that must succeed; returns its output.
fn ok(socket: &Path, args: &[&str]) -> String {
    let (code, out) = lbctl(socket, args);
    assert_eq!(code, 0, "lbctl {args:?} failed: {out}");
    out
}

/// One request on every open connection: each must answer from its first backend; only
/// connections to `allowed_to_break` may fail (and are dropped).
fn check(conns: &mut Vec<LongLived>, allowed_to_break: &str) {
    conns.retain_mut(|(c, n)| match ask(c) {
        Ok(answer) => {
            assert_eq!(&answer, n, "a connection moved from {n} to {answer}");
            true
        }
        Err(e) => {
            assert_eq!(n, allowed_to_break, "connection to {n} broke: {e}");
            false
        }
    });
}

fn spread(lab: &Lab, first_port: u16, n: usize) -> BTreeMap<String, usize> {
    let mut spread = BTreeMap::new();
    for r in lab.tcp_requests_from(
        lab.vip(),
        SourcePorts::From(first_port),
        n,
        1,
        Duration::from_secs(2),
    ) {
        *spread
            .entry(r.expect("connection through the VIP"))
            .or_default() += 1;
    }
    spread
}

#[test]
fn an_operator_builds_and_changes_a_vip_with_lbctl_while_connections_stream() {
    if !require_root("an_operator_builds_and_changes_a_vip_with_lbctl_while_connections_stream") {
        return;
    }
    let lab = Lab::builder().backends(4).build().expect("lab setup");
    let socket = lab.control_socket(0);
    let config = lab
        .write_file(
            "lbd.toml",
            &format!(
                "[agent]\ninterface = \"eth0\"\ncontrol_socket = \"{}\"\npin_dir = \"{}\"\n",
                socket.display(),
                lab.pin_dir(0).display()
            ),
        )
        .unwrap();
    let lbd = lab.start_lbd(&config).expect("lbd starts with no VIP");
    let b = |i: usize| lab.backends()[i].node.addr.to_string();
    let name = |i: usize| lab.backends()[i].name().to_owned();

    // From nothing to a balanced VIP.
    ok(
        &socket,
        &[
            "vip",
            "add",
            &format!("{}:80/tcp", lab::VIP),
            "--name",
            "web",
        ],
    );
    for i in 0..3 {
        ok(&socket, &["backend", "add", "web", &b(i)]);
    }
    let s = spread(&lab, 40_000, 150);
    assert_eq!(s.len(), 3, "all three backends serve: {s:?}");
    let list = ok(&socket, &["vip", "list"]);
    assert!(
        list.contains("web") && list.contains("10.99.0.50:80/tcp"),
        "{list}"
    );

    // Long-lived connections, one per backend at least.
    let mut conns = client::long_lived(
        &lab.client().ns,
        lab.vip(),
        30,
        30_000,
        Duration::from_secs(2),
    )
    .unwrap();

    // Drain b1: its connections stay, it gets no new ones.
    ok(&socket, &["backend", "drain", "web", &b(0)]);
    check(&mut conns, "none");
    let s = spread(&lab, 41_000, 150);
    assert!(
        !s.contains_key(&name(0)) && s.len() == 2,
        "drained backend got new connections: {s:?}"
    );
    let shown = ok(&socket, &["backend", "list", "web"]);
    assert!(shown.contains("draining"), "{shown}");

    // Re-weight b2 to 3 (with b3 at 1): about three quarters of new connections.
    ok(&socket, &["backend", "weight", "web", &b(1), "3"]);
    check(&mut conns, "none");
    let s = spread(&lab, 42_000, 200);
    let b2 = s.get(&name(1)).copied().unwrap_or(0) as f64;
    assert!((b2 - 150.0).abs() <= 150.0 * 0.25, "weight 3:1 gave {s:?}");

    // Remove b3: only its connections break.
    ok(&socket, &["backend", "del", "web", &b(2)]);
    check(&mut conns, &name(2));
    check(&mut conns, &name(2));
    assert!(conns.iter().all(|(_, n)| *n != name(2)));
    assert!(!conns.is_empty());

    // Status, stats and JSON reads work; the runtime state is what lbctl shows.
    let status = ok(&socket, &["status"]);
    assert!(status.contains("1 VIPs, 2 backends"), "{status}");
    let stats: serde_json::Value =
        serde_json::from_str(&ok(&socket, &["--json", "stats"])).unwrap();
    assert!(stats["vips"][0]["packets"].as_u64().unwrap() > 0);

    // Save, then reload a changed file (b4 added): unchanged backends keep their connections.
    ok(&socket, &["config", "save"]);
    let saved = std::fs::read_to_string(&config).unwrap();
    assert!(
        saved.contains("drain = true") && saved.contains("weight = 3"),
        "{saved}"
    );
    let changed = format!(
        "{saved}\n[[vip.backend]]\naddress = \"{}\"\nweight = 1\n",
        b(3)
    );
    std::fs::write(&config, changed).unwrap();
    let out = ok(&socket, &["reload"]);
    assert!(out.contains("backends +1 -0"), "{out}");
    check(&mut conns, "none");
    let s = spread(&lab, 43_000, 200);
    assert!(
        s.contains_key(&name(3)),
        "the reloaded backend serves: {s:?}"
    );
    drop(lbd);
}
