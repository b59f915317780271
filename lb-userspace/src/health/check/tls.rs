//! TLS for HTTPS checks (rustls on the ring provider).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
    pki_types::{pem::PemObject, CertificateDer, ServerName, UnixTime},
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::net::TcpStream;
use tokio_rustls::{client::TlsStream, TlsConnector};

use super::TlsProbe;

impl TlsProbe {
    /// Builds the client config once: reads `ca_file` (or the system's store when `None`),
    /// so a missing or malformed file is reported when the config is loaded, not at every
    /// check. `server_name`, when given, must be a DNS name or an IP address.
    pub fn new(
        server_name: Option<String>,
        ca_file: Option<PathBuf>,
        insecure_skip_verify: bool,
    ) -> Result<TlsProbe, String> {
        if let Some(name) = &server_name {
            ServerName::try_from(name.as_str()).map_err(|_| {
                format!("server name {name:?} is neither a DNS name nor an IP address")
            })?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?;
        let mut config = if insecure_skip_verify {
            if ca_file.is_some() {
                return Err("ca_file and insecure_skip_verify exclude each other".to_owned());
            }
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth()
        } else {
            let roots = match &ca_file {
                Some(path) => roots_from_file(path)?,
                None => system_roots()?,
            };
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsProbe {
            server_name,
            ca_file,
            insecure_skip_verify,
            client_config: Arc::new(config),
        })
    }
}

fn roots_from_file(path: &Path) -> Result<RootCertStore, String> {
    let what = || format!("CA file {}", path.display());
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| format!("{}: {e}", what()))? {
        let cert = cert.map_err(|e| format!("{}: {e}", what()))?;
        roots.add(cert).map_err(|e| format!("{}: {e}", what()))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: no PEM certificate in it", what()));
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        return Err(format!(
            "no CA certificate in the system's store{}; set ca_file, or insecure_skip_verify = true",
            found.errors.first().map(|e| format!(" ({e})")).unwrap_or_default()
        ));
    }
    Ok(roots)
}

/// The name to verify and send as SNI: the configured server name, else the `Host`
/// header's host part, else the backend's IP address.
fn server_name(tls: &TlsProbe, host: &str, target: SocketAddr) -> ServerName<'static> {
    if let Some(name) = tls
        .server_name
        .as_deref()
        .and_then(|n| ServerName::try_from(n).ok())
    {
        return name.to_owned();
    }
    let host = match host.rsplit_once(':') {
        // "[v6]:port" or "name:port"; a bare IPv6 address has more than one colon.
        Some((h, port))
            if port.parse::<u16>().is_ok() && (h.starts_with('[') || !h.contains(':')) =>
        {
            h
        }
        _ => host,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host)
        .map(|n| n.to_owned())
        .unwrap_or_else(|_| ServerName::IpAddress(target.ip().into()))
}

pub(super) async fn handshake(
    tls: &TlsProbe,
    host: &str,
    target: SocketAddr,
    stream: TcpStream,
) -> Result<TlsStream<TcpStream>, String> {
    TlsConnector::from(tls.client_config.clone())
        .connect(server_name(tls, host, target), stream)
        .await
        .map_err(|e| {
            // rustls wraps its error in an io::Error; its own message is the useful part.
            match e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            {
                Some(tls_error) => explain(tls, tls_error),
                None => super::describe_io(&e),
            }
        })
}

/// rustls's message, with the likely cause where its wording leaves an operator guessing.
fn explain(tls: &TlsProbe, e: &rustls::Error) -> String {
    use rustls::{CertificateError, Error, InvalidMessage};
    let hint = match e {
        Error::InvalidMessage(InvalidMessage::InvalidContentType) => {
            " (the port does not seem to speak TLS)".to_owned()
        }
        Error::InvalidCertificate(CertificateError::UnknownIssuer) => match &tls.ca_file {
            Some(path) => format!(" (not signed by a CA in {})", path.display()),
            None => " (not signed by a CA in the system's store; set ca_file)".to_owned(),
        },
        _ => String::new(),
    };
    format!("{e}{hint}")
}

/// `insecure_skip_verify`: any certificate for any name. The handshake signatures are still
/// verified, so the peer does hold the key of the certificate it sent.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_name_falls_back_from_config_to_host_to_address() {
        let target: SocketAddr = "10.0.0.2:443".parse().unwrap();
        let probe =
            |name: Option<&str>| TlsProbe::new(name.map(str::to_owned), None, true).unwrap();
        let name = |p: &TlsProbe, host: &str| format!("{:?}", server_name(p, host, target));
        let dns = |n: &str| format!("{:?}", ServerName::try_from(n.to_owned()).unwrap());
        assert_eq!(
            name(&probe(Some("api.test")), "other.test"),
            dns("api.test")
        );
        assert_eq!(name(&probe(None), "www.test:8443"), dns("www.test"));
        assert_eq!(name(&probe(None), "www.test"), dns("www.test"));
        assert_eq!(name(&probe(None), "[::1]:443"), dns("::1"));
        assert_eq!(name(&probe(None), "10.0.0.2:443"), dns("10.0.0.2"));
        assert_eq!(name(&probe(None), "bad host!"), dns("10.0.0.2"));
    }

    #[test]
    fn bad_settings_are_reported_when_built() {
        assert!(TlsProbe::new(Some("no spaces allowed".into()), None, true)
            .unwrap_err()
            .contains("neither a DNS name nor an IP address"));
        assert_eq!(
            TlsProbe::new(None, Some("/x.pem".into()), true).unwrap_err(),
            "ca_file and insecure_skip_verify exclude each other"
        );
        let err = TlsProbe::new(None, Some("/nonexistent/ca.pem".into()), false).unwrap_err();
        assert!(err.starts_with("CA file /nonexistent/ca.pem: "), "{err}");
        let empty = std::env::temp_dir().join(format!("lbd-empty-ca-{}.pem", std::process::id()));
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = TlsProbe::new(None, Some(empty.clone()), false).unwrap_err();
        std::fs::remove_file(&empty).unwrap();
        assert!(err.ends_with("no PEM certificate in it"), "{err}");
    }
}
