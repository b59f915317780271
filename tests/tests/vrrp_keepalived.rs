//! lbd and the real keepalived (Debian's 2.2.7) in one virtual router: VRRPv3 and VRRPv2
//! with a PASS password, multicast and unicast. keepalived as master with lbd as backup,
//! then lbd as master with keepalived as backup; each yields and takes over as the protocol
//! says, and the two are never both master for longer than one advert interval.
//!
//! keepalived runs on LB node 0 (state from its notify script), lbd on node 1 (state from
//! `lbctl status`); a watch samples both every 5 ms for the whole test.
//!
//! Needs root and keepalived (`cargo xtask setup` installs it);
//! `cargo xtask test -- --test vrrp_keepalived`.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use lb_tests::{
    keepalived::{self, holds_vip, Instance, Keepalived},
    require_root,
    vrrp::{
        keepalived_observer, last_change, lbd_observer, require_instance, wait_lbd_state, Watch,
    },
    Lab, LbdGuard,
};

/// What a busy two-core CI machine may add to a measured takeover or overlap (debug build,
/// tests in parallel, keepalived's notify script forked per state change).
const SLACK: Duration = Duration::from_millis(80);

struct Scenario {
    version: u8,
    interval: Duration,
    auth_pass: Option<&'static str>,
    unicast: bool,
    /// Only keepalived master → lbd backup → lbd takes over (the v2 unicast case, to keep
    /// the suite short at whole-second intervals).
    short: bool,
    /// keepalived sends VRRPv3 unicast with `old_unicast_checksum` (224.0.0.18 in the
    /// pseudo-header); lbd must accept it and answer in the same form.
    old_checksum: bool,
}

/// keepalived keywords for the scenario.
fn ka_extra(s: &Scenario) -> &'static str {
    if s.old_checksum {
        "old_unicast_checksum"
    } else {
        ""
    }
}

fn ka_instance(lab: &Lab, s: &Scenario, priority: u8, start_master: bool) -> Instance {
    let addr = |n: usize| lab.lb_nodes()[n].addr;
    Instance {
        vrid: 60,
        priority,
        version: s.version,
        advert_int: s.interval.as_secs_f64(),
        start_master,
        preempt: true,
        auth_pass: s.auth_pass.map(str::to_owned),
        unicast: s.unicast.then(|| (addr(0), vec![addr(1)])),
        vip: IpAddr::V4(lb_tests::lab::VIP),
    }
}

fn lbd_config(lab: &Lab, s: &Scenario, priority: u8) -> std::path::PathBuf {
    let mut extra = String::new();
    if let Some(p) = s.auth_pass {
        extra.push_str(&format!("auth_pass = \"{p}\"\n"));
    }
    if s.unicast {
        extra.push_str(&format!(
            "unicast_src = \"{}\"\nunicast_peers = [\"{}\"]\n",
            lab.lb_nodes()[1].addr,
            lab.lb_nodes()[0].addr
        ));
    }
    let interval = format!("{}ms", s.interval.as_millis());
    lab.write_lbd_config_on(
        1,
        &lb_tests::vrrp::lbd_vrrp(60, priority, s.version, &interval, &extra),
    )
}

/// Master_Down_Interval of a backup at `priority` (v2: Skew_Time in seconds whatever the
/// interval).
fn master_down(s: &Scenario, priority: u32) -> Duration {
    3 * s.interval + skew(s, priority)
}

fn skew(s: &Scenario, priority: u32) -> Duration {
    let base = if s.version == 2 {
        Duration::from_secs(1)
    } else {
        s.interval
    };
    base * (256 - priority) / 256
}

fn vip_packets(lbd: &LbdGuard<'_>) -> u64 {
    lbd.stats().unwrap().vips.iter().map(|v| v.packets).sum()
}

/// Traffic through the VIP reaches the backends through lbd's program.
fn traffic_through_lbd(lab: &Lab, lbd: &LbdGuard<'_>) {
    let before = vip_packets(lbd);
    for r in lab
        .tcp_requests(lab.vip(), 10, 2, Duration::from_secs(2))
        .iter()
        .chain(&lab.udp_requests(lab.vip(), 10, 2, Duration::from_secs(2)))
    {
        if let Err(e) = r {
            panic!("traffic while lbd is master: {e:#}");
        }
    }
    assert!(vip_packets(lbd) - before >= 10 * 3 + 10 * 2);
    assert!(Lab::xdp_attached(&lab.lb_nodes()[1].ns, "eth0").unwrap());
}

fn run(name: &str, s: Scenario) {
    if !require_root(name) {
        return;
    }
    let lab = Lab::builder()
        .backends(1)
        .lb_nodes(2)
        .floating_vip()
        .build()
        .expect("lab setup");
    let ka_addr = IpAddr::V4(lab.lb_nodes()[0].addr);

    // keepalived master (150), lbd backup (100).
    let mut ka =
        Keepalived::start_with(&lab, 0, &ka_instance(&lab, &s, 150, true), ka_extra(&s)).unwrap();
    ka.wait_state("MASTER", master_down(&s, 150) + SLACK * 4)
        .unwrap();
    let cfg_100 = lbd_config(&lab, &s, 100);
    let mut lbd = lab.spawn_lbd_on(1, &cfg_100).expect("lbd starts");
    let watch = Watch::start(
        vec![
            keepalived_observer(ka.state_file().to_owned()),
            lbd_observer(lbd.socket().to_owned()),
        ],
        Duration::from_millis(5),
    );
    wait_lbd_state(lbd.socket(), "backup", Duration::from_secs(2)).unwrap();
    // Long enough for lbd to have taken over if it did not accept keepalived's adverts.
    std::thread::sleep(master_down(&s, 100) + s.interval);
    let st = require_instance(lbd.socket()).unwrap();
    assert_eq!(st.state, "backup", "{st:#?}");
    assert_eq!(st.became_master, 0, "{st:#?}");
    assert_eq!(st.master, Some(ka_addr), "{st:#?}");
    assert!(st.adverts_received >= 2, "{st:#?}");
    assert!(
        st.ignored.is_empty(),
        "lbd ignored keepalived's adverts: {st:#?}"
    );
    let peer = st
        .peers
        .iter()
        .find(|p| p.address == ka_addr)
        .expect("keepalived heard");
    let checksum = match (s.version, s.old_checksum) {
        (2, _) => "message",
        (_, true) => "old_unicast",
        _ => "pseudo_header",
    };
    assert_eq!(peer.checksum, checksum, "{st:#?}");
    if s.old_checksum {
        assert!(
            lbd.log()
                .contains("following the peer's VRRPv3 unicast checksum convention"),
            "lbd did not switch to keepalived's checksum form:\n{}",
            lbd.log()
        );
    }
    assert!(holds_vip(&lab, 0).unwrap() && !holds_vip(&lab, 1).unwrap());

    // keepalived stops (priority 0): lbd takes over after Skew_Time, within one interval.
    let stopped = Instant::now();
    ka.terminate();
    let st = wait_lbd_state(lbd.socket(), "master", s.interval + SLACK).unwrap();
    let took = last_change(&st, Instant::now()) - stopped;
    eprintln!(
        "{name}: lbd master {took:?} after keepalived's SIGTERM (Skew_Time {:?})",
        skew(&s, 100)
    );
    assert!(took <= s.interval + SLACK / 2, "took {took:?}");
    assert!(st.priority_zero_received >= 1);
    ka.stop().unwrap();
    traffic_through_lbd(&lab, &lbd);

    if !s.short {
        // keepalived comes back at a higher priority and preempts; lbd yields.
        let ka2 = Keepalived::start_with(&lab, 0, &ka_instance(&lab, &s, 150, false), ka_extra(&s))
            .unwrap();
        ka2.wait_state("MASTER", master_down(&s, 150) + SLACK * 4)
            .unwrap();
        let st = wait_lbd_state(lbd.socket(), "backup", s.interval + SLACK).unwrap();
        assert_eq!(st.master, Some(ka_addr));
        lb_tests::vrrp::wait_until(
            "lbd releases the VIP and the program",
            s.interval + SLACK,
            || {
                !holds_vip(&lab, 1).unwrap()
                    && !Lab::xdp_attached(&lab.lb_nodes()[1].ns, "eth0").unwrap()
            },
        )
        .unwrap();
        assert!(holds_vip(&lab, 0).unwrap());
        drop(ka2);
        wait_lbd_state(lbd.socket(), "master", s.interval + SLACK).unwrap();

        // Roles reversed: lbd master (100), keepalived backup at 50 stays backup...
        let ka3 = Keepalived::start_with(&lab, 0, &ka_instance(&lab, &s, 50, false), ka_extra(&s))
            .unwrap();
        ka3.wait_state("BACKUP", Duration::from_secs(2)).unwrap();
        std::thread::sleep(master_down(&s, 50) + s.interval);
        keepalived::expect_state(&ka3, "BACKUP").unwrap();
        let st = require_instance(lbd.socket()).unwrap();
        assert_eq!(st.state, "master", "{st:#?}");
        assert!(!holds_vip(&lab, 0).unwrap());
        traffic_through_lbd(&lab, &lbd);

        // ...until lbd crashes: keepalived takes over after its Master_Down_Interval.
        let killed = Instant::now();
        lbd.kill().unwrap();
        let took = ka3
            .wait_state("MASTER", master_down(&s, 50) + SLACK * 2)
            .unwrap_or_else(|e| panic!("{e:#}"));
        eprintln!(
            "{name}: keepalived master {:?} after lbd's kill -9 (Master_Down_Interval {:?})",
            killed.elapsed().min(took),
            master_down(&s, 50)
        );
        assert!(holds_vip(&lab, 0).unwrap());

        // lbd comes back at a higher priority (the config at 100 > 50) and preempts.
        let lbd2 = lab.spawn_lbd_on(1, &cfg_100).expect("lbd restarts");
        wait_lbd_state(lbd2.socket(), "master", master_down(&s, 100) + SLACK * 4).unwrap();
        ka3.wait_state("BACKUP", s.interval + SLACK).unwrap();
        traffic_through_lbd(&lab, &lbd2);
        let timeline = watch.finish();
        drop(lbd2);
        drop(ka3);
        check_overlap(name, &s, &timeline);
        return;
    }
    check_overlap(name, &s, &watch.finish());
}

fn check_overlap(name: &str, s: &Scenario, t: &lb_tests::vrrp::Timeline) {
    let dual = t.longest_dual_master();
    let (none, some) = t.masters_seen();
    eprintln!(
        "{name}: {} samples ({none} with no master, {some} with one or more); longest time both master: {dual:?}",
        t.samples.len()
    );
    assert!(
        dual <= s.interval,
        "keepalived and lbd were both master for {dual:?}, more than one advert interval"
    );
}

#[test]
fn vrrp_interop_v3_multicast() {
    run(
        "vrrp_interop_v3_multicast",
        Scenario {
            version: 3,
            interval: Duration::from_millis(100),
            auth_pass: None,
            unicast: false,
            short: false,
            old_checksum: false,
        },
    );
}

#[test]
fn vrrp_interop_v3_unicast() {
    run(
        "vrrp_interop_v3_unicast",
        Scenario {
            version: 3,
            interval: Duration::from_millis(100),
            auth_pass: None,
            unicast: true,
            short: false,
            old_checksum: false,
        },
    );
}

#[test]
fn vrrp_interop_v2_pass_multicast() {
    run(
        "vrrp_interop_v2_pass_multicast",
        Scenario {
            version: 2,
            interval: Duration::from_secs(1),
            auth_pass: Some("lbtest42"),
            unicast: false,
            short: false,
            old_checksum: false,
        },
    );
}

#[test]
fn vrrp_interop_v2_pass_unicast() {
    run(
        "vrrp_interop_v2_pass_unicast",
        Scenario {
            version: 2,
            interval: Duration::from_secs(1),
            auth_pass: Some("lbtest42"),
            unicast: true,
            short: true,
            old_checksum: false,
        },
    );
}

#[test]
fn vrrp_interop_v3_unicast_old_checksum() {
    run(
        "vrrp_interop_v3_unicast_old_checksum",
        Scenario {
            version: 3,
            interval: Duration::from_millis(100),
            auth_pass: None,
            unicast: true,
            short: false,
            old_checksum: true,
        },
    );
}
