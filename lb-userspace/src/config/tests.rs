use super::*;

const GOOD: &str = r#"
[agent]
interface = "eth0"
hash_seed = 7

[[vip]]
name = "web"
address = "10.99.0.50"
port = 80
protocol = "tcp"

[[vip.backend]]
address = "10.99.0.21"
weight = 2

[[vip.backend]]
address = "10.99.0.22"
"#;

#[test]
fn good_config_gets_defaults() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.agent.interface, "eth0");
    assert_eq!(c.agent.xdp_mode, XdpMode::Native);
    assert_eq!(c.agent.hash_seed, 7);
    assert_eq!(
        c.agent.control_socket,
        PathBuf::from(DEFAULT_CONTROL_SOCKET)
    );
    assert_eq!(c.vips.len(), 1);
    let v = &c.vips[0];
    assert_eq!(
        (v.name.as_str(), v.port, v.protocol, v.mode),
        ("web", 80, Protocol::Tcp, ForwardingMode::Dr)
    );
    assert_eq!(v.table_size, DEFAULT_TABLE_SIZE);
    assert_eq!(v.backends[0].weight, 2);
    assert_eq!(v.backends[1].weight, 1);
}

/// Runs `text` through the parser and returns its diagnostics as `line:col key: message`.
fn errors(text: &str) -> Vec<String> {
    parse(text)
        .expect_err("config should be rejected")
        .into_iter()
        .map(|d| format!("{}:{} {}: {}", d.line, d.column, d.key, d.message))
        .collect()
}

fn with_vip(vip_body: &str) -> String {
    format!("[agent]\ninterface = \"eth0\"\n\n[[vip]]\n{vip_body}\n")
}

#[test]
fn each_bad_value_is_reported_at_its_line_and_key() {
    let cases: &[(String, &str)] = &[
        (with_vip("address = \"10.0.0.1\"\nport = 0\nprotocol = \"tcp\""), "6:8 vip[0].port: port 0 is not allowed"),
        (with_vip("address = \"10.0.0.300\"\nport = 80\nprotocol = \"tcp\""), "5:11 : invalid IP address syntax"),
        (with_vip("address = \"10.0.0.1\"\nport = 80\nprotocol = \"sctp\""), "7:12 : unknown variant `sctp`, expected `tcp` or `udp`"),
        (with_vip("address = \"10.0.0.1\"\nport = 80\nprotocol = \"tcp\"\ntable_size = 65536"), "8:14 vip[0].table_size: 65536 is not prime"),
        (with_vip("address = \"2001:db8::1\"\nport = 80\nprotocol = \"tcp\"\n[[vip.backend]]\naddress = \"10.0.0.2\""), "9:11 vip[0].backend[0].address: backend 10.0.0.2 and VIP 2001:db8::1 are different address families"),
        (with_vip("address = \"10.0.0.1\"\nport = 80\nprotocol = \"tcp\"\n[[vip.backend]]\naddress = \"10.0.0.2\"\nport = 8080"), "10:8 vip[0].backend[0].port: a backend port needs mode = \"nat\": direct return cannot change the port"),
        (with_vip("address = \"10.0.0.1\"\nport = 80\nprotocol = \"tcp\"\nmode = \"nat\"\n[[vip.backend]]\naddress = \"10.0.0.2\"\nport = 0"), "11:8 vip[0].backend[0].port: port 0 is not allowed"),
        (with_vip("address = \"10.0.0.1\"\nport = 80\nprotocol = \"tcp\"\nmode = \"masq\""), "8:8 : unknown variant `masq`, expected `dr` or `nat`"),
        ("[agent]\ninterface = \"eth0\"\nnat_interfaces = [\"eth1\", \"eth0\"]\n".to_owned(), "3:27 agent.nat_interfaces[1]: \"eth0\" is listed twice"),
        ("[agent]\ninterface = \"eth0\"\nnat_interfaces = [\"a/b\"]\n".to_owned(), "3:19 agent.nat_interfaces[0]: \"a/b\" is not a valid interface name"),
        (with_vip("address = \"10.0.0.1\"\nport = 80\nprotocol = \"tcp\"\n[[vip.backend]]\naddress = \"2001:db8::2\""), "9:11 vip[0].backend[0].address: backend 2001:db8::2 and VIP 10.0.0.1 are different address families"),
        (with_vip("address = \"10.0.0.1\"\nport = 80\nprotocol = \"tcp\"\n[[vip.backend]]\naddress = \"10.0.0.2\"\nweight = 20000"), "10:10 vip[0].backend[0].weight: 20000 is above the maximum weight"),
        (with_vip("address = \"10.0.0.1\"\nport = 80\nprotocol = \"tcp\"\nfrobnicate = 1"), "8:1 : unknown field `frobnicate`"),
        (with_vip("address = \"10.0.0.1\"\nport = 70000\nprotocol = \"tcp\""), "6:8 : invalid value: integer `70000`, expected u16"),
        ("[agent]\ninterface = \"\"\n".to_owned(), "2:13 agent.interface: \"\" is not a valid interface name"),
        ("[[vip]]\naddress = \"10.0.0.1\"\nport = 80\nprotocol = \"tcp\"\n".to_owned(), "missing field `agent`"),
        ("[agent]\ninterface = \"eth0\"\nxdp_mode = \"turbo\"\n".to_owned(), "3:12 : unknown variant `turbo`, expected `native` or `generic`"),
        ("[agent\ninterface = \"eth0\"\n".to_owned(), "1:7 : invalid table header"),
    ];
    for (text, want) in cases {
        let got = errors(text);
        assert!(
            got.iter()
                .any(|e| e.starts_with(want) || (want.starts_with("missing") && e.contains(want))),
            "config:\n{text}\nwanted an error starting with {want:?}, got {got:?}"
        );
    }
}

#[test]
fn all_errors_are_collected_in_one_pass() {
    let text = with_vip(
        "address = \"10.0.0.1\"\nport = 0\nprotocol = \"tcp\"\ntable_size = 100\n\
         [[vip.backend]]\naddress = \"10.0.0.2\"\n[[vip.backend]]\naddress = \"10.0.0.2\"\n\
         [[vip]]\naddress = \"10.0.0.1\"\nport = 0\nprotocol = \"tcp\"",
    );
    let got = errors(&text);
    assert_eq!(got.len(), 5, "{got:#?}");
    assert!(got[0].contains("port 0"));
    assert!(got[1].contains("100 is not prime"));
    assert!(got[2].contains("listed twice"));
    assert!(got[3].contains("duplicate VIP 10.0.0.1:0/tcp"));
    assert!(got[4].contains("port 0"));
}

#[test]
fn error_display_names_file_line_and_key() {
    let err = ConfigError {
        file: "lb.toml".into(),
        diagnostics: parse(&with_vip(
            "address = \"10.0.0.1\"\nport = 0\nprotocol = \"tcp\"",
        ))
        .unwrap_err(),
    };
    let text = err.to_string();
    assert!(
        text.starts_with("lb.toml: 1 error in configuration\n"),
        "{text}"
    );
    assert!(
        text.contains("lb.toml:6:8: vip[0].port: port 0 is not allowed"),
        "{text}"
    );
}

#[test]
fn table_sizes_must_fit_the_capacity() {
    let text = "[agent]\ninterface = \"eth0\"\ntable_capacity = 100000\n\
                [[vip]]\naddress = \"10.0.0.1\"\nport = 80\nprotocol = \"tcp\"\n\
                [[vip]]\naddress = \"10.0.0.1\"\nport = 81\nprotocol = \"tcp\"\n";
    let got = errors(text);
    assert!(
        got[0].contains("need 131074 slots but table_capacity is 100000"),
        "{got:?}"
    );
}

#[test]
fn primes() {
    let primes: Vec<u32> = (0..30).filter(|&n| is_prime(n)).collect();
    assert_eq!(primes, [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]);
    assert!(is_prime(65_537) && is_prime(655_373) && !is_prime(65_536));
}

#[test]
fn the_shipped_example_is_valid() {
    let c = parse(include_str!("../../../examples/lb.toml")).unwrap();
    assert_eq!(c.vips[0].backends.len(), 3);
}

#[test]
fn the_packaged_etc_config_is_valid() {
    let c = parse(include_str!("../../../dist/lb.toml")).unwrap_or_else(|d| panic!("{d:?}"));
    assert_eq!(
        c.agent.control_socket,
        PathBuf::from(DEFAULT_CONTROL_SOCKET)
    );
    assert!(!c.vips.is_empty());
}

#[test]
fn control_group_is_a_group_name_or_absent() {
    assert_eq!(parse(GOOD).unwrap().agent.control_group, None);
    for bad in [
        "",
        "a b",
        "adm:x",
        "-x",
        "a/b",
        "g,h",
        "a-name-far-longer-than-thirty-two-chars",
    ] {
        let text = format!("[agent]\ninterface = \"eth0\"\ncontrol_group = {bad:?}\n");
        let e = errors(&text);
        assert_eq!(e.len(), 1, "{bad:?}: {e:?}");
        assert!(
            e[0].starts_with("3:17 agent.control_group: ") && e[0].contains("is not a group name"),
            "{bad:?}: {e:?}"
        );
    }
}

#[test]
fn every_key_is_documented() {
    let doc = include_str!("../../../docs/config.md");
    for key in [
        "interface",
        "xdp_mode",
        "hash_seed",
        "control_socket",
        "pin_dir",
        "control_group",
        "table_capacity",
        "flow_table_size",
        "flow_cache_size",
        "tcp_idle_timeout",
        "udp_idle_timeout",
        "source_affinity",
        "all_down",
        "drain",
        "type",
        "interval",
        "timeout",
        "rise",
        "fall",
        "initial",
        "source_address",
        "path",
        "host",
        "expect_status",
        "expect_body",
        "server_name",
        "ca_file",
        "insecure_skip_verify",
        "send",
        "expect",
        "command",
        "name",
        "address",
        "port",
        "protocol",
        "mode",
        "table_size",
        "weight",
        "xdp_on_backup",
        "nat_interfaces",
        "metrics_listen",
        // [[vrrp]]
        "vrid",
        "priority",
        "version",
        "advert_interval",
        "preempt",
        "preempt_delay",
        "auth_pass",
        "unicast_src",
        "unicast_peers",
        "old_unicast_checksum",
        "addresses",
        "notify",
        "garp_master_repeat",
        "garp_master_delay",
        "garp_master_refresh",
        "garp_master_refresh_repeat",
        "garp_lower_prio_repeat",
        "garp_lower_prio_delay",
        "track_vips",
        "track_weight",
    ] {
        assert!(
            doc.contains(&format!("| `{key}` |")),
            "docs/config.md lacks a row for `{key}`"
        );
    }
}

#[test]
fn a_config_round_trips_through_toml() {
    let text = "[agent]\ninterface = \"eth1\"\nxdp_mode = \"generic\"\nhash_seed = 9\ncontrol_socket = \"/tmp/x.sock\"\ncontrol_group = \"lbadmin\"\n\
                table_capacity = 200000\nflow_table_size = 1000\ntcp_idle_timeout = \"15m\"\nudp_idle_timeout = \"30s\"\n\
                [[vip]]\nname = \"web\"\naddress = \"10.0.0.1\"\nport = 443\nprotocol = \"tcp\"\ntable_size = 7\nsource_affinity = true\n\
                [[vip.backend]]\naddress = \"10.0.0.2\"\nweight = 3\ndrain = true\n\
                [[vip]]\naddress = \"10.0.0.1\"\nport = 53\nprotocol = \"udp\"\n\
                [[vip]]\naddress = \"2001:db8::50\"\nport = 80\nprotocol = \"tcp\"\nmode = \"nat\"\n\
                [[vip.backend]]\naddress = \"2001:db8:1::21\"\nport = 8080\n\
                [[vip.backend]]\naddress = \"2001:db8:1::22\"\n";
    let c = parse(text).unwrap();
    assert_eq!(c.agent.control_group.as_deref(), Some("lbadmin"));
    assert_eq!(c.vips[2].mode, ForwardingMode::Nat);
    assert_eq!(
        (
            c.vips[2].backends[0].port_for(80),
            c.vips[2].backends[1].port_for(80)
        ),
        (8080, 80)
    );
    assert!(c.vips[0].backends[0].drain && c.vips[0].backends[0].effective_weight() == 0);
    let saved = to_toml(&c);
    assert_eq!(
        parse(&saved).unwrap_or_else(|d| panic!("{d:?}\n{saved}")),
        c,
        "{saved}"
    );
    assert_eq!(
        parse(&to_toml(&parse(GOOD).unwrap())).unwrap(),
        parse(GOOD).unwrap()
    );
}

#[test]
fn nat_interfaces_and_ipv6_dr_round_trip() {
    let text = "[agent]\ninterface = \"eth0\"\nnat_interfaces = [\"eth1\", \"eth2\"]\n\
                [[vip]]\naddress = \"2001:db8::50\"\nport = 80\nprotocol = \"tcp\"\n\
                [[vip.backend]]\naddress = \"2001:db8::21\"\n";
    let c = parse(text).unwrap();
    assert_eq!(c.agent.nat_interfaces, ["eth1", "eth2"]);
    assert_eq!(c.vips[0].mode, ForwardingMode::Dr);
    assert_eq!(parse(&to_toml(&c)).unwrap(), c);
}

#[test]
fn health_checks_round_trip_and_their_errors_are_located() {
    let good = with_vip(
        "address = \"10.0.0.1\"\nport = 80\nprotocol = \"tcp\"\n[vip.health_check]\ntype = \"http\"\npath = \"/healthz\"\n\
         interval = \"500ms\"\nexpect_status = [200, 204]\n",
    );
    let c = parse(&good).unwrap();
    assert!(c.vips[0].health_check.is_some());
    assert_eq!(parse(&to_toml(&c)).unwrap(), c);
    let bad = with_vip(
        "address = \"10.0.0.1\"\nport = 80\nprotocol = \"tcp\"\n[vip.health_check]\ntype = \"tcp\"\ninterval = \"1parsec\"\npath = \"/x\"\n",
    );
    let got = errors(&bad);
    assert!(
        got.iter()
            .any(|e| e.starts_with("10:12 vip[0].health_check.interval:")),
        "{got:?}"
    );
    assert!(
        got.iter()
            .any(|e| e.starts_with("11:8 vip[0].health_check.path:")),
        "{got:?}"
    );
}

#[test]
fn metrics_listen_is_off_by_default_and_must_be_address_and_port() {
    assert_eq!(parse(GOOD).unwrap().agent.metrics_listen, None);
    let on = GOOD.replace("hash_seed = 7", "metrics_listen = \"127.0.0.1:9740\"");
    assert_eq!(
        parse(&on).unwrap().agent.metrics_listen,
        Some("127.0.0.1:9740".parse().unwrap())
    );
    let v6 = GOOD.replace("hash_seed = 7", "metrics_listen = \"[::1]:9740\"");
    assert!(parse(&v6).unwrap().agent.metrics_listen.unwrap().is_ipv6());
    for (value, want) in [
        ("127.0.0.1", "\"127.0.0.1\" is not ADDRESS:PORT"),
        ("localhost:9740", "\"localhost:9740\" is not ADDRESS:PORT"),
        ("127.0.0.1:0", "port 0 is not allowed"),
    ] {
        let text = GOOD.replace("hash_seed = 7", &format!("metrics_listen = \"{value}\""));
        let errors = errors(&text);
        assert!(
            errors.len() == 1
                && errors[0].starts_with(&format!("4:18 agent.metrics_listen: {want}")),
            "{value}: {errors:?}"
        );
    }
    // It survives `config save`.
    let c = parse(&on).unwrap();
    assert_eq!(parse(&to_toml(&c)).unwrap(), c);
}

#[test]
fn the_flow_cache_size_must_be_a_power_of_two() {
    let config = |size: &str| format!("[agent]\ninterface = \"eth0\"\nflow_cache_size = {size}\n");
    let got = errors(&config("3000"));
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].contains("3:19 agent.flow_cache_size: must be a power of two from 1 to 1048576")
            && got[0].contains("e.g. 2048"),
        "{got:?}"
    );
    assert_eq!(errors(&config("0")).len(), 1);
    assert_eq!(errors(&config("2097152")).len(), 1);
    assert_eq!(parse(&config("4096")).unwrap().agent.flow_cache_size, 4096);
    assert_eq!(
        parse("[agent]\ninterface = \"eth0\"\n")
            .unwrap()
            .agent
            .flow_cache_size,
        lb_common::flow::DEFAULT_FLOW_CACHE_SLOTS
    );
}
