//! Running the agent, `lbd`, inside a lab's load-balancer namespace.

use std::{
    fs,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _, Result};
use lb_userspace::control::{self, StatsReport, StatusReport};

use crate::lab::{self, Lab};

/// How long `lbd` may take from start to "program attached".
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `lbd` may take to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Directory holding `lbd` and `lbctl`: `$LB_BIN_DIR`, else the workspace's `target/debug`.
pub fn bin_dir() -> PathBuf {
    match std::env::var_os("LB_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug"),
    }
}

/// Path of the `lbd` binary; panics with what to do if it is not built.
pub fn lbd_binary() -> PathBuf {
    let path = bin_dir().join("lbd");
    if !path.is_file() {
        panic!(
            "{} not found: build it first: cargo build -p lb-userspace --bins \
             (cargo xtask test does this), or point LB_BIN_DIR at its directory",
            path.display()
        );
    }
    path
}

/// Packets the program counted for the VIPs of `protocol` ("tcp" or "udp").
pub fn vip_packets(stats: &StatsReport, protocol: &str) -> u64 {
    stats
        .vips
        .iter()
        .filter(|v| v.protocol == protocol)
        .map(|v| v.packets)
        .sum()
}

/// Packets the program counted under `reason` (a `Reason` name such as "forwarded_dr").
pub fn reason_packets(stats: &StatsReport, reason: &str) -> u64 {
    stats
        .reasons
        .iter()
        .filter(|r| r.reason == reason)
        .map(|r| r.packets)
        .sum()
}

/// Runs `lbctl --socket SOCKET ARGS`; returns its exit code and stdout followed by stderr.
pub fn lbctl(socket: &Path, args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(bin_dir().join("lbctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .expect("run lbctl (build it with cargo build -p lb-userspace --bins)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// When [`LbdGuard::start`] considers the agent up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ready {
    /// Its status says the program is attached (an agent without VRRP, or a VRRP master).
    Attached,
    /// It answers on its control socket (a VRRP node, which may be backup).
    Answering,
}

/// A running `lbd`. Dropping it stops the agent (SIGTERM, SIGKILL after 5 s); if the
/// thread is panicking, the agent's log is printed first, since it usually says why.
///
/// Borrows the lab, so the agent is always stopped before its namespace goes away.
pub struct LbdGuard<'lab> {
    lab: &'lab Lab,
    child: Child,
    exit: Option<ExitStatus>,
    socket: PathBuf,
    log: PathBuf,
}

impl<'lab> LbdGuard<'lab> {
    /// `wrapper` is a command that execs the rest of its arguments (`setpriv ...`), run
    /// between `ip netns exec` and `lbd`; empty for none. It must exec, not fork: the PID
    /// the guard signals is the agent's.
    // One private constructor behind the lab's named starters; a struct of options would
    // only move the same list elsewhere.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        lab: &'lab Lab,
        ns: &str,
        config: &Path,
        args: &[&str],
        log: &Path,
        ready: Ready,
        env: &[(&str, &std::ffi::OsStr)],
        wrapper: &[String],
    ) -> Result<LbdGuard<'lab>> {
        let bin = lbd_binary();
        let socket = control_socket_of(config)?
            .unwrap_or_else(|| PathBuf::from(lb_userspace::config::DEFAULT_CONTROL_SOCKET));
        // Appended: a restarted agent keeps its previous run's log.
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns])
            .args(wrapper)
            .arg(&bin)
            .arg("--config")
            .arg(config)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            // Its own process group: a Ctrl-C at the terminal reaches only the test or demo,
            // which then stops the agent in order.
            .process_group(0);
        // The child inherits the signal mask, and a caller that blocks SIGTERM to handle it
        // on a thread of its own (the demo does) would make the agent deaf to `stop`.
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                let mut empty: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut empty);
                let rc = libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
                if rc != 0 {
                    return Err(std::io::Error::from_raw_os_error(rc));
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {} in {ns}", bin.display()))?;
        // `ip netns exec` execs the agent, so this PID is the agent's.
        lab.teardown().add_pid(child.id());
        let mut guard = LbdGuard {
            lab,
            child,
            exit: None,
            socket,
            log: log.to_owned(),
        };
        guard.wait_ready(ready)?;
        Ok(guard)
    }

    fn wait_ready(&mut self, ready: Ready) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last = anyhow!("no status yet");
        loop {
            if let Some(status) = self.child.try_wait()? {
                self.forget_pid();
                self.exit = Some(status);
                bail!(
                    "lbd exited ({status}) before it was ready; its log:\n{}",
                    self.log()
                );
            }
            match self.status() {
                Ok(s) if s.attached || ready == Ready::Answering => return Ok(()),
                Ok(s) => last = anyhow!("status says not attached: {s:?}"),
                Err(e) => last = e,
            }
            if Instant::now() >= deadline {
                bail!(
                    "lbd not ready after {READY_TIMEOUT:?}: {last:#}\nits log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The control socket it listens on.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything the agent wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log)
            .unwrap_or_else(|e| format!("(cannot read {}: {e})", self.log.display()))
    }

    /// Sends `command` over the control socket; returns the reply's data.
    pub fn request(&self, command: &control::Command) -> Result<serde_json::Value> {
        control::request(&self.socket, command)
    }

    pub fn status(&self) -> Result<StatusReport> {
        let v = self.request(&control::Command::Status)?;
        serde_json::from_value(v).context("decoding lbd's status reply")
    }

    pub fn stats(&self) -> Result<StatsReport> {
        let v = self.request(&control::Command::Stats)?;
        serde_json::from_value(v).context("decoding lbd's stats reply")
    }

    /// Sends SIGTERM and waits for the exit (SIGKILL after 5 s). Repeated calls return the
    /// first exit status.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.exit {
            return Ok(status);
        }
        // Before the signal, so the lab's teardown never signals a PID that a reaped agent
        // has already given back to the kernel.
        self.forget_pid();
        lab::terminate(self.child.id(), STOP_GRACE);
        let status = self.child.wait().context("waiting for lbd")?;
        self.exit = Some(status);
        Ok(status)
    }

    /// SIGKILL, as a crash: nothing is handed over, and the virtual addresses stay on
    /// the interface (the program goes: its link dies with the process). Returns the exit
    /// status.
    pub fn kill(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.exit {
            return Ok(status);
        }
        self.forget_pid();
        let pid = libc::pid_t::try_from(self.child.id())?;
        // SAFETY: kill has no memory-safety preconditions; the child is not reaped yet, so
        // the PID is still ours.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let status = self.child.wait().context("waiting for lbd")?;
        self.exit = Some(status);
        Ok(status)
    }

    /// SIGUSR2: lbd exits leaving its program attached, its maps pinned and its virtual
    /// addresses configured, for the next lbd to adopt. Waits for the exit (SIGKILL after
    /// 5 s, like [`stop`](LbdGuard::stop)).
    pub fn leave(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.exit {
            return Ok(status);
        }
        self.forget_pid();
        let pid = libc::pid_t::try_from(self.child.id())?;
        // SAFETY: as in `kill`.
        unsafe { libc::kill(pid, libc::SIGUSR2) };
        let deadline = Instant::now() + STOP_GRACE;
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            if Instant::now() >= deadline {
                // SAFETY: as in `kill`.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                break self.child.wait()?;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        self.exit = Some(status);
        Ok(status)
    }

    /// SIGTERM without waiting for the exit; [`stop`](LbdGuard::stop) or drop waits.
    pub fn terminate(&mut self) -> Result<()> {
        if self.exit.is_none() {
            let pid = libc::pid_t::try_from(self.child.id())?;
            // SAFETY: as in `kill`.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        Ok(())
    }

    fn forget_pid(&self) {
        let pid = self.child.id();
        self.lab.teardown().state().pids.retain(|p| *p != pid);
    }
}

impl Drop for LbdGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- lbd log ({}) ----\n{}---- end of lbd log ----",
                self.log.display(),
                self.log()
            );
        }
        if let Err(e) = self.stop() {
            eprintln!("stopping lbd: {e:#}");
        }
    }
}

/// `agent.control_socket` from the config file, if it sets one.
fn control_socket_of(config: &Path) -> Result<Option<PathBuf>> {
    let text =
        fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("parsing {}", config.display()))?;
    Ok(table
        .get("agent")
        .and_then(|a| a.get("control_socket"))
        .and_then(toml::Value::as_str)
        .map(PathBuf::from))
}
