//! Health checks, split like the rest of the agent into a pure part and thin IO:
//!
//! - [`spec`]: what a check is ([`CheckSpec`]) and why one failed ([`CheckError`]); plain data.
//! - [`config`]: the `[vip.health_check]` TOML table and its validation into a `CheckSpec`.
//! - [`scheduler`]: sans-IO. When each backend is checked (spread over the interval, bounded
//!   concurrency, deadlines) and what results mean (rise/fall, forced states). Takes `now`.
//! - [`check`]: the checkers (TCP, HTTP/HTTPS, UDP, exec): `check::run(spec, target)`.
//! - [`runner`]: ties them together on tokio and emits [`Transition`]s on a channel.
//!
//! The agent's side: build a [`HealthRunner`], spawn `runner.run()`, add every backend with
//! [`HealthHandle::add_backend`], and apply each [`Transition`] it receives (a backend whose
//! state is `Down` or `Drain` leaves its VIP's Maglev table).

pub mod check;
pub mod config;
pub mod runner;
pub mod scheduler;
pub mod spec;

pub use config::HealthCheckConfig;
pub use runner::{HandleError, HealthHandle, HealthRunner};
pub use scheduler::{
    BackendId, BackendStatus, Forced, Health, Reason, Scheduler, SchedulerConfig, State, Transition,
};
pub use spec::{CheckError, CheckSpec, ErrorKind, Initial, Probe};
