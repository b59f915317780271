//! The `[vip.health_check]` table of the agent's TOML config, and its validation into a
//! [`CheckSpec`].
//!
//! | key | applies to | default | meaning |
//! | --- | --- | --- | --- |
//! | `type` | all | (required) | `"tcp"`, `"http"`, `"https"`, `"udp"` or `"exec"` |
//! | `interval` | all | `"2s"` | time between two checks of one backend (`"500ms"`, `"2s"`, `"1m"`) |
//! | `timeout` | all | `"1s"`, or `interval` if shorter | time one check may take, connect to verdict; at most `interval` |
//! | `rise` | all | `2` | consecutive passed checks that bring a backend up |
//! | `fall` | all | `3` | consecutive failed checks that take a backend down |
//! | `initial` | all | `"up"` | `"up"`: up until its first check, which alone can take it down; `"down"`: down until `rise` checks pass |
//! | `port` | all | the backend's service port | port to check instead (for exec: the port in `LBD_BACKEND_PORT`) |
//! | `source_address` | tcp, http, https, udp | any | local address to check from |
//! | `path` | http, https | `"/"` | request target |
//! | `host` | http, https | `"address:port"` | `Host` header |
//! | `expect_status` | http, https | `[200]` | statuses that pass |
//! | `expect_body` | http, https | none | text the body must contain (within its first 64 KiB) |
//! | `server_name` | https | the host, else the address | name verified in the certificate and sent as SNI |
//! | `ca_file` | https | the system's CAs | PEM file of the CAs to trust |
//! | `insecure_skip_verify` | https | `false` | accept any certificate; must be said explicitly |
//! | `send` | udp | empty datagram | payload: a string, or an array of byte values (`[0x01, 0xff]`) |
//! | `expect` | udp | any reply | bytes the reply must contain: a string or an array of byte values |
//! | `command` | exec | (required) | program and arguments, run without a shell, with `LBD_BACKEND_ADDRESS` and `LBD_BACKEND_PORT` set |
//!
//! Why these defaults: a 2 s interval with fall 3 notices a dead backend within about 6 s
//! without making a thousand backends cost more than a few hundred checks per second; rise
//! 2 keeps a flapping backend from coming back on one lucky answer; a 1 s timeout is far
//! above any healthy answer on a LAN. They are HAProxy's, which operators know.

use std::{net::IpAddr, ops::Range, path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};
use serde_spanned::Spanned;

use super::spec::{
    format_duration, CheckSpec, ExecProbe, HttpProbe, Initial, Probe, TlsProbe, UdpProbe,
    DEFAULT_FALL, DEFAULT_INTERVAL, DEFAULT_RISE, DEFAULT_TIMEOUT,
};

#[cfg(test)]
mod tests;

/// Largest `rise` or `fall`: beyond it a backend would take minutes to change state at any
/// sensible interval, which is a typo more often than a wish.
pub const MAX_THRESHOLD: u32 = 100;
/// Shortest `interval` and `timeout`.
pub const MIN_DURATION: Duration = Duration::from_millis(10);

/// The raw `[vip.health_check]` table, spans kept so every problem can point at its line.
/// Serializes back to the same keys (`lbctl config save`); equality ignores spans.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    #[serde(rename = "type")]
    pub kind: Spanned<CheckType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rise: Option<Spanned<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fall: Option<Spanned<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial: Option<Spanned<Initial>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<Spanned<u16>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_address: Option<Spanned<IpAddr>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_status: Option<Spanned<Vec<u16>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_body: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<Spanned<PathBuf>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<Spanned<bool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send: Option<Spanned<Payload>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<Spanned<Payload>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Spanned<Vec<String>>>,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CheckType {
    Tcp,
    Http,
    Https,
    Udp,
    Exec,
}

impl CheckType {
    fn name(self) -> &'static str {
        match self {
            CheckType::Tcp => "tcp",
            CheckType::Http => "http",
            CheckType::Https => "https",
            CheckType::Udp => "udp",
            CheckType::Exec => "exec",
        }
    }
}

/// UDP bytes: text as written, or byte values for binary protocols.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Payload {
    Text(String),
    Bytes(Vec<u8>),
}

impl Payload {
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Payload::Text(s) => s.as_bytes().to_vec(),
            Payload::Bytes(b) => b.clone(),
        }
    }
}

/// One problem in a `health_check` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigIssue {
    /// The key within the table, e.g. `timeout`.
    pub key: &'static str,
    /// Byte range of the offending value in the config text.
    pub span: Range<usize>,
    pub message: String,
}

impl HealthCheckConfig {
    /// Validates the table into a spec, or lists every problem at once. Reads `ca_file`.
    pub fn to_spec(&self) -> Result<CheckSpec, Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        let mut issue = |key, span: Range<usize>, message: String| {
            issues.push(ConfigIssue { key, span, message })
        };
        let kind = *self.kind.get_ref();

        for (key, span, applies) in self.type_specific_keys() {
            if let Some(span) = span {
                if !applies.contains(&kind) {
                    let types: Vec<&str> = applies.iter().map(|t| t.name()).collect();
                    issue(
                        key,
                        span,
                        format!(
                            "`{key}` applies to {} checks, not to a {} check",
                            types.join(" and "),
                            kind.name()
                        ),
                    );
                }
            }
        }

        let mut duration = |key, value: &Option<Spanned<String>>, default: Duration| match value {
            None => default,
            Some(v) => match humantime::parse_duration(v.get_ref()) {
                Ok(d) if d < MIN_DURATION => {
                    issue(
                        key,
                        v.span(),
                        format!("must be at least {}", format_duration(MIN_DURATION)),
                    );
                    default
                }
                Ok(d) => d,
                Err(e) => {
                    issue(
                        key,
                        v.span(),
                        format!(
                            "{:?} is not a duration ({e}); write e.g. \"500ms\" or \"2s\"",
                            v.get_ref()
                        ),
                    );
                    default
                }
            },
        };
        let interval = duration("interval", &self.interval, DEFAULT_INTERVAL);
        // A short interval alone shortens the default timeout rather than being an error.
        let timeout = duration("timeout", &self.timeout, DEFAULT_TIMEOUT.min(interval));
        if let Some(given) = self.timeout.as_ref().filter(|_| timeout > interval) {
            issue(
                "timeout",
                given.span(),
                format!(
                    "timeout {} is longer than interval {}: a check would still run when the next is due",
                    format_duration(timeout),
                    format_duration(interval)
                ),
            );
        }
        let mut threshold = |key, value: &Option<Spanned<u32>>, default| match value {
            Some(v) if !(1..=MAX_THRESHOLD).contains(v.get_ref()) => {
                issue(
                    key,
                    v.span(),
                    format!("must be between 1 and {MAX_THRESHOLD}"),
                );
                default
            }
            Some(v) => *v.get_ref(),
            None => default,
        };
        let rise = threshold("rise", &self.rise, DEFAULT_RISE);
        let fall = threshold("fall", &self.fall, DEFAULT_FALL);
        if let Some(port) = self.port.as_ref().filter(|p| *p.get_ref() == 0) {
            issue(
                "port",
                port.span(),
                "must be between 1 and 65535".to_owned(),
            );
        }

        let probe = match kind {
            CheckType::Tcp => Some(Probe::Tcp),
            CheckType::Http | CheckType::Https => {
                let http = self.http_probe(kind == CheckType::Https, &mut issue);
                http.map(Probe::Http)
            }
            CheckType::Udp => Some(Probe::Udp(UdpProbe {
                send: self
                    .send
                    .as_ref()
                    .map(|p| p.get_ref().to_bytes())
                    .unwrap_or_default(),
                expect: self.expect.as_ref().map(|p| p.get_ref().to_bytes()),
            })),
            CheckType::Exec => match &self.command {
                None => {
                    issue(
                        "command",
                        self.kind.span(),
                        "an exec check needs `command = [\"program\", \"arg\", ...]`".to_owned(),
                    );
                    None
                }
                Some(c) if c.get_ref().first().is_none_or(|p| p.trim().is_empty()) => {
                    issue(
                        "command",
                        c.span(),
                        "needs at least the program to run".to_owned(),
                    );
                    None
                }
                Some(c) => Some(Probe::Exec(ExecProbe {
                    command: c.get_ref().clone(),
                })),
            },
        };

        match probe {
            Some(probe) if issues.is_empty() => Ok(CheckSpec {
                interval,
                timeout,
                rise,
                fall,
                initial: self
                    .initial
                    .as_ref()
                    .map(|i| *i.get_ref())
                    .unwrap_or_default(),
                port: self.port.as_ref().map(|p| *p.get_ref()),
                source_address: self.source_address.as_ref().map(|a| *a.get_ref()),
                probe,
            }),
            _ => Err(issues),
        }
    }

    fn http_probe(
        &self,
        https: bool,
        issue: &mut impl FnMut(&'static str, Range<usize>, String),
    ) -> Option<HttpProbe> {
        let mut ok = true;
        let path = match &self.path {
            None => "/".to_owned(),
            Some(p) => {
                let path = p.get_ref();
                if !path.starts_with('/') || !is_token_text(path) {
                    issue(
                        "path",
                        p.span(),
                        format!(
                            "{path:?} must start with '/' and hold no spaces or control characters"
                        ),
                    );
                    ok = false;
                }
                path.clone()
            }
        };
        if let Some(h) = &self.host {
            if h.get_ref().is_empty() || !is_token_text(h.get_ref()) {
                issue(
                    "host",
                    h.span(),
                    format!("{:?} is not a valid Host header", h.get_ref()),
                );
                ok = false;
            }
        }
        let expect_status = match &self.expect_status {
            None => vec![200],
            Some(s) => {
                if s.get_ref().is_empty() {
                    issue(
                        "expect_status",
                        s.span(),
                        "needs at least one status".to_owned(),
                    );
                    ok = false;
                }
                if let Some(bad) = s.get_ref().iter().find(|c| !(100..=599).contains(*c)) {
                    issue(
                        "expect_status",
                        s.span(),
                        format!("{bad} is not an HTTP status (100-599)"),
                    );
                    ok = false;
                }
                s.get_ref().clone()
            }
        };
        let tls = if https {
            let insecure = self
                .insecure_skip_verify
                .as_ref()
                .is_some_and(|i| *i.get_ref());
            match TlsProbe::new(
                self.server_name.as_ref().map(|s| s.get_ref().clone()),
                self.ca_file.as_ref().map(|c| c.get_ref().clone()),
                insecure,
            ) {
                Ok(tls) => Some(tls),
                Err(message) => {
                    let (key, span) = match (&self.server_name, &self.ca_file) {
                        (Some(s), _) if message.starts_with("server name") => {
                            ("server_name", s.span())
                        }
                        (_, Some(c)) => ("ca_file", c.span()),
                        // The system's store is unusable.
                        _ => ("type", self.kind.span()),
                    };
                    issue(key, span, message);
                    ok = false;
                    None
                }
            }
        } else {
            None
        };
        ok.then(|| HttpProbe {
            path,
            host: self.host.as_ref().map(|h| h.get_ref().clone()),
            expect_status,
            expect_body: self.expect_body.as_ref().map(|b| b.get_ref().clone()),
            tls,
        })
    }

    /// Keys that mean something for some check types only, with where they were given.
    fn type_specific_keys(&self) -> [KeyUse; 11] {
        use CheckType::*;
        const WEB: &[CheckType] = &[Http, Https];
        const NET: &[CheckType] = &[Tcp, Http, Https, Udp];
        fn at<T>(v: &Option<Spanned<T>>) -> Option<Range<usize>> {
            v.as_ref().map(Spanned::span)
        }
        [
            ("source_address", at(&self.source_address), NET),
            ("path", at(&self.path), WEB),
            ("host", at(&self.host), WEB),
            ("expect_status", at(&self.expect_status), WEB),
            ("expect_body", at(&self.expect_body), WEB),
            ("server_name", at(&self.server_name), &[Https]),
            ("ca_file", at(&self.ca_file), &[Https]),
            (
                "insecure_skip_verify",
                at(&self.insecure_skip_verify),
                &[Https],
            ),
            ("send", at(&self.send), &[Udp]),
            ("expect", at(&self.expect), &[Udp]),
            ("command", at(&self.command), &[Exec]),
        ]
    }
}

/// A type-specific key, where it was given, and the check types it applies to.
type KeyUse = (&'static str, Option<Range<usize>>, &'static [CheckType]);

/// Text that can go into a request line or header as is.
fn is_token_text(s: &str) -> bool {
    s.chars().all(|c| c.is_ascii_graphic())
}
