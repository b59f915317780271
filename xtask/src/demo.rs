//! `cargo xtask demo`: build the agent and the demo, then run the demo. The demo creates
//! network namespaces and loads XDP programs, hence root.

use std::ffi::OsString;

use anyhow::{bail, Result};

use crate::cmd::cmd;
use crate::test::header;

pub fn run(args: &[OsString]) -> Result<()> {
    // Checked before setup and the builds, so a non-root user learns it in a second.
    if !crate::is_root() {
        bail!("the demo creates network namespaces and loads XDP programs: run it as root (e.g. `sudo -E cargo xtask demo`)");
    }
    header("setup");
    crate::setup::run()?;

    header("build lbd/lbctl and the demo");
    cmd("cargo")
        .args(["build", "-p", "lb-userspace", "--bins"])
        .run()?;
    cmd("cargo")
        .args(["build", "-p", "lb-tests", "--bin", "demo"])
        .run()?;

    header("demo");
    let bin_dir = crate::target_dir().join("debug");
    cmd(&bin_dir.join("demo").to_string_lossy())
        .env("LB_BIN_DIR", &bin_dir)
        .args(args)
        .run()
}
