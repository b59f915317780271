//! A thin wrapper over `std::process::Command` that echoes what it runs and turns
//! failures into errors that name the command, so a failed step is obvious in CI logs.

use std::ffi::OsString;
use std::io::ErrorKind;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};

use anyhow::{bail, Context as _, Result};

pub struct Cmd {
    inner: Command,
    /// Shell-like rendering for the echo and for error messages.
    display: String,
    program: String,
}

/// Starts building a command; the working directory defaults to the repository root.
pub fn cmd(program: &str) -> Cmd {
    let mut inner = Command::new(program);
    inner.current_dir(crate::root());
    Cmd {
        inner,
        display: program.to_owned(),
        program: program.to_owned(),
    }
}

impl Cmd {
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        let arg = arg.into();
        self.display.push(' ');
        self.display.push_str(&quote(&arg.to_string_lossy()));
        self.inner.arg(arg);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        for a in args {
            self = self.arg(a);
        }
        self
    }

    /// Sets a variable for the child only; it is shown in front of the echoed command
    /// so that the line can be pasted into a shell to reproduce the step.
    pub fn env(mut self, key: &str, value: impl AsRef<Path>) -> Self {
        let value = value.as_ref();
        self.display = format!("{key}={} {}", quote(&value.to_string_lossy()), self.display);
        self.inner.env(key, value);
        self
    }

    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.inner.current_dir(dir);
        self
    }

    /// Echoes the command line, runs it with inherited stdio, and fails unless it exits 0.
    pub fn run(mut self) -> Result<()> {
        eprintln!("$ {}", self.display);
        let status = self.inner.status().map_err(|e| self.spawn_error(e))?;
        self.check(status)
    }

    /// Runs silently (used by the checks in `setup`) and returns stdout.
    /// Fails unless the command exits 0; stderr goes into the error message.
    pub fn read(mut self) -> Result<String> {
        let out = self
            .inner
            .stdin(Stdio::null())
            .output()
            .map_err(|e| self.spawn_error(e))?;
        if !out.status.success() {
            bail!(
                "`{}` failed ({}): {}",
                self.display,
                describe(out.status),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        String::from_utf8(out.stdout)
            .with_context(|| format!("`{}`: non-UTF-8 output", self.display))
    }

    /// Runs silently and returns stdout whatever the exit status: for probes such as
    /// `dpkg-query`, which exits 1 when any one of several packages is unknown but still
    /// prints the others.
    pub fn read_lenient(mut self) -> Result<String> {
        let out = self
            .inner
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .map_err(|e| self.spawn_error(e))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn spawn_error(&self, e: std::io::Error) -> anyhow::Error {
        if e.kind() == ErrorKind::NotFound {
            anyhow::anyhow!(
                "`{}` not found on PATH (needed for `{}`)",
                self.program,
                self.display
            )
        } else {
            anyhow::anyhow!("could not start `{}`: {e}", self.display)
        }
    }

    fn check(&self, status: ExitStatus) -> Result<()> {
        if status.success() {
            Ok(())
        } else {
            bail!("`{}` failed ({})", self.display, describe(status))
        }
    }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => status.to_string(),
    }
}

/// Quotes an argument for display only when a shell would need it.
fn quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_=+/.,:@%".contains(c));
    if plain {
        return s.to_owned();
    }
    let mut out = String::from("'");
    for c in s.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}
