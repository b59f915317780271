//! lbctl: the command-line client of lbd's control socket.

use std::{
    io::IsTerminal as _,
    net::SocketAddr,
    process::ExitCode,
    time::{Duration, Instant},
};

use clap::{CommandFactory, Parser};
use lb_userspace::{
    agent::ApplySummary,
    cli::lbctl::{AllDownArg, Args, BackendCmd, Cmd, ConfigCmd, ModeArg, VipCmd},
    config::{self, AllDown, ForwardingMode, VipConfig},
    control::{self, BackendStats, Command, HealthReport, StatsReport, StatusReport, VipStats},
    edit::VipSpec,
    import,
};

fn main() -> ExitCode {
    let args = Args::parse();
    let command = match args.command {
        Cmd::Completions { shell } => {
            clap_complete::generate(shell, &mut Args::command(), "lbctl", &mut std::io::stdout());
            return ExitCode::SUCCESS;
        }
        Cmd::Config(ConfigCmd::Check { file }) => return config_check(&file, args.json),
        Cmd::Config(ConfigCmd::Import {
            file,
            interface,
            output,
        }) => return config_import(&file, interface, output.as_deref()),
        Cmd::Stats { watch: Some(secs) } => return watch_stats(&args.socket, secs),
        Cmd::Status => Command::Status,
        Cmd::Stats { watch: None } => Command::Stats,
        Cmd::Reload => Command::Reload,
        Cmd::Vip(VipCmd::List) => Command::VipList,
        Cmd::Vip(VipCmd::Show { vip }) => Command::VipShow { vip },
        Cmd::Vip(VipCmd::Add {
            vip: (address, port, protocol),
            name,
            mode,
            table_size,
            source_affinity,
            all_down,
        }) => Command::VipAdd {
            vip: VipSpec {
                name,
                address,
                port,
                protocol,
                mode: match mode {
                    ModeArg::Dr => ForwardingMode::Dr,
                    ModeArg::Nat => ForwardingMode::Nat,
                },
                table_size,
                source_affinity,
                all_down: match all_down {
                    AllDownArg::Drop => AllDown::Drop,
                    AllDownArg::Pass => AllDown::Pass,
                },
            },
        },
        Cmd::Vip(VipCmd::Del { vip }) => Command::VipDel { vip },
        Cmd::Backend(BackendCmd::List { vip }) => Command::BackendList { vip },
        Cmd::Backend(BackendCmd::Add {
            vip,
            address,
            weight,
            port,
        }) => Command::BackendAdd {
            vip,
            address,
            weight,
            port,
        },
        Cmd::Backend(BackendCmd::Del { vip, address }) => Command::BackendDel { vip, address },
        Cmd::Backend(BackendCmd::Weight {
            vip,
            address,
            weight,
        }) => Command::BackendWeight {
            vip,
            address,
            weight,
        },
        Cmd::Backend(BackendCmd::Drain { vip, address }) => Command::BackendDrain { vip, address },
        Cmd::Backend(BackendCmd::Undrain { vip, address }) => {
            Command::BackendUndrain { vip, address }
        }
        Cmd::Backend(BackendCmd::Up { vip, address }) => Command::BackendUp { vip, address },
        Cmd::Backend(BackendCmd::Down { vip, address }) => Command::BackendDown { vip, address },
        Cmd::Backend(BackendCmd::Auto { vip, address }) => Command::BackendAuto { vip, address },
        Cmd::Health => Command::Health,
        Cmd::Config(ConfigCmd::Show) => Command::ConfigShow,
        Cmd::Config(ConfigCmd::Save { path }) => Command::ConfigSave { path },
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
    match print(&command, data) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "lbctl: unexpected reply from lbd ({e}); are lbd and lbctl the same release?"
            );
            ExitCode::FAILURE
        }
    }
}

fn print(command: &Command, data: serde_json::Value) -> serde_json::Result<()> {
    match command {
        Command::Status => print_status(&serde_json::from_value(data)?),
        Command::Stats => print_stats(&serde_json::from_value(data)?, None),
        Command::VipList => print_vips(&serde_json::from_value::<Vec<VipConfig>>(data)?),
        Command::VipShow { .. } => {
            let v: VipStats = serde_json::from_value(data)?;
            println!(
                "{} {}:{}/{}  packets {} bytes {}",
                v.name, v.address, v.port, v.protocol, v.packets, v.bytes
            );
            print_backends(&v.backends);
        }
        Command::BackendList { .. } => {
            print_backends(&serde_json::from_value::<Vec<BackendStats>>(data)?)
        }
        Command::ConfigShow => print!("{}", data["toml"].as_str().unwrap_or_default()),
        Command::ConfigSave { .. } => println!(
            "saved {} bytes to {}",
            data["bytes"],
            data["path"].as_str().unwrap_or("?")
        ),
        Command::State => println!("{}", serde_json::to_string_pretty(&data)?),
        Command::Health => print_health(&serde_json::from_value::<Vec<HealthReport>>(data)?),
        Command::BackendUp { .. } | Command::BackendDown { .. } | Command::BackendAuto { .. } => {
            let forced = data["forced"]
                .as_str()
                .map_or("cleared (follows its checks)".to_owned(), |f| {
                    format!("forced {f}")
                });
            println!(
                "{} in {}: {forced}",
                data["address"].as_str().unwrap_or("?"),
                data["vip"].as_str().unwrap_or("?")
            );
        }
        _ => {
            let s: ApplySummary = serde_json::from_value(data)?;
            println!(
                "applied: VIPs +{} -{} ~{}, backends +{} -{}, {} table slots rewritten",
                s.vips_added,
                s.vips_removed,
                s.vips_changed,
                s.backends_added,
                s.backends_removed,
                s.slots_written
            );
        }
    }
    Ok(())
}

fn config_check(file: &std::path::Path, json: bool) -> ExitCode {
    match config::load(file) {
        Ok(c) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "valid": true, "vips": c.vips.len() })
                );
            } else {
                println!(
                    "{}: configuration is valid ({} VIPs)",
                    file.display(),
                    c.vips.len()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            if json {
                let d: Vec<_> = e.diagnostics.iter().map(|d| serde_json::json!({ "line": d.line, "column": d.column, "key": d.key, "message": d.message })).collect();
                println!("{}", serde_json::json!({ "valid": false, "errors": d }));
            } else {
                eprint!("{e}");
            }
            ExitCode::from(3)
        }
    }
}

fn config_import(
    file: &std::path::Path,
    interface: Option<String>,
    output: Option<&std::path::Path>,
) -> ExitCode {
    let opts = import::Options { interface };
    let imported = match import::keepalived::import_file(file, &opts) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("lbctl: {e}");
            return ExitCode::from(3);
        }
    };
    for r in &imported.remarks {
        eprintln!("{r}");
    }
    match output {
        None => print!("{}", imported.toml),
        Some(path) => {
            if let Err(e) = std::fs::write(path, &imported.toml) {
                eprintln!("lbctl: writing {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
            eprintln!(
                "lbctl: wrote {} ({} VIPs, {} warnings)",
                path.display(),
                imported.config.vips.len(),
                imported
                    .remarks
                    .iter()
                    .filter(|r| r.severity == import::Severity::Warning)
                    .count()
            );
        }
    }
    ExitCode::SUCCESS
}

fn watch_stats(socket: &std::path::Path, secs: f64) -> ExitCode {
    let interval = Duration::from_secs_f64(secs.max(0.1));
    let mut previous: Option<(Instant, StatsReport)> = None;
    loop {
        let stats: StatsReport = match control::request(socket, &Command::Stats)
            .and_then(|d| Ok(serde_json::from_value(d)?))
        {
            Ok(s) => s,
            Err(e) => {
                eprintln!("lbctl: {e:#}");
                return ExitCode::FAILURE;
            }
        };
        if std::io::stdout().is_terminal() {
            print!("\x1b[2J\x1b[H");
        }
        let rates = previous
            .as_ref()
            .map(|(t, p)| (t.elapsed().as_secs_f64(), p));
        print_stats(&stats, rates);
        previous = Some((Instant::now(), stats));
        std::thread::sleep(interval);
    }
}

fn print_health(backends: &[HealthReport]) {
    if backends.is_empty() {
        println!("no backend has a health check or a forced state");
        return;
    }
    println!(
        "{:<16} {:<22} {:<6} {:<7} {:>5} {:>5} {:>7}  LAST ERROR",
        "VIP", "TARGET", "STATE", "FORCED", "OK", "FAIL", "CHECKS"
    );
    for b in backends {
        let error = match (&b.last_error, b.last_failure_secs_ago) {
            (Some(e), Some(ago)) => format!("{e} ({ago:.0}s ago)"),
            (Some(e), None) => e.clone(),
            _ => "-".into(),
        };
        println!(
            "{:<16} {:<22} {:<6} {:<7} {:>5} {:>5} {:>7}  {error}",
            b.vip,
            b.target,
            b.state,
            b.forced.as_deref().unwrap_or("-"),
            b.successes,
            b.failures,
            b.checks
        );
    }
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
    let a = &s.adopted;
    if a.any() {
        println!(
            "adopted from the previous run: {} maps ({} replaced), {} XDP link(s){}; {} map writes since",
            a.maps.len(),
            a.replaced.len(),
            a.links.len(),
            match a.program_changed {
                Some(true) => ", program upgraded",
                Some(false) => ", same program",
                None => "",
            },
            s.map_writes
        );
    }
    if s.vrrp.is_empty() {
        return;
    }
    println!(
        "\n{:<16} {:<10} {:>4} {:>2} {:<10} {:>4} {:<24} {:>9} {:>10}  ADDRESSES",
        "VRRP", "INTERFACE", "VRID", "V", "STATE", "PRIO", "MASTER", "INTERVAL", "SINCE"
    );
    for v in &s.vrrp {
        let master = match v.master {
            Some(m) if m == v.address => format!("{m} (this node)"),
            Some(m) => m.to_string(),
            None => "-".to_owned(),
        };
        println!(
            "{:<16} {:<10} {:>4} {:>2} {:<10} {:>4} {:<24} {:>7}ms {:>9.1}s  {}",
            v.name,
            v.interface,
            v.vrid,
            v.version,
            v.state,
            v.priority,
            master,
            v.advert_interval_ms,
            v.last_change_secs_ago,
            v.addresses.join(" ")
        );
        println!(
            "  adverts sent {} received {}; became master {}x, backup {}x{}",
            v.adverts_sent,
            v.adverts_received,
            v.became_master,
            v.became_backup,
            if v.unicast { "; unicast" } else { "" }
        );
        if !v.ignored.is_empty() {
            let ignored: Vec<String> = v.ignored.iter().map(|(r, n)| format!("{r} {n}")).collect();
            println!("  ignored: {}", ignored.join(", "));
        }
        if let Some(t) = &v.last_takeover {
            println!(
                "  last takeover: advert +{}us, XDP attached +{}us, addresses +{}us, announced +{}us",
                t.advert_us, t.xdp_attached_us, t.addresses_us, t.announced_us
            );
        }
    }
}

fn print_vips(vips: &[VipConfig]) {
    println!(
        "{:<20} {:<28} {:<5} {:>9} {:>9} {:>9} {:>9}",
        "NAME", "VIP", "MODE", "TABLE", "AFFINITY", "ALL DOWN", "BACKENDS"
    );
    for v in vips {
        let addr = format!("{}/{}", SocketAddr::new(v.address, v.port), v.protocol);
        let mode = v.mode.to_string();
        println!(
            "{:<20} {:<28} {:<5} {:>9} {:>9} {:>9} {:>9}",
            v.name,
            addr,
            mode,
            v.table_size,
            if v.source_affinity { "source" } else { "-" },
            v.all_down.to_string(),
            v.backends.len()
        );
    }
}

fn print_backends(backends: &[BackendStats]) {
    println!(
        "  {:<40} {:>7} {:<8} {:<18} {:>12} {:>14} {:>8}",
        "BACKEND", "WEIGHT", "STATE", "MAC", "PACKETS", "BYTES", "FLOWS"
    );
    for b in backends {
        let state = if b.drain {
            "draining"
        } else {
            b.state.as_str()
        };
        // NAT backends are routed by the kernel's FIB: their MAC is not needed.
        let (address, mac) = match b.port {
            Some(port) => (SocketAddr::new(b.address, port).to_string(), "(routed)"),
            None => (
                b.address.to_string(),
                b.mac.as_deref().unwrap_or("unresolved"),
            ),
        };
        println!(
            "  {:<40} {:>7} {:<8} {:<18} {:>12} {:>14} {:>8}",
            address, b.weight, state, mac, b.packets, b.bytes, b.active_flows
        );
    }
}

/// `rates`: seconds since the previous report, and that report, for per-second rates.
fn print_stats(s: &StatsReport, rates: Option<(f64, &StatsReport)>) {
    let rate = |now: u64, then: Option<u64>| match (rates, then) {
        (Some((dt, _)), Some(then)) if dt > 0.0 => {
            format!("{:.0}/s", now.saturating_sub(then) as f64 / dt)
        }
        _ => String::new(),
    };
    println!(
        "{:<28} {:<24} {:>12} {:>10} {:>14} {:>8}",
        "VIP", "BACKEND", "PACKETS", "PPS", "BYTES", "FLOWS"
    );
    for (i, v) in s.vips.iter().enumerate() {
        let prev_vip = rates
            .and_then(|(_, p)| p.vips.get(i))
            .filter(|p| p.name == v.name);
        let vip = format!("{}/{}", SocketAddr::new(v.address, v.port), v.protocol);
        let flows: u64 = v.backends.iter().map(|b| b.active_flows).sum();
        println!(
            "{:<28} {:<24} {:>12} {:>10} {:>14} {:>8}",
            vip,
            "(all)",
            v.packets,
            rate(v.packets, prev_vip.map(|p| p.packets)),
            v.bytes,
            flows
        );
        for b in &v.backends {
            let prev = prev_vip
                .and_then(|p| p.backends.iter().find(|x| x.address == b.address))
                .map(|x| x.packets);
            let name = format!("{}{}", b.address, if b.drain { " (drain)" } else { "" });
            println!(
                "{:<28} {:<24} {:>12} {:>10} {:>14} {:>8}",
                "",
                name,
                b.packets,
                rate(b.packets, prev),
                b.bytes,
                b.active_flows
            );
        }
    }
    println!();
    println!("{:<22} {:>12} {:>14}", "VERDICT", "PACKETS", "BYTES");
    for v in &s.verdicts {
        println!("{:<22} {:>12} {:>14}", v.verdict, v.packets, v.bytes);
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
    let forwarded = s
        .reasons
        .iter()
        .find(|r| r.reason == "forwarded_dr")
        .map_or(0, |r| r.packets);
    println!();
    println!(
        "flow cache: {} of {forwarded} DR packets forwarded from it ({}), {} slots per CPU",
        s.flow_cache.hits,
        match forwarded {
            0 => "-".to_owned(),
            n => format!("{:.1} %", 100.0 * s.flow_cache.hits as f64 / n as f64),
        },
        s.flow_cache.slots_per_cpu
    );
}
