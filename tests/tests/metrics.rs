//! `/metrics` through the real agent in the namespace lab: what a Prometheus scrape reads
//! is what the maps hold (as `lbctl stats --json` reads them) and what the client sent, and
//! `--log-format json` logs are JSON lines.
//!
//! Needs root; run with `cargo xtask test` or
//! `cargo test -p lb-tests --test metrics -- --nocapture`.

use std::{
    net::{Ipv4Addr, SocketAddr},
    time::Duration,
};

use lb_tests::{
    agent::lbctl,
    client::http_get,
    require_root,
    vrrp::{instance, lbd_vrrp, wait_lbd_state, wait_until},
    Lab, SourcePorts,
};
use lb_userspace::control::StatsReport;
use prometheus_parse::{Scrape, Value};

const TIMEOUT: Duration = Duration::from_secs(2);
/// Inside the balancer's namespace: no other lab or test can hold it.
const METRICS: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 9740);
const UDP_FLOWS: usize = 60;
const DATAGRAMS_PER_FLOW: usize = 5;
const TCP_CONNECTIONS: usize = 30;

fn scrape(lab: &Lab) -> (String, Scrape) {
    scrape_node(lab, 0)
}

fn scrape_node(lab: &Lab, node: usize) -> (String, Scrape) {
    let ns = &lab.lb_nodes()[node].ns;
    let (status, body) = http_get(ns, METRICS, "/metrics", TIMEOUT).expect("GET /metrics");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.ends_with("# EOF\n"),
        "not a complete exposition:\n{body}"
    );
    let parsed = Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).expect("parses");
    (body, parsed)
}

/// `config` with `agent.metrics_listen` set.
fn with_metrics(config: String) -> String {
    config.replacen(
        "[agent]\n",
        &format!("[agent]\nmetrics_listen = \"{METRICS}\"\n"),
        1,
    )
}

/// The value of the one sample of `metric` with exactly these labels.
fn value(s: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<_> = s
        .samples
        .iter()
        .filter(|x| {
            x.metric == metric
                && x.labels.len() == labels.len()
                && labels.iter().all(|(k, v)| x.labels.get(k) == Some(v))
        })
        .collect();
    assert_eq!(found.len(), 1, "{metric}{labels:?}: {found:?}");
    match &found[0].value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        other => panic!("{metric}: {other:?}"),
    }
}

fn histogram_count(s: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    value(s, &format!("{metric}_count"), labels)
}

/// `lbctl stats --json`, the operator's view of the maps.
fn lbctl_stats(lbd: &lb_tests::LbdGuard) -> StatsReport {
    let (code, out) = lbctl(lbd.socket(), &["stats", "--json"]);
    assert_eq!(code, 0, "{out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("lbctl stats --json ({e}): {out}"))
}

#[test]
fn metrics_equal_the_maps_and_what_the_client_sent() {
    if !require_root("metrics_equal_the_maps_and_what_the_client_sent") {
        return;
    }
    let lab = Lab::new().expect("lab setup");
    // Metrics on, and a TCP health check on the TCP VIP so its series exist.
    let text = with_metrics(lab.lbd_config(0)).replacen(
        "\n[[vip.backend]]",
        "\n[vip.health_check]\ntype = \"tcp\"\ninterval = \"100ms\"\n\n[[vip.backend]]",
        1,
    );
    let config = lab.write_file("lbd-metrics.toml", &text).unwrap();
    let lbd = lab
        .start_lbd_with(0, &config, &["--log-format", "json"])
        .expect("lbd starts");

    let backends: Vec<String> = lab
        .backends()
        .iter()
        .map(|b| b.node.addr.to_string())
        .collect();
    // Every backend checked at least once, so each has its series.
    wait_until(
        "a first check of every backend",
        Duration::from_secs(10),
        || {
            let (_, s) = scrape(&lab);
            backends.iter().all(|b| {
                let l = [("vip", "web"), ("backend", b.as_str())];
                s.samples.iter().any(|x| {
                    x.metric == "lb_health_check_duration_seconds_count"
                        && l.iter().all(|(k, v)| x.labels.get(k) == Some(v))
                })
            })
        },
    )
    .unwrap();
    let (_, before) = scrape(&lab);
    for b in &backends {
        assert_eq!(
            value(
                &before,
                "lb_backend_packets_total",
                &[("vip", "web-udp"), ("backend", b)]
            ),
            0.0
        );
        assert_eq!(
            value(
                &before,
                "lb_backend_state",
                &[("vip", "web"), ("backend", b), ("state", "up")]
            ),
            1.0
        );
    }
    assert_eq!(value(&before, "lb_xdp_attached", &[]), 1.0);
    assert_eq!(value(&before, "lb_flow_table_capacity", &[]), 262_144.0);
    assert!(histogram_count(&before, "lb_maglev_build_duration_seconds", &[]) >= 2.0);

    // Known traffic: every UDP datagram the client sends to the VIP is one VIP packet.
    let udp = lab.udp_requests_from(
        lab.vip(),
        SourcePorts::From(51_000),
        UDP_FLOWS,
        DATAGRAMS_PER_FLOW,
        TIMEOUT,
    );
    assert!(udp.iter().all(Result::is_ok), "{udp:?}");
    let tcp = lab.tcp_requests(lab.vip(), TCP_CONNECTIONS, 2, TIMEOUT);
    assert!(tcp.iter().all(Result::is_ok), "{tcp:?}");

    // Health checks keep running, and their replies are counted (pass_not_vip) as they
    // arrive, so the reason counters are read as lbctl / scrape / lbctl and must fall
    // between; the VIP and backend counters see no more traffic and must be equal.
    let stats_before = lbctl_stats(&lbd);
    let (body, s) = scrape(&lab);
    let stats_after = lbctl_stats(&lbd);

    let sent = (UDP_FLOWS * DATAGRAMS_PER_FLOW) as f64;
    assert_eq!(
        value(&s, "lb_vip_packets_total", &[("vip", "web-udp")]),
        sent,
        "{body}"
    );
    let mut per_backend = 0.0;
    for (b, node) in backends.iter().zip(lab.backends()) {
        let l = [("vip", "web-udp"), ("backend", b.as_str())];
        let n = value(&s, "lb_backend_packets_total", &l);
        // Each datagram the program sent a backend is one its server received.
        assert_eq!(n, node.servers.udp_datagrams() as f64, "{b}");
        per_backend += n;
    }
    // Nothing was dropped: every UDP VIP packet is some backend's.
    assert_eq!(per_backend, sent);

    // TCP's closing packets may still be arriving: a counter read by the scrape falls
    // between lbctl's reads before and after it. Gauges do not move here: equal to both.
    let between = |got: f64, lo: u64, hi: u64, what: &str| {
        assert!(
            (lo as f64..=hi as f64).contains(&got),
            "{what} = {got}, lbctl read {lo} before and {hi} after"
        );
    };
    for (v0, v1) in stats_before.vips.iter().zip(&stats_after.vips) {
        let l = [("vip", v0.name.as_str())];
        let what = |m: &str| format!("{m}{l:?}");
        let packets = value(&s, "lb_vip_packets_total", &l);
        between(
            packets,
            v0.packets,
            v1.packets,
            &what("lb_vip_packets_total"),
        );
        let bytes = value(&s, "lb_vip_bytes_total", &l);
        between(bytes, v0.bytes, v1.bytes, &what("lb_vip_bytes_total"));
        for v in [v0, v1] {
            let flows: u64 = v.backends.iter().map(|b| b.active_flows).sum();
            assert_eq!(value(&s, "lb_vip_flows", &l), flows as f64, "{}", v.name);
        }
        for (b0, b1) in v0.backends.iter().zip(&v1.backends) {
            let addr = b0.address.to_string();
            let l = [("vip", v0.name.as_str()), ("backend", addr.as_str())];
            let what = |m: &str| format!("{m}{l:?}");
            let packets = value(&s, "lb_backend_packets_total", &l);
            between(
                packets,
                b0.packets,
                b1.packets,
                &what("lb_backend_packets_total"),
            );
            let bytes = value(&s, "lb_backend_bytes_total", &l);
            between(bytes, b0.bytes, b1.bytes, &what("lb_backend_bytes_total"));
            for b in [b0, b1] {
                assert_eq!(value(&s, "lb_backend_flows", &l), b.active_flows as f64);
                assert_eq!(value(&s, "lb_backend_weight", &l), f64::from(b.weight));
            }
        }
    }
    assert!(stats_after
        .vips
        .iter()
        .all(|v| v.backends.iter().all(|b| b.packets > 0)));
    // No backend was removed: every entry of the table is a configured backend's.
    let pinned: u64 = stats_after
        .vips
        .iter()
        .flat_map(|v| &v.backends)
        .map(|b| b.active_flows)
        .sum();
    assert!(pinned >= UDP_FLOWS as u64, "{pinned} flows pinned");
    assert_eq!(value(&s, "lb_flow_table_entries", &[]), pinned as f64);
    for (r0, r1) in stats_before.reasons.iter().zip(&stats_after.reasons) {
        let l = [
            ("reason", r0.reason.as_str()),
            ("verdict", r0.verdict.as_str()),
        ];
        for (metric, lo, hi) in [
            ("lb_packets_total", r0.packets, r1.packets),
            ("lb_bytes_total", r0.bytes, r1.bytes),
        ] {
            let got = value(&s, metric, &l);
            assert!(
                (lo as f64..=hi as f64).contains(&got),
                "{metric}{l:?} = {got}, lbctl read {lo} before and {hi} after"
            );
        }
    }
    assert!(
        value(
            &s,
            "lb_packets_total",
            &[("reason", "forwarded_dr"), ("verdict", "tx")]
        ) >= sent
    );
    // Packets after a flow's first (a connection's after its SYN) come from the flow cache,
    // unless their CPU's cache lacks them: some, never more than were forwarded.
    let hits = value(&s, "lb_flow_cache_hits_total", &[]);
    assert!(
        (stats_before.flow_cache.hits as f64..=stats_after.flow_cache.hits as f64).contains(&hits),
        "lb_flow_cache_hits_total = {hits}, lbctl read {:?} before and {:?} after",
        stats_before.flow_cache,
        stats_after.flow_cache
    );
    let forwarded = value(
        &s,
        "lb_packets_total",
        &[("reason", "forwarded_dr"), ("verdict", "tx")],
    );
    assert!(hits > 0.0 && hits <= forwarded, "{hits} of {forwarded}");
    assert_eq!(value(&s, "lb_flow_cache_slots", &[]), 8192.0);

    // Health: every backend of the TCP VIP is checked, up, and its checks are timed.
    for b in &backends {
        let l = [("vip", "web"), ("backend", b.as_str())];
        assert_eq!(value(&s, "lb_health_check_up", &l), 1.0, "{b}");
        let checks = value(&s, "lb_health_checks_total", &l);
        assert!(checks >= 1.0, "{b}: {checks} checks");
        let timed = histogram_count(&s, "lb_health_check_duration_seconds", &l);
        assert!(
            timed >= 1.0 && timed <= checks,
            "{b}: {timed} timed of {checks}"
        );
    }

    // Only /metrics is served.
    let (status, _) = http_get(&lab.lb().ns, METRICS, "/", TIMEOUT).unwrap();
    assert_eq!(status, 404);

    // Every log line is a JSON object; the events carry their fields at the top level.
    let log = lbd.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    for vip in ["web", "web-udp"] {
        let added: Vec<_> = lines
            .iter()
            .filter(|l| l["message"] == "VIP added" && l["vip"] == vip)
            .collect();
        assert_eq!(added.len(), 1, "{vip}: {log}");
        assert_eq!(added[0]["level"], "INFO");
    }
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == format!("serving metrics at http://{METRICS}/metrics")),
        "{log}"
    );
}

#[test]
fn changes_show_in_metrics_and_are_logged_once_with_their_reason() {
    if !require_root("changes_show_in_metrics_and_are_logged_once_with_their_reason") {
        return;
    }
    let lab = Lab::new().expect("lab setup");
    let config = lab
        .write_file("lbd-metrics.toml", &with_metrics(lab.lbd_config(0)))
        .unwrap();
    let lbd = lab.start_lbd(&config).expect("lbd starts");
    let addrs: Vec<Ipv4Addr> = lab.backends().iter().map(|b| b.node.addr).collect();
    let b1 = addrs[0].to_string();
    let lines_with = |what: &[&str]| -> Vec<String> {
        lbd.log()
            .lines()
            .filter(|l| what.iter().all(|w| l.contains(w)))
            .map(str::to_owned)
            .collect()
    };

    // A health change: forced down by the operator.
    let (code, out) = lbctl(lbd.socket(), &["backend", "down", "web", &b1]);
    assert_eq!(code, 0, "{out}");
    let (body, s) = scrape(&lab);
    for (state, want) in [("down", 1.0), ("up", 0.0)] {
        let l = [("vip", "web"), ("backend", b1.as_str()), ("state", state)];
        assert_eq!(value(&s, "lb_backend_state", &l), want, "{body}");
    }
    let downs = lines_with(&[&format!("backend={b1}"), "backend down"]);
    assert_eq!(downs.len(), 1, "{}", lbd.log());
    assert!(
        downs[0].contains("forced down by the operator"),
        "{downs:?}"
    );

    // A config change: the file gives b1 weight 3, `lbctl reload` applies it.
    let weighted: Vec<(Ipv4Addr, u32)> = addrs
        .iter()
        .map(|&a| (a, if a == addrs[0] { 3 } else { 1 }))
        .collect();
    lab.write_file(
        "lbd-metrics.toml",
        &with_metrics(lab.lbd_config_with(0, &weighted)),
    )
    .unwrap();
    let (code, out) = lbctl(lbd.socket(), &["reload"]);
    assert_eq!(code, 0, "{out}");
    let (body, s) = scrape(&lab);
    let l = [("vip", "web"), ("backend", b1.as_str())];
    assert_eq!(value(&s, "lb_backend_weight", &l), 3.0, "{body}");
    let reloads = lines_with(&["configuration reloaded"]);
    assert_eq!(reloads.len(), 1, "{}", lbd.log());
    assert!(reloads[0].contains("lbctl reload"), "{reloads:?}");
    for vip in ["vip=web ", "vip=web-udp "] {
        assert_eq!(
            lines_with(&["VIP changed", vip]).len(),
            1,
            "{vip}: {}",
            lbd.log()
        );
    }

    // A refused change, by SIGHUP: logged once, with its trigger; nothing changes.
    let bad = with_metrics(lab.lbd_config(0)).replacen("port = 80", "port = 0", 1);
    lab.write_file("lbd-metrics.toml", &bad).unwrap();
    let pid = libc::pid_t::try_from(lbd.pid()).unwrap();
    // SAFETY: kill has no memory-safety preconditions; the guard owns the running child.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    wait_until("the refusal is logged", Duration::from_secs(5), || {
        !lines_with(&["reload refused"]).is_empty()
    })
    .unwrap();
    let refused = lines_with(&["reload refused"]);
    assert_eq!(refused.len(), 1, "{}", lbd.log());
    // The located errors follow on the lines after it.
    assert!(refused[0].contains("trigger=\"SIGHUP\""), "{refused:?}");
    assert!(
        lbd.log().contains("vip[0].port: port 0 is not allowed"),
        "{}",
        lbd.log()
    );
    let (_, s) = scrape(&lab);
    assert_eq!(value(&s, "lb_backend_weight", &l), 3.0);
}

#[test]
fn vrrp_state_and_counters_in_metrics_match_lbctl_status() {
    if !require_root("vrrp_state_and_counters_in_metrics_match_lbctl_status") {
        return;
    }
    let lab = Lab::builder()
        .backends(1)
        .lb_nodes(2)
        .floating_vip()
        .build()
        .expect("lab setup");
    let config = |node: usize, priority: u8| {
        let text = with_metrics(lab.lbd_config(node)) + &lbd_vrrp(53, priority, 3, "100ms", "");
        lab.write_file(&format!("lbd-vrrp-{node}.toml"), &text)
            .unwrap()
    };
    let (cfg_a, cfg_b) = (config(0, 150), config(1, 100));
    let mut a = lab.spawn_lbd_on(0, &cfg_a).expect("lbd A starts");
    let b = lab.spawn_lbd_on(1, &cfg_b).expect("lbd B starts");
    wait_lbd_state(a.socket(), "master", Duration::from_secs(3)).unwrap();
    wait_lbd_state(b.socket(), "backup", Duration::from_secs(1)).unwrap();
    wait_until("B hears A", Duration::from_secs(2), || {
        instance(b.socket()).is_some_and(|s| s.adverts_received >= 3)
    })
    .unwrap();

    let vi = [("vrrp_instance", "vi")];
    for (node, socket, state) in [(0, a.socket(), "master"), (1, b.socket(), "backup")] {
        let before = instance(socket).unwrap();
        let (body, s) = scrape_node(&lab, node);
        let after = instance(socket).unwrap();
        for st in ["initialize", "backup", "master"] {
            let l = [
                ("vrrp_instance", "vi"),
                ("vrid", "53"),
                ("interface", "eth0"),
                ("state", st),
            ];
            let want = if st == state { 1.0 } else { 0.0 };
            assert_eq!(
                value(&s, "lb_vrrp_state", &l),
                want,
                "node {node} {st}:\n{body}"
            );
        }
        let attached = if state == "master" { 1.0 } else { 0.0 };
        assert_eq!(value(&s, "lb_xdp_attached", &[]), attached, "node {node}");
        assert_eq!(
            value(&s, "lb_vrrp_priority", &vi),
            f64::from(before.priority)
        );
        for (metric, lo, hi) in [
            (
                "lb_vrrp_adverts_sent_total",
                before.adverts_sent,
                after.adverts_sent,
            ),
            (
                "lb_vrrp_adverts_received_total",
                before.adverts_received,
                after.adverts_received,
            ),
        ] {
            let got = value(&s, metric, &vi);
            assert!(
                (lo as f64..=hi as f64).contains(&got),
                "node {node} {metric} = {got}, lbctl status read {lo} before and {hi} after"
            );
        }
        for (to, n) in [
            ("master", after.became_master),
            ("backup", after.became_backup),
        ] {
            let l = [("vrrp_instance", "vi"), ("to", to)];
            assert_eq!(
                value(&s, "lb_vrrp_transitions_total", &l),
                n as f64,
                "node {node} to {to}"
            );
        }
    }

    // A stops: B takes over on its priority-0 advert, and says so, once.
    let masters = |log: &str| log.lines().filter(|l| l.contains("became MASTER")).count();
    let b_masters_before = masters(&b.log());
    a.stop().expect("A stops");
    wait_lbd_state(b.socket(), "master", Duration::from_secs(2)).unwrap();
    let (body, s) = scrape_node(&lab, 1);
    let master = [
        ("vrrp_instance", "vi"),
        ("vrid", "53"),
        ("interface", "eth0"),
        ("state", "master"),
    ];
    assert_eq!(value(&s, "lb_vrrp_state", &master), 1.0, "{body}");
    assert_eq!(value(&s, "lb_xdp_attached", &[]), 1.0, "{body}");
    assert!(
        value(&s, "lb_vrrp_priority_zero_received_total", &vi) >= 1.0,
        "{body}"
    );
    let log = b.log();
    let took_over: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("became MASTER"))
        .collect();
    let a_addr = lab.lb_nodes()[0].addr;
    assert_eq!(took_over.len(), b_masters_before + 1, "{log}");
    assert!(
        took_over[b_masters_before].contains(&format!(
            "reason=master {a_addr} sent priority 0 (stopping)"
        )),
        "{log}"
    );
    let log = a.log();
    let transitions: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("became MASTER") || l.contains(": stopped "))
        .collect();
    assert!(transitions.iter().all(|l| l.contains("reason=")), "{log}");
    assert!(
        transitions
            .last()
            .is_some_and(|l| l.contains("reason=shutdown")),
        "{log}"
    );
}
