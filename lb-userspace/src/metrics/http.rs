//! The `/metrics` HTTP endpoint.
//!
//! One route, GET or HEAD, one request per connection, answered with a length and
//! `Connection: close`: that is all a Prometheus scrape needs, and `httparse` (already used
//! by the HTTP health checks) parses the request head, so no HTTP server crate is pulled in.
//! Every step is bounded: the head's size, the time to send it, the connections at once.

use std::{sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::{mpsc, oneshot, Semaphore},
};
use tracing::{debug, warn};

use super::{render, Snapshot, CONTENT_TYPE};

/// A scrape waiting for lbd's loop to gather a snapshot.
pub type Scrape = oneshot::Sender<Result<Snapshot, String>>;

/// Largest request head read; Prometheus sends a few hundred bytes.
const MAX_HEAD: usize = 8 * 1024;
/// Time a client has to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Time lbd's loop has to answer (it walks nothing long: the flow table is walked here).
const GATHER_TIMEOUT: Duration = Duration::from_secs(20);
/// Connections served at once; more are closed unanswered.
const MAX_CONNECTIONS: usize = 16;

/// Accepts connections until the process ends; each scrape is sent to `agent`.
pub async fn serve(listener: TcpListener, agent: mpsc::Sender<Scrape>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    debug!(%peer, "metrics: too many connections, closing this one");
                    continue;
                };
                let agent = agent.clone();
                tokio::spawn(async move {
                    answer(stream, agent).await;
                    drop(permit);
                });
            }
            Err(e) => {
                // Out of file descriptors, typically: wait rather than spin.
                warn!("metrics endpoint: accepting a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn answer(mut stream: TcpStream, agent: mpsc::Sender<Scrape>) {
    let head = tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream)).await;
    let response = match head {
        Err(_) => Response::error(408, "Request Timeout", "no request head within 5 s\n"),
        Ok(Err(e)) => {
            debug!("metrics: reading a request: {e}");
            return;
        }
        Ok(Ok(None)) => Response::error(
            431,
            "Request Header Fields Too Large",
            "request head over 8 KiB\n",
        ),
        Ok(Ok(Some(head))) => match route(&head) {
            Route::Metrics { head_only } => {
                let mut r = scrape(&agent).await;
                r.head_only = head_only;
                r
            }
            Route::NotFound => Response::error(404, "Not Found", "lbd serves /metrics only\n"),
            Route::BadMethod => Response::error(405, "Method Not Allowed", "GET or HEAD only\n"),
            Route::Malformed => Response::error(400, "Bad Request", "malformed request\n"),
        },
    };
    let _ = stream.write_all(&response.bytes()).await;
    let _ = stream.shutdown().await;
}

async fn scrape(agent: &mpsc::Sender<Scrape>) -> Response {
    let (tx, rx) = oneshot::channel();
    if agent.send(tx).await.is_err() {
        return Response::error(503, "Service Unavailable", "lbd is shutting down\n");
    }
    let unavailable = |why: &str| Response::error(503, "Service Unavailable", why);
    let snapshot = match tokio::time::timeout(GATHER_TIMEOUT, rx).await {
        Ok(Ok(Ok(snapshot))) => snapshot.count_flows().await,
        Ok(Ok(Err(e))) => Err(e),
        Ok(Err(_)) => return unavailable("lbd is shutting down\n"),
        Err(_) => return unavailable("lbd did not answer within 20 s\n"),
    };
    match snapshot {
        Ok(snapshot) => Response {
            status: (200, "OK"),
            content_type: CONTENT_TYPE,
            body: render(snapshot).into_bytes(),
            allow: false,
            head_only: false,
        },
        Err(e) => Response::error(500, "Internal Server Error", &format!("{e}\n")),
    }
}

/// Reads up to the end of the request head. `None`: no end within [`MAX_HEAD`] bytes.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(Some(buf));
        }
        if buf.len() > MAX_HEAD {
            return Ok(None);
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics { head_only: bool },
    NotFound,
    BadMethod,
    Malformed,
}

/// What a complete request head asks for.
fn route(head: &[u8]) -> Route {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Route::Malformed,
    }
    let head_only = match req.method {
        Some("GET") => false,
        Some("HEAD") => true,
        _ => return Route::BadMethod,
    };
    let path = req.path.unwrap_or("");
    // Prometheus may add query parameters (`params` in a scrape config); they change nothing.
    match path.split('?').next() {
        Some("/metrics") => Route::Metrics { head_only },
        _ => Route::NotFound,
    }
}

struct Response {
    status: (u16, &'static str),
    content_type: &'static str,
    body: Vec<u8>,
    /// Sends `Allow:` (a 405 must).
    allow: bool,
    head_only: bool,
}

impl Response {
    fn error(code: u16, reason: &'static str, body: &str) -> Response {
        Response {
            status: (code, reason),
            content_type: "text/plain; charset=utf-8",
            body: body.as_bytes().to_vec(),
            allow: code == 405,
            head_only: false,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n{}\r\n",
            self.status.0,
            self.status.1,
            self.content_type,
            self.body.len(),
            if self.allow { "Allow: GET, HEAD\r\n" } else { "" },
        )
        .into_bytes();
        if !self.head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let cases: &[(&[u8], Route)] = &[
            (
                b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
                Route::Metrics { head_only: false },
            ),
            (
                b"GET /metrics?target=a HTTP/1.0\r\n\r\n",
                Route::Metrics { head_only: false },
            ),
            (
                b"HEAD /metrics HTTP/1.1\r\n\r\n",
                Route::Metrics { head_only: true },
            ),
            (b"GET / HTTP/1.1\r\n\r\n", Route::NotFound),
            (b"GET /metricsx HTTP/1.1\r\n\r\n", Route::NotFound),
            (b"POST /metrics HTTP/1.1\r\n\r\n", Route::BadMethod),
            (
                b"GET /metrics HTTP/1.1\r\nbad header\r\n\r\n",
                Route::Malformed,
            ),
            (b"\x00\x01\r\n\r\n", Route::Malformed),
        ];
        for (head, want) in cases {
            assert_eq!(&route(head), want, "{:?}", String::from_utf8_lossy(head));
        }
    }

    #[test]
    fn responses_carry_their_length_and_close() {
        let r = Response::error(405, "Method Not Allowed", "GET or HEAD only\n");
        let text = String::from_utf8(r.bytes()).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{text}"
        );
        assert!(text.contains("Content-Length: 17\r\n"), "{text}");
        assert!(text.contains("Allow: GET, HEAD\r\n"), "{text}");
        assert!(text.contains("Connection: close\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\nGET or HEAD only\n"), "{text}");
        let mut head = Response::error(404, "Not Found", "x\n");
        head.head_only = true;
        assert!(String::from_utf8(head.bytes())
            .unwrap()
            .ends_with("Content-Length: 2\r\nConnection: close\r\n\r\n"));
    }
}
