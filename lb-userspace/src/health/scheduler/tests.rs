use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use super::*;
use crate::health::spec::{CheckError, CheckSpec, ErrorKind, Initial, Probe};

const INTERVAL: Duration = Duration::from_secs(1);
const TIMEOUT: Duration = Duration::from_millis(200);
const GRACE: Duration = Duration::from_millis(50);
const MS: Duration = Duration::from_millis(1);

fn spec(rise: u32, fall: u32, initial: Initial) -> Arc<CheckSpec> {
    Arc::new(CheckSpec {
        interval: INTERVAL,
        timeout: TIMEOUT,
        rise,
        fall,
        initial,
        ..CheckSpec::new(Probe::Tcp)
    })
}

fn target(id: u64) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(10, 0, (id >> 8) as u8, id as u8), 80))
}

fn scheduler(t0: Instant, max_in_flight: usize) -> Scheduler {
    Scheduler::new(
        t0,
        SchedulerConfig {
            max_in_flight,
            timeout_grace: GRACE,
        },
    )
}

fn fail(msg: &str) -> Result<(), CheckError> {
    Err(CheckError::new(ErrorKind::Connect, msg))
}

/// Runs the backend's next check at its due time and reports `result` 1 ms later.
fn check(s: &mut Scheduler, id: BackendId, result: Result<(), CheckError>) -> Option<Transition> {
    let due_at = s.status(id).unwrap().next_check.expect("not running");
    let due = s.poll_due(due_at).expect("due at its next_check");
    assert_eq!(due.ticket.backend(), id);
    s.on_result(due_at + MS, due.ticket, result)
}

fn ok_or_fail(ok: bool) -> Result<(), CheckError> {
    if ok {
        Ok(())
    } else {
        fail("refused")
    }
}

/// Initial state, rise, fall, results, expected transitions.
type Case = (Initial, u32, u32, &'static str, &'static [(usize, State)]);

/// Hand-written sequences: `+` a passed check, `-` a failed one; `expect` lists
/// `(index of the check, new state)` for every transition.
#[test]
fn rise_fall_table() {
    use State::{Down, Up};
    let cases: &[Case] = &[
        // Start up on probation: the first failure is enough, whatever fall is.
        (Initial::Up, 2, 3, "-", &[(0, Down)]),
        (Initial::Up, 2, 3, "-++", &[(0, Down), (2, Up)]),
        // After a first pass, fall counts.
        (Initial::Up, 2, 3, "+--", &[]),
        (Initial::Up, 2, 3, "+---", &[(3, Down)]),
        (Initial::Up, 2, 3, "+--+---", &[(6, Down)]),
        (Initial::Up, 1, 1, "+-+-", &[(1, Down), (2, Up), (3, Down)]),
        // Start down: rise passes in a row.
        (Initial::Down, 2, 3, "+", &[]),
        (Initial::Down, 2, 3, "++", &[(1, Up)]),
        (Initial::Down, 2, 3, "+-+-+", &[]),
        (Initial::Down, 3, 1, "+++-", &[(2, Up), (3, Down)]),
        (Initial::Down, 3, 2, "++-+++--", &[(5, Up), (7, Down)]),
        (Initial::Down, 1, 3, "+---+", &[(0, Up), (3, Down), (4, Up)]),
        // Failures while down and passes while up change nothing.
        (Initial::Down, 2, 2, "----", &[]),
        (Initial::Down, 2, 2, "++++++", &[(1, Up)]),
    ];
    let t0 = Instant::now();
    for &(initial, rise, fall, seq, expect) in cases {
        let mut s = scheduler(t0, 8);
        let id = BackendId(7);
        s.add_backend(t0, id, target(7), spec(rise, fall, initial));
        let got: Vec<(usize, State)> = seq
            .chars()
            .enumerate()
            .filter_map(|(i, c)| check(&mut s, id, ok_or_fail(c == '+')).map(|t| (i, t.to)))
            .collect();
        assert_eq!(got, expect, "{initial:?} rise={rise} fall={fall} {seq}");
    }
}

/// The state a sliding window says the backend is in after each result: down when the
/// last `fall` failed (or the very first failed, on probation), up when the last `rise`
/// passed, else unchanged. Formulated differently from the scheduler's counters on purpose.
fn reference(initial: Initial, rise: u32, fall: u32, seq: &[bool]) -> Vec<State> {
    let (rise, fall) = (rise as usize, fall as usize);
    let mut state = match initial {
        Initial::Up => State::Up,
        Initial::Down => State::Down,
    };
    let mut states = Vec::new();
    for i in 0..seq.len() {
        let window = |n: usize, v: bool| i + 1 >= n && seq[i + 1 - n..=i].iter().all(|&r| r == v);
        if (i == 0 && initial == Initial::Up && !seq[0]) || window(fall, false) {
            state = State::Down;
        } else if window(rise, true) {
            state = State::Up;
        }
        states.push(state);
    }
    states
}

/// Feeds `seq` to a fresh scheduler and checks every step against [`reference`].
fn replay(initial: Initial, rise: u32, fall: u32, seq: &[bool]) {
    let expect = reference(initial, rise, fall, seq);
    let t0 = Instant::now();
    let mut s = scheduler(t0, 1);
    let id = BackendId(1);
    s.add_backend(t0, id, target(1), spec(rise, fall, initial));
    let mut state = s.state(id).unwrap();
    for (i, &ok) in seq.iter().enumerate() {
        let what = format!("{initial:?} rise={rise} fall={fall} {seq:?} at {i}");
        if let Some(t) = check(&mut s, id, ok_or_fail(ok)) {
            assert_eq!(t.from, state, "{what}");
            assert_ne!(t.to, state, "{what}");
            match &t.reason {
                Reason::Passed { successes } => {
                    assert_eq!(t.to, State::Up, "{what}");
                    assert!(*successes >= rise, "{what}");
                }
                Reason::Failed { failures, .. } => {
                    assert_eq!(t.to, State::Down, "{what}");
                    assert!(*failures >= 1, "{what}");
                }
                r => panic!("{what}: unexpected reason {r:?}"),
            }
            state = t.to;
        }
        assert_eq!(state, expect[i], "{what}");
        assert_eq!(s.state(id), Some(state), "{what}");
    }
}

#[test]
fn every_sequence_up_to_8_checks_for_rise_and_fall_1_to_3() {
    let mut sequences = 0;
    for initial in [Initial::Up, Initial::Down] {
        for rise in 1..=3 {
            for fall in 1..=3 {
                for len in 0..=8usize {
                    for bits in 0u32..(1 << len) {
                        let seq: Vec<bool> = (0..len).map(|i| bits & (1 << i) != 0).collect();
                        replay(initial, rise, fall, &seq);
                        sequences += 1;
                    }
                }
            }
        }
    }
    assert_eq!(sequences, 2 * 9 * 511);
}

#[test]
fn transition_carries_the_last_error() {
    let t0 = Instant::now();
    let mut s = scheduler(t0, 8);
    let id = BackendId(1);
    s.add_backend(t0, id, target(1), spec(1, 2, Initial::Down));
    check(&mut s, id, Ok(()));
    assert_eq!(check(&mut s, id, fail("first")), None);
    let t = check(
        &mut s,
        id,
        fail("connect to 10.0.0.1:80: connection refused"),
    )
    .unwrap();
    assert_eq!(
        t.reason,
        Reason::Failed {
            failures: 2,
            error: CheckError::new(
                ErrorKind::Connect,
                "connect to 10.0.0.1:80: connection refused"
            )
        }
    );
    assert_eq!(
        t.to_string(),
        "backend #1 up -> down: 2 check(s) in a row failed, last: connect to 10.0.0.1:80: connection refused"
    );
}

#[test]
fn hung_check_fails_at_timeout_plus_grace_and_its_late_result_is_ignored() {
    let t0 = Instant::now();
    let mut s = scheduler(t0, 8);
    let id = BackendId(3);
    s.add_backend(t0, id, target(3), spec(1, 1, Initial::Up));
    let start = s.status(id).unwrap().next_check.unwrap();
    let due = s.poll_due(start).unwrap();
    let deadline = start + TIMEOUT + GRACE;
    assert!(s.is_running(due.ticket));
    assert_eq!(
        s.poll_timeout(),
        Some(deadline),
        "the deadline comes before the next due time"
    );

    assert!(s.handle_timeout(deadline - MS).is_empty());
    assert_eq!(s.state(id), Some(State::Up));

    let transitions = s.handle_timeout(deadline);
    assert_eq!(transitions.len(), 1);
    let Reason::Failed { failures: 1, error } = &transitions[0].reason else {
        panic!("{:?}", transitions[0]);
    };
    assert_eq!(error.kind, ErrorKind::Timeout);
    assert_eq!(
        error.message,
        "check of 10.0.0.3:80 gave no result within 200ms; abandoned"
    );
    assert!(!s.is_running(due.ticket));
    assert_eq!(s.in_flight(), 0);

    // A result after the deadline does not count, not even a pass.
    assert_eq!(s.on_result(deadline + MS, due.ticket, Ok(())), None);
    let st = s.status(id).unwrap();
    assert_eq!(
        (st.state, st.failures, st.successes, st.checks),
        (State::Down, 1, 0, 1)
    );
    assert_eq!(st.last_failure, Some(deadline));
    // The next check still falls on the grid.
    assert_eq!(st.next_check, Some(start + INTERVAL));
}

#[test]
fn timeout_counts_towards_fall_like_any_failure() {
    let t0 = Instant::now();
    let mut s = scheduler(t0, 8);
    let id = BackendId(4);
    s.add_backend(t0, id, target(4), spec(2, 2, Initial::Down));
    check(&mut s, id, Ok(()));
    check(&mut s, id, Ok(()));
    assert_eq!(s.state(id), Some(State::Up));
    for round in 0..2 {
        let at = s.status(id).unwrap().next_check.unwrap();
        s.poll_due(at).unwrap();
        let transitions = s.handle_timeout(at + TIMEOUT + GRACE);
        assert_eq!(transitions.len(), round, "round {round}");
    }
    assert_eq!(s.state(id), Some(State::Down));
}

#[test]
fn stale_ticket_is_ignored() {
    let t0 = Instant::now();
    let mut s = scheduler(t0, 8);
    let id = BackendId(5);
    s.add_backend(t0, id, target(5), spec(1, 1, Initial::Up));
    let at = s.status(id).unwrap().next_check.unwrap();
    let first = s.poll_due(at).unwrap();
    s.handle_timeout(at + TIMEOUT + GRACE);
    let second = s.poll_due(at + INTERVAL).unwrap();
    assert_ne!(first.ticket, second.ticket);
    // The first check's answer arrives during the second check: it must not be taken for it.
    assert_eq!(s.on_result(at + INTERVAL + MS, first.ticket, Ok(())), None);
    assert!(s.is_running(second.ticket));
    assert_eq!(s.state(id), Some(State::Down));
    let t = s
        .on_result(at + INTERVAL + 2 * MS, second.ticket, Ok(()))
        .unwrap();
    assert_eq!(t.to, State::Up);
}

#[test]
fn removed_backend_frees_its_slot_and_its_result_is_ignored() {
    let t0 = Instant::now();
    let mut s = scheduler(t0, 1);
    let (a, b) = (BackendId(1), BackendId(2));
    s.add_backend(t0, a, target(1), spec(1, 1, Initial::Up));
    s.add_backend(t0, b, target(2), spec(1, 1, Initial::Up));
    let late = t0 + 2 * INTERVAL;
    let first = s.poll_due(late).unwrap();
    assert!(s.poll_due(late).is_none(), "one slot");
    assert!(s.remove_backend(first.ticket.backend()));
    assert!(!s.remove_backend(first.ticket.backend()));
    assert_eq!(s.on_result(late, first.ticket, fail("x")), None);
    let second = s.poll_due(late).unwrap();
    assert_ne!(second.ticket.backend(), first.ticket.backend());
    assert_eq!(s.len(), 1);
    assert_eq!(s.snapshot().len(), 1);
}

#[test]
fn forced_states_win_until_cleared() {
    let t0 = Instant::now();
    let mut s = scheduler(t0, 8);
    let id = BackendId(9);
    s.add_backend(t0, id, target(9), spec(1, 1, Initial::Down));
    check(&mut s, id, Ok(()));
    assert_eq!(s.state(id), Some(State::Up));

    let t = s.force(t0, id, Forced::Drain).unwrap().unwrap();
    assert_eq!(
        (t.from, t.to, t.reason),
        (State::Up, State::Drain, Reason::Forced(Forced::Drain))
    );

    // Health changes under the force are tracked but not visible.
    assert_eq!(check(&mut s, id, fail("down")), None);
    let st = s.status(id).unwrap();
    assert_eq!(
        (st.state, st.health, st.forced),
        (State::Drain, Health::Down, Some(Forced::Drain))
    );

    let t = s.force(t0, id, Forced::Up).unwrap().unwrap();
    assert_eq!((t.from, t.to), (State::Drain, State::Up));
    assert_eq!(check(&mut s, id, fail("still down")), None);
    assert_eq!(s.state(id), Some(State::Up));

    // Forcing what it already is changes nothing.
    assert_eq!(s.force(t0, id, Forced::Up).unwrap(), None);

    let t = s.clear_force(t0 + 5 * INTERVAL, id).unwrap().unwrap();
    assert_eq!(
        (t.from, t.to, t.reason),
        (State::Up, State::Down, Reason::ForceCleared)
    );
    assert_eq!(s.status(id).unwrap().last_change, t0 + 5 * INTERVAL);
    assert_eq!(s.clear_force(t0, id).unwrap(), None);

    // Forced down wins over passing checks.
    s.force(t0, id, Forced::Down).unwrap();
    assert_eq!(check(&mut s, id, Ok(())), None);
    assert_eq!(s.state(id), Some(State::Down));
    assert_eq!(s.status(id).unwrap().health, Health::Up);
    let t = s.clear_force(t0, id).unwrap().unwrap();
    assert_eq!((t.from, t.to), (State::Down, State::Up));

    assert_eq!(
        s.force(t0, BackendId(99), Forced::Down),
        Err(UnknownBackend(BackendId(99)))
    );
    assert_eq!(
        s.clear_force(t0, BackendId(99)),
        Err(UnknownBackend(BackendId(99)))
    );
    assert_eq!(
        UnknownBackend(BackendId(99)).to_string(),
        "backend #99 is not health-checked"
    );
}

#[test]
fn thousand_backends_are_spread_over_the_interval() {
    let t0 = Instant::now();
    let mut s = scheduler(t0, usize::MAX);
    for id in 0..1000 {
        s.add_backend(t0, BackendId(id), target(id), spec(2, 3, Initial::Up));
    }
    let mut buckets = [0u32; 100]; // 10 ms each
    let mut at = t0;
    let mut started = 0;
    while let Some(next) = s.poll_timeout().filter(|&t| t < t0 + INTERVAL) {
        assert!(next >= at);
        at = next;
        while let Some(due) = s.poll_due(at) {
            buckets[((at - t0).as_millis() / 10) as usize] += 1;
            s.on_result(at, due.ticket, Ok(()));
            started += 1;
        }
    }
    assert_eq!(started, 1000, "every backend once in its first interval");
    let (min, max) = (buckets.iter().min().unwrap(), buckets.iter().max().unwrap());
    // Perfectly even would be 10 per bucket.
    assert!(*min >= 8 && *max <= 12, "uneven: {buckets:?}");
}

#[test]
fn phase_depends_only_on_id_and_interval() {
    let t0 = Instant::now();
    let mut a = scheduler(t0, 8);
    let mut b = scheduler(t0, 8);
    a.add_backend(t0, BackendId(42), target(1), spec(1, 1, Initial::Up));
    b.add_backend(t0, BackendId(41), target(2), spec(1, 1, Initial::Up));
    b.add_backend(t0, BackendId(42), target(3), spec(1, 1, Initial::Up));
    let due = |s: &Scheduler| s.status(BackendId(42)).unwrap().next_check.unwrap();
    assert_eq!(due(&a), due(&b));
    assert!(due(&a) < t0 + INTERVAL);
}

#[test]
fn checks_stay_on_their_grid_and_late_starts_do_not_burst() {
    let t0 = Instant::now();
    let mut s = scheduler(t0, 8);
    let id = BackendId(11);
    s.add_backend(t0, id, target(11), spec(1, 1, Initial::Up));
    let first = s.status(id).unwrap().next_check.unwrap();

    // A slow result (150 ms) does not push the next check back.
    let due = s.poll_due(first).unwrap();
    s.on_result(first + 150 * MS, due.ticket, Ok(()));
    assert_eq!(s.status(id).unwrap().next_check, Some(first + INTERVAL));

    // Started 2.5 intervals late: the next check is on the following grid point, once.
    let late = first + INTERVAL + 2 * INTERVAL + INTERVAL / 2;
    let due = s.poll_due(late).unwrap();
    s.on_result(late + MS, due.ticket, Ok(()));
    assert!(s.poll_due(late + MS).is_none(), "no catch-up burst");
    assert_eq!(s.status(id).unwrap().next_check, Some(first + 4 * INTERVAL));
}

#[test]
fn nothing_is_due_before_its_time() {
    let t0 = Instant::now();
    let mut s = scheduler(t0, 8);
    let id = BackendId(12);
    s.add_backend(t0, id, target(12), spec(1, 1, Initial::Up));
    let at = s.status(id).unwrap().next_check.unwrap();
    assert_eq!(s.poll_timeout(), Some(at));
    assert!(s.poll_due(at - MS).is_none());
    assert!(s.poll_due(at).is_some());
}

#[test]
fn in_flight_checks_are_bounded_and_waiting_checks_start_in_due_order() {
    let t0 = Instant::now();
    let mut s = scheduler(t0, 3);
    for id in 0..10 {
        s.add_backend(t0, BackendId(id), target(id), spec(1, 1, Initial::Up));
    }
    let mut by_due: Vec<(Instant, BackendId)> = s
        .snapshot()
        .iter()
        .map(|st| (st.next_check.unwrap(), st.id))
        .collect();
    by_due.sort();

    let now = t0 + INTERVAL; // everything is due
    let running: Vec<Due> = std::iter::from_fn(|| s.poll_due(now)).collect();
    assert_eq!(running.len(), 3);
    assert_eq!(s.in_flight(), 3);
    let ids: Vec<BackendId> = running.iter().map(|d| d.ticket.backend()).collect();
    assert_eq!(
        ids,
        by_due[..3].iter().map(|&(_, id)| id).collect::<Vec<_>>()
    );
    // Full: wake for the first deadline, not for checks that cannot start.
    assert_eq!(s.poll_timeout(), Some(now + TIMEOUT + GRACE));

    // A result frees one slot for the next in due order.
    s.on_result(now + MS, running[1].ticket, Ok(()));
    let next = s.poll_due(now + MS).unwrap();
    assert_eq!(next.ticket.backend(), by_due[3].1);
    assert!(s.poll_due(now + MS).is_none());

    // So does a timeout.
    let deadline = now + TIMEOUT + GRACE;
    assert_eq!(
        s.handle_timeout(deadline).len(),
        2,
        "two probationers fall at once"
    );
    let more: Vec<Due> = std::iter::from_fn(|| s.poll_due(deadline)).collect();
    assert_eq!(more.len(), 2);
    assert_eq!(s.in_flight(), 3);
}

#[test]
fn re_adding_keeps_state_and_moves_to_the_new_grid() {
    let t0 = Instant::now();
    let mut s = scheduler(t0, 8);
    let id = BackendId(13);
    assert!(s.add_backend(t0, id, target(13), spec(1, 1, Initial::Down)));
    check(&mut s, id, Ok(()));
    assert_eq!(s.state(id), Some(State::Up));
    let now = s.status(id).unwrap().next_check.unwrap() - MS;
    let faster = Arc::new(CheckSpec {
        interval: INTERVAL / 10,
        ..(*spec(1, 1, Initial::Down)).clone()
    });
    assert!(!s.add_backend(now, id, target(14), faster));
    let st = s.status(id).unwrap();
    assert_eq!((st.state, st.target, st.checks), (State::Up, target(14), 1));
    let next = st.next_check.unwrap();
    assert!(
        next >= now && next < now + INTERVAL / 10,
        "on the 100 ms grid"
    );
}

#[test]
fn snapshot_reports_errors_and_times() {
    let t0 = Instant::now();
    let mut s = scheduler(t0, 8);
    let id = BackendId(21);
    s.add_backend(t0, id, target(21), spec(2, 3, Initial::Up));
    let st = s.status(id).unwrap();
    assert_eq!(
        (st.state, st.last_change, st.last_result.clone(), st.checks),
        (State::Up, t0, None, 0)
    );

    let at = st.next_check.unwrap();
    let due = s.poll_due(at).unwrap();
    assert!(s.status(id).unwrap().in_flight);
    assert_eq!(s.status(id).unwrap().next_check, None);
    s.on_result(at + MS, due.ticket, fail("HTTP status 503, expected 200"));
    check(&mut s, id, Ok(()));

    let snap = s.snapshot();
    assert_eq!(snap.len(), 1);
    let st = &snap[0];
    assert_eq!(st.state, State::Down);
    assert_eq!(st.last_result, Some(Ok(())));
    assert_eq!(
        st.last_error.as_ref().unwrap().message,
        "HTTP status 503, expected 200"
    );
    assert_eq!(st.last_failure, Some(at + MS));
    assert_eq!(st.last_change, at + MS);
    assert_eq!((st.successes, st.failures, st.checks), (1, 0, 2));
}
