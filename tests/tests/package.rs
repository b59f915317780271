//! The Debian package. `cargo xtask deb --debug` builds it from the debug binaries the
//! other tests use (a release build would double CI's compile time and prove nothing more
//! about packaging); it is then installed with the real `dpkg -i` into an empty directory
//! with its own dpkg database, never into the host:
//!
//! `dpkg --instdir=ROOT --admindir=ROOT/var/lib/dpkg --force-script-chrootless`
//!
//! runs the maintainer scripts on the host's tools with `DPKG_ROOT=ROOT`, which they
//! honour (the user `lbd` lands in ROOT/etc/passwd). `--force-depends`: the empty root has
//! no libc6 package to satisfy `Depends:`. The host's users, groups and dpkg database are
//! compared before and after. Then `systemd-analyze verify` checks the installed unit.
//!
//! Needs root (dpkg chowns, useradd writes the root's shadow files).

use std::{
    collections::BTreeSet,
    fs,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::OnceLock,
};

use lb_tests::{agent::bin_dir, require_root};

/// A directory removed on drop.
struct Root(PathBuf);

impl Root {
    /// An empty root with an empty dpkg database and the account files useradd expects.
    fn new(tag: &str) -> Root {
        let dir = std::env::temp_dir().join(format!("lbt-deb-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let root = Root(dir);
        for d in ["var/lib/dpkg/info", "var/lib/dpkg/updates", "etc"] {
            fs::create_dir_all(root.0.join(d)).unwrap();
        }
        fs::write(root.0.join("var/lib/dpkg/status"), "").unwrap();
        for (file, line, mode) in [
            ("passwd", "root:x:0:0:root:/root:/bin/sh\n", 0o644),
            ("group", "root:x:0:\n", 0o644),
            ("shadow", "root:*:20000:0:99999:7:::\n", 0o640),
            ("gshadow", "root:*::\n", 0o640),
        ] {
            let path = root.0.join("etc").join(file);
            fs::write(&path, line).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        }
        root
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.0
            .join(rel.trim_start_matches("./").trim_start_matches('/'))
    }

    /// `dpkg` on this root's database.
    fn dpkg(&self, args: &[&str]) -> Output {
        Command::new("dpkg")
            .arg(format!("--instdir={}", self.0.display()))
            .arg(format!(
                "--admindir={}",
                self.path("var/lib/dpkg").display()
            ))
            .args(["--force-script-chrootless", "--force-depends"])
            .args(args)
            .output()
            .expect("run dpkg")
    }

    fn install(&self, deb: &Path) {
        let out = self.dpkg(&["-i", &deb.to_string_lossy()]);
        assert!(out.status.success(), "dpkg -i: {}", text(&out));
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn run(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> (bool, String) {
    let out = Command::new(program).args(args).output().expect("run");
    (out.status.success(), text(&out))
}

/// Builds the package once per test binary: `cargo xtask deb --debug`.
fn deb() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let out_dir = bin_dir().join("deb-test");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(cargo)
            .current_dir(workspace)
            .args([
                "run", "--quiet", "-p", "xtask", "--", "deb", "--debug", "--output",
            ])
            .arg(&out_dir)
            .output()
            .expect("run cargo xtask deb");
        assert!(
            out.status.success(),
            "cargo xtask deb --debug: {}",
            text(&out)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let path = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
        assert!(path.is_file(), "no package at {path:?}: {}", text(&out));
        path
    })
}

/// What the package contains, from `dpkg-deb --contents`: (path, mode string).
fn contents(deb: &Path) -> Vec<(String, String)> {
    let (ok, out) = run("dpkg-deb", &["--contents", &deb.to_string_lossy()]);
    assert!(ok, "{out}");
    out.lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[f.len() - 1].to_owned(), f[0].to_owned())
        })
        .collect()
}

/// The host state the installation must not touch: account lines (without the throwaway
/// users other tests may be creating meanwhile) and the dpkg database.
fn host_state() -> Vec<(String, BTreeSet<String>)> {
    [
        "/etc/passwd",
        "/etc/group",
        "/etc/shadow",
        "/etc/gshadow",
        "/var/lib/dpkg/status",
    ]
    .iter()
    .map(|f| {
        let lines = fs::read_to_string(f)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.starts_with("lbdt"))
            .map(str::to_owned)
            .collect();
        (f.to_string(), lines)
    })
    .collect()
}

#[test]
fn the_package_installs_into_an_empty_root_upgrades_and_purges() {
    if !require_root("the_package_installs_into_an_empty_root_upgrades_and_purges") {
        return;
    }
    let deb = deb();
    let files = contents(deb);
    let paths: BTreeSet<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
    for want in [
        "./usr/sbin/lbd",
        "./usr/bin/lbctl",
        "./usr/lib/systemd/system/lbd.service",
        "./etc/lbd/lb.toml",
        "./usr/share/man/man8/lbd.8.gz",
        "./usr/share/man/man8/lbctl.8.gz",
        "./usr/share/man/man8/lbctl-backend-drain.8.gz",
        "./usr/share/bash-completion/completions/lbctl",
        "./usr/share/zsh/vendor-completions/_lbctl",
        "./usr/share/fish/vendor_completions.d/lbctl.fish",
        "./usr/share/doc/lbd/operations.md",
        "./usr/share/doc/lbd/config.md",
        "./usr/share/doc/lbd/copyright",
    ] {
        assert!(
            paths.contains(want),
            "{want} not in the package: {paths:#?}"
        );
    }
    let (ok, info) = run("dpkg-deb", &["--info", &deb.to_string_lossy()]);
    assert!(ok, "{info}");
    assert!(
        info.contains("Package: lbd") && info.contains("Depends: libc6"),
        "{info}"
    );
    let (ok, conffiles) = run("dpkg-deb", &["--info", &deb.to_string_lossy(), "conffiles"]);
    assert!(
        ok && conffiles.trim() == "/etc/lbd/lb.toml",
        "conffiles: {conffiles}"
    );

    let before = host_state();
    let host_had_lbd = Path::new("/usr/sbin/lbd").exists();
    let root = Root::new("install");
    root.install(deb);

    let out = root.dpkg(&["--status", "lbd"]);
    assert!(
        text(&out).contains("Status: install ok installed"),
        "{}",
        text(&out)
    );
    for (path, mode) in &files {
        let meta = fs::symlink_metadata(root.path(path))
            .unwrap_or_else(|e| panic!("{path} did not land in the root: {e}"));
        if mode.starts_with('-') {
            let exec = mode.as_bytes()[3] == b'x';
            assert_eq!(
                meta.mode() & 0o111 != 0,
                exec,
                "{path}: mode {:o} vs {mode}",
                meta.mode()
            );
        }
    }

    // postinst: the system user, and /etc/lbd writable by it (lbctl config save).
    let passwd = fs::read_to_string(root.path("etc/passwd")).unwrap();
    let lbd_user: Vec<&str> = passwd.lines().filter(|l| l.starts_with("lbd:")).collect();
    assert_eq!(lbd_user.len(), 1, "{passwd}");
    assert!(
        lbd_user[0].ends_with(":/nonexistent:/usr/sbin/nologin"),
        "{}",
        lbd_user[0]
    );
    let group = fs::read_to_string(root.path("etc/group")).unwrap();
    let gid: u32 = group
        .lines()
        .find_map(|l| l.strip_prefix("lbd:x:"))
        .and_then(|rest| rest.split(':').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no group lbd: {group}"));
    let etc = fs::metadata(root.path("etc/lbd")).unwrap();
    assert_eq!(
        (etc.mode() & 0o7777, etc.uid(), etc.gid()),
        (0o770, 0, gid),
        "/etc/lbd"
    );

    // What landed works: the binaries run, the shipped config is valid, the pages render.
    let (ok, out) = run(root.path("usr/sbin/lbd"), &["--version"]);
    assert!(ok && out.starts_with("lbd "), "{out}");
    let (ok, out) = run(root.path("usr/bin/lbctl"), &["--version"]);
    assert!(ok && out.starts_with("lbctl "), "{out}");
    let config = root.path("etc/lbd/lb.toml");
    let (ok, out) = run(
        root.path("usr/sbin/lbd"),
        &["--config", &config.to_string_lossy(), "--check"],
    );
    assert!(ok && out.contains("configuration is valid"), "{out}");
    let page = root.path("usr/share/man/man8/lbd.8.gz");
    let (ok, out) = run("zcat", &[&page.to_string_lossy()]);
    assert!(
        ok && out.contains(".TH lbd 8") && out.contains("CAP_PERFMON"),
        "{out}"
    );
    let bash =
        fs::read_to_string(root.path("usr/share/bash-completion/completions/lbctl")).unwrap();
    assert!(
        bash.contains("drain") && bash.contains("complete"),
        "{bash}"
    );

    // Installing again (an upgrade's path through postinst) adds no second user.
    root.install(deb);
    let passwd = fs::read_to_string(root.path("etc/passwd")).unwrap();
    assert_eq!(
        passwd.lines().filter(|l| l.starts_with("lbd:")).count(),
        1,
        "{passwd}"
    );

    let out = root.dpkg(&["--purge", "lbd"]);
    assert!(out.status.success(), "dpkg --purge: {}", text(&out));
    for gone in [
        "usr/sbin/lbd",
        "usr/lib/systemd/system/lbd.service",
        "etc/lbd",
    ] {
        assert!(!root.path(gone).exists(), "{gone} left after purge");
    }

    assert_eq!(
        host_state(),
        before,
        "the host's accounts or dpkg database changed"
    );
    assert_eq!(
        Path::new("/usr/sbin/lbd").exists(),
        host_had_lbd,
        "the host's /usr/sbin changed"
    );
}

#[test]
fn systemd_analyze_verifies_the_installed_unit() {
    if !require_root("systemd_analyze_verifies_the_installed_unit") {
        return;
    }
    let root = Root::new("unit");
    root.install(deb());
    // The unit names /usr/sbin/lbd and /usr/bin/lbctl, which verify checks are executable:
    // point them into the root. Everything else is the installed unit, byte for byte.
    let unit = fs::read_to_string(root.path("usr/lib/systemd/system/lbd.service")).unwrap();
    let rewritten = unit
        .replace(
            "/usr/sbin/lbd",
            &root.path("usr/sbin/lbd").to_string_lossy(),
        )
        .replace(
            "/usr/bin/lbctl",
            &root.path("usr/bin/lbctl").to_string_lossy(),
        );
    assert_ne!(
        unit, rewritten,
        "the unit runs neither /usr/sbin/lbd nor /usr/bin/lbctl"
    );
    let dir = root.path("verify");
    fs::create_dir(&dir).unwrap();
    let verify = |name: &str, unit_text: &str| -> (bool, String) {
        let path = dir.join(name);
        fs::write(&path, unit_text).unwrap();
        // Documentation=man:lbd(8) is checked with man(1): on the root's pages.
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&path)
            .env("MANPATH", root.path("usr/share/man"))
            .output()
            .expect("run systemd-analyze (cargo xtask setup installs systemd)");
        (out.status.success(), text(&out))
    };

    let (ok, out) = verify("lbd.service", &rewritten);
    assert!(
        ok && out.trim().is_empty(),
        "systemd-analyze verify lbd.service:\n{out}"
    );
    for key in [
        "User=lbd",
        "ExecReload=",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
    ] {
        assert!(unit.contains(key), "the unit lacks {key}");
    }

    // The check can fail: a misspelt key and a missing binary are reported.
    let broken = rewritten.replace("ProtectHome=", "ProtectHomes=").replace(
        &*root.path("usr/sbin/lbd").to_string_lossy(),
        &root.path("usr/sbin/lbd-missing").to_string_lossy(),
    );
    let (ok, out) = verify("lbd-broken.service", &broken);
    assert!(
        !ok && out.contains("ProtectHomes") && out.contains("lbd-missing"),
        "systemd-analyze verify should have refused:\n{out}"
    );
}
