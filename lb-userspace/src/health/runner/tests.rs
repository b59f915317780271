//! The runner with stand-in checkers; the real ones are proven against real servers in
//! `tests/health_checks.rs`.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use futures::FutureExt;
use tokio::time::timeout;

use super::*;
use crate::health::{
    scheduler::{Reason, State},
    spec::{Initial, Probe},
};

fn spec(
    interval_ms: u64,
    timeout_ms: u64,
    rise: u32,
    fall: u32,
    initial: Initial,
) -> Arc<CheckSpec> {
    Arc::new(CheckSpec {
        interval: Duration::from_millis(interval_ms),
        timeout: Duration::from_millis(timeout_ms),
        rise,
        fall,
        initial,
        ..CheckSpec::new(Probe::Tcp)
    })
}

fn target(n: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 10_000 + n))
}

const WAIT: Duration = Duration::from_secs(5);

/// Sets its flag when dropped, i.e. when the check holding it was aborted.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn hung_check_is_failed_by_the_scheduler_and_aborted() {
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = dropped.clone();
    let checker: Checker = Arc::new(move |_, _| {
        let guard = DropFlag(flag.clone());
        async move {
            let _guard = guard;
            futures::future::pending::<()>().await;
            Ok(())
        }
        .boxed()
    });
    let config = SchedulerConfig {
        max_in_flight: 4,
        timeout_grace: Duration::from_millis(20),
    };
    let (runner, handle, mut transitions) = HealthRunner::with_checker(config, checker);
    let runner = tokio::spawn(runner.run());
    handle
        .add_backend(BackendId(1), target(1), spec(50, 30, 1, 1, Initial::Up))
        .unwrap();
    let t = timeout(WAIT, transitions.recv()).await.unwrap().unwrap();
    assert_eq!(
        (t.backend, t.from, t.to),
        (BackendId(1), State::Up, State::Down)
    );
    let Reason::Failed { error, .. } = &t.reason else {
        panic!("{t:?}")
    };
    assert_eq!(error.kind, ErrorKind::Timeout);
    assert_eq!(
        error.message,
        "check of 127.0.0.1:10001 gave no result within 30ms; abandoned"
    );
    // The abort reaches the task at its next poll; give it a moment.
    for _ in 0..100 {
        if dropped.load(Ordering::SeqCst) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        dropped.load(Ordering::SeqCst),
        "the hung check was not aborted"
    );

    drop(handle);
    timeout(WAIT, runner)
        .await
        .expect("runner stops when the handles are gone")
        .unwrap();
}

#[tokio::test]
async fn in_flight_checks_never_exceed_the_bound() {
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let (r, p, d) = (running.clone(), peak.clone(), done.clone());
    let checker: Checker = Arc::new(move |_, _| {
        let (r, p, d) = (r.clone(), p.clone(), d.clone());
        async move {
            let now = r.fetch_add(1, Ordering::SeqCst) + 1;
            p.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(15)).await;
            r.fetch_sub(1, Ordering::SeqCst);
            d.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        .boxed()
    });
    let config = SchedulerConfig {
        max_in_flight: 3,
        timeout_grace: Duration::from_millis(100),
    };
    let (runner, handle, _transitions) = HealthRunner::with_checker(config, checker);
    let runner = tokio::spawn(runner.run());
    // 20 backends every 20 ms, each check 15 ms: they would need ~15 slots; 3 are allowed.
    for n in 0..20 {
        handle
            .add_backend(
                BackendId(n),
                target(n as u16),
                spec(20, 18, 1, 1, Initial::Up),
            )
            .unwrap();
    }
    timeout(WAIT, async {
        while done.load(Ordering::SeqCst) < 40 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("checks keep completing");
    assert_eq!(peak.load(Ordering::SeqCst), 3);
    let snapshot = handle.snapshot().await.unwrap();
    assert_eq!(snapshot.len(), 20);
    assert!(
        snapshot.iter().all(|s| s.checks >= 1),
        "every backend got its turn"
    );
    drop(handle);
    timeout(WAIT, runner).await.unwrap().unwrap();
}

#[tokio::test]
async fn operator_forces_come_back_as_transitions() {
    let checker: Checker = Arc::new(|_, _| async { Ok(()) }.boxed());
    let (runner, handle, mut transitions) =
        HealthRunner::with_checker(SchedulerConfig::default(), checker);
    tokio::spawn(runner.run());
    let id = BackendId(7);
    handle
        .add_backend(id, target(7), spec(20, 10, 1, 1, Initial::Down))
        .unwrap();
    let t = timeout(WAIT, transitions.recv()).await.unwrap().unwrap();
    assert_eq!(
        (t.to, t.reason),
        (State::Up, Reason::Passed { successes: 1 })
    );

    handle.force(id, Forced::Drain).await.unwrap();
    let t = timeout(WAIT, transitions.recv()).await.unwrap().unwrap();
    assert_eq!(
        (t.from, t.to, t.reason),
        (State::Up, State::Drain, Reason::Forced(Forced::Drain))
    );
    let status = handle.snapshot().await.unwrap().remove(0);
    assert_eq!(
        (status.state, status.forced),
        (State::Drain, Some(Forced::Drain))
    );

    handle.clear_force(id).await.unwrap();
    let t = timeout(WAIT, transitions.recv()).await.unwrap().unwrap();
    assert_eq!((t.to, t.reason), (State::Up, Reason::ForceCleared));

    assert_eq!(
        handle.force(BackendId(8), Forced::Down).await,
        Err(HandleError::UnknownBackend(BackendId(8)))
    );
    handle.remove_backend(id).unwrap();
    assert!(handle.snapshot().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_panicking_checker_fails_the_check() {
    let checker: Checker = Arc::new(|_, _| async { panic!("boom") }.boxed());
    let (runner, handle, mut transitions) =
        HealthRunner::with_checker(SchedulerConfig::default(), checker);
    tokio::spawn(runner.run());
    handle
        .add_backend(BackendId(1), target(1), spec(20, 10, 1, 1, Initial::Up))
        .unwrap();
    let t = timeout(WAIT, transitions.recv()).await.unwrap().unwrap();
    let Reason::Failed { error, .. } = t.reason else {
        panic!()
    };
    assert_eq!(error.message, "the checker panicked (a bug in lbd)");
}

#[test]
fn ticks_are_a_twentieth_of_the_interval_within_bounds() {
    let ms = Duration::from_millis;
    assert_eq!(tick_for(ms(10)), ms(1));
    assert_eq!(tick_for(ms(100)), ms(5));
    assert_eq!(tick_for(ms(1000)), ms(50));
    assert_eq!(tick_for(ms(60_000)), MAX_TICK);
    let origin = Instant::now();
    assert_eq!(on_tick(origin, origin, ms(5)), origin);
    assert_eq!(on_tick(origin, origin + ms(1), ms(5)), origin + ms(5));
    assert_eq!(on_tick(origin, origin + ms(5), ms(5)), origin + ms(5));
    assert_eq!(on_tick(origin, origin + ms(11), ms(5)), origin + ms(15));
}
