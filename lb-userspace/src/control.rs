//! The control socket protocol shared by `lbd` (server) and `lbctl` (client).
//!
//! One request per connection: the client writes a single JSON object terminated by a
//! newline, the server answers with one JSON object and closes. Version 1:
//!
//! ```text
//! → {"v":1,"cmd":"status"}
//! ← {"ok":true,"data":{...}}        or        {"ok":false,"error":"..."}
//! ```
//!
//! Requests over [`MAX_REQUEST_BYTES`] or not valid JSON get an error and change nothing.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read, Write},
    net::IpAddr,
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};

use crate::edit::VipSpec;

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest request the server reads; anything longer is rejected unread.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// A request: the command plus the protocol version.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Request {
    pub v: u32,
    #[serde(flatten)]
    pub command: Command,
}

/// What the client asks for.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// Agent status: interface, attach state, uptime, object counts.
    Status,
    /// Packet and byte counters per VIP, backend and reason.
    Stats,
    /// Re-read the config file and apply the difference.
    Reload,
    /// Every VIP with its settings and backends.
    VipList,
    /// One VIP (name or `ADDRESS:PORT/PROTOCOL`), its backends and counters.
    VipShow {
        vip: String,
    },
    VipAdd {
        vip: VipSpec,
    },
    VipDel {
        vip: String,
    },
    /// A VIP's backends with weight, drain, MAC, counters and active flows.
    BackendList {
        vip: String,
    },
    BackendAdd {
        vip: String,
        address: IpAddr,
        #[serde(default = "default_weight")]
        weight: u32,
        /// NAT: the backend's port (default: the VIP's).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        port: Option<u16>,
    },
    BackendDel {
        vip: String,
        address: IpAddr,
    },
    BackendWeight {
        vip: String,
        address: IpAddr,
        weight: u32,
    },
    /// No new flows for the backend; established ones stay.
    BackendDrain {
        vip: String,
        address: IpAddr,
    },
    BackendUndrain {
        vip: String,
        address: IpAddr,
    },
    /// Force a backend up (in service whatever its checks say) until `backend_auto`.
    BackendUp {
        vip: String,
        address: IpAddr,
    },
    /// Force a backend down: out of service, its flows move to the others.
    BackendDown {
        vip: String,
        address: IpAddr,
    },
    /// Clear a forced state: the backend follows its health checks again.
    BackendAuto {
        vip: String,
        address: IpAddr,
    },
    /// Health of every checked or forced backend: state, last error and when.
    Health,
    /// The effective configuration as TOML (runtime changes included).
    ConfigShow,
    /// Write the effective configuration to `path`, or over the file lbd was started with.
    ConfigSave {
        #[serde(default)]
        path: Option<PathBuf>,
    },
    /// The effective configuration and a snapshot of the maps: two equal answers mean
    /// nothing changed (used by tests to prove a refused request changed nothing).
    State,
}

fn default_weight() -> u32 {
    1
}

/// The server's answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    pub fn ok(data: impl Serialize) -> Response {
        match serde_json::to_value(data) {
            Ok(v) => Response {
                ok: true,
                data: Some(v),
                error: None,
            },
            Err(e) => Response::err(format!("internal error encoding the reply: {e}")),
        }
    }

    pub fn err(msg: impl Into<String>) -> Response {
        Response {
            ok: false,
            data: None,
            error: Some(msg.into()),
        }
    }
}

/// `status` reply.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatusReport {
    pub version: String,
    pub interface: String,
    pub ifindex: u32,
    pub xdp_mode: String,
    pub attached: bool,
    pub uptime_secs: u64,
    pub vips: usize,
    pub backends: usize,
    pub unresolved_backends: usize,
    /// What this run took over from the previous one's pins (nothing on a fresh start).
    #[serde(default)]
    pub adopted: crate::dataplane::Adoption,
    /// Map entries and lookup-table slots written since start (only differences are
    /// written: an adopting restart with an unchanged config writes none).
    #[serde(default)]
    pub map_writes: u64,
    /// The VRRP instances; empty when none is configured (the program is then attached
    /// from start to stop).
    #[serde(default)]
    pub vrrp: Vec<VrrpStatus>,
}

/// One VRRP instance in the `status` reply.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct VrrpStatus {
    pub name: String,
    pub interface: String,
    pub vrid: u8,
    pub version: u8,
    /// `master`, `backup` or `initialize`.
    pub state: String,
    pub priority: u8,
    /// This node's address in the election: the source of its adverts.
    pub address: IpAddr,
    /// The master this node defers to (itself when master), when known.
    pub master: Option<IpAddr>,
    /// Adverts go to `unicast_peers` rather than the multicast group.
    pub unicast: bool,
    /// The configured advert interval.
    pub advert_interval_ms: f64,
    /// The master's interval as this node knows it (VRRPv3 backups learn it).
    pub master_advert_interval_ms: f64,
    /// The virtual addresses, `ADDRESS/PREFIX`.
    pub addresses: Vec<String>,
    /// Time since the last state change (or since start).
    pub last_change_secs_ago: f64,
    pub adverts_received: u64,
    pub adverts_sent: u64,
    pub priority_zero_received: u64,
    pub priority_zero_sent: u64,
    pub became_master: u64,
    pub became_backup: u64,
    /// Accepted adverts whose address list differs from ours (a configuration mismatch).
    pub address_list_mismatch: u64,
    /// Packets ignored, by reason (`bad_ttl`, `wrong_vrid`, `auth_mismatch`, ...; only
    /// reasons seen at least once).
    pub ignored: BTreeMap<String, u64>,
    /// Every node this one heard adverts from.
    pub peers: Vec<VrrpPeer>,
    /// What the last takeover cost after the decision, when this node has been master.
    pub last_takeover: Option<TakeoverTiming>,
}

/// A node heard on the link.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct VrrpPeer {
    pub address: IpAddr,
    pub adverts: u64,
    pub last_priority: u8,
    /// The checksum convention its last advert used (`pseudo_header`, `old_unicast`,
    /// `message`).
    pub checksum: String,
    pub last_seen_secs_ago: f64,
}

/// Microseconds from the instant a node decided to become master to each step done.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct TakeoverTiming {
    /// The first advert as master sent.
    pub advert_us: u64,
    /// XDP attached (0 when it already was, for another instance).
    pub xdp_attached_us: u64,
    /// The virtual addresses configured.
    pub addresses_us: u64,
    /// The first gratuitous ARP / unsolicited NA sent.
    pub announced_us: u64,
}

/// One backend in the `health` reply.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HealthReport {
    pub vip: String,
    pub address: IpAddr,
    /// The checked address (the port may be a check's override).
    pub target: String,
    pub state: String,
    pub health: String,
    pub forced: Option<String>,
    pub successes: u32,
    pub failures: u32,
    pub checks: u64,
    pub last_error: Option<String>,
    pub last_failure_secs_ago: Option<f64>,
    pub last_change_secs_ago: f64,
}

/// `stats` reply.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StatsReport {
    pub vips: Vec<VipStats>,
    /// Totals per XDP verdict (`tx`, `pass`, `drop`), summed over their reasons.
    pub verdicts: Vec<VerdictStats>,
    pub reasons: Vec<ReasonStats>,
    #[serde(default)]
    pub flow_cache: FlowCacheStats,
}

/// The per-CPU flow cache in front of the flow table.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FlowCacheStats {
    /// DR packets forwarded from the cache, without the flow table (over `forwarded_dr`:
    /// its hit rate).
    pub hits: u64,
    /// Slots per CPU (`agent.flow_cache_size`).
    pub slots_per_cpu: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VerdictStats {
    pub verdict: String,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VipStats {
    pub name: String,
    pub address: IpAddr,
    pub port: u16,
    pub protocol: String,
    pub packets: u64,
    pub bytes: u64,
    pub backends: Vec<BackendStats>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BackendStats {
    pub address: IpAddr,
    /// NAT VIPs: the port the backend is sent to (None for DR, which keeps the VIP's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    pub weight: u32,
    pub drain: bool,
    /// `up`, `down` or `drain`, from health checks or forced by the operator.
    pub state: String,
    /// Resolved MAC, or `None` while the neighbour is unresolved.
    pub mac: Option<String>,
    pub packets: u64,
    pub bytes: u64,
    /// Entries of the flow table pinned to this backend.
    pub active_flows: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReasonStats {
    pub reason: String,
    pub verdict: String,
    pub description: String,
    pub packets: u64,
    pub bytes: u64,
}

/// Parses one request line. Errors are phrased for the operator who sent it.
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
    if line.len() > MAX_REQUEST_BYTES {
        return Err(format!(
            "request too large: {} bytes, limit {MAX_REQUEST_BYTES}",
            line.len()
        ));
    }
    // The version is checked before the command so an old or new client is told about the
    // version mismatch rather than about a command it could not know.
    let mut value: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(line).map_err(|e| format!("malformed request: {e}"))?;
    let v = match value.remove("v") {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(_) => None,
        None => return Err("malformed request: missing field `v` (the protocol version)".into()),
    };
    if v != Some(PROTOCOL_VERSION as u64) {
        return Err(format!(
            "unsupported protocol version {} (this agent speaks {PROTOCOL_VERSION}); \
             use an lbctl of the same release as lbd",
            value_or(v)
        ));
    }
    let command: Command = serde_json::from_value(value.clone().into())
        .map_err(|e| format!("malformed request: {e}"))?;
    // serde ignores extra keys on unit variants even with deny_unknown_fields; a key the
    // command does not echo back is one it does not know.
    if let Ok(serde_json::Value::Object(known)) = serde_json::to_value(&command) {
        if let Some(extra) = value.keys().find(|k| !known.contains_key(*k)) {
            return Err(format!(
                "malformed request: unknown field `{extra}` for command {:?}",
                known["cmd"]
            ));
        }
    }
    Ok(Request {
        v: PROTOCOL_VERSION,
        command,
    })
}

fn value_or(v: Option<u64>) -> String {
    v.map_or_else(|| "(not a number)".into(), |v| v.to_string())
}

/// Gives the freshly bound control socket its access: lbd's user only (0600), or lbd's
/// user and `group` (0660; `agent.control_group`). A non-root lbd can hand the socket to a
/// group only if it is a member (`SupplementaryGroups=` in lbd.service).
pub fn restrict_socket(socket: &Path, group: Option<&str>) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = match group {
        None => 0o600,
        Some(name) => {
            let gid = group_id(name)?.with_context(|| {
                format!("agent.control_group: there is no group {name:?} on this machine; create it (groupadd --system {name}) or remove the key")
            })?;
            std::os::unix::fs::chown(socket, None, Some(gid)).with_context(|| {
                format!(
                    "giving the control socket {} to group {name}: a non-root lbd must be a member of it (SupplementaryGroups={name} in lbd.service)",
                    socket.display()
                )
            })?;
            0o660
        }
    };
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", socket.display()))
}

/// The id of group `name` (from /etc/group or whatever NSS source the machine uses).
fn group_id(name: &str) -> anyhow::Result<Option<u32>> {
    let cname = std::ffi::CString::new(name).context("a group name cannot contain NUL")?;
    let mut buf = vec![0 as libc::c_char; 1024];
    loop {
        // SAFETY: every pointer is valid for the call; `buf` outlives `group`'s strings,
        // which are not read after it is gone (only the gid, a plain integer, is kept).
        let (rc, found) = unsafe {
            let mut group: libc::group = std::mem::zeroed();
            let mut result: *mut libc::group = std::ptr::null_mut();
            let rc = libc::getgrnam_r(
                cname.as_ptr(),
                &mut group,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            );
            (rc, (!result.is_null()).then_some(group.gr_gid))
        };
        match rc {
            0 => return Ok(found),
            libc::ERANGE if buf.len() < 1 << 20 => buf.resize(buf.len() * 2, 0),
            rc => {
                return Err(std::io::Error::from_raw_os_error(rc))
                    .with_context(|| format!("looking up group {name:?}"))
            }
        }
    }
}

/// Sends `command` to the agent listening on `socket` and returns the reply's data.
pub fn request(socket: &Path, command: &Command) -> anyhow::Result<serde_json::Value> {
    let mut stream = match UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => bail!(
            "not allowed to talk to lbd at {}: the socket is open only to lbd's user, and to \
             agent.control_group if set; run lbctl as root or as a member of that group",
            socket.display()
        ),
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                "cannot connect to lbd at {}: is lbd running? (path set by agent.control_socket)",
                socket.display()
            )
            })
        }
    };
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut line = serde_json::to_vec(&Request {
        v: PROTOCOL_VERSION,
        command: command.clone(),
    })?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut reply = Vec::new();
    BufReader::new(stream.take(16 * 1024 * 1024))
        .read_until(b'\n', &mut reply)
        .context("reading lbd's reply")?;
    let resp: Response = serde_json::from_slice(&reply)
        .with_context(|| format!("lbd sent an unreadable reply ({} bytes)", reply.len()))?;
    if !resp.ok {
        bail!(
            "{}",
            resp.error
                .unwrap_or_else(|| "lbd reported an error without a message".into())
        );
    }
    Ok(resp.data.unwrap_or(serde_json::Value::Null))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_in_the_documented_shape() {
        let line = serde_json::to_string(&Request {
            v: 1,
            command: Command::Stats,
        })
        .unwrap();
        assert_eq!(line, r#"{"v":1,"cmd":"stats"}"#);
        assert_eq!(
            parse_request(line.as_bytes()).unwrap().command,
            Command::Stats
        );
    }

    #[test]
    fn bad_requests_get_precise_errors() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "malformed request"),
            (b"{", "malformed request"),
            (br#"{"v":1,"cmd":"nope"}"#, "unknown variant `nope`"),
            (
                br#"{"v":2,"cmd":"stats"}"#,
                "unsupported protocol version 2",
            ),
            (br#"{"cmd":"stats"}"#, "missing field `v`"),
            (br#"{"v":1,"cmd":"stats","x":1}"#, "unknown field `x`"),
        ];
        for (input, want) in cases {
            let err = parse_request(input).unwrap_err();
            assert!(
                err.contains(want),
                "{:?}: got {err:?}",
                String::from_utf8_lossy(input)
            );
        }
        let big = vec![b' '; MAX_REQUEST_BYTES + 1];
        assert!(parse_request(&big).unwrap_err().contains("too large"));
    }
}
