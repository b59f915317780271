use std::time::Duration;

use crate::config::{parse, to_toml, VrrpAddress};

fn with_vrrp(body: &str) -> String {
    format!("[agent]\ninterface = \"eth0\"\n\n[[vrrp]]\n{body}\n")
}

/// Diagnostics as `line:col key: message`.
fn errors(text: &str) -> Vec<String> {
    parse(text)
        .expect_err("config should be rejected")
        .into_iter()
        .map(|d| format!("{}:{} {}: {}", d.line, d.column, d.key, d.message))
        .collect()
}

#[test]
fn vrrp_defaults_are_keepalived_s() {
    let c = parse(&with_vrrp("vrid = 51\naddresses = [\"10.0.0.50\"]")).unwrap();
    let v = &c.vrrp[0];
    assert_eq!(v.name, "eth0-51");
    assert_eq!(v.interface, "eth0");
    assert_eq!((v.vrid, v.priority, v.version), (51, 100, 3));
    assert_eq!(v.advert_interval, Duration::from_secs(1));
    assert!(v.preempt && v.preempt_delay.is_zero());
    assert_eq!(
        v.addresses,
        [VrrpAddress {
            addr: "10.0.0.50".parse().unwrap(),
            prefix_len: 32
        }]
    );
    assert!(!v.is_unicast() && !v.is_ipv6());
    assert_eq!(
        (v.garp_master_repeat, v.garp_master_delay),
        (5, Duration::from_secs(5))
    );
    assert_eq!(
        (v.garp_lower_prio_repeat, v.garp_lower_prio_delay),
        (5, Duration::from_secs(5))
    );
    assert!(v.garp_master_refresh.is_zero());
}

#[test]
fn vrrp_intervals_read_as_keepalived_or_as_durations() {
    for (written, want) in [
        ("0.1", Duration::from_millis(100)),
        ("\"100ms\"", Duration::from_millis(100)),
        ("\"10ms\"", Duration::from_millis(10)),
        ("3", Duration::from_secs(3)),
        ("\"40950ms\"", Duration::from_millis(40_950)),
    ] {
        let text = with_vrrp(&format!(
            "vrid = 1\nadvert_interval = {written}\naddresses = [\"10.0.0.50\"]"
        ));
        let c = parse(&text).unwrap_or_else(|e| panic!("{written}: {e:?}"));
        assert_eq!(c.vrrp[0].advert_interval, want, "{written}");
    }
}

#[test]
fn vrrp_each_bad_value_is_reported_at_its_line_and_key() {
    let a = "addresses = [\"10.0.0.50\"]";
    let cases: Vec<(String, &str)> = vec![
        (
            with_vrrp(&format!("vrid = 0\n{a}")),
            "5:8 vrrp[0].vrid: 0 is out of range 1-255",
        ),
        (
            with_vrrp(&format!("vrid = 256\n{a}")),
            "5:8 vrrp[0].vrid: 256 is out of range 1-255",
        ),
        (
            with_vrrp(&format!("vrid = 1\npriority = 0\n{a}")),
            "6:12 vrrp[0].priority: 0 is out of range 1-255",
        ),
        (
            with_vrrp(&format!("vrid = 1\nversion = 4\n{a}")),
            "6:11 vrrp[0].version: VRRP version 4 does not exist",
        ),
        (
            with_vrrp(&format!(
                "vrid = 1\nversion = 2\nadvert_interval = 0.5\n{a}"
            )),
            "7:19 vrrp[0].advert_interval: 500ms: VRRPv2 sends whole seconds",
        ),
        (
            with_vrrp(&format!("vrid = 1\nadvert_interval = \"5ms\"\n{a}")),
            "6:19 vrrp[0].advert_interval: 5ms: VRRPv3 sends centiseconds",
        ),
        (
            with_vrrp(&format!("vrid = 1\nadvert_interval = \"15ms\"\n{a}")),
            "6:19 vrrp[0].advert_interval: 15ms: VRRPv3 sends centiseconds",
        ),
        (
            with_vrrp(&format!("vrid = 1\nadvert_interval = \"41s\"\n{a}")),
            "6:19 vrrp[0].advert_interval: 41s: VRRPv3",
        ),
        (
            with_vrrp(&format!("vrid = 1\nadvert_interval = \"soon\"\n{a}")),
            "6:19 vrrp[0].advert_interval: \"soon\" is not a duration",
        ),
        (
            with_vrrp(&format!("vrid = 1\nauth_pass = \"secret\"\n{a}")),
            "6:13 vrrp[0].auth_pass: VRRPv3 has no authentication",
        ),
        (
            with_vrrp(&format!(
                "vrid = 1\nversion = 2\nauth_pass = \"123456789\"\n{a}"
            )),
            "7:13 vrrp[0].auth_pass: the password is 9 bytes; VRRPv2 carries 1-8",
        ),
        (
            with_vrrp("vrid = 1\naddresses = []"),
            "6:13 vrrp[0].addresses: an instance needs at least one virtual address",
        ),
        (
            with_vrrp("vrid = 1\naddresses = [\"10.0.0.50/33\"]"),
            "6:14 vrrp[0].addresses: \"10.0.0.50/33\": the prefix length must be 0-32",
        ),
        (
            with_vrrp("vrid = 1\naddresses = [\"nope\"]"),
            "6:14 vrrp[0].addresses: \"nope\" is not an address",
        ),
        (
            with_vrrp("vrid = 1\naddresses = [\"10.0.0.50\", \"fd00::50\"]"),
            "6:27 vrrp[0].addresses: fd00::50 and 10.0.0.50 are different address families",
        ),
        (
            with_vrrp("vrid = 1\naddresses = [\"10.0.0.50\", \"10.0.0.50/32\"]"),
            "6:27 vrrp[0].addresses: 10.0.0.50 is listed twice",
        ),
        (
            with_vrrp("vrid = 1\naddresses = [\"224.0.0.18\"]"),
            "6:14 vrrp[0].addresses: 224.0.0.18 cannot be a virtual address",
        ),
        (
            with_vrrp("vrid = 1\nversion = 2\naddresses = [\"fd00::50\"]"),
            "6:11 vrrp[0].version: VRRPv2 is IPv4 only",
        ),
        (
            with_vrrp(&format!("vrid = 1\nunicast_src = \"10.0.0.2\"\n{a}")),
            "6:15 vrrp[0].unicast_src: unicast_src without unicast_peers",
        ),
        (
            with_vrrp(&format!("vrid = 1\nunicast_peers = []\n{a}")),
            "6:17 vrrp[0].unicast_peers: give at least one peer",
        ),
        (
            with_vrrp(&format!("vrid = 1\nunicast_peers = [\"fd00::3\"]\n{a}")),
            "6:17 vrrp[0].unicast_peers: fd00::3 cannot be a unicast peer",
        ),
        (
            with_vrrp(&format!("vrid = 1\nold_unicast_checksum = true\n{a}")),
            "6:24 vrrp[0].old_unicast_checksum: only VRRPv3 over IPv4 in unicast mode",
        ),
        (
            with_vrrp(&format!("vrid = 1\nnotify = []\n{a}")),
            "6:10 vrrp[0].notify: give the program and its arguments",
        ),
        (
            with_vrrp(&format!("vrid = 1\ngarp_master_repeat = 1000\n{a}")),
            "6:22 vrrp[0].garp_master_repeat: 1000 is out of range 0-100",
        ),
        (
            with_vrrp(&format!("vrid = 1\npreempt_delay = \"2h\"\n{a}")),
            "6:17 vrrp[0].preempt_delay: must be at most 1h",
        ),
        (
            with_vrrp(&format!("vrid = 1\nnopreempt = true\n{a}")),
            "unknown field `nopreempt`",
        ),
        (with_vrrp("vrid = 1"), "missing field `addresses`"),
        (
            with_vrrp(&format!("vrid = 1\n{a}\ntrack_vips = [\"web\"]")),
            "7:15 vrrp[0].track_vips: no [[vip]] is named \"web\"; track_vips lists VIP names (configured: none)",
        ),
        (
            with_vrrp(&format!("vrid = 1\n{a}\ntrack_weight = -10")),
            "7:16 vrrp[0].track_weight: track_weight without track_vips",
        ),
        (
            with_vrrp(&format!("vrid = 1\n{a}\ntrack_weight = 10")),
            "7:16 vrrp[0].track_weight: 10 is out of range -254--1",
        ),
    ];
    for (text, want) in &cases {
        let got = errors(text);
        assert!(
            got.iter().any(|e| e.starts_with(want) || e.contains(want)),
            "config:\n{text}\nwanted an error starting with {want:?}, got {got:?}"
        );
    }
}

#[test]
fn vrrp_one_vrid_per_link_and_family_and_unique_names() {
    let text = "[agent]\ninterface = \"eth0\"\n\
                [[vrrp]]\nname = \"a\"\nvrid = 7\naddresses = [\"10.0.0.50\"]\n\
                [[vrrp]]\nname = \"a\"\nvrid = 7\naddresses = [\"10.0.0.51\"]\n\
                [[vrrp]]\nvrid = 7\naddresses = [\"fd00::50\"]\n\
                [[vrrp]]\nvrid = 7\ninterface = \"eth1\"\naddresses = [\"10.0.0.52\"]\n";
    let got = errors(text);
    assert_eq!(got.len(), 2, "{got:#?}");
    assert!(
        got[0].starts_with("8:8 vrrp[1].name: duplicate VRRP instance name \"a\""),
        "{got:?}"
    );
    assert!(
        got[1].starts_with(
            "9:8 vrrp[1].vrid: VRID 7 is already used on eth0 by another IPv4 instance"
        ),
        "{got:?}"
    );
}

#[test]
fn vrrp_tables_round_trip_through_toml() {
    let text = "[agent]\ninterface = \"eth0\"\n\
        [[vrrp]]\nname = \"vi_1\"\ninterface = \"eth1\"\nvrid = 51\npriority = 150\nversion = 2\n\
        advert_interval = 2\npreempt = false\npreempt_delay = \"30s\"\nauth_pass = \"pw\"\n\
        unicast_src = \"10.0.0.2\"\nunicast_peers = [\"10.0.0.3\", \"10.0.0.4\"]\n\
        addresses = [\"10.0.0.50/24\", \"10.0.0.51\"]\nnotify = [\"/bin/echo\", \"x\"]\n\
        garp_master_repeat = 3\ngarp_master_delay = \"0s\"\ngarp_master_refresh = \"1m\"\n\
        garp_master_refresh_repeat = 2\ngarp_lower_prio_repeat = 1\ngarp_lower_prio_delay = \"2s\"\n\
        [[vrrp]]\nvrid = 52\nadvert_interval = \"10ms\"\nunicast_peers = [\"10.0.0.3\"]\n\
        old_unicast_checksum = true\naddresses = [\"10.0.0.60\"]\n\
        [[vrrp]]\nvrid = 51\naddresses = [\"fe80::50/64\", \"fd00::50\"]\n";
    let c = parse(text).unwrap_or_else(|e| panic!("{e:#?}"));
    assert_eq!(c.vrrp.len(), 3);
    assert_eq!(c.vrrp[2].name, "eth0-51-v6");
    assert_eq!(c.vrrp[2].addresses[1].prefix_len, 128);
    let saved = to_toml(&c);
    assert_eq!(
        parse(&saved).unwrap_or_else(|d| panic!("{d:?}\n{saved}")),
        c,
        "{saved}"
    );
}

#[test]
fn vrrp_tracking_lowers_the_priority_while_a_tracked_vip_has_no_backend() {
    let vip = "[[vip]]\nname = \"web\"\naddress = \"10.0.0.50\"\nport = 80\nprotocol = \"tcp\"\n";
    let text = |extra: &str| {
        format!(
            "[agent]\ninterface = \"eth0\"\n{vip}\n[[vrrp]]\nvrid = 1\npriority = 150\n\
             addresses = [\"10.0.0.50\"]\ntrack_vips = [\"web\"]\n{extra}"
        )
    };
    let c = parse(&text("")).unwrap_or_else(|e| panic!("{e:#?}"));
    let v = &c.vrrp[0];
    assert_eq!(v.track_vips, ["web"]);
    assert_eq!(
        (v.effective_priority(false), v.effective_priority(true)),
        (150, 1),
        "by default a node without backends falls to the lowest priority"
    );
    let c = parse(&text("track_weight = -100")).unwrap();
    assert_eq!(c.vrrp[0].effective_priority(true), 50);
    let saved = to_toml(&c);
    assert_eq!(parse(&saved).unwrap(), c, "{saved}");
    // An owner that loses its backends is no longer the owner.
    let owner = text("priority = 255").replace("priority = 150\n", "");
    let c = parse(&owner).unwrap_or_else(|e| panic!("{e:#?}"));
    assert_eq!(c.vrrp[0].effective_priority(true), 1);
    let c = parse(&text("track_weight = -50").replace("150", "255")).unwrap();
    assert_eq!(c.vrrp[0].effective_priority(true), 205);
    // Removing the tracked VIP is refused while an instance tracks it.
    let err = crate::edit::apply(&c, &crate::edit::Edit::VipDel { vip: "web".into() }).unwrap_err();
    assert!(
        err.contains("vrrp[0].track_vips: no [[vip]] is named \"web\""),
        "{err}"
    );
}
