//! `cargo xtask`: the project's developer tasks, in Rust so that they behave the same on
//! every machine (alias in `.cargo/config.toml`).
//!
//! This crate depends on no other workspace crate: on a fresh machine it has to build and
//! run before bpf-linker exists, because installing bpf-linker is one of its jobs.

mod bench;
mod cmd;
mod deb;
mod demo;
mod setup;
mod test;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Developer tasks for the XDP load balancer",
    long_about = "Developer tasks for the XDP load balancer.\n\n\
        Every task except `setup` runs `setup` first, so `cargo xtask test` works on a fresh machine."
)]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what is missing (nightly + rust-src, Debian packages, bpf-linker for LLVM 22,
    /// cargo-deb, bpffs); skips everything already present
    ///
    /// Idempotent: when nothing is missing it prints one line and takes well under a second.
    /// Root is needed only to install Debian packages and to mount bpffs.
    Setup,
    /// Run setup, then rustfmt, clippy (userspace and eBPF), build lbd/lbctl and run all tests
    ///
    /// Stops at the first failing step. Tests find the binaries through LB_BIN_DIR.
    /// Example: `cargo xtask test -- config -- --nocapture` (test-name filter, harness flag).
    Test {
        /// Extra arguments for `cargo test`, after `--`
        #[arg(last = true, value_name = "CARGO_TEST_ARGS")]
        args: Vec<OsString>,
    },
    /// Run setup, build lbd/lbctl and the demo, then run the demo (needs root)
    Demo {
        /// Extra arguments for the demo binary, after `--`
        #[arg(last = true, value_name = "DEMO_ARGS")]
        args: Vec<OsString>,
    },
    /// Write lbd's and lbctl's man pages and shell completions into target/debug/dist
    ///
    /// Generated from the same clap definitions the binaries parse with.
    Dist,
    /// Run setup, build lbd/lbctl in release mode, man pages and completions, then the Debian
    /// package (cargo-deb) into target/debian
    ///
    /// Install it with `dpkg -i target/debian/lbd_*.deb`; docs/operations.md says what
    /// it installs and what to do next.
    Deb {
        /// Package the debug build instead (quick; what the package test uses)
        #[arg(long)]
        debug: bool,
        /// Directory to write the .deb into (default: target/debian)
        #[arg(short, long, value_name = "DIR")]
        output: Option<PathBuf>,
    },
    /// Run setup, build lbd/lbctl in release mode, then run the benchmark runner (lb-bench)
    Bench {
        /// Which benchmark to run (passed to lb-bench; default: its own choice)
        name: Option<OsString>,
        /// Reduced counts: every benchmark in under two minutes (results in bench/results/quick)
        #[arg(long)]
        quick: bool,
        /// Extra arguments for lb-bench, after `--`
        #[arg(last = true, value_name = "BENCH_ARGS")]
        args: Vec<OsString>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    put_cargo_bin_on_path();
    let result = match cli.command {
        Task::Setup => setup::run().map(drop),
        Task::Test { args } => test::run(&args),
        Task::Demo { args } => demo::run(&args),
        Task::Bench { name, quick, args } => bench::run(name, quick, &args),
        Task::Dist => setup::run()
            .and_then(|_| deb::dist(deb::Profile::Debug))
            .map(|dir| println!("{}", dir.display())),
        Task::Deb { debug, output } => {
            let profile = if debug {
                deb::Profile::Debug
            } else {
                deb::Profile::Release
            };
            deb::deb(profile, output.as_deref()).map(drop)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root. xtask is always built from this tree, so the compile-time
/// manifest dir is reliable and needs no `cargo metadata` call.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` (relative to the root, where xtask runs
/// cargo) or `<root>/target`. Absolute, because tests get it through LB_BIN_DIR and may
/// change their working directory.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root().join(dir),
        _ => root().join("target"),
    }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `cargo install` puts bpf-linker in `$CARGO_HOME/bin` (`~/.cargo/bin`), which is not on
/// PATH in every shell (e.g. `sudo`, CI runners). rustc looks the linker up on PATH, so
/// prepend that directory here; every child process (cargo, rustc, tests) inherits it.
fn put_cargo_bin_on_path() {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")));
    let Some(bin) = cargo_home.map(|h| h.join("bin")) else {
        return;
    };
    let old = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&old).collect();
    if dirs.first() == Some(&bin) {
        return;
    }
    dirs.retain(|d| d != &bin);
    dirs.insert(0, bin);
    if let Ok(path) = std::env::join_paths(dirs) {
        // Single-threaded at this point, so changing the environment is sound.
        std::env::set_var("PATH", path);
    }
}
