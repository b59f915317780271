//! The driver: owns a [`Scheduler`], starts the checks it says are due (at most
//! `max_in_flight` at once), feeds their results back, and sends every [`Transition`] on a
//! channel the agent reads. The agent talks to it through a cloneable [`HealthHandle`]; the
//! runner stops when the last handle is dropped.
//!
//! Checking a thousand backends every second must cost little more than the connects
//! themselves, so the checks are futures polled inside the runner's own task (no task, no
//! join handle per check), and the runner wakes once per tick at most: checks that fall due
//! within one tick start together (see [`tick_for`]).

use std::{
    collections::HashMap,
    fmt,
    net::SocketAddr,
    panic::AssertUnwindSafe,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::{
    future::{AbortHandle, Abortable, BoxFuture},
    stream::FuturesUnordered,
    FutureExt, StreamExt,
};
use prometheus_client::metrics::histogram::exponential_buckets;
use tokio::sync::{mpsc, oneshot};

use super::{
    check,
    scheduler::{
        BackendId, BackendStatus, Forced, Scheduler, SchedulerConfig, Ticket, Transition,
        UnknownBackend,
    },
    spec::{CheckError, CheckSpec, ErrorKind},
};
use crate::metrics::Durations;

#[cfg(test)]
mod tests;

/// Runs one check. The default is [`check::run`]; tests put in checks that hang or count.
pub type Checker = Arc<
    dyn Fn(Arc<CheckSpec>, SocketAddr) -> BoxFuture<'static, Result<(), CheckError>> + Send + Sync,
>;

/// Transitions buffered for a slow reader before the runner waits for it.
const TRANSITION_BUFFER: usize = 1024;

/// The coarsest tick: checks of 1 s or more start at most 50 ms late.
pub const MAX_TICK: Duration = Duration::from_millis(50);

/// The runner's clock granularity for checks every `interval`: a check starts, or is failed
/// at its deadline, at most a twentieth of its interval late (at least 1 ms, at most
/// [`MAX_TICK`]). Waking once per tick instead of once per check is what keeps a thousand
/// backends checked every second as cheap as their bare connects: the wake-ups, and the
/// kernel's work around each, are shared by every check of a tick. The runner uses the tick
/// of the shortest interval it was given.
pub fn tick_for(interval: Duration) -> Duration {
    (interval / 20).clamp(Duration::from_millis(1), MAX_TICK)
}

/// A finished check: its result and how long it took.
type CheckResult = (Ticket, Result<(), CheckError>, Duration);

/// `at` rounded up to the next tick after `origin`.
fn on_tick(origin: Instant, at: Instant, tick: Duration) -> Instant {
    let since = at.saturating_duration_since(origin).as_nanos();
    let tick = tick.as_nanos();
    let ticks = since.div_ceil(tick);
    origin + Duration::from_nanos(u64::try_from(ticks * tick).unwrap_or(u64::MAX))
}

pub struct HealthRunner {
    scheduler: Scheduler,
    commands: mpsc::UnboundedReceiver<Command>,
    transitions: mpsc::Sender<Transition>,
    checker: Checker,
    /// See [`tick_for`].
    tick: Duration,
    durations: CheckDurations,
}

/// Talks to a running [`HealthRunner`]. Changes are applied in the order sent.
#[derive(Clone, Debug)]
pub struct HealthHandle {
    commands: mpsc::UnboundedSender<Command>,
    durations: CheckDurations,
}

/// How long each backend's checks took (those that returned a result; a check the scheduler
/// gave up on is not timed). Shared with the metrics endpoint, which reads it on every
/// scrape: the runner's loop is not interrupted for it.
pub type CheckDurations = Arc<Mutex<HashMap<BackendId, Durations>>>;

/// Buckets of the check-duration histograms, in seconds: 0.5 ms to about 8 s.
fn duration_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.0005, 2.0, 15)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandleError {
    UnknownBackend(BackendId),
    /// The runner has stopped.
    Stopped,
}

impl fmt::Display for HandleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandleError::UnknownBackend(id) => UnknownBackend(*id).fmt(f),
            HandleError::Stopped => f.write_str("the health checker has stopped"),
        }
    }
}

impl std::error::Error for HandleError {}

enum Command {
    Add(BackendId, SocketAddr, Arc<CheckSpec>),
    Remove(BackendId),
    Force(
        BackendId,
        Option<Forced>,
        oneshot::Sender<Result<(), UnknownBackend>>,
    ),
    Snapshot(oneshot::Sender<Vec<BackendStatus>>),
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Add(id, target, _) => write!(f, "Add({id}, {target})"),
            Command::Remove(id) => write!(f, "Remove({id})"),
            Command::Force(id, forced, _) => write!(f, "Force({id}, {forced:?})"),
            Command::Snapshot(_) => f.write_str("Snapshot"),
        }
    }
}

impl HealthRunner {
    /// A runner with the real checkers; run it with `tokio::spawn(runner.run())`.
    pub fn new(
        config: SchedulerConfig,
    ) -> (HealthRunner, HealthHandle, mpsc::Receiver<Transition>) {
        HealthRunner::with_checker(
            config,
            Arc::new(|spec, target| async move { check::run(&spec, target).await }.boxed()),
        )
    }

    pub fn with_checker(
        config: SchedulerConfig,
        checker: Checker,
    ) -> (HealthRunner, HealthHandle, mpsc::Receiver<Transition>) {
        let (command_tx, commands) = mpsc::unbounded_channel();
        let (transitions, transition_rx) = mpsc::channel(TRANSITION_BUFFER);
        let durations = CheckDurations::default();
        let runner = HealthRunner {
            scheduler: Scheduler::new(Instant::now(), config),
            commands,
            transitions,
            checker,
            tick: MAX_TICK,
            durations: durations.clone(),
        };
        (
            runner,
            HealthHandle {
                commands: command_tx,
                durations,
            },
            transition_rx,
        )
    }

    pub async fn run(mut self) {
        let origin = Instant::now();
        let mut checks: FuturesUnordered<Abortable<BoxFuture<'static, CheckResult>>> =
            FuturesUnordered::new();
        let mut aborts: HashMap<Ticket, AbortHandle> = HashMap::new();
        let sleep = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(sleep);
        let mut armed: Option<Instant> = None;
        loop {
            let now = Instant::now();
            for transition in self.scheduler.handle_timeout(now) {
                self.emit(transition).await;
            }
            // Checks the scheduler gave up on (deadline passed, backend removed) hold
            // sockets or processes: stop them.
            if aborts.len() > self.scheduler.in_flight() {
                aborts.retain(|&ticket, abort| {
                    let keep = self.scheduler.is_running(ticket);
                    if !keep {
                        abort.abort();
                    }
                    keep
                });
            }
            while let Some(due) = self.scheduler.poll_due(now) {
                let ticket = due.ticket;
                let check = AssertUnwindSafe((self.checker)(due.spec, due.target)).catch_unwind();
                let timed = async move {
                    let started = Instant::now();
                    let result = check.await.unwrap_or_else(|_| {
                        Err(CheckError::new(
                            ErrorKind::Local,
                            "the checker panicked (a bug in lbd)",
                        ))
                    });
                    (ticket, result, started.elapsed())
                };
                let (abort, registration) = AbortHandle::new_pair();
                checks.push(Abortable::new(timed.boxed(), registration));
                aborts.insert(ticket, abort);
            }

            let wake = self
                .scheduler
                .poll_timeout()
                .map(|t| on_tick(origin, t, self.tick));
            if let Some(wake) = wake {
                if armed != Some(wake) {
                    sleep.as_mut().reset(tokio::time::Instant::from_std(wake));
                    armed = Some(wake);
                }
            }
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(command) => self.apply(command).await,
                    None => break,
                },
                Some(first) = checks.next(), if !checks.is_empty() => {
                    // Results that are ready together are counted together.
                    let mut finished = vec![first];
                    while let Some(Some(more)) = checks.next().now_or_never() {
                        finished.push(more);
                    }
                    let now = Instant::now();
                    // Aborted checks were already given up on.
                    for (ticket, result, took) in finished.into_iter().flatten() {
                        aborts.remove(&ticket);
                        // Only results the scheduler still waits for: one for a removed
                        // backend would bring its histogram back. Recorded after the result
                        // is counted, so a histogram never holds more than `checks`.
                        let awaited = self.scheduler.is_running(ticket);
                        let transition = self.scheduler.on_result(now, ticket, result);
                        if awaited {
                            self.observe(ticket.backend(), took);
                        }
                        if let Some(transition) = transition {
                            self.emit(transition).await;
                        }
                    }
                }
                () = &mut sleep, if wake.is_some() => { armed = None; }
            }
        }
    }

    async fn apply(&mut self, command: Command) {
        let now = Instant::now();
        match command {
            Command::Add(id, target, spec) => {
                self.tick = self.tick.min(tick_for(spec.interval));
                self.scheduler.add_backend(now, id, target, spec);
            }
            Command::Remove(id) => {
                self.scheduler.remove_backend(id);
                self.lock_durations().remove(&id);
            }
            Command::Force(id, forced, reply) => {
                let result = match forced {
                    Some(forced) => self.scheduler.force(now, id, forced),
                    None => self.scheduler.clear_force(now, id),
                };
                let _ = reply.send(result.as_ref().map(drop).map_err(|e| *e));
                if let Ok(Some(transition)) = result {
                    self.emit(transition).await;
                }
            }
            Command::Snapshot(reply) => {
                let _ = reply.send(self.scheduler.snapshot());
            }
        }
    }

    fn observe(&self, id: BackendId, took: Duration) {
        self.lock_durations()
            .entry(id)
            .or_insert_with(|| Durations::new(duration_buckets()))
            .observe(took);
    }

    fn lock_durations(&self) -> std::sync::MutexGuard<'_, HashMap<BackendId, Durations>> {
        // Nothing can panic while holding it, but a poisoned map of histograms is still usable.
        self.durations.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn emit(&self, transition: Transition) {
        // Nobody listening is no reason to stop checking: the state still shows in snapshots.
        let _ = self.transitions.send(transition).await;
    }
}

impl HealthHandle {
    /// Starts checking a backend, or updates its target and spec (its state is kept).
    pub fn add_backend(
        &self,
        id: BackendId,
        target: SocketAddr,
        spec: Arc<CheckSpec>,
    ) -> Result<(), HandleError> {
        self.send(Command::Add(id, target, spec))
    }

    pub fn remove_backend(&self, id: BackendId) -> Result<(), HandleError> {
        self.send(Command::Remove(id))
    }

    /// Imposes a state until [`clear_force`](Self::clear_force); the resulting transition,
    /// if any, comes on the transition channel like any other.
    pub async fn force(&self, id: BackendId, forced: Forced) -> Result<(), HandleError> {
        self.force_or_clear(id, Some(forced)).await
    }

    pub async fn clear_force(&self, id: BackendId) -> Result<(), HandleError> {
        self.force_or_clear(id, None).await
    }

    pub async fn snapshot(&self) -> Result<Vec<BackendStatus>, HandleError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Snapshot(tx))?;
        rx.await.map_err(|_| HandleError::Stopped)
    }

    async fn force_or_clear(
        &self,
        id: BackendId,
        forced: Option<Forced>,
    ) -> Result<(), HandleError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Force(id, forced, tx))?;
        rx.await
            .map_err(|_| HandleError::Stopped)?
            .map_err(|UnknownBackend(id)| HandleError::UnknownBackend(id))
    }

    /// Each checked backend's check durations so far (a copy).
    pub fn check_durations(&self) -> HashMap<BackendId, Durations> {
        self.durations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn send(&self, command: Command) -> Result<(), HandleError> {
        self.commands
            .send(command)
            .map_err(|_| HandleError::Stopped)
    }
}
