use std::{
    net::{IpAddr, Ipv4Addr},
    time::{Duration, Instant},
};

use super::*;
use crate::vrrp::{
    captures::{self, Node, LB1, LB2},
    wire::{AdvertFrame, Arp, ChecksumKind, NeighborAdvert},
};

fn v4(s: &str) -> IpAddr {
    IpAddr::V4(s.parse().unwrap())
}

fn us(n: u64) -> Duration {
    Duration::from_micros(n)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

const ME: &str = "10.0.0.2";
const VIP: &str = "10.0.0.50";

fn config(priority: u8) -> Config {
    Config::new(51, priority, v4(ME), vec![v4(VIP)])
}

fn machine(config: Config) -> Machine {
    Machine::new(config).unwrap()
}

fn advert(priority: u8, interval_cs: u16) -> Repr {
    Repr {
        version: Version::V3,
        vrid: 51,
        priority,
        interval_cs,
        auth: Auth::None,
        addrs: vec![v4(VIP)],
    }
}

fn drain(m: &mut Machine) -> Vec<Action> {
    std::iter::from_fn(|| m.poll_action()).collect()
}

fn sent_priorities(actions: &[Action]) -> Vec<u8> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::SendAdvert(r) => Some(r.priority),
            _ => None,
        })
        .collect()
}

fn vips() -> Vec<IpAddr> {
    vec![v4(VIP)]
}

fn becoming_master(priority: u8) -> Vec<Action> {
    vec![
        Action::SendAdvert(advert(priority, 100)),
        Action::BecameMaster,
        Action::AddVips(vips()),
        Action::SendGratuitous {
            addrs: vips(),
            repeat: 5,
        },
        Action::Notify(State::Master),
    ]
}

fn becoming_backup() -> Vec<Action> {
    vec![
        Action::RemoveVips(vips()),
        Action::BecameBackup,
        Action::Notify(State::Backup),
    ]
}

/// A started backup, actions drained.
fn backup(config: Config, t: Instant) -> Machine {
    let mut m = machine(config);
    m.startup(t);
    drain(&mut m);
    m
}

/// A machine that became master at `t` (priority < 255: through Master_Down_Timer).
fn master(config: Config, t: Instant) -> Machine {
    let mut m = machine(config);
    let start = t - m.master_down_interval();
    m.startup(start);
    m.handle_timeout(t);
    assert_eq!(m.state(), State::Master);
    drain(&mut m);
    m
}

// ---------------------------------------------------------------------------------------
// Timers

#[test]
fn vrrp_timers_match_keepalived_to_the_microsecond() {
    // VRRPv2, 1 s, priority 100: the takeover of v2-takeover-sigkill (3.6094 s expected by
    // the README, 3.6097 s seen) and of v2-graceful-stop after priority 0 (0.6094 s).
    let mut c = config(100);
    c.version = Version::V2;
    let m = machine(c.clone());
    assert_eq!(m.skew_time(), us(609_375));
    assert_eq!(m.master_down_interval(), us(3_609_375));
    // VRRPv2's skew is (256 - priority)/256 s whatever the interval (RFC 3768).
    c.advert_interval_cs = 200;
    let m = machine(c);
    assert_eq!(m.skew_time(), us(609_375));
    assert_eq!(m.master_down_interval(), us(6_609_375));
    // VRRPv3, 100 ms: 360.9 ms after a crash, 60.9 ms after priority 0 (keepalived truncates
    // to microseconds as we do).
    let mut c = config(100);
    c.advert_interval_cs = 10;
    let m = machine(c);
    assert_eq!(m.skew_time(), us(60_937));
    assert_eq!(m.master_down_interval(), us(360_937));
    // Priority 150 (lb1 in the captures) waits (256-150)/256 s more than 3 s.
    assert_eq!(machine(config(150)).master_down_interval(), us(3_414_062));
    assert_eq!(machine(config(254)).skew_time(), us(7_812));
    assert_eq!(machine(config(1)).skew_time(), us(996_093));
    // 10 ms, the VRRPv3 minimum.
    let mut c = config(100);
    c.advert_interval_cs = 1;
    assert_eq!(machine(c).master_down_interval(), us(36_093));
}

// ---------------------------------------------------------------------------------------
// Initialize

#[test]
fn vrrp_owner_becomes_master_at_startup() {
    let t = Instant::now();
    let mut m = machine(config(255));
    m.startup(t);
    assert_eq!(m.state(), State::Master);
    assert_eq!(drain(&mut m), becoming_master(255));
    assert_eq!(m.poll_timeout(), Some(t + secs(1)));
    assert_eq!(m.current_master(), Some(v4(ME)));
    // The owner discards every advert (RFC 5798 §7.1), even a priority-0 one.
    assert_eq!(
        m.handle_advert(t, &advert(255, 100), v4("10.0.0.9")),
        Err(Invalid::LocalOwner)
    );
    assert_eq!(
        m.handle_advert(t, &advert(0, 100), v4("10.0.0.9")),
        Err(Invalid::LocalOwner)
    );
    assert!(drain(&mut m).is_empty());
    assert_eq!(m.stats().ignored.get(Invalid::LocalOwner), 2);
}

#[test]
fn vrrp_startup_enters_backup_and_clears_leftover_vips() {
    let t = Instant::now();
    let mut m = machine(config(100));
    assert_eq!(m.state(), State::Initialize);
    assert_eq!(m.poll_timeout(), None);
    m.startup(t);
    assert_eq!(m.state(), State::Backup);
    // RemoveVips at startup: a previous run killed with -9 leaves its addresses behind.
    assert_eq!(drain(&mut m), becoming_backup());
    assert_eq!(m.poll_timeout(), Some(t + us(3_609_375)));
    assert_eq!(m.current_master(), None);
    // A second startup is ignored.
    m.startup(t + secs(1));
    assert!(drain(&mut m).is_empty());
    assert_eq!(m.poll_timeout(), Some(t + us(3_609_375)));
}

#[test]
fn vrrp_resumed_master_advertises_at_once_and_announces_one_interval_later() {
    let t = Instant::now();
    let mut m = machine(config(100));
    m.resume_master(t);
    assert_eq!(m.state(), State::Master);
    // The advert first, so running backups restart their Master_Down_Timer; the
    // addresses are added (they are there already), never removed; no gratuitous ARP yet.
    let actions = drain(&mut m);
    assert_eq!(
        actions,
        vec![
            Action::SendAdvert(advert(100, 100)),
            Action::BecameMaster,
            Action::AddVips(vips()),
            Action::Notify(State::Master),
        ]
    );
    // A backup that still waits for its master hears this advert in time and stays
    // backup: nothing moves.
    let mut peer = Machine::new(Config::new(51, 100, v4("10.0.0.3"), vips())).unwrap();
    peer.startup(t - secs(2));
    drain(&mut peer);
    let Action::SendAdvert(repr) = &actions[0] else {
        panic!("{actions:?}")
    };
    peer.handle_advert(t, repr, v4(ME)).unwrap();
    peer.handle_timeout(t + ms(3_000));
    assert_eq!(peer.state(), State::Backup);
    // Still master one interval later: the advert and the announcement are due.
    assert_eq!(m.poll_timeout(), Some(t + secs(1)));
    m.handle_timeout(t + secs(1));
    assert_eq!(
        drain(&mut m),
        vec![
            Action::SendAdvert(advert(100, 100)),
            Action::SendGratuitous {
                addrs: vips(),
                repeat: 5
            },
        ]
    );
    // Only once: a second resume (or a startup) changes nothing.
    m.resume_master(t + secs(1));
    m.startup(t + secs(1));
    assert!(drain(&mut m).is_empty());
}

#[test]
fn vrrp_resumed_master_stands_down_for_the_master_that_took_over_meanwhile() {
    let t = Instant::now();
    // The restart came after Master_Down_Interval: the peer (equal priority, higher
    // address) is master now and answers the resumed node's advert with its own. The
    // resumed node yields without having announced anything.
    let mut m = machine(config(100));
    m.resume_master(t);
    drain(&mut m);
    let peer = v4("10.0.0.3");
    m.handle_advert(t + ms(1), &advert(100, 100), peer).unwrap();
    assert_eq!(m.state(), State::Backup);
    assert_eq!(drain(&mut m), becoming_backup());
    assert_eq!(m.current_master(), Some(peer));
    m.handle_timeout(t + secs(1));
    assert!(drain(&mut m)
        .iter()
        .all(|a| !matches!(a, Action::SendGratuitous { .. })));
    // A resumed node outranking the new master takes the role back, as a preempting
    // backup would: the other side yields on its advert, and it announces on time.
    let mut m = machine(config(200));
    m.resume_master(t);
    drain(&mut m);
    m.handle_advert(t + ms(1), &advert(100, 100), peer).unwrap();
    assert_eq!(m.state(), State::Master);
    assert_eq!(sent_priorities(&drain(&mut m)), vec![200]);
    m.handle_timeout(t + secs(1));
    assert!(drain(&mut m)
        .iter()
        .any(|a| matches!(a, Action::SendGratuitous { .. })));
}

#[test]
fn vrrp_initialize_ignores_adverts_and_timers() {
    let t = Instant::now();
    let mut m = machine(config(100));
    assert_eq!(
        m.handle_advert(t, &advert(200, 100), v4("10.0.0.9")),
        Err(Invalid::NotRunning)
    );
    m.handle_timeout(t + secs(100));
    m.shutdown(t);
    assert!(drain(&mut m).is_empty());
    assert_eq!(m.state(), State::Initialize);
    assert_eq!(m.stats().ignored.get(Invalid::NotRunning), 1);
}

// ---------------------------------------------------------------------------------------
// Backup

#[test]
fn vrrp_backup_takes_over_when_master_down_timer_fires() {
    let t = Instant::now();
    let mut m = backup(config(100), t);
    let down = t + us(3_609_375);
    m.handle_timeout(down - us(1));
    assert_eq!(m.state(), State::Backup);
    assert!(drain(&mut m).is_empty());
    m.handle_timeout(down);
    assert_eq!(m.state(), State::Master);
    assert_eq!(drain(&mut m), becoming_master(100));
    assert_eq!(m.stats().became_master, 1);
    // Then an advert every Advertisement_Interval.
    assert_eq!(m.poll_timeout(), Some(down + secs(1)));
    m.handle_timeout(down + secs(1));
    assert_eq!(drain(&mut m), vec![Action::SendAdvert(advert(100, 100))]);
    assert_eq!(m.poll_timeout(), Some(down + secs(2)));
}

#[test]
fn vrrp_backup_priority_zero_sets_master_down_timer_to_skew_time() {
    let t = Instant::now();
    let mut m = backup(config(100), t);
    let master = v4("10.0.0.1");
    m.handle_advert(t + secs(1), &advert(150, 100), master)
        .unwrap();
    assert_eq!(m.current_master(), Some(master));
    m.handle_advert(t + secs(2), &advert(0, 100), master)
        .unwrap();
    assert_eq!(m.poll_timeout(), Some(t + secs(2) + us(609_375)));
    assert_eq!(m.stats().priority_zero_received, 1);
    assert_eq!(m.current_master(), None);
    m.handle_timeout(t + secs(2) + us(609_375));
    assert_eq!(m.state(), State::Master);
}

#[test]
fn vrrp_backup_defers_to_higher_and_equal_priority_and_preempts_lower() {
    let t = Instant::now();
    let mut m = backup(config(100), t);
    let other = v4("10.0.0.1");
    // Higher: Master_Down_Timer restarts from the advert.
    m.handle_advert(t + secs(2), &advert(150, 100), other)
        .unwrap();
    assert_eq!(m.poll_timeout(), Some(t + secs(2) + us(3_609_375)));
    // Equal priority, even from a lower address: still deferred to (RFC 5798 §6.4.2 uses >=).
    m.handle_advert(t + secs(3), &advert(100, 100), other)
        .unwrap();
    assert_eq!(m.poll_timeout(), Some(t + secs(3) + us(3_609_375)));
    // Lower, with preemption: discarded; the timer runs out and this node takes over.
    m.handle_advert(t + secs(4), &advert(50, 100), other)
        .unwrap();
    m.handle_advert(t + secs(5), &advert(50, 100), other)
        .unwrap();
    assert_eq!(m.poll_timeout(), Some(t + secs(3) + us(3_609_375)));
    assert!(drain(&mut m).is_empty());
    m.handle_timeout(t + secs(3) + us(3_609_375));
    assert_eq!(m.state(), State::Master);
}

#[test]
fn vrrp_nopreempt_backup_defers_to_a_lower_priority_master() {
    let t = Instant::now();
    let mut c = config(200);
    c.preempt = false;
    let mut m = backup(c, t);
    for i in 1..=100u64 {
        m.handle_advert(t + secs(i), &advert(50, 100), v4("10.0.0.1"))
            .unwrap();
        m.handle_timeout(t + secs(i));
    }
    assert_eq!(m.state(), State::Backup);
    // Master_Down_Interval with our own priority's skew.
    assert_eq!(m.poll_timeout(), Some(t + secs(100) + us(3_218_750)));
}

#[test]
fn vrrp_preempt_delay_holds_a_higher_priority_backup_back() {
    let t = Instant::now();
    let mut c = config(200);
    c.preempt_delay = secs(10);
    let mut m = backup(c.clone(), t);
    let other = v4("10.0.0.1");
    // The delay runs from startup: a lower-priority master is accepted until t + 10 s.
    for i in 1..=9u64 {
        m.handle_advert(t + secs(i), &advert(50, 100), other)
            .unwrap();
    }
    assert_eq!(
        m.poll_timeout(),
        Some(t + secs(9) + m.master_down_interval())
    );
    m.handle_advert(t + secs(10), &advert(50, 100), other)
        .unwrap();
    m.handle_advert(t + secs(11), &advert(50, 100), other)
        .unwrap();
    // Discarded from the deadline on: takeover one Master_Down_Interval after the last
    // accepted advert.
    let takeover = t + secs(9) + m.master_down_interval();
    assert_eq!(m.poll_timeout(), Some(takeover));
    m.handle_timeout(takeover);
    assert_eq!(m.state(), State::Master);

    // A higher-priority advert cancels the delay; the next lower one starts it afresh.
    let mut m = backup(c, t);
    m.handle_advert(t + secs(1), &advert(250, 100), other)
        .unwrap();
    m.handle_advert(t + secs(20), &advert(50, 100), other)
        .unwrap();
    m.handle_advert(t + secs(29), &advert(50, 100), other)
        .unwrap();
    assert_eq!(
        m.poll_timeout(),
        Some(t + secs(29) + m.master_down_interval())
    );
    m.handle_advert(t + secs(30), &advert(50, 100), other)
        .unwrap();
    assert_eq!(
        m.poll_timeout(),
        Some(t + secs(29) + m.master_down_interval())
    );
}

#[test]
fn vrrp_v3_backup_learns_the_master_interval() {
    let t = Instant::now();
    let mut m = backup(config(100), t);
    assert_eq!(m.master_adver_interval(), secs(1));
    m.handle_advert(t, &advert(150, 10), v4("10.0.0.1"))
        .unwrap();
    assert_eq!(m.master_adver_interval(), ms(100));
    assert_eq!(m.poll_timeout(), Some(t + us(360_937)));
    // The skew follows the learned interval too.
    m.handle_advert(t, &advert(0, 10), v4("10.0.0.1")).unwrap();
    assert_eq!(m.poll_timeout(), Some(t + us(60_937)));
    // As master it still sends its own interval.
    m.handle_timeout(t + us(60_937));
    assert_eq!(sent_priorities(&drain(&mut m)), vec![100]);
    assert_eq!(m.poll_timeout(), Some(t + us(60_937) + secs(1)));
}

#[test]
fn vrrp_v2_interval_and_auth_must_match() {
    let t = Instant::now();
    let mut c = config(100);
    c.version = Version::V2;
    c.auth = Auth::pass("kacap42").unwrap();
    let mut m = backup(c, t);
    let mut a = advert(150, 100);
    a.version = Version::V2;
    a.auth = Auth::pass("kacap42").unwrap();
    m.handle_advert(t, &a, v4("10.0.0.1")).unwrap();
    let timer = m.poll_timeout();
    let later = t + secs(1);
    let wrong_interval = Repr {
        interval_cs: 200,
        ..a.clone()
    };
    assert_eq!(
        m.handle_advert(later, &wrong_interval, v4("10.0.0.1")),
        Err(Invalid::IntervalMismatch)
    );
    let wrong_pass = Repr {
        auth: Auth::pass("other").unwrap(),
        ..a.clone()
    };
    assert_eq!(
        m.handle_advert(later, &wrong_pass, v4("10.0.0.1")),
        Err(Invalid::AuthMismatch)
    );
    let no_auth = Repr {
        auth: Auth::None,
        ..a.clone()
    };
    assert_eq!(
        m.handle_advert(later, &no_auth, v4("10.0.0.1")),
        Err(Invalid::AuthMismatch)
    );
    assert_eq!(
        m.poll_timeout(),
        timer,
        "ignored adverts leave the timer alone"
    );
    assert_eq!(m.master_adver_interval(), secs(1));
}

// ---------------------------------------------------------------------------------------
// Master

#[test]
fn vrrp_master_yields_to_a_higher_priority_without_a_word() {
    let t = Instant::now();
    let mut m = master(config(100), t);
    let other = v4("10.0.0.1");
    m.handle_advert(t + ms(500), &advert(150, 10), other)
        .unwrap();
    assert_eq!(m.state(), State::Backup);
    // As in v2-preempt: the old master goes to backup silently.
    assert_eq!(drain(&mut m), becoming_backup());
    assert_eq!(m.current_master(), Some(other));
    assert_eq!(
        m.master_adver_interval(),
        ms(100),
        "learned from the advert"
    );
    assert_eq!(m.poll_timeout(), Some(t + ms(500) + us(360_937)));
    assert_eq!(m.stats().became_backup, 1);
}

#[test]
fn vrrp_master_tie_breaks_equal_priority_by_primary_address() {
    let t = Instant::now();
    // A higher address wins.
    let mut m = master(config(100), t);
    m.handle_advert(t, &advert(100, 100), v4("10.0.0.3"))
        .unwrap();
    assert_eq!(m.state(), State::Backup);
    // A lower address loses: it is answered like a lower priority.
    let mut m = master(config(100), t);
    m.handle_advert(t, &advert(100, 100), v4("10.0.0.1"))
        .unwrap();
    assert_eq!(m.state(), State::Master);
    let actions = drain(&mut m);
    assert_eq!(sent_priorities(&actions), vec![100]);
}

#[test]
fn vrrp_master_answers_a_lower_priority_with_an_advert_and_announcements() {
    let t = Instant::now();
    let mut m = master(config(150), t);
    let other = v4("10.0.0.1");
    let at = t + ms(200);
    m.handle_advert(at, &advert(100, 100), other).unwrap();
    assert_eq!(m.state(), State::Master);
    assert_eq!(
        drain(&mut m),
        vec![
            Action::SendAdvert(advert(150, 100)),
            Action::SendGratuitous {
                addrs: vips(),
                repeat: 5
            },
        ]
    );
    // The advert timer restarts from the answer (keepalived: lb1's adverts follow lb2's).
    let timers = |m: &Machine| m.poll_timeout();
    assert_eq!(timers(&m), Some(at + secs(1)));
    // Within LOWER_PRIO_ANNOUNCE_GAP: the advert again, no second burst.
    m.handle_advert(at + ms(100), &advert(100, 100), other)
        .unwrap();
    assert_eq!(drain(&mut m), vec![Action::SendAdvert(advert(150, 100))]);
    // A second later: both.
    m.handle_advert(at + secs(1), &advert(100, 100), other)
        .unwrap();
    assert_eq!(drain(&mut m).len(), 2);
    // The delayed bursts: 5 s after becoming master, 5 s after each answered advert.
    let mut bursts = Vec::new();
    let end = t + secs(10);
    while let Some(next) = m.poll_timeout().filter(|&n| n <= end) {
        m.handle_timeout(next);
        for a in drain(&mut m) {
            if let Action::SendGratuitous { repeat, .. } = a {
                bursts.push((next - t, repeat));
            }
        }
    }
    assert_eq!(bursts, vec![(secs(5), 5), (ms(5200), 5), (ms(6200), 5)]);
}

#[test]
fn vrrp_master_answers_priority_zero_with_an_advert() {
    let t = Instant::now();
    let mut m = master(config(100), t);
    m.handle_advert(t + ms(300), &advert(0, 100), v4("10.0.0.9"))
        .unwrap();
    assert_eq!(m.state(), State::Master);
    assert_eq!(drain(&mut m), vec![Action::SendAdvert(advert(100, 100))]);
    assert_eq!(m.poll_timeout(), Some(t + ms(1300)));
}

#[test]
fn vrrp_master_shutdown_sends_priority_zero_and_releases_everything() {
    let t = Instant::now();
    let mut m = master(config(100), t);
    m.shutdown(t + secs(1));
    assert_eq!(m.state(), State::Initialize);
    assert_eq!(
        drain(&mut m),
        vec![
            Action::SendAdvert(advert(0, 100)),
            Action::RemoveVips(vips()),
            Action::Stopped,
            Action::Notify(State::Initialize),
        ]
    );
    assert_eq!(m.poll_timeout(), None);
    assert_eq!(m.stats().priority_zero_sent, 1);
    // Nothing more after the priority-0 advert, and a restart works.
    m.handle_timeout(t + secs(10));
    assert!(drain(&mut m).is_empty());
    m.startup(t + secs(11));
    assert_eq!(m.state(), State::Backup);
}

#[test]
fn vrrp_backup_shutdown_sends_nothing() {
    let t = Instant::now();
    let mut m = backup(config(100), t);
    m.shutdown(t);
    assert_eq!(
        drain(&mut m),
        vec![Action::Stopped, Action::Notify(State::Initialize)]
    );
    assert_eq!(m.poll_timeout(), None);
}

#[test]
fn vrrp_announcements_repeat_after_the_delay_and_periodically() {
    let t = Instant::now();
    let mut c = config(100);
    c.announce.refresh = Some(secs(60));
    c.announce.refresh_repeat = 2;
    let mut m = master(c, t);
    let mut bursts = Vec::new();
    let end = t + secs(130);
    while let Some(next) = m.poll_timeout().filter(|&n| n <= end) {
        m.handle_timeout(next);
        for a in drain(&mut m) {
            if let Action::SendGratuitous { repeat, .. } = a {
                bursts.push((next - t, repeat));
            }
        }
    }
    assert_eq!(bursts, vec![(secs(5), 5), (secs(60), 2), (secs(120), 2)]);

    // With no delay and no refresh there is only the first burst; with repeat 0 none.
    let mut c = config(100);
    c.announce = Announce {
        repeat: 0,
        delay: None,
        ..Announce::default()
    };
    let mut m = machine(c);
    m.startup(t);
    m.handle_timeout(t + m.master_down_interval());
    let actions = drain(&mut m);
    assert!(!actions
        .iter()
        .any(|a| matches!(a, Action::SendGratuitous { .. })));
    assert_eq!(
        m.poll_timeout(),
        Some(t + m.master_down_interval() + secs(1))
    );
}

// ---------------------------------------------------------------------------------------
// Ignored adverts

#[test]
fn vrrp_ignored_adverts_are_counted_per_reason_and_change_nothing() {
    let t = Instant::now();
    let other = v4("10.0.0.1");
    for state in [State::Backup, State::Master] {
        let mut m = match state {
            State::Master => master(config(100), t),
            _ => backup(config(100), t),
        };
        let timer = m.poll_timeout();
        let cases: Vec<(Repr, IpAddr, Invalid)> = vec![
            (
                Repr {
                    vrid: 52,
                    ..advert(200, 100)
                },
                other,
                Invalid::WrongVrid,
            ),
            (
                Repr {
                    version: Version::V2,
                    ..advert(200, 100)
                },
                other,
                Invalid::VersionMismatch,
            ),
            (
                advert(200, 100),
                "fe80::1".parse().unwrap(),
                Invalid::AddressFamily,
            ),
            (
                Repr {
                    addrs: vec!["fd00::50".parse().unwrap()],
                    ..advert(200, 100)
                },
                other,
                Invalid::AddressFamily,
            ),
            (advert(200, 100), v4(ME), Invalid::FromSelf),
        ];
        for (repr, src, reason) in &cases {
            assert_eq!(m.handle_advert(t + ms(10), repr, *src), Err(*reason));
        }
        for reason in [
            Invalid::WrongVrid,
            Invalid::VersionMismatch,
            Invalid::FromSelf,
        ] {
            assert_eq!(m.stats().ignored.get(reason), 1, "{reason}");
        }
        assert_eq!(m.stats().ignored.get(Invalid::AddressFamily), 2);
        assert_eq!(m.stats().ignored.total(), cases.len() as u64);
        assert_eq!(m.stats().adverts_received, 0);
        assert_eq!(m.state(), state);
        assert_eq!(m.poll_timeout(), timer);
        assert!(drain(&mut m).is_empty());
    }
}

#[test]
fn vrrp_address_list_mismatch_is_counted_not_dropped() {
    let t = Instant::now();
    let mut m = backup(config(100), t);
    let mut a = advert(150, 100);
    a.addrs = vec![v4("10.0.0.51")];
    m.handle_advert(t + secs(1), &a, v4("10.0.0.1")).unwrap();
    assert_eq!(m.stats().address_list_mismatch, 1);
    assert_eq!(m.poll_timeout(), Some(t + secs(1) + us(3_609_375)));
    // Same addresses in another order are the same list.
    let mut c = config(100);
    c.vips = vec![v4("10.0.0.50"), v4("10.0.0.51")];
    let mut m = backup(c, t);
    a.addrs = vec![v4("10.0.0.51"), v4("10.0.0.50")];
    m.handle_advert(t, &a, v4("10.0.0.1")).unwrap();
    assert_eq!(m.stats().address_list_mismatch, 0);
}

// ---------------------------------------------------------------------------------------
// Clock jumps

#[test]
fn vrrp_clock_going_back_does_not_stall_the_master_or_the_backup() {
    let t = Instant::now() + secs(7200);
    let mut m = master(config(100), t);
    let back = t - secs(3600);
    m.handle_timeout(back);
    // The advert timer is pulled back to one interval from the new now.
    assert_eq!(m.poll_timeout(), Some(back + secs(1)));
    m.handle_timeout(back + secs(1));
    assert_eq!(sent_priorities(&drain(&mut m)), vec![100]);
    assert_eq!(m.poll_timeout(), Some(back + secs(2)));

    let mut m = backup(config(100), t);
    m.handle_advert(back, &advert(150, 100), v4("10.0.0.1"))
        .unwrap();
    assert_eq!(m.poll_timeout(), Some(back + us(3_609_375)));
    m.handle_timeout(back - secs(10));
    assert_eq!(m.poll_timeout(), Some(back - secs(10) + us(3_609_375)));
}

#[test]
fn vrrp_clock_jumping_forward_fires_each_timer_once() {
    let t = Instant::now();
    let mut c = config(100);
    c.announce.refresh = Some(secs(60));
    let mut m = master(c, t);
    m.handle_advert(t + ms(1), &advert(50, 100), v4("10.0.0.1"))
        .unwrap();
    drain(&mut m);
    let later = t + secs(3600);
    m.handle_timeout(later);
    let actions = drain(&mut m);
    // One advert and one coalesced announcement, not an hour's worth.
    assert_eq!(sent_priorities(&actions), vec![100]);
    assert_eq!(
        actions
            .iter()
            .filter(|a| matches!(a, Action::SendGratuitous { .. }))
            .count(),
        1
    );
    assert_eq!(m.poll_timeout(), Some(later + secs(1)));
    m.handle_timeout(later);
    assert!(
        drain(&mut m).is_empty(),
        "a second call at the same instant does nothing"
    );

    // A backup whose Master_Down_Timer expired during the jump takes over once.
    let mut m = backup(config(100), t);
    m.handle_timeout(later);
    assert_eq!(drain(&mut m), becoming_master(100));
    assert_eq!(m.poll_timeout(), Some(later + secs(1)));
}

// ---------------------------------------------------------------------------------------
// Configuration and priority changes

#[test]
fn vrrp_config_is_validated() {
    let check = |f: &dyn Fn(&mut Config)| {
        let mut c = config(100);
        f(&mut c);
        Machine::new(c).err()
    };
    assert_eq!(check(&|_| {}), None);
    assert_eq!(check(&|c| c.vrid = 0), Some(ConfigError::Vrid));
    assert_eq!(check(&|c| c.priority = 0), Some(ConfigError::Priority));
    assert_eq!(
        check(&|c| c.advert_interval_cs = 0),
        Some(ConfigError::Interval)
    );
    assert_eq!(
        check(&|c| c.advert_interval_cs = 4096),
        Some(ConfigError::Interval)
    );
    assert_eq!(check(&|c| c.advert_interval_cs = 4095), None);
    let v2 = |c: &mut Config| c.version = Version::V2;
    assert_eq!(
        check(&|c| {
            v2(c);
            c.advert_interval_cs = 10
        }),
        Some(ConfigError::Interval)
    );
    assert_eq!(
        check(&|c| {
            v2(c);
            c.advert_interval_cs = 25_600
        }),
        Some(ConfigError::Interval)
    );
    assert_eq!(
        check(&|c| {
            v2(c);
            c.advert_interval_cs = 25_500
        }),
        None
    );
    assert_eq!(check(&|c| c.vips.clear()), Some(ConfigError::NoVips));
    assert_eq!(
        check(&|c| c.vips = vec![v4(VIP); 256]),
        Some(ConfigError::TooManyVips)
    );
    assert_eq!(
        check(&|c| c.vips.push("fd00::1".parse().unwrap())),
        Some(ConfigError::AddressFamily)
    );
    let v6 = |c: &mut Config| {
        c.primary_addr = "fe80::2".parse().unwrap();
        c.vips = vec!["fe80::50".parse().unwrap()];
    };
    assert_eq!(check(&v6), None);
    assert_eq!(
        check(&|c| {
            v6(c);
            v2(c)
        }),
        Some(ConfigError::V2OverIpv6)
    );
    assert_eq!(
        check(&|c| c.auth = Auth::pass("x").unwrap()),
        Some(ConfigError::AuthOnV3)
    );
    assert_eq!(
        check(&|c| {
            v2(c);
            c.auth = Auth::pass("x").unwrap()
        }),
        None
    );
    assert_eq!(
        check(&|c| c.preempt_delay = secs(3601)),
        Some(ConfigError::Delay)
    );
    assert_eq!(
        check(&|c| c.announce.refresh = Some(Duration::ZERO)),
        Some(ConfigError::Delay)
    );
    for e in [
        ConfigError::Vrid,
        ConfigError::Interval,
        ConfigError::AuthOnV3,
    ] {
        assert!(!e.to_string().is_empty());
    }
}

#[test]
fn vrrp_priority_changes_are_advertised_at_once_by_a_master() {
    let t = Instant::now();
    let mut m = master(config(200), t);
    assert_eq!(m.set_priority(t + ms(100), 0), Err(ConfigError::Priority));
    m.set_priority(t + ms(100), 50).unwrap();
    assert_eq!(drain(&mut m), vec![Action::SendAdvert(advert(50, 100))]);
    assert_eq!(m.poll_timeout(), Some(t + ms(1100)));
    m.set_priority(t + ms(200), 50).unwrap();
    assert!(drain(&mut m).is_empty());
    // Now a priority-100 advert outranks it.
    m.handle_advert(t + ms(300), &advert(100, 100), v4("10.0.0.1"))
        .unwrap();
    assert_eq!(m.state(), State::Backup);
    drain(&mut m);
    // A backup's new priority shows in its skew.
    m.set_priority(t + ms(400), 100).unwrap();
    assert!(drain(&mut m).is_empty());
    assert_eq!(m.skew_time(), us(609_375));
}

// ---------------------------------------------------------------------------------------
// Random inputs

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Random events at random instants (backwards included) never panic, and the machine's
/// observable state stays consistent: a timer exactly when running, never further away than
/// its own span, and the last Notify names the current state.
#[test]
fn vrrp_random_events_keep_the_machine_consistent() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let base = Instant::now() + secs(10_000);
    for round in 0..200 {
        let mut c = config(1 + rng.below(255) as u8);
        c.preempt = rng.below(2) == 0;
        c.preempt_delay = secs(rng.below(3));
        c.advert_interval_cs = 1 + rng.below(300) as u16;
        if round % 3 == 0 {
            c.announce.refresh = Some(ms(1 + rng.below(5000)));
        }
        let mut m = machine(c.clone());
        let mut now = base;
        let mut last_notify = None;
        for _ in 0..300 {
            now = match rng.below(10) {
                0 => now - ms(rng.below(5000)),
                1 => now + secs(rng.below(100_000)),
                _ => now + ms(rng.below(1500)),
            };
            match rng.below(12) {
                0 => m.startup(now),
                1 => m.shutdown(now),
                2 => {
                    let _ = m.set_priority(now, rng.below(256) as u8);
                }
                3..=6 => {
                    if let Some(at) = m.poll_timeout() {
                        now = now.max(at);
                    }
                    m.handle_timeout(now);
                }
                _ => {
                    let mut a = advert(rng.below(256) as u8, 1 + rng.below(4095) as u16);
                    if rng.below(10) == 0 {
                        a.vrid = rng.below(256) as u8;
                    }
                    let src = v4(["10.0.0.1", "10.0.0.3", ME, "10.0.0.200"][rng.below(4) as usize]);
                    let _ = m.handle_advert(now, &a, src);
                }
            }
            while let Some(a) = m.poll_action() {
                if let Action::Notify(s) = a {
                    last_notify = Some(s);
                }
            }
            assert_eq!(last_notify.unwrap_or(State::Initialize), m.state());
            assert_eq!(m.poll_timeout().is_some(), m.state() != State::Initialize);
            if let Some(at) = m.poll_timeout() {
                let span = m
                    .master_down_interval()
                    .max(secs(5))
                    .max(c.announce.refresh.unwrap_or_default());
                assert!(
                    at <= now + span,
                    "a timer {:?} beyond its span {span:?} in {:?}: {m:#?}",
                    at - now,
                    m.state()
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Replaying the keepalived captures: our machine in place of one node, fed the other node's
// adverts at the captured instants.

struct Replay {
    epoch: Instant,
    /// Our actions with the instant they were taken.
    actions: Vec<(Instant, Action)>,
}

impl Replay {
    fn seconds(&self, at: Instant) -> f64 {
        if at >= self.epoch {
            (at - self.epoch).as_secs_f64()
        } else {
            -(self.epoch - at).as_secs_f64()
        }
    }

    fn adverts(&self) -> Vec<(f64, Repr)> {
        self.actions
            .iter()
            .filter_map(|(at, a)| match a {
                Action::SendAdvert(r) => Some((self.seconds(*at), r.clone())),
                _ => None,
            })
            .collect()
    }

    fn became(&self, state: State) -> Vec<f64> {
        self.actions
            .iter()
            .filter(|(_, a)| *a == Action::Notify(state))
            .map(|(at, _)| self.seconds(*at))
            .collect()
    }

    fn bursts(&self) -> Vec<(f64, u32)> {
        self.actions
            .iter()
            .filter_map(|(at, a)| match a {
                Action::SendGratuitous { repeat, .. } => Some((self.seconds(*at), *repeat)),
                _ => None,
            })
            .collect()
    }
}

/// Runs `config` as `me` through `file`: started at `start` seconds (relative to the first
/// frame), hearing the other node's adverts sent at or after `hear_from` (and after `start`),
/// until the capture's last frame.
fn replay(file: &str, me: Node, config: Config, start: f64, hear_from: f64) -> Replay {
    let epoch = Instant::now() + secs(100);
    let at = |s: f64| {
        if s >= 0.0 {
            epoch + Duration::from_secs_f64(s)
        } else {
            epoch - Duration::from_secs_f64(-s)
        }
    };
    let mut m = machine(config);
    let mut actions = Vec::new();
    let mut record = |m: &mut Machine, when: Instant| {
        while let Some(a) = m.poll_action() {
            actions.push((when, a));
        }
    };
    let run_timers =
        |m: &mut Machine, until: Instant, record: &mut dyn FnMut(&mut Machine, Instant)| {
            while let Some(due) = m.poll_timeout().filter(|&d| d <= until) {
                m.handle_timeout(due);
                record(m, due);
            }
        };
    m.startup(at(start));
    record(&mut m, at(start));
    let frames = captures::load(file);
    let end = epoch + frames.last().expect("frames").t;
    for frame in frames {
        let Ok(f) = AdvertFrame::parse(&frame.data) else {
            continue;
        };
        let t = frame.t.as_secs_f64();
        if f.src_mac == me.mac || t < hear_from || t < start {
            continue;
        }
        let when = epoch + frame.t;
        run_timers(&mut m, when, &mut record);
        m.handle_advert(when, &f.advert.vrrp, f.advert.ip.src())
            .expect("the peer's adverts are valid");
        record(&mut m, when);
    }
    run_timers(&mut m, end, &mut record);
    Replay { epoch, actions }
}

/// The instants (seconds) and VRRP payloads of `node`'s adverts in `file`.
fn captured_adverts(file: &str, node: Node) -> Vec<(f64, AdvertFrame)> {
    captures::load(file)
        .into_iter()
        .filter_map(|f| {
            let a = AdvertFrame::parse(&f.data).ok()?;
            (a.src_mac == node.mac).then_some((f.t.as_secs_f64(), a))
        })
        .collect()
}

/// Start instants of `node`'s GARP/NA bursts in `file` (frames less than 10 ms apart are one
/// burst).
fn captured_bursts(file: &str, node: Node) -> Vec<f64> {
    let mut starts: Vec<f64> = Vec::new();
    let mut last = f64::NEG_INFINITY;
    for f in captures::load(file) {
        let from = Arp::parse(&f.data)
            .ok()
            .filter(Arp::is_gratuitous)
            .map(|a| a.src_mac)
            .or_else(|| NeighborAdvert::parse(&f.data).ok().map(|n| n.src_mac));
        if from != Some(node.mac) {
            continue;
        }
        let t = f.t.as_secs_f64();
        if t - last > 0.010 {
            starts.push(t);
        }
        last = t;
    }
    starts
}

fn lab_config(vrid: u8, version: Version, interval_cs: u16, node: Node, v6: bool) -> Config {
    let vips = if v6 {
        vec!["fe80::77:50".parse().unwrap(), "fd77::50".parse().unwrap()]
    } else {
        vec![IpAddr::V4(Ipv4Addr::new(10, 77, 0, 50))]
    };
    let mut c = Config::new(vrid, node.priority, node.addr(v6), vips);
    c.version = version;
    c.advert_interval_cs = interval_cs;
    c
}

fn assert_close(ours: f64, theirs: f64, what: &str) {
    assert!(
        (ours - theirs).abs() < 0.001,
        "{what}: ours {ours:.6} s, keepalived {theirs:.6} s"
    );
}

/// lb2 takes over from lb1 (crash or priority 0): our machine in lb2's place takes over within
/// a millisecond of keepalived, sends the same VRRP bytes, and announces at the same instants.
fn check_takeover(file: &str, config: Config, unicast: bool) {
    let r = replay(file, LB2, config.clone(), -0.001, 0.0);
    let theirs = captured_adverts(file, LB2);
    let (their_first, their_frame) = &theirs[0];
    let ours = r.became(State::Master);
    assert_eq!(ours.len(), 1, "{file}: one takeover");
    assert_close(ours[0], *their_first, &format!("{file}: takeover"));
    // Our adverts from then on: the interval, and keepalived's exact VRRP message.
    let adverts = r.adverts();
    let v6 = config.primary_addr.is_ipv6();
    let peer = LB1.addr(v6);
    let dst = if unicast {
        peer
    } else {
        crate::vrrp::wire::Family::of(peer).multicast_group()
    };
    let kind = ChecksumKind::default_for(config.version);
    let ours_bytes = adverts[0]
        .1
        .to_bytes(config.primary_addr, dst, kind)
        .unwrap();
    let frame = their_frame.to_bytes().unwrap();
    let ip_len = if v6 { 40 } else { 20 };
    assert_eq!(ours_bytes, frame[14 + ip_len..], "{file}: advert bytes");
    assert_eq!(their_frame.advert.ip.dst(), dst);
    // Then one every interval, from the takeover.
    let interval = f64::from(config.advert_interval_cs) / 100.0;
    for (i, (t, _)) in adverts.iter().enumerate() {
        assert_close(*t, ours[0] + i as f64 * interval, file);
    }
    // Announcements: at the takeover, and again 5 s later.
    let bursts: Vec<f64> = r.bursts().into_iter().map(|(t, _)| t).collect();
    let captured = captured_bursts(file, LB2);
    assert_eq!(
        bursts.len(),
        captured.len(),
        "{file}: bursts {bursts:?} vs {captured:?}"
    );
    // The first at the takeover; the later ones as long after it as keepalived's were after
    // its own (keepalived's timers run late by a few hundred microseconds each time).
    assert_close(
        bursts[0],
        captured[0],
        &format!("{file}: first announcement"),
    );
    for (ours, theirs) in bursts.iter().zip(&captured).skip(1) {
        assert_close(
            ours - bursts[0],
            theirs - captured[0],
            &format!("{file}: announcement"),
        );
    }
}

#[test]
fn vrrp_replay_v2_takeover_after_sigkill() {
    // 3.6097 s after lb1's last advert.
    check_takeover(
        "v2-takeover-sigkill.pcap",
        lab_config(58, Version::V2, 100, LB2, false),
        false,
    );
}

#[test]
fn vrrp_replay_v2_takeover_after_priority_zero() {
    // 0.6097 s after the priority-0 advert.
    check_takeover(
        "v2-graceful-stop.pcap",
        lab_config(59, Version::V2, 100, LB2, false),
        false,
    );
}

#[test]
fn vrrp_replay_v3_100ms_takeover_after_sigkill() {
    check_takeover(
        "v3-ipv4-takeover-sigkill-100ms.pcap",
        lab_config(60, Version::V3, 10, LB2, false),
        false,
    );
}

#[test]
fn vrrp_replay_v3_100ms_takeover_after_priority_zero() {
    check_takeover(
        "v3-ipv4-graceful-stop-100ms.pcap",
        lab_config(61, Version::V3, 10, LB2, false),
        false,
    );
}

#[test]
fn vrrp_replay_v3_ipv6_takeover() {
    check_takeover(
        "v3-ipv6-mcast-takeover.pcap",
        lab_config(55, Version::V3, 100, LB2, true),
        false,
    );
}

#[test]
fn vrrp_replay_unicast_takeovers() {
    let mut v2 = lab_config(56, Version::V2, 100, LB2, false);
    v2.auth = Auth::pass("kacap42").unwrap();
    check_takeover("v2-unicast-pass.pcap", v2, true);
    check_takeover(
        "v3-ipv4-unicast.pcap",
        lab_config(57, Version::V3, 100, LB2, false),
        true,
    );
}

/// v2-preempt: lb1 (150) starts while lb2 (100) is master, discards lb2's adverts and takes
/// over after its own Master_Down_Interval; lb2 yields without sending anything.
#[test]
fn vrrp_replay_preemption() {
    let file = "v2-preempt.pcap";
    let started = 1.247; // the recording script's time, not exact
    let r = replay(
        file,
        LB1,
        lab_config(62, Version::V2, 100, LB1, false),
        started,
        0.0,
    );
    let ours = r.became(State::Master);
    assert_eq!(ours.len(), 1);
    assert_close(
        ours[0],
        started + 3.414_062,
        "Master_Down_Interval after startup",
    );
    let theirs = captured_adverts(file, LB1)[0].0;
    // keepalived needs ~20 ms to start up before its timer runs.
    assert!(
        (theirs - ours[0]).abs() < 0.025,
        "ours {} vs keepalived {theirs}",
        ours[0]
    );

    // lb2 as master since before the capture: yields at lb1's first advert, silently.
    let r = replay(
        file,
        LB2,
        lab_config(62, Version::V2, 100, LB2, false),
        -3.7,
        0.0,
    );
    let lb1_first = captured_adverts(file, LB1)[0].0;
    assert_eq!(r.became(State::Master).len(), 1);
    let backup = r.became(State::Backup);
    assert_eq!(backup.len(), 2, "startup, then yielding");
    assert_close(backup[1], lb1_first, "lb2 yields");
    let last_advert = r.adverts().last().unwrap().0;
    assert!(last_advert < lb1_first, "lb2 sent an advert after yielding");
}

/// v2-split-brain-heal: lb1 (150, master) hears lb2 (100, master): it answers each advert at
/// once with an advert and 5 GARPs, and 5 s later with 5 more; its own adverts keep the
/// one-second rhythm from each answer. When lb2 hears lb1 again it yields.
#[test]
fn vrrp_replay_split_brain() {
    let file = "v2-split-brain-heal.pcap";
    let mdi = 3.414_062;
    // Started so that its Master_Down_Timer fires at lb1's first captured advert.
    let r = replay(
        file,
        LB1,
        lab_config(64, Version::V2, 100, LB1, false),
        -mdi,
        0.0,
    );
    let became = r.became(State::Master);
    assert_eq!(became.len(), 1);
    assert_close(became[0], 0.0, "lb1's takeover");
    assert_eq!(r.became(State::Backup).len(), 1, "only the startup");
    let ours: Vec<f64> = r.bursts().into_iter().map(|(t, _)| t).collect();
    let theirs = captured_bursts(file, LB1);
    assert_eq!(
        ours.len(),
        theirs.len(),
        "ours {ours:?}\nkeepalived {theirs:?}"
    );
    for (o, t) in ours.iter().zip(&theirs) {
        assert_close(*o, *t, "announcement");
    }
    // Every lb2 advert got an advert back at once.
    let adverts: Vec<f64> = r.adverts().into_iter().map(|(t, _)| t).collect();
    for (t, _) in captured_adverts(file, LB2) {
        assert!(
            adverts.iter().any(|&a| (a - t).abs() < 1e-9),
            "no answer to lb2's advert at {t}"
        );
    }

    // lb2 (master too) starts hearing lb1 when the nft rule goes at +3.232 s: it yields at
    // lb1's next advert and sends nothing more.
    let r = replay(
        file,
        LB2,
        lab_config(64, Version::V2, 100, LB2, false),
        0.196_663 - 3.609_375,
        3.232,
    );
    assert_close(r.became(State::Master)[0], 0.196_663, "lb2's own takeover");
    let lb1_after_heal = captured_adverts(file, LB1)
        .into_iter()
        .map(|(t, _)| t)
        .find(|&t| t > 3.232)
        .unwrap();
    assert_close(
        *r.became(State::Backup).last().unwrap(),
        lb1_after_heal,
        "lb2 yields",
    );
    assert!(r.adverts().last().unwrap().0 < lb1_after_heal);
}

#[test]
fn vrrp_every_transition_has_its_cause() {
    let t = Instant::now();
    let peer = v4("10.0.0.3");
    let mut m = machine(config(100));
    assert_eq!(m.cause(), Cause::NotStarted);
    m.startup(t);
    assert_eq!((m.state(), m.cause()), (State::Backup, Cause::Startup));
    let t = t + secs(4);
    m.handle_timeout(t);
    assert_eq!(
        (m.state(), m.cause()),
        (State::Master, Cause::NoMasterHeard)
    );

    m.handle_advert(t, &advert(200, 100), peer).unwrap();
    let better = Cause::BetterMaster {
        master: peer,
        priority: 200,
    };
    assert_eq!((m.state(), m.cause()), (State::Backup, better));
    let t = t + secs(4);
    m.handle_timeout(t);
    assert_eq!(
        (m.state(), m.cause()),
        (State::Master, Cause::MasterSilent(peer))
    );

    m.handle_advert(t, &advert(200, 100), peer).unwrap();
    m.handle_advert(t, &advert(0, 100), peer).unwrap();
    let t = t + secs(1);
    m.handle_timeout(t);
    assert_eq!(
        (m.state(), m.cause()),
        (State::Master, Cause::MasterStopped(peer))
    );

    m.handle_advert(t, &advert(200, 100), peer).unwrap();
    m.handle_advert(t, &advert(50, 100), peer).unwrap();
    let t = t + secs(4);
    m.handle_timeout(t);
    let preempted = Cause::Preempted {
        master: peer,
        priority: 50,
    };
    assert_eq!((m.state(), m.cause()), (State::Master, preempted));
    assert_eq!(
        preempted.to_string(),
        "preempted master 10.0.0.3, which has the lower priority 50"
    );

    m.shutdown(t);
    assert_eq!((m.state(), m.cause()), (State::Initialize, Cause::Shutdown));

    let mut owner = machine(config(255));
    owner.startup(t);
    assert_eq!(
        (owner.state(), owner.cause()),
        (State::Master, Cause::Owner)
    );
}
