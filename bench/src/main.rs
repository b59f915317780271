//! Benchmark runner. Each benchmark prints a table and writes JSON under `bench/results/`.
//! Figures are compared with baselines measured in the same run, so they hold on a noisy
//! machine. Results and how to reproduce them: `bench/README.md`.

mod machine;
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

#[derive(Subcommand, Clone, Copy)]
enum Bench {
    /// Per-packet cost of the XDP program (BPF_PROG_TEST_RUN, kernel-timed) next to an
    /// empty XDP_PASS program and a MAC-swapping XDP_TX baseline.
    Xdp {
        /// Runs per measurement.
        #[arg(long, default_value_t = 1_000_000)]
        repeat: u32,
        /// Measurements per case (the table shows min and median).
        #[arg(long, default_value_t = 7)]
        rounds: usize,
    },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.out)?;
    match args.bench.unwrap_or(Bench::Xdp {
        repeat: 1_000_000,
        rounds: 7,
    }) {
        Bench::Xdp { repeat, rounds } => xdp::run(&args.out, repeat, rounds),
    }
}
