//! The health checkers against real servers on loopback, and the runner end to end.
//!
//! Everything sits in `mod health` so `cargo test -p lb-userspace health` selects it along
//! with the unit tests.

mod health {
    use std::{
        net::{IpAddr, SocketAddr},
        path::PathBuf,
        sync::{Arc, Mutex},
        time::{Duration, Instant},
    };

    use lb_userspace::health::{
        check::{self, ErrorKind, ExecProbe, HttpProbe, TlsProbe, UdpProbe},
        BackendId, CheckSpec, HealthRunner, Initial, Probe, Reason, SchedulerConfig, State,
    };
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::{TcpListener, TcpSocket, TcpStream, UdpSocket},
        task::JoinHandle,
        time::timeout,
    };

    const SHORT: Duration = Duration::from_millis(300);
    const WAIT: Duration = Duration::from_secs(5);

    fn spec(probe: Probe) -> CheckSpec {
        CheckSpec {
            timeout: SHORT,
            ..CheckSpec::new(probe)
        }
    }

    fn http(path: &str) -> HttpProbe {
        HttpProbe::get(path)
    }

    /// A port nothing listens on (bound, then released).
    async fn closed_port() -> SocketAddr {
        TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
    }

    /// Accepts and holds connections; reports each peer's address.
    async fn tcp_server() -> (SocketAddr, Arc<Mutex<Vec<SocketAddr>>>, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let peers = Arc::new(Mutex::new(Vec::new()));
        let seen = peers.clone();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, peer)) = listener.accept().await {
                seen.lock().unwrap().push(peer);
                held.push(stream);
            }
        });
        (addr, peers, task)
    }

    /// Answers every request with `response` (or never answers when `None`), then closes
    /// unless `keep_open`. Reports each request's text.
    async fn http_server(
        response: Option<&'static str>,
        keep_open: bool,
    ) -> (SocketAddr, Arc<Mutex<Vec<String>>>, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move { serve(stream, response, keep_open, seen).await });
            }
        });
        (addr, requests, task)
    }

    async fn serve<S: AsyncReadExt + AsyncWriteExt + Unpin>(
        mut stream: S,
        response: Option<&'static str>,
        keep_open: bool,
        seen: Arc<Mutex<Vec<String>>>,
    ) {
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.ends_with(b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
        seen.lock()
            .unwrap()
            .push(String::from_utf8_lossy(&request).into_owned());
        let Some(response) = response else {
            tokio::time::sleep(Duration::from_secs(60)).await;
            return;
        };
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.flush().await;
        if keep_open {
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        let _ = stream.shutdown().await;
    }

    const OK: &str = "HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\nstatus: healthy";

    // ---- TCP ----

    #[tokio::test]
    async fn tcp_connect_succeeds() {
        let (addr, peers, _server) = tcp_server().await;
        check::run(&spec(Probe::Tcp), addr).await.unwrap();
        // The listener sees the connection; no error means the handshake completed.
        timeout(WAIT, async {
            while peers.lock().unwrap().is_empty() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn tcp_refused() {
        let addr = closed_port().await;
        let err = check::run(&spec(Probe::Tcp), addr).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Connect);
        assert_eq!(
            err.message,
            format!("connect to {addr}: connection refused")
        );
    }

    #[tokio::test]
    async fn tcp_times_out_when_syns_are_dropped() {
        // A listener that never accepts, with a backlog of 0: once its accept queue is full
        // the kernel drops further SYNs, as a firewall that silently drops would.
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(0).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut queued = Vec::new();
        let mut full = false;
        for _ in 0..16 {
            match timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
                Ok(stream) => queued.push(stream.unwrap()),
                Err(_) => {
                    full = true;
                    break;
                }
            }
        }
        assert!(full, "the accept queue never filled");

        let spec = CheckSpec {
            timeout: Duration::from_millis(100),
            ..spec(Probe::Tcp)
        };
        let started = Instant::now();
        let err = check::run(&spec, addr).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Timeout);
        assert_eq!(
            err.message,
            format!("connect to {addr}: timed out after 100ms")
        );
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "{:?}",
            started.elapsed()
        );
        drop(listener);
    }

    #[tokio::test]
    async fn port_override_and_source_address() {
        let (addr, peers, _server) = tcp_server().await;
        let wrong_port = closed_port().await;
        let from_127_0_0_2 = CheckSpec {
            port: Some(addr.port()),
            source_address: Some("127.0.0.2".parse().unwrap()),
            ..spec(Probe::Tcp)
        };
        check::run(&from_127_0_0_2, wrong_port).await.unwrap();
        timeout(WAIT, async {
            loop {
                if let Some(peer) = peers.lock().unwrap().first() {
                    assert_eq!(peer.ip(), "127.0.0.2".parse::<IpAddr>().unwrap());
                    return;
                }
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();

        let v6_source = CheckSpec {
            source_address: Some("::1".parse().unwrap()),
            ..self::spec(Probe::Tcp)
        };
        let err = check::run(&v6_source, addr).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Local);
        assert_eq!(
            err.message,
            format!("connect to {addr}: source address ::1 and target {addr} are of different address families")
        );
    }

    // ---- HTTP ----

    #[tokio::test]
    async fn http_200_passes_and_sends_a_proper_request() {
        let (addr, requests, _server) = http_server(Some(OK), false).await;
        let probe = HttpProbe {
            expect_body: Some("healthy".into()),
            ..http("/healthz?deep=1")
        };
        check::run(&spec(Probe::Http(probe)), addr).await.unwrap();
        let request = requests.lock().unwrap()[0].clone();
        assert!(
            request.starts_with("GET /healthz?deep=1 HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(
            request.contains(&format!("\r\nHost: {addr}\r\n")),
            "{request}"
        );
        assert!(request.contains("\r\nConnection: close\r\n"), "{request}");

        let probe = HttpProbe {
            host: Some("api.example".into()),
            ..http("/")
        };
        check::run(&spec(Probe::Http(probe)), addr).await.unwrap();
        assert!(requests.lock().unwrap()[1].contains("\r\nHost: api.example\r\n"));
    }

    #[tokio::test]
    async fn http_503_fails_with_the_status() {
        let (addr, _, _server) = http_server(
            Some("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"),
            false,
        )
        .await;
        let err = check::run(&spec(Probe::Http(http("/health"))), addr)
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Status);
        assert_eq!(
            err.message,
            format!(
                "GET http://{addr}/health: HTTP status 503 (Service Unavailable), expected 200"
            )
        );
        let probe = HttpProbe {
            expect_status: vec![200, 503],
            ..http("/health")
        };
        check::run(&spec(Probe::Http(probe)), addr).await.unwrap();
    }

    #[tokio::test]
    async fn http_body_mismatch_fails() {
        let (addr, _, _server) = http_server(Some(OK), false).await;
        let probe = HttpProbe {
            expect_body: Some("ready".into()),
            ..http("/")
        };
        let err = check::run(&spec(Probe::Http(probe)), addr)
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Content);
        assert_eq!(
            err.message,
            format!("GET http://{addr}/: body does not contain \"ready\" (searched 15 bytes)")
        );
    }

    #[tokio::test]
    async fn http_chunked_body_is_decoded() {
        // "healthy" split over two chunks: only a decoded body contains it.
        let (addr, _, _server) = http_server(
            Some("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nheal\r\n3\r\nthy\r\n0\r\n\r\n"),
            true,
        )
        .await;
        let probe = HttpProbe {
            expect_body: Some("healthy".into()),
            ..http("/")
        };
        let started = Instant::now();
        check::run(&spec(Probe::Http(probe)), addr).await.unwrap();
        assert!(
            started.elapsed() < SHORT,
            "waited for a close the framing made unnecessary"
        );
    }

    #[tokio::test]
    async fn http_server_that_keeps_the_connection_open_still_passes() {
        let (addr, _, _server) = http_server(Some(OK), true).await;
        let probe = HttpProbe {
            expect_body: Some("healthy".into()),
            ..http("/")
        };
        let started = Instant::now();
        check::run(&spec(Probe::Http(probe)), addr).await.unwrap();
        assert!(started.elapsed() < SHORT);
    }

    #[tokio::test]
    async fn http_server_that_never_answers_times_out() {
        let (addr, _, _server) = http_server(None, false).await;
        let spec = CheckSpec {
            timeout: Duration::from_millis(100),
            ..spec(Probe::Http(http("/health")))
        };
        let started = Instant::now();
        let err = check::run(&spec, addr).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Timeout);
        assert_eq!(
            err.message,
            format!("GET http://{addr}/health: timed out after 100ms waiting for the response")
        );
        assert!(started.elapsed() < Duration::from_millis(500));
    }

    #[tokio::test]
    async fn http_garbage_and_refusal_are_reported() {
        let (addr, _, _server) = http_server(Some("SSH-2.0-OpenSSH_9.2\r\n\r\n"), false).await;
        let err = check::run(&spec(Probe::Http(http("/"))), addr)
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Protocol);
        assert!(
            err.message
                .starts_with(&format!("GET http://{addr}/: malformed HTTP response")),
            "{err}"
        );

        let closed = closed_port().await;
        let err = check::run(&spec(Probe::Http(http("/"))), closed)
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Connect);
        assert_eq!(
            err.message,
            format!("GET http://{closed}/: connect: connection refused")
        );
    }

    // ---- HTTPS ----

    struct Pki {
        ca_file: PathBuf,
        other_ca_file: PathBuf,
        server: Arc<rustls::ServerConfig>,
    }

    impl Drop for Pki {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.ca_file);
            let _ = std::fs::remove_file(&self.other_ca_file);
        }
    }

    fn ca(name: &str) -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap()
    }

    /// A CA, a certificate it signed for `backend.test`, and an unrelated CA.
    fn pki(tag: &str) -> Pki {
        let authority = ca("lbd test CA");
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["backend.test".to_owned()])
            .unwrap()
            .signed_by(&leaf_key, &*authority)
            .unwrap();
        let dir = std::env::temp_dir();
        let pid = std::process::id();
        let ca_file = dir.join(format!("lbd-health-{tag}-{pid}-ca.pem"));
        let other_ca_file = dir.join(format!("lbd-health-{tag}-{pid}-other-ca.pem"));
        std::fs::write(&ca_file, authority.as_ref().pem()).unwrap();
        std::fs::write(&other_ca_file, ca("someone else's CA").as_ref().pem()).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let chain: Vec<CertificateDer<'static>> = vec![leaf.der().clone()];
        let server = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        Pki {
            ca_file,
            other_ca_file,
            server: Arc::new(server),
        }
    }

    async fn https_server(config: Arc<rustls::ServerConfig>) -> (SocketAddr, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(stream).await {
                        serve(tls, Some(OK), false, Default::default()).await;
                    }
                });
            }
        });
        (addr, task)
    }

    fn https(tls: TlsProbe) -> CheckSpec {
        spec(Probe::Http(HttpProbe {
            expect_body: Some("healthy".into()),
            tls: Some(tls),
            ..http("/")
        }))
    }

    #[tokio::test]
    async fn https_verifies_against_the_ca_file() {
        let pki = pki("ca");
        let (addr, _server) = https_server(pki.server.clone()).await;
        let tls = TlsProbe::new(
            Some("backend.test".into()),
            Some(pki.ca_file.clone()),
            false,
        )
        .unwrap();
        check::run(&https(tls), addr).await.unwrap();

        // The Host header's name serves as the server name when none is configured.
        let tls = TlsProbe::new(None, Some(pki.ca_file.clone()), false).unwrap();
        let mut spec = https(tls);
        if let Probe::Http(h) = &mut spec.probe {
            h.host = Some(format!("backend.test:{}", addr.port()));
        }
        check::run(&spec, addr).await.unwrap();
    }

    #[tokio::test]
    async fn https_wrong_server_name_fails() {
        let pki = pki("name");
        let (addr, _server) = https_server(pki.server.clone()).await;
        let tls =
            TlsProbe::new(Some("other.test".into()), Some(pki.ca_file.clone()), false).unwrap();
        let err = check::run(&https(tls), addr).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Tls);
        assert!(
            err.message.starts_with(&format!(
                "GET https://{addr}/: TLS handshake: invalid peer certificate"
            )),
            "{err}"
        );
        assert!(err.message.contains("other.test"), "{err}");

        // With no name at all, the IP address is checked, and the certificate has none.
        let tls = TlsProbe::new(None, Some(pki.ca_file.clone()), false).unwrap();
        let err = check::run(&https(tls), addr).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Tls, "{err}");
    }

    #[tokio::test]
    async fn https_unknown_issuer_fails() {
        let pki = pki("issuer");
        let (addr, _server) = https_server(pki.server.clone()).await;
        let tls = TlsProbe::new(
            Some("backend.test".into()),
            Some(pki.other_ca_file.clone()),
            false,
        )
        .unwrap();
        let err = check::run(&https(tls), addr).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Tls);
        assert_eq!(
            err.message,
            format!(
                "GET https://{addr}/: TLS handshake: invalid peer certificate: UnknownIssuer \
                 (not signed by a CA in {})",
                pki.other_ca_file.display()
            )
        );
    }

    #[tokio::test]
    async fn https_insecure_skip_verify_accepts_any_certificate() {
        let pki = pki("insecure");
        let (addr, _server) = https_server(pki.server.clone()).await;
        let tls = TlsProbe::new(Some("other.test".into()), None, true).unwrap();
        check::run(&https(tls), addr).await.unwrap();
    }

    #[tokio::test]
    async fn https_against_a_plain_http_server_fails_in_the_handshake() {
        // A plain HTTP server answers a ClientHello with 400 Bad Request, as most do.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _server = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                    .await;
            }
        });
        let tls = TlsProbe::new(None, None, true).unwrap();
        let err = check::run(&https(tls), addr).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Tls, "{err}");
        assert!(
            err.message
                .ends_with("(the port does not seem to speak TLS)"),
            "{err}"
        );

        // One that says nothing at all leaves the check waiting in the handshake.
        let (silent, _, _server) = http_server(Some(OK), false).await;
        let tls = TlsProbe::new(None, None, true).unwrap();
        let spec = CheckSpec {
            timeout: Duration::from_millis(100),
            ..https(tls)
        };
        let err = check::run(&spec, silent).await.unwrap_err();
        assert_eq!(
            err.message,
            format!("GET https://{silent}/: timed out after 100ms during the TLS handshake")
        );
    }

    // ---- UDP ----

    async fn udp_echo(prefix: &'static [u8]) -> (SocketAddr, JoinHandle<()>) {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
                let reply = [prefix, &buf[..n]].concat();
                let _ = socket.send_to(&reply, peer).await;
            }
        });
        (addr, task)
    }

    fn udp(send: &[u8], expect: Option<&[u8]>) -> CheckSpec {
        spec(Probe::Udp(UdpProbe {
            send: send.to_vec(),
            expect: expect.map(<[u8]>::to_vec),
        }))
    }

    #[tokio::test]
    async fn udp_echo_passes_and_wrong_reply_fails() {
        let (addr, _server) = udp_echo(b"pong:").await;
        check::run(&udp(b"ping", None), addr).await.unwrap();
        check::run(&udp(b"ping", Some(b"pong:ping")), addr)
            .await
            .unwrap();
        check::run(&udp(&[0, 1, 2], Some(&[1, 2])), addr)
            .await
            .unwrap();
        let err = check::run(&udp(b"ping", Some(b"PONG")), addr)
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Content);
        assert_eq!(
            err.message,
            format!("UDP probe of {addr}: reply of 9 bytes does not contain the expected 4 bytes \"PONG\"")
        );
    }

    #[tokio::test]
    async fn udp_silence_times_out() {
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap();
        let spec = CheckSpec {
            timeout: Duration::from_millis(100),
            ..udp(b"ping", None)
        };
        let err = check::run(&spec, addr).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Timeout);
        assert_eq!(
            err.message,
            format!("UDP probe of {addr}: no reply within 100ms")
        );
        // The probe did arrive: silence, not loss.
        let mut buf = [0u8; 16];
        let (n, _) = timeout(WAIT, silent.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], b"ping");
    }

    #[tokio::test]
    async fn udp_closed_port_is_refused_at_once() {
        let addr = {
            let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            s.local_addr().unwrap()
        };
        let started = Instant::now();
        let err = check::run(&udp(b"ping", None), addr).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Connect);
        assert_eq!(
            err.message,
            format!("UDP probe of {addr}: connection refused (ICMP port unreachable)")
        );
        assert!(started.elapsed() < SHORT);
    }

    // ---- exec ----

    fn exec(argv: &[&str]) -> CheckSpec {
        spec(Probe::Exec(ExecProbe {
            command: argv.iter().map(|s| s.to_string()).collect(),
        }))
    }

    fn target() -> SocketAddr {
        "127.0.0.1:8080".parse().unwrap()
    }

    #[tokio::test]
    async fn exec_exit_0_passes_and_gets_the_backend_in_its_environment() {
        check::run(&exec(&["/bin/true"]), target()).await.unwrap();
        let script =
            r#"test "$LBD_BACKEND_ADDRESS" = 127.0.0.1 && test "$LBD_BACKEND_PORT" = 8443"#;
        let spec = CheckSpec {
            port: Some(8443),
            ..exec(&["/bin/sh", "-c", script])
        };
        check::run(&spec, target()).await.unwrap();
    }

    #[tokio::test]
    async fn exec_exit_1_fails_with_its_stderr() {
        let err = check::run(
            &exec(&["/bin/sh", "-c", "echo 'db unreachable' >&2; exit 1"]),
            target(),
        )
        .await
        .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Exit);
        assert_eq!(
            err.message,
            "command /bin/sh -c echo 'db unreachable' >&2; exit 1: exited with status 1: db unreachable"
        );
        let err = check::run(&exec(&["/bin/sh", "-c", "kill -9 $$"]), target())
            .await
            .unwrap_err();
        assert_eq!(
            err.message,
            "command /bin/sh -c kill -9 $$: killed by signal 9"
        );
        let err = check::run(&exec(&["/nonexistent/check"]), target())
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Local);
        assert_eq!(
            err.message,
            "command /nonexistent/check: cannot start: not found"
        );
    }

    #[tokio::test]
    async fn exec_timeout_kills_the_command_and_what_it_started() {
        let pid_file =
            std::env::temp_dir().join(format!("lbd-health-exec-{}.pid", std::process::id()));
        let script = format!("sleep 30 & echo $! > {}; wait", pid_file.display());
        let spec = CheckSpec {
            timeout: Duration::from_millis(200),
            ..exec(&["/bin/sh", "-c", &script])
        };
        let started = Instant::now();
        let err = check::run(&spec, target()).await.unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(err.kind, ErrorKind::Timeout);
        assert_eq!(
            err.message,
            format!("command /bin/sh -c {script}: still running after 200ms; killed")
        );

        let pid = std::fs::read_to_string(&pid_file).unwrap();
        std::fs::remove_file(&pid_file).unwrap();
        let stat = format!("/proc/{}/stat", pid.trim());
        // Killed, then reaped by whoever inherited it; a zombie is dead too.
        let gone = timeout(WAIT, async {
            loop {
                match std::fs::read_to_string(&stat) {
                    Err(_) => return,
                    Ok(s)
                        if s.rsplit(')')
                            .next()
                            .is_some_and(|rest| rest.trim_start().starts_with('Z')) =>
                    {
                        return
                    }
                    Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        })
        .await;
        assert!(
            gone.is_ok(),
            "the command's child `sleep 30` survived the timeout"
        );
    }

    // ---- the runner, end to end ----

    /// A backend that goes away is taken down within interval × fall + interval, and comes
    /// back within interval × rise + interval of returning.
    #[tokio::test]
    async fn runner_takes_a_dead_backend_down_and_brings_it_back() {
        // 100 ms rather than less: the bounds below leave one interval of slack for a busy CI.
        let interval = Duration::from_millis(100);
        let (rise, fall) = (2, 3);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accept = |listener: TcpListener| {
            tokio::spawn(async move {
                let mut held = Vec::new();
                while let Ok((s, _)) = listener.accept().await {
                    held.push(s);
                }
            })
        };
        let server = accept(listener);

        let (runner, handle, mut transitions) = HealthRunner::new(SchedulerConfig::default());
        tokio::spawn(runner.run());
        let spec = Arc::new(CheckSpec {
            interval,
            timeout: Duration::from_millis(80),
            rise,
            fall,
            initial: Initial::Down,
            ..CheckSpec::new(Probe::Tcp)
        });
        let id = BackendId(1);
        handle.add_backend(id, addr, spec).unwrap();

        let t = timeout(WAIT, transitions.recv()).await.unwrap().unwrap();
        assert_eq!((t.backend, t.from, t.to), (id, State::Down, State::Up));
        assert_eq!(t.reason, Reason::Passed { successes: rise });

        // The server goes away: connections are refused from now on.
        server.abort();
        let _ = server.await;
        let gone = Instant::now();
        let t = timeout(WAIT, transitions.recv()).await.unwrap().unwrap();
        let took = gone.elapsed();
        assert_eq!((t.from, t.to), (State::Up, State::Down));
        let Reason::Failed { failures, error } = &t.reason else {
            panic!("{t:?}")
        };
        assert_eq!(*failures, fall);
        assert_eq!(
            error.message,
            format!("connect to {addr}: connection refused")
        );
        let limit = interval * (fall + 1);
        assert!(took <= limit, "down after {took:?}, limit {limit:?}");

        let status = handle.snapshot().await.unwrap().remove(0);
        assert_eq!(status.state, State::Down);
        assert!(status.last_failure.is_some_and(|t| t >= gone));
        assert_eq!(status.last_error.unwrap().message, error.message);

        // Back on the same port.
        let back = Instant::now();
        let _server = accept(TcpListener::bind(addr).await.unwrap());
        let t = timeout(WAIT, transitions.recv()).await.unwrap().unwrap();
        let took = back.elapsed();
        assert_eq!((t.from, t.to), (State::Down, State::Up));
        let limit = interval * (rise + 1);
        assert!(took <= limit, "up after {took:?}, limit {limit:?}");
    }

    /// The same with a backend that hangs instead of refusing: its checks fail by timeout,
    /// and it still goes down within interval × fall + interval.
    #[tokio::test]
    async fn runner_takes_a_hanging_backend_down() {
        let interval = Duration::from_millis(100);
        let fall = 2;
        let healthy = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let answer = healthy.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let ok = answer.load(std::sync::atomic::Ordering::SeqCst);
                let response = if ok { Some(OK) } else { None };
                tokio::spawn(serve(stream, response, false, Default::default()));
            }
        });

        let (runner, handle, mut transitions) = HealthRunner::new(SchedulerConfig::default());
        tokio::spawn(runner.run());
        let spec = Arc::new(CheckSpec {
            interval,
            timeout: Duration::from_millis(60),
            rise: 1,
            fall,
            initial: Initial::Down,
            ..CheckSpec::new(Probe::Http(http("/health")))
        });
        handle.add_backend(BackendId(2), addr, spec).unwrap();
        let t = timeout(WAIT, transitions.recv()).await.unwrap().unwrap();
        assert_eq!(t.to, State::Up);

        healthy.store(false, std::sync::atomic::Ordering::SeqCst);
        let hung = Instant::now();
        let t = timeout(WAIT, transitions.recv()).await.unwrap().unwrap();
        let took = hung.elapsed();
        assert_eq!((t.from, t.to), (State::Up, State::Down));
        let Reason::Failed { failures, error } = &t.reason else {
            panic!("{t:?}")
        };
        assert_eq!(*failures, fall);
        assert_eq!(error.kind, ErrorKind::Timeout);
        assert_eq!(
            error.message,
            format!("GET http://{addr}/health: timed out after 60ms waiting for the response")
        );
        let limit = interval * (fall + 1);
        assert!(took <= limit, "down after {took:?}, limit {limit:?}");
    }
}
