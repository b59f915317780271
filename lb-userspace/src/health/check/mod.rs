//! The checkers: thin async IO that turns a [`CheckSpec`] and a backend address into a
//! verdict. They decide nothing about state; the scheduler does.
//!
//! Every error names what was tried against which address and what went wrong, so the
//! message alone tells an operator where to look: `connect to 10.0.0.2:80: connection
//! refused`, `GET http://10.0.0.2:80/health: HTTP status 503 (Service Unavailable), expected
//! 200`, `GET https://10.0.0.2:443/: timed out after 1s during the TLS handshake`.

use std::{
    net::SocketAddr,
    sync::atomic::{AtomicU8, Ordering},
};

use super::spec::format_duration;
pub use super::spec::{
    CheckError, CheckSpec, ErrorKind, ExecProbe, HttpProbe, Probe, TlsProbe, UdpProbe,
};

mod exec;
mod http;
mod tcp;
mod tls;
mod udp;

pub use exec::{ENV_BACKEND_ADDRESS, ENV_BACKEND_PORT};
pub use http::MAX_BODY;

/// Runs one check against a backend. `target` is the backend's service address; the spec's
/// `port` replaces its port. The spec's timeout covers the whole check; a command still
/// running then is killed with everything it started.
pub async fn run(spec: &CheckSpec, target: SocketAddr) -> Result<(), CheckError> {
    let target = match spec.port {
        Some(port) => SocketAddr::new(target.ip(), port),
        None => target,
    };
    let progress = Progress::default();
    let probe = async {
        match &spec.probe {
            Probe::Tcp => tcp::probe(target, spec.source_address).await,
            Probe::Http(http) => http::probe(http, target, spec.source_address, &progress).await,
            Probe::Udp(udp) => udp::probe(udp, target, spec.source_address, &progress).await,
            Probe::Exec(exec) => exec::probe(exec, target).await,
        }
    };
    match tokio::time::timeout(spec.timeout, probe).await {
        Ok(result) => result,
        Err(_) => Err(CheckError::new(
            ErrorKind::Timeout,
            timeout_message(spec, target, progress.get()),
        )),
    }
}

/// What a check was doing when its time ran out; the message says so.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Stage {
    Connecting = 0,
    TlsHandshake,
    AwaitingReply,
    ReadingBody,
}

/// Shared between the check future and the code that reports its timeout, which runs after
/// the future was dropped. Atomic so the future stays `Send`.
#[derive(Default)]
struct Progress(AtomicU8);

impl Progress {
    fn set(&self, stage: Stage) {
        self.0.store(stage as u8, Ordering::Relaxed);
    }

    fn get(&self) -> Stage {
        match self.0.load(Ordering::Relaxed) {
            1 => Stage::TlsHandshake,
            2 => Stage::AwaitingReply,
            3 => Stage::ReadingBody,
            _ => Stage::Connecting,
        }
    }
}

fn timeout_message(spec: &CheckSpec, target: SocketAddr, stage: Stage) -> String {
    let after = format_duration(spec.timeout);
    match &spec.probe {
        Probe::Tcp => format!("connect to {target}: timed out after {after}"),
        Probe::Http(http) => {
            let doing = match stage {
                Stage::Connecting => "while connecting",
                Stage::TlsHandshake => "during the TLS handshake",
                Stage::AwaitingReply => "waiting for the response",
                Stage::ReadingBody => "reading the body",
            };
            format!(
                "{}: timed out after {after} {doing}",
                http::describe(http, target)
            )
        }
        Probe::Udp(_) => format!("UDP probe of {target}: no reply within {after}"),
        Probe::Exec(exec) => format!(
            "{}: still running after {after}; killed",
            exec::describe(exec)
        ),
    }
}

/// An IO error as a short lowercase phrase ("connection refused"), without the
/// "(os error 111)" noise.
fn describe_io(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    let phrase = match e.kind() {
        K::ConnectionRefused => "connection refused",
        K::ConnectionReset => "connection reset",
        K::ConnectionAborted => "connection aborted",
        K::HostUnreachable => "host unreachable",
        K::NetworkUnreachable => "network unreachable",
        K::AddrNotAvailable => "address not available",
        K::AddrInUse => "address in use",
        K::TimedOut => "timed out",
        K::UnexpectedEof => "connection closed",
        K::BrokenPipe => "connection closed (broken pipe)",
        K::PermissionDenied => "permission denied",
        K::NotFound => "not found",
        _ => return e.to_string(),
    };
    phrase.to_owned()
}
