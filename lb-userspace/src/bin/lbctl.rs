//! lbctl: the command-line client of lbd's control socket.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use lb_userspace::{
    agent::ApplySummary,
    config::DEFAULT_CONTROL_SOCKET,
    control::{self, Command, StatsReport, StatusReport},
};

/// Inspect and control a running lbd.
///
/// Examples:
///   lbctl status
///   lbctl stats
///   lbctl stats --json | jq '.vips[0].backends'
///   lbctl --socket /run/lbd/other.sock status
///
/// Exit codes: 0 success, 1 lbd answered with an error or could not be reached,
/// 2 bad command line.
#[derive(Parser)]
#[command(version, verbatim_doc_comment)]
struct Args {
    /// Control socket of the agent (agent.control_socket in its config).
    #[arg(long, global = true, env = "LBCTL_SOCKET", default_value = DEFAULT_CONTROL_SOCKET)]
    socket: PathBuf,
    /// Print the agent's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Interface, attach state, uptime and object counts.
    Status,
    /// Packets and bytes per VIP, per backend, and per verdict reason.
    Stats,
    /// Re-read lbd's config file and apply only what changed (same as SIGHUP). VIPs and
    /// backends that stay keep their flows and their table slots. An invalid file changes
    /// nothing.
    Reload,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let command = match args.command {
        Cmd::Status => Command::Status,
        Cmd::Stats => Command::Stats,
        Cmd::Reload => Command::Reload,
    };
    let data = match control::request(&args.socket, &command) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("lbctl: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&data).unwrap_or_default()
        );
        return ExitCode::SUCCESS;
    }
    let printed = match command {
        Command::Status => serde_json::from_value(data).map(|s: StatusReport| print_status(&s)),
        Command::Stats => serde_json::from_value(data).map(|s: StatsReport| print_stats(&s)),
        Command::Reload => serde_json::from_value(data).map(|s: ApplySummary| print_reload(&s)),
    };
    match printed {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "lbctl: unexpected reply from lbd ({e}); are lbd and lbctl the same release?"
            );
            ExitCode::FAILURE
        }
    }
}

fn print_reload(s: &ApplySummary) {
    println!(
        "reloaded: VIPs +{} -{} ~{}, backends +{} -{}, {} table slots rewritten",
        s.vips_added,
        s.vips_removed,
        s.vips_changed,
        s.backends_added,
        s.backends_removed,
        s.slots_written
    );
}

fn print_status(s: &StatusReport) {
    println!("lbd {}  up {}s", s.version, s.uptime_secs);
    println!(
        "interface {} (ifindex {})  xdp {} {}",
        s.interface,
        s.ifindex,
        s.xdp_mode,
        if s.attached {
            "attached"
        } else {
            "NOT attached"
        }
    );
    println!(
        "{} VIPs, {} backends ({} unresolved)",
        s.vips, s.backends, s.unresolved_backends
    );
}

fn print_stats(s: &StatsReport) {
    println!(
        "{:<24} {:<22} {:>8} {:>12} {:>14}",
        "VIP", "BACKEND", "WEIGHT", "PACKETS", "BYTES"
    );
    for v in &s.vips {
        let vip = format!("{}:{}/{}", v.address, v.port, v.protocol);
        println!(
            "{:<24} {:<22} {:>8} {:>12} {:>14}",
            vip, "(all)", "", v.packets, v.bytes
        );
        for b in &v.backends {
            let mac = b.mac.as_deref().unwrap_or("unresolved");
            println!(
                "{:<24} {:<22} {:>8} {:>12} {:>14}",
                "",
                format!("{} {mac}", b.address),
                b.weight,
                b.packets,
                b.bytes
            );
        }
    }
    println!();
    println!(
        "{:<22} {:<8} {:>12} {:>14}  WHY",
        "REASON", "VERDICT", "PACKETS", "BYTES"
    );
    for r in &s.reasons {
        println!(
            "{:<22} {:<8} {:>12} {:>14}  {}",
            r.reason, r.verdict, r.packets, r.bytes, r.description
        );
    }
}
