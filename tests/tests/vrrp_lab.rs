//! VRRP between two real lbd nodes in the namespace lab, with a client and backends: the
//! higher priority wins; kill -9 of the master and the backup takes over after
//! Master_Down_Interval; SIGTERM and it takes over within one advert interval (priority 0);
//! the old master comes back and preempts, or, with `preempt = false`, does not. Across each
//! failover client traffic succeeds and is forwarded by XDP on the new master: its counters
//! move, the old master's do not, and only the master has the program attached.
//!
//! Also: malformed adverts sent at a running lbd through the real kernel path are each
//! counted under their reason and change no state.
//!
//! Needs root; `cargo xtask test -- --test vrrp_lab`.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use lb_tests::{
    keepalived::holds_vip,
    require_root,
    vrrp::{last_change, lbd_vrrp, wait_lbd_state, Prober},
    Lab, LbdGuard,
};

const INTERVAL_MS: u64 = 100;
const INTERVAL: Duration = Duration::from_millis(INTERVAL_MS);
/// What scheduling on a busy two-core CI machine (debug build, tests in parallel) may add
/// to a measured takeover.
const SLACK: Duration = Duration::from_millis(60);
const PROBE_EVERY: Duration = Duration::from_millis(10);
const PROBE_TIMEOUT: Duration = Duration::from_millis(50);

/// Master_Down_Interval of a VRRPv3 backup at `priority`: 3 × interval + Skew_Time.
fn master_down(priority: u64) -> Duration {
    Duration::from_micros(3 * INTERVAL_MS * 1000 + (256 - priority) * INTERVAL_MS * 1000 / 256)
}

fn skew(priority: u64) -> Duration {
    Duration::from_micros((256 - priority) * INTERVAL_MS * 1000 / 256)
}

fn vip_packets(lbd: &LbdGuard<'_>) -> u64 {
    lbd.stats()
        .expect("stats")
        .vips
        .iter()
        .map(|v| v.packets)
        .sum()
}

/// New TCP connections and UDP flows through the VIP all succeed, and the program on
/// `master` forwarded them: its counters move, `idle`'s (a live backup) do not, and the
/// program is attached only on the master.
fn traffic_through(
    lab: &Lab,
    master: &LbdGuard<'_>,
    m: usize,
    idle: Option<(&LbdGuard<'_>, usize)>,
) {
    let before = vip_packets(master);
    let idle_before = idle.map(|(l, _)| vip_packets(l));
    let tcp = lab.tcp_requests(lab.vip(), 20, 2, Duration::from_secs(2));
    let udp = lab.udp_requests(lab.vip(), 20, 2, Duration::from_secs(2));
    for r in tcp.iter().chain(&udp) {
        if let Err(e) = r {
            panic!("traffic through node {m}: {e:#}");
        }
    }
    let moved = vip_packets(master) - before;
    // At least a SYN and two requests per connection and two datagrams per flow.
    assert!(
        moved >= 20 * 3 + 20 * 2,
        "master's program forwarded only {moved} packets"
    );
    assert!(Lab::xdp_attached(&lab.lb_nodes()[m].ns, "eth0").unwrap());
    if let (Some((l, i)), Some(b)) = (idle, idle_before) {
        assert_eq!(vip_packets(l), b, "the backup's program counted traffic");
        assert!(!Lab::xdp_attached(&lab.lb_nodes()[i].ns, "eth0").unwrap());
        assert!(!holds_vip(lab, i).unwrap(), "the backup holds the VIP");
    }
    assert!(
        holds_vip(lab, m).unwrap(),
        "the master does not hold the VIP"
    );
}

fn address(lab: &Lab, node: usize) -> IpAddr {
    IpAddr::V4(lab.lb_nodes()[node].addr)
}

#[test]
fn vrrp_two_lbd_nodes_elect_fail_over_and_preempt() {
    if !require_root("vrrp_two_lbd_nodes_elect_fail_over_and_preempt") {
        return;
    }
    let lab = Lab::builder()
        .backends(2)
        .lb_nodes(2)
        .floating_vip()
        .build()
        .expect("lab setup");
    let cfg_a = lab.write_lbd_config_on(0, &lbd_vrrp(51, 150, 3, "100ms", ""));
    let cfg_b = lab.write_lbd_config_on(1, &lbd_vrrp(51, 100, 3, "100ms", ""));
    let mut a = lab.spawn_lbd_on(0, &cfg_a).expect("lbd A starts");
    let b = lab.spawn_lbd_on(1, &cfg_b).expect("lbd B starts");

    // The higher priority wins; the other defers to it.
    wait_lbd_state(a.socket(), "master", Duration::from_secs(3)).unwrap();
    let sb = wait_lbd_state(b.socket(), "backup", Duration::from_secs(1)).unwrap();
    let settle = Instant::now();
    while settle.elapsed() < 3 * INTERVAL {
        let sb = lb_tests::vrrp::require_instance(b.socket()).unwrap();
        if sb.master == Some(address(&lab, 0)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let sb = lb_tests::vrrp::require_instance(b.socket()).unwrap_or(sb);
    assert_eq!(sb.master, Some(address(&lab, 0)), "{sb:#?}");
    assert_eq!(sb.became_master, 0, "B was master at some point: {sb:#?}");
    traffic_through(&lab, &a, 0, Some((&b, 1)));
    // What an operator reads.
    let (code, text) = lb_tests::agent::lbctl(b.socket(), &["status"]);
    assert_eq!(code, 0, "{text}");
    for want in ["VRRP", "backup", "10.99.0.10", "10.99.0.50/32", "100ms"] {
        assert!(text.contains(want), "lbctl status lacks {want:?}:\n{text}");
    }

    // kill -9 of the master: the backup takes over after its Master_Down_Interval.
    let prober = Prober::start(&lab.client().ns, lab.vip(), PROBE_EVERY, PROBE_TIMEOUT);
    std::thread::sleep(5 * PROBE_EVERY);
    let killed = Instant::now();
    a.kill().unwrap();
    let sb = wait_lbd_state(b.socket(), "master", Duration::from_secs(2)).unwrap();
    let took = last_change(&sb, Instant::now()) - killed;
    eprintln!(
        "crash: B master {took:?} after kill -9 (Master_Down_Interval {:?}); takeover steps {:?}",
        master_down(100),
        sb.last_takeover
    );
    // From A's last advert, not from the kill: up to one interval less than the bound.
    assert!(took <= master_down(100) + SLACK, "took {took:?}");
    assert!(
        took + INTERVAL + SLACK >= master_down(100),
        "took over too early: {took:?}"
    );
    std::thread::sleep(20 * PROBE_EVERY);
    let probes = prober.finish().unwrap();
    let gap = probes.longest_gap();
    eprintln!(
        "crash: client gap {gap:?} ({} probes unanswered)",
        probes.unanswered()
    );
    assert!(
        probes.ends_answered(5),
        "service did not come back: {probes:?}"
    );
    assert!(gap <= master_down(100) + INTERVAL + SLACK, "gap {gap:?}");
    traffic_through(&lab, &b, 1, None);
    // Like keepalived after kill -9, the dead node still has the VIP configured (and, its
    // link being pinned, its program attached).
    assert!(holds_vip(&lab, 0).unwrap());

    // The old master comes back: it adopts its pinned program, finds the VIP still there
    // and resumes as master at once; B yields at its first advert (docs/operations.md).
    drop(a);
    let a = lab.spawn_lbd_on(0, &cfg_a).expect("lbd A restarts");
    let restarted = Instant::now();
    let sa = wait_lbd_state(a.socket(), "master", Duration::from_secs(3)).unwrap();
    let took = last_change(&sa, Instant::now()) - restarted;
    assert!(
        took <= master_down(150) + SLACK * 2,
        "preempted after {took:?}"
    );
    assert!(
        a.log().contains("resuming as MASTER"),
        "the restarted node did not resume:\n{}",
        a.log()
    );
    wait_lbd_state(b.socket(), "backup", Duration::from_secs(1)).unwrap();
    traffic_through(&lab, &a, 0, Some((&b, 1)));

    // SIGTERM of the master: priority 0, the backup takes over after Skew_Time, within one
    // advert interval; the stopping node forwards until then, so the client barely notices.
    let prober = Prober::start(&lab.client().ns, lab.vip(), PROBE_EVERY, PROBE_TIMEOUT);
    std::thread::sleep(5 * PROBE_EVERY);
    let mut a = a;
    let stopped = Instant::now();
    a.terminate().unwrap();
    let sb = wait_lbd_state(b.socket(), "master", Duration::from_secs(1)).unwrap();
    let took = last_change(&sb, Instant::now()) - stopped;
    eprintln!(
        "graceful: B master {took:?} after SIGTERM (Skew_Time {:?})",
        skew(100)
    );
    // RFC 5798: Skew_Time after the priority-0 advert, plus what a loaded machine adds.
    assert!(
        took <= skew(100) + SLACK,
        "took {took:?}, more than Skew_Time {:?} + {SLACK:?}",
        skew(100)
    );
    assert!(sb.priority_zero_received >= 1, "{sb:#?}");
    let exit = a.stop().unwrap();
    assert!(exit.success(), "lbd A exited with {exit}");
    std::thread::sleep(10 * PROBE_EVERY);
    let probes = prober.finish().unwrap();
    eprintln!(
        "graceful: client gap {:?} ({} probes unanswered)",
        probes.longest_gap(),
        probes.unanswered()
    );
    assert!(probes.ends_answered(5));
    assert!(
        probes.longest_gap() <= INTERVAL + SLACK,
        "{:?}",
        probes.longest_gap()
    );
    assert!(
        !holds_vip(&lab, 0).unwrap(),
        "a stopped master keeps the VIP"
    );
    traffic_through(&lab, &b, 1, None);

    // The instances are fixed while lbd runs: a reload that changes one is refused whole.
    let changed = std::fs::read_to_string(&cfg_b)
        .unwrap()
        .replace("priority = 100", "priority = 120");
    std::fs::write(&cfg_b, changed).unwrap();
    let (code, text) = lb_tests::agent::lbctl(b.socket(), &["reload"]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("[[vrrp]] instances cannot change while lbd runs"),
        "{text}"
    );
    let sb = lb_tests::vrrp::require_instance(b.socket()).unwrap();
    assert_eq!((sb.state.as_str(), sb.priority), ("master", 100));
}

#[test]
fn vrrp_nopreempt_keeps_the_running_master() {
    if !require_root("vrrp_nopreempt_keeps_the_running_master") {
        return;
    }
    let lab = Lab::builder()
        .backends(1)
        .lb_nodes(2)
        .floating_vip()
        .build()
        .expect("lab setup");
    // keepalived's notify arguments appended: INSTANCE, name, state, priority.
    let notified = lab.dir().join("notify-a.log");
    let notify = format!(
        "preempt = false\nnotify = ['/bin/sh', '-c', 'echo \"$@\" >> {}', 'notify']",
        notified.display()
    );
    let cfg_a = lab.write_lbd_config_on(0, &lbd_vrrp(52, 150, 3, "100ms", &notify));
    let cfg_b = lab.write_lbd_config_on(1, &lbd_vrrp(52, 100, 3, "100ms", "preempt = false"));
    let mut b = lab.spawn_lbd_on(1, &cfg_b).expect("lbd B starts");
    wait_lbd_state(b.socket(), "master", Duration::from_secs(3)).unwrap();
    let a = lab.spawn_lbd_on(0, &cfg_a).expect("lbd A starts");
    // Three of A's Master_Down_Intervals: a preempting A would have taken over in one.
    std::thread::sleep(3 * master_down(150));
    let sa = lb_tests::vrrp::require_instance(a.socket()).unwrap();
    assert_eq!(sa.state, "backup", "{sa:#?}");
    assert_eq!(sa.became_master, 0);
    assert_eq!(sa.master, Some(address(&lab, 1)));
    traffic_through(&lab, &b, 1, Some((&a, 0)));
    // It still takes over when the master goes.
    b.terminate().unwrap();
    wait_lbd_state(a.socket(), "master", INTERVAL + SLACK).unwrap();
    b.stop().unwrap();
    traffic_through(&lab, &a, 0, None);
    let mut a = a;
    a.stop().unwrap();
    // The hook runs without being waited for; give the last one a moment.
    lb_tests::vrrp::wait_until("the STOP notification", Duration::from_secs(2), || {
        std::fs::read_to_string(&notified).is_ok_and(|t| t.contains("STOP"))
    })
    .unwrap();
    let lines: Vec<String> = std::fs::read_to_string(&notified)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        lines,
        [
            "INSTANCE vi BACKUP 150",
            "INSTANCE vi MASTER 150",
            "INSTANCE vi STOP 150"
        ],
        "notify hook calls"
    );
}

/// `lbctl backend down|auto` of every backend of VIP `web` on the node at `socket`.
fn force_web_backends(lab: &Lab, socket: &std::path::Path, state: &str) {
    for b in lab.backends() {
        let (code, text) =
            lb_tests::agent::lbctl(socket, &["backend", state, "web", &b.node.addr.to_string()]);
        assert_eq!(code, 0, "lbctl backend {state}: {text}");
    }
}

/// VRRP tracking and the all-down policy: a master whose tracked VIP loses every usable
/// backend lowers its priority and a healthy peer takes over; a node without tracking keeps
/// the VIP and, with `all_down = "pass"`, hands its packets to the kernel (which refuses
/// them, or a local sorry server answers); once the backends are back, the first node's
/// priority returns and it preempts.
#[test]
fn vrrp_tracking_and_the_all_down_policy() {
    if !require_root("vrrp_tracking_and_the_all_down_policy") {
        return;
    }
    let lab = Lab::builder()
        .backends(2)
        .lb_nodes(2)
        .floating_vip()
        .build()
        .expect("lab setup");
    let tracking = "track_vips = [\"web\"]\ntrack_weight = -100";
    let cfg_a = lab.write_lbd_config_on(0, &lbd_vrrp(54, 150, 3, "100ms", tracking));
    // B: no tracking; its `web` passes packets to its kernel while it has no backend.
    let text_b = format!(
        "{}\n{}",
        lab.lbd_config(1)
            .replacen("mode = \"dr\"\n", "mode = \"dr\"\nall_down = \"pass\"\n", 1),
        lbd_vrrp(54, 100, 3, "100ms", "")
    );
    let cfg_b = lab.write_file("lbd-track-b.toml", &text_b).unwrap();
    let a = lab.spawn_lbd_on(0, &cfg_a).expect("lbd A starts");
    let b = lab.spawn_lbd_on(1, &cfg_b).expect("lbd B starts");
    wait_lbd_state(a.socket(), "master", Duration::from_secs(3)).unwrap();
    wait_lbd_state(b.socket(), "backup", Duration::from_secs(1)).unwrap();
    traffic_through(&lab, &a, 0, Some((&b, 1)));

    // Every backend of A's tracked VIP is down: A advertises 150 - 100 and B takes over.
    force_web_backends(&lab, a.socket(), "down");
    let sb = wait_lbd_state(b.socket(), "master", Duration::from_secs(2)).unwrap();
    assert_eq!(sb.priority, 100);
    let sa = wait_lbd_state(a.socket(), "backup", Duration::from_secs(1)).unwrap();
    assert_eq!(sa.priority, 50, "{sa:#?}");
    assert!(
        a.log().contains("a tracked VIP has no usable backend"),
        "{}",
        a.log()
    );
    traffic_through(&lab, &b, 1, Some((&a, 0)));

    // B has no backend for `web` either now, and no tracking: it keeps the VIP and passes
    // `web`'s packets to its kernel, which refuses the connections (no listener)...
    force_web_backends(&lab, b.socket(), "down");
    let before = lb_tests::agent::reason_packets(&b.stats().unwrap(), "pass_no_backend");
    for r in lab.tcp_requests(lab.vip(), 5, 1, Duration::from_secs(2)) {
        let e = r.expect_err("a connection succeeded without backends");
        assert!(format!("{e:#}").contains("refused"), "{e:#}");
    }
    let passed = lb_tests::agent::reason_packets(&b.stats().unwrap(), "pass_no_backend") - before;
    assert!(
        passed >= 5,
        "only {passed} packets passed as pass_no_backend"
    );
    // ...or a sorry server on the node answers them.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (_counters, threads) =
        lb_tests::servers::start(&lab.lb_nodes()[1].ns, "sorry", &[], 80, &stop).unwrap();
    for r in lab.tcp_requests(lab.vip(), 5, 2, Duration::from_secs(2)) {
        assert_eq!(r.expect("the sorry server answers"), "sorry");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    // `web-udp` still has its backends on B: balanced as before.
    for r in lab.udp_requests(lab.vip(), 5, 2, Duration::from_secs(2)) {
        assert!(r.is_ok(), "{r:?}");
    }

    // The backends are back on A: its priority returns to 150 and it preempts.
    force_web_backends(&lab, b.socket(), "auto");
    force_web_backends(&lab, a.socket(), "auto");
    let sa = wait_lbd_state(a.socket(), "master", Duration::from_secs(2)).unwrap();
    assert_eq!(sa.priority, 150);
    wait_lbd_state(b.socket(), "backup", Duration::from_secs(1)).unwrap();
    assert!(a.log().contains("priority restored"), "{}", a.log());
    traffic_through(&lab, &a, 0, Some((&b, 1)));
}
