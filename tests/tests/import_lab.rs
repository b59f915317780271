//! A keepalived.conf for the lab's topology, converted by `lbctl config import`'s library,
//! runs as is in the real lbd: connections through the VIP reach every backend, and the
//! converted TCP_CHECK sees them all up. With a vrrp_instance too, the converted instance
//! becomes master, adds the VIP and forwards. And the migration docs/import.md describes:
//! one node converted to lbd next to a node still running keepalived with its original
//! configuration, the two agree on the master both ways.
//!
//! Needs root; `cargo xtask test -- --test import_lab`.

use std::{
    collections::BTreeMap,
    path::Path,
    time::{Duration, Instant},
};

use lb_tests::{
    keepalived::{self, Instance, Keepalived},
    lab, require_root,
    vrrp::wait_lbd_state,
    Lab, SourcePorts,
};
use lb_userspace::{
    config,
    control::{self, Command, HealthReport},
    import::{keepalived::import_str, Imported, Options},
};

const CONNECTIONS: usize = 150;

/// The virtual_server block for the lab's VIP and backends, as an LVS-DR deployment
/// would write it.
fn virtual_server(lab: &Lab) -> String {
    let mut s = format!(
        "virtual_server {} {} {{\n    delay_loop 1\n    lb_algo wrr\n    lb_kind DR\n    protocol TCP\n\n",
        lab::VIP,
        lab::SERVICE_PORT
    );
    for b in lab.backends() {
        s.push_str(&format!(
            "    real_server {} {} {{\n        weight 1\n        TCP_CHECK {{\n            connect_timeout 1\n            retry 2\n            delay_before_retry 1\n        }}\n    }}\n",
            b.node.addr,
            lab::SERVICE_PORT
        ));
    }
    s.push_str("}\n");
    s
}

/// Converts `keepalived_conf`, points the control socket into the lab (the only edit an
/// operator would not need), and writes it as `lb.toml`.
fn convert(lab: &Lab, keepalived_conf: &str, opts: &Options) -> (Imported, std::path::PathBuf) {
    lab.write_file("keepalived.conf", keepalived_conf)
        .expect("write keepalived.conf");
    let imported = import_str(keepalived_conf, "keepalived.conf", lab.dir(), opts)
        .unwrap_or_else(|e| panic!("conversion failed: {e}"));
    eprintln!("{}", imported.toml);
    let socket = lab.control_socket(0);
    let toml = imported.toml.replacen(
        "[agent]\n",
        &format!(
            "[agent]\ncontrol_socket = {:?}\npin_dir = {:?}\n",
            socket.display().to_string(),
            lab.pin_dir(0).display().to_string()
        ),
        1,
    );
    let cfg = config::parse(&toml).expect("still valid with the lab's socket");
    assert_eq!(cfg.agent.control_socket, socket);
    let path = lab.write_file("lb.toml", &toml).expect("write lb.toml");
    (imported, path)
}

/// Every connection succeeds and every backend answers some.
fn all_backends_reached(lab: &Lab, first_port: u16) {
    let results = lab.tcp_requests_from(
        lab.vip(),
        SourcePorts::From(first_port),
        CONNECTIONS,
        1,
        Duration::from_secs(2),
    );
    let mut share: BTreeMap<String, usize> = BTreeMap::new();
    for r in results {
        let name = r.unwrap_or_else(|e| panic!("a connection through the VIP failed: {e:#}"));
        *share.entry(name).or_default() += 1;
    }
    eprintln!("connections per backend: {share:?}");
    for b in lab.backends() {
        let n = share.get(b.name()).copied().unwrap_or(0);
        assert!(n > 0, "{} got none of {CONNECTIONS}: {share:?}", b.name());
    }
}

fn health(socket: &Path) -> Vec<HealthReport> {
    serde_json::from_value(control::request(socket, &Command::Health).expect("health"))
        .expect("health report")
}

#[test]
fn converted_virtual_server_balances_in_the_lab() {
    if !require_root("converted_virtual_server_balances_in_the_lab") {
        return;
    }
    let lab = Lab::new().expect("lab setup");
    let conf = format!(
        "! keepalived.conf of the lab's balancer, DR only\nglobal_defs {{\n    router_id lab-lb\n}}\n\n{}",
        virtual_server(&lab)
    );
    let opts = Options {
        interface: Some("eth0".into()),
    };
    let (imported, path) = convert(&lab, &conf, &opts);
    let vip = &imported.config.vips[0];
    assert_eq!(vip.backends.len(), lab.backends().len());
    assert!(vip.health_check.is_some());

    let lbd = lab
        .start_lbd(&path)
        .expect("lbd starts with the converted config");
    all_backends_reached(&lab, 40_000);
    // delay_loop 1: every backend is checked within a second or so, and passes.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let checked = health(&lab.control_socket(0));
        let passed = checked
            .iter()
            .filter(|h| h.state == "up" && h.checks >= 1 && h.last_error.is_none())
            .count();
        if passed == lab.backends().len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not all checked and up: {checked:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(lbd);
}

#[test]
fn converted_vrrp_instance_takes_the_vip_and_forwards() {
    if !require_root("converted_vrrp_instance_takes_the_vip_and_forwards") {
        return;
    }
    let lab = Lab::builder().floating_vip().build().expect("lab setup");
    let conf = format!(
        "vrrp_instance VI_LAB {{\n    state MASTER\n    interface eth0\n    virtual_router_id 50\n    priority 150\n    advert_int 1\n    authentication {{\n        auth_type PASS\n        auth_pass lab\n    }}\n    virtual_ipaddress {{\n        {}/32 dev eth0\n    }}\n}}\n\n{}",
        lab::VIP,
        virtual_server(&lab)
    );
    let (imported, path) = convert(&lab, &conf, &Options::default());
    assert_eq!(imported.config.agent.interface, "eth0");

    let _lbd = lab
        .spawn_lbd_on(0, &path)
        .expect("lbd starts with the converted config");
    // VRRPv2 at 1 s: master after Master_Down_Interval, about 3.4 s, on a lone node.
    wait_lbd_state(&lab.control_socket(0), "master", Duration::from_secs(10))
        .expect("the converted instance becomes master");
    all_backends_reached(&lab, 41_000);
}

/// Node 0 was converted from its keepalived.conf (priority 150), node 1 still runs
/// keepalived with its own (priority 100): keepalived accepts the converted node's adverts
/// (VRID, version, password) and stays backup, traffic flows through lbd; when lbd stops,
/// keepalived takes the address over.
#[test]
fn converted_node_and_keepalived_node_share_the_vip() {
    if !require_root("converted_node_and_keepalived_node_share_the_vip") {
        return;
    }
    let lab = Lab::builder()
        .lb_nodes(2)
        .floating_vip()
        .build()
        .expect("lab setup");
    let node = |priority| Instance {
        vrid: 51,
        priority,
        version: 2,
        advert_int: 1.0,
        start_master: false,
        preempt: true,
        auth_pass: Some("s3cr3t".into()),
        unicast: None,
        vip: lab::VIP.into(),
    };

    // Node 0's own keepalived.conf, as the helper writes it for keepalived, plus the LVS part.
    let notify = lab.dir().join("notify-lb0.sh");
    std::fs::write(&notify, "#!/bin/sh\nexit 0\n").expect("notify script");
    let conf = format!(
        "{}\n{}",
        keepalived::config("lb0", "VI_1", &node(150), &notify),
        virtual_server(&lab)
    );
    let (imported, path) = convert(&lab, &conf, &Options::default());
    let vrrp = &imported.config.vrrp[0];
    assert_eq!(
        (vrrp.vrid, vrrp.priority, vrrp.version),
        (51, 150, 2),
        "{vrrp:?}"
    );
    assert_eq!(vrrp.auth_pass.as_deref(), Some("s3cr3t"));

    let lbd = lab
        .spawn_lbd_on(0, &path)
        .expect("lbd starts with the converted config");
    wait_lbd_state(&lab.control_socket(0), "master", Duration::from_secs(10))
        .expect("the converted node becomes master");
    // keepalived joins while lbd is master, so it must never be master itself: past its
    // Master_Down_Interval (3.6 s at priority 100) it would be, had it not heard (or not
    // accepted) lbd's adverts.
    let ka = Keepalived::start(&lab, 1, &node(100)).expect("keepalived starts on node 1");
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        ka.states().iter().all(|(_, s)| s != "MASTER"),
        "keepalived became master next to the converted node: {:?}\n{}",
        ka.states(),
        ka.log()
    );
    assert!(keepalived::holds_vip(&lab, 0).unwrap());
    assert!(!keepalived::holds_vip(&lab, 1).unwrap());
    assert_eq!(ka.state().as_deref(), Some("BACKUP"));
    all_backends_reached(&lab, 42_000);

    drop(lbd);
    ka.wait_state("MASTER", Duration::from_secs(10))
        .expect("keepalived takes over when lbd stops");
    assert!(keepalived::holds_vip(&lab, 1).unwrap());
}
