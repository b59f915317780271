//! `cargo xtask setup`: make this machine able to build, load and test the XDP program.
//!
//! Each step checks first and changes nothing when its piece is present, so running setup
//! before every task is cheap. Versions and reasons are in docs/toolchain.md
//! (/work/shared/TOOLCHAIN.md): the eBPF crate is built by `rustup run nightly` with
//! `-Z build-std`, and bpf-linker must be linked against the LLVM major of that nightly (22).

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context as _, Result};

use crate::cmd::cmd;
use crate::is_root;

/// Debian packages: LLVM 22 to build bpf-linker (zstd/zlib headers for its link),
/// iproute2/ethtool for the network labs, keepalived/nftables for the failover tests,
/// systemd for `systemd-analyze verify` of the unit (the package test).
const DEBS: &[&str] = &[
    "llvm-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "iproute2",
    "ethtool",
    "keepalived",
    "nftables",
    "systemd",
];

const BPF_LINKER_VERSION: &str = "0.13.0";
/// Builds the Debian package (`cargo xtask deb`). 3.8.0 needs rustc 1.85; any 3.x reads our
/// `[package.metadata.deb]` the same way.
const CARGO_DEB_VERSION: &str = "3.8.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
/// What `ldd bpf-linker` must show: the linker emits code with the LLVM it links, and that
/// must be the same major as the nightly rustc's LLVM.
const LLVM_SONAME: &str = "libLLVM.so.22";
const BPFFS: &str = "/sys/fs/bpf";

#[derive(Default)]
struct Report {
    /// Short names of the pieces that were already there.
    present: Vec<String>,
    /// Short names of the pieces this run installed or mounted.
    installed: Vec<String>,
}

/// Runs every step in order and prints one summary line. Returns whether anything was
/// installed (callers don't need it today, but tests of setup itself might).
pub fn run() -> Result<bool> {
    let start = Instant::now();
    let mut report = Report::default();
    rust_toolchain(&mut report)?;
    debian_packages(&mut report)?;
    bpf_linker(&mut report)?;
    cargo_deb(&mut report)?;
    bpffs(&mut report)?;
    let memlock = raise_memlock();

    if report.installed.is_empty() {
        println!(
            "setup: everything present ({}, {memlock})",
            report.present.join(", ")
        );
    } else {
        println!(
            "setup: installed {}; already present: {}; {memlock} ({:.1}s)",
            report.installed.join(", "),
            if report.present.is_empty() {
                "nothing".to_owned()
            } else {
                report.present.join(", ")
            },
            start.elapsed().as_secs_f64()
        );
    }
    Ok(!report.installed.is_empty())
}

// ---------------------------------------------------------------------------------------
// Rust: the `nightly` channel (aya-build runs `rustup run nightly cargo ...`) and its
// rust-src (needed by `-Z build-std=core` for bpfel-unknown-none).

fn rust_toolchain(report: &mut Report) -> Result<()> {
    const BY_HAND: &str = "by hand: rustup toolchain install nightly --profile minimal \
                           && rustup component add rust-src --toolchain nightly";
    let mut installed = Vec::new();

    let list = cmd("rustup")
        .args(["toolchain", "list"])
        .read()
        .context("cannot list rustup toolchains; rustup (https://rustup.rs) is required")?;
    if !has_nightly_channel(&list) {
        eprintln!("setup: the nightly toolchain is missing; installing it");
        cmd("rustup")
            .args(["toolchain", "install", "nightly", "--profile", "minimal"])
            .run()
            .with_context(|| format!("installing the nightly toolchain failed; {BY_HAND}"))?;
        installed.push("nightly");
    }

    let components = cmd("rustup")
        .args(["component", "list", "--toolchain", "nightly", "--installed"])
        .read()?;
    if !components.lines().any(|l| l.trim().starts_with("rust-src")) {
        eprintln!("setup: rust-src for nightly is missing; installing it");
        cmd("rustup")
            .args(["component", "add", "rust-src", "--toolchain", "nightly"])
            .run()
            .with_context(|| format!("adding rust-src to nightly failed; {BY_HAND}"))?;
        installed.push("rust-src");
    }

    match installed.len() {
        0 => report.present.push("nightly+rust-src".into()),
        1 if installed[0] == "rust-src" => {
            report.present.push("nightly".into());
            report.installed.push("rust-src (nightly)".into());
        }
        _ => report.installed.push("nightly+rust-src".into()),
    }
    Ok(())
}

/// True when `rustup toolchain list` shows the plain `nightly-<host>` channel. A dated
/// `nightly-2026-05-19-<host>` does not count: aya-build asks for `nightly` by name.
fn has_nightly_channel(list: &str) -> bool {
    list.lines().any(|line| {
        let name = line.split_whitespace().next().unwrap_or("");
        match name.strip_prefix("nightly") {
            Some("") => true,
            Some(rest) => rest
                .strip_prefix('-')
                .and_then(|r| r.chars().next())
                .is_some_and(|c| !c.is_ascii_digit()),
            None => false,
        }
    })
}

// ---------------------------------------------------------------------------------------
// Debian packages.

fn debian_packages(report: &mut Report) -> Result<()> {
    let missing = missing_debs()?;
    if missing.is_empty() {
        report.present.push(DEBS.join(" "));
        return Ok(());
    }
    let list = missing.join(" ");
    let by_hand = format!(
        "as root: apt-get update && DEBIAN_FRONTEND=noninteractive \
         apt-get install -y --no-install-recommends {list}"
    );
    if !is_root() {
        bail!("missing Debian packages: {list}; installing them needs root. Fix {by_hand}");
    }
    eprintln!("setup: installing Debian packages: {list}");
    {
        // Order matters: the signal guard must outlive the policy guard, so that an
        // interrupt during apt still restores policy-rc.d.
        let _signals = DeferSignals::new();
        let _no_services = NoServiceStarts::new()?;
        cmd("apt-get").arg("update").run().with_context(|| {
            format!("apt-get update failed (no network?); missing: {list}. Fix {by_hand}")
        })?;
        cmd("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .run()
            .with_context(|| format!("apt-get install failed; missing: {list}. Fix {by_hand}"))?;
    }
    if missing.contains(&"keepalived") {
        stop_host_keepalived();
    }
    let still = missing_debs()?;
    if !still.is_empty() {
        bail!(
            "after apt-get install these are still not installed: {}. Fix {by_hand}",
            still.join(" ")
        );
    }
    let present: Vec<&str> = DEBS
        .iter()
        .copied()
        .filter(|p| !missing.contains(p))
        .collect();
    if !present.is_empty() {
        report.present.push(present.join(" "));
    }
    report.installed.push(list);
    Ok(())
}

/// One `dpkg-query` for all packages. It exits 1 if any name is unknown to dpkg, but still
/// prints the known ones, so the exit status is ignored and absent lines mean "missing".
fn missing_debs() -> Result<Vec<&'static str>> {
    let out = cmd("dpkg-query")
        .args(["-W", "-f=${Package} ${Status}\n"])
        .args(DEBS)
        .read_lenient()
        .with_context(|| {
            format!(
                "setup only knows Debian (dpkg); install by hand the equivalents of: {}",
                DEBS.join(" ")
            )
        })?;
    let installed = |pkg: &str| {
        out.lines().any(|l| {
            l.split_once(' ').is_some_and(|(name, status)| {
                name == pkg && status.trim() == "install ok installed"
            })
        })
    };
    Ok(DEBS.iter().copied().filter(|p| !installed(p)).collect())
}

/// Debian's keepalived package starts its service from postinst. The labs run their own
/// keepalived instances inside network namespaces; one on the host would send VRRP on
/// host interfaces. While apt runs, `/usr/sbin/policy-rc.d` answers 101 ("action
/// forbidden"), which both invoke-rc.d and deb-systemd-invoke obey. Any existing
/// policy-rc.d is moved aside and put back afterwards.
struct NoServiceStarts {
    saved: bool,
}

const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";
const POLICY_RC_D_SAVED: &str = "/usr/sbin/policy-rc.d.xtask-saved";

impl NoServiceStarts {
    fn new() -> Result<Self> {
        // A leftover backup means an earlier run was killed while apt ran: the file in
        // place is ours, the backup is the original.
        if Path::new(POLICY_RC_D_SAVED).exists() {
            fs::rename(POLICY_RC_D_SAVED, POLICY_RC_D)
                .with_context(|| format!("restoring {POLICY_RC_D} from {POLICY_RC_D_SAVED}"))?;
        }
        let saved = Path::new(POLICY_RC_D).exists();
        if saved {
            fs::rename(POLICY_RC_D, POLICY_RC_D_SAVED)
                .with_context(|| format!("moving {POLICY_RC_D} aside"))?;
        }
        let guard = Self { saved };
        fs::write(
            POLICY_RC_D,
            "#!/bin/sh\n# Written by `cargo xtask setup` while apt runs: start no services.\nexit 101\n",
        )
        .with_context(|| format!("writing {POLICY_RC_D}"))?;
        fs::set_permissions(POLICY_RC_D, fs::Permissions::from_mode(0o755))
            .with_context(|| format!("chmod {POLICY_RC_D}"))?;
        Ok(guard)
    }
}

impl Drop for NoServiceStarts {
    fn drop(&mut self) {
        let result = if self.saved {
            fs::rename(POLICY_RC_D_SAVED, POLICY_RC_D)
        } else {
            fs::remove_file(POLICY_RC_D)
        };
        if let Err(e) = result {
            eprintln!("setup: warning: could not restore {POLICY_RC_D}: {e}");
        }
    }
}

/// While apt runs, Ctrl-C (SIGINT to the whole foreground group) or a SIGTERM/SIGHUP must
/// not kill xtask before the guards above restore policy-rc.d. A do-nothing handler (not
/// SIG_IGN) is used because exec resets handled signals to their default in apt, so apt
/// itself still stops on Ctrl-C; xtask then sees the failed status and cleans up.
struct DeferSignals {
    old: Vec<(libc::c_int, libc::sighandler_t)>,
}

extern "C" fn note_signal(_: libc::c_int) {}

impl DeferSignals {
    fn new() -> Self {
        let handler = note_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        let old = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP]
            .into_iter()
            // SAFETY: the handler is async-signal-safe (it does nothing).
            .map(|sig| (sig, unsafe { libc::signal(sig, handler) }))
            .collect();
        Self { old }
    }
}

impl Drop for DeferSignals {
    fn drop(&mut self) {
        for &(sig, old) in &self.old {
            // SAFETY: restores the disposition that was in place before `new`.
            unsafe { libc::signal(sig, old) };
        }
    }
}

/// policy-rc.d stops the postinst from starting keepalived; on a systemd host also make
/// sure nothing else did (e.g. a unit pulled in by a socket or path trigger).
fn stop_host_keepalived() {
    if Path::new("/run/systemd/system").exists() {
        let _ = cmd("systemctl").args(["stop", "keepalived"]).read_lenient();
    }
}

// ---------------------------------------------------------------------------------------
// bpf-linker, built against Debian's LLVM 22.

fn bpf_linker(report: &mut Report) -> Result<()> {
    let by_hand = format!(
        "by hand: LLVM_PREFIX={LLVM_PREFIX} cargo install bpf-linker --version {BPF_LINKER_VERSION} \
         --locked --no-default-features --features llvm-22 --force"
    );
    let found = find_on_path("bpf-linker");
    let problem = match &found {
        None => "not found on PATH or in ~/.cargo/bin".to_owned(),
        Some(path) => match linked_llvm(path)? {
            Some(lib) if lib.starts_with(LLVM_SONAME) => {
                report
                    .present
                    .push(format!("bpf-linker {}/LLVM 22", linker_version(path)));
                return Ok(());
            }
            Some(lib) => format!("{} links {lib}, not {LLVM_SONAME}", path.display()),
            None => format!("{} does not link {LLVM_SONAME}", path.display()),
        },
    };
    eprintln!("setup: bpf-linker {problem}; building {BPF_LINKER_VERSION} against LLVM 22 (about a minute)");
    let mut install = cmd("cargo")
        .env("LLVM_PREFIX", LLVM_PREFIX)
        .args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--locked",
        ])
        .args(["--no-default-features", "--features", "llvm-22"])
        // Outside the workspace so that its .cargo/config.toml cannot change the build.
        .current_dir("/");
    if found.is_some() {
        // Without --force, cargo would say "already installed" for the same version.
        install = install.arg("--force");
    }
    install.run().with_context(|| {
        format!("building bpf-linker failed (needs llvm-22-dev and crates.io); {by_hand}")
    })?;

    let path = find_on_path("bpf-linker")
        .with_context(|| format!("bpf-linker was installed but is not on PATH; {by_hand}"))?;
    match linked_llvm(&path)? {
        Some(lib) if lib.starts_with(LLVM_SONAME) => {}
        _ => bail!(
            "{} still does not link {LLVM_SONAME} after installing; is another bpf-linker \
             earlier on PATH? {by_hand}",
            path.display()
        ),
    }
    report
        .installed
        .push(format!("bpf-linker {}/LLVM 22", linker_version(&path)));
    Ok(())
}

/// `command -v`: the first executable file with this name on PATH (which already starts
/// with ~/.cargo/bin, see main).
fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// The libLLVM soname the binary is linked against, from `ldd` (None for a static binary
/// or one without libLLVM).
fn linked_llvm(path: &Path) -> Result<Option<String>> {
    let out = cmd("ldd").arg(path).read_lenient()?;
    Ok(out
        .split_whitespace()
        .find(|w| w.starts_with("libLLVM"))
        .map(str::to_owned))
}

/// `bpf-linker --version` prints `bpf-linker 0.13.0`.
fn linker_version(path: &Path) -> String {
    cmd(&path.to_string_lossy())
        .arg("--version")
        .read()
        .ok()
        .and_then(|s| s.split_whitespace().last().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

// ---------------------------------------------------------------------------------------
// cargo-deb, for `cargo xtask deb` and the package test.

fn cargo_deb(report: &mut Report) -> Result<()> {
    // `cargo-deb --version` prints `cargo-deb 3.8.0`.
    let found = find_on_path("cargo-deb").and_then(|path| {
        let out = cmd(&path.to_string_lossy()).arg("--version").read().ok()?;
        out.split_whitespace().last().map(str::to_owned)
    });
    if let Some(version) = found.as_deref().filter(|v| v.starts_with("3.")) {
        report.present.push(format!("cargo-deb {version}"));
        return Ok(());
    }
    let by_hand =
        format!("by hand: cargo install cargo-deb --version {CARGO_DEB_VERSION} --locked");
    eprintln!(
        "setup: cargo-deb {}; building {CARGO_DEB_VERSION} (about two minutes)",
        found.map_or("not found".to_owned(), |v| format!("{v} is not 3.x"))
    );
    cmd("cargo")
        .args([
            "install",
            "cargo-deb",
            "--version",
            CARGO_DEB_VERSION,
            "--locked",
            "--force",
        ])
        .current_dir("/")
        .run()
        .with_context(|| format!("building cargo-deb failed (needs crates.io); {by_hand}"))?;
    report
        .installed
        .push(format!("cargo-deb {CARGO_DEB_VERSION}"));
    Ok(())
}

// ---------------------------------------------------------------------------------------
// bpffs: pinned maps live there (and aya pins under it).

fn bpffs(report: &mut Report) -> Result<()> {
    let mounts = fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    let mounted = mounts.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 2 && f[1] == BPFFS && f[2] == "bpf"
    });
    if mounted {
        report.present.push("bpffs".into());
        return Ok(());
    }
    if !is_root() {
        bail!("bpffs is not mounted at {BPFFS} and mounting needs root; fix as root: mount -t bpf bpf {BPFFS}");
    }
    cmd("mount")
        .args(["-t", "bpf", "bpf", BPFFS])
        .run()
        .with_context(|| {
            format!("mounting bpffs failed; by hand as root: mount -t bpf bpf {BPFFS}")
        })?;
    report.installed.push(format!("bpffs (mounted at {BPFFS})"));
    Ok(())
}

// ---------------------------------------------------------------------------------------
// RLIMIT_MEMLOCK: kernels since 5.11 charge BPF memory to the memory cgroup and ignore it,
// but raising it costs nothing and helps older kernels. Children (cargo, the tests) inherit
// the limit. Never fatal.

fn raise_memlock() -> String {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscalls on a valid, initialised struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } == 0 {
        return "memlock unlimited".into();
    }
    let err = std::io::Error::last_os_error();
    let mut cur = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: as above; `cur` is a valid out-pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut cur) } != 0 {
        return format!("memlock unknown (could not raise: {err})");
    }
    // Unprivileged: go as far as the hard limit allows.
    if cur.rlim_cur < cur.rlim_max {
        let soft_to_hard = libc::rlimit {
            rlim_cur: cur.rlim_max,
            rlim_max: cur.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &soft_to_hard) } == 0 {
            cur = soft_to_hard;
        }
    }
    format!(
        "memlock {} (not raised: {}; fine, BPF memory is charged to memcg since Linux 5.11)",
        human(cur.rlim_cur),
        err.kind()
    )
}

fn human(limit: libc::rlim_t) -> String {
    if limit == libc::RLIM_INFINITY {
        "unlimited".into()
    } else if limit >= 1 << 20 && limit.is_multiple_of(1 << 20) {
        format!("{} MiB", limit >> 20)
    } else {
        format!("{} KiB", limit >> 10)
    }
}

#[cfg(test)]
mod tests {
    use super::has_nightly_channel;

    #[test]
    fn nightly_channel_detection() {
        let list = "stable-x86_64-unknown-linux-gnu (active, default)\n\
                    nightly-x86_64-unknown-linux-gnu\n1.95.0-x86_64-unknown-linux-gnu\n";
        assert!(has_nightly_channel(list));
        assert!(has_nightly_channel(
            "nightly-aarch64-unknown-linux-gnu (active)\n"
        ));
        assert!(!has_nightly_channel(
            "stable-x86_64-unknown-linux-gnu\nnightly-2026-05-19-x86_64-unknown-linux-gnu\n"
        ));
        assert!(!has_nightly_channel("no installed toolchains\n"));
    }
}
