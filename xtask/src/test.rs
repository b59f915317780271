//! `cargo xtask test`: what CI runs (`.ci/run`). Setup, then each step with a header,
//! stopping at the first failure, then the total wall time.

use std::ffi::OsString;
use std::time::Instant;

use anyhow::{Context as _, Result};

use crate::cmd::{cmd, Cmd};

pub fn run(extra: &[OsString]) -> Result<()> {
    let start = Instant::now();
    let result = steps(extra);
    let secs = start.elapsed().as_secs_f64();
    match &result {
        Ok(()) => eprintln!("\ntest: all steps passed in {secs:.1}s"),
        Err(_) => eprintln!("\ntest: FAILED after {secs:.1}s"),
    }
    result
}

fn steps(extra: &[OsString]) -> Result<()> {
    header("setup");
    crate::setup::run()?;

    // Integration tests start the real `lbd`/`lbctl`; they find them here.
    let bin_dir = crate::target_dir().join("debug");

    let steps: Vec<(&str, Cmd)> = vec![
        (
            "rustfmt",
            cmd("cargo").args(["fmt", "--all", "--", "--check"]),
        ),
        (
            // lb-ebpf only builds for bpfel-unknown-none (its panic handler clashes with
            // std's on the host), so it is excluded here and linted on its own below.
            "clippy: userspace, all targets",
            cmd("cargo").args([
                "clippy",
                "--workspace",
                "--exclude",
                "lb-ebpf",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]),
        ),
        (
            // On the host target with panic=abort the no_std bin type-checks and clippy
            // can lint it. `--all-targets` would add a test harness, which needs
            // nightly's -Zpanic_abort_tests; the crate has no tests, so it is left out.
            "clippy: lb-ebpf (host target, panic=abort)",
            cmd("cargo").args([
                "clippy",
                "-p",
                "lb-ebpf",
                "--",
                "-D",
                "warnings",
                "-C",
                "panic=abort",
            ]),
        ),
        (
            // `cargo test` builds only the test harnesses; the integration tests run the
            // binaries, so build them first.
            "build lbd/lbctl and the other binaries",
            cmd("cargo").args(["build", "--workspace", "--exclude", "lb-ebpf", "--bins"]),
        ),
        (
            "cargo test",
            cmd("cargo")
                .env("LB_BIN_DIR", &bin_dir)
                .args([
                    "test",
                    "--workspace",
                    "--exclude",
                    "lb-ebpf",
                    "--no-fail-fast",
                ])
                .args(extra),
        ),
    ];

    let total = steps.len();
    for (i, (title, step)) in steps.into_iter().enumerate() {
        header(&format!("[{}/{total}] {title}", i + 1));
        step.run()
            .with_context(|| format!("step {}/{total} ({title})", i + 1))?;
    }
    Ok(())
}

pub fn header(title: &str) {
    eprintln!("\n==> {title}");
}
