//! `lbd`'s command line, in the library so that the man page is generated from the same
//! definition the binary parses with (`cargo xtask dist`).

use std::path::PathBuf;

use clap::Parser;

/// The XDP load-balancer agent.
///
/// Reads the TOML config, loads and attaches the XDP program to `agent.interface`,
/// keeps backend MACs current from the kernel's neighbour table, and answers `lbctl`
/// on `agent.control_socket`. With `[[vrrp]]` instances, the program is attached and the
/// virtual addresses held only while this node is master of at least one of them.
/// SIGTERM or SIGINT hands mastership over (priority-0 adverts), detaches the program,
/// removes its pins and exits 0. SIGUSR2 exits at once leaving the program attached, the
/// maps pinned and the virtual addresses in place, for the next lbd (an upgrade) to adopt;
/// so does a crash.
///
/// Examples:
///   lbd --config /etc/lbd/lb.toml
///   lbd --config lb.toml --check        # validate only
///   lbd --config lb.toml --cleanup      # uninstall: detach, remove pins and VRRP addresses
///   RUST_LOG=debug lbd --config lb.toml
///   lbd --config lb.toml --log-format json   # one JSON object per line
#[derive(Parser)]
#[command(name = "lbd", version, verbatim_doc_comment)]
pub struct Args {
    /// Path of the TOML configuration (reference: docs/config.md).
    #[arg(short, long, default_value = "/etc/lbd/lb.toml")]
    pub config: PathBuf,
    /// Validate the configuration, print the result and exit (2 if invalid).
    #[arg(long)]
    pub check: bool,
    /// Log lines for people (default) or one JSON object per line, for log collectors.
    #[arg(long, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    /// Remove what lbd leaves behind after a crash or SIGUSR2: detach the program, remove
    /// every pin under agent.pin_dir and the VRRP instances' addresses. Refused while an
    /// lbd serves the control socket. Running it twice is harmless.
    #[arg(long, conflicts_with = "check")]
    pub cleanup: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}
