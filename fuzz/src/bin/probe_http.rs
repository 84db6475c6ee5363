//! HTTP requests to the local probe: bytes from a client, through the vendored, patched
//! tiny_http server with the probe's limits (header size and time, socket timeouts, bounded
//! connections): request line, headers, Content-Length and chunked bodies, Expect, keep-alive
//! and pipelining. The handler reads what the probe's does (method, URL and query, headers)
//! and drains a bounded body as `POST /simulate/press` does.
//!
//! The server listens on an abstract Unix socket of this process (the request parsing is
//! the same as over TCP, and a million connections leave no TIME_WAIT sockets behind). It
//! starts inside the fuzz loop, after AFL's fork server has forked the process.
//!
//! Input: what one client connection sends; the harness then closes its sending side and
//! reads the answers to the end.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tiny_http::{Header, Limits, Method, Request, Response, Server};

/// The probe's body limit (`MAX_BODY`).
const MAX_BODY: u64 = 4096;
/// Shorter than the probe's default timeout (10 s): AFL counts a slower run as a hang.
const TIMEOUT: Duration = Duration::from_millis(500);

fn handle(mut request: Request) {
    let _ = (request.http_version(), request.body_length(), request.secure());
    for header in request.headers() {
        let _ = (header.field.as_str().as_str().len(), header.value.as_str().len());
    }
    let url = request.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let pairs = query.split('&').filter(|p| !p.is_empty()).map(|p| p.split_once('=')).count();
    let code = match (request.method(), path) {
        (Method::Get, "/health" | "/ready" | "/metrics" | "/status" | "/alerts" | "/updates" | "/rings") => 200,
        (Method::Post, "/simulate/press") => {
            let mut sink = Vec::new();
            match request.as_reader().take(MAX_BODY + 1).read_to_end(&mut sink) {
                Ok(n) if n as u64 <= MAX_BODY => 202,
                _ => 413,
            }
        }
        (_, "/health") => 405,
        _ => 404,
    };
    let mut response = Response::from_string(format!("{{\"pairs\":{pairs}}}")).with_status_code(code);
    if let Ok(h) = Header::from_bytes("Content-Type", "application/json") {
        response.add_header(h);
    }
    let _ = request.respond(response);
}

/// Starts the server (once per forked process); the address to connect to.
fn server() -> &'static SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    ADDR.get_or_init(|| {
        let name = format!("doorbell-agent-fuzz-probe-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract socket name");
        let listener = UnixListener::bind_addr(&addr).expect("binding the probe socket");
        // The probe's limits (src/probe.rs), with the shorter timeout.
        let limits = Limits {
            max_connections: 8,
            read_timeout: TIMEOUT,
            write_timeout: TIMEOUT,
            header_deadline: TIMEOUT,
            max_header_bytes: 8 * 1024,
        };
        let server = Arc::new(Server::from_listener_with_limits(listener, None, limits).expect("starting tiny_http"));
        std::thread::Builder::new()
            .name("probe-0".into())
            .spawn(move || {
                while let Ok(request) = server.recv() {
                    handle(request);
                }
            })
            .expect("handler thread");
        addr
    })
}

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Ok(mut conn) = UnixStream::connect_addr(server()) else { return };
        let _ = conn.set_read_timeout(Some(TIMEOUT * 2));
        let _ = conn.set_write_timeout(Some(TIMEOUT * 2));
        let Ok(mut writer) = conn.try_clone() else { return };
        // Written from a thread of its own: a pipelined input's answers could fill the socket
        // buffer while the input is still being written.
        std::thread::scope(|s| {
            s.spawn(move || {
                let _ = writer.write_all(data);
                let _ = writer.shutdown(Shutdown::Write);
            });
            let mut buf = [0u8; 4096];
            while let Ok(1..) = conn.read(&mut buf) {}
        });
    });
}
