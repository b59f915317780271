//! Temporary system users and groups, for tests that run the agent without root, and the
//! `setpriv` command line that starts a program as one with chosen capabilities.
//!
//! Each guard removes its user or group, even when the test panics. A run killed outright
//! cannot; its names carry its PID, so the next run removes those of processes that are gone.

use std::{fs, process::Command};

use anyhow::{bail, Context as _, Result};

/// Every name starts with this, then the creating PID and a dash.
const PREFIX: &str = "lbdt";

/// A group that exists until dropped.
#[derive(Debug)]
pub struct TempGroup {
    pub name: String,
    pub gid: u32,
}

impl TempGroup {
    /// `groupadd --system lbdt<PID>-<tag>`.
    pub fn create(tag: &str) -> Result<TempGroup> {
        sweep_stale();
        let name = format!("{PREFIX}{}-{tag}", std::process::id());
        run("groupadd", &["--system", &name])?;
        // From here on the guard exists, so a failed lookup still removes the group.
        let mut group = TempGroup { name, gid: 0 };
        group.gid = id_of("group", &group.name)?;
        Ok(group)
    }
}

impl Drop for TempGroup {
    fn drop(&mut self) {
        if let Err(e) = run("groupdel", &[&self.name]) {
            eprintln!("removing test group {}: {e:#}", self.name);
        }
    }
}

/// A system user (no home, no login shell, its own primary group) that exists until dropped.
#[derive(Debug)]
pub struct TempUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl TempUser {
    /// `useradd --system --user-group lbdt<PID>-<tag>`, a member of `groups`.
    pub fn create(tag: &str, groups: &[&TempGroup]) -> Result<TempUser> {
        sweep_stale();
        let name = format!("{PREFIX}{}-{tag}", std::process::id());
        let mut args = vec![
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
        ];
        let list = groups
            .iter()
            .map(|g| g.name.as_str())
            .collect::<Vec<_>>()
            .join(",");
        if !groups.is_empty() {
            args.extend(["--groups", &list]);
        }
        args.push(&name);
        run("useradd", &args)?;
        // From here on the guard exists, so a failed lookup still removes the user.
        let mut user = TempUser {
            name,
            uid: 0,
            gid: 0,
        };
        user.uid = id_of("passwd", &user.name)?;
        user.gid = id_of("group", &user.name)?;
        Ok(user)
    }

    /// `setpriv` arguments that exec their rest as this user (its groups included) with
    /// exactly `caps` (names as `CAP_BPF`) effective, permitted, inheritable, ambient and
    /// in the bounding set: what systemd's `AmbientCapabilities=` plus
    /// `CapabilityBoundingSet=` give a service.
    pub fn setpriv(&self, caps: &[&str]) -> Vec<String> {
        let list: String = std::iter::once("-all".to_owned())
            .chain(caps.iter().map(|c| {
                format!(
                    "+{}",
                    c.strip_prefix("CAP_").unwrap_or(c).to_ascii_lowercase()
                )
            }))
            .collect::<Vec<_>>()
            .join(",");
        vec![
            "setpriv".into(),
            format!("--reuid={}", self.uid),
            format!("--regid={}", self.gid),
            "--init-groups".into(),
            format!("--inh-caps={list}"),
            format!("--ambient-caps={list}"),
            format!("--bounding-set={list}"),
        ]
    }
}

impl Drop for TempUser {
    fn drop(&mut self) {
        // Also removes the user's own group (USERGROUPS_ENAB, Debian's default).
        if let Err(e) = run("userdel", &[&self.name]) {
            eprintln!("removing test user {}: {e:#}", self.name);
        }
        if id_of("group", &self.name).is_ok() {
            let _ = run("groupdel", &[&self.name]);
        }
    }
}

/// The numeric id of a user (`passwd`) or group (`group`), from `getent`.
pub fn id_of(database: &str, name: &str) -> Result<u32> {
    let out = Command::new("getent")
        .args([database, name])
        .output()
        .context("running getent")?;
    let line = String::from_utf8_lossy(&out.stdout);
    line.split(':')
        .nth(2)
        .and_then(|id| id.trim().parse().ok())
        .with_context(|| format!("no {database} entry {name:?}"))
}

fn run(program: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Removes users and groups left by test processes that no longer exist.
fn sweep_stale() {
    for (file, remove) in [("/etc/passwd", "userdel"), ("/etc/group", "groupdel")] {
        let Ok(text) = fs::read_to_string(file) else {
            continue;
        };
        for name in text.lines().filter_map(|l| l.split(':').next()) {
            let Some(pid) = name
                .strip_prefix(PREFIX)
                .and_then(|rest| rest.split_once('-'))
                .and_then(|(pid, _)| pid.parse::<u32>().ok())
            else {
                continue;
            };
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                let _ = run(remove, &[name]);
            }
        }
    }
}
