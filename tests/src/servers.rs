//! The backends' TCP and UDP servers: threads of the test process whose sockets were opened
//! inside a backend namespace. Each answers every request with the backend's name, so the
//! client learns which backend the load balancer picked, and counts what it served, so a
//! test can check the server side agrees with what the client saw.

use std::{
    io::{self, BufRead as _, BufReader, ErrorKind, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd as _,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use anyhow::{Context as _, Result};

use crate::netns;

/// How often a blocked server thread looks at its stop flag; bounds the teardown time.
const STOP_POLL: Duration = Duration::from_millis(50);

/// What one backend's servers have served so far.
#[derive(Clone, Debug, Default)]
pub struct ServerCounters {
    /// TCP connections accepted.
    pub tcp_connections: Arc<AtomicU64>,
    /// Lines answered over TCP.
    pub tcp_requests: Arc<AtomicU64>,
    /// UDP datagrams answered.
    pub udp_datagrams: Arc<AtomicU64>,
}

impl ServerCounters {
    pub fn tcp_connections(&self) -> u64 {
        self.tcp_connections.load(Ordering::Relaxed)
    }

    pub fn tcp_requests(&self) -> u64 {
        self.tcp_requests.load(Ordering::Relaxed)
    }

    pub fn udp_datagrams(&self) -> u64 {
        self.udp_datagrams.load(Ordering::Relaxed)
    }
}

/// Starts the servers of backend `name` inside `ns`: TCP on `0.0.0.0:port`, UDP on
/// `addr:port` for every address in `udp_addrs`. The threads run until `stop` is set.
///
/// UDP gets one socket per address rather than one on `0.0.0.0` because a reply from a
/// wildcard socket takes the interface address as its source, not the VIP the client
/// sent to, and the client's connected socket would discard it.
pub fn start(
    ns: &str,
    name: &str,
    udp_addrs: &[IpAddr],
    port: u16,
    stop: &Arc<AtomicBool>,
) -> Result<(ServerCounters, Vec<JoinHandle<()>>)> {
    // `[::]` takes IPv4 too (bindv6only is 0), but only where IPv6 is on.
    let any: IpAddr = if udp_addrs.iter().any(IpAddr::is_ipv6) {
        Ipv6Addr::UNSPECIFIED.into()
    } else {
        Ipv4Addr::UNSPECIFIED.into()
    };
    let (listener, udp) = netns::run_in(ns, || {
        let listener = TcpListener::bind((any, port))
            .with_context(|| format!("{name}: binding TCP {any}:{port}"))?;
        let udp = udp_addrs
            .iter()
            .map(|a| {
                UdpSocket::bind((*a, port))
                    .with_context(|| format!("{name}: binding UDP {a}:{port}"))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((listener, udp))
    })?;

    let counters = ServerCounters::default();
    let reply: Arc<[u8]> = format!("{name}\n").into_bytes().into();
    let mut threads = Vec::new();
    {
        let (c, r, s) = (counters.clone(), reply.clone(), stop.clone());
        threads.push(spawn(format!("{name}-tcp"), move || {
            tcp_accept_loop(listener, &c, &r, &s)
        })?);
    }
    for sock in udp {
        let (c, r, s) = (counters.clone(), reply.clone(), stop.clone());
        threads.push(spawn(format!("{name}-udp"), move || {
            udp_loop(&sock, &c, &r, &s)
        })?);
    }
    Ok((counters, threads))
}

fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.clone())
        // A test opens hundreds of connections, each with its own thread; they need little.
        .stack_size(256 * 1024)
        .spawn(f)
        .with_context(|| format!("spawning thread {name}"))
}

fn tcp_accept_loop(
    listener: TcpListener,
    counters: &ServerCounters,
    reply: &Arc<[u8]>,
    stop: &Arc<AtomicBool>,
) {
    if let Err(e) = listener.set_nonblocking(true) {
        eprintln!("lab server: set_nonblocking: {e}");
        return;
    }
    let mut conns: Vec<JoinHandle<()>> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        if !wait_readable(&listener) {
            continue;
        }
        match listener.accept() {
            Ok((stream, _)) => {
                counters.tcp_connections.fetch_add(1, Ordering::Relaxed);
                let (c, r, s) = (counters.clone(), reply.clone(), stop.clone());
                match spawn("lab-tcp-conn".into(), move || {
                    serve_conn(stream, &c, &r, &s)
                }) {
                    Ok(h) => conns.push(h),
                    Err(e) => eprintln!("lab server: {e:#}"),
                }
                conns.retain(|h| !h.is_finished());
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => eprintln!("lab server: accept: {e}"),
        }
    }
    for h in conns {
        let _ = h.join();
    }
}

/// Blocks until the listener has a connection or [`STOP_POLL`] passes.
fn wait_readable(listener: &TcpListener) -> bool {
    let mut pfd = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, and the listener outlives the call.
    let n = unsafe { libc::poll(&mut pfd, 1, STOP_POLL.as_millis() as libc::c_int) };
    n > 0
}

fn serve_conn(stream: TcpStream, counters: &ServerCounters, reply: &[u8], stop: &AtomicBool) {
    if let Err(e) = serve_conn_inner(stream, counters, reply, stop) {
        // Resets are normal when a lab is torn down under a live connection.
        if e.kind() != ErrorKind::ConnectionReset {
            eprintln!("lab server: connection: {e}");
        }
    }
}

fn serve_conn_inner(
    stream: TcpStream,
    counters: &ServerCounters,
    reply: &[u8],
    stop: &AtomicBool,
) -> io::Result<()> {
    stream.set_read_timeout(Some(STOP_POLL))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    // Kept across timeouts: read_until leaves a partial line in it and resumes later.
    let mut line = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => return Ok(()),
            Ok(_) if line.ends_with(b"\n") => {
                counters.tcp_requests.fetch_add(1, Ordering::Relaxed);
                writer.write_all(reply)?;
                line.clear();
            }
            // EOF in the middle of a line.
            Ok(_) => return Ok(()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn udp_loop(sock: &UdpSocket, counters: &ServerCounters, reply: &[u8], stop: &AtomicBool) {
    if let Err(e) = sock.set_read_timeout(Some(STOP_POLL)) {
        eprintln!("lab server: set_read_timeout: {e}");
        return;
    }
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        match sock.recv_from(&mut buf) {
            Ok((_, from)) => {
                counters.udp_datagrams.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = sock.send_to(reply, from) {
                    eprintln!("lab server: udp reply to {from}: {e}");
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => eprintln!("lab server: udp recv: {e}"),
        }
    }
}

/// Sends one small datagram from inside `ns` to `to`, so the bridge learns this
/// namespace's MAC (through its ARP request) before the first balanced packet; until then
/// the bridge floods frames for it to every port, which is harmless but muddles captures.
pub fn announce(ns: &str, to: SocketAddr) -> Result<()> {
    netns::run_in(ns, || {
        let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        s.send_to(b"hello\n", to)
            .with_context(|| format!("announcing {ns} to {to}"))?;
        Ok(())
    })
}
