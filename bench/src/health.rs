//! Health checks: how long each check kind takes to notice a backend going down and coming
//! back, against loopback servers that the benchmark breaks and repairs; and what checking
//! 1,000 backends every second costs (CPU and memory of the runner, as lbd runs it).

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    sync::{
        atomic::{AtomicBool, AtomicU16, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use lb_userspace::health::{
    spec::{ExecProbe, HttpProbe, UdpProbe},
    BackendId, CheckSpec, HealthHandle, HealthRunner, Probe, SchedulerConfig, State, Transition,
};
use serde::Serialize;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, UdpSocket},
    sync::mpsc,
};

const INTERVAL: Duration = Duration::from_millis(100);
const TIMEOUT: Duration = Duration::from_millis(50);
const FALL: u32 = 3;
const RISE: u32 = 2;

#[derive(Serialize)]
struct KindRow {
    kind: &'static str,
    detect_ms: [f64; 3],
    recover_ms: [f64; 3],
}

#[derive(Serialize)]
struct LoadRow {
    backends: usize,
    interval_s: f64,
    seconds: f64,
    /// Over the whole window.
    cpu_percent_of_one_core: f64,
    /// Min / median / max over its 5-second parts: how steady the figure is.
    cpu_percent_spread: [f64; 3],
    /// Baseline in the same run: CPU of 1,000 bare connect+close per second from a plain
    /// loop (the kernel's share of a TCP check, which no checker can avoid).
    bare_connect_cpu_percent: f64,
    bare_connect_reset_cpu_percent: f64,
    rss_growth_mib: f64,
    checks_completed: u64,
}

/// A loopback server of each kind that the benchmark can break (`healthy = false`).
struct Target {
    addr: SocketAddr,
    healthy: Arc<AtomicBool>,
    _flag_file: Option<tempfile_path::TempPath>,
}

mod tempfile_path {
    /// A file removed on drop.
    pub struct TempPath(pub std::path::PathBuf);
    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

async fn tcp_target(healthy: Arc<AtomicBool>) -> anyhow::Result<SocketAddr> {
    let mut listener = Some(TcpListener::bind("127.0.0.1:0").await?);
    let addr = listener.as_ref().expect("bound").local_addr()?;
    tokio::spawn(async move {
        loop {
            // Unhealthy: the port is closed, so connects are refused, as when a service dies.
            if !healthy.load(Ordering::Relaxed) {
                listener = None;
                tokio::time::sleep(Duration::from_millis(2)).await;
                continue;
            }
            if listener.is_none() {
                listener = TcpListener::bind(addr).await.ok();
            }
            if let Some(l) = &listener {
                if let Ok(Ok((s, _))) =
                    tokio::time::timeout(Duration::from_millis(5), l.accept()).await
                {
                    drop(s);
                }
            }
        }
    });
    Ok(addr)
}

async fn http_target(healthy: Arc<AtomicBool>) -> anyhow::Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    let status = Arc::new(AtomicU16::new(200));
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            let code = if healthy.load(Ordering::Relaxed) {
                200
            } else {
                status.load(Ordering::Relaxed).max(503)
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(
                        format!(
                            "HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        )
                        .as_bytes(),
                    )
                    .await;
            });
        }
    });
    Ok(addr)
}

async fn udp_target(healthy: Arc<AtomicBool>) -> anyhow::Result<SocketAddr> {
    let s = UdpSocket::bind("127.0.0.1:0").await?;
    let addr = s.local_addr()?;
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        loop {
            if let Ok((n, from)) = s.recv_from(&mut buf).await {
                if healthy.load(Ordering::Relaxed) {
                    let _ = s.send_to(&buf[..n], from).await;
                }
            }
        }
    });
    Ok(addr)
}

async fn target(kind: &str) -> anyhow::Result<(Target, Probe)> {
    let healthy = Arc::new(AtomicBool::new(true));
    let (addr, probe, flag) = match kind {
        "tcp" => (tcp_target(healthy.clone()).await?, Probe::Tcp, None),
        "http" => (
            http_target(healthy.clone()).await?,
            Probe::Http(HttpProbe::get("/")),
            None,
        ),
        "udp" => (
            udp_target(healthy.clone()).await?,
            Probe::Udp(UdpProbe {
                send: b"ping".to_vec(),
                expect: None,
            }),
            None,
        ),
        _ => {
            // exec: healthy while a flag file exists (like a MISC_CHECK script).
            let flag = std::env::temp_dir().join(format!("lb-bench-health-{}", std::process::id()));
            std::fs::write(&flag, b"")?;
            let command = vec![
                "/bin/sh".into(),
                "-c".into(),
                format!("test -e {}", flag.display()),
            ];
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 1));
            (
                addr,
                Probe::Exec(ExecProbe { command }),
                Some(tempfile_path::TempPath(flag)),
            )
        }
    };
    Ok((
        Target {
            addr,
            healthy,
            _flag_file: flag,
        },
        probe,
    ))
}

impl Target {
    fn set_healthy(&self, ok: bool) -> anyhow::Result<()> {
        self.healthy.store(ok, Ordering::Relaxed);
        if let Some(f) = &self._flag_file {
            if ok {
                std::fs::write(&f.0, b"")?;
            } else {
                std::fs::remove_file(&f.0)?;
            }
        }
        Ok(())
    }
}

async fn wait_for(rx: &mut mpsc::Receiver<Transition>, to: State) -> anyhow::Result<()> {
    loop {
        let t = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .context("no transition within 10 s")?
            .context("runner stopped")?;
        if t.to == to {
            return Ok(());
        }
    }
}

fn spread(mut v: Vec<f64>) -> [f64; 3] {
    v.sort_by(f64::total_cmp);
    [v[0], v[v.len() / 2], v[v.len() - 1]]
}

async fn kind_latency(kind: &'static str, rounds: usize) -> anyhow::Result<KindRow> {
    let (target, probe) = target(kind).await?;
    let mut spec = CheckSpec::new(probe);
    spec.interval = INTERVAL;
    spec.timeout = TIMEOUT;
    spec.fall = FALL;
    spec.rise = RISE;
    let (runner, handle, mut rx): (HealthRunner, HealthHandle, _) =
        HealthRunner::new(SchedulerConfig::default());
    tokio::spawn(runner.run());
    handle
        .add_backend(BackendId(1), target.addr, Arc::new(spec))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    tokio::time::sleep(INTERVAL * 3).await;
    let (mut detect, mut recover) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t = Instant::now();
        target.set_healthy(false)?;
        wait_for(&mut rx, State::Down).await?;
        detect.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        target.set_healthy(true)?;
        wait_for(&mut rx, State::Up).await?;
        recover.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(KindRow {
        kind,
        detect_ms: spread(detect),
        recover_ms: spread(recover),
    })
}

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the struct we pass.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
}

/// The backends of the load run, as remote hosts: a namespace `hbs*` holding every address
/// of 10.201.0.0/16 (a local route), reached from the checker's namespace `hbc*` over a veth
/// pair. On loopback the backends' half of every handshake would run in the checker's
/// system calls and be charged to it; here the server side's receive path is steered to the
/// other CPU (RPS on its veth) and the checker is pinned to CPU 0, so the checker process
/// pays what it would pay against remote backends: its own sockets and system calls.
struct BackendNet {
    checker: String,
    server: String,
}

impl BackendNet {
    fn create() -> anyhow::Result<BackendNet> {
        let id = std::process::id();
        let net = BackendNet {
            checker: format!("hbc{id}"),
            server: format!("hbs{id}"),
        };
        lb_tests::netns::add(&net.checker)?;
        lb_tests::netns::add(&net.server)?;
        let (c, s) = (&net.checker, &net.server);
        lb_tests::netns::ip_batch(
            c,
            &[
                format!("link add c0 type veth peer name s0 netns {s}"),
                "addr add 10.200.0.1/30 dev c0".into(),
                "link set lo up".into(),
                "link set c0 up".into(),
                "route add 10.201.0.0/16 via 10.200.0.2".into(),
            ],
        )?;
        lb_tests::netns::ip_batch(
            s,
            &[
                "addr add 10.200.0.2/30 dev s0",
                "link set lo up",
                "link set s0 up",
                "route add local 10.201.0.0/16 dev lo",
            ],
        )?;
        if cpus() > 1 {
            lb_tests::netns::exec(
                s,
                "sh",
                &["-c", "echo 2 > /sys/class/net/s0/queues/rx-0/rps_cpus"],
            )?;
        }
        Ok(net)
    }

    fn backend(i: u32) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::from(0x0ac9_0001 + i), 19090))
    }
}

impl Drop for BackendNet {
    fn drop(&mut self) {
        let _ = lb_tests::netns::del(&self.checker);
        let _ = lb_tests::netns::del(&self.server);
    }
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Pins the calling thread to `cpu`; returns the mask to restore.
fn pin_to(cpu: usize) -> libc::cpu_set_t {
    // SAFETY: plain libc calls on a zeroed cpu_set_t owned here; pid 0 is this thread.
    unsafe {
        let mut old: libc::cpu_set_t = std::mem::zeroed();
        libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut old);
        let mut one: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut one);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &one);
        old
    }
}

fn restore_affinity(mask: &libc::cpu_set_t) {
    // SAFETY: as above.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), mask) };
}

/// CPU of `n` bare blocking connects (closed with a reset when `reset`) to the backends,
/// back to back.
fn bare_connects_cpu(n: u32, reset: bool) -> f64 {
    let c0 = cpu_seconds();
    for i in 0..n {
        if let Ok(s) = std::net::TcpStream::connect(BackendNet::backend(i % 1000)) {
            if reset {
                let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
            }
        }
    }
    (cpu_seconds() - c0) / n as f64
}

async fn thousand_backends(seconds: f64) -> anyhow::Result<LoadRow> {
    let net = BackendNet::create()?;
    let server = std::process::Command::new("ip")
        .args(["netns", "exec", &net.server])
        .arg(std::env::current_exe()?)
        .args(["serve-tcp", "0.0.0.0:19090"])
        .spawn()
        .context("starting the backends' server")?;
    let _kill = scopeguard(server);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // This thread (the runtime's only one) opens every socket of the run, in the checker's
    // namespace.
    let _inside = lb_tests::netns::enter(&net.checker)?;
    let affinity = pin_to(0);
    let rss0 = rss_mib();
    let mut spec = CheckSpec::new(Probe::Tcp);
    spec.interval = Duration::from_secs(1);
    spec.timeout = Duration::from_millis(500);
    let spec = Arc::new(spec);
    let (runner, handle, mut rx) = HealthRunner::new(SchedulerConfig::default());
    tokio::spawn(runner.run());
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    for i in 0..1000u32 {
        handle
            .add_backend(BackendId(i as u64), BackendNet::backend(i), spec.clone())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    // Let the first round settle, then measure a steady window.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let checks0: u64 = handle
        .snapshot()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .iter()
        .map(|s| s.checks)
        .sum();
    let (cpu0, t0) = (cpu_seconds(), Instant::now());
    let mut parts = Vec::new();
    for _ in 0..(seconds / 5.0).ceil() as usize {
        let (c, t) = (cpu_seconds(), Instant::now());
        tokio::time::sleep(Duration::from_secs(5)).await;
        parts.push((cpu_seconds() - c) / t.elapsed().as_secs_f64() * 100.0);
    }
    let (cpu, wall) = (cpu_seconds() - cpu0, t0.elapsed().as_secs_f64());
    let snapshot = handle
        .snapshot()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let down = snapshot.iter().filter(|s| s.state != State::Up).count();
    anyhow::ensure!(
        down == 0,
        "{down} of 1,000 backends were not up: the measurement would be wrong"
    );
    let checks: u64 = snapshot.iter().map(|s| s.checks).sum::<u64>() - checks0;
    let rss_growth_mib = rss_mib() - rss0;
    drop(handle);
    // Baselines: the same connects from a plain loop, closed normally and with a reset (as
    // the TCP check closes).
    let per_connect = bare_connects_cpu(5_000, false);
    let per_connect_reset = bare_connects_cpu(5_000, true);
    restore_affinity(&affinity);
    Ok(LoadRow {
        backends: 1000,
        interval_s: 1.0,
        seconds: wall,
        cpu_percent_of_one_core: cpu / wall * 100.0,
        cpu_percent_spread: spread(parts),
        bare_connect_cpu_percent: per_connect * (checks as f64 / wall) * 100.0,
        bare_connect_reset_cpu_percent: per_connect_reset * (checks as f64 / wall) * 100.0,
        rss_growth_mib,
        checks_completed: checks,
    })
}

/// Kills the child on drop.
fn scopeguard(child: std::process::Child) -> impl Drop {
    struct Guard(std::process::Child);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    Guard(child)
}

/// `lb-bench serve-tcp ADDR`: accepts and closes connections (the target of the load run,
/// in its own process so its CPU is not counted as the checker's).
pub fn serve_tcp(addr: &str) -> anyhow::Result<()> {
    let l = std::net::TcpListener::bind(addr)?;
    for s in l.incoming() {
        drop(s);
    }
    Ok(())
}

/// `load_seconds`: how long the 1,000-backend load is measured.
pub fn run(out_dir: &Path, rounds: usize, load_seconds: f64) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (kinds, load) = rt.block_on(async {
        let mut kinds = Vec::new();
        for kind in ["tcp", "http", "udp", "exec"] {
            kinds.push(kind_latency(kind, rounds).await?);
        }
        anyhow::Ok((kinds, thousand_backends(load_seconds).await?))
    })?;
    println!(
        "Health checks: detection and recovery (interval {} ms, timeout {} ms, fall {FALL}, rise {RISE}; {rounds} runs; min/median/max ms)",
        INTERVAL.as_millis(),
        TIMEOUT.as_millis()
    );
    println!(
        "{:<6} {:>26} {:>26}",
        "kind", "down after (ms)", "up again after (ms)"
    );
    for k in &kinds {
        let f = |v: [f64; 3]| format!("{:.0} / {:.0} / {:.0}", v[0], v[1], v[2]);
        println!(
            "{:<6} {:>26} {:>26}",
            k.kind,
            f(k.detect_ms),
            f(k.recover_ms)
        );
    }
    println!(
        "\n1,000 TCP-checked backends every 1 s for {:.0} s: {:.2} % of one core (5 s parts: {:.2} / {:.2} / {:.2}; bare blocking connects alone, same rate: {:.2} % closed normally, {:.2} % closed with a reset), RSS +{:.1} MiB, {} checks",
        load.seconds, load.cpu_percent_of_one_core, load.cpu_percent_spread[0], load.cpu_percent_spread[1], load.cpu_percent_spread[2], load.bare_connect_cpu_percent, load.bare_connect_reset_cpu_percent, load.rss_growth_mib, load.checks_completed
    );
    let report = serde_json::json!({ "benchmark": "health", "machine": crate::machine::describe(), "interval_ms": INTERVAL.as_millis(),
        "timeout_ms": TIMEOUT.as_millis(), "fall": FALL, "rise": RISE, "kinds": kinds, "load": load });
    let path = out_dir.join("health.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")?;
    println!("\nwrote {}", path.display());
    Ok(())
}
