//! HTTP and HTTPS servers for the backends, to test health checks against real servers:
//! each answers every request with a status the test can change at run time, and a
//! certificate authority of the lab's own for HTTPS.

use std::{
    io::{BufRead as _, BufReader, Read, Write},
    net::{Ipv4Addr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU16, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use anyhow::{Context as _, Result};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::netns;

/// The name every lab HTTPS server's certificate is issued for.
pub const SERVER_NAME: &str = "backend.lab";

/// A certificate authority and a server certificate it signed for [`SERVER_NAME`].
pub struct Pki {
    /// The CA certificate (PEM), for a health check's `ca_file`.
    pub ca_file: PathBuf,
    pub server: Arc<rustls::ServerConfig>,
}

impl Pki {
    /// Makes a fresh CA and server certificate; the CA file is written into `dir`.
    pub fn new(dir: &Path) -> Result<Pki> {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "lab CA");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate()?)?;
        let key = rcgen::KeyPair::generate()?;
        let leaf =
            rcgen::CertificateParams::new(vec![SERVER_NAME.to_owned()])?.signed_by(&key, &*ca)?;
        let ca_file = dir.join("lab-ca.pem");
        std::fs::write(&ca_file, ca.as_ref().pem())
            .with_context(|| format!("writing {}", ca_file.display()))?;
        let server = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(leaf.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )?;
        Ok(Pki {
            ca_file,
            server: Arc::new(server),
        })
    }
}

/// Starts an HTTP/1.1 server in `ns` on `0.0.0.0:port` (HTTPS when `tls` is given). Every
/// request gets the current value of `status` and `name` as the body. Runs until `stop`.
pub fn start(
    ns: &str,
    name: &str,
    port: u16,
    status: Arc<AtomicU16>,
    tls: Option<Arc<rustls::ServerConfig>>,
    stop: &Arc<AtomicBool>,
) -> Result<JoinHandle<()>> {
    let listener = netns::run_in(ns, || {
        let l = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))
            .with_context(|| format!("{name}: binding HTTP 0.0.0.0:{port}"))?;
        l.set_nonblocking(true)?;
        Ok(l)
    })?;
    let (name, stop) = (name.to_owned(), stop.clone());
    std::thread::Builder::new()
        .name(format!("{name}-http"))
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let code = status.load(Ordering::Relaxed);
                        if let Err(e) = serve(stream, code, &name, tls.clone()) {
                            // Health checkers hang up as soon as they have the status line.
                            let _ = e;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(e) => {
                        eprintln!("lab http server {name}: accept: {e}");
                        return;
                    }
                }
            }
        })
        .context("spawning the HTTP server thread")
}

fn serve(
    stream: TcpStream,
    code: u16,
    name: &str,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    match tls {
        Some(config) => {
            let conn = rustls::ServerConnection::new(config).map_err(std::io::Error::other)?;
            respond(rustls::StreamOwned::new(conn, stream), code, name)
        }
        None => respond(stream, code, name),
    }
}

fn respond(mut stream: impl Read + Write, code: u16, name: &str) -> std::io::Result<()> {
    // Read the request head; the body (there is none for GET) is not needed.
    let mut reader = BufReader::new(&mut stream);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let reason = if code == 200 {
        "OK"
    } else {
        "Service Unavailable"
    };
    let body = format!("{name}\n");
    write!(
        stream,
        "HTTP/1.1 {code} {reason}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}
