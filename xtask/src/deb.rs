//! `cargo xtask dist` (man pages and shell completions) and `cargo xtask deb` (the Debian
//! package, built by cargo-deb from `[package.metadata.deb]` in lb-userspace/Cargo.toml).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};

use crate::cmd::cmd;
use crate::test::header;

/// `cargo build` of the userspace workspace, as `cargo xtask test` runs it.
const WORKSPACE: [&str; 4] = ["build", "--workspace", "--exclude", "lb-ebpf"];

/// Which build the package takes its binaries from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Release,
    /// The debug build `cargo xtask test` already made: the package test needs no second,
    /// slow release build to prove what the package installs.
    Debug,
}

impl Profile {
    fn dir(self) -> &'static str {
        match self {
            Profile::Release => "release",
            Profile::Debug => "debug",
        }
    }
}

/// Writes the man pages (gzipped, as Debian installs them) and completions into
/// `<target>/<profile>/dist`, where the package's `target/release/dist/...` assets are
/// looked up (cargo-deb maps `target/release` to the profile it packages). Returns it.
pub fn dist(profile: Profile) -> Result<PathBuf> {
    let out = crate::target_dir().join(profile.dir()).join("dist");
    // The generator only renders the clap definitions, so the dev build serves any
    // profile. Built with the workspace's feature set, as `cargo xtask test` builds: a
    // `-p lb-userspace` build unifies features differently and would rebuild the library.
    cmd("cargo")
        .args(WORKSPACE)
        .args(["--example", "dist-files"])
        .run()?;
    cmd(&crate::target_dir()
        .join("debug/examples/dist-files")
        .to_string_lossy())
    .arg(&out)
    .run()?;
    let man = out.join("man");
    let mut pages: Vec<PathBuf> = fs::read_dir(&man)
        .with_context(|| format!("reading {}", man.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "8"))
        .collect();
    if pages.is_empty() {
        bail!("no man pages were generated in {}", man.display());
    }
    pages.sort();
    // -n: no name or time stamp inside, so the same pages give the same bytes.
    cmd("gzip").args(["-9nf"]).args(&pages).run()?;
    Ok(out)
}

/// Builds the binaries (unless `profile` is Debug, whose build the caller made), the dist
/// files, then the package into `output` (default `<target>/debian`). Prints its path.
pub fn deb(profile: Profile, output: Option<&Path>) -> Result<PathBuf> {
    header("setup");
    crate::setup::run()?;
    header(&format!("build lbd/lbctl ({})", profile.dir()));
    let build = match profile {
        Profile::Release => cmd("cargo").args(["build", "--release", "-p", "lb-userspace"]),
        // The same command as `cargo xtask test`'s build step, so after it this is a no-op
        // and the binaries the other tests run are not rebuilt under them.
        Profile::Debug => cmd("cargo").args(WORKSPACE),
    };
    build.arg("--bins").run()?;
    header("man pages and completions");
    dist(profile)?;

    header("package");
    let output = output.map_or_else(|| crate::target_dir().join("debian"), Path::to_owned);
    fs::create_dir_all(&output).with_context(|| format!("creating {}", output.display()))?;
    let mut deb = cmd("cargo")
        .args(["deb", "-p", "lb-userspace", "--no-build", "--output"])
        .arg(&output);
    if profile == Profile::Debug {
        // cargo-deb warns that it is meant for release builds: this package is for tests.
        deb = deb.args(["--profile", "dev", "--fast"]);
    }
    let printed = deb.read()?;
    let path = printed
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.ends_with(".deb"))
        .map(PathBuf::from)
        .with_context(|| format!("cargo deb did not say where the package went: {printed:?}"))?;
    println!("{}", path.display());
    Ok(path)
}
