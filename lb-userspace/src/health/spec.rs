//! What a health check is: plain data, shared by the scheduler (timing and thresholds) and
//! the checkers (what to send and what to expect). Built from the config by
//! [`super::config::HealthCheckConfig::to_spec`], or directly in code and tests.

use std::{fmt, net::IpAddr, path::PathBuf, sync::Arc, time::Duration};

use serde::Deserialize;

/// Time between two checks of one backend.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
/// Time one check may take, connect to verdict.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// Consecutive passed checks that bring a backend up.
pub const DEFAULT_RISE: u32 = 2;
/// Consecutive failed checks that take a backend down.
pub const DEFAULT_FALL: u32 = 3;

/// One health check, as configured for every backend of a VIP.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckSpec {
    pub interval: Duration,
    /// Covers the whole check: connect, TLS handshake, request, response, body.
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    pub initial: Initial,
    /// Check this port instead of the backend's service port.
    pub port: Option<u16>,
    /// Bind checks to this local address (TCP, HTTP and UDP checks).
    pub source_address: Option<IpAddr>,
    pub probe: Probe,
}

impl CheckSpec {
    /// A check with the default timing and thresholds.
    pub fn new(probe: Probe) -> CheckSpec {
        CheckSpec {
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
            rise: DEFAULT_RISE,
            fall: DEFAULT_FALL,
            initial: Initial::default(),
            port: None,
            source_address: None,
            probe,
        }
    }
}

/// The state a backend is in before its checks have said anything.
#[derive(Clone, Copy, Debug, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Initial {
    /// Up, but on probation: the first failed check takes it down at once, whatever `fall`
    /// is (HAProxy's start-up rule). Restarting the agent then never empties a VIP that was
    /// serving, and a backend that is really dead is gone after its first check.
    #[default]
    Up,
    /// Down until `rise` checks in a row pass. For backends that must prove themselves
    /// before taking traffic.
    Down,
}

/// What a check does.
#[derive(Clone, Debug, PartialEq)]
pub enum Probe {
    /// Healthy when a TCP connection is established.
    Tcp,
    /// HTTP/1.1 GET, plain or over TLS.
    Http(HttpProbe),
    /// A datagram sent, a reply expected.
    Udp(UdpProbe),
    /// A command run; exit status 0 is healthy (keepalived's MISC_CHECK).
    Exec(ExecProbe),
}

#[derive(Clone, Debug, PartialEq)]
pub struct HttpProbe {
    /// Request target, starting with `/`.
    pub path: String,
    /// `Host` header; the target's `address:port` when `None`.
    pub host: Option<String>,
    /// Healthy statuses; never empty.
    pub expect_status: Vec<u16>,
    /// Healthy only if the body contains this (searched in its first
    /// [`MAX_BODY`](super::check::MAX_BODY) bytes).
    pub expect_body: Option<String>,
    /// `Some` for HTTPS.
    pub tls: Option<TlsProbe>,
}

impl HttpProbe {
    /// `GET /`, expecting 200.
    pub fn get(path: impl Into<String>) -> HttpProbe {
        HttpProbe {
            path: path.into(),
            host: None,
            expect_status: vec![200],
            expect_body: None,
            tls: None,
        }
    }
}

/// How an HTTPS check trusts the backend. Built by `TlsProbe::new` (in `check::tls`), which
/// reads the CA file once, so the thousands of checks that follow share one client config.
#[derive(Clone, Debug)]
pub struct TlsProbe {
    /// Name sent as SNI and verified against the certificate; when `None`, the `Host`
    /// header's name, else the backend's IP address.
    pub server_name: Option<String>,
    /// PEM file of the CAs to trust; the system's store when `None`.
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate (the handshake's signatures are still checked).
    pub insecure_skip_verify: bool,
    pub(in crate::health) client_config: Arc<rustls::ClientConfig>,
}

impl PartialEq for TlsProbe {
    // The client config is derived from the other fields.
    fn eq(&self, other: &TlsProbe) -> bool {
        self.server_name == other.server_name
            && self.ca_file == other.ca_file
            && self.insecure_skip_verify == other.insecure_skip_verify
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct UdpProbe {
    /// The datagram sent (may be empty).
    pub send: Vec<u8>,
    /// Healthy only if the reply contains these bytes; any reply when `None`.
    pub expect: Option<Vec<u8>>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ExecProbe {
    /// Program and arguments, run without a shell. The program gets
    /// `LBD_BACKEND_ADDRESS` and `LBD_BACKEND_PORT` in its environment.
    pub command: Vec<String>,
}

/// Why a check failed, in words an operator can act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckError {
    pub kind: ErrorKind,
    /// Says what was tried against which address and what happened, e.g.
    /// `connect to 10.0.0.2:80: connection refused`.
    pub message: String,
}

impl CheckError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> CheckError {
        CheckError {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CheckError {}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Refused, unreachable, reset: the backend's host said no.
    Connect,
    /// No verdict within the timeout.
    Timeout,
    /// TLS handshake or certificate verification failed.
    Tls,
    /// The backend answered with something that is not valid HTTP.
    Protocol,
    /// An HTTP status not in `expect_status`.
    Status,
    /// The HTTP body lacks `expect_body`, or the UDP reply lacks `expect`.
    Content,
    /// The command exited non-zero or was killed by a signal.
    Exit,
    /// The check could not even start here: socket, bind or spawn failed. Points at this
    /// host's configuration rather than at the backend.
    Local,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Tls => "tls",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Status => "status",
            ErrorKind::Content => "content",
            ErrorKind::Exit => "exit",
            ErrorKind::Local => "local",
        })
    }
}

/// A duration as an operator writes it: `2s`, `500ms`, `1m 30s`.
pub fn format_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}
