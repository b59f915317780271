//! Benchmark runner. Each benchmark prints a table and writes JSON under `bench/results/`.
//! Figures are compared with baselines measured in the same run, so they hold on a noisy
//! machine. Results and how to reproduce them: `bench/README.md`.

mod control;
mod failover;
mod health;
mod machine;
mod maglev;
mod memlat;
mod pktrate;
mod xdp;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Benchmarks for the XDP load balancer (run as root: they load BPF programs)")]
struct Args {
    /// Where JSON results go.
    #[arg(long, default_value = RESULTS)]
    out: PathBuf,
    /// Reduced counts for every benchmark (all of them in under two minutes): figures for
    /// a quick look, written to `<out>/quick/` so they never replace a full run's.
    #[arg(long, global = true)]
    quick: bool,
    #[command(subcommand)]
    bench: Option<Bench>,
}

const RESULTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/results");

#[derive(Subcommand, Clone)]
enum Bench {
    /// Per-packet cost of the XDP program (BPF_PROG_TEST_RUN, kernel-timed) next to an
    /// empty XDP_PASS program and a MAC-swapping XDP_TX baseline; figures whose counter
    /// checks fail are refused (non-zero exit).
    Xdp {
        /// Runs per measurement.
        #[arg(long, default_value_t = 1_000_000)]
        repeat: u32,
        /// Rounds; each measures the baselines, then every case once (the table shows
        /// min / median / max and the ratio to each round's baseline).
        #[arg(long, default_value_t = 7)]
        rounds: usize,
    },
    /// Maglev: table build time, time from a backend change to the map fully written
    /// (against a per-slot syscall rewrite in the same run), and the fraction of flows moved.
    Maglev {
        /// Measurements per case (median reported).
        #[arg(long, default_value_t = 7)]
        rounds: usize,
    },
    /// Health checks: detection/recovery latency per check kind; CPU and memory for
    /// 1,000 backends checked every second.
    Health {
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// VRRP failover: the service gap a client probing every 10 ms sees on a master crash
    /// and a graceful stop, 1 s and 100 ms adverts, lbd against keepalived in the same run;
    /// 10 ms adverts: the crash gap and lbd's CPU per instance.
    Failover {
        /// Failovers per case (min / median / max reported).
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// Packet rate through a veth: an in-kernel generator (BPF_PROG_TEST_RUN, live
    /// frames) into the balancer (lbd, native XDP, DR) and a counting sink, next to the
    /// swap-and-TX baseline in the same run; 1 LB core and 2 shared cores.
    Pktrate {
        /// Rounds per case (median reported).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Seconds each round measures.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        /// Distinct flows (source address x source port) towards the VIP, sent round-robin;
        /// a comma-separated list measures each.
        #[arg(long, value_delimiter = ',', default_values_t = [1, 1_024, 65_536])]
        flows: Vec<u32>,
    },
    /// Control plane: time for an `lbctl` change end to end (process start to exit, maps
    /// written and checked), next to `lbctl status` in the same run.
    Control {
        /// Calls per change (min / median / max reported).
        #[arg(long, default_value_t = 20)]
        rounds: usize,
    },
    /// The control-plane table (failover gap, health detection, Maglev, lbctl) from the
    /// JSON results of the other benchmarks.
    Summary,
    /// Every benchmark, then the summary.
    All,
    /// (internal) accept and close TCP connections on ADDR: the target of `health`.
    #[command(hide = true)]
    ServeTcp { addr: String },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let quick = args.quick;
    let out = if quick && args.out == std::path::Path::new(RESULTS) {
        args.out.join("quick")
    } else {
        args.out
    };
    std::fs::create_dir_all(&out)?;
    // --quick caps every count, so an explicit smaller one still holds.
    let cap = |n: usize, q: usize| if quick { n.min(q) } else { n };
    let out = &out;
    let health_load = if quick { 3.0 } else { 20.0 };
    let pktrate = |rounds: usize, seconds: f64, flows: Vec<u32>| {
        pktrate::run(
            out,
            &pktrate::Options {
                rounds: cap(rounds, 1),
                window: std::time::Duration::from_secs_f64(if quick {
                    seconds.min(0.5)
                } else {
                    seconds
                }),
                flows,
            },
        )
    };
    match args.bench.unwrap_or(Bench::All) {
        Bench::Xdp { repeat, rounds } => xdp::run(
            out,
            if quick { repeat.min(100_000) } else { repeat },
            cap(rounds, 3),
        ),
        Bench::Maglev { rounds } => maglev::run(out, cap(rounds, 3)),
        Bench::Health { rounds } => health::run(out, cap(rounds, 1), health_load),
        Bench::Failover { runs } => failover::run(out, cap(runs, 1), quick),
        Bench::Pktrate {
            rounds,
            seconds,
            flows,
        } => pktrate(rounds, seconds, flows),
        Bench::Control { rounds } => control::run(out, cap(rounds, 5)),
        Bench::Summary => control::summary(out),
        Bench::ServeTcp { addr } => health::serve_tcp(&addr),
        Bench::All => {
            xdp::run(out, if quick { 100_000 } else { 1_000_000 }, cap(7, 3))?;
            println!();
            maglev::run(out, cap(7, 3))?;
            println!();
            health::run(out, cap(5, 1), health_load)?;
            println!();
            pktrate(3, 2.0, vec![1, 1_024, 65_536])?;
            println!();
            control::run(out, cap(20, 5))?;
            println!();
            failover::run(out, cap(5, 1), quick)?;
            println!();
            control::summary(out)
        }
    }
}
