//! The `[[vrrp]]` tables: VRRP instances, named as in keepalived's `vrrp_instance` so that a
//! keepalived.conf translates key by key (`virtual_router_id` → `vrid`, `advert_int` →
//! `advert_interval`, `nopreempt` → `preempt = false`, `virtual_ipaddress` → `addresses`,
//! `unicast_src_ip` → `unicast_src`, `unicast_peer` → `unicast_peers`, `auth_pass`,
//! `notify`, `garp_master_*`, `garp_lower_prio_*`, `old_unicast_checksum`).
//!
//! Validation here is everything that can be decided from the file; what needs the machine
//! (the interface exists, it has an address) is checked when lbd starts.

use std::{collections::HashSet, fmt, net::IpAddr, ops::Range, str::FromStr, time::Duration};

use serde::{Deserialize, Serialize, Serializer};
use serde_spanned::Spanned;

use super::{AgentConfig, Validator};

/// keepalived's default priority.
pub const DEFAULT_PRIORITY: u8 = 100;
pub const DEFAULT_VERSION: u8 = 3;
pub const DEFAULT_ADVERT_INTERVAL: Duration = Duration::from_secs(1);
/// keepalived's `vrrp_garp_master_repeat`, `vrrp_garp_master_delay`, and the same for
/// `vrrp_garp_lower_prio_*`.
pub const DEFAULT_GARP_REPEAT: u32 = 5;
pub const DEFAULT_GARP_DELAY: Duration = Duration::from_secs(5);
pub const DEFAULT_GARP_REFRESH_REPEAT: u32 = 1;
/// More rounds than this per burst is a typo, and would flood the segment.
pub const MAX_GARP_REPEAT: u32 = 100;
/// How far a tracked VIP without a usable backend lowers the priority by default: to 1,
/// so that any peer whose backends are healthy takes over.
pub const DEFAULT_TRACK_WEIGHT: i16 = -254;
/// Longest delay accepted (the state machine's bound).
pub const MAX_DELAY: Duration = crate::vrrp::machine::MAX_DELAY;

/// A validated VRRP instance. Serializes back to the keys it was read from.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VrrpConfig {
    pub name: String,
    pub interface: String,
    pub vrid: u8,
    pub priority: u8,
    pub version: u8,
    #[serde(with = "humantime_serde")]
    pub advert_interval: Duration,
    pub preempt: bool,
    #[serde(with = "humantime_serde")]
    pub preempt_delay: Duration,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_pass: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unicast_src: Option<IpAddr>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unicast_peers: Vec<IpAddr>,
    pub old_unicast_checksum: bool,
    pub addresses: Vec<VrrpAddress>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notify: Option<Vec<String>>,
    pub garp_master_repeat: u32,
    /// Zero: no second burst.
    #[serde(with = "humantime_serde")]
    pub garp_master_delay: Duration,
    /// Zero: no periodic refresh.
    #[serde(with = "humantime_serde")]
    pub garp_master_refresh: Duration,
    pub garp_master_refresh_repeat: u32,
    pub garp_lower_prio_repeat: u32,
    #[serde(with = "humantime_serde")]
    pub garp_lower_prio_delay: Duration,
    /// Names of `[[vip]]`s whose health this instance follows.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub track_vips: Vec<String>,
    /// Added to `priority` while a tracked VIP has no usable backend.
    #[serde(skip_serializing_if = "is_default_track_weight")]
    pub track_weight: i16,
}

fn is_default_track_weight(w: &i16) -> bool {
    *w == DEFAULT_TRACK_WEIGHT
}

impl VrrpConfig {
    /// Whether adverts go to unicast peers instead of the multicast group.
    pub fn is_unicast(&self) -> bool {
        !self.unicast_peers.is_empty()
    }

    /// Whether the virtual addresses (and so the instance) are IPv6.
    pub fn is_ipv6(&self) -> bool {
        self.addresses.first().is_some_and(|a| a.addr.is_ipv6())
    }

    /// The priority to advertise: `priority`, lowered by `track_weight` (to at least 1)
    /// while a tracked VIP has no usable backend. An owner that lowers its priority stops
    /// being the owner, as with keepalived.
    pub fn effective_priority(&self, tracked_vip_down: bool) -> u8 {
        if tracked_vip_down {
            (i16::from(self.priority) + self.track_weight).clamp(1, 254) as u8
        } else {
            self.priority
        }
    }
}

/// A virtual address with the prefix length it is configured with on the interface
/// (`/32` or `/128` when none is written, as keepalived does).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VrrpAddress {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

impl fmt::Display for VrrpAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl FromStr for VrrpAddress {
    type Err = String;

    fn from_str(s: &str) -> Result<VrrpAddress, String> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an address (\"10.0.0.50\" or \"10.0.0.50/32\")"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix_len = match len {
            None => max,
            Some(l) => match l.trim().parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("{s:?}: the prefix length must be 0-{max}")),
            },
        };
        Ok(VrrpAddress { addr, prefix_len })
    }
}

impl Serialize for VrrpAddress {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A duration as keepalived writes it (a number of seconds, `0.1`) or as the rest of this
/// file does (`"100ms"`).
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawDuration {
    Seconds(f64),
    Text(String),
}

impl RawDuration {
    fn to_duration(&self) -> Result<Duration, String> {
        match self {
            RawDuration::Seconds(s) if s.is_finite() && *s >= 0.0 && *s < 1e9 => {
                // Whole microseconds: enough for any VRRP timer, and no float noise ("0.1").
                Ok(Duration::from_micros((s * 1e6).round() as u64))
            }
            RawDuration::Seconds(s) => Err(format!("{s} is not a duration")),
            RawDuration::Text(t) => humantime::parse_duration(t).map_err(|e| {
                format!("{t:?} is not a duration ({e}); write e.g. \"1s\", \"100ms\" or 0.1")
            }),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVrrp {
    #[serde(default)]
    name: Option<Spanned<String>>,
    #[serde(default)]
    interface: Option<Spanned<String>>,
    vrid: Spanned<i64>,
    #[serde(default)]
    priority: Option<Spanned<i64>>,
    #[serde(default)]
    version: Option<Spanned<i64>>,
    #[serde(default)]
    advert_interval: Option<Spanned<RawDuration>>,
    #[serde(default)]
    preempt: Option<bool>,
    #[serde(default)]
    preempt_delay: Option<Spanned<RawDuration>>,
    #[serde(default)]
    auth_pass: Option<Spanned<String>>,
    #[serde(default)]
    unicast_src: Option<Spanned<IpAddr>>,
    #[serde(default)]
    unicast_peers: Option<Spanned<Vec<IpAddr>>>,
    #[serde(default)]
    old_unicast_checksum: Option<Spanned<bool>>,
    addresses: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    notify: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    garp_master_repeat: Option<Spanned<i64>>,
    #[serde(default)]
    garp_master_delay: Option<Spanned<RawDuration>>,
    #[serde(default)]
    garp_master_refresh: Option<Spanned<RawDuration>>,
    #[serde(default)]
    garp_master_refresh_repeat: Option<Spanned<i64>>,
    #[serde(default)]
    garp_lower_prio_repeat: Option<Spanned<i64>>,
    #[serde(default)]
    garp_lower_prio_delay: Option<Spanned<RawDuration>>,
    #[serde(default)]
    track_vips: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    track_weight: Option<Spanned<i64>>,
}

impl Validator<'_> {
    /// Validates every `[[vrrp]]` table; problems are recorded, and the instances that
    /// came out (possibly with defaults in place of bad values) are returned.
    pub(super) fn vrrp(
        &mut self,
        raw: Vec<Spanned<RawVrrp>>,
        agent: &AgentConfig,
        vip_names: &[&str],
    ) -> Vec<VrrpConfig> {
        let mut out = Vec::with_capacity(raw.len());
        let mut names = HashSet::new();
        let mut routers = HashSet::new();
        for (i, raw) in raw.into_iter().enumerate() {
            let span = raw.span();
            let r = raw.into_inner();
            let c = self.vrrp_one(i, &r, span.clone(), agent, vip_names);
            let at = |k: &str| format!("vrrp[{i}].{k}");
            if !names.insert(c.name.clone()) {
                let span = r.name.as_ref().map_or(span.clone(), |n| n.span());
                self.error(
                    span,
                    at("name"),
                    format!("duplicate VRRP instance name {:?}", c.name),
                );
            }
            if !routers.insert((c.interface.clone(), c.is_ipv6(), c.vrid)) {
                self.error(
                    r.vrid.span(),
                    at("vrid"),
                    format!(
                        "VRID {} is already used on {} by another {} instance; one virtual router per VRID and family on a link",
                        c.vrid,
                        c.interface,
                        if c.is_ipv6() { "IPv6" } else { "IPv4" }
                    ),
                );
            }
            out.push(c);
        }
        out
    }

    fn int(
        &mut self,
        value: &Option<Spanned<i64>>,
        key: String,
        range: std::ops::RangeInclusive<i64>,
        default: i64,
        hint: &str,
    ) -> i64 {
        match value {
            None => default,
            Some(v) if range.contains(v.get_ref()) => *v.get_ref(),
            Some(v) => {
                self.error(
                    v.span(),
                    key,
                    format!(
                        "{} is out of range {}-{}{hint}",
                        v.get_ref(),
                        range.start(),
                        range.end()
                    ),
                );
                default
            }
        }
    }

    fn duration(
        &mut self,
        value: &Option<Spanned<RawDuration>>,
        key: String,
        default: Duration,
    ) -> Duration {
        let Some(v) = value else { return default };
        match v.get_ref().to_duration() {
            Ok(d) if d > MAX_DELAY => {
                self.error(v.span(), key, "must be at most 1h");
                default
            }
            Ok(d) => d,
            Err(e) => {
                self.error(v.span(), key, e);
                default
            }
        }
    }

    fn vrrp_one(
        &mut self,
        i: usize,
        r: &RawVrrp,
        span: Range<usize>,
        agent: &AgentConfig,
        vip_names: &[&str],
    ) -> VrrpConfig {
        let at = |k: &str| format!("vrrp[{i}].{k}");
        let vrid = self.int(
            &Some(r.vrid.clone()),
            at("vrid"),
            1..=255,
            1,
            " (the virtual router ID, keepalived's virtual_router_id)",
        ) as u8;
        let priority = self.int(
            &r.priority,
            at("priority"),
            1..=255,
            i64::from(DEFAULT_PRIORITY),
            " (255 only for the owner of the addresses; 0 is what a stopping master sends)",
        ) as u8;
        let version = match &r.version {
            None => DEFAULT_VERSION,
            Some(v) if matches!(v.get_ref(), 2 | 3) => *v.get_ref() as u8,
            Some(v) => {
                self.error(
                    v.span(),
                    at("version"),
                    format!(
                        "VRRP version {} does not exist; use 3 (RFC 5798) or 2 (RFC 3768)",
                        v.get_ref()
                    ),
                );
                DEFAULT_VERSION
            }
        };

        let interface = match &r.interface {
            None => agent.interface.clone(),
            Some(n) => {
                let name = n.get_ref().trim().to_owned();
                if name.is_empty() || name.len() > 15 || name.contains(['/', ' ']) {
                    self.error(
                        n.span(),
                        at("interface"),
                        format!("{name:?} is not a valid interface name (1-15 characters, no '/' or spaces)"),
                    );
                }
                name
            }
        };

        // Addresses first: their family decides what the other keys may hold.
        let mut addresses = Vec::new();
        let mut seen = HashSet::new();
        if r.addresses.get_ref().is_empty() {
            self.error(
                r.addresses.span(),
                at("addresses"),
                "an instance needs at least one virtual address (keepalived's virtual_ipaddress)",
            );
        }
        if r.addresses.get_ref().len() > usize::from(u8::MAX) {
            self.error(
                r.addresses.span(),
                at("addresses"),
                "an advert carries at most 255 addresses; split them over several instances",
            );
        }
        for a in r.addresses.get_ref() {
            match a.get_ref().parse::<VrrpAddress>() {
                Err(e) => self.error(a.span(), at("addresses"), e),
                Ok(v) => {
                    let ip = v.addr;
                    if ip.is_unspecified() || ip.is_multicast() || ip.is_loopback() {
                        self.error(
                            a.span(),
                            at("addresses"),
                            format!("{ip} cannot be a virtual address; use a unicast address"),
                        );
                    } else if let Some(first) = addresses.first().map(|f: &VrrpAddress| f.addr) {
                        if first.is_ipv4() != ip.is_ipv4() {
                            self.error(
                                a.span(),
                                at("addresses"),
                                format!("{ip} and {first} are different address families; an instance is IPv4 or IPv6, make one instance per family"),
                            );
                            continue;
                        }
                    }
                    if !seen.insert(ip) {
                        self.error(a.span(), at("addresses"), format!("{ip} is listed twice"));
                        continue;
                    }
                    addresses.push(v);
                }
            }
        }
        let ipv6 = addresses.first().is_some_and(|a| a.addr.is_ipv6());
        if ipv6 && version == 2 {
            let span = r.version.as_ref().map_or(span.clone(), |v| v.span());
            self.error(
                span,
                at("version"),
                "VRRPv2 is IPv4 only; IPv6 addresses need version = 3",
            );
        }

        let advert_interval = match &r.advert_interval {
            None => DEFAULT_ADVERT_INTERVAL,
            Some(v) => match v.get_ref().to_duration() {
                Err(e) => {
                    self.error(v.span(), at("advert_interval"), e);
                    DEFAULT_ADVERT_INTERVAL
                }
                Ok(d) => {
                    let problem = if version == 2 {
                        (d.subsec_nanos() != 0 || !(1..=255).contains(&d.as_secs())).then_some(
                            "VRRPv2 sends whole seconds (1s-255s); for shorter intervals use version = 3",
                        )
                    } else {
                        (d.as_nanos() % 10_000_000 != 0
                            || d < Duration::from_millis(10)
                            || d > Duration::from_millis(40_950))
                        .then_some("VRRPv3 sends centiseconds: 10ms-40.95s in steps of 10ms")
                    };
                    if let Some(p) = problem {
                        self.error(
                            v.span(),
                            at("advert_interval"),
                            format!("{}: {p}", humantime::format_duration(d)),
                        );
                        DEFAULT_ADVERT_INTERVAL
                    } else {
                        d
                    }
                }
            },
        };
        let preempt_delay = self.duration(&r.preempt_delay, at("preempt_delay"), Duration::ZERO);

        let auth_pass = match &r.auth_pass {
            None => None,
            Some(p) => {
                let pass = p.get_ref();
                if version != 2 {
                    self.error(
                        p.span(),
                        at("auth_pass"),
                        "VRRPv3 has no authentication (RFC 5798 removed it); remove auth_pass or set version = 2",
                    );
                } else if pass.is_empty() || pass.len() > 8 {
                    self.error(
                        p.span(),
                        at("auth_pass"),
                        format!("the password is {} bytes; VRRPv2 carries 1-8 (keepalived silently cuts longer ones, so its peers see only the first 8)", pass.len()),
                    );
                }
                Some(pass.clone())
            }
        };

        let family_ok = |ip: &IpAddr| addresses.is_empty() || ip.is_ipv6() == ipv6;
        let unicast_src = r.unicast_src.as_ref().map(|s| {
            if !family_ok(s.get_ref()) {
                self.error(
                    s.span(),
                    at("unicast_src"),
                    format!(
                        "{} is not of the family of the instance's addresses",
                        s.get_ref()
                    ),
                );
            }
            *s.get_ref()
        });
        let mut unicast_peers = Vec::new();
        if let Some(p) = &r.unicast_peers {
            if p.get_ref().is_empty() {
                self.error(
                    p.span(),
                    at("unicast_peers"),
                    "give at least one peer, or remove the key for multicast",
                );
            }
            for peer in p.get_ref() {
                if !family_ok(peer) || peer.is_multicast() || peer.is_unspecified() {
                    self.error(
                        p.span(),
                        at("unicast_peers"),
                        format!("{peer} cannot be a unicast peer of this instance (wrong family, multicast or unspecified)"),
                    );
                } else if Some(*peer) == unicast_src {
                    self.error(
                        p.span(),
                        at("unicast_peers"),
                        format!("{peer} is this node's own unicast_src"),
                    );
                } else if unicast_peers.contains(peer) {
                    self.error(
                        p.span(),
                        at("unicast_peers"),
                        format!("{peer} is listed twice"),
                    );
                } else {
                    unicast_peers.push(*peer);
                }
            }
        }
        if let (Some(s), None) = (&r.unicast_src, &r.unicast_peers) {
            self.error(
                s.span(),
                at("unicast_src"),
                "unicast_src without unicast_peers: list the peers, or remove it for multicast",
            );
        }
        let old_unicast_checksum = match &r.old_unicast_checksum {
            Some(o) if *o.get_ref() && (version != 3 || ipv6 || r.unicast_peers.is_none()) => {
                self.error(
                    o.span(),
                    at("old_unicast_checksum"),
                    "only VRRPv3 over IPv4 in unicast mode has the old checksum form",
                );
                false
            }
            Some(o) => *o.get_ref(),
            None => false,
        };

        let notify = match &r.notify {
            Some(n) if n.get_ref().first().is_none_or(|p| p.trim().is_empty()) => {
                self.error(
                    n.span(),
                    at("notify"),
                    "give the program and its arguments: notify = [\"/usr/local/bin/vrrp-notify\"]",
                );
                None
            }
            Some(n) => Some(n.get_ref().clone()),
            None => None,
        };

        let repeat = |v: &mut Self, value: &Option<Spanned<i64>>, key: &str, default: u32| {
            v.int(
                value,
                at(key),
                0..=i64::from(MAX_GARP_REPEAT),
                i64::from(default),
                " rounds",
            ) as u32
        };
        let garp_master_repeat = repeat(
            self,
            &r.garp_master_repeat,
            "garp_master_repeat",
            DEFAULT_GARP_REPEAT,
        );
        let garp_master_refresh_repeat = repeat(
            self,
            &r.garp_master_refresh_repeat,
            "garp_master_refresh_repeat",
            DEFAULT_GARP_REFRESH_REPEAT,
        );
        let garp_lower_prio_repeat = repeat(
            self,
            &r.garp_lower_prio_repeat,
            "garp_lower_prio_repeat",
            garp_master_repeat,
        );
        let garp_master_delay = self.duration(
            &r.garp_master_delay,
            at("garp_master_delay"),
            DEFAULT_GARP_DELAY,
        );
        let garp_master_refresh = self.duration(
            &r.garp_master_refresh,
            at("garp_master_refresh"),
            Duration::ZERO,
        );
        let garp_lower_prio_delay = self.duration(
            &r.garp_lower_prio_delay,
            at("garp_lower_prio_delay"),
            garp_master_delay,
        );

        let mut track_vips = Vec::new();
        if let Some(t) = &r.track_vips {
            for v in t.get_ref() {
                let name = v.get_ref();
                if !vip_names.contains(&name.as_str()) {
                    self.error(
                        v.span(),
                        at("track_vips"),
                        format!(
                            "no [[vip]] is named {name:?}; track_vips lists VIP names (configured: {})",
                            if vip_names.is_empty() { "none".to_owned() } else { vip_names.join(", ") }
                        ),
                    );
                } else if track_vips.contains(name) {
                    self.error(
                        v.span(),
                        at("track_vips"),
                        format!("{name:?} is listed twice"),
                    );
                } else {
                    track_vips.push(name.clone());
                }
            }
        }
        let track_weight = self.int(
            &r.track_weight,
            at("track_weight"),
            -254..=-1,
            i64::from(DEFAULT_TRACK_WEIGHT),
            " (subtracted from priority while a tracked VIP has no usable backend)",
        ) as i16;
        if let (Some(w), None) = (&r.track_weight, &r.track_vips) {
            self.error(
                w.span(),
                at("track_weight"),
                "track_weight without track_vips: list the VIPs to track, or remove it",
            );
        }

        let name = match &r.name {
            Some(n) => {
                if n.get_ref().trim().is_empty() {
                    self.error(n.span(), at("name"), "must not be empty");
                }
                n.get_ref().clone()
            }
            None => format!("{interface}-{vrid}{}", if ipv6 { "-v6" } else { "" }),
        };
        VrrpConfig {
            name,
            interface,
            vrid,
            priority,
            version,
            advert_interval,
            preempt: r.preempt.unwrap_or(true),
            preempt_delay,
            auth_pass,
            unicast_src,
            unicast_peers,
            old_unicast_checksum,
            addresses,
            notify,
            garp_master_repeat,
            garp_master_delay,
            garp_master_refresh,
            garp_master_refresh_repeat,
            garp_lower_prio_repeat,
            garp_lower_prio_delay,
            track_vips,
            track_weight,
        }
    }
}

#[cfg(test)]
mod tests;
