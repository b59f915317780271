use std::collections::BTreeMap;

use super::*;
use crate::control::{BackendStats, FlowCacheStats, ReasonStats, VipStats};

fn backend(address: &str, state: &str, packets: u64, flows: u64) -> BackendStats {
    BackendStats {
        address: address.parse().unwrap(),
        port: None,
        weight: 2,
        drain: false,
        state: state.into(),
        mac: None,
        packets,
        bytes: packets * 100,
        active_flows: flows,
    }
}

fn vrrp(name: &str, state: &str) -> VrrpStatus {
    VrrpStatus {
        name: name.into(),
        interface: "eth0".into(),
        vrid: 51,
        version: 3,
        state: state.into(),
        priority: 150,
        address: "10.0.0.1".parse().unwrap(),
        master: None,
        unicast: false,
        advert_interval_ms: 1000.0,
        master_advert_interval_ms: 1000.0,
        addresses: vec!["10.0.0.50/32".into()],
        last_change_secs_ago: 1.0,
        adverts_received: 7,
        adverts_sent: 11,
        priority_zero_received: 1,
        priority_zero_sent: 0,
        became_master: 2,
        became_backup: 1,
        address_list_mismatch: 0,
        ignored: BTreeMap::from([("bad_ttl".to_owned(), 3), ("auth_mismatch".to_owned(), 4)]),
        peers: Vec::new(),
        last_takeover: None,
    }
}

fn snapshot() -> Snapshot {
    let ms = |n: f64| std::time::Duration::from_secs_f64(n / 1e3);
    let mut maglev_builds = Durations::new([0.001, 0.01]);
    maglev_builds.observe(ms(0.5));
    maglev_builds.observe(ms(5.0));
    let mut durations = Durations::new([0.001, 0.01]);
    durations.observe(ms(2.0));
    Snapshot {
        stats: StatsReport {
            vips: vec![VipStats {
                name: "web".into(),
                address: "10.0.0.50".parse().unwrap(),
                port: 80,
                protocol: "tcp".into(),
                packets: 30,
                bytes: 3000,
                backends: vec![
                    backend("10.0.0.21", "up", 10, 4),
                    backend("10.0.0.22", "drain", 20, 5),
                ],
            }],
            verdicts: Vec::new(),
            reasons: vec![ReasonStats {
                reason: "forwarded_dr".into(),
                verdict: "tx".into(),
                description: String::new(),
                packets: 30,
                bytes: 3000,
            }],
            flow_cache: FlowCacheStats {
                hits: 21,
                slots_per_cpu: 8192,
            },
        },
        attached: true,
        flow_table_size: 1000,
        vrrp: vec![vrrp("v1", "master")],
        checks: vec![CheckedBackend {
            vip: "web".into(),
            backend: "10.0.0.21".parse().unwrap(),
            healthy: true,
            checks: 9,
            consecutive_failures: 0,
            durations: Some(durations),
        }],
        maglev_builds,
        backend_ids: Vec::new(),
        flows: None,
        flow_entries: None,
    }
}

fn parse(text: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap()
}

/// The value of the one sample of `metric` whose labels include `labels`.
fn value(scrape: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<_> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
        .collect();
    assert_eq!(found.len(), 1, "{metric} {labels:?}: {found:#?}");
    match &found[0].value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => *v,
        other => panic!("{metric}: {other:?}"),
    }
}

#[test]
fn a_snapshot_renders_as_parseable_openmetrics_with_its_values() {
    let text = render(snapshot());
    assert!(text.ends_with("# EOF\n"), "{text}");
    let s = parse(&text);
    let web = [("vip", "web")];
    let b1 = [("vip", "web"), ("backend", "10.0.0.21")];
    let b2 = [("vip", "web"), ("backend", "10.0.0.22")];
    for (metric, labels, want) in [
        ("lb_xdp_attached", &[][..], 1.0),
        ("lb_vip_packets_total", &web[..], 30.0),
        ("lb_vip_bytes_total", &web, 3000.0),
        ("lb_vip_flows", &web, 9.0),
        ("lb_backend_packets_total", &b1, 10.0),
        ("lb_backend_bytes_total", &b2, 2000.0),
        ("lb_backend_flows", &b2, 5.0),
        ("lb_backend_weight", &b1, 2.0),
        (
            "lb_packets_total",
            &[("reason", "forwarded_dr"), ("verdict", "tx")],
            30.0,
        ),
        ("lb_bytes_total", &[("reason", "forwarded_dr")], 3000.0),
        ("lb_flow_table_entries", &[], 9.0),
        ("lb_flow_table_capacity", &[], 1000.0),
        ("lb_flow_cache_hits_total", &[], 21.0),
        ("lb_flow_cache_slots", &[], 8192.0),
        ("lb_health_check_up", &b1, 1.0),
        ("lb_health_checks_total", &b1, 9.0),
        ("lb_health_check_consecutive_failures", &b1, 0.0),
        ("lb_vrrp_priority", &[("vrrp_instance", "v1")], 150.0),
        (
            "lb_vrrp_transitions_total",
            &[("vrrp_instance", "v1"), ("to", "master")],
            2.0,
        ),
        (
            "lb_vrrp_transitions_total",
            &[("vrrp_instance", "v1"), ("to", "backup")],
            1.0,
        ),
        (
            "lb_vrrp_adverts_sent_total",
            &[("vrrp_instance", "v1")],
            11.0,
        ),
        (
            "lb_vrrp_adverts_received_total",
            &[("vrrp_instance", "v1")],
            7.0,
        ),
        (
            "lb_vrrp_priority_zero_received_total",
            &[("vrrp_instance", "v1")],
            1.0,
        ),
        (
            "lb_vrrp_adverts_invalid_total",
            &[("vrrp_instance", "v1"), ("reason", "auth_mismatch")],
            4.0,
        ),
        (
            "lb_vrrp_adverts_invalid_total",
            &[("vrrp_instance", "v1"), ("reason", "bad_ttl")],
            3.0,
        ),
        ("lb_maglev_build_duration_seconds_count", &[], 2.0),
        ("lb_health_check_duration_seconds_count", &b1, 1.0),
    ] {
        assert_eq!(
            value(&s, metric, labels),
            want,
            "{metric} {labels:?}\n{text}"
        );
    }
    // One state of each is 1, the others 0.
    for (state, want) in [("up", 1.0), ("down", 0.0), ("drain", 0.0)] {
        let l = [("backend", "10.0.0.21"), ("state", state)];
        assert_eq!(value(&s, "lb_backend_state", &l), want, "{state}");
    }
    for (state, want) in [("initialize", 0.0), ("backup", 0.0), ("master", 1.0)] {
        let l = [("vrrp_instance", "v1"), ("vrid", "51"), ("state", state)];
        assert_eq!(value(&s, "lb_vrrp_state", &l), want, "{state}");
    }
    // Histograms: cumulative buckets.
    let maglev = s
        .samples
        .iter()
        .find(|x| x.metric == "lb_maglev_build_duration_seconds")
        .expect("maglev histogram");
    let prometheus_parse::Value::Histogram(buckets) = &maglev.value else {
        panic!("{maglev:?}")
    };
    let counts: Vec<f64> = buckets.iter().map(|b| b.count).collect();
    assert_eq!(counts, [1.0, 2.0, 2.0], "{buckets:?}");
}

#[test]
fn families_without_samples_are_still_described_and_nothing_is_written_twice() {
    let mut s = snapshot();
    s.vrrp.clear();
    s.checks.clear();
    let text = render(s);
    assert!(text.contains("# TYPE lb_vrrp_state gauge\n"), "{text}");
    let mut types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE ")).collect();
    let n = types.len();
    types.sort();
    types.dedup();
    assert_eq!(types.len(), n, "a family described twice:\n{text}");
}

#[test]
fn every_metric_is_documented() {
    let doc = include_str!("../../../docs/metrics.md");
    let text = render(snapshot());
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let mut words = line.split(' ').skip(2);
        let (name, kind) = (words.next().unwrap(), words.next().unwrap());
        let exposed = match kind {
            "counter" => format!("{name}_total"),
            _ => name.to_owned(),
        };
        assert!(
            doc.contains(&format!("`{exposed}`")),
            "{exposed} ({kind}) is not in docs/metrics.md"
        );
    }
}

#[test]
fn a_drained_backend_shows_as_drain_unless_it_is_down() {
    let mut s = snapshot();
    s.stats.vips[0].backends[0].drain = true;
    s.stats.vips[0].backends[1].state = "down".into();
    s.stats.vips[0].backends[1].drain = true;
    let scrape = parse(&render(s));
    for (backend, state) in [("10.0.0.21", "drain"), ("10.0.0.22", "down")] {
        let l = [("backend", backend), ("state", state)];
        assert_eq!(value(&scrape, "lb_backend_state", &l), 1.0, "{backend}");
    }
}

#[test]
fn every_reason_is_documented() {
    let doc = include_str!("../../../docs/metrics.md");
    let program = lb_common::stats::Reason::ALL.iter().map(|r| r.name());
    let vrrp = crate::vrrp::wire::Invalid::ALL.iter().map(|r| r.name());
    for name in program.chain(vrrp) {
        assert!(
            doc.contains(&format!("`{name}`")),
            "reason {name} is not in docs/metrics.md"
        );
    }
}

#[test]
fn the_dashboard_queries_only_documented_metrics() {
    let dashboard: serde_json::Value =
        serde_json::from_str(include_str!("../../../dist/grafana/lbd-dashboard.json")).unwrap();
    let doc = include_str!("../../../docs/metrics.md");
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    assert!(exprs.len() > 10, "{exprs:?}");
    for expr in &exprs {
        let names = expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("lb_"));
        for name in names {
            let family = name.trim_end_matches("_bucket");
            assert!(
                doc.contains(&format!("`{family}`")),
                "{name} in {expr:?} is not in docs/metrics.md"
            );
        }
    }
}
