//! The health-check scheduler, without IO: it decides when each backend is checked and what
//! the results mean, and is told the time rather than reading a clock, so every rise/fall
//! sequence, timeout and overload can be replayed in a unit test.
//!
//! The loop that drives it (see [`super::runner`]) is:
//!
//! ```text
//! handle_timeout(now)            checks past their deadline fail; transitions come back
//! while let Some(due) = poll_due(now) { start the check; later: on_result(now, due.ticket, result) }
//! sleep until poll_timeout()     or until a result or a command arrives
//! ```
//!
//! Timing. Each backend's checks fall on a fixed grid, `epoch + phase + k × interval`, where
//! `phase` is derived from the backend id (Fibonacci hashing: consecutive ids land as far
//! apart as possible), so a thousand backends with a 1 s interval are checked about one per
//! millisecond instead of all at once, and the grid stays put however long checks take.
//! A check that starts late (all check slots were busy) is followed by the next grid point,
//! not by a burst of catch-up checks.
//!
//! Concurrency. At most [`SchedulerConfig::max_in_flight`] checks run at once; further due
//! checks wait in due-time order.
//!
//! Timeouts. The checkers enforce the spec's timeout themselves, with a precise message; the
//! scheduler also gives every started check a deadline (`timeout + timeout_grace`) and fails
//! it itself when no result came, so a hung checker cannot freeze a backend's state or hold
//! a check slot. A result that comes after that is ignored.

use std::{
    collections::{BTreeSet, HashMap},
    fmt,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use super::spec::{format_duration, CheckError, CheckSpec, ErrorKind, Initial};

#[cfg(test)]
mod tests;

/// Names a checked backend. The agent assigns them; the scheduler only needs them unique.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackendId(pub u64);

impl fmt::Display for BackendId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Names one started check, so a result is matched to the check it answers and a result
/// for a check that was already timed out, or whose backend was removed, is ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ticket {
    backend: BackendId,
    seq: u64,
}

impl Ticket {
    pub fn backend(&self) -> BackendId {
        self.backend
    }
}

/// A check to start now.
#[derive(Clone, Debug)]
pub struct Due {
    pub ticket: Ticket,
    /// The backend's service address; the spec's `port` overrides its port.
    pub target: SocketAddr,
    pub spec: Arc<CheckSpec>,
}

/// What the checks say.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Health {
    Up,
    Down,
}

/// What an operator imposed; wins over [`Health`] until cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Forced {
    Up,
    Down,
    /// No new flows; existing flows stay.
    Drain,
}

/// What the data plane should do with a backend: the forced state if there is one, else
/// the health.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    Up,
    Down,
    Drain,
}

impl From<Health> for State {
    fn from(h: Health) -> State {
        match h {
            Health::Up => State::Up,
            Health::Down => State::Down,
        }
    }
}

impl From<Forced> for State {
    fn from(f: Forced) -> State {
        match f {
            Forced::Up => State::Up,
            Forced::Down => State::Down,
            Forced::Drain => State::Drain,
        }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        State::from(*self).fmt(f)
    }
}

impl fmt::Display for Forced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        State::from(*self).fmt(f)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Up => "up",
            State::Down => "down",
            State::Drain => "drain",
        })
    }
}

/// A change of a backend's [`State`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub backend: BackendId,
    pub from: State,
    pub to: State,
    pub reason: Reason,
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "backend {} {} -> {}: {}",
            self.backend, self.from, self.to, self.reason
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// `rise` checks in a row passed.
    Passed {
        successes: u32,
    },
    /// `fall` checks in a row failed (or the first check of a backend that started up on
    /// probation); the last error.
    Failed {
        failures: u32,
        error: CheckError,
    },
    Forced(Forced),
    /// The operator cleared a forced state; the backend returns to its health.
    ForceCleared,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Passed { successes } => write!(f, "{successes} check(s) in a row passed"),
            Reason::Failed { failures, error } => {
                write!(f, "{failures} check(s) in a row failed, last: {error}")
            }
            Reason::Forced(forced) => write!(f, "forced {forced} by the operator"),
            Reason::ForceCleared => f.write_str("forced state cleared by the operator"),
        }
    }
}

/// A backend's state for display (`lbctl`, logs, metrics).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendStatus {
    pub id: BackendId,
    pub target: SocketAddr,
    pub state: State,
    pub health: Health,
    pub forced: Option<Forced>,
    /// Consecutive passed checks (0 after a failure).
    pub successes: u32,
    /// Consecutive failed checks (0 after a pass).
    pub failures: u32,
    /// Checks completed (including timed out) since the backend was added.
    pub checks: u64,
    pub last_result: Option<Result<(), CheckError>>,
    /// The most recent error, kept after later checks pass.
    pub last_error: Option<CheckError>,
    pub last_failure: Option<Instant>,
    /// When `state` last changed; when the backend was added if it never did.
    pub last_change: Instant,
    pub in_flight: bool,
    /// When the next check is due; `None` while one runs.
    pub next_check: Option<Instant>,
}

/// Settings of the scheduler as a whole; each backend's timing comes from its [`CheckSpec`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Checks running at once, at most (default 128). Bounds sockets and processes when
    /// thousands of backends are checked, or when many hang at once.
    pub max_in_flight: usize,
    /// Added to a check's timeout before the scheduler fails it itself (default 100 ms), so
    /// a checker that enforces the timeout gets to report its more precise error first.
    pub timeout_grace: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> SchedulerConfig {
        SchedulerConfig {
            max_in_flight: 128,
            timeout_grace: Duration::from_millis(100),
        }
    }
}

/// The backend id is not (or no longer) checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownBackend(pub BackendId);

impl fmt::Display for UnknownBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "backend {} is not health-checked", self.0)
    }
}

impl std::error::Error for UnknownBackend {}

#[derive(Debug)]
struct Entry {
    target: SocketAddr,
    spec: Arc<CheckSpec>,
    /// This backend's offset on the grid, below its interval.
    phase: Duration,
    /// Valid while queued, i.e. while no check runs.
    next_due: Instant,
    in_flight: Option<InFlight>,
    health: Health,
    /// Up on probation: the next failure takes it down whatever `fall` is.
    probation: bool,
    forced: Option<Forced>,
    successes: u32,
    failures: u32,
    checks: u64,
    last_result: Option<Result<(), CheckError>>,
    last_error: Option<CheckError>,
    last_failure: Option<Instant>,
    last_change: Instant,
}

#[derive(Clone, Copy, Debug)]
struct InFlight {
    seq: u64,
    deadline: Instant,
}

impl Entry {
    fn state(&self) -> State {
        match self.forced {
            Some(forced) => forced.into(),
            None => self.health.into(),
        }
    }

    fn interval(&self) -> Duration {
        effective_interval(&self.spec)
    }

    fn base(&self, epoch: Instant) -> Instant {
        epoch + self.phase
    }
}

/// The sans-IO health-check scheduler. See the module documentation.
#[derive(Debug)]
pub struct Scheduler {
    config: SchedulerConfig,
    /// Origin of every backend's grid.
    epoch: Instant,
    backends: HashMap<BackendId, Entry>,
    /// Backends waiting for their next check, by due time.
    queue: BTreeSet<(Instant, BackendId)>,
    /// Backends with a check running, by deadline.
    running: BTreeSet<(Instant, BackendId)>,
    next_seq: u64,
}

impl Scheduler {
    pub fn new(now: Instant, mut config: SchedulerConfig) -> Scheduler {
        // Zero would never start a check.
        config.max_in_flight = config.max_in_flight.max(1);
        Scheduler {
            config,
            epoch: now,
            backends: HashMap::new(),
            queue: BTreeSet::new(),
            running: BTreeSet::new(),
            next_seq: 0,
        }
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// Starts checking a backend; its first check falls on its grid point at or after `now`.
    ///
    /// For a backend already checked, replaces its target and spec and keeps its state and
    /// counters (a changed interval or threshold does not make what the checks said untrue);
    /// a running check finishes and counts. Returns whether the backend is new.
    pub fn add_backend(
        &mut self,
        now: Instant,
        id: BackendId,
        target: SocketAddr,
        spec: Arc<CheckSpec>,
    ) -> bool {
        if let Some(entry) = self.backends.get_mut(&id) {
            let old_interval = entry.interval();
            entry.target = target;
            entry.spec = spec;
            if entry.interval() != old_interval {
                entry.phase = phase(id, entry.interval());
                if entry.in_flight.is_none() {
                    self.queue.remove(&(entry.next_due, id));
                    entry.next_due =
                        slot_at_or_after(entry.base(self.epoch), entry.interval(), now);
                    self.queue.insert((entry.next_due, id));
                }
            }
            return false;
        }
        let interval = effective_interval(&spec);
        let phase = phase(id, interval);
        let next_due = slot_at_or_after(self.epoch + phase, interval, now);
        let (health, probation) = match spec.initial {
            Initial::Up => (Health::Up, true),
            Initial::Down => (Health::Down, false),
        };
        self.backends.insert(
            id,
            Entry {
                target,
                spec,
                phase,
                next_due,
                in_flight: None,
                health,
                probation,
                forced: None,
                successes: 0,
                failures: 0,
                checks: 0,
                last_result: None,
                last_error: None,
                last_failure: None,
                last_change: now,
            },
        );
        self.queue.insert((next_due, id));
        true
    }

    /// Stops checking a backend; a result of its running check will be ignored. Returns
    /// whether it was checked.
    pub fn remove_backend(&mut self, id: BackendId) -> bool {
        let Some(entry) = self.backends.remove(&id) else {
            return false;
        };
        match entry.in_flight {
            Some(f) => self.running.remove(&(f.deadline, id)),
            None => self.queue.remove(&(entry.next_due, id)),
        };
        true
    }

    /// The next check to start now, if one is due and a check slot is free. Call until
    /// `None`.
    pub fn poll_due(&mut self, now: Instant) -> Option<Due> {
        if self.running.len() >= self.config.max_in_flight {
            return None;
        }
        let &(due, id) = self.queue.first()?;
        if due > now {
            return None;
        }
        self.queue.pop_first();
        let epoch = self.epoch;
        let entry = self.backends.get_mut(&id).expect("queued backends exist");
        let seq = self.next_seq;
        self.next_seq += 1;
        let deadline = now + entry.spec.timeout + self.config.timeout_grace;
        entry.in_flight = Some(InFlight { seq, deadline });
        entry.next_due = slot_after(entry.base(epoch), entry.interval(), now);
        self.running.insert((deadline, id));
        Some(Due {
            ticket: Ticket { backend: id, seq },
            target: entry.target,
            spec: entry.spec.clone(),
        })
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) and
    /// [`poll_due`](Self::poll_due) next, unless a result or a command comes first. Due
    /// checks that wait for a free slot do not count: they cannot start before a result or
    /// a deadline frees one.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let deadline = self.running.first().map(|&(t, _)| t);
        let due = if self.running.len() < self.config.max_in_flight {
            self.queue.first().map(|&(t, _)| t)
        } else {
            None
        };
        match (deadline, due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Fails every running check whose deadline has passed; returns the transitions that
    /// follow, in deadline order.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Transition> {
        let mut transitions = Vec::new();
        while let Some(&(deadline, id)) = self.running.first() {
            if deadline > now {
                break;
            }
            self.running.pop_first();
            let entry = self.backends.get_mut(&id).expect("running backends exist");
            entry.in_flight = None;
            self.queue.insert((entry.next_due, id));
            let error = CheckError::new(
                ErrorKind::Timeout,
                format!(
                    "check of {} gave no result within {}; abandoned",
                    entry.target,
                    format_duration(entry.spec.timeout)
                ),
            );
            transitions.extend(record(entry, id, now, Err(error)));
        }
        transitions
    }

    /// Counts the result of a started check. Returns the transition it causes, if any.
    /// Results for checks that timed out, or whose backend was removed, are ignored.
    pub fn on_result(
        &mut self,
        now: Instant,
        ticket: Ticket,
        result: Result<(), CheckError>,
    ) -> Option<Transition> {
        let id = ticket.backend;
        let entry = self.backends.get_mut(&id)?;
        let running = entry.in_flight.filter(|f| f.seq == ticket.seq)?;
        self.running.remove(&(running.deadline, id));
        entry.in_flight = None;
        self.queue.insert((entry.next_due, id));
        record(entry, id, now, result)
    }

    /// Whether this check is still awaited; the driver aborts checks that are not.
    pub fn is_running(&self, ticket: Ticket) -> bool {
        self.backends
            .get(&ticket.backend)
            .and_then(|e| e.in_flight)
            .is_some_and(|f| f.seq == ticket.seq)
    }

    /// Imposes a state until [`clear_force`](Self::clear_force). Checks go on, so the
    /// backend's health is known when the force is lifted.
    pub fn force(
        &mut self,
        now: Instant,
        id: BackendId,
        forced: Forced,
    ) -> Result<Option<Transition>, UnknownBackend> {
        let entry = self.backends.get_mut(&id).ok_or(UnknownBackend(id))?;
        Ok(set_forced(
            entry,
            id,
            now,
            Some(forced),
            Reason::Forced(forced),
        ))
    }

    /// Returns the backend to what its checks say.
    pub fn clear_force(
        &mut self,
        now: Instant,
        id: BackendId,
    ) -> Result<Option<Transition>, UnknownBackend> {
        let entry = self.backends.get_mut(&id).ok_or(UnknownBackend(id))?;
        Ok(set_forced(entry, id, now, None, Reason::ForceCleared))
    }

    pub fn state(&self, id: BackendId) -> Option<State> {
        self.backends.get(&id).map(Entry::state)
    }

    pub fn status(&self, id: BackendId) -> Option<BackendStatus> {
        self.backends.get(&id).map(|e| status(id, e))
    }

    /// Every backend, by id.
    pub fn snapshot(&self) -> Vec<BackendStatus> {
        let mut all: Vec<BackendStatus> =
            self.backends.iter().map(|(&id, e)| status(id, e)).collect();
        all.sort_by_key(|s| s.id);
        all
    }

    pub fn len(&self) -> usize {
        self.backends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.backends.is_empty()
    }

    /// Checks started and not yet answered or timed out.
    pub fn in_flight(&self) -> usize {
        self.running.len()
    }
}

fn status(id: BackendId, e: &Entry) -> BackendStatus {
    BackendStatus {
        id,
        target: e.target,
        state: e.state(),
        health: e.health,
        forced: e.forced,
        successes: e.successes,
        failures: e.failures,
        checks: e.checks,
        last_result: e.last_result.clone(),
        last_error: e.last_error.clone(),
        last_failure: e.last_failure,
        last_change: e.last_change,
        in_flight: e.in_flight.is_some(),
        next_check: e.in_flight.is_none().then_some(e.next_due),
    }
}

fn record(
    e: &mut Entry,
    id: BackendId,
    now: Instant,
    result: Result<(), CheckError>,
) -> Option<Transition> {
    let before = e.state();
    let rise = e.spec.rise.max(1);
    let fall = e.spec.fall.max(1);
    e.checks += 1;
    let mut reason = None;
    match &result {
        Ok(()) => {
            e.successes = e.successes.saturating_add(1);
            e.failures = 0;
            if e.health == Health::Down && e.successes >= rise {
                e.health = Health::Up;
                reason = Some(Reason::Passed {
                    successes: e.successes,
                });
            }
        }
        Err(error) => {
            e.failures = e.failures.saturating_add(1);
            e.successes = 0;
            e.last_error = Some(error.clone());
            e.last_failure = Some(now);
            if e.health == Health::Up && (e.failures >= fall || e.probation) {
                e.health = Health::Down;
                reason = Some(Reason::Failed {
                    failures: e.failures,
                    error: error.clone(),
                });
            }
        }
    }
    e.probation = false;
    e.last_result = Some(result);
    let after = e.state();
    // A health change under a forced state is kept (it shows in the status and decides
    // the state once the force is cleared) but changes nothing the data plane sees.
    let reason = reason.filter(|_| after != before)?;
    e.last_change = now;
    Some(Transition {
        backend: id,
        from: before,
        to: after,
        reason,
    })
}

fn set_forced(
    e: &mut Entry,
    id: BackendId,
    now: Instant,
    forced: Option<Forced>,
    reason: Reason,
) -> Option<Transition> {
    let before = e.state();
    e.forced = forced;
    let after = e.state();
    if after == before {
        return None;
    }
    e.last_change = now;
    Some(Transition {
        backend: id,
        from: before,
        to: after,
        reason,
    })
}

fn effective_interval(spec: &CheckSpec) -> Duration {
    // A zero interval would divide by zero on the grid; the config rejects it anyway.
    spec.interval.max(Duration::from_millis(1))
}

/// The backend's offset within its interval: the fractional part of `id × φ`, which spreads
/// consecutive ids evenly (each new one falls in the largest gap left).
fn phase(id: BackendId, interval: Duration) -> Duration {
    const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;
    let fraction = id.0.wrapping_mul(GOLDEN) as u128;
    let nanos = (fraction * interval.as_nanos()) >> 64;
    Duration::from_nanos(nanos as u64)
}

fn slot_at_or_after(base: Instant, interval: Duration, t: Instant) -> Instant {
    if t <= base {
        return base;
    }
    let k = (t - base).as_nanos().div_ceil(interval.as_nanos());
    base + mul(interval, k)
}

fn slot_after(base: Instant, interval: Duration, t: Instant) -> Instant {
    if t < base {
        return base;
    }
    let k = (t - base).as_nanos() / interval.as_nanos() + 1;
    base + mul(interval, k)
}

fn mul(d: Duration, k: u128) -> Duration {
    let nanos = d.as_nanos().saturating_mul(k);
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}
