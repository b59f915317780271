//! Failover: the service gap a client sees when the VRRP master goes away, with lbd on both
//! load-balancer nodes and, in the same run, with keepalived on both as the reference.
//!
//! A lab with two LB nodes and two backends; the client probes the VIP over UDP every
//! 10 ms (a fresh socket per probe, probes overlapping, so a gap is measured to 10 ms even
//! while nothing answers). Node A (priority 255: master at once) serves, node B (priority
//! 100) is backup. Then A crashes (kill -9, and its program is detached: a dead machine takes
//! its data plane with it, and lbd's pinned program outlives lbd) or stops gracefully
//! (SIGTERM), and the gap is
//! the time from the last probe answered before to the first answered after. Each case is
//! run `runs` times on a fresh pair of processes; min, median, max.
//!
//! The reference runs keepalived for VRRP and lbd without VRRP (always attached) for the
//! forwarding, on both nodes: the VIP follows keepalived, the packets follow the VIP. A crash
//! kills both processes on A, a graceful stop signals both, as stopping a keepalived+IPVS
//! node removes its IPVS rules with its addresses.
//!
//! Besides the gap, a packet socket on the bridge timestamps every advert (kernel
//! timestamps), so each takeover is also measured on the wire: from the old master's last
//! advert (its priority-0 advert on a graceful stop) to the new master's first, which the
//! RFC fixes at Master_Down_Interval (crash) or Skew_Time (graceful stop).
//!
//! Then 10 ms adverts (the VRRPv3 minimum): the crash gap, and the CPU lbd spends on VRRP at
//! that rate, from /proc/PID/stat over 10 s, with 1 and with 10 instances, next to an lbd
//! without VRRP (the baseline of an idle agent) and keepalived's VRRP process.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use lb_tests::{
    keepalived::{Instance, Keepalived},
    vrrp::{lbd_vrrp, require_instance, wait_lbd_state, Prober},
    Lab, LbdGuard,
};
use lb_userspace::control::TakeoverTiming;
use serde::Serialize;

const PROBE_EVERY: Duration = Duration::from_millis(10);
const PROBE_TIMEOUT: Duration = Duration::from_millis(50);
const VRID: u8 = 51;
const CPU_WINDOW: Duration = Duration::from_secs(10);
/// `--quick`: a shorter CPU window.
const QUICK_CPU_WINDOW: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Implementation {
    /// lbd, `xdp_on_backup = "detached"` (the default).
    Lbd,
    /// lbd, `xdp_on_backup = "attached"`.
    LbdAttached,
    Keepalived,
}

impl Implementation {
    fn name(self) -> &'static str {
        match self {
            Implementation::Lbd => "lbd",
            Implementation::LbdAttached => "lbd (attached)",
            Implementation::Keepalived => "keepalived",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Event {
    /// kill -9 of everything on the master.
    Crash,
    /// SIGTERM.
    Graceful,
}

impl Event {
    fn name(self) -> &'static str {
        match self {
            Event::Crash => "crash",
            Event::Graceful => "graceful",
        }
    }
}

#[derive(Serialize)]
struct Row {
    implementation: Implementation,
    advert_interval_ms: f64,
    event: Event,
    /// What the RFC timers give from the master's last advert: Master_Down_Interval for a
    /// crash, Skew_Time for a graceful stop (priority 100).
    protocol_ms: f64,
    gaps_ms: Vec<f64>,
    min_ms: f64,
    median_ms: f64,
    max_ms: f64,
    /// On the wire: the old master's last advert to the new master's first, per run.
    wire_ms: Vec<f64>,
    wire_median_ms: f64,
    /// lbd only: what the new master did after deciding, per run.
    takeovers: Vec<TakeoverTiming>,
}

#[derive(Serialize)]
struct CpuRow {
    implementation: &'static str,
    instances: usize,
    advert_interval_ms: f64,
    master_percent_of_one_core: f64,
    backup_percent_of_one_core: f64,
    master_user_percent: f64,
    backup_user_percent: f64,
}

fn master_down(interval: Duration, priority: u32) -> Duration {
    3 * interval + skew(interval, priority)
}

fn skew(interval: Duration, priority: u32) -> Duration {
    interval * (256 - priority) / 256
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn interval_text(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// One node's processes.
enum Node<'lab> {
    Lbd(LbdGuard<'lab>),
    Keepalived(Keepalived<'lab>, LbdGuard<'lab>),
}

impl Node<'_> {
    fn crash(&mut self) -> Result<()> {
        match self {
            Node::Lbd(l) => l.kill().map(drop),
            Node::Keepalived(k, l) => {
                // Both at once, as a node dies: forwarding must not outlive the adverts (or
                // the reverse) by the time it takes to reap the first.
                for pid in [l.pid(), k.vrrp_pid()] {
                    // SAFETY: kill has no memory-safety preconditions; both are running.
                    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                }
                k.kill()?;
                l.kill().map(drop)
            }
        }
    }

    fn terminate(&mut self) -> Result<()> {
        match self {
            Node::Lbd(l) => l.terminate(),
            Node::Keepalived(k, l) => {
                k.terminate();
                l.terminate()
            }
        }
    }
}

fn config_path(lab: &Lab, node: usize, name: &str, vrrp: &str) -> Result<PathBuf> {
    lab.write_file(
        &format!("{name}-{}.toml", lab.lb_nodes()[node].role),
        &format!("{}\n{vrrp}", lab.lbd_config(node)),
    )
}

fn start<'lab>(
    lab: &'lab Lab,
    imp: Implementation,
    node: usize,
    priority: u8,
    interval: Duration,
    instances: usize,
) -> Result<Node<'lab>> {
    match imp {
        Implementation::Lbd | Implementation::LbdAttached => {
            let mut vrrp = String::new();
            for i in 0..instances {
                let table = lbd_vrrp(VRID + i as u8, priority, 3, &interval_text(interval), "");
                let table = if i == 0 {
                    table
                } else {
                    table
                        .replace("name = \"vi\"", &format!("name = \"vi{i}\""))
                        .replace("10.99.0.50/32", &format!("10.99.0.{}/32", 60 + i))
                };
                vrrp.push_str(&table);
            }
            let name = format!("lbd-vrrp-{instances}");
            let mut path = config_path(lab, node, &name, &vrrp)?;
            if imp == Implementation::LbdAttached {
                let text = std::fs::read_to_string(&path)?.replacen(
                    "[agent]\n",
                    "[agent]\nxdp_on_backup = \"attached\"\n",
                    1,
                );
                path = lab.write_file(
                    &format!("{name}-attached-{}.toml", lab.lb_nodes()[node].role),
                    &text,
                )?;
            }
            Ok(Node::Lbd(lab.spawn_lbd_on(node, &path)?))
        }
        Implementation::Keepalived => {
            let path = config_path(lab, node, "lbd-forwarding", "")?;
            let lbd = lab.start_lbd_on(node, &path)?;
            let ka = Keepalived::start(
                lab,
                node,
                &Instance {
                    start_master: priority == 255,
                    ..Instance::v3(VRID, priority, interval.as_secs_f64())
                },
            )?;
            Ok(Node::Keepalived(ka, lbd))
        }
    }
}

/// Waits until `node` is master (`want`) or backup of the VRID.
fn wait_state(node: &Node<'_>, master: bool, limit: Duration) -> Result<()> {
    match node {
        Node::Lbd(l) => {
            wait_lbd_state(l.socket(), if master { "master" } else { "backup" }, limit).map(drop)
        }
        Node::Keepalived(k, _) => k
            .wait_state(if master { "MASTER" } else { "BACKUP" }, limit)
            .map(drop),
    }
}

/// What one failover measured.
struct Run {
    gap: Duration,
    wire: Duration,
    steps: Option<TakeoverTiming>,
}

/// One failover.
fn failover(lab: &Lab, imp: Implementation, interval: Duration, event: Event) -> Result<Run> {
    let sniffer = Sniffer::start(lab.bridge_ns())?;
    let mut a = start(lab, imp, 0, 255, interval, 1)?;
    wait_state(&a, true, Duration::from_secs(5))?;
    let b = start(lab, imp, 1, 100, interval, 1)?;
    wait_state(&b, false, Duration::from_secs(5))?;
    // B has heard A (and, for keepalived, A's GARPs reached the client).
    std::thread::sleep(interval * 2 + Duration::from_millis(200));
    let prober = Prober::start(&lab.client().ns, lab.vip(), PROBE_EVERY, PROBE_TIMEOUT);
    std::thread::sleep(Duration::from_millis(300));
    match event {
        Event::Crash => {
            a.crash()?;
            // A node that dies takes its data plane with it. lbd's program outlives lbd
            // (pinned, for hitless restarts), so killing the processes alone would leave A
            // forwarding for the VIP: its program is detached too, as if the machine had
            // died. (Taking A's link down instead would make the lab's bridge flush A's MAC
            // and flood A's frames to B, which is not what a crash measures.)
            lb_userspace::dataplane::cleanup(&lab.pin_dir(0))?;
        }
        Event::Graceful => a.terminate()?,
    }
    wait_state(
        &b,
        true,
        master_down(interval, 100) * 2 + Duration::from_secs(1),
    )?;
    std::thread::sleep(Duration::from_millis(300));
    let probes = prober.finish()?;
    let adverts = sniffer.finish()?;
    if !probes.ends_answered(10) {
        bail!("the service did not come back after the failover: {probes:?}");
    }
    let steps = match &b {
        Node::Lbd(l) => require_instance(l.socket())?.last_takeover,
        Node::Keepalived(..) => None,
    };
    let (old, new) = (lab.lb_nodes()[0].addr, lab.lb_nodes()[1].addr);
    let first_new = adverts
        .iter()
        .position(|a| a.src == new && a.priority > 0)
        .context("no advert from the new master on the wire")?;
    let last_old = adverts[..first_new]
        .iter()
        .rev()
        .find(|a| a.src == old)
        .context("no advert from the old master on the wire")?;
    let wire = adverts[first_new].at.saturating_sub(last_old.at);
    drop(b);
    drop(a);
    Ok(Run {
        gap: probes.longest_gap(),
        wire,
        steps,
    })
}

/// A VRRP advert seen on the bridge.
struct Seen {
    /// Kernel receive timestamp (CLOCK_REALTIME; only differences are used).
    at: Duration,
    src: std::net::Ipv4Addr,
    priority: u8,
}

/// Records every IPv4 VRRP advert crossing the lab's bridge, with kernel timestamps.
struct Sniffer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<Vec<Seen>>>>,
}

impl Sniffer {
    fn start(ns: &str) -> Result<Sniffer> {
        use std::sync::{atomic::AtomicBool, Arc};
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let ns = ns.to_owned();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || -> Result<Vec<Seen>> {
            let _inside = lb_tests::netns::enter(&ns)?;
            let sock = match packet_socket("br0") {
                Ok(s) => {
                    let _ = ready_tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return Err(e);
                }
            };
            let mut seen = Vec::new();
            let mut buf = [0u8; 2048];
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some((n, at)) = recv_stamped(&sock, &mut buf)? {
                    if let Some(s) = parse_advert(&buf[..n], at) {
                        seen.push(s);
                    }
                }
            }
            Ok(seen)
        });
        ready_rx
            .recv()
            .context("the sniffer thread died")?
            .map_err(|e| anyhow::anyhow!("packet socket on br0: {e}"))?;
        Ok(Sniffer {
            stop,
            thread: Some(thread),
        })
    }

    fn finish(mut self) -> Result<Vec<Seen>> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread
            .take()
            .expect("joined once")
            .join()
            .map_err(|_| anyhow::anyhow!("the sniffer panicked"))?
    }
}

impl Drop for Sniffer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A promiscuous packet socket on `ifname` with kernel timestamps and a 50 ms receive
/// timeout (so the thread notices `stop`).
fn packet_socket(ifname: &str) -> Result<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd as _, FromRawFd as _};
    let name = std::ffi::CString::new(ifname)?;
    // SAFETY: plain libc calls on a fresh fd with locals that outlive each call.
    unsafe {
        let ifindex = libc::if_nametoindex(name.as_ptr());
        if ifindex == 0 {
            bail!("no interface {ifname}");
        }
        let raw = libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            i32::from((libc::ETH_P_ALL as u16).to_be()),
        );
        if raw < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        let fd = std::os::fd::OwnedFd::from_raw_fd(raw);
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        addr.sll_ifindex = ifindex as i32;
        if libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        ) != 0
        {
            return Err(std::io::Error::last_os_error().into());
        }
        let mreq = libc::packet_mreq {
            mr_ifindex: ifindex as i32,
            mr_type: libc::PACKET_MR_PROMISC as u16,
            mr_alen: 0,
            mr_address: [0; 8],
        };
        let set = |level, name, ptr: *const libc::c_void, len: usize| {
            if libc::setsockopt(fd.as_raw_fd(), level, name, ptr, len as u32) != 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(())
            }
        };
        set(
            libc::SOL_PACKET,
            libc::PACKET_ADD_MEMBERSHIP,
            (&mreq as *const libc::packet_mreq).cast(),
            std::mem::size_of::<libc::packet_mreq>(),
        )?;
        let one: i32 = 1;
        set(
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&one as *const i32).cast(),
            4,
        )?;
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 50_000,
        };
        set(
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>(),
        )?;
        Ok(fd)
    }
}

/// One frame and its kernel timestamp; `None` on timeout.
fn recv_stamped(fd: &std::os::fd::OwnedFd, buf: &mut [u8]) -> Result<Option<(usize, Duration)>> {
    use std::os::fd::AsRawFd as _;
    // SAFETY: every pointer refers to locals that outlive the call.
    unsafe {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut control = [0u64; 8];
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control);
        let n = libc::recvmsg(fd.as_raw_fd(), &mut msg, 0);
        if n < 0 {
            let e = std::io::Error::last_os_error();
            return match e.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => Ok(None),
                _ => Err(e.into()),
            };
        }
        let mut at = None;
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SO_TIMESTAMPNS {
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::timespec>());
                at = Some(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32));
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        let at = at.context("no timestamp on a received frame")?;
        Ok(Some((n as usize, at)))
    }
}

fn parse_advert(frame: &[u8], at: Duration) -> Option<Seen> {
    if frame.len() < 34 || frame[12..14] != [0x08, 0x00] || frame[23] != 112 {
        return None;
    }
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    let priority = *frame.get(14 + ihl + 2)?;
    let src = std::net::Ipv4Addr::new(frame[26], frame[27], frame[28], frame[29]);
    Some(Seen { at, src, priority })
}

fn summarize(imp: Implementation, interval: Duration, event: Event, runs: Vec<Run>) -> Row {
    let mut gaps: Vec<f64> = runs.iter().map(|r| ms(r.gap)).collect();
    let takeovers = runs.iter().filter_map(|r| r.steps).collect();
    let wire_ms: Vec<f64> = runs.iter().map(|r| ms(r.wire)).collect();
    let mut wire_sorted = wire_ms.clone();
    wire_sorted.sort_by(f64::total_cmp);
    let in_order = gaps.clone();
    gaps.sort_by(f64::total_cmp);
    Row {
        implementation: imp,
        advert_interval_ms: ms(interval),
        event,
        protocol_ms: ms(match event {
            Event::Crash => master_down(interval, 100),
            Event::Graceful => skew(interval, 100),
        }),
        min_ms: gaps[0],
        median_ms: gaps[gaps.len() / 2],
        max_ms: gaps[gaps.len() - 1],
        gaps_ms: in_order,
        wire_median_ms: wire_sorted[wire_sorted.len() / 2],
        wire_ms,
        takeovers,
    }
}

/// CPU time of `pid` so far: (user, user + system).
fn cpu_time(pid: u32) -> Result<(Duration, Duration)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat.rsplit_once(')').context("malformed stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 3, utime 14 and stime 15 (1-based over the line).
    let user: u64 = fields[11].parse()?;
    let system: u64 = fields[12].parse()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let d = |ticks: u64| Duration::from_micros(ticks * 1_000_000 / hz);
    Ok((d(user), d(user + system)))
}

/// CPU of both nodes' VRRP processes over `window`; `instances` 0 is lbd without
/// VRRP (the idle agent's own cost).
fn cpu(lab: &Lab, imp: Implementation, instances: usize, window: Duration) -> Result<CpuRow> {
    let interval = Duration::from_millis(10);
    let (a, b) = if instances == 0 {
        let pa = config_path(lab, 0, "lbd-forwarding", "")?;
        let pb = config_path(lab, 1, "lbd-forwarding", "")?;
        (
            Node::Lbd(lab.start_lbd_on(0, &pa)?),
            Node::Lbd(lab.start_lbd_on(1, &pb)?),
        )
    } else {
        let a = start(lab, imp, 0, 255, interval, instances)?;
        let b = start(lab, imp, 1, 100, interval, instances)?;
        wait_state(&a, true, Duration::from_secs(5))?;
        wait_state(&b, false, Duration::from_secs(5))?;
        (a, b)
    };
    std::thread::sleep(Duration::from_millis(500));
    let pid = |n: &Node<'_>| match n {
        Node::Lbd(l) => l.pid(),
        Node::Keepalived(k, _) => k.vrrp_pid(),
    };
    let (pa, pb) = (pid(&a), pid(&b));
    let (a0, b0) = (cpu_time(pa)?, cpu_time(pb)?);
    let t0 = Instant::now();
    std::thread::sleep(window);
    let wall = t0.elapsed();
    let (a1, b1) = (cpu_time(pa)?, cpu_time(pb)?);
    if instances > 0 {
        // Both stayed in their roles the whole window.
        wait_state(&a, true, Duration::from_millis(100))?;
        wait_state(&b, false, Duration::from_millis(100))?;
    }
    drop(b);
    drop(a);
    let pct = |d: Duration| 100.0 * d.as_secs_f64() / wall.as_secs_f64();
    Ok(CpuRow {
        implementation: if instances == 0 {
            "lbd without VRRP"
        } else {
            imp.name()
        },
        instances,
        advert_interval_ms: ms(interval),
        master_percent_of_one_core: pct(a1.1 - a0.1),
        backup_percent_of_one_core: pct(b1.1 - b0.1),
        master_user_percent: pct(a1.0 - a0.0),
        backup_user_percent: pct(b1.0 - b0.0),
    })
}

/// `quick`: the 100 ms and 10 ms cases only (1 s adverts make each failover take seconds)
/// and a 2 s CPU window.
pub fn run(out_dir: &Path, runs: usize, quick: bool) -> Result<()> {
    let window = if quick { QUICK_CPU_WINDOW } else { CPU_WINDOW };
    let lab = Lab::builder()
        .backends(2)
        .lb_nodes(2)
        .floating_vip()
        .build()
        .context("lab setup")?;
    let mut rows = Vec::new();
    use Implementation::{Keepalived as Ka, Lbd, LbdAttached};
    let cases: [(Duration, Event, &[Implementation]); 5] = [
        (Duration::from_secs(1), Event::Crash, &[Lbd, Ka]),
        (Duration::from_secs(1), Event::Graceful, &[Lbd, Ka]),
        (
            Duration::from_millis(100),
            Event::Crash,
            &[Lbd, LbdAttached, Ka],
        ),
        (
            Duration::from_millis(100),
            Event::Graceful,
            &[Lbd, LbdAttached, Ka],
        ),
        (
            Duration::from_millis(10),
            Event::Crash,
            &[Lbd, LbdAttached, Ka],
        ),
    ];
    for (interval, event, imps) in cases {
        if quick && interval >= Duration::from_secs(1) {
            continue;
        }
        for &imp in imps {
            let mut results = Vec::new();
            for run in 0..runs {
                let r = failover(&lab, imp, interval, event).with_context(|| {
                    format!("{} {interval:?} {} run {run}", imp.name(), event.name())
                })?;
                results.push(r);
            }
            let row = summarize(imp, interval, event, results);
            eprintln!(
                "  {:<14} {:>6} ms adverts, {:<8}: gap {:.0} / {:.0} / {:.0} ms, on the wire {:.1} ms",
                imp.name(),
                row.advert_interval_ms,
                event.name(),
                row.min_ms,
                row.median_ms,
                row.max_ms,
                row.wire_median_ms
            );
            rows.push(row);
        }
    }
    let mut cpu_rows = Vec::new();
    for (imp, n) in [(Lbd, 0), (Lbd, 1), (Lbd, 10), (Ka, 1)] {
        cpu_rows.push(cpu(&lab, imp, n, window)?);
    }
    drop(lab);

    println!(
        "Failover: service gap a client probing every {} ms sees, and the takeover on the wire \
         (old master's last advert to the new one's first); {runs} runs, ms",
        PROBE_EVERY.as_millis()
    );
    println!(
        "{:>8} {:<9} {:<15} {:>9} {:>22} {:>22} {:>12}",
        "adverts", "event", "", "RFC", "wire min/med/max", "gap min/med/max", "announce us"
    );
    for r in &rows {
        let mut wire = r.wire_ms.clone();
        wire.sort_by(f64::total_cmp);
        let steps = r
            .takeovers
            .iter()
            .map(|t| t.announced_us)
            .max()
            .map_or_else(|| "-".to_owned(), |m| format!("<= {m}"));
        println!(
            "{:>6}ms {:<9} {:<15} {:>9.1} {:>22} {:>22} {:>12}",
            r.advert_interval_ms,
            r.event.name(),
            r.implementation.name(),
            r.protocol_ms,
            format!(
                "{:.1} / {:.1} / {:.1}",
                wire[0],
                r.wire_median_ms,
                wire[wire.len() - 1]
            ),
            format!("{:.0} / {:.0} / {:.0}", r.min_ms, r.median_ms, r.max_ms),
            steps
        );
    }
    println!(
        "\nCPU with 10 ms adverts ({} s window, % of one core, user+system; user alone in brackets):",
        window.as_secs()
    );
    for c in &cpu_rows {
        println!(
            "  {:<18} {:>2} instance(s): master {:.2} % ({:.2}), backup {:.2} % ({:.2})",
            c.implementation,
            c.instances,
            c.master_percent_of_one_core,
            c.master_user_percent,
            c.backup_percent_of_one_core,
            c.backup_user_percent
        );
    }
    let report = serde_json::json!({
        "benchmark": "failover",
        "machine": crate::machine::describe(),
        "probe_interval_ms": ms(PROBE_EVERY),
        "runs": runs,
        "scenarios": rows,
        "cpu_10ms_adverts": cpu_rows,
    });
    let path = out_dir.join("failover.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")?;
    println!("\nwrote {}", path.display());
    Ok(())
}
