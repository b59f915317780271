//! `cargo xtask bench [name]`: run the benchmark runner (package `lb-bench`, dir `bench/`).
//! Everything is built in release mode: numbers from debug binaries would mean nothing.

use std::ffi::OsString;

use anyhow::Result;

use crate::cmd::cmd;
use crate::test::header;

pub fn run(name: Option<OsString>, quick: bool, args: &[OsString]) -> Result<()> {
    header("setup");
    crate::setup::run()?;

    header("build lbd/lbctl (release)");
    cmd("cargo")
        .args(["build", "--release", "-p", "lb-userspace", "--bins"])
        .run()?;

    header("bench");
    cmd("cargo")
        .env("LB_BIN_DIR", crate::target_dir().join("release"))
        .args(["run", "--release", "-p", "lb-bench", "--"])
        .args(quick.then_some("--quick"))
        .args(name)
        .args(args)
        .run()
}
