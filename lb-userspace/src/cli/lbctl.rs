//! `lbctl`'s command line, in the library so that the man page and the shell completions
//! are generated from the same definition the binary parses with (`cargo xtask dist`).

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
};

use clap::{Parser, Subcommand};

use crate::config::{Protocol, DEFAULT_CONTROL_SOCKET};

/// Inspect and change a running lbd.
///
/// Runtime changes (vip/backend add, del, weight, drain) take effect at once and keep
/// established connections; they last until lbd restarts unless saved with
/// `lbctl config save`.
///
/// Examples:
///   lbctl status
///   lbctl stats --watch 1
///   lbctl vip add 192.0.2.50:443/tcp --name https
///   lbctl backend add https 192.0.2.21 --weight 2
///   lbctl backend drain https 192.0.2.21
///   lbctl config check /etc/lbd/lb.toml
///   lbctl --json vip show https | jq '.backends'
///
/// Exit codes: 0 success; 1 lbd refused the request or could not be reached; 2 bad
/// command line; 3 `config check` found errors, or `config import` could not read its
/// input.
#[derive(Parser)]
#[command(name = "lbctl", version, verbatim_doc_comment)]
pub struct Args {
    /// Control socket of the agent (agent.control_socket in its config).
    #[arg(long, global = true, env = "LBCTL_SOCKET", default_value = DEFAULT_CONTROL_SOCKET)]
    pub socket: PathBuf,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Interface, attach state, uptime, object counts, and each VRRP instance: state,
    /// priority, master, interval, ignored adverts per reason.
    Status,
    /// Packets, bytes and active flows per VIP and backend; packets per verdict reason.
    Stats {
        /// Refresh every SECS seconds and show rates.
        #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "1")]
        watch: Option<f64>,
    },
    /// Re-read lbd's config file and apply only what changed (same as SIGHUP). VIPs and
    /// backends that stay keep their flows and table slots; an invalid file changes nothing.
    Reload,
    /// List, show, add or remove VIPs.
    #[command(subcommand)]
    Vip(VipCmd),
    /// List, add, remove, re-weight or drain a VIP's backends.
    #[command(subcommand)]
    Backend(BackendCmd),
    /// Health of every checked or forced backend: state, consecutive results, last error.
    Health,
    /// Check a config file, or show or save the running configuration.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
}

#[derive(Subcommand)]
pub enum VipCmd {
    /// Every VIP with its mode and backend count.
    List,
    /// One VIP: its backends, their state and counters.
    Show { vip: String },
    /// Add a VIP, e.g. `lbctl vip add 192.0.2.50:80/tcp --name web`.
    Add {
        /// ADDRESS:PORT/PROTOCOL, e.g. 192.0.2.50:80/tcp or [2001:db8::50]:443/tcp.
        #[arg(value_parser = parse_vip_address)]
        vip: (IpAddr, u16, Protocol),
        #[arg(long)]
        name: Option<String>,
        #[arg(long, value_enum, default_value = "dr")]
        mode: ModeArg,
        /// Lookup-table slots (a prime; default 65537).
        #[arg(long)]
        table_size: Option<u32>,
        /// Send every connection of a client to the same backend.
        #[arg(long)]
        source_affinity: bool,
        /// What the VIP's packets get while no backend is usable: dropped, or passed to
        /// the kernel (a local service or the kernel's reset answers them).
        #[arg(long, value_enum, default_value = "drop")]
        all_down: AllDownArg,
    },
    /// Remove a VIP (by name or ADDRESS:PORT/PROTOCOL).
    Del { vip: String },
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum AllDownArg {
    /// Drop them (counted as drop_no_backend).
    Drop,
    /// Pass them to the kernel (counted as pass_no_backend).
    Pass,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ModeArg {
    /// Direct return (backends hold the VIP on loopback).
    Dr,
    /// NAT (backends anywhere routed through this node; port remapping).
    Nat,
}

#[derive(Subcommand)]
pub enum BackendCmd {
    /// A VIP's backends with weight, drain state, MAC, counters and active flows.
    List { vip: String },
    /// Add a backend to a VIP.
    Add {
        vip: String,
        address: IpAddr,
        #[arg(long, default_value_t = 1)]
        weight: u32,
        /// NAT VIPs: the port the backend listens on (default: the VIP's).
        #[arg(long)]
        port: Option<u16>,
    },
    /// Remove a backend; its flows move to the others at their next packet.
    Del { vip: String, address: IpAddr },
    /// Set a backend's weight (0 to 10000).
    Weight {
        vip: String,
        address: IpAddr,
        weight: u32,
    },
    /// Stop sending new flows to a backend; its established flows stay.
    Drain { vip: String, address: IpAddr },
    /// End a drain: the backend gets new flows again at its weight.
    Undrain { vip: String, address: IpAddr },
    /// Force a backend in service whatever its health checks say (until `auto`).
    Up { vip: String, address: IpAddr },
    /// Force a backend out of service: no new flows, its flows move to the others.
    Down { vip: String, address: IpAddr },
    /// Clear `up`/`down`: the backend follows its health checks again.
    Auto { vip: String, address: IpAddr },
}

#[derive(Subcommand)]
pub enum ConfigCmd {
    /// Validate a config file without touching lbd (exit 3 if invalid).
    Check { file: PathBuf },
    /// Print the running configuration (runtime changes included) as TOML.
    Show,
    /// Write the running configuration to PATH, or over the file lbd was started with.
    Save { path: Option<PathBuf> },
    /// Convert a keepalived.conf into this TOML (docs/import.md). Local: lbd is not
    /// asked. What could not be converted is listed on stderr and atop the output.
    /// Exit 0 when converted (with or without warnings), 3 when FILE cannot be read or
    /// parsed.
    ///
    /// Example: lbctl config import /etc/keepalived/keepalived.conf -o /etc/lbd/lb.toml
    #[command(verbatim_doc_comment)]
    Import {
        file: PathBuf,
        /// agent.interface (default: the first vrrp_instance's interface).
        #[arg(long)]
        interface: Option<String>,
        /// Write the TOML here instead of to stdout.
        #[arg(short, long, value_name = "OUT")]
        output: Option<PathBuf>,
    },
}

pub fn parse_vip_address(s: &str) -> Result<(IpAddr, u16, Protocol), String> {
    let usage = "expected ADDRESS:PORT/PROTOCOL, e.g. 192.0.2.50:80/tcp or [2001:db8::50]:443/udp";
    let (addr, proto) = s
        .rsplit_once('/')
        .ok_or_else(|| format!("no /PROTOCOL in {s:?}; {usage}"))?;
    let protocol = match proto {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        other => return Err(format!("unknown protocol {other:?}: use tcp or udp")),
    };
    let sa: SocketAddr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not ADDRESS:PORT; {usage}"))?;
    Ok((sa.ip(), sa.port(), protocol))
}
