//! The real keepalived (Debian's package, installed by `cargo xtask setup`) on a lab node:
//! the reference lbd's VRRP must interoperate with and be measured against.
//!
//! Started as the captures in `shared/vrrp-captures` were made (`-P -n -l -D -G -R`: VRRP
//! only, foreground, log to the console, no syslog, no respawn), with its pid files, config,
//! log and notify script in the lab directory, so two labs never share a file. The notify
//! script appends `<unix time> <STATE>` lines to a state file, which is how a test sees
//! keepalived's state without parsing its log.

use std::{
    fmt::Write as _,
    fs::{self, File},
    net::{IpAddr, Ipv4Addr},
    os::unix::{fs::PermissionsExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _, Result};

use crate::lab::{self, Lab, VIP};

/// How long keepalived may take to write its VRRP child's pid file.
const START_TIMEOUT: Duration = Duration::from_secs(5);
/// keepalived takes about a second to exit after SIGTERM (captures README, surprise 9).
const STOP_GRACE: Duration = Duration::from_secs(4);

/// One `vrrp_instance`, in keepalived's own terms.
#[derive(Clone, Debug)]
pub struct Instance {
    pub vrid: u8,
    pub priority: u8,
    /// 2 or 3.
    pub version: u8,
    /// `advert_int`, seconds (VRRPv3 takes fractions).
    pub advert_int: f64,
    /// `state MASTER` starts as master at once (no Master_Down_Interval wait).
    pub start_master: bool,
    pub preempt: bool,
    /// `authentication { auth_type PASS auth_pass ... }` (VRRPv2).
    pub auth_pass: Option<String>,
    /// `unicast_src_ip` and `unicast_peer`; multicast when `None`.
    pub unicast: Option<(Ipv4Addr, Vec<Ipv4Addr>)>,
    /// The virtual address (`/32` or `/128`): the lab's VIP, or its IPv6 twin.
    pub vip: IpAddr,
}

impl Instance {
    /// A VRRPv3 multicast instance for the lab's VIP.
    pub fn v3(vrid: u8, priority: u8, advert_int: f64) -> Instance {
        Instance {
            vrid,
            priority,
            version: 3,
            advert_int,
            start_master: false,
            preempt: true,
            auth_pass: None,
            unicast: None,
            vip: IpAddr::V4(VIP),
        }
    }
}

/// keepalived.conf for one instance named `name` on `eth0`.
pub fn config(router_id: &str, name: &str, i: &Instance, notify: &Path) -> String {
    config_with(router_id, name, i, notify, "")
}

/// [`config`] with `extra` lines (keepalived keywords, e.g. `old_unicast_checksum`) in the
/// `vrrp_instance` block.
pub fn config_with(
    router_id: &str,
    name: &str,
    i: &Instance,
    notify: &Path,
    extra: &str,
) -> String {
    let mut s = format!(
        "global_defs {{\n    router_id {router_id}\n    script_user root\n}}\n\
         vrrp_instance {name} {{\n    state {}\n    interface eth0\n    virtual_router_id {}\n    \
         priority {}\n    version {}\n    advert_int {}\n",
        if i.start_master { "MASTER" } else { "BACKUP" },
        i.vrid,
        i.priority,
        i.version,
        i.advert_int
    );
    if !i.preempt {
        s.push_str("    nopreempt\n");
    }
    for line in extra.lines() {
        let _ = writeln!(s, "    {}", line.trim());
    }
    if let Some(p) = &i.auth_pass {
        let _ = writeln!(
            s,
            "    authentication {{\n        auth_type PASS\n        auth_pass {p}\n    }}"
        );
    }
    if let Some((src, peers)) = &i.unicast {
        let _ = writeln!(s, "    unicast_src_ip {src}\n    unicast_peer {{");
        for p in peers {
            let _ = writeln!(s, "        {p}");
        }
        s.push_str("    }\n");
    }
    let len = if i.vip.is_ipv4() { 32 } else { 128 };
    let _ = write!(
        s,
        "    virtual_ipaddress {{\n        {}/{len}\n    }}\n    notify {}\n}}\n",
        i.vip,
        notify.display()
    );
    s
}

/// A running keepalived. Dropping it stops it (SIGTERM to the parent, which stops its VRRP
/// child with a priority-0 advert; SIGKILL to both if that takes too long); if the thread
/// is panicking, its log is printed first.
pub struct Keepalived<'lab> {
    lab: &'lab Lab,
    child: Child,
    vrrp_pid: u32,
    state_file: PathBuf,
    log: PathBuf,
    exit: Option<ExitStatus>,
}

impl<'lab> Keepalived<'lab> {
    /// Starts keepalived on load-balancer node `node` with `instance`, and waits until its
    /// VRRP child runs. Files are named after the node's role and a start counter, so a
    /// restart keeps the previous run's log.
    pub fn start(lab: &'lab Lab, node: usize, instance: &Instance) -> Result<Keepalived<'lab>> {
        Keepalived::start_with(lab, node, instance, "")
    }

    /// [`start`](Keepalived::start) with `extra` keepalived keywords in the instance block.
    pub fn start_with(
        lab: &'lab Lab,
        node: usize,
        instance: &Instance,
        extra: &str,
    ) -> Result<Keepalived<'lab>> {
        let n = &lab.lb_nodes()[node];
        let dir = lab.dir();
        let mut run = 0;
        while dir.join(format!("ka-{}-{run}.conf", n.role)).exists() {
            run += 1;
        }
        let base = format!("ka-{}-{run}", n.role);
        // One state file per node, across restarts: its last line is the node's state.
        let state_file = dir.join(format!("ka-{}.state", n.role));
        let notify = dir.join(format!("{base}-notify.sh"));
        fs::write(
            &notify,
            format!(
                "#!/bin/sh\necho \"$(date +%s.%N) $3\" >> {}\n",
                state_file.display()
            ),
        )?;
        fs::set_permissions(&notify, fs::Permissions::from_mode(0o755))?;
        // A name unique to this lab: keepalived writes it in logs and scripts get it.
        let name = format!("{}_{}", lab.prefix(), n.role);
        let conf = dir.join(format!("{base}.conf"));
        fs::write(&conf, config_with(&n.role, &name, instance, &notify, extra))?;
        let pid = dir.join(format!("{base}.pid"));
        let vrrp_pid = dir.join(format!("{base}-vrrp.pid"));
        let log = dir.join(format!("{base}.log"));
        let out = File::create(&log)?;
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &n.ns,
            "keepalived",
            "-P",
            "-n",
            "-l",
            "-D",
            "-G",
            "-R",
        ])
        .arg("-f")
        .arg(&conf)
        .arg("-p")
        .arg(&pid)
        .arg("-r")
        .arg(&vrrp_pid)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .process_group(0);
        let child = cmd
            .spawn()
            .context("starting keepalived (installed by `cargo xtask setup`)")?;
        lab.teardown().add_pid(child.id());
        let mut ka = Keepalived {
            lab,
            child,
            vrrp_pid: 0,
            state_file,
            log,
            exit: None,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = ka.child.try_wait()? {
                ka.exit = Some(status);
                bail!(
                    "keepalived exited ({status}) at start; its log:\n{}",
                    ka.log()
                );
            }
            if let Some(p) = fs::read_to_string(&vrrp_pid)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
            {
                ka.vrrp_pid = p;
                lab.teardown().add_pid(p);
                return Ok(ka);
            }
            if Instant::now() > deadline {
                bail!(
                    "keepalived wrote no VRRP pid file in {START_TIMEOUT:?}; its log:\n{}",
                    ka.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything keepalived logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log)
            .unwrap_or_else(|e| format!("(cannot read {}: {e})", self.log.display()))
    }

    /// Every state keepalived entered on this node (this run and earlier ones), with the
    /// time its notify script ran; `EXITED` when a run ended.
    pub fn states(&self) -> Vec<(f64, String)> {
        fs::read_to_string(&self.state_file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (t, s) = l.split_once(' ')?;
                Some((t.parse().ok()?, s.trim().to_owned()))
            })
            .collect()
    }

    /// The state it entered last (`MASTER`, `BACKUP`, `STOP`, `FAULT`), if any.
    pub fn state(&self) -> Option<String> {
        self.states().pop().map(|(_, s)| s)
    }

    /// Waits until keepalived's last state is `want`; returns how long that took.
    pub fn wait_state(&self, want: &str, limit: Duration) -> Result<Duration> {
        let start = Instant::now();
        loop {
            if self.state().as_deref() == Some(want) {
                return Ok(start.elapsed());
            }
            if start.elapsed() > limit {
                bail!(
                    "keepalived not {want} after {limit:?} (states {:?}); its log:\n{}",
                    self.states(),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The VRRP child's PID: the process that sends and receives adverts.
    pub fn vrrp_pid(&self) -> u32 {
        self.vrrp_pid
    }

    /// The state file, for observers on other threads.
    pub fn state_file(&self) -> &Path {
        &self.state_file
    }

    /// SIGKILL to the VRRP child, then to the parent: a crash, no priority-0 advert, the
    /// VIP left on the interface (as keepalived leaves it).
    pub fn kill(&mut self) -> Result<()> {
        signal(self.vrrp_pid, libc::SIGKILL);
        signal(self.child.id(), libc::SIGKILL);
        self.reap()
    }

    /// SIGTERM to the parent without waiting: the VRRP child sends its priority-0 advert
    /// within a millisecond and removes the VIP; the processes exit about a second later.
    pub fn terminate(&self) {
        signal(self.child.id(), libc::SIGTERM);
    }

    /// SIGTERM and wait for the exit (SIGKILL to both after a grace period).
    pub fn stop(&mut self) -> Result<()> {
        if self.exit.is_some() {
            return Ok(());
        }
        self.terminate();
        let deadline = Instant::now() + STOP_GRACE;
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                signal(self.vrrp_pid, libc::SIGKILL);
                signal(self.child.id(), libc::SIGKILL);
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.reap()
    }

    fn reap(&mut self) -> Result<()> {
        if self.exit.is_none() {
            self.exit = Some(self.child.wait()?);
            // Observers read the last line as the node's state; a killed keepalived wrote
            // nothing, and a stopped one may not have.
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64();
            let mut f = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.state_file)?;
            std::io::Write::write_all(&mut f, format!("{now:.6} EXITED\n").as_bytes())?;
        }
        // The VRRP child is the parent's child, reaped by it; make sure it is gone before
        // forgetting its PID.
        let deadline = Instant::now() + STOP_GRACE;
        while lab::running(self.vrrp_pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if lab::running(self.vrrp_pid) {
            signal(self.vrrp_pid, libc::SIGKILL);
        }
        let (p, c) = (self.child.id(), self.vrrp_pid);
        self.lab
            .teardown()
            .state()
            .pids
            .retain(|x| *x != p && *x != c);
        Ok(())
    }
}

impl Drop for Keepalived<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- keepalived log ({}) ----\n{}states: {:?}\n---- end of keepalived log ----",
                self.log.display(),
                self.log(),
                self.states()
            );
        }
        if let Err(e) = self.stop() {
            eprintln!("stopping keepalived: {e:#}");
        }
    }
}

fn signal(pid: u32, sig: i32) {
    if let Ok(raw) = libc::pid_t::try_from(pid) {
        if raw > 0 {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(raw, sig) };
        }
    }
}

/// Whether the lab's VIP is configured on `eth0` of load-balancer node `node`.
pub fn holds_vip(lab: &Lab, node: usize) -> Result<bool> {
    holds(lab, node, IpAddr::V4(VIP))
}

/// Whether `addr` is configured on `eth0` of load-balancer node `node`.
pub fn holds(lab: &Lab, node: usize, addr: IpAddr) -> Result<bool> {
    let ns = &lab.lb_nodes()[node].ns;
    Ok(Lab::addresses(ns, "eth0")?.contains(&addr))
}

/// Reads `ka`'s state without borrowing it, for observer threads.
pub fn state_in(file: &Path) -> Option<String> {
    fs::read_to_string(file)
        .ok()?
        .lines()
        .last()
        .and_then(|l| l.split_once(' '))
        .map(|(_, s)| s.trim().to_owned())
}

/// Fails with the last states if `ka` is not in `want`.
pub fn expect_state(ka: &Keepalived<'_>, want: &str) -> Result<()> {
    match ka.state() {
        Some(s) if s == want => Ok(()),
        other => Err(anyhow!(
            "keepalived is {other:?}, not {want}; states {:?}",
            ka.states()
        )),
    }
}
