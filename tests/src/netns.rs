//! Network namespaces: create and delete them with `ip netns`, run commands inside them,
//! and move the calling thread into one with `setns(2)` so it can open sockets there.
//!
//! A socket stays in the namespace it was created in, whatever thread uses it later, so
//! only socket *creation* needs to happen on a thread that entered the namespace.

use std::{
    fs::File,
    io::Write as _,
    marker::PhantomData,
    os::fd::AsRawFd as _,
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{anyhow, bail, Context as _, Result};

/// Runs `cmd` to completion; a non-zero exit is an error carrying the command line and its
/// stderr, because "exit status 2" alone never says which of forty commands broke.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start {}", describe(cmd)))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}): {}",
            describe(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    format!("`{s}`")
}

/// Creates the namespace `name` (`ip netns add`).
pub fn add(name: &str) -> Result<()> {
    run(Command::new("ip").args(["netns", "add", name])).map(drop)
}

/// Deletes the namespace `name` (`ip netns del`); its interfaces go with it once no process
/// or socket holds it any more.
pub fn del(name: &str) -> Result<()> {
    run(Command::new("ip").args(["netns", "del", name])).map(drop)
}

/// Whether `/run/netns/<name>` exists.
pub fn exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

/// Names of all named namespaces (`ip netns list`).
pub fn list() -> Result<Vec<String>> {
    let out = run(Command::new("ip").args(["netns", "list"]))?;
    // Lines look like `name` or `name (id: 3)`.
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// `ip -n <ns> <args...>`; returns stdout.
pub fn ip<S: AsRef<str>>(ns: &str, args: &[S]) -> Result<String> {
    run(Command::new("ip")
        .args(["-n", ns])
        .args(args.iter().map(AsRef::as_ref)))
}

/// Runs several `ip` commands in one process (`ip -n <ns> -batch -`); setup issues dozens of
/// them and each fork+exec costs a few milliseconds. Stops at the first failing line.
pub fn ip_batch<S: AsRef<str>>(ns: &str, lines: &[S]) -> Result<()> {
    let mut child = Command::new("ip")
        .args(["-n", ns, "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start `ip -batch`")?;
    let mut script = String::new();
    for l in lines {
        script.push_str(l.as_ref());
        script.push('\n');
    }
    child
        .stdin
        .take()
        .ok_or_else(|| anyhow!("ip -batch has no stdin"))?
        .write_all(script.as_bytes())
        .context("writing to `ip -batch`")?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "`ip -n {ns} -batch -` failed ({}): {}\nscript:\n{script}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// `ip netns exec <ns> <program> <args...>`; returns stdout.
pub fn exec<S: AsRef<str>>(ns: &str, program: &str, args: &[S]) -> Result<String> {
    run(Command::new("ip")
        .args(["netns", "exec", ns, program])
        .args(args.iter().map(AsRef::as_ref)))
}

/// Sets sysctls inside `ns` in one `sysctl -w` call; `settings` are `key=value`.
pub fn sysctl<S: AsRef<str>>(ns: &str, settings: &[S]) -> Result<()> {
    let mut args = vec!["-q", "-w"];
    args.extend(settings.iter().map(AsRef::as_ref));
    exec(ns, "sysctl", &args).map(drop)
}

/// Reads one sysctl inside `ns`.
pub fn sysctl_get(ns: &str, key: &str) -> Result<String> {
    Ok(exec(ns, "sysctl", &["-n", key])?.trim().to_owned())
}

/// Index of interface `ifname` inside `ns`.
pub fn ifindex(ns: &str, ifname: &str) -> Result<u32> {
    let out = ip(ns, &["-j", "link", "show", "dev", ifname])?;
    let v: serde_json::Value =
        serde_json::from_str(&out).with_context(|| format!("parsing `ip -j link`: {out}"))?;
    v.get(0)
        .and_then(|l| l.get("ifindex"))
        .and_then(serde_json::Value::as_u64)
        .and_then(|i| u32::try_from(i).ok())
        .ok_or_else(|| anyhow!("no ifindex for {ifname} in {ns}: {out}"))
}

/// While alive, the current thread is in another network namespace; dropping it moves the
/// thread back. Not `Send`: namespace membership belongs to one thread.
pub struct NetnsGuard {
    original: File,
    _not_send: PhantomData<*const ()>,
}

/// Moves the calling thread (only it) into the namespace `name`.
pub fn enter(name: &str) -> Result<NetnsGuard> {
    let original = File::open("/proc/thread-self/ns/net")
        .context("opening this thread's network namespace")?;
    let target = File::open(Path::new("/run/netns").join(name))
        .with_context(|| format!("opening namespace {name}"))?;
    setns(&target).with_context(|| format!("entering namespace {name}"))?;
    Ok(NetnsGuard {
        original,
        _not_send: PhantomData,
    })
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        // Failing to return would leave this thread opening sockets in a lab namespace that
        // is about to vanish; nothing sane can continue from there.
        if let Err(e) = setns(&self.original) {
            panic!("cannot return to the original network namespace: {e}");
        }
    }
}

fn setns(ns: &File) -> std::io::Result<()> {
    // SAFETY: the fd is open for the duration of the call; CLONE_NEWNET only changes this
    // thread's network namespace.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `f` on a fresh thread inside `ns` and returns its result, leaving the caller's
/// thread where it was.
pub fn run_in<T, F>(ns: &str, f: F) -> Result<T>
where
    T: Send,
    F: FnOnce() -> Result<T> + Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            let _guard = enter(ns)?;
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}
