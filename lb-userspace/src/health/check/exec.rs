//! Exec: run a command, exit status 0 is healthy (keepalived's MISC_CHECK). No shell: the
//! argv is run as given, so an address never needs quoting.
//!
//! The command runs in a process group of its own. When the check ends early (timeout, or
//! the check is abandoned) the whole group is killed, so `sh -c 'curl ...'` does not leave
//! its `curl` behind; and the check waits for the command's stderr to close, so whatever the
//! command starts must finish within the timeout too.

use std::{net::SocketAddr, os::unix::process::ExitStatusExt, process::Stdio};

use tokio::{io::AsyncReadExt, process::Command};

use super::{describe_io, CheckError, ErrorKind, ExecProbe};

/// The backend's IP address, in the command's environment.
pub const ENV_BACKEND_ADDRESS: &str = "LBD_BACKEND_ADDRESS";
/// The checked port (the spec's `port` if set, else the service port).
pub const ENV_BACKEND_PORT: &str = "LBD_BACKEND_PORT";

/// Of stderr, the part kept for the error message.
const MAX_STDERR: usize = 4096;

pub(super) fn describe(p: &ExecProbe) -> String {
    format!("command {}", p.command.join(" "))
}

pub(super) async fn probe(p: &ExecProbe, target: SocketAddr) -> Result<(), CheckError> {
    let what = describe(p);
    let Some((program, args)) = p.command.split_first() else {
        return Err(CheckError::new(ErrorKind::Local, "empty command"));
    };
    let mut child = Command::new(program)
        .args(args)
        .env(ENV_BACKEND_ADDRESS, target.ip().to_string())
        .env(ENV_BACKEND_PORT, target.port().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            CheckError::new(
                ErrorKind::Local,
                format!("{what}: cannot start: {}", describe_io(&e)),
            )
        })?;
    // Declared after `child`, so dropped (group killed) before tokio kills and reaps the
    // leader: the group id cannot have been reused while the leader is unreaped.
    let mut group = GroupGuard(child.id().and_then(|pid| i32::try_from(pid).ok()));
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let read_stderr = async {
        let mut kept = Vec::new();
        let mut chunk = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            let room = MAX_STDERR.saturating_sub(kept.len());
            kept.extend_from_slice(&chunk[..n.min(room)]);
        }
        kept
    };
    let (status, stderr) = tokio::join!(child.wait(), read_stderr);
    group.0 = None;
    let status = status.map_err(|e| {
        CheckError::new(
            ErrorKind::Local,
            format!("{what}: wait failed: {}", describe_io(&e)),
        )
    })?;
    if status.success() {
        return Ok(());
    }
    let how = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => status.to_string(),
    };
    let said = String::from_utf8_lossy(&stderr);
    let last_line = said.lines().rev().map(str::trim).find(|l| !l.is_empty());
    Err(CheckError::new(
        ErrorKind::Exit,
        match last_line {
            Some(line) => format!("{what}: {how}: {}", truncate(line, 200)),
            None => format!("{what}: {how}"),
        },
    ))
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Kills the command's process group unless disarmed (`None`).
struct GroupGuard(Option<i32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            // SAFETY: kill(2) has no memory effects; a negative pid addresses the group the
            // child leads, which exists while the child is unreaped (see `probe`).
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
}
