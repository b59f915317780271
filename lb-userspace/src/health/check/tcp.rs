//! TCP connect, used alone (the TCP check) and as the first step of HTTP checks.

use std::net::{IpAddr, SocketAddr};

use tokio::net::{TcpSocket, TcpStream};

use super::{describe_io, CheckError, ErrorKind};

pub(super) async fn probe(target: SocketAddr, source: Option<IpAddr>) -> Result<(), CheckError> {
    let stream = connect(target, source)
        .await
        .map_err(|(kind, e)| CheckError::new(kind, format!("connect to {target}: {e}")))?;
    // Closed with a reset, as HAProxy's checks do: no FIN exchange, and no TIME_WAIT socket
    // left on this node per check (a thousand backends checked every second would keep
    // 60,000 of them).
    let _ = stream.set_zero_linger();
    Ok(())
}

/// A connection from `source` (any local address when `None`) to `target`. The error says
/// whether the backend refused (`Connect`) or this host could not even try (`Local`).
pub(super) async fn connect(
    target: SocketAddr,
    source: Option<IpAddr>,
) -> Result<TcpStream, (ErrorKind, String)> {
    let socket = match target {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|e| {
        (
            ErrorKind::Local,
            format!("cannot create a socket: {}", describe_io(&e)),
        )
    })?;
    if let Some(source) = source {
        check_family(source, target)?;
        socket.bind(SocketAddr::new(source, 0)).map_err(|e| {
            (
                ErrorKind::Local,
                format!(
                    "cannot bind to source address {source}: {}",
                    describe_io(&e)
                ),
            )
        })?;
    }
    socket
        .connect(target)
        .await
        .map_err(|e| (ErrorKind::Connect, describe_io(&e)))
}

pub(super) fn check_family(source: IpAddr, target: SocketAddr) -> Result<(), (ErrorKind, String)> {
    if source.is_ipv4() != target.is_ipv4() {
        return Err((
            ErrorKind::Local,
            format!(
                "source address {source} and target {target} are of different address families"
            ),
        ));
    }
    Ok(())
}
