//! Writes the man pages and shell completions of `lbd` and `lbctl` into a directory, from
//! the clap definitions the binaries parse with, so they never disagree with `--help`.
//! `cargo xtask dist` runs it and compresses the pages; the Debian package ships the result.
//!
//! Usage: cargo run -p lb-userspace --example dist-files -- OUT_DIR
//! Writes OUT_DIR/man/*.8 (lbd, lbctl and one page per lbctl subcommand) and
//! OUT_DIR/completions/{bash,zsh,fish}/.

use std::{
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap_complete::Shell;
use lb_userspace::cli::{lbctl_command, lbd_command};

/// Section 8: both are system administration commands (lbctl changes a system daemon).
const SECTION: &str = "8";
const MANUAL: &str = "xdplb";

/// Appended to the two top-level pages: where things live, and where to read on. clap
/// knows nothing of files or related pages.
const LBD_EXTRA: &str = r#".SH FILES
.TP
\fI/etc/lbd/lb.toml\fR
The configuration (every key: /usr/share/doc/lbd/config.md).
.TP
\fI/run/lbd/lbd.sock\fR
The control socket \fBlbctl\fR(8) talks to (\fBagent.control_socket\fR); mode 0600, or 0660
owned by \fBagent.control_group\fR.
.TP
\fI/sys/fs/bpf/lbd\fR
The pinned maps and XDP links (\fBagent.pin_dir\fR) a restarted lbd adopts.
.SH SIGNALS
SIGHUP re-reads the configuration and applies only the difference. SIGTERM and SIGINT hand
VRRP mastership over, detach the XDP program, remove the pins and exit 0. SIGUSR2 exits at
once leaving the program attached and its maps pinned, for the next lbd to adopt (a
restart or upgrade without a dropped packet).
.SH CAPABILITIES
Without root, lbd needs exactly CAP_BPF, CAP_NET_ADMIN, CAP_NET_RAW and CAP_PERFMON
(the systemd unit grants them to the user \fBlbd\fR). Why each: /usr/share/doc/lbd/operations.md.
.SH SEE ALSO
\fBlbctl\fR(8), \fBsystemctl\fR(1), /usr/share/doc/lbd/operations.md
"#;
const LBCTL_EXTRA: &str = r#".SH ENVIRONMENT
.TP
\fBLBCTL_SOCKET\fR
The control socket, instead of /run/lbd/lbd.sock (\fB\-\-socket\fR wins).
.SH SEE ALSO
\fBlbd\fR(8), /usr/share/doc/lbd/operations.md, /usr/share/doc/lbd/control.md
"#;

fn main() -> ExitCode {
    let Some(out) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: dist-files OUT_DIR");
        return ExitCode::from(2);
    };
    match write_all(&out) {
        Ok(n) => {
            println!("dist-files: wrote {n} files under {}", out.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dist-files: {e}");
            ExitCode::FAILURE
        }
    }
}

fn write_all(out: &Path) -> std::io::Result<usize> {
    let man = out.join("man");
    // A renamed subcommand must not leave its old page behind to be packaged.
    let _ = fs::remove_dir_all(&man);
    fs::create_dir_all(&man)?;
    let mut n = 0;
    n += man_pages(lbd_command(), &man, LBD_EXTRA)?;
    n += man_pages(lbctl_command(), &man, LBCTL_EXTRA)?;

    for (shell, dir, file) in [
        (Shell::Bash, "bash", "{}"),
        (Shell::Zsh, "zsh", "_{}"),
        (Shell::Fish, "fish", "{}.fish"),
    ] {
        let dir = out.join("completions").join(dir);
        fs::create_dir_all(&dir)?;
        for (name, mut cmd) in [("lbd", lbd_command()), ("lbctl", lbctl_command())] {
            let mut f = fs::File::create(dir.join(file.replace("{}", name)))?;
            clap_complete::generate(shell, &mut cmd, name, &mut f);
            f.flush()?;
            n += 1;
        }
    }
    Ok(n)
}

/// The page of `cmd` (with `extra` appended) and one per visible subcommand, named like
/// git's (`lbctl-backend-drain.8`), so `man lbctl-backend-drain` works.
fn man_pages(cmd: clap::Command, dir: &Path, extra: &str) -> std::io::Result<usize> {
    let mut cmd = cmd.disable_help_subcommand(true);
    // Builds the display names (`lbctl-vip-add`) the subcommand pages are named by.
    cmd.build();
    let mut n = 0;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        n += man_pages(sub.clone(), dir, "")?;
    }
    let page = clap_mangen::Man::new(cmd).section(SECTION).manual(MANUAL);
    let mut text = Vec::new();
    page.render(&mut text)?;
    text.extend_from_slice(extra.as_bytes());
    fs::write(dir.join(page.get_filename()), text)?;
    Ok(n + 1)
}
