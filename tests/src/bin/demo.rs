//! The load balancer at work, in a namespace lab: a client opens TCP connections and UDP
//! flows to the VIP, the XDP program on the balancer spreads them over the backends, the
//! backends answer the client directly. Two balancers run lbd with VRRP: the master holds
//! the VIP and forwards; then the master node dies (lbd killed with kill -9, its program gone with it),
//! the backup takes over, and the
//! same traffic flows through it. Prints who served what, from the client's and the
//! programs' point of view, and the service gap a client probing every 10 ms saw, then
//! removes the lab.
//!
//! Needs root. `cargo xtask demo`, or `cargo run -p lb-tests --bin demo -- --help`.

use std::{
    collections::BTreeMap,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use lb_tests::{lab, vrrp, Lab};
use lb_userspace::control::StatsReport;

const USAGE: &str = "\
usage: demo [--backends N] [--connections N (at most 5000)]

Builds a namespace lab (client, two load balancers, N backends, default 3), starts lbd with
VRRP (100 ms adverts) on both balancers, sends --connections TCP connections and as many UDP
flows (default 300) to the VIP 10.99.0.50:80 and prints how they were spread; then kills the
master, measures the failover gap a client probing every 10 ms sees, and sends the same
traffic through the new master. Needs root.

Environment: LB_BIN_DIR  directory holding lbd (default: <workspace>/target/debug)";

const TIMEOUT: Duration = Duration::from_secs(2);
const REQUESTS_PER_RUN: usize = 3;
const MAX_CONNECTIONS: usize = 5000;

struct Args {
    backends: usize,
    connections: usize,
}

fn parse_args() -> Result<Option<Args>> {
    let mut args = Args {
        backends: 3,
        connections: 300,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut number = |what: &str| -> Result<usize> {
            let v = it
                .next()
                .with_context(|| format!("{what} needs a number"))?;
            v.parse()
                .with_context(|| format!("{what} {v:?}: not a number"))
        };
        match a.as_str() {
            "--backends" => args.backends = number("--backends")?,
            "--connections" => args.connections = number("--connections")?,
            "-h" | "--help" => return Ok(None),
            other => bail!("unknown argument {other:?}\n\n{USAGE}"),
        }
    }
    // Every connection stays open until the run ends (so each keeps its source port) and
    // costs three descriptors in this process, client and server side.
    if !(1..=MAX_CONNECTIONS).contains(&args.connections) {
        bail!("--connections must be 1..={MAX_CONNECTIONS}");
    }
    Ok(Some(args))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("demo: {e:#}");
            return ExitCode::from(2);
        }
    };
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("demo: needs root (network namespaces, XDP); try `sudo -E cargo xtask demo`");
        return ExitCode::from(2);
    }
    if let Err(e) = clean_up_on_signals() {
        eprintln!("demo: {e:#}");
        return ExitCode::FAILURE;
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Ctrl-C (or SIGTERM, SIGHUP) tears the lab down before exiting, from a thread that
/// waits for the signal; the labs' own destructors never run when a signal kills the
/// process. Must run before any other thread starts, so they all inherit the blocked mask
/// and only the waiting thread receives these signals.
fn clean_up_on_signals() -> Result<()> {
    // SAFETY: plain libc signal-set manipulation on a local set.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            bail!("pthread_sigmask: {}", std::io::Error::from_raw_os_error(rc));
        }
        set
    };
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut sig = 0;
            // SAFETY: `set` and `sig` are valid for the call.
            if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
                eprintln!("\ndemo: signal {sig}, removing the lab");
                lab::teardown_all();
                std::process::exit(128 + sig);
            }
        })
        .context("spawning the signal thread")?;
    Ok(())
}

fn run(args: &Args) -> Result<()> {
    let t = Instant::now();
    let lab = Lab::builder()
        .backends(args.backends)
        .lb_nodes(2)
        .floating_vip()
        .build()?;
    let (a, b) = (&lab.lb_nodes()[0], &lab.lb_nodes()[1]);
    println!(
        "lab {} up in {:?}: client {}, balancers {} and {} (VIP {}), backends {}",
        lab.prefix(),
        t.elapsed(),
        lab.client().addr,
        a.addr,
        b.addr,
        lab.vip(),
        lab.backends()
            .iter()
            .map(|b| format!("{} {}", b.name(), b.node.addr))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // Both balancers serve the same VIP; VRRP decides which one holds it.
    let config_a = lab.write_lbd_config_on(0, &vrrp::lbd_vrrp(51, 150, 3, "100ms", ""));
    let config_b = lab.write_lbd_config_on(1, &vrrp::lbd_vrrp(51, 100, 3, "100ms", ""));
    let elected = Instant::now();
    let mut lbd_a = lab.spawn_lbd_on(0, &config_a)?;
    let lbd_b = lab.spawn_lbd_on(1, &config_b)?;
    vrrp::wait_lbd_state(lbd_a.socket(), "master", Duration::from_secs(3))?;
    vrrp::wait_lbd_state(lbd_b.socket(), "backup", Duration::from_secs(1))?;
    println!(
        "lbd on {} (pid {}, priority 150) is VRRP master {:.0?} after its start: it holds the VIP and has XDP attached; \
         lbd on {} (pid {}, priority 100) is backup",
        a.role,
        lbd_a.pid(),
        elected.elapsed(),
        b.role,
        lbd_b.pid()
    );

    let (tcp, udp) = traffic(&lab, args.connections, "through the master")?;
    print_table(&lab, &count(&tcp), &count(&udp), &lbd_a.stats()?);
    print_failures("TCP connection", &tcp);
    print_failures("UDP flow", &udp);

    println!(
        "\nthe master {} dies (kill -9 of lbd, its program gone with it) while the client probes the VIP every 10 ms ...",
        a.role
    );
    let prober = vrrp::Prober::start(
        &lab.client().ns,
        lab.vip(),
        Duration::from_millis(10),
        Duration::from_millis(50),
    );
    std::thread::sleep(Duration::from_millis(300));
    let killed = Instant::now();
    lbd_a.kill()?;
    // lbd's program is pinned and outlives lbd (a restarted lbd takes over without a gap);
    // a dead machine takes its data plane with it.
    lb_userspace::dataplane::cleanup(&lab.pin_dir(0))?;
    let status = vrrp::wait_lbd_state(lbd_b.socket(), "master", Duration::from_secs(2))?;
    let took = vrrp::last_change(&status, Instant::now()).saturating_duration_since(killed);
    std::thread::sleep(Duration::from_millis(300));
    let probes = prober.finish()?;
    println!(
        "lbd on {} became master {took:.0?} after the crash (3 advert intervals + Skew_Time after the \
         master's last advert: 360.9 ms); the client's longest gap: {:.0?} ({} of {} probes unanswered)",
        b.role,
        probes.longest_gap(),
        probes.unanswered(),
        probes.0.len()
    );
    if let Some(t) = status.last_takeover {
        println!(
            "  what the new master did after deciding: advert +{} us, XDP attached +{} us (0: already, \
             attached early when the master fell silent), VIP added +{} us, first gratuitous ARP +{} us",
            t.advert_us, t.xdp_attached_us, t.addresses_us, t.announced_us
        );
    }

    let (tcp2, udp2) = traffic(&lab, args.connections, "through the new master")?;
    print_table(&lab, &count(&tcp2), &count(&udp2), &lbd_b.stats()?);
    print_failures("TCP connection", &tcp2);
    print_failures("UDP flow", &udp2);

    drop(lbd_b);
    drop(lbd_a);
    println!("\nlbd stopped; removing the lab");
    drop(lab);
    let failed = tcp
        .iter()
        .chain(&udp)
        .chain(&tcp2)
        .chain(&udp2)
        .filter(|r| r.is_err())
        .count();
    if failed > 0 {
        bail!("{failed} connections or flows failed");
    }
    Ok(())
}

type Results = Vec<Result<String>>;

/// `n` TCP connections and `n` UDP flows to the VIP.
fn traffic(lab: &Lab, n: usize, what: &str) -> Result<(Results, Results)> {
    let t = Instant::now();
    let tcp = lab.tcp_requests(lab.vip(), n, REQUESTS_PER_RUN, TIMEOUT);
    let tcp_time = t.elapsed();
    let t = Instant::now();
    let udp = lab.udp_requests(lab.vip(), n, REQUESTS_PER_RUN, TIMEOUT);
    let udp_time = t.elapsed();
    println!(
        "\n{n} TCP connections ({REQUESTS_PER_RUN} requests each) in {tcp_time:.2?}, \
         {n} UDP flows ({REQUESTS_PER_RUN} datagrams each) in {udp_time:.2?}, {what}:\n"
    );
    Ok((tcp, udp))
}

fn count(results: &[Result<String>]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for name in results.iter().flatten() {
        *m.entry(name.clone()).or_default() += 1;
    }
    m
}

fn print_table(
    lab: &Lab,
    tcp: &BTreeMap<String, usize>,
    udp: &BTreeMap<String, usize>,
    stats: &StatsReport,
) {
    let total: usize = tcp.values().chain(udp.values()).sum();
    // Packets the program sent to each backend, per protocol, by backend address.
    let mut lb_packets: BTreeMap<(String, String), u64> = BTreeMap::new();
    for v in &stats.vips {
        for b in &v.backends {
            *lb_packets
                .entry((b.address.to_string(), v.protocol.clone()))
                .or_default() += b.packets;
        }
    }
    println!(
        "{:<8} {:<11} {:>9} {:>9} {:>7}   {:>14} {:>14}",
        "backend", "address", "TCP conns", "UDP flows", "share", "LB pkts (TCP)", "LB pkts (UDP)"
    );
    println!("{}", "-".repeat(81));
    for b in lab.backends() {
        let (t, u) = (
            tcp.get(b.name()).copied().unwrap_or(0),
            udp.get(b.name()).copied().unwrap_or(0),
        );
        let share = if total == 0 {
            0.0
        } else {
            100.0 * (t + u) as f64 / total as f64
        };
        let addr = b.node.addr.to_string();
        let pkts = |proto: &str| {
            lb_packets
                .get(&(addr.clone(), proto.to_owned()))
                .copied()
                .unwrap_or(0)
        };
        println!(
            "{:<8} {:<11} {:>9} {:>9} {:>6.1}%   {:>14} {:>14}",
            b.name(),
            addr,
            t,
            u,
            share,
            pkts("tcp"),
            pkts("udp")
        );
    }
    println!("\nXDP verdicts on the balancer (direct return: replies bypass it):");
    for r in stats.reasons.iter().filter(|r| r.packets > 0) {
        println!(
            "  {:<22} {:<5} {:>8} packets  {}",
            r.reason, r.verdict, r.packets, r.description
        );
    }
}

fn print_failures(what: &str, results: &[Result<String>]) {
    for (i, r) in results.iter().enumerate() {
        if let Err(e) = r {
            eprintln!("{what} #{i} failed: {e:#}");
        }
    }
}
