//! The client side: real TCP connections and UDP flows from inside the client namespace,
//! each answered by whichever backend the load balancer picked.
//!
//! Every connection or flow keeps its socket open until the whole run ends, so each one has
//! its own source port for the run: the balancer hashes the source port, and a reused port
//! would silently repeat an earlier pick.
//!
//! Source ports are the kernel's choice by default, as for a real client, which makes the
//! spread over backends random from run to run. [`SourcePorts::From`] fixes them, so a
//! test asserting on the spread gets the same one every run.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket},
    time::Duration,
};

use anyhow::{anyhow, bail, Context as _, Result};
use socket2::{Domain, Protocol, Socket, Type};

use crate::netns;

/// UDP sends per datagram before giving up; the lab does not lose packets, so a retry is
/// worth a message on stderr.
const UDP_ATTEMPTS: u32 = 3;

/// Which source port each connection or flow uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SourcePorts {
    /// Chosen by the kernel.
    #[default]
    Ephemeral,
    /// Connection or flow `i` uses port `first + i`.
    From(u16),
}

impl SourcePorts {
    fn port(self, i: usize) -> Result<u16> {
        match self {
            SourcePorts::Ephemeral => Ok(0),
            SourcePorts::From(first) => u16::try_from(i)
                .ok()
                .and_then(|i| first.checked_add(i))
                .ok_or_else(|| anyhow!("source port {first} + {i} is past 65535")),
        }
    }
}

/// Opens `n_conns` TCP connections from `ns` to `addr` and sends `requests_per_conn` lines
/// on each. Each element is the name of the backend that answered that connection, or why
/// it failed, including answers from more than one backend on one connection.
/// `timeout` bounds every connect, write and read.
pub fn tcp_requests(
    ns: &str,
    addr: SocketAddr,
    ports: SourcePorts,
    n_conns: usize,
    requests_per_conn: usize,
    timeout: Duration,
) -> Vec<Result<String>> {
    let run = netns::run_in(ns, || {
        let mut open = Vec::with_capacity(n_conns);
        let results = (0..n_conns)
            .map(|i| {
                let conn = ports
                    .port(i)
                    .and_then(|port| tcp_conn(addr, port, i, requests_per_conn, timeout));
                conn.map(|(name, stream)| {
                    open.push(stream);
                    name
                })
            })
            .collect::<Vec<_>>();
        drop(open);
        Ok(results)
    });
    run.unwrap_or_else(|e| fail_all(n_conns, &e))
}

fn tcp_conn(
    addr: SocketAddr,
    source_port: u16,
    conn: usize,
    requests: usize,
    timeout: Duration,
) -> Result<(String, TcpStream)> {
    let stream = tcp_connect(addr, source_port, timeout)
        .with_context(|| format!("connection {conn}: connect to {addr} from port {source_port}"))?;
    let port = stream.local_addr()?.port();
    let ctx = || format!("connection {conn} (source port {port}) to {addr}");
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut backend: Option<String> = None;
    for i in 0..requests {
        writer
            .write_all(format!("conn {conn} request {i}\n").as_bytes())
            .with_context(|| format!("{}: sending request {i}", ctx()))?;
        let mut line = String::new();
        let n = reader
            .read_line(&mut line)
            .with_context(|| format!("{}: reading answer {i}", ctx()))?;
        if n == 0 {
            bail!("{}: closed before answering request {i}", ctx());
        }
        backend = Some(same_backend(backend, line.trim(), &ctx)?);
    }
    let name = backend.ok_or_else(|| anyhow!("{}: no requests sent", ctx()))?;
    Ok((name, reader.into_inner()))
}

/// Connects to `addr` from `source_port` (0: the kernel's choice). Call it in the client's
/// namespace (see `netns::run_in`); the socket stays there.
pub fn tcp_connect(addr: SocketAddr, source_port: u16, timeout: Duration) -> Result<TcpStream> {
    if source_port == 0 {
        return Ok(TcpStream::connect_timeout(&addr, timeout)?);
    }
    // std cannot bind before connecting.
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.bind(&SocketAddr::from((unspecified(addr), source_port)).into())?;
    sock.connect_timeout(&addr.into(), timeout)?;
    Ok(sock.into())
}

/// Sends `datagrams_per_flow` datagrams on each of `n_flows` UDP flows (one socket, so one
/// source port, per flow) from `ns` to `addr`. Each element is the backend that answered
/// every datagram of that flow, or why not. `timeout` bounds each wait for a reply; a lost
/// datagram is sent again, up to three times.
pub fn udp_requests(
    ns: &str,
    addr: SocketAddr,
    ports: SourcePorts,
    n_flows: usize,
    datagrams_per_flow: usize,
    timeout: Duration,
) -> Vec<Result<String>> {
    let run = netns::run_in(ns, || {
        let mut open = Vec::with_capacity(n_flows);
        let results = (0..n_flows)
            .map(|i| {
                let flow = ports
                    .port(i)
                    .and_then(|port| udp_flow(addr, port, i, datagrams_per_flow, timeout));
                flow.map(|(name, sock)| {
                    open.push(sock);
                    name
                })
            })
            .collect::<Vec<_>>();
        drop(open);
        Ok(results)
    });
    run.unwrap_or_else(|e| fail_all(n_flows, &e))
}

fn udp_flow(
    addr: SocketAddr,
    source_port: u16,
    flow: usize,
    datagrams: usize,
    timeout: Duration,
) -> Result<(String, UdpSocket)> {
    let sock = UdpSocket::bind((unspecified(addr), source_port))
        .with_context(|| format!("flow {flow}: binding port {source_port}"))?;
    // Connected, so the kernel drops any reply not from `addr`: an answer from a backend's
    // own address instead of the VIP counts as lost, as it would for a real client.
    sock.connect(addr)?;
    sock.set_read_timeout(Some(timeout))?;
    let port = sock.local_addr()?.port();
    let ctx = || format!("flow {flow} (source port {port}) to {addr}");
    let mut backend: Option<String> = None;
    let mut buf = [0u8; 512];
    for i in 0..datagrams {
        let request = format!("flow {flow} datagram {i}\n");
        let mut answer = None;
        for attempt in 1..=UDP_ATTEMPTS {
            sock.send(request.as_bytes())
                .with_context(|| format!("{}: sending datagram {i}", ctx()))?;
            match sock.recv(&mut buf) {
                Ok(n) => {
                    answer = Some(String::from_utf8_lossy(&buf[..n]).trim().to_owned());
                    break;
                }
                Err(e) => eprintln!(
                    "lab client: {}: datagram {i}, attempt {attempt}/{UDP_ATTEMPTS}: {e}",
                    ctx()
                ),
            }
        }
        let answer = answer.ok_or_else(|| {
            anyhow!(
                "{}: no answer to datagram {i} after {UDP_ATTEMPTS} tries",
                ctx()
            )
        })?;
        backend = Some(same_backend(backend, &answer, &ctx)?);
    }
    let name = backend.ok_or_else(|| anyhow!("{}: no datagrams sent", ctx()))?;
    Ok((name, sock))
}

/// The wildcard address of `addr`'s family.
fn unspecified(addr: SocketAddr) -> std::net::IpAddr {
    match addr {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
    }
}

fn same_backend(seen: Option<String>, answer: &str, ctx: &dyn Fn() -> String) -> Result<String> {
    if answer.is_empty() {
        bail!("{}: empty answer", ctx());
    }
    match seen {
        Some(prev) if prev != answer => {
            bail!("{}: answered by {prev} and then by {answer}", ctx())
        }
        _ => Ok(answer.to_owned()),
    }
}

fn fail_all(n: usize, e: &anyhow::Error) -> Vec<Result<String>> {
    (0..n).map(|_| Err(anyhow!("{e:#}"))).collect()
}

/// How many connections or flows each backend answered; panics naming every failure.
pub fn shares(what: &str, results: &[Result<String>]) -> std::collections::BTreeMap<String, usize> {
    let failed: Vec<_> = results
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.as_ref().err().map(|e| format!("#{i}: {e:#}")))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} {what} failed:\n{}",
        failed.len(),
        results.len(),
        failed.join("\n")
    );
    let mut share = std::collections::BTreeMap::new();
    for name in results.iter().flatten() {
        *share.entry(name.clone()).or_default() += 1;
    }
    share
}

/// A connection held open across a test, and the backend that answered it first.
pub type LongLived = (BufReader<TcpStream>, String);

/// One request on an open connection: sends a line, returns the answering backend's name.
pub fn ask(conn: &mut BufReader<TcpStream>) -> std::io::Result<String> {
    conn.get_mut().write_all(b"ping\n")?;
    let mut line = String::new();
    if conn.read_line(&mut line)? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(line.trim().to_owned())
}

/// Opens `n` connections to `addr` from `ns`, from source ports `first_port..` (choose them
/// below the kernel's ephemeral range, so closing them cannot leave a TIME_WAIT on a port a
/// later fixed-port connection wants), each asked once for its backend. The sockets stay in
/// `ns`; any thread may use them afterwards.
pub fn long_lived(
    ns: &str,
    addr: SocketAddr,
    n: u16,
    first_port: u16,
    timeout: Duration,
) -> Result<Vec<LongLived>> {
    netns::run_in(ns, || {
        (0..n)
            .map(|i| {
                let socket = tcp_connect(addr, first_port + i, timeout)?;
                socket.set_read_timeout(Some(timeout))?;
                let mut conn = BufReader::new(socket);
                let name = ask(&mut conn)
                    .with_context(|| format!("first request on long-lived connection {i}"))?;
                Ok((conn, name))
            })
            .collect()
    })
}

/// `GET path` over HTTP/1.1 from inside `ns`; the status code and body. For the agent's
/// `/metrics` endpoint, which answers with a length and closes.
pub fn http_get(
    ns: &str,
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<(u16, String)> {
    use std::io::Read as _;
    netns::run_in(ns, || {
        let mut conn = TcpStream::connect_timeout(&addr, timeout)
            .with_context(|| format!("connecting to {addr} in {ns}"))?;
        conn.set_read_timeout(Some(timeout))?;
        write!(
            conn,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )?;
        let mut raw = Vec::new();
        conn.read_to_end(&mut raw)
            .with_context(|| format!("reading the answer of {addr}{path}"))?;
        let text = String::from_utf8(raw).context("answer is not UTF-8")?;
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| anyhow!("no end of head in {text:?}"))?;
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| anyhow!("no status in {head:?}"))?;
        Ok((status, body.to_owned()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_source_ports_count_up_and_stop_at_65535() {
        assert_eq!(SourcePorts::Ephemeral.port(7).unwrap(), 0);
        assert_eq!(SourcePorts::From(40_000).port(0).unwrap(), 40_000);
        assert_eq!(SourcePorts::From(40_000).port(299).unwrap(), 40_299);
        assert!(SourcePorts::From(65_000).port(536).is_err());
    }
}
