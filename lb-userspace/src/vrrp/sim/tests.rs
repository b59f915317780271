//! Elections on a simulated LAN: every scenario runs in virtual time, in milliseconds.

use std::net::IpAddr;

use super::*;
use crate::vrrp::wire::{Auth, Version};

fn us(n: u64) -> Duration {
    Duration::from_micros(n)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Node `i` of a LAN: 10.0.0.(10+i), VIP 10.0.0.100, VRRPv3 at 1 s.
fn node(i: u8, priority: u8) -> Config {
    let addr = |last: u8| IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, last));
    Config::new(7, priority, addr(10 + i), vec![addr(100)])
}

fn lan(priorities: &[u8], latency: Duration) -> Lan {
    let configs = priorities
        .iter()
        .enumerate()
        .map(|(i, &p)| node(i as u8, p))
        .collect();
    Lan::new(configs, latency)
}

fn start_all(lan: &mut Lan) {
    for i in 0..lan.nodes.len() {
        lan.start(i);
    }
}

/// The data plane follows the state: XDP attached and VIPs held exactly on masters.
fn assert_consistent(lan: &Lan) {
    for (i, n) in lan.nodes.iter().enumerate().filter(|(_, n)| n.up) {
        let master = n.machine.state() == State::Master;
        assert_eq!(n.xdp_attached, master, "node {i}: XDP attached");
        assert_eq!(n.holds_vips, master, "node {i}: VIPs");
    }
}

fn mdi(priority: u8) -> Duration {
    // 3 × 1 s + (256 − priority)/256 s, in whole microseconds.
    secs(3) + us((256 - u64::from(priority)) * 1_000_000 / 256)
}

#[test]
fn vrrp_sim_simultaneous_start_elects_the_highest_priority() {
    let mut lan = lan(&[100, 150, 50], us(100));
    start_all(&mut lan);
    lan.run_for(secs(30));
    assert_eq!(lan.masters(), vec![1]);
    // Node 1's timer ran out first; its advert reached the others before theirs did.
    let transitions: Vec<_> = lan
        .transitions()
        .into_iter()
        .filter(|&(_, _, s)| s == State::Master)
        .collect();
    assert_eq!(transitions, vec![(mdi(150), 1, State::Master)]);
    assert_consistent(&lan);
    // Adverts once a second, from the master only.
    let adverts = lan.adverts(1);
    assert_eq!(adverts.len(), 27);
    assert!(adverts.windows(2).all(|w| w[1].0 - w[0].0 == secs(1)));
    assert!(lan.adverts(0).is_empty() && lan.adverts(2).is_empty());
}

#[test]
fn vrrp_sim_simultaneous_start_with_equal_priorities_elects_the_highest_address() {
    let mut lan = lan(&[100, 100, 100], us(100));
    start_all(&mut lan);
    lan.run_for(secs(20));
    assert_eq!(lan.masters(), vec![2]);
    // All three timers ran out at once; the two lower addresses yielded as soon as the
    // highest one's advert arrived.
    let masters: Vec<_> = lan
        .transitions()
        .into_iter()
        .filter(|t| t.2 == State::Master)
        .collect();
    assert_eq!(masters.len(), 3);
    assert!(masters.iter().all(|t| t.0 == mdi(100)));
    for i in [0, 1] {
        assert_eq!(
            lan.last_entered(i, State::Backup),
            Some(mdi(100) + us(100)),
            "node {i}"
        );
    }
    assert_consistent(&lan);
}

#[test]
fn vrrp_sim_master_crash_backup_takes_over_at_master_down_interval() {
    let mut lan = lan(&[150, 100], Duration::ZERO);
    start_all(&mut lan);
    lan.run_for(ms(10_500));
    assert_eq!(lan.masters(), vec![0]);
    lan.crash(0);
    lan.run_for(secs(10));
    assert_eq!(lan.masters(), vec![1]);
    let last = lan.adverts(0).last().unwrap().0;
    assert_eq!(last, mdi(150) + secs(7));
    // keepalived: 3.6097 s in v2-takeover-sigkill; the RFC and we: 3.609375 s.
    assert_eq!(
        lan.last_entered(1, State::Master),
        Some(last + us(3_609_375))
    );
    assert_consistent(&lan);
}

#[test]
fn vrrp_sim_graceful_shutdown_backup_takes_over_after_skew_time() {
    let mut lan = lan(&[150, 100], Duration::ZERO);
    start_all(&mut lan);
    lan.run_for(ms(10_500));
    lan.stop(0);
    assert_eq!(
        lan.adverts(0).last(),
        Some(&(ms(10_500), 0)),
        "priority 0 on stopping"
    );
    assert!(!lan.nodes[0].holds_vips && !lan.nodes[0].xdp_attached);
    lan.run_for(secs(5));
    // keepalived: 0.6097 s in v2-graceful-stop; Skew_Time is 0.609375 s.
    assert_eq!(
        lan.last_entered(1, State::Master),
        Some(ms(10_500) + us(609_375))
    );
    assert_consistent(&lan);
}

#[test]
fn vrrp_sim_v3_100ms_over_ipv6_takes_over_to_the_microsecond() {
    let configs = (0..2u16)
        .map(|i| {
            let mut c = Config::new(
                9,
                [150, 100][usize::from(i)],
                IpAddr::V6(std::net::Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x11 + i)),
                vec!["fe80::77:50".parse().unwrap(), "fd77::50".parse().unwrap()],
            );
            c.advert_interval_cs = 10;
            c
        })
        .collect();
    let mut lan = Lan::new(configs, Duration::ZERO);
    start_all(&mut lan);
    lan.run_for(ms(2_050));
    assert_eq!(lan.masters(), vec![0]);
    lan.crash(0);
    lan.run_for(secs(1));
    let last = lan.adverts(0).last().unwrap().0;
    // keepalived: 361.1-361.3 ms; Master_Down_Interval 360.937 ms.
    assert_eq!(lan.last_entered(1, State::Master), Some(last + us(360_937)));
    lan.restart(0);
    lan.stop(1);
    let stopped = lan.elapsed();
    lan.run_for(secs(1));
    // Node 0, just restarted as backup, hears node 1's priority 0: it takes over after its
    // own Skew_Time at 100 ms (106/256 × 100 ms).
    assert_eq!(
        lan.last_entered(0, State::Master),
        Some(stopped + us(41_406))
    );
}

#[test]
fn vrrp_sim_old_master_returns_and_preempts_after_its_master_down_interval() {
    let mut lan = lan(&[150, 100], Duration::ZERO);
    start_all(&mut lan);
    lan.run_for(secs(10));
    lan.crash(0);
    lan.run_for(secs(10));
    assert_eq!(lan.masters(), vec![1]);
    let back = lan.elapsed();
    lan.restart(0);
    lan.run_for(secs(10));
    // As in v2-preempt: the returning node ignores the lower-priority adverts and takes over
    // when its own Master_Down_Timer runs out; the old master yields without a word.
    assert_eq!(lan.last_entered(0, State::Master), Some(back + mdi(150)));
    assert_eq!(lan.last_entered(1, State::Backup), Some(back + mdi(150)));
    assert!(lan.adverts(1).last().unwrap().0 < back + mdi(150));
    assert_eq!(lan.masters(), vec![0]);
    assert_consistent(&lan);
}

#[test]
fn vrrp_sim_old_master_returns_with_nopreempt_and_stays_backup() {
    let mut configs = vec![node(0, 150), node(1, 100)];
    configs[0].preempt = false;
    let mut lan = Lan::new(configs, Duration::ZERO);
    start_all(&mut lan);
    lan.run_for(secs(10));
    assert_eq!(lan.masters(), vec![0], "nopreempt still wins an election");
    lan.crash(0);
    lan.run_for(secs(10));
    lan.restart(0);
    lan.run_for(secs(120));
    assert_eq!(lan.masters(), vec![1]);
    assert_consistent(&lan);
    // Until the master goes away.
    lan.stop(1);
    let stopped = lan.elapsed();
    lan.run_for(secs(2));
    assert_eq!(
        lan.last_entered(0, State::Master),
        Some(stopped + us(414_062))
    );
}

#[test]
fn vrrp_sim_preempt_delay_postpones_the_takeover() {
    let mut configs = vec![node(0, 150), node(1, 100)];
    configs[0].preempt_delay = secs(10);
    let mut lan = Lan::new(configs, Duration::ZERO);
    lan.start(1);
    lan.run_for(secs(10));
    assert_eq!(lan.masters(), vec![1]);
    let back = lan.elapsed();
    lan.start(0);
    lan.run_for(secs(30));
    // Accepted until back + 10 s, discarded from then: takeover Master_Down_Interval after
    // the last accepted advert.
    let last_accepted = lan
        .adverts(1)
        .into_iter()
        .map(|(t, _)| t)
        .rfind(|&t| t < back + secs(10))
        .unwrap();
    assert_eq!(
        lan.last_entered(0, State::Master),
        Some(last_accepted + mdi(150))
    );
    assert_eq!(lan.masters(), vec![0]);
}

/// One-way split as in v2-split-brain-heal: node 1 cannot hear node 0, both are master, node 0
/// answers every lower-priority advert at once (advert and announcement); once node 1 hears
/// node 0 again it yields at node 0's next advert.
#[test]
fn vrrp_sim_master_answers_lower_priority_adverts_and_heals_a_split_brain() {
    let mut lan = lan(&[150, 100], us(100));
    lan.block(0, 1);
    start_all(&mut lan);
    lan.run_for(secs(10));
    assert_eq!(lan.masters(), vec![0, 1]);
    // Each of node 1's adverts is answered 100 µs later (its delivery) by node 0.
    let answers = lan
        .adverts(0)
        .into_iter()
        .map(|(t, _)| t)
        .collect::<Vec<_>>();
    let lower = lan.adverts(1);
    assert!(lower.len() >= 6);
    for (t, p) in &lower {
        assert_eq!(*p, 100);
        assert!(
            answers.contains(&(*t + us(100))),
            "no answer to the advert at {t:?}"
        );
    }
    // With an immediate announcement each, and the delayed ones.
    let bursts = lan.announcements(0);
    for (t, _) in &lower {
        assert!(
            bursts.iter().any(|(b, _)| *b == *t + us(100)),
            "no announcement at {t:?}"
        );
        if *t + us(100) + secs(5) < lan.elapsed() {
            assert!(
                bursts.iter().any(|(b, _)| *b == *t + us(100) + secs(5)),
                "no delayed one"
            );
        }
    }
    lan.heal();
    let healed = lan.elapsed();
    lan.run_for(secs(5));
    assert_eq!(lan.masters(), vec![0]);
    let yielded = lan.last_entered(1, State::Backup).unwrap();
    assert!(
        yielded > healed && yielded <= healed + secs(1) + us(100),
        "{yielded:?}"
    );
    assert_consistent(&lan);
}

#[test]
fn vrrp_sim_full_partition_heals_by_priority_then_by_address() {
    for (priorities, winner) in [([100u8, 150u8], 1usize), ([120, 120], 1)] {
        let mut lan = lan(&priorities, us(100));
        lan.block(0, 1);
        lan.block(1, 0);
        start_all(&mut lan);
        lan.run_for(secs(10));
        assert_eq!(lan.masters(), vec![0, 1]);
        lan.heal();
        let healed = lan.elapsed();
        lan.run_for(secs(3));
        assert_eq!(lan.masters(), vec![winner], "{priorities:?}");
        let loser = 1 - winner;
        let yielded = lan.last_entered(loser, State::Backup).unwrap();
        assert!(
            yielded <= healed + secs(1) + us(100),
            "{priorities:?}: {yielded:?}"
        );
        assert_consistent(&lan);
    }
}

#[test]
fn vrrp_sim_v2_with_pass_auth_and_a_misconfigured_peer() {
    let mut configs: Vec<Config> = (0..3u8)
        .map(|i| {
            let mut c = node(i, [150, 100, 50][usize::from(i)]);
            c.version = Version::V2;
            c.auth = Auth::pass("kacap42").unwrap();
            c
        })
        .collect();
    configs[2].auth = Auth::pass("wrong").unwrap();
    let mut lan = Lan::new(configs, Duration::ZERO);
    start_all(&mut lan);
    lan.run_for(secs(10));
    // The node with the wrong password hears nobody it accepts, and is heard by nobody.
    assert_eq!(lan.masters(), vec![0, 2]);
    assert!(
        lan.nodes[2]
            .machine
            .stats()
            .ignored
            .get(crate::vrrp::wire::Invalid::AuthMismatch)
            > 0
    );
    assert!(
        lan.nodes[1]
            .machine
            .stats()
            .ignored
            .get(crate::vrrp::wire::Invalid::AuthMismatch)
            > 0
    );
    lan.crash(0);
    lan.run_for(secs(5));
    let last = lan.adverts(0).last().unwrap().0;
    assert_eq!(
        lan.last_entered(1, State::Master),
        Some(last + us(3_609_375))
    );
}

/// 30% of adverts lost for a minute among three nodes: spurious takeovers happen and resolve;
/// no storm; once the loss stops, the highest priority is the only master within an interval.
#[test]
fn vrrp_sim_lossy_lan_converges_without_a_storm() {
    for seed in 1..=5u64 {
        let mut lan = lan(&[200, 150, 100], us(200));
        lan.set_loss(300, seed);
        start_all(&mut lan);
        lan.run_for(secs(60));
        // Every advert is a regular one or an answer to another master's: bounded by a few
        // per second per node.
        let sent: usize = (0..3).map(|i| lan.adverts(i).len()).sum();
        assert!(sent < 3 * 60 * 3, "seed {seed}: {sent} adverts in 60 s");
        lan.set_loss(0, 0);
        let clean = lan.elapsed();
        lan.run_for(secs(1) + ms(1));
        assert_eq!(lan.masters(), vec![0], "seed {seed}");
        lan.run_for(secs(30));
        let later = lan
            .transitions()
            .into_iter()
            .filter(|t| t.0 > clean + secs(1) + ms(1))
            .count();
        assert_eq!(later, 0, "seed {seed}: transitions on a clean LAN");
        assert_eq!(lan.masters(), vec![0], "seed {seed}");
        assert_consistent(&lan);
    }
}
