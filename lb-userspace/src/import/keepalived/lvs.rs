//! `virtual_server` and `virtual_server_group` into `[[vip]]`, `real_server` into
//! `[[vip.backend]]`, and keepalived's checkers into `[vip.health_check]`.
//!
//! The one structural difference: keepalived checks each real server with its own
//! checkers, lbd checks every backend of a VIP the same way. The first real server's first
//! convertible checker becomes the VIP's check; a real server whose checks differ from it
//! is named in a warning.

use std::{collections::HashMap, net::IpAddr, time::Duration};

use toml::Value;

use super::{
    convert::{duration_text, origin, shell_quote, split_command, Ctx},
    parse::{Loc, Stmt},
};
use crate::{
    config::MAX_WEIGHT,
    import::{
        output::{Table, Vip},
        Remark,
    },
};

/// keepalived's defaults (keepalived.conf(5), "Virtual server(s)").
const DEFAULT_DELAY_LOOP: Duration = Duration::from_secs(60);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_PERSISTENCE: u64 = 360;
/// A range in a virtual_server_group expands to at most this many VIPs.
const MAX_RANGE: u32 = 256;

/// Checker settings that inherit virtual_server → real_server → checker.
#[derive(Clone, Debug, Default)]
struct Timing {
    delay_loop: Option<Duration>,
    connect_timeout: Option<Duration>,
    retry: Option<u32>,
    delay_before_retry: Option<Duration>,
    alpha: Option<bool>,
    virtualhost: Option<String>,
}

impl Timing {
    /// Reads `s` if it is a timing keyword; returns whether it was one.
    fn read(&mut self, cx: &mut Ctx, s: &Stmt) -> bool {
        match s.keyword() {
            "delay_loop" => self.delay_loop = cx.timer(s).or(self.delay_loop),
            "connect_timeout" => self.connect_timeout = cx.timer(s).or(self.connect_timeout),
            "retry" | "nb_get_retry" => {
                self.retry = cx.int(s, 0, 1_000_000).map(|r| r as u32).or(self.retry)
            }
            "delay_before_retry" => {
                self.delay_before_retry = cx.timer(s).or(self.delay_before_retry)
            }
            "alpha" => self.alpha = Some(cx.flag(s)),
            "virtualhost" => {
                self.virtualhost = s.arg(0).map(str::to_owned).or(self.virtualhost.take())
            }
            "warmup" | "log_all_failures" => {}
            _ => return false,
        }
        true
    }
}

/// A converted checker with what it needs to be compared across real servers.
struct Check {
    table: Table,
    loc: Loc,
    /// What converting it said: reported only if it becomes the VIP's check, since the
    /// same checker is usually repeated in every real server.
    remarks: Vec<Remark>,
}

struct RealServer {
    table: Table,
    address: IpAddr,
    checks: Vec<Check>,
    loc: Loc,
}

pub(super) fn virtual_server(cx: &mut Ctx, s: &Stmt, groups: &HashMap<&str, &Stmt>) -> Vec<Vip> {
    let head: Vec<&str> = s.args().iter().map(|w| w.text.as_str()).collect();
    let me = format!("virtual_server {}", head.join(" "));
    let members: Vec<(IpAddr, u16, Loc)> = match head.as_slice() {
        ["fwmark", ..] => {
            cx.warn(s.loc(), format!("{me}: firewall-mark services are not supported (a VIP is an address, a port and a protocol); not converted"));
            return Vec::new();
        }
        ["group", name] => match groups.get(name) {
            Some(g) => group_members(cx, g),
            None => {
                cx.warn(
                    s.loc(),
                    format!("{me}: no virtual_server_group {name} in this file; not converted"),
                );
                return Vec::new();
            }
        },
        [addr, port] => match (addr.parse::<IpAddr>(), port.parse::<u16>()) {
            (Ok(a), Ok(p)) if p != 0 => vec![(a, p, s.loc().clone())],
            _ => {
                cx.warn(
                    s.loc(),
                    format!("{me}: expected `virtual_server ADDRESS PORT`; not converted"),
                );
                return Vec::new();
            }
        },
        [addr] if addr.parse::<IpAddr>().is_ok() => {
            cx.warn(
                s.loc(),
                format!(
                    "{me}: a service on every port (no port given) is not supported; not converted"
                ),
            );
            return Vec::new();
        }
        _ => {
            cx.warn(
                s.loc(),
                format!("{me}: expected `virtual_server ADDRESS PORT`; not converted"),
            );
            return Vec::new();
        }
    };
    let vs_port = members.first().map(|m| m.1).unwrap_or(0);

    let mut protocol = "tcp";
    let mut method: Option<(String, Loc)> = None;
    let mut sched: Option<(String, Loc)> = None;
    let mut persistence: Option<(u64, Loc)> = None;
    let mut timing = Timing::default();
    let mut inhibit: Option<Loc> = None;
    let mut real_servers = Vec::new();
    for c in s.children() {
        if timing.read(cx, c) {
            continue;
        }
        let k = c.keyword();
        match k {
            "protocol" => match c.arg(0).map(str::to_ascii_uppercase).as_deref() {
                Some("TCP") => protocol = "tcp",
                Some("UDP") => protocol = "udp",
                other => {
                    cx.warn(c.loc(), format!("{me}: protocol {} is not supported (TCP and UDP are); not converted", other.unwrap_or("")));
                    return Vec::new();
                }
            },
            "lb_kind" | "lvs_method" => method = c.arg(0).map(|m| (m.to_ascii_uppercase(), c.loc().clone())),
            "lb_algo" | "lvs_sched" => sched = c.arg(0).map(|m| (m.to_ascii_lowercase(), c.loc().clone())),
            "persistence_timeout" => {
                let secs = match c.arg(0) {
                    None => Some(DEFAULT_PERSISTENCE),
                    Some(_) => cx.int(c, 0, i64::from(u32::MAX)).map(|n| n as u64),
                };
                if let Some(secs) = secs.filter(|s| *s > 0) {
                    persistence = Some((secs, c.loc().clone()));
                }
            }
            "persistence_granularity" => match c.arg(0) {
                Some("255.255.255.255" | "32" | "128") => {}
                other => cx.warn(c.loc(), format!("{me}: persistence_granularity {}: lbd's affinity is per client address; not converted", other.unwrap_or(""))),
            },
            "persistence_engine" => cx.warn(c.loc(), format!("{me}: persistence_engine {} not supported; not converted", c.arg(0).unwrap_or(""))),
            "inhibit_on_failure" => {
                if cx.flag(c) {
                    inhibit = Some(c.loc().clone());
                }
            }
            "real_server" => {
                if let Some(rs) = real_server(cx, c, &me, &timing, vs_port, protocol) {
                    real_servers.push(rs);
                }
            }
            "quorum" | "hysteresis" | "quorum_up" | "quorum_down" => cx.warn(
                c.loc(),
                format!("{me}: {k} not supported: lbd keeps serving with any number of healthy backends; not converted"),
            ),
            "sorry_server" | "sorry_server_inhibit" | "sorry_server_lvs_method" => cx.warn(
                c.loc(),
                format!("{me}: {k} not converted: lbd has no sorry server; all_down = \"pass\" hands the VIP's packets to this node's kernel while every backend is down (run the sorry service here), the default drops them"),
            ),
            "ops" => cx.warn(c.loc(), format!("{me}: ops (one-packet scheduling) not supported: lbd pins a UDP flow to its backend until it is idle; not converted")),
            "flag-1" | "flag-2" | "flag-3" | "sh-port" | "sh-fallback" | "mh-port" | "mh-fallback" => cx.warn(
                c.loc(),
                format!("{me}: scheduler flag {k} not supported; not converted"),
            ),
            "ha_suspend" | "omega" | "smtp_alert" | "snmp_name" | "ip_family" => {
                cx.note(c.loc(), format!("{me}: {k}: no lbd equivalent; ignored"))
            }
            other => cx.warn(c.loc(), format!("{me}: unknown keyword `{other}`; not converted")),
        }
    }

    let mode = match &method {
        Some((m, _)) if m == "DR" => "dr",
        Some((m, loc)) if m == "TUN" => {
            cx.warn(loc, format!("{me}: lb_kind TUN (IP-in-IP) not supported; converted as direct return (\"dr\"), which needs every backend on-link on agent.interface"));
            "dr"
        }
        Some((m, _)) if m == "NAT" => "nat",
        Some((m, loc)) => {
            cx.warn(
                loc,
                format!("{me}: lb_kind {m}: unknown; converted as keepalived's default, NAT"),
            );
            "nat"
        }
        None => "nat",
    };
    let mut affinity = false;
    match sched.as_ref().map(|(s, l)| (s.as_str(), l)) {
        None | Some(("mh", _)) => {}
        Some(("rr" | "wrr", loc)) => cx.note(loc, format!("{me}: lb_algo {}: Maglev hashing gives each backend new flows in proportion to its weight, as {0} does over many flows", sched.as_ref().map_or("", |s| s.0.as_str()))),
        Some(("sh", loc)) => {
            affinity = true;
            cx.note(loc, format!("{me}: lb_algo sh: source_affinity = true (Maglev on the client address)"));
        }
        Some((other, loc)) => cx.warn(loc, format!("{me}: lb_algo {other} not available: lbd balances new flows by a weighted consistent hash (Maglev) and does not count connections")),
    }
    if let Some((secs, loc)) = &persistence {
        affinity = true;
        cx.warn(loc, format!("{me}: persistence_timeout {secs}: source_affinity = true; a client stays on its backend while its flows are in the flow table (agent tcp_idle_timeout/udp_idle_timeout), not for {secs}s after its last connection"));
    }
    if let Some(loc) = &inhibit {
        cx.warn(loc, format!("{me}: inhibit_on_failure: a failed backend leaves the VIP and its connections move to the others (keepalived kept them on it at weight 0)"));
    }

    // Real servers: the same address twice (different ports) cannot be two backends.
    let mut backends: Vec<Table> = Vec::new();
    let mut seen: Vec<IpAddr> = Vec::new();
    let mut template: Option<(Table, Loc, String)> = None;
    let mut unchecked: Vec<String> = Vec::new();
    for mut rs in real_servers {
        if seen.contains(&rs.address) {
            cx.warn(&rs.loc, format!("{me}: {} is listed again (another port); lbd has one backend per address; not converted", rs.table.source));
            continue;
        }
        seen.push(rs.address);
        if mode == "dr" {
            if let Some(Value::Integer(p)) = rs.table.remove("port") {
                cx.warn(&rs.loc, format!("{me}: {}: direct return keeps the destination port, so port {p} is not used (LVS DR does the same)", rs.table.source));
            }
        }
        let mut checks = rs.checks.drain(..);
        match (checks.next(), &template) {
            (None, _) => unchecked.push(rs.address.to_string()),
            (Some(c), None) => {
                cx.remarks.extend(c.remarks);
                template = Some((c.table, c.loc, rs.address.to_string()));
            }
            (Some(c), Some((t, _, first))) => {
                if c.table.entries != t.entries {
                    cx.warn(&c.loc, format!("{me}: {}: its check differs from {first}'s, and lbd checks every backend of a VIP the same way: {first}'s is used", rs.table.source));
                }
            }
        }
        for extra in checks {
            cx.warn(
                &extra.loc,
                format!(
                    "{me}: {}: a second checker; lbd runs one check per backend, the first is used",
                    rs.table.source
                ),
            );
        }
        backends.push(rs.table);
    }
    if let (Some((_, loc, _)), false) = (&template, unchecked.is_empty()) {
        cx.warn(loc, format!("{me}: real servers {} had no checker lbd can run; lbd checks them with this one too", unchecked.join(", ")));
    }
    let check = template.map(|(t, _, _)| t);

    members
        .into_iter()
        .map(|(address, port, loc)| {
            let source = if head.first() == Some(&"group") {
                format!("{me} ({address} {port})")
            } else {
                me.clone()
            };
            let mut table = Table::new(Some(origin(&loc)), source);
            table.set("address", address.to_string());
            table.set("port", i64::from(port));
            table.set("protocol", protocol);
            table.set("mode", mode);
            if affinity {
                table.set("source_affinity", true);
            }
            Vip {
                table,
                check: check.clone(),
                backends: backends.clone(),
            }
        })
        .collect()
}

/// The (address, port) pairs of a virtual_server_group, ranges expanded.
fn group_members(cx: &mut Ctx, g: &Stmt) -> Vec<(IpAddr, u16, Loc)> {
    let name = g.arg(0).unwrap_or("");
    let mut out = Vec::new();
    for m in g.children() {
        let what = m
            .words
            .iter()
            .map(|w| w.text.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        if m.keyword() == "fwmark" {
            cx.warn(m.loc(), format!("virtual_server_group {name}: {what}: firewall marks are not supported; not converted"));
            continue;
        }
        let Some(port) = m
            .arg(0)
            .and_then(|p| p.parse::<u16>().ok())
            .filter(|p| *p != 0)
        else {
            cx.warn(m.loc(), format!("virtual_server_group {name}: {what}: needs an address and a port; not converted"));
            continue;
        };
        match expand_range(m.keyword()) {
            Some((addrs, all)) => {
                if !all {
                    cx.warn(m.loc(), format!("virtual_server_group {name}: {what}: only the first {MAX_RANGE} addresses converted"));
                }
                out.extend(addrs.into_iter().map(|a| (a, port, m.loc().clone())));
            }
            None => cx.warn(
                m.loc(),
                format!(
                    "virtual_server_group {name}: {what}: not an address or range; not converted"
                ),
            ),
        }
    }
    out
}

/// `A`, `A-B` (last octet or group), `A-A2` or `A/LEN` into addresses (at most
/// [`MAX_RANGE`]; the flag says whether all fit).
fn expand_range(text: &str) -> Option<(Vec<IpAddr>, bool)> {
    if let Ok(a) = text.parse::<IpAddr>() {
        return Some((vec![a], true));
    }
    let (first, last): (u128, u128);
    let v4;
    if let Some((a, len)) = text.split_once('/') {
        let a: IpAddr = a.parse().ok()?;
        let len: u32 = len.parse().ok()?;
        v4 = a.is_ipv4();
        let bits = if v4 { 32 } else { 128 };
        if len > bits {
            return None;
        }
        let host = bits - len;
        let n = to_u128(a);
        let mask = if host >= 128 {
            u128::MAX
        } else {
            (1u128 << host) - 1
        };
        first = n & !mask;
        last = n | mask;
    } else {
        let (a, b) = text.split_once('-')?;
        let a: IpAddr = a.parse().ok()?;
        v4 = a.is_ipv4();
        first = to_u128(a);
        last = match b.parse::<IpAddr>() {
            Ok(b) if b.is_ipv4() == v4 => to_u128(b),
            Ok(_) => return None,
            // The last byte (IPv4) or group (IPv6) only.
            Err(_) if v4 => (first & !0xff) | u128::from(b.parse::<u8>().ok()?),
            Err(_) => (first & !0xffff) | u128::from(u16::from_str_radix(b, 16).ok()?),
        };
    }
    if last < first {
        return None;
    }
    let all = last - first < u128::from(MAX_RANGE);
    let end = last.min(first.saturating_add(u128::from(MAX_RANGE) - 1));
    let addrs = (first..=end)
        .map(|n| {
            if v4 {
                IpAddr::from(std::net::Ipv4Addr::from(n as u32))
            } else {
                IpAddr::from(std::net::Ipv6Addr::from(n))
            }
        })
        .collect();
    Some((addrs, all))
}

fn to_u128(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn real_server(
    cx: &mut Ctx,
    s: &Stmt,
    me: &str,
    vs_timing: &Timing,
    vs_port: u16,
    protocol: &str,
) -> Option<RealServer> {
    let head: Vec<&str> = s.args().iter().map(|w| w.text.as_str()).collect();
    let rs = format!("real_server {}", head.join(" "));
    let Some(address) = head.first().and_then(|a| a.parse::<IpAddr>().ok()) else {
        cx.warn(
            s.loc(),
            format!("{me}: {rs}: expected `real_server ADDRESS [PORT]`; not converted"),
        );
        return None;
    };
    let port = match head.get(1) {
        None => vs_port,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p != 0 => p,
            _ => {
                cx.warn(s.loc(), format!("{me}: {rs}: bad port; not converted"));
                return None;
            }
        },
    };
    let mut table = Table::new(Some(origin(s.loc())), rs.clone());
    table.set("address", address.to_string());
    let mut timing = vs_timing.clone();
    let mut weight = None;
    let mut checkers = Vec::new();
    for c in s.children() {
        if timing.read(cx, c) {
            continue;
        }
        let k = c.keyword();
        match k {
            "weight" => {
                if let Some(w) = cx.int(c, 0, i64::from(i32::MAX)) {
                    if w > i64::from(MAX_WEIGHT) {
                        cx.warn(c.loc(), format!("{me}: {rs}: weight {w} is above lbd's maximum; {MAX_WEIGHT} (scale the others down to keep the ratios)"));
                    }
                    weight = Some(w.min(i64::from(MAX_WEIGHT)));
                }
            }
            "TCP_CHECK" | "HTTP_GET" | "SSL_GET" | "MISC_CHECK" | "UDP_CHECK" | "DNS_CHECK"
            | "SMTP_CHECK" | "PING_CHECK" | "BFD_CHECK" | "FILE_CHECK" => checkers.push(c),
            "inhibit_on_failure" => {
                if cx.flag(c) {
                    cx.warn(c.loc(), format!("{me}: {rs}: inhibit_on_failure: a failed backend leaves the VIP and its connections move to the others (keepalived kept them on it at weight 0)"));
                }
            }
            "notify_up" | "notify_down" => cx.warn(c.loc(), format!("{me}: {rs}: {k} not supported; not converted (lbctl health shows transitions)")),
            "uthreshold" | "lthreshold" => cx.warn(c.loc(), format!("{me}: {rs}: {k} (connection limits) not supported; not converted")),
            "lvs_method" | "lb_kind" => cx.warn(c.loc(), format!("{me}: {rs}: a forwarding method per real server is not supported; the virtual server's is used")),
            "smtp_alert" | "snmp_name" => cx.note(c.loc(), format!("{me}: {rs}: {k}: no lbd equivalent; ignored")),
            other => cx.warn(c.loc(), format!("{me}: {rs}: unknown keyword `{other}`; not converted")),
        }
    }
    if let Some(w) = weight.filter(|w| *w != 1) {
        table.set("weight", w);
    }
    if port != vs_port {
        table.set("port", i64::from(port));
    }
    let target = Target {
        address,
        port,
        vs_port,
        protocol,
    };
    let checks = checkers
        .into_iter()
        .filter_map(|c| {
            let what = format!("{me}: {rs}: {}", c.keyword());
            let mark = cx.remarks.len();
            let table = checker(cx, c, &what, &timing, &target);
            let remarks = cx.remarks.split_off(mark);
            match table {
                Some(table) => Some(Check {
                    table,
                    loc: c.loc().clone(),
                    remarks,
                }),
                None => {
                    cx.remarks.extend(remarks);
                    None
                }
            }
        })
        .collect();
    Some(RealServer {
        table,
        address,
        checks,
        loc: s.loc().clone(),
    })
}

struct Target<'a> {
    address: IpAddr,
    port: u16,
    vs_port: u16,
    protocol: &'a str,
}

fn checker(cx: &mut Ctx, c: &Stmt, what: &str, parent: &Timing, target: &Target) -> Option<Table> {
    let kind = c.keyword();
    let mut timing = parent.clone();
    let mut t = Table::new(Some(origin(c.loc())), what.to_owned());
    let mut port = None;
    let mut extra: Vec<(String, Value)> = Vec::new();
    let mut urls: Vec<&Stmt> = Vec::new();
    let mut misc_path: Option<(String, Loc)> = None;
    let mut misc_timeout = None;
    let mut udp_payload: Option<Vec<u8>> = None;
    let mut udp_reply: Option<Option<Vec<u8>>> = None;
    let mut dns_type = "SOA".to_owned();
    let mut dns_name = ".".to_owned();
    let mut sni = None;

    for s in c.children() {
        if timing.read(cx, s) {
            continue;
        }
        let k = s.keyword();
        match (kind, k) {
            (_, "connect_port") => port = cx.int(s, 1, 65535).or(port),
            (_, "bindto") => {
                if let Some(a) = s.arg(0).and_then(|v| cx.ip(s, v)) {
                    extra.push(("source_address".into(), a.to_string().into()));
                }
            }
            (_, "connect_ip") => cx.warn(s.loc(), format!("{what}: connect_ip not converted: lbd checks each backend at its own address")),
            (_, "bind_port" | "bind_if" | "fwmark") => cx.warn(s.loc(), format!("{what}: {k} not supported; not converted")),
            ("HTTP_GET" | "SSL_GET", "url") => urls.push(s),
            ("HTTP_GET" | "SSL_GET", "http_protocol" | "fast_recovery" | "tls_compliant") => {
                cx.note(s.loc(), format!("{what}: {k}: lbd's checks speak HTTP/1.1 and close; ignored"))
            }
            ("SSL_GET", "enable_sni") => {}
            ("SSL_GET", "sni_name") => sni = s.arg(0).map(str::to_owned),
            ("MISC_CHECK", "misc_path") => {
                let words: Vec<&str> = s.args().iter().map(|w| w.text.as_str()).collect();
                misc_path = Some((words.join(" "), s.loc().clone()));
            }
            ("MISC_CHECK", "misc_timeout") => misc_timeout = cx.timer(s),
            ("MISC_CHECK", "misc_dynamic") => cx.warn(s.loc(), format!("{what}: misc_dynamic (weight from the exit code) not supported: exit 0 is healthy, anything else is not")),
            ("MISC_CHECK", "user") => cx.warn(s.loc(), format!("{what}: runs as lbd's user; keepalived ran it as {}", s.arg(0).unwrap_or("?"))),
            ("UDP_CHECK", "payload") => udp_payload = Some(hex_bytes(&joined(s)).0),
            ("UDP_CHECK", "require_reply") => {
                let text = joined(s);
                if text.is_empty() {
                    udp_reply = Some(None);
                } else {
                    let (bytes, wildcard) = hex_bytes(&text);
                    if wildcard {
                        cx.warn(s.loc(), format!("{what}: require_reply with X wildcards: lbd matches exact bytes; only the bytes before the first wildcard are required"));
                    }
                    udp_reply = Some(Some(bytes));
                }
            }
            ("UDP_CHECK", "min_reply_length" | "max_reply_length") => cx.warn(s.loc(), format!("{what}: {k} not supported; not converted")),
            ("DNS_CHECK", "type") => dns_type = s.arg(0).unwrap_or("SOA").to_ascii_uppercase(),
            ("DNS_CHECK", "name") => dns_name = s.arg(0).unwrap_or(".").to_owned(),
            ("SMTP_CHECK", "helo_name") => {}
            _ => cx.warn(s.loc(), format!("{what}: unknown keyword `{k}`; not converted")),
        }
    }

    let check_type = match kind {
        "TCP_CHECK" => "tcp",
        "HTTP_GET" => "http",
        "SSL_GET" => "https",
        "MISC_CHECK" => "exec",
        "UDP_CHECK" => "udp",
        "DNS_CHECK" if target.protocol == "udp" => "udp",
        "DNS_CHECK" => {
            cx.warn(c.loc(), format!("{what}: DNS over TCP is checked by connecting only (lbd's TCP checks send nothing)"));
            "tcp"
        }
        "SMTP_CHECK" => {
            cx.warn(c.loc(), format!("{what}: checked by connecting only: lbd does not speak SMTP (no greeting or HELO is checked)"));
            "tcp"
        }
        _ => {
            cx.warn(
                c.loc(),
                format!("{what}: not supported by lbd; not converted"),
            );
            return None;
        }
    };
    t.set("type", check_type);

    let interval = timing.delay_loop.unwrap_or(DEFAULT_DELAY_LOOP);
    t.set("interval", duration_text(interval));
    let timeout = match kind {
        // keepalived's misc_timeout defaults to delay_loop.
        "MISC_CHECK" => misc_timeout.unwrap_or(interval),
        _ => timing.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
    };
    if timeout > interval {
        cx.warn(c.loc(), format!("{what}: timeout {} is longer than the interval (delay_loop {}); lbd wants a check done before the next: timeout {}", duration_text(timeout), duration_text(interval), duration_text(interval)));
        t.set("timeout", duration_text(interval));
    } else {
        t.set("timeout", duration_text(timeout));
    }
    t.set("rise", 1);
    let default_retry = match kind {
        "DNS_CHECK" => 3,
        "MISC_CHECK" => 0,
        _ => 1,
    };
    let retry = timing.retry.unwrap_or(default_retry);
    let fall = (u64::from(retry) + 1).min(100);
    if u64::from(retry) + 1 > 100 {
        cx.warn(c.loc(), format!("{what}: retry {retry}: lbd allows at most 100 failed checks in a row before down; fall = 100"));
    }
    t.set("fall", fall as i64);
    if retry > 0 {
        let spacing = timing.delay_before_retry.unwrap_or(match kind {
            "HTTP_GET" | "SSL_GET" => Duration::from_secs(3),
            "DNS_CHECK" => interval,
            _ => Duration::from_secs(1),
        });
        if spacing != interval {
            cx.note(c.loc(), format!("{what}: retries come every interval ({}), not every delay_before_retry ({}): a dead backend is out after about {} rather than {}", duration_text(interval), duration_text(spacing), duration_text(interval * fall as u32), duration_text(spacing * retry + timeout)));
        }
    }
    if timing.alpha == Some(true) {
        t.set("initial", "down");
    }
    let port = port.map_or(target.port, |p| p as u16);
    if port != target.vs_port {
        t.set("port", i64::from(port));
    }
    for (k, v) in extra {
        if check_type == "exec" {
            cx.warn(
                c.loc(),
                format!("{what}: {k} does not apply to a command check; not converted"),
            );
        } else {
            t.set(&k, v);
        }
    }

    match kind {
        "HTTP_GET" | "SSL_GET" => http(cx, &mut t, c.loc(), what, &urls, &timing),
        "MISC_CHECK" => {
            let Some((path, loc)) = misc_path else {
                cx.warn(c.loc(), format!("{what}: no misc_path; not converted"));
                return None;
            };
            let words = split_command(&path);
            if words.is_empty() {
                cx.warn(&loc, format!("{what}: empty misc_path; not converted"));
                return None;
            }
            t.set("command", command_for(&words, target.address));
        }
        "UDP_CHECK" => {
            match &udp_payload {
                Some(p) => t.set("send", bytes_value(p)),
                None => cx.note(c.loc(), format!("{what}: no payload: lbd sends an empty datagram (keepalived sent random bytes)")),
            }
            match udp_reply {
                Some(Some(r)) if !r.is_empty() => t.set("expect", bytes_value(&r)),
                Some(_) => {}
                None => cx.warn(c.loc(), format!("{what}: without require_reply keepalived counted \"no ICMP error\" as healthy; lbd needs a reply from the backend")),
            }
        }
        "DNS_CHECK" if check_type == "udp" => match dns_query(&dns_name, &dns_type) {
            Some((query, question)) => {
                t.set("send", bytes_value(&query));
                t.set("expect", bytes_value(&question));
                cx.note(c.loc(), format!("{what}: sends a query (type {dns_type}, name {dns_name:?}); healthy when the reply repeats the question (its answer code is not checked)"));
            }
            None => {
                cx.warn(c.loc(), format!("{what}: type {dns_type} or name {dns_name:?} cannot be encoded; not converted"));
                return None;
            }
        },
        _ => {}
    }
    if let Some(sni) = sni {
        t.set("server_name", sni);
    }
    Some(t)
}

/// The first url's path, statuses and host; the rest warned about.
fn http(cx: &mut Ctx, t: &mut Table, loc: &Loc, what: &str, urls: &[&Stmt], timing: &Timing) {
    let https = t.get("type") == Some(&"https".into());
    let mut host = timing.virtualhost.clone();
    match urls {
        [] => {}
        [first, rest @ ..] => {
            for u in rest {
                cx.warn(
                    u.loc(),
                    format!(
                        "{what}: a second url; lbd checks one path per backend, the first is used"
                    ),
                );
            }
            let mut statuses: Option<Vec<i64>> = None;
            for s in first.children() {
                let k = s.keyword();
                match k {
                    "path" => {
                        if let Some(p) = s.arg(0) {
                            t.set("path", p);
                        }
                    }
                    "status_code" => {
                        let mut codes = Vec::new();
                        for w in s.args() {
                            match status_range(&w.text) {
                                Some((a, b)) => codes.extend(a..=b),
                                None => cx.warn(s.loc(), format!("{what}: status_code {}: not a status or range; ignored", w.text)),
                            }
                        }
                        codes.sort_unstable();
                        codes.dedup();
                        if !codes.is_empty() {
                            statuses = Some(codes);
                        }
                    }
                    "virtualhost" => host = s.arg(0).map(str::to_owned),
                    "digest" => cx.warn(s.loc(), format!("{what}: digest (MD5 of the body) not supported; only the status is checked")),
                    "regex" => match s.arg(0) {
                        Some(r) if !r.is_empty() && !r.contains(|c: char| "\\^$.|?*+()[]{}".contains(c)) => {
                            t.set("expect_body", r);
                            cx.note(s.loc(), format!("{what}: regex {r:?} has no special characters: the body must contain it (expect_body)"));
                        }
                        _ => cx.warn(s.loc(), format!("{what}: regex not supported (lbd matches a plain substring with expect_body); not converted")),
                    },
                    _ => cx.warn(s.loc(), format!("{what}: url {k} not supported; not converted")),
                }
            }
            // keepalived's default is 200-299: the statuses HTTP defines in that range.
            let statuses =
                statuses.unwrap_or_else(|| vec![200, 201, 202, 203, 204, 205, 206, 207, 208, 226]);
            if statuses != [200] {
                t.set(
                    "expect_status",
                    Value::Array(statuses.into_iter().map(Value::from).collect()),
                );
            }
        }
    }
    if let Some(h) = host {
        t.set("host", h);
    }
    if https {
        t.set("insecure_skip_verify", true);
        cx.note(
            loc,
            format!("{what}: insecure_skip_verify = true, as keepalived does not verify certificates; set ca_file (and server_name) to verify them"),
        );
    }
}

fn status_range(w: &str) -> Option<(i64, i64)> {
    let (a, b) = w.split_once('-').unwrap_or((w, w));
    let (a, b): (i64, i64) = (a.parse().ok()?, b.parse().ok()?);
    ((100..=599).contains(&a) && (a..=599).contains(&b)).then_some((a, b))
}

/// The command words, with the real server's address replaced by lbd's
/// `$LBD_BACKEND_ADDRESS` through `sh -c` when the address is among them: keepalived
/// configs pass it as an argument, and lbd runs one command for every backend.
fn command_for(words: &[String], address: IpAddr) -> Value {
    let addr = address.to_string();
    let mentions = words.iter().any(|w| !split_address(w, &addr).1.is_empty());
    if !mentions {
        return Value::Array(words.iter().map(|w| w.as_str().into()).collect());
    }
    let script: Vec<String> = words
        .iter()
        .map(|w| {
            let (parts, _) = split_address(w, &addr);
            parts
                .iter()
                .map(|p| match p {
                    None => "\"$LBD_BACKEND_ADDRESS\"".to_owned(),
                    Some(text) => shell_quote(text),
                })
                .collect::<String>()
        })
        .collect();
    Value::Array(vec![
        "/bin/sh".into(),
        "-c".into(),
        format!("exec {}", script.join(" ")).into(),
    ])
}

/// `w` cut around whole occurrences of `addr` (not inside a longer number): text parts
/// as `Some`, the address as `None`; and the positions found.
fn split_address(w: &str, addr: &str) -> (Vec<Option<String>>, Vec<usize>) {
    let mut parts = Vec::new();
    let mut found = Vec::new();
    let mut start = 0;
    let mut from = 0;
    while let Some(i) = w[from..].find(addr).map(|i| i + from) {
        let end = i + addr.len();
        let before = w[..i].chars().next_back();
        let after = w[end..].chars().next();
        let v6 = addr.contains(':');
        let boundary = |c: Option<char>| {
            !c.is_some_and(|c| {
                c.is_ascii_digit() || c == '.' || (v6 && (c.is_ascii_hexdigit() || c == ':'))
            })
        };
        if boundary(before) && boundary(after) {
            if i > start {
                parts.push(Some(w[start..i].to_owned()));
            }
            parts.push(None);
            found.push(i);
            start = end;
        }
        from = end;
    }
    if start < w.len() || parts.is_empty() {
        parts.push(Some(w[start..].to_owned()));
    }
    (parts, found)
}

/// The statement's arguments joined by spaces (hex strings may be split over words).
fn joined(s: &Stmt) -> String {
    s.args()
        .iter()
        .map(|w| w.text.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

/// keepalived's free-format hex (`Ab12f 3 456` = AB 12 0F 03 45 06); stops at the first
/// `X` wildcard nibble and says so.
fn hex_bytes(text: &str) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    for group in text.split_whitespace() {
        let digits: Vec<char> = group.chars().collect();
        for pair in digits.chunks(2) {
            if pair.iter().any(|c| matches!(c, 'x' | 'X')) {
                return (out, true);
            }
            let s: String = pair.iter().collect();
            match u8::from_str_radix(&s, 16) {
                Ok(b) => out.push(b),
                Err(_) => return (out, false),
            }
        }
    }
    (out, false)
}

fn bytes_value(b: &[u8]) -> Value {
    Value::Array(b.iter().map(|&x| Value::from(i64::from(x))).collect())
}

/// A DNS query for `name`/`qtype` (recursion desired, fixed id), and its question
/// section, which every reply repeats.
fn dns_query(name: &str, qtype: &str) -> Option<(Vec<u8>, Vec<u8>)> {
    let code: u16 = match qtype {
        "A" => 1,
        "NS" => 2,
        "CNAME" => 5,
        "SOA" => 6,
        "PTR" => 12,
        "MX" => 15,
        "TXT" => 16,
        "AAAA" => 28,
        _ => return None,
    };
    let mut question = Vec::new();
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        if label.len() > 63 {
            return None;
        }
        question.push(label.len() as u8);
        question.extend(label.as_bytes());
    }
    question.push(0);
    if question.len() > 255 {
        return None;
    }
    question.extend(code.to_be_bytes());
    question.extend(1u16.to_be_bytes());
    let mut query = vec![0x6c, 0x62, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    query.extend(&question);
    Some((query, question))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let (a, all) = expand_range("192.168.201.1-3").unwrap();
        assert!(all);
        assert_eq!(
            a,
            ["192.168.201.1", "192.168.201.2", "192.168.201.3"]
                .map(|s| s.parse::<IpAddr>().unwrap())
        );
        assert_eq!(expand_range("10.0.0.8/30").unwrap().0.len(), 4);
        assert_eq!(expand_range("10.0.0.250-10.0.1.2").unwrap().0.len(), 9);
        let (a, all) = expand_range("10.0.0.0/16").unwrap();
        assert_eq!((a.len(), all), (256, false));
        assert_eq!(expand_range("2001:db8::1-3").unwrap().0.len(), 3);
        for bad in [
            "10.0.0.5-1",
            "10.0.0.1-300",
            "x",
            "10.0.0.1/33",
            "10.0.0.1-2001:db8::1",
        ] {
            assert!(expand_range(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn hex() {
        assert_eq!(
            hex_bytes("Ab12f 3 456 546443123"),
            (
                vec![0xab, 0x12, 0x0f, 0x03, 0x45, 0x06, 0x54, 0x64, 0x43, 0x12, 0x03],
                false
            )
        );
        assert_eq!(hex_bytes("01 0x"), (vec![1], true));
    }

    #[test]
    fn misc_commands_follow_the_backend() {
        let a: IpAddr = "10.0.0.2".parse().unwrap();
        let words =
            split_command("/usr/local/bin/check.sh 10.0.0.2 --url=http://10.0.0.2:8080/ 10.0.0.21");
        assert_eq!(
            command_for(&words, a),
            Value::Array(vec![
                "/bin/sh".into(),
                "-c".into(),
                "exec /usr/local/bin/check.sh \"$LBD_BACKEND_ADDRESS\" --url=http://\"$LBD_BACKEND_ADDRESS\":8080/ 10.0.0.21".into()
            ])
        );
        let plain = split_command("/bin/true 'a b'");
        assert_eq!(
            command_for(&plain, a),
            Value::Array(vec!["/bin/true".into(), "a b".into()])
        );
    }

    #[test]
    fn dns() {
        let (q, question) = dns_query("example.com", "A").unwrap();
        assert_eq!(&question[..], b"\x07example\x03com\x00\x00\x01\x00\x01");
        assert_eq!(q.len(), 12 + question.len());
        assert_eq!(dns_query(".", "SOA").unwrap().1, b"\x00\x00\x06\x00\x01");
        assert!(dns_query("x", "HINFO").is_none());
    }
}
