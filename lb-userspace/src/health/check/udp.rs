//! UDP: one datagram out, one reply expected. The socket is connected, so an ICMP port
//! unreachable from the backend fails the check at once instead of at the timeout, and
//! datagrams from anyone else are not taken for the reply.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::net::UdpSocket;

use super::{describe_io, tcp::check_family, CheckError, ErrorKind, Progress, Stage, UdpProbe};

pub(super) async fn probe(
    p: &UdpProbe,
    target: SocketAddr,
    source: Option<IpAddr>,
    progress: &Progress,
) -> Result<(), CheckError> {
    let fail =
        |kind, detail: String| CheckError::new(kind, format!("UDP probe of {target}: {detail}"));
    let unspecified = match target {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    if let Some(source) = source {
        check_family(source, target).map_err(|(kind, e)| fail(kind, e))?;
    }
    let local = SocketAddr::new(source.unwrap_or(unspecified), 0);
    let socket = UdpSocket::bind(local).await.map_err(|e| {
        fail(
            ErrorKind::Local,
            format!("cannot bind to {local}: {}", describe_io(&e)),
        )
    })?;
    let refused = |e: std::io::Error| {
        let mut detail = describe_io(&e);
        if e.kind() == std::io::ErrorKind::ConnectionRefused {
            detail.push_str(" (ICMP port unreachable)");
        }
        fail(ErrorKind::Connect, detail)
    };
    socket.connect(target).await.map_err(refused)?;
    socket.send(&p.send).await.map_err(refused)?;
    progress.set(Stage::AwaitingReply);
    let mut reply = vec![0u8; 65_536];
    let n = socket.recv(&mut reply).await.map_err(refused)?;
    let reply = &reply[..n];
    match &p.expect {
        Some(expect) if !expect.is_empty() && !reply.windows(expect.len()).any(|w| w == expect) => {
            Err(fail(
                ErrorKind::Content,
                format!(
                    "reply of {n} bytes does not contain the expected {} bytes {:?}",
                    expect.len(),
                    String::from_utf8_lossy(expect)
                ),
            ))
        }
        _ => Ok(()),
    }
}
