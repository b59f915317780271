//! Hitless restart, upgrade and cleanup: lbd pins its maps and XDP links under
//! `agent.pin_dir`, so a crashed agent leaves the program forwarding, and the next agent
//! adopts it all.
//!
//! With traffic flowing (long-lived TCP connections asked every 10 ms, and a stream of new
//! connections), through two VRRP balancers:
//! - `kill -9` of the master and a restart within Master_Down_Interval: no connection
//!   breaks, no new connection fails, the VIP never leaves the master, the backup never
//!   takes over, and the flow table and the XDP link are the same kernel objects before
//!   and after (only the program behind the link is the new run's);
//! - the same with an upgrade, the planned way: SIGUSR2 (lbd exits leaving everything in
//!   place), and the next agent loads a changed program (`lb_next`), which replaces the old
//!   one on the same link;
//! - a restart after Master_Down_Interval: the backup took over meanwhile (both nodes
//!   forward for a moment, with the same Maglev table), the restarted node resumes, meets
//!   the new master, and stands down: it detaches and drops the VIP; nothing breaks.
//!
//! And `lbd --cleanup` leaves no pin, no XDP link and no VIP behind; a graceful stop
//! leaves no pin either. The compatibility rule of pinned maps: a load adopts every map
//! that matches what it would create, contents included, and replaces one that does not.
//!
//! Needs root; `cargo xtask test -- --test hitless`.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use aya::{maps::MapInfo, programs::links::PinnedLink};
use lb_tests::{
    client::{self, ask, LongLived},
    keepalived::holds_vip,
    require_root,
    vrrp::{lbd_vrrp, require_instance, wait_lbd_state, wait_until},
    Lab, LbdGuard,
};
use lb_userspace::{control::StatusReport, dataplane::MAP_VERSIONS};

const LONG_LIVED: u16 = 24;
const TIMEOUT: Duration = Duration::from_secs(3);

/// The pin of map `name` in `dir`.
fn map_pin(dir: &Path, name: &str) -> PathBuf {
    let (_, version) = MAP_VERSIONS
        .iter()
        .find(|(n, _)| *n == name)
        .expect("a pinned map");
    dir.join("maps").join(format!("{name}-v{version}"))
}

/// The kernel objects that must survive a restart, and the program that may change.
#[derive(Debug, PartialEq, Eq)]
struct Objects {
    flows_map: u32,
    link: u32,
    program: u32,
    /// Maps the attached program uses.
    program_maps: Vec<u32>,
    program_tag: u64,
}

fn objects(lab: &Lab, node: usize) -> Objects {
    let dir = lab.pin_dir(node);
    let ns = &lab.lb_nodes()[node].ns;
    let flows_map = MapInfo::from_pin(map_pin(&dir, "FLOWS"))
        .expect("the flow table is pinned")
        .id();
    let ifindex = lb_tests::netns::ifindex(ns, "eth0").unwrap();
    let link: aya::programs::links::FdLink =
        PinnedLink::from_pin(dir.join("links").join(ifindex.to_string()))
            .expect("the XDP link is pinned")
            .into();
    let info = link.info().unwrap();
    let program = Lab::xdp_program_id(ns, "eth0")
        .unwrap()
        .expect("a program is attached");
    assert_eq!(
        info.program_id(),
        program,
        "the pinned link runs the attached program"
    );
    let prog = aya::programs::loaded_programs()
        .flatten()
        .find(|p| p.id() == program)
        .expect("the attached program is loaded");
    Objects {
        flows_map,
        link: info.id(),
        program,
        program_maps: prog.map_ids().unwrap().unwrap_or_default(),
        program_tag: prog.tag(),
    }
}

/// Client traffic for the length of a test: every long-lived connection asked every 10 ms
/// (each must keep its first backend), new connections opened back to back (each must
/// succeed). Failures are collected, not panicked on, so the test reports all of them.
struct Traffic {
    stop: Arc<AtomicBool>,
    long: JoinHandle<(usize, Vec<String>)>,
    new: JoinHandle<(usize, Vec<String>)>,
}

impl Traffic {
    fn start(lab: &Lab) -> Traffic {
        Traffic::start_from(lab, 31_000)
    }

    /// [`Traffic::start`] with the long-lived connections from ports `first_port..` (a
    /// second run in one lab needs other ports: the first run's are in TIME_WAIT).
    fn start_from(lab: &Lab, first_port: u16) -> Traffic {
        let conns =
            client::long_lived(&lab.client().ns, lab.vip(), LONG_LIVED, first_port, TIMEOUT)
                .expect("long-lived connections open");
        let spread: BTreeMap<&str, usize> = conns.iter().fold(BTreeMap::new(), |mut m, (_, n)| {
            *m.entry(n.as_str()).or_default() += 1;
            m
        });
        eprintln!("long-lived connections per backend: {spread:?}");
        let stop = Arc::new(AtomicBool::new(false));
        let long = {
            let stop = stop.clone();
            std::thread::spawn(move || stream(conns, &stop))
        };
        let new = {
            let stop = stop.clone();
            let ns = lab.client().ns.clone();
            let vip = lab.vip();
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                let mut done = 0;
                while !stop.load(Ordering::Relaxed) {
                    let results = client::tcp_requests(
                        &ns,
                        vip,
                        lb_tests::SourcePorts::Ephemeral,
                        4,
                        1,
                        TIMEOUT,
                    );
                    for r in results {
                        done += 1;
                        if let Err(e) = r {
                            failures.push(format!("{e:#}"));
                        }
                    }
                }
                (done, failures)
            })
        };
        Traffic { stop, long, new }
    }

    /// Stops the traffic and asserts that nothing failed.
    fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        let (rounds, broken) = self.long.join().expect("streaming thread");
        let (opened, failed) = self.new.join().expect("new-connection thread");
        eprintln!(
            "{rounds} rounds over {LONG_LIVED} long-lived connections, {opened} new connections"
        );
        assert!(
            broken.is_empty(),
            "established connections broke:\n{}",
            broken.join("\n")
        );
        assert!(
            failed.is_empty(),
            "new connections failed:\n{}",
            failed.join("\n")
        );
        assert!(
            rounds > 10 && opened > 10,
            "too little traffic to prove anything"
        );
    }
}

/// Asks every connection in turn until `stop`; a connection that fails or changes backend
/// is recorded once and left alone.
fn stream(mut conns: Vec<LongLived>, stop: &AtomicBool) -> (usize, Vec<String>) {
    let start = std::time::SystemTime::now();
    let mut rounds = 0;
    let mut broken: Vec<(usize, String)> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        for (i, (conn, name)) in conns.iter_mut().enumerate() {
            if broken.iter().any(|(b, _)| *b == i) {
                continue;
            }
            match ask(conn) {
                Ok(answer) if answer == *name => {}
                Ok(answer) => broken.push((i, format!("connection {i} moved from {name} to {answer}"))),
                Err(e) => broken.push((
                    i,
                    format!(
                        "connection {i} to {name}: {e} (asked {:?} after the traffic started, at {:?})",
                        start.elapsed().unwrap_or_default(),
                        std::time::SystemTime::now()
                    ),
                )),
            }
        }
        rounds += 1;
        std::thread::sleep(Duration::from_millis(10));
    }
    (rounds, broken.into_iter().map(|(_, e)| e).collect())
}

/// Samples, every 10 ms, whether node 0 holds the VIP and whether node 1 says master.
struct VipWatch {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<(usize, usize, usize)>,
}

impl VipWatch {
    fn start(lab: &Lab, backup_socket: PathBuf) -> VipWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let ns = lab.lb_nodes()[0].ns.clone();
        let vip = std::net::IpAddr::V4(lb_tests::lab::VIP);
        let thread = std::thread::spawn(move || {
            let (mut samples, mut vip_gone, mut backup_master) = (0, 0, 0);
            while !flag.load(Ordering::Relaxed) {
                samples += 1;
                if !Lab::addresses(&ns, "eth0").is_ok_and(|a| a.contains(&vip)) {
                    vip_gone += 1;
                }
                if lb_tests::vrrp::instance(&backup_socket).is_some_and(|s| s.state == "master") {
                    backup_master += 1;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            (samples, vip_gone, backup_master)
        });
        VipWatch { stop, thread }
    }

    fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        let (samples, vip_gone, backup_master) = self.thread.join().expect("watch thread");
        eprintln!("{samples} samples of the VIP's place");
        assert_eq!(
            vip_gone, 0,
            "the VIP left the master in {vip_gone} of {samples} samples"
        );
        assert_eq!(
            backup_master, 0,
            "the backup said master in {backup_master} of {samples} samples"
        );
    }
}

fn status(lbd: &LbdGuard<'_>) -> StatusReport {
    lbd.status().expect("status")
}

/// Two VRRP balancers (1 s adverts: a restart has Master_Down_Interval, 3.6 s, to come
/// back in), node 0 the master. Returns the lab's configs.
fn two_nodes(lab: &Lab, priorities: [u8; 2], vrid: u8) -> [PathBuf; 2] {
    [0, 1].map(|i| lab.write_lbd_config_on(i, &lbd_vrrp(vrid, priorities[i], 3, "1s", "")))
}

/// kill -9 of the master under traffic and a restart within Master_Down_Interval, or
/// (`upgrade`) SIGUSR2 and a start with a changed program.
fn restart_within_master_down_interval(upgrade: bool) {
    let lab = Lab::builder()
        .backends(3)
        .lb_nodes(2)
        .floating_vip()
        .build()
        .expect("lab setup");
    let [cfg_a, cfg_b] = two_nodes(&lab, [150, 100], if upgrade { 62 } else { 61 });
    let mut a = lab.spawn_lbd_on(0, &cfg_a).expect("lbd A starts");
    wait_lbd_state(a.socket(), "master", Duration::from_secs(5)).unwrap();
    let b = lab.spawn_lbd_on(1, &cfg_b).expect("lbd B starts");
    wait_lbd_state(b.socket(), "backup", Duration::from_secs(3)).unwrap();
    let before = objects(&lab, 0);
    assert!(
        before.program_maps.contains(&before.flows_map),
        "{before:?}"
    );
    assert!(!status(&a).adopted.any(), "a fresh start adopted something");

    let traffic = Traffic::start(&lab);
    let watch = VipWatch::start(&lab, b.socket().to_owned());
    std::thread::sleep(Duration::from_millis(300));
    if upgrade {
        // The planned way: lbd exits leaving everything in place for its successor.
        let exit = a.leave().unwrap();
        assert!(exit.success(), "lbd exited with {exit} on SIGUSR2");
    } else {
        a.kill().unwrap();
    }
    // No agent now: the program keeps forwarding on its pinned link.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        Lab::xdp_program_id(&lab.lb_nodes()[0].ns, "eth0").unwrap(),
        Some(before.program),
        "the program left with the agent"
    );
    let next = lab.dir().join("lb_next.o");
    let a = if upgrade {
        std::fs::write(&next, lb_userspace::dataplane::NEXT_OBJECT_FOR_TESTS).unwrap();
        lab.spawn_lbd_with_env(0, &cfg_a, &[("LBD_XDP_OBJECT", next.as_os_str())])
    } else {
        lab.spawn_lbd_on(0, &cfg_a)
    }
    .expect("lbd A restarts");
    let sa = wait_lbd_state(a.socket(), "master", Duration::from_secs(5)).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    watch.finish();
    traffic.finish();

    let after = objects(&lab, 0);
    eprintln!("before {before:?}\nafter  {after:?}");
    assert_eq!(
        after.flows_map, before.flows_map,
        "the flow table is another map"
    );
    assert!(after.program_maps.contains(&after.flows_map), "{after:?}");
    assert_eq!(
        after.link, before.link,
        "the XDP link was replaced, not kept"
    );
    assert_ne!(
        after.program, before.program,
        "the restarted agent runs its own program"
    );
    let adopted = status(&a).adopted;
    assert!(adopted.maps.iter().any(|m| m == "FLOWS"), "{adopted:?}");
    assert!(adopted.replaced.is_empty(), "{adopted:?}");
    assert_eq!(adopted.links.len(), 1, "{adopted:?}");
    if upgrade {
        assert_ne!(
            after.program_tag, before.program_tag,
            "the program did not change"
        );
        assert_eq!(adopted.program_changed, Some(true), "{adopted:?}");
        assert!(
            a.log().contains("program_changed=Some(true)"),
            "{}",
            a.log()
        );
    } else {
        assert_eq!(after.program_tag, before.program_tag);
        assert_eq!(adopted.program_changed, Some(false), "{adopted:?}");
    }
    // Same config, same maps: the reconciliation found nothing to write.
    assert_eq!(status(&a).map_writes, 0, "{}", a.log());
    let (code, text) = lb_tests::agent::lbctl(a.socket(), &["status"]);
    assert_eq!(code, 0, "{text}");
    let want = if upgrade {
        "program upgraded"
    } else {
        "same program"
    };
    assert!(
        text.contains("adopted from the previous run") && text.contains(want),
        "{text}"
    );
    assert_eq!(sa.became_master, 1, "{sa:#?}");
    let sb = require_instance(b.socket()).unwrap();
    assert_eq!(
        (sb.state.as_str(), sb.became_master),
        ("backup", 0),
        "{sb:#?}"
    );
    assert!(a.log().contains("resuming as MASTER"), "{}", a.log());
    assert!(!holds_vip(&lab, 1).unwrap());
}

#[test]
fn kill_9_and_restart_within_master_down_interval_moves_nothing() {
    if !require_root("kill_9_and_restart_within_master_down_interval_moves_nothing") {
        return;
    }
    restart_within_master_down_interval(false);
}

#[test]
fn an_upgrade_replaces_the_program_on_the_same_link_and_keeps_the_flow_table() {
    if !require_root("an_upgrade_replaces_the_program_on_the_same_link_and_keeps_the_flow_table") {
        return;
    }
    restart_within_master_down_interval(true);
}

#[test]
fn a_restart_after_the_backup_took_over_stands_down_without_breaking_connections() {
    if !require_root(
        "a_restart_after_the_backup_took_over_stands_down_without_breaking_connections",
    ) {
        return;
    }
    let lab = Lab::builder()
        .backends(3)
        .lb_nodes(2)
        .floating_vip()
        .build()
        .expect("lab setup");
    // Equal priorities: the backup (10.99.0.11) wins the tie against the restarted node
    // (10.99.0.10) once both are master. 200 ms adverts keep the wait short.
    let cfgs = [0, 1].map(|i| lab.write_lbd_config_on(i, &lbd_vrrp(63, 100, 3, "200ms", "")));
    let mut a = lab.spawn_lbd_on(0, &cfgs[0]).expect("lbd A starts");
    wait_lbd_state(a.socket(), "master", Duration::from_secs(5)).unwrap();
    let b = lab.spawn_lbd_on(1, &cfgs[1]).expect("lbd B starts");
    wait_lbd_state(b.socket(), "backup", Duration::from_secs(3)).unwrap();
    let before = objects(&lab, 0);

    let traffic = Traffic::start(&lab);
    std::thread::sleep(Duration::from_millis(300));
    a.kill().unwrap();
    // B takes over after Master_Down_Interval while A's program still forwards: for a
    // while both nodes do, with the same Maglev table, so connections do not notice.
    wait_lbd_state(b.socket(), "master", Duration::from_secs(5)).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(Lab::xdp_attached(&lab.lb_nodes()[0].ns, "eth0").unwrap());

    let a = lab.spawn_lbd_on(0, &cfgs[0]).expect("lbd A restarts");
    // A resumes as master, hears B (equal priority, higher address) and stands down.
    wait_lbd_state(a.socket(), "backup", Duration::from_secs(5)).unwrap();
    wait_until("A detached", Duration::from_secs(3), || {
        !Lab::xdp_attached(&lab.lb_nodes()[0].ns, "eth0").unwrap()
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    traffic.finish();

    let sa = require_instance(a.socket()).unwrap();
    let sb = require_instance(b.socket()).unwrap();
    eprintln!("A: {sa:#?}\nB: {sb:#?}");
    assert_eq!(sa.state, "backup");
    assert_eq!(
        sa.master,
        Some(std::net::IpAddr::V4(lab.lb_nodes()[1].addr))
    );
    assert_eq!(sb.state, "master");
    assert!(
        !holds_vip(&lab, 0).unwrap(),
        "the node that stood down kept the VIP"
    );
    assert!(holds_vip(&lab, 1).unwrap());
    let log = a.log();
    let resumed = log.rsplit("resuming as MASTER").next().unwrap();
    assert_ne!(resumed.len(), log.len(), "{log}");
    // The loser never announced: its gratuitous ARP would have stuck in the client's
    // neighbour cache over the winner's (Linux's ARP locktime) and sent it to a node
    // that no longer serves.
    assert!(!resumed.contains("takeover done"), "{log}");
    let st = status(&a);
    assert!(!st.attached);
    assert_eq!(st.adopted.links.len(), 1, "{:?}", st.adopted);
    // The standing-down node keeps its maps pinned (it still runs), not its link.
    let dir = lab.pin_dir(0);
    assert_eq!(std::fs::read_dir(dir.join("links")).unwrap().count(), 0);
    assert_eq!(
        MapInfo::from_pin(map_pin(&dir, "FLOWS")).unwrap().id(),
        before.flows_map
    );
}

/// Pins left in `dir`, as paths.
fn pins_in(dir: &Path) -> Vec<PathBuf> {
    ["maps", "links"]
        .iter()
        .flat_map(|sub| std::fs::read_dir(dir.join(sub)).into_iter().flatten())
        .flatten()
        .map(|e| e.path())
        .collect()
}

#[test]
fn cleanup_leaves_no_pin_link_or_address_and_a_graceful_stop_no_pin() {
    if !require_root("cleanup_leaves_no_pin_link_or_address_and_a_graceful_stop_no_pin") {
        return;
    }
    let lab = Lab::builder()
        .backends(1)
        .floating_vip()
        .build()
        .expect("lab setup");
    let ns = lab.lb().ns.clone();
    let dir = lab.pin_dir(0);
    let cfg = lab.write_lbd_config(&lbd_vrrp(64, 150, 3, "100ms", ""));
    let lbd_cleanup = || {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &ns])
            .arg(lb_tests::agent::lbd_binary())
            .arg("--config")
            .arg(&cfg)
            .arg("--cleanup")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };

    // A graceful stop hands over, detaches and leaves no pin.
    let mut lbd = lab.spawn_lbd_on(0, &cfg).unwrap();
    wait_lbd_state(lbd.socket(), "master", Duration::from_secs(3)).unwrap();
    assert!(!pins_in(&dir).is_empty());
    // Refused under a running agent.
    let (code, text) = lbd_cleanup();
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("running lbd"), "{text}");
    assert!(!pins_in(&dir).is_empty(), "a refused cleanup removed pins");
    assert!(lbd.stop().unwrap().success());
    assert!(!dir.exists(), "a graceful stop left {:?}", pins_in(&dir));
    assert!(!Lab::xdp_attached(&ns, "eth0").unwrap());

    // A crash leaves everything; --cleanup removes it, twice is fine.
    let mut lbd = lab.spawn_lbd_on(0, &cfg).unwrap();
    wait_lbd_state(lbd.socket(), "master", Duration::from_secs(3)).unwrap();
    lbd.kill().unwrap();
    assert!(Lab::xdp_attached(&ns, "eth0").unwrap());
    assert!(holds_vip(&lab, 0).unwrap());
    let pinned = pins_in(&dir);
    assert!(
        pinned.iter().any(|p| p.starts_with(dir.join("links"))),
        "{pinned:?}"
    );
    let (code, text) = lbd_cleanup();
    assert_eq!(code, Some(0), "{text}");
    eprintln!("{text}");
    assert!(text.contains("1 XDP link(s) detached"), "{text}");
    assert!(text.contains("1 VRRP address(es) removed"), "{text}");
    assert!(!dir.exists(), "left behind: {:?}", pins_in(&dir));
    assert!(
        !Lab::xdp_attached(&ns, "eth0").unwrap(),
        "a program is still attached"
    );
    assert!(!holds_vip(&lab, 0).unwrap(), "the VIP is still configured");
    let (code, text) = lbd_cleanup();
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("0 XDP link(s) detached, 0 pin(s) removed"),
        "{text}"
    );
    assert!(text.contains("0 VRRP address(es) removed"), "{text}");
}

/// Removes a pin directory when dropped, also when the test fails.
struct PinsGuard(PathBuf);

impl Drop for PinsGuard {
    fn drop(&mut self) {
        if let Err(e) = lb_userspace::dataplane::cleanup(&self.0) {
            eprintln!("removing {}: {e:#}", self.0.display());
        }
    }
}

#[test]
fn compatible_pinned_maps_are_adopted_and_a_changed_one_is_replaced() {
    use lb_common::vip::{VipInfo, VipKey};
    use lb_userspace::dataplane::{Dataplane, LoadOptions};
    if !require_root("compatible_pinned_maps_are_adopted_and_a_changed_one_is_replaced") {
        return;
    }
    // Loaded in the test process, whose /sys/fs/bpf is the host's bpffs.
    let dir = PathBuf::from(format!("/sys/fs/bpf/lbt-compat-{}", std::process::id()));
    let _guard = PinsGuard(dir.clone());
    let options = LoadOptions {
        pin_dir: Some(&dir),
        ..Default::default()
    };
    let key = VipKey {
        addr: lb_common::addr::from_ip(std::net::Ipv4Addr::new(192, 0, 2, 1).into()),
        port_be: 80u16.to_be(),
        proto: 6,
        _pad: 0,
    };
    let info = VipInfo {
        id: 7,
        table_offset: 0,
        table_size: 1021,
        ..Default::default()
    };

    let mut first = Dataplane::load_with(&options, 4096, 1024).unwrap();
    assert!(!first.adoption().any(), "{:?}", first.adoption());
    first.set_vip(key, info).unwrap();
    let ids = first.map_ids().unwrap();
    drop(first);

    // Same build, same sizes: every map is adopted, contents included.
    let second = Dataplane::load_with(&options, 4096, 1024).unwrap();
    let adopted = second.adoption().clone();
    assert!(adopted.replaced.is_empty(), "{adopted:?}");
    let mut expected: Vec<String> = MAP_VERSIONS.iter().map(|(n, _)| n.to_string()).collect();
    expected.sort();
    assert_eq!(adopted.maps, expected);
    assert_eq!(second.map_ids().unwrap()["FLOWS"], ids["FLOWS"]);
    assert_eq!(second.vip(&key), Some(info));
    assert_eq!(second.writes(), 0);
    drop(second);

    // Another flow-table capacity: the flow table and the NAT table (same capacity) are
    // new maps; everything else, the VIP included, is adopted.
    let third = Dataplane::load_with(&options, 4096, 2048).unwrap();
    let adopted = third.adoption().clone();
    assert_eq!(adopted.replaced, ["FLOWS", "NAT_CONNS"], "{adopted:?}");
    let now = third.map_ids().unwrap();
    assert_ne!(now["FLOWS"], ids["FLOWS"]);
    assert_eq!(now["VIPS"], ids["VIPS"]);
    assert_eq!(third.vip(&key), Some(info));
    // A second lbd on the same pin directory is refused while this one holds it.
    let err = Dataplane::load_with(&options, 4096, 2048)
        .err()
        .expect("refused");
    assert!(
        format!("{err:#}").contains("another lbd uses agent.pin_dir"),
        "{err:#}"
    );
    drop(third);
}

#[test]
fn a_restart_after_runtime_changes_keeps_every_backend_id() {
    if !require_root("a_restart_after_runtime_changes_keeps_every_backend_id") {
        return;
    }
    let lab = Lab::builder().backends(3).build().expect("lab setup");
    let cfg = lab.write_lbd_config("");
    let mut lbd = lab.start_lbd(&cfg).expect("lbd starts");
    // Removed at runtime and saved: the file now lists b2 and b3 first, which a fresh
    // placement would give the ids b1 and b2 had; flows pinned to those ids would then
    // reach the wrong backend.
    let b1 = lab.backends()[0].node.addr.to_string();
    for vip in ["web", "web-udp"] {
        let (code, text) = lb_tests::agent::lbctl(lbd.socket(), &["backend", "del", vip, &b1]);
        assert_eq!(code, 0, "{text}");
    }
    let (code, text) = lb_tests::agent::lbctl(lbd.socket(), &["config", "save"]);
    assert_eq!(code, 0, "{text}");
    let before = lbd.request(&lb_userspace::control::Command::State).unwrap();

    let traffic = Traffic::start(&lab);
    std::thread::sleep(Duration::from_millis(200));
    lbd.kill().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let lbd = lab.start_lbd(&cfg).expect("lbd restarts");
    std::thread::sleep(Duration::from_millis(300));
    traffic.finish();

    // The maps hold exactly what they held: same ids, same entries, same tables.
    let after = lbd.request(&lb_userspace::control::Command::State).unwrap();
    assert_eq!(after["maps"], before["maps"]);
    assert_eq!(status(&lbd).map_writes, 0, "{}", lbd.log());
    assert!(
        lbd.log().contains("placement adopted from the maps"),
        "{}",
        lbd.log()
    );

    // Restarted with a VIP gone from the file: the adoption removes it, the rest stays.
    let mut lbd = lbd;
    let traffic = Traffic::start_from(&lab, 32_000);
    lbd.kill().unwrap();
    let text = std::fs::read_to_string(&cfg).unwrap();
    let udp = text
        .find("name = \"web-udp\"")
        .expect("the UDP VIP in the saved file");
    let cut = text[..udp].rfind("[[vip]]").unwrap();
    std::fs::write(&cfg, &text[..cut]).unwrap();
    let lbd = lab
        .start_lbd(&cfg)
        .expect("lbd restarts without the UDP VIP");
    std::thread::sleep(Duration::from_millis(300));
    traffic.finish();
    let after = lbd.request(&lb_userspace::control::Command::State).unwrap();
    let vips = after["maps"]["vips"].as_array().unwrap();
    assert_eq!(vips.len(), 1, "{after:#}");
    assert_eq!(vips[0], before["maps"]["vips"][0], "the TCP VIP changed");
    assert!(lbd
        .log()
        .contains("VIP removed (adopted, no longer configured)"));
}
