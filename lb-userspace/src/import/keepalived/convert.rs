//! keepalived statements into our tables: `global_defs`, `vrrp_script`, `vrrp_sync_group`,
//! `vrrp_instance`, and the dispatch of everything else. Virtual servers are in
//! [`super::lvs`]. Every keyword is either mapped, or named in a remark that says why not.

use std::{collections::HashMap, net::IpAddr, time::Duration};

use toml::Value;

use super::{
    lvs,
    parse::{Document, Loc, Stmt},
};
use crate::import::{
    output::{Draft, Origin, Table},
    Options, Remark, Severity,
};

/// The converter's state: remarks so far, and what `global_defs` set for the rest.
pub(super) struct Ctx {
    pub remarks: Vec<Remark>,
    vrrp_version: Option<u8>,
    strict: bool,
    /// `vrrp_garp_*` from `global_defs`: every instance's defaults.
    garp: Vec<(String, Value)>,
    /// `vrrp_script` blocks by name: what a `track_script` referred to.
    scripts: HashMap<String, Stmt>,
    tracked_scripts: Vec<String>,
}

pub(super) fn origin(loc: &Loc) -> Origin {
    Origin {
        file: loc.file.clone(),
        line: loc.line,
    }
}

impl Ctx {
    pub fn warn(&mut self, loc: &Loc, message: impl Into<String>) {
        self.remarks.push(loc.remark(Severity::Warning, message));
    }

    pub fn note(&mut self, loc: &Loc, message: impl Into<String>) {
        self.remarks.push(loc.remark(Severity::Note, message));
    }

    /// The statement's only argument, or a warning that it has none.
    pub fn value<'a>(&mut self, s: &'a Stmt) -> Option<&'a str> {
        let v = s.arg(0);
        if v.is_none() {
            self.warn(
                s.loc(),
                format!("`{}` without a value: ignored", s.keyword()),
            );
        }
        v
    }

    pub fn int(&mut self, s: &Stmt, min: i64, max: i64) -> Option<i64> {
        let v = self.value(s)?;
        match v.parse::<i64>() {
            Ok(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                self.warn(
                    s.loc(),
                    format!(
                        "`{} {v}`: not a whole number in {min}-{max}; ignored",
                        s.keyword()
                    ),
                );
                None
            }
        }
    }

    /// A keepalived TIMER: seconds, fractions allowed, microsecond resolution.
    pub fn timer(&mut self, s: &Stmt) -> Option<Duration> {
        let v = self.value(s)?;
        match parse_seconds(v) {
            Some(d) => Some(d),
            None => {
                self.warn(
                    s.loc(),
                    format!("`{} {v}`: not a time in seconds; ignored", s.keyword()),
                );
                None
            }
        }
    }

    /// A keepalived BOOL: no argument means on.
    pub fn flag(&mut self, s: &Stmt) -> bool {
        match s.arg(0).map(str::to_ascii_lowercase).as_deref() {
            None | Some("on" | "true" | "yes") => true,
            Some("off" | "false" | "no") => false,
            Some(other) => {
                self.warn(
                    s.loc(),
                    format!(
                        "`{} {other}`: not on/off/true/false/yes/no; read as on",
                        s.keyword()
                    ),
                );
                true
            }
        }
    }

    pub fn ip(&mut self, s: &Stmt, text: &str) -> Option<IpAddr> {
        match text.parse::<IpAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.warn(
                    s.loc(),
                    format!("`{}`: {text:?} is not an IP address; ignored", s.keyword()),
                );
                None
            }
        }
    }

    /// `script [user [group]]`: the program and arguments, and a warning for the user.
    pub fn command(&mut self, s: &Stmt, what: &str) -> Option<Vec<String>> {
        let script = self.value(s)?;
        let words = split_command(script);
        if words.is_empty() {
            self.warn(s.loc(), format!("`{}` with an empty command", s.keyword()));
            return None;
        }
        if let Some(user) = s.arg(1) {
            self.warn(
                s.loc(),
                format!("{what}: runs as root under lbd; keepalived ran it as {user} (a user of its own is not converted)"),
            );
        }
        Some(words)
    }
}

/// keepalived's `<TIMER>`: decimal seconds, e.g. `3`, `0.5`, `2.71828`.
pub fn parse_seconds(text: &str) -> Option<Duration> {
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() && frac.is_empty()
        || !whole.chars().all(|c| c.is_ascii_digit())
        || !frac.chars().all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let secs: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    if secs > 1_000_000_000 {
        return None;
    }
    let micros: u64 = format!("{frac:0<6}").get(..6)?.parse().ok()?;
    Some(Duration::from_secs(secs) + Duration::from_micros(micros))
}

/// A duration as our config writes it: `"3s"`, `"500ms"`, `"1500us"`.
pub fn duration_text(d: Duration) -> String {
    let micros = d.as_micros();
    if micros.is_multiple_of(1_000_000) {
        format!("{}s", micros / 1_000_000)
    } else if micros.is_multiple_of(1_000) {
        format!("{}ms", micros / 1_000)
    } else {
        format!("{micros}us")
    }
}

/// Splits a script line into program and arguments the way keepalived does: unquoted
/// spaces separate words, single or double quotes keep spaces (the outer quotes of the
/// keyword's value are already gone).
pub fn split_command(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    for c in s.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => word.push(c),
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                in_word = true;
            }
            None if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            None => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(word);
    }
    out
}

/// `s` as one shell word.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:=,+@%".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// One `notify` command from keepalived's `notify` and per-state `notify_*` scripts. lbd
/// runs `notify` with `INSTANCE NAME STATE PRIORITY` appended, as keepalived runs its
/// `notify`; per-state scripts become branches on the state (`$3`), run before `notify`.
fn notify_command(
    general: Option<Vec<String>>,
    per_state: &[(&str, Vec<String>)],
) -> Option<Vec<String>> {
    if per_state.is_empty() {
        return general;
    }
    let quoted = |words: &[String]| {
        words
            .iter()
            .map(|w| shell_quote(w))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let branches: Vec<String> = per_state
        .iter()
        .map(|(state, cmd)| format!("{state}) {} ;;", quoted(cmd)))
        .collect();
    let mut script = format!("case \"$3\" in {} esac", branches.join(" "));
    if let Some(g) = general {
        script.push_str(&format!("; exec {} \"$@\"", quoted(&g)));
    }
    Some(vec!["/bin/sh".into(), "-c".into(), script, "notify".into()])
}

pub(super) fn convert(doc: Document, opts: &Options, source: &str) -> (Draft, Vec<Remark>) {
    let mut cx = Ctx {
        remarks: doc.remarks,
        vrrp_version: None,
        strict: false,
        garp: Vec::new(),
        scripts: HashMap::new(),
        tracked_scripts: Vec::new(),
    };
    let mut agent = Table::new(None, "agent");
    let mut agent_idle: Vec<(&str, Value)> = Vec::new();

    // Statements that set defaults for others come first, wherever they stand.
    let mut rest = Vec::new();
    for s in &doc.stmts {
        if let Some(c) = &s.condition {
            cx.warn(
                s.loc(),
                format!(
                    "`@{c} {}`: depends on keepalived's config id (-i); not converted, write it into the TOML of the nodes it applies to",
                    s.keyword()
                ),
            );
            continue;
        }
        match s.keyword() {
            "global_defs" => global_defs(&mut cx, s, &mut agent_idle),
            "vrrp_script" => match s.arg(0) {
                Some(name) => {
                    cx.scripts.insert(name.to_owned(), s.clone());
                }
                None => cx.warn(s.loc(), "vrrp_script without a name: ignored"),
            },
            _ => rest.push(s),
        }
    }
    let groups: HashMap<&str, &Stmt> = rest
        .iter()
        .filter(|s| s.keyword() == "virtual_server_group")
        .filter_map(|s| s.arg(0).map(|n| (n, *s)))
        .collect();

    let interface = opts.interface.clone().or_else(|| {
        rest.iter()
            .filter(|s| s.keyword() == "vrrp_instance")
            .find_map(|s| s.children().iter().find(|c| c.keyword() == "interface"))
            .and_then(|c| c.arg(0).map(str::to_owned))
    });
    let interface = match interface {
        Some(i) => i,
        None => {
            let loc = doc_start(source);
            cx.warn(
                &loc,
                "no vrrp_instance names an interface: agent.interface set to \"eth0\"; give the real one with --interface",
            );
            "eth0".to_owned()
        }
    };
    agent.set("interface", interface.as_str());
    for (k, v) in agent_idle {
        agent.set(k, v);
    }

    let mut vrrp = Vec::new();
    let mut vips = Vec::new();
    for s in rest {
        match s.keyword() {
            "vrrp_instance" => {
                if let Some(t) = vrrp_instance(&mut cx, s, &interface) {
                    vrrp.push(t);
                }
            }
            "vrrp_sync_group" => sync_group(&mut cx, s),
            "virtual_server" => vips.extend(lvs::virtual_server(&mut cx, s, &groups)),
            "virtual_server_group" => {}
            "static_ipaddress" | "static_routes" | "static_rules" => cx.warn(
                s.loc(),
                format!("{}: lbd does not manage static addresses, routes or rules; keep them in the system's network configuration", s.keyword()),
            ),
            "vrrp_track_file" | "track_file" | "vrrp_track_process" | "track_process"
            | "bfd_instance" | "linkbeat_interfaces" | "track_group" | "garp_group" => cx.warn(
                s.loc(),
                format!("{} {}: not supported by lbd; not converted", s.keyword(), s.arg(0).unwrap_or("")),
            ),
            "SSL" => cx.warn(
                s.loc(),
                "SSL: keepalived's client certificate for SSL_GET checks is not converted; lbd's https checks present none",
            ),
            "net_namespace" | "instance" => cx.warn(
                s.loc(),
                format!("{}: run lbd inside the namespace instead; not converted", s.keyword()),
            ),
            other => cx.warn(
                s.loc(),
                format!("unknown top-level keyword `{other}`: not converted"),
            ),
        }
    }

    let unused: Vec<String> = {
        let mut names: Vec<&String> = cx
            .scripts
            .keys()
            .filter(|n| !cx.tracked_scripts.contains(n))
            .collect();
        names.sort();
        names.into_iter().cloned().collect()
    };
    for name in unused {
        if let Some(s) = cx.scripts.get(&name).cloned() {
            cx.note(
                s.loc(),
                format!("vrrp_script {name} is tracked by no instance: nothing to convert"),
            );
        }
    }

    let draft = Draft {
        source: source.to_owned(),
        agent,
        vrrp,
        vips,
    };
    (draft, cx.remarks)
}

fn doc_start(source: &str) -> Loc {
    Loc {
        file: source.into(),
        line: 1,
        column: 1,
    }
}

fn global_defs(cx: &mut Ctx, g: &Stmt, agent: &mut Vec<(&'static str, Value)>) {
    for s in g.children() {
        let k = s.keyword();
        match k {
            "vrrp_version" => {
                if let Some(v) = cx.int(s, 2, 3) {
                    cx.vrrp_version = Some(v as u8);
                }
            }
            "vrrp_strict" => {
                cx.strict = true;
                cx.warn(
                    s.loc(),
                    "vrrp_strict: keepalived then drops traffic to the addresses of instances below priority 255 (no_accept), refuses authentication and unicast, and insists on a link-local first IPv6 address; lbd serves its VIPs on every node that holds them, so no_accept is not converted, and the rest is checked per instance below",
                );
            }
            "vrrp_garp_master_delay"
            | "vrrp_garp_master_refresh"
            | "vrrp_garp_lower_prio_delay" => {
                if let Some(d) = cx.timer(s) {
                    cx.garp
                        .push((k["vrrp_".len()..].to_owned(), duration_text(d).into()));
                }
            }
            "vrrp_garp_master_repeat"
            | "vrrp_garp_master_refresh_repeat"
            | "vrrp_garp_lower_prio_repeat" => {
                if let Some(n) = cx.int(s, 0, 10_000) {
                    cx.garp.push((k["vrrp_".len()..].to_owned(), n.into()));
                }
            }
            "vrrp_min_garp" => {
                if cx.flag(s) {
                    cx.garp.push(("garp_master_repeat".into(), 1.into()));
                    cx.garp.push(("garp_master_delay".into(), "0s".into()));
                }
            }
            "lvs_timeouts" => {
                let args: Vec<&str> = s.args().iter().map(|w| w.text.as_str()).collect();
                for pair in args.chunks(2) {
                    let key = match pair[0] {
                        "tcp" => Some("tcp_idle_timeout"),
                        "udp" => Some("udp_idle_timeout"),
                        _ => None,
                    };
                    match (key, pair.get(1).and_then(|v| v.parse::<u64>().ok())) {
                        (Some(key), Some(secs)) if secs > 0 => {
                            agent.push((key, duration_text(Duration::from_secs(secs)).into()))
                        }
                        _ => cx.warn(
                            s.loc(),
                            format!("lvs_timeouts {}: not converted (lbd has tcp and udp idle timeouts only)", pair.join(" ")),
                        ),
                    }
                }
            }
            "router_id" | "lvs_id" => cx.note(
                s.loc(),
                format!("{k}: only names the node in keepalived's mails and logs; not used by lbd"),
            ),
            "notification_email" | "notification_email_from" | "smtp_server"
            | "smtp_connect_timeout" | "smtp_helo_name" | "smtp_alert" | "smtp_alert_vrrp"
            | "smtp_alert_checker" | "email_from" => cx.note(
                s.loc(),
                format!("{k}: lbd sends no mail; watch `lbctl status` or its log instead"),
            ),
            "enable_script_security" | "script_user" => cx.note(
                s.loc(),
                format!("{k}: lbd runs check and notify commands as its own user, without a shell"),
            ),
            "vrrp_mcast_group4" | "vrrp_mcast_group6" => cx.warn(
                s.loc(),
                format!("{k}: lbd sends adverts to the standard VRRP group only; not converted (keepalived peers must use the standard group too)"),
            ),
            "vrrp_skip_check_adv_addr" | "vrrp_check_unicast_src" | "vrrp_iptables"
            | "vrrp_nftables" | "vrrp_no_swap" | "checker_no_swap" | "vrrp_priority"
            | "checker_priority" | "bfd_priority" | "max_auto_priority"
            | "vrrp_rlimit_rttime" | "checker_rlimit_rttime" | "bfd_rlimit_rttime"
            | "lvs_flush" | "lvs_flush_on_stop" | "dynamic_interfaces"
            | "vrrp_garp_interval" | "vrrp_gna_interval" | "process_names"
            | "vrrp_lower_prio_no_advert" | "vrrp_higher_prio_send_advert"
            | "vrrp_notify_fifo" | "notify_fifo" | "lvs_notify_fifo" | "vrrp_notify_fifo_script"
            | "notify_fifo_script" | "vrrp_startup_delay" | "vrrp_down_timer_adverts"
            | "enable_traps" | "snmp_socket" | "use_pid_dir" | "linkbeat_use_polling"
            | "state_file_location" | "vrrp_netlink_cmd_rcv_bufs" | "vrrp_netlink_monitor_rcv_bufs"
            | "lvs_netlink_cmd_rcv_bufs" | "lvs_netlink_monitor_rcv_bufs" | "vrrp_rx_bufs_policy"
            | "vrrp_rx_bufs_multiplier" | "vrrp_garp_extra_if" | "v3_checksum_as_v2"
            | "instance" | "net_namespace" | "startup_script" | "shutdown_script"
            | "uninitialised_script" | "include_check" | "dynamic_interfaces_no_recreate" => {
                cx.note(s.loc(), format!("{k}: keepalived tuning with no lbd equivalent; ignored"))
            }
            other => cx.warn(
                s.loc(),
                format!("global_defs {other}: unknown to the converter; not converted"),
            ),
        }
    }
}

fn sync_group(cx: &mut Ctx, s: &Stmt) {
    let name = s.arg(0).unwrap_or("(unnamed)");
    let members: Vec<String> = s
        .children()
        .iter()
        .filter(|c| c.keyword() == "group")
        .flat_map(|c| {
            c.children()
                .iter()
                .flat_map(|m| m.words.iter().map(|w| w.text.clone()))
        })
        .collect();
    cx.warn(
        s.loc(),
        format!(
            "vrrp_sync_group {name}: lbd has no sync groups; its instances ({}) are converted but fail over one by one, not together",
            members.join(", ")
        ),
    );
    for c in s.children() {
        match c.keyword() {
            "group" => {}
            "track_script" => track_scripts(cx, c, &format!("vrrp_sync_group {name}")),
            k if k.starts_with("notify") => cx.warn(
                c.loc(),
                format!("vrrp_sync_group {name}: {k} not converted (lbd runs notify per instance)"),
            ),
            k => cx.warn(
                c.loc(),
                format!("vrrp_sync_group {name}: {k} not converted"),
            ),
        }
    }
}

fn track_scripts(cx: &mut Ctx, block: &Stmt, owner: &str) {
    for t in block.children() {
        let name = t.keyword().to_owned();
        let weight = match (t.arg(0), t.arg(1)) {
            (Some("weight"), Some(w)) => Some(w.to_owned()),
            _ => None,
        };
        cx.tracked_scripts.push(name.clone());
        let what = match cx.scripts.get(&name) {
            Some(def) => {
                let script = def
                    .children()
                    .iter()
                    .find(|c| c.keyword() == "script")
                    .and_then(|c| c.arg(0))
                    .unwrap_or("?")
                    .to_owned();
                let weight = weight.or_else(|| {
                    def.children()
                        .iter()
                        .find(|c| c.keyword() == "weight")
                        .and_then(|c| c.arg(0))
                        .map(str::to_owned)
                });
                let effect = match weight.as_deref().and_then(|w| w.parse::<i64>().ok()) {
                    Some(0) | None => "went to FAULT (gave up mastership)".to_owned(),
                    Some(w) if w > 0 => format!("gained {w} priority while it succeeded"),
                    Some(w) => format!("lost {} priority while it failed", -w),
                };
                format!("`{script}` (vrrp_script {name}): with it the instance {effect}")
            }
            None => format!("vrrp_script {name} (not defined in this file)"),
        };
        cx.warn(
            t.loc(),
            format!("{owner}: track_script {what}; lbd has no tracked scripts, so this no longer moves the address"),
        );
    }
}

fn vrrp_instance(cx: &mut Ctx, s: &Stmt, agent_interface: &str) -> Option<Table> {
    let Some(name) = s.arg(0) else {
        cx.warn(s.loc(), "vrrp_instance without a name: not converted");
        return None;
    };
    let me = format!("vrrp_instance {name}");
    let mut t = Table::new(Some(origin(s.loc())), me.clone());
    t.set("name", name);

    let mut interface: Option<String> = None;
    let mut vrid = None;
    let mut priority = None;
    let mut version = None;
    let mut advert: Option<(Duration, Loc)> = None;
    let mut master: Option<Loc> = None;
    let mut nopreempt: Option<Loc> = None;
    let mut preempt_delay: Option<(Duration, Loc)> = None;
    let mut auth: Option<(String, Loc)> = None;
    let mut unicast_src = None;
    let mut peers: Vec<IpAddr> = Vec::new();
    let mut peers_given = false;
    let mut old_checksum = None;
    let mut addresses: Vec<(IpAddr, String, Loc)> = Vec::new();
    let mut dev_addresses: Vec<(String, Loc)> = Vec::new();
    let mut notify = None;
    let mut per_state: Vec<(&str, Vec<String>)> = Vec::new();
    let mut garp = cx.garp.clone();

    for c in s.children() {
        if let Some(cond) = &c.condition {
            cx.warn(
                c.loc(),
                format!("{me}: `@{cond} {}` depends on keepalived's config id (-i); not converted, write it into the TOML of the nodes it applies to", c.keyword()),
            );
            continue;
        }
        let k = c.keyword();
        match k {
            "state" => match c.arg(0) {
                Some("MASTER") => {
                    master = Some(c.loc().clone());
                    cx.note(c.loc(), format!("{me}: state MASTER not needed: lbd starts as backup and the priority decides (keepalived also waits for the master-down timer below priority 255)"));
                }
                Some("BACKUP") => {}
                other => cx.warn(
                    c.loc(),
                    format!("{me}: state {}: not MASTER or BACKUP; ignored", other.unwrap_or("")),
                ),
            },
            "interface" => interface = cx.value(c).map(str::to_owned),
            "virtual_router_id" => vrid = cx.int(c, 1, 255),
            "priority" => priority = cx.int(c, 1, 255),
            "version" => version = cx.int(c, 2, 3).map(|v| v as u8),
            "advert_int" => advert = cx.timer(c).map(|d| (d, c.loc().clone())),
            "nopreempt" | "no_preempt" => nopreempt = Some(c.loc().clone()),
            "preempt" => {}
            "preempt_delay" => preempt_delay = cx.timer(c).map(|d| (d, c.loc().clone())),
            "authentication" => auth = authentication(cx, c, &me),
            "auth_hmac" => cx.warn(
                c.loc(),
                format!("{me}: auth_hmac (keepalived's own HMAC trailer) is not supported; adverts are sent and accepted without it"),
            ),
            "unicast_src_ip" => {
                if let Some(v) = cx.value(c) {
                    unicast_src = cx.ip(c, v);
                }
            }
            "unicast_peer" => {
                peers_given = true;
                for p in c.children() {
                    if let Some(ip) = cx.ip(p, p.keyword()) {
                        if !peers.contains(&ip) {
                            peers.push(ip);
                        }
                    }
                    if p.args().iter().any(|w| w.text.ends_with("_ttl")) {
                        cx.note(
                            p.loc(),
                            format!("{me}: unicast_peer {}: min_ttl/max_ttl not converted", p.keyword()),
                        );
                    }
                }
            }
            "old_unicast_checksum" => old_checksum = Some(c.arg(0) != Some("never")),
            "virtual_ipaddress" => {
                for a in c.children() {
                    if let Some((ip, text)) = vip_address(cx, a, &me) {
                        if let Some(dev) = option_value(a, "dev") {
                            dev_addresses.push((dev.to_owned(), a.loc().clone()));
                        }
                        addresses.push((ip, text, a.loc().clone()));
                    }
                }
            }
            "virtual_ipaddress_excluded" => cx.warn(
                c.loc(),
                format!(
                    "{me}: virtual_ipaddress_excluded ({} addresses) not converted: lbd announces every address it moves; add them to `addresses` once no keepalived peer is left (keepalived peers compare the address list in adverts)",
                    c.children().len()
                ),
            ),
            "notify" => notify = cx.command(c, &format!("{me}: notify")),
            "notify_master" | "notify_backup" | "notify_stop" => {
                let state = match k {
                    "notify_master" => "MASTER",
                    "notify_backup" => "BACKUP",
                    _ => "STOP",
                };
                if let Some(cmd) = cx.command(c, &format!("{me}: {k}")) {
                    per_state.retain(|(s, _)| *s != state);
                    per_state.push((state, cmd));
                    cx.note(c.loc(), format!("{me}: {k}: run by the instance's notify command when the state (its third argument) is {state}"));
                }
            }
            "notify_fault" | "notify_master_rx_lower_pri" | "notify_deleted" => cx.warn(
                c.loc(),
                format!(
                    "{me}: {k} `{}` not converted: lbd has no such event (an instance whose interface fails stops, and runs notify with STOP)",
                    c.arg(0).unwrap_or("")
                ),
            ),
            "track_script" => track_scripts(cx, c, &me),
            "track_interface" => {
                let names: Vec<&str> = c.children().iter().map(|i| i.keyword()).collect();
                cx.warn(
                    c.loc(),
                    format!("{me}: track_interface {} not converted: lbd watches only the instance's own interface", names.join(", ")),
                );
            }
            "track_file" | "track_process" | "track_bfd" | "track_src_ip" => cx.warn(
                c.loc(),
                format!("{me}: {k} not supported by lbd; not converted"),
            ),
            "use_vmac" | "vmac_xmit_base" | "use_vmac_addr" => cx.warn(
                c.loc(),
                format!("{me}: {k} not supported: lbd keeps the interface's own MAC and moves the address with gratuitous ARP / unsolicited NA"),
            ),
            "mcast_src_ip" => cx.warn(
                c.loc(),
                format!("{me}: mcast_src_ip not converted: lbd sends multicast adverts from the interface's primary address"),
            ),
            "garp_master_delay" | "garp_master_refresh" | "garp_lower_prio_delay" => {
                if let Some(d) = cx.timer(c) {
                    garp.push((k.to_owned(), duration_text(d).into()));
                }
            }
            "garp_master_repeat" | "garp_master_refresh_repeat" | "garp_lower_prio_repeat" => {
                if let Some(n) = cx.int(c, 0, 10_000) {
                    garp.push((k.to_owned(), n.into()));
                }
            }
            "accept" => cx.note(
                c.loc(),
                format!("{me}: accept: lbd always accepts traffic to the addresses it holds"),
            ),
            "no_accept" | "strict_mode" => cx.warn(
                c.loc(),
                format!("{me}: {k}: lbd has no no_accept mode (it serves the VIPs it holds); not converted"),
            ),
            "virtual_routes" | "virtual_rules" => cx.warn(
                c.loc(),
                format!("{me}: {k} not converted: lbd moves addresses only; add routes and rules in a notify command"),
            ),
            "dont_track_primary" | "skip_check_adv_addr" | "debug" | "smtp_alert"
            | "lvs_sync_daemon_interface" | "kernel_rx_buf_size" | "unicast_ttl"
            | "check_unicast_src" | "unicast_fault_no_peer" | "promote_secondaries"
            | "notify_priority_changes" | "down_timer_adverts" | "v3_checksum_as_v2"
            | "garp_extra_if" | "native_ipv6" | "no_virtual_ipaddress" | "vrf" | "mcast_dst_ip" => {
                cx.note(c.loc(), format!("{me}: {k}: no lbd equivalent; ignored"))
            }
            other => cx.warn(
                c.loc(),
                format!("{me}: unknown keyword `{other}`; not converted"),
            ),
        }
    }

    let Some(vrid) = vrid else {
        cx.warn(
            s.loc(),
            format!("{me}: no (valid) virtual_router_id; not converted"),
        );
        return None;
    };
    if let Some(first) = addresses.first().map(|a| a.0) {
        let (same, other): (Vec<_>, Vec<_>) = addresses
            .into_iter()
            .partition(|a| a.0.is_ipv6() == first.is_ipv6());
        for (_, text, loc) in other {
            cx.warn(&loc, format!("{me}: {text} is not of the family of the first address; not converted (make a second instance for it)"));
        }
        addresses = same;
    }
    if addresses.is_empty() {
        cx.warn(
            s.loc(),
            format!("{me}: no virtual_ipaddress; not converted (lbd's instances move at least one address)"),
        );
        return None;
    }
    let ipv6 = addresses[0].0.is_ipv6();
    let version = if ipv6 {
        if version.or(cx.vrrp_version) == Some(2) {
            cx.note(
                s.loc(),
                format!("{me}: IPv6 addresses: VRRP version 3, as keepalived also uses for IPv6"),
            );
        }
        3
    } else {
        version.or(cx.vrrp_version).unwrap_or(2)
    };
    if ipv6 && cx.strict {
        if let IpAddr::V6(a) = addresses[0].0 {
            if a.segments()[0] & 0xffc0 != 0xfe80 {
                cx.warn(&addresses[0].2, format!("{me}: under vrrp_strict keepalived needs a link-local first IPv6 address; {a} is not (RFC 5798 wants one too): add the link-local address first once no keepalived peer is left"));
            }
        }
    }

    let interface = interface.unwrap_or_else(|| {
        cx.note(
            s.loc(),
            format!("{me}: no interface; it runs on agent.interface ({agent_interface})"),
        );
        agent_interface.to_owned()
    });
    for (dev, loc) in dev_addresses {
        if dev != interface {
            cx.warn(&loc, format!("{me}: `dev {dev}` not converted: lbd adds every address of an instance to its interface ({interface})"));
        }
    }
    t.set("interface", interface.as_str());
    t.set("vrid", vrid);
    if let Some(p) = priority {
        t.set("priority", p);
    }
    // Always written: keepalived's default is 2, ours is 3.
    t.set("version", i64::from(version));
    if let Some((d, loc)) = advert {
        let d = if version == 2 && (d.subsec_nanos() != 0 || d.is_zero()) {
            let up = Duration::from_secs(d.as_secs() + 1).max(Duration::from_secs(1));
            cx.warn(&loc, format!("{me}: advert_int {} is not whole seconds, which VRRPv2 cannot carry; rounded up to {}", duration_text(d), duration_text(up)));
            up
        } else {
            d
        };
        t.set("advert_interval", duration_text(d));
    }
    match (&nopreempt, &master) {
        (Some(loc), Some(_)) => cx.warn(
            loc,
            format!("{me}: nopreempt with state MASTER: keepalived ignores nopreempt then, so preemption stays on"),
        ),
        (Some(_), None) => t.set("preempt", false),
        _ => {}
    }
    if let Some((d, loc)) = preempt_delay {
        if master.is_some() {
            cx.warn(&loc, format!("{me}: preempt_delay with state MASTER: keepalived ignores it then; not converted"));
        } else if nopreempt.is_none() {
            t.set("preempt_delay", duration_text(d));
        }
    }
    if let Some((pass, loc)) = auth {
        if version == 3 {
            cx.warn(&loc, format!("{me}: authentication with VRRP version 3: keepalived ignores it (RFC 5798 has none); not converted"));
        } else {
            if cx.strict {
                cx.warn(&loc, format!("{me}: authentication under vrrp_strict: keepalived refuses this configuration; converted anyway"));
            }
            t.set("auth_pass", pass);
        }
    }
    if let Some(src) = unicast_src {
        t.set("unicast_src", src.to_string());
    }
    if !peers.is_empty() {
        if cx.strict {
            cx.warn(s.loc(), format!("{me}: unicast peers under vrrp_strict: keepalived refuses this configuration; converted anyway"));
        }
        t.set(
            "unicast_peers",
            Value::Array(peers.iter().map(|p| p.to_string().into()).collect()),
        );
    } else if peers_given {
        cx.warn(
            s.loc(),
            format!("{me}: unicast_peer lists no valid peer; the instance uses multicast"),
        );
    }
    if let Some(old) = old_checksum {
        if old {
            t.set("old_unicast_checksum", true);
        }
    }
    t.set(
        "addresses",
        Value::Array(addresses.into_iter().map(|a| a.1.into()).collect()),
    );
    if let Some(n) = notify_command(notify, &per_state) {
        t.set(
            "notify",
            Value::Array(n.into_iter().map(Value::from).collect()),
        );
    }
    for (k, v) in garp {
        t.set(&k, v);
    }
    Some(t)
}

fn authentication(cx: &mut Ctx, block: &Stmt, me: &str) -> Option<(String, Loc)> {
    let mut kind = None;
    let mut pass = None;
    for c in block.children() {
        match c.keyword() {
            "auth_type" => kind = c.arg(0).map(|k| (k.to_owned(), c.loc().clone())),
            "auth_pass" => pass = c.arg(0).map(|p| (p.to_owned(), c.loc().clone())),
            other => cx.warn(
                c.loc(),
                format!("{me}: authentication {other}: unknown; ignored"),
            ),
        }
    }
    match kind {
        Some((k, _)) if k == "PASS" => {}
        Some((k, loc)) if k == "AH" => {
            cx.warn(&loc, format!("{me}: auth_type AH (IPsec AH) is not supported; not converted: peers using AH will not hear this node"));
            return None;
        }
        Some((k, loc)) => {
            cx.warn(
                &loc,
                format!("{me}: auth_type {k}: unknown; authentication not converted"),
            );
            return None;
        }
        None if pass.is_some() => {}
        None => return None,
    }
    let (mut pass, loc) = pass.or_else(|| {
        cx.warn(
            block.loc(),
            format!("{me}: authentication without auth_pass; not converted"),
        );
        None
    })?;
    if pass.len() > 8 {
        let mut cut = 8;
        while !pass.is_char_boundary(cut) {
            cut -= 1;
        }
        cx.warn(&loc, format!("{me}: auth_pass is {} bytes; keepalived sends only the first 8, so the converted password is {:?}", pass.len(), &pass[..cut]));
        pass.truncate(cut);
    }
    if pass.is_empty() {
        cx.warn(&loc, format!("{me}: empty auth_pass; not converted"));
        return None;
    }
    Some((pass, loc))
}

/// `ADDR[/LEN] [dev X] [label Y] ...` of a virtual_ipaddress line.
fn vip_address(cx: &mut Ctx, a: &Stmt, me: &str) -> Option<(IpAddr, String)> {
    let text = a.keyword();
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text, None),
    };
    let Ok(ip) = addr.parse::<IpAddr>() else {
        cx.warn(
            a.loc(),
            format!("{me}: virtual_ipaddress {text:?} is not an address; not converted"),
        );
        return None;
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if let Some(l) = len {
        if !l.parse::<u8>().is_ok_and(|l| l <= max) {
            cx.warn(
                a.loc(),
                format!("{me}: virtual_ipaddress {text:?}: bad prefix length; not converted"),
            );
            return None;
        }
    }
    let mut ignored = Vec::new();
    let mut words = a.args().iter();
    while let Some(w) = words.next() {
        match w.text.as_str() {
            "dev" => {
                words.next();
            }
            "use_vmac" => cx.warn(
                a.loc(),
                format!(
                    "{me}: {text} use_vmac not supported; the address goes on the interface itself"
                ),
            ),
            opt @ ("brd" | "broadcast" | "label" | "scope" | "peer" | "preferred_lft"
            | "track_group" | "metric") => {
                let v = words.next().map(|v| v.text.as_str()).unwrap_or("");
                ignored.push(format!("{opt} {v}"));
            }
            other => ignored.push(other.to_owned()),
        }
    }
    if !ignored.is_empty() {
        cx.note(
            a.loc(),
            format!("{me}: {text}: `{}` not converted (lbd adds the address with its prefix length only)", ignored.join(" ")),
        );
    }
    Some((ip, text.to_owned()))
}

/// The word after `name` in a statement's arguments.
fn option_value<'a>(s: &'a Stmt, name: &str) -> Option<&'a str> {
    let args = s.args();
    args.iter()
        .position(|w| w.text == name)
        .and_then(|i| args.get(i + 1))
        .map(|w| w.text.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds() {
        assert_eq!(parse_seconds("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_seconds("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse_seconds(".25"), Some(Duration::from_millis(250)));
        assert_eq!(
            parse_seconds("2.7182818"),
            Some(Duration::from_micros(2_718_281))
        );
        for bad in ["", ".", "-1", "1s", "1e3", "1.2.3", "99999999999999999999"] {
            assert_eq!(parse_seconds(bad), None, "{bad:?}");
        }
        assert_eq!(duration_text(Duration::from_secs(60)), "60s");
        assert_eq!(duration_text(Duration::from_millis(1500)), "1500ms");
        assert_eq!(duration_text(Duration::from_micros(2_718_281)), "2718281us");
    }

    #[test]
    fn commands_split_like_keepalived() {
        assert_eq!(
            split_command("/usr/bin/check 'a b' c\"d e\" f"),
            ["/usr/bin/check", "a b", "cd e", "f"]
        );
        assert_eq!(split_command("  "), Vec::<String>::new());
        assert_eq!(split_command("x ''"), ["x", ""]);
    }
}
