//! HTTP/1.1 GET, plain or over TLS. One request per connection (`Connection: close`); the
//! response head is parsed by httparse, and the body is read only when `expect_body` asks
//! for it, honouring Content-Length and chunked framing so a server that keeps the
//! connection open anyway does not run the check into its timeout.

use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{describe_io, tcp, tls, CheckError, ErrorKind, HttpProbe, Progress, Stage};

/// How much of a body `expect_body` is searched in. Health endpoints are small; a backend
/// that streams megabytes should not cost the checker megabytes.
pub const MAX_BODY: usize = 64 * 1024;
/// Response heads larger than this are rejected as malformed.
const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;

/// `GET http://10.0.0.2:80/health`, how checks name themselves in messages.
pub(super) fn describe(p: &HttpProbe, target: SocketAddr) -> String {
    let scheme = if p.tls.is_some() { "https" } else { "http" };
    format!("GET {scheme}://{target}{}", p.path)
}

pub(super) async fn probe(
    p: &HttpProbe,
    target: SocketAddr,
    source: Option<IpAddr>,
    progress: &Progress,
) -> Result<(), CheckError> {
    let what = describe(p, target);
    let fail = |kind, detail: String| CheckError::new(kind, format!("{what}: {detail}"));
    progress.set(Stage::Connecting);
    let stream = tcp::connect(target, source)
        .await
        .map_err(|(kind, e)| fail(kind, format!("connect: {e}")))?;
    let host = p.host.clone().unwrap_or_else(|| target.to_string());
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: lbd-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        p.path
    );
    let outcome = match &p.tls {
        None => exchange(stream, request.as_bytes(), p, progress).await,
        Some(tls) => {
            progress.set(Stage::TlsHandshake);
            let stream = tls::handshake(tls, &host, target, stream)
                .await
                .map_err(|e| fail(ErrorKind::Tls, format!("TLS handshake: {e}")))?;
            exchange(stream, request.as_bytes(), p, progress).await
        }
    };
    outcome.map_err(|(kind, detail)| fail(kind, detail))
}

type Failure = (ErrorKind, String);

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &[u8],
    p: &HttpProbe,
    progress: &Progress,
) -> Result<(), Failure> {
    let io = |doing: &str, e: std::io::Error| {
        (ErrorKind::Connect, format!("{doing}: {}", describe_io(&e)))
    };
    stream
        .write_all(request)
        .await
        .map_err(|e| io("sending the request", e))?;
    stream
        .flush()
        .await
        .map_err(|e| io("sending the request", e))?;
    progress.set(Stage::AwaitingReply);

    let mut buf = Vec::with_capacity(4096);
    let head = loop {
        match parse_head(&buf)? {
            Some(head) if head.informational() => {
                buf.drain(..head.len);
            }
            Some(head) => break head,
            None => {
                if buf.len() >= MAX_HEAD {
                    return Err((
                        ErrorKind::Protocol,
                        format!("response head larger than {MAX_HEAD} bytes"),
                    ));
                }
                if read_some(&mut stream, &mut buf)
                    .await
                    .map_err(|e| io("reading the response", e))?
                    == 0
                {
                    return Err((
                        ErrorKind::Protocol,
                        match buf.len() {
                            0 => "connection closed without a response".to_owned(),
                            n => format!(
                                "connection closed after {n} bytes of an incomplete response head"
                            ),
                        },
                    ));
                }
            }
        }
    };

    if !p.expect_status.contains(&head.status) {
        return Err((
            ErrorKind::Status,
            format!(
                "HTTP status {}{}, expected {}",
                head.status,
                match head.reason.trim() {
                    "" => String::new(),
                    r => format!(" ({r})"),
                },
                list(&p.expect_status)
            ),
        ));
    }
    let Some(needle) = &p.expect_body else {
        return Ok(());
    };
    progress.set(Stage::ReadingBody);
    buf.drain(..head.len);
    let body = read_body(&mut stream, buf, head.framing).await?;
    if !contains(&body, needle.as_bytes()) {
        return Err((
            ErrorKind::Content,
            format!(
                "body does not contain {needle:?} (searched {} bytes{})",
                body.len(),
                if body.len() >= MAX_BODY {
                    ", the limit"
                } else {
                    ""
                }
            ),
        ));
    }
    Ok(())
}

#[derive(Debug)]
struct Head {
    status: u16,
    reason: String,
    framing: Framing,
    /// Bytes of the head, blank line included.
    len: usize,
}

impl Head {
    /// 1xx responses (other than 101) precede the real one.
    fn informational(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(usize),
    Chunked,
    UntilClose,
}

fn parse_head(buf: &[u8]) -> Result<Option<Head>, Failure> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err((ErrorKind::Protocol, format!("malformed HTTP response: {e}"))),
    };
    let status = response.code.unwrap_or_default();
    let mut framing = Framing::UntilClose;
    if (100..200).contains(&status) || status == 204 || status == 304 {
        framing = Framing::Empty;
    } else {
        for h in response.headers.iter() {
            let value = String::from_utf8_lossy(h.value);
            if h.name.eq_ignore_ascii_case("transfer-encoding") {
                // Chunked is always the last coding when present (RFC 9112 §6.1).
                if value
                    .rsplit(',')
                    .next()
                    .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"))
                {
                    framing = Framing::Chunked;
                    break;
                }
            } else if h.name.eq_ignore_ascii_case("content-length") {
                let n = value.trim().parse().map_err(|_| {
                    (
                        ErrorKind::Protocol,
                        format!("malformed Content-Length {value:?}"),
                    )
                })?;
                framing = Framing::Length(n);
            }
        }
    }
    Ok(Some(Head {
        status,
        reason: response.reason.unwrap_or_default().to_owned(),
        framing,
        len,
    }))
}

/// Reads the body (the first [`MAX_BODY`] bytes of it) after `raw`, the bytes already read
/// past the head.
async fn read_body<S: AsyncRead + Unpin>(
    stream: &mut S,
    mut raw: Vec<u8>,
    framing: Framing,
) -> Result<Vec<u8>, Failure> {
    loop {
        match framing {
            Framing::Empty => return Ok(Vec::new()),
            Framing::Length(n) if raw.len() >= n.min(MAX_BODY) => {
                raw.truncate(n.min(MAX_BODY));
                return Ok(raw);
            }
            Framing::UntilClose if raw.len() >= MAX_BODY => {
                raw.truncate(MAX_BODY);
                return Ok(raw);
            }
            Framing::Chunked => {
                if let Some(body) = dechunk(&raw)? {
                    return Ok(body);
                }
                // Chunk framing is small; this much raw means a pathological sender.
                if raw.len() > 4 * MAX_BODY {
                    return Err((
                        ErrorKind::Protocol,
                        "chunked body with excessive framing".to_owned(),
                    ));
                }
            }
            _ => {}
        }
        let n = read_some(stream, &mut raw).await.map_err(|e| {
            (
                ErrorKind::Connect,
                format!("reading the body: {}", describe_io(&e)),
            )
        })?;
        if n == 0 {
            return match framing {
                Framing::UntilClose => Ok(raw),
                Framing::Length(n) => Err((
                    ErrorKind::Protocol,
                    format!("connection closed after {} of {n} body bytes", raw.len()),
                )),
                _ => Err((
                    ErrorKind::Protocol,
                    "connection closed within a chunked body".to_owned(),
                )),
            };
        }
    }
}

/// The decoded body once the last chunk (or [`MAX_BODY`] bytes of data) has arrived.
fn dechunk(raw: &[u8]) -> Result<Option<Vec<u8>>, Failure> {
    let malformed = || (ErrorKind::Protocol, "malformed chunked body".to_owned());
    let mut body = Vec::new();
    let mut pos = 0;
    loop {
        let (consumed, size) = match httparse::parse_chunk_size(&raw[pos..]) {
            Ok(httparse::Status::Complete(c)) => c,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(malformed()),
        };
        pos += consumed;
        if size == 0 {
            return Ok(Some(body));
        }
        let size = usize::try_from(size).map_err(|_| malformed())?;
        let available = (raw.len() - pos).min(size);
        body.extend_from_slice(&raw[pos..pos + available]);
        if body.len() >= MAX_BODY {
            body.truncate(MAX_BODY);
            return Ok(Some(body));
        }
        if available < size {
            return Ok(None);
        }
        pos += size;
        match raw.get(pos..pos + 2) {
            None => return Ok(None),
            Some(b"\r\n") => pos += 2,
            Some(_) => return Err(malformed()),
        }
    }
}

/// Appends what one read returns; 0 at end of stream. A TLS peer that closes without
/// close_notify is an end of stream too: the response framing, not TLS, says whether
/// anything is missing.
async fn read_some<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> std::io::Result<usize> {
    let mut chunk = [0u8; 8192];
    match stream.read(&mut chunk).await {
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(n)
        }
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(0),
        Err(e) => Err(e),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

fn list(statuses: &[u16]) -> String {
    match statuses {
        [one] => one.to_string(),
        many => format!(
            "one of {}",
            many.iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_framing() {
        let head = |text: &str| parse_head(text.as_bytes()).unwrap().unwrap();
        assert_eq!(
            head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello").framing,
            Framing::Length(5)
        );
        assert_eq!(
            head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").framing,
            Framing::Chunked
        );
        assert_eq!(head("HTTP/1.0 200 OK\r\n\r\n").framing, Framing::UntilClose);
        assert_eq!(
            head("HTTP/1.1 204 No Content\r\n\r\n").framing,
            Framing::Empty
        );
        assert!(head("HTTP/1.1 100 Continue\r\n\r\n").informational());
        let h = head("HTTP/1.1 503 Service Unavailable\r\n\r\n");
        assert_eq!(
            (h.status, h.reason.as_str(), h.len),
            (503, "Service Unavailable", 36)
        );
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-")
            .unwrap()
            .is_none());
        assert_eq!(
            parse_head(b"SSH-2.0-OpenSSH\r\n\r\n").unwrap_err().0,
            ErrorKind::Protocol
        );
        assert_eq!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n")
                .unwrap_err()
                .1,
            "malformed Content-Length \"x\""
        );
    }

    #[test]
    fn dechunk_waits_for_the_last_chunk() {
        let full = b"4\r\nheal\r\n3;ext=1\r\nthy\r\n0\r\n\r\n";
        assert_eq!(dechunk(full).unwrap().unwrap(), b"healthy");
        for cut in 0..full.len() - 4 {
            assert_eq!(dechunk(&full[..cut]).unwrap(), None, "cut at {cut}");
        }
        assert!(dechunk(b"4\r\nhealXX3\r\n").is_err());
        assert!(dechunk(b"zz\r\n").is_err());
    }

    #[test]
    fn status_lists_read_well() {
        assert_eq!(list(&[200]), "200");
        assert_eq!(list(&[200, 204]), "one of 200, 204");
    }
}
