//! Helpers for VRRP in the lab: lbd's `[[vrrp]]` table, a client that probes the VIP
//! every few milliseconds (what a user sees of a failover), and a watch that samples every
//! node's VRRP state (to prove two nodes are never master for long).

use std::{
    net::{SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use lb_userspace::control::{self, Command, StatusReport, VrrpStatus};

use crate::{lab::VIP, netns};

/// lbd's `[[vrrp]]` table for the lab's VIP on `eth0`; `extra` lines are appended verbatim
/// (`preempt = false`, `auth_pass = "..."`, `unicast_peers = [...]`).
pub fn lbd_vrrp(vrid: u8, priority: u8, version: u8, interval: &str, extra: &str) -> String {
    format!(
        "\n[[vrrp]]\nname = \"vi\"\nvrid = {vrid}\npriority = {priority}\nversion = {version}\n\
         advert_interval = \"{interval}\"\naddresses = [\"{VIP}/32\"]\n{extra}\n"
    )
}

/// The first VRRP instance in the status of the lbd listening on `socket`, if it answers.
pub fn instance(socket: &Path) -> Option<VrrpStatus> {
    let v = control::request(socket, &Command::Status).ok()?;
    let s: StatusReport = serde_json::from_value(v).ok()?;
    s.vrrp.into_iter().next()
}

/// Waits until the lbd on `socket` reports its instance in `state`; returns the status
/// then.
pub fn wait_lbd_state(socket: &Path, state: &str, limit: Duration) -> Result<VrrpStatus> {
    let start = Instant::now();
    let mut last = None;
    loop {
        if let Some(s) = instance(socket) {
            if s.state == state {
                return Ok(s);
            }
            last = Some(s);
        }
        if start.elapsed() > limit {
            bail!(
                "lbd at {} not {state} after {limit:?}; last status {last:#?}",
                socket.display()
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// When the instance on `socket` last changed state, from its status.
pub fn last_change(status: &VrrpStatus, polled: Instant) -> Instant {
    polled - Duration::from_secs_f64(status.last_change_secs_ago)
}

/// One probe of the VIP.
#[derive(Clone, Debug)]
pub struct Probe {
    pub sent: Instant,
    /// The backend that answered, or `None` when nothing did within the timeout.
    pub answer: Option<String>,
}

/// Probes a UDP service every `every` from inside a namespace, each time from a fresh
/// socket (so a late answer can never be taken for another probe's). Probes overlap: one
/// goes out every `every` whatever the previous ones are waiting for, so the resolution
/// of a measured gap is `every` even while nothing answers.
pub struct Prober {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<Vec<Probe>>>>,
}

impl Prober {
    pub fn start(ns: &str, addr: SocketAddr, every: Duration, timeout: Duration) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let ns = ns.to_owned();
        let thread = std::thread::spawn(move || {
            let _inside = netns::enter(&ns)?;
            let mut probes: Vec<Probe> = Vec::new();
            // (index into probes, socket) of probes still waiting for an answer.
            let mut waiting: Vec<(usize, UdpSocket)> = Vec::new();
            let mut next = Instant::now();
            loop {
                let stopping = flag.load(Ordering::Relaxed);
                if !stopping {
                    let sent = Instant::now();
                    let socket = UdpSocket::bind(("0.0.0.0", 0))
                        .and_then(|s| s.connect(addr).map(|()| s))
                        .and_then(|s| s.set_nonblocking(true).map(|()| s))
                        .and_then(|s| s.send(b"probe\n").map(|_| s));
                    probes.push(Probe { sent, answer: None });
                    if let Ok(s) = socket {
                        waiting.push((probes.len() - 1, s));
                    }
                }
                let mut buf = [0u8; 64];
                waiting.retain(|(i, s)| match s.recv(&mut buf) {
                    Ok(n) => {
                        probes[*i].answer =
                            Some(String::from_utf8_lossy(&buf[..n]).trim().to_owned());
                        false
                    }
                    Err(_) => probes[*i].sent.elapsed() < timeout,
                });
                if stopping && waiting.is_empty() {
                    break;
                }
                next += every;
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                } else {
                    next = now;
                }
            }
            Ok(probes)
        });
        Prober {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops probing, waits for the answers still due, and returns every probe.
    pub fn finish(mut self) -> Result<Probes> {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().expect("joined once");
        let probes = thread
            .join()
            .map_err(|_| anyhow::anyhow!("the prober panicked"))??;
        Ok(Probes(probes))
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a [`Prober`] saw.
#[derive(Clone, Debug)]
pub struct Probes(pub Vec<Probe>);

impl Probes {
    /// The longest service gap: from the last answered probe before a run of unanswered
    /// ones to the first answered after it (zero when every probe was answered). Its
    /// resolution is the probe interval.
    pub fn longest_gap(&self) -> Duration {
        let mut longest = Duration::ZERO;
        let mut last_ok: Option<Instant> = None;
        let mut failed_since_ok = false;
        for p in &self.0 {
            match &p.answer {
                Some(_) => {
                    if failed_since_ok {
                        if let Some(ok) = last_ok {
                            longest = longest.max(p.sent - ok);
                        }
                    }
                    last_ok = Some(p.sent);
                    failed_since_ok = false;
                }
                None => failed_since_ok = true,
            }
        }
        longest
    }

    pub fn answered(&self) -> usize {
        self.0.iter().filter(|p| p.answer.is_some()).count()
    }

    pub fn unanswered(&self) -> usize {
        self.0.len() - self.answered()
    }

    /// Whether the last probes (`n` of them) were all answered: service is back.
    pub fn ends_answered(&self, n: usize) -> bool {
        self.0.len() >= n
            && self.0[self.0.len() - n..]
                .iter()
                .all(|p| p.answer.is_some())
    }
}

/// An observer for [`Watch`]: `Some(true)` when its node is master.
pub type Observer = Box<dyn Fn() -> Option<bool> + Send>;

/// An observer of the lbd on `socket`.
pub fn lbd_observer(socket: PathBuf) -> Observer {
    Box::new(move || instance(&socket).map(|s| s.state == "master"))
}

/// An observer of the keepalived whose notify script writes `state_file`.
pub fn keepalived_observer(state_file: PathBuf) -> Observer {
    Box::new(move || crate::keepalived::state_in(&state_file).map(|s| s == "MASTER"))
}

/// Samples observers every few milliseconds on a thread of its own.
pub struct Watch {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Timeline>>,
}

/// What a [`Watch`] saw: at each sample, which observers said master.
#[derive(Clone, Debug, Default)]
pub struct Timeline {
    pub samples: Vec<(Instant, Vec<bool>)>,
}

impl Watch {
    pub fn start(observers: Vec<Observer>, every: Duration) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut t = Timeline::default();
            while !flag.load(Ordering::Relaxed) {
                let masters = observers.iter().map(|o| o() == Some(true)).collect();
                t.samples.push((Instant::now(), masters));
                std::thread::sleep(every);
            }
            t
        });
        Watch {
            stop,
            thread: Some(thread),
        }
    }

    pub fn finish(mut self) -> Timeline {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Timeline {
    /// The longest span during which two or more observers said master: from the first
    /// sample that saw it to the first that no longer did.
    pub fn longest_dual_master(&self) -> Duration {
        let mut longest = Duration::ZERO;
        let mut since: Option<Instant> = None;
        for (at, masters) in &self.samples {
            let dual = masters.iter().filter(|m| **m).count() >= 2;
            match (dual, since) {
                (true, None) => since = Some(*at),
                (false, Some(s)) => {
                    longest = longest.max(*at - s);
                    since = None;
                }
                _ => {}
            }
        }
        if let (Some(s), Some((last, _))) = (since, self.samples.last()) {
            longest = longest.max(*last - s);
        }
        longest
    }

    /// How many samples saw no master at all, and how many saw one.
    pub fn masters_seen(&self) -> (usize, usize) {
        let none = self
            .samples
            .iter()
            .filter(|(_, m)| m.iter().all(|x| !x))
            .count();
        (none, self.samples.len() - none)
    }
}

/// Checks `cond` every 5 ms until it holds or `limit` passes.
pub fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> Result<Duration> {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > limit {
            bail!("{what}: not within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(start.elapsed())
}

/// The VRRP part of an lbd status, or why there is none.
pub fn require_instance(socket: &Path) -> Result<VrrpStatus> {
    let v = control::request(socket, &Command::Status)?;
    let s: StatusReport = serde_json::from_value(v).context("decoding status")?;
    s.vrrp
        .into_iter()
        .next()
        .context("lbd reports no VRRP instance")
}
