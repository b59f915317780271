//! Benchmark runner. Each benchmark prints a table and writes JSON under `bench/results/`.
//! Figures are compared with baselines measured in the same run, so they hold on a noisy
//! machine. Results and how to reproduce them: `bench/README.md`.

mod failover;
mod health;
mod machine;
mod maglev;
mod xdp;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Benchmarks for the XDP load balancer (run as root: they load BPF programs)")]
struct Args {
    /// Where JSON results go.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/results"))]
    out: PathBuf,
    #[command(subcommand)]
    bench: Option<Bench>,
}

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
    /// Every benchmark.
    All,
    /// (internal) accept and close TCP connections on ADDR: the target of `health`.
    #[command(hide = true)]
    ServeTcp { addr: String },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.out)?;
    match args.bench.unwrap_or(Bench::All) {
        Bench::Xdp { repeat, rounds } => xdp::run(&args.out, repeat, rounds),
        Bench::Maglev { rounds } => maglev::run(&args.out, rounds),
        Bench::Health { rounds } => health::run(&args.out, rounds),
        Bench::Failover { runs } => failover::run(&args.out, runs),
        Bench::ServeTcp { addr } => health::serve_tcp(&addr),
        Bench::All => {
            xdp::run(&args.out, 1_000_000, 7)?;
            println!();
            maglev::run(&args.out, 7)?;
            println!();
            health::run(&args.out, 5)?;
            println!();
            failover::run(&args.out, 5)
        }
    }
}
