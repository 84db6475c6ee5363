//! The agent's one HTTP/1.1 client: the URL parser, a request over a plain or TLS stream,
//! a response head read within [`MAX_HEAD`] bytes before anything can grow, and a body
//! reader for `Content-Length`, chunked and close-delimited bodies that stops at a deadline.
//! Used by the CLI towards the probe, by slotctl's health check, by the camera snapshot
//! source and by the update download. TLS is the agent's step on top (`doorbell_agent::tls`):
//! this crate links no rustls, and so neither does slotctl.
// Reads bytes from outside the process: no index or slice that can panic.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Largest response head (status line and headers) accepted.
pub const MAX_HEAD: usize = 16 * 1024;
/// Largest chunk-size line or trailer section of a chunked body.
const MAX_CHUNK_LINE: u64 = 4 * 1024;

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP, default port 80.
    Http,
    /// HTTP over TLS, default port 443.
    Https,
}

/// An absolute `http://` or `https://` URL without user info or fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// The scheme.
    pub scheme: Scheme,
    /// Host name or address (an IPv6 address without its brackets).
    pub host: String,
    /// Port, the scheme's default when the URL names none.
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Url {
    /// Parses `http[s]://host[:port][/path]`; the reason names what is wrong.
    pub fn parse(text: &str) -> Result<Url, String> {
        let (scheme, rest) = if let Some(rest) = text.strip_prefix("http://") {
            (Scheme::Http, rest)
        } else if let Some(rest) = text.strip_prefix("https://") {
            (Scheme::Https, rest)
        } else {
            return Err(format!("`{text}` must start with http:// or https://"));
        };
        let rest = rest.split_once('#').map_or(rest, |(r, _)| r);
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], if rest[i..].starts_with('?') { format!("/{}", &rest[i..]) } else { rest[i..].to_string() }),
            None => (rest, "/".to_string()),
        };
        if authority.contains('@') {
            return Err(format!("`{text}`: credentials in the URL are not supported"));
        }
        // `[v6]:port`, `[v6]`, `host:port`, `host`.
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => {
                let (h, after) = v6.split_once(']').ok_or_else(|| format!("`{text}`: unclosed [ in the host"))?;
                if !after.is_empty() && !after.starts_with(':') {
                    return Err(format!("`{text}`: `{after}` after the IPv6 address"));
                }
                (h, after.strip_prefix(':'))
            }
            None => authority.split_once(':').map_or((authority, None), |(h, p)| (h, Some(p))),
        };
        if host.is_empty() {
            return Err(format!("`{text}` needs a host"));
        }
        if host.chars().any(|c| c.is_whitespace() || c.is_control()) || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("`{text}`: spaces or control characters (percent-encode them)"));
        }
        let default = match scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        };
        let port = match port {
            None => default,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => return Err(format!("`{text}`: `{p}` is not a port (1-65535)")),
            },
        };
        Ok(Url { scheme, host: host.to_string(), port, path })
    }

    /// The plain-HTTP URL of `path` on `addr` (the probe on loopback).
    pub fn local(addr: std::net::SocketAddr, path: &str) -> Url {
        Url { scheme: Scheme::Http, host: addr.ip().to_string(), port: addr.port(), path: path.to_string() }
    }

    /// `host[:port]` as the `Host` header wants it (brackets around IPv6, default port left out).
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        match (self.scheme, self.port) {
            (Scheme::Http, 80) | (Scheme::Https, 443) => host,
            (_, port) => format!("{host}:{port}"),
        }
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        write!(f, "{scheme}://{}{}", self.authority(), self.path)
    }
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The host name did not resolve.
    #[error("cannot resolve {host}: {reason}")]
    Resolve {
        /// Host name.
        host: String,
        /// Resolver error.
        reason: String,
    },
    /// No address of the host accepted a connection.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// Socket error.
        source: io::Error,
    },
    /// The TLS handshake failed (certificate, name, protocol): retrying does not help.
    #[error("TLS with {host}: {reason}")]
    Tls {
        /// Server name.
        host: String,
        /// rustls' reason.
        reason: String,
    },
    /// The exchange broke off or timed out.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Socket error.
        source: io::Error,
    },
    /// The answer is not HTTP/1.x as this client reads it.
    #[error("{0}")]
    Protocol(String),
}

impl HttpError {
    /// A network fault a later attempt may not meet (not a refusal by the server or a TLS
    /// verification failure).
    pub fn is_transient(&self) -> bool {
        matches!(self, HttpError::Resolve { .. } | HttpError::Connect { .. } | HttpError::Io { .. })
    }
}

/// A byte stream a request can go over.
pub trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// Connects to the URL's host (every resolved address in turn) with `timeout` for the
/// connect and for each later read and write.
pub fn connect(url: &Url, timeout: Duration) -> Result<TcpStream, HttpError> {
    let addrs = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| HttpError::Resolve { host: url.host.clone(), reason: e.to_string() })?;
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => {
                let io = |source| HttpError::Io { what: "configuring the socket", source };
                stream.set_read_timeout(Some(timeout)).map_err(io)?;
                stream.set_write_timeout(Some(timeout)).map_err(io)?;
                return Ok(stream);
            }
            Err(e) => last = Some(e),
        }
    }
    let source = last.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "the name resolves to no address"));
    Err(HttpError::Connect { addr: url.authority(), source })
}

/// Opens `url` over plain TCP. `https://` is refused here: TLS is the agent's step on top
/// (`doorbell_agent::tls::open`), so that this crate and slotctl link no rustls.
pub fn open_plain(url: &Url, timeout: Duration) -> Result<Box<dyn Stream>, HttpError> {
    match url.scheme {
        Scheme::Http => Ok(Box::new(connect(url, timeout)?)),
        Scheme::Https => Err(HttpError::Protocol(format!("{url}: https is not supported here; use http://"))),
    }
}

/// Sends `method url` with `headers` (an empty body) over `stream` and reads the answer's
/// head. The body is read from the returned [`Response`], which stops at `deadline`.
pub fn send(
    stream: Box<dyn Stream>,
    method: &str,
    url: &Url,
    headers: &[(&str, &str)],
    deadline: Option<Instant>,
) -> Result<Response, HttpError> {
    let mut reader = BufReader::new(stream);
    let mut head = format!(
        "{method} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: doorbell-agent/{}\r\nConnection: close\r\n",
        url.path,
        url.authority(),
        env!("CARGO_PKG_VERSION")
    );
    if method != "GET" && method != "HEAD" {
        head.push_str("Content-Length: 0\r\n");
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let stream = reader.get_mut();
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.flush())
        .map_err(|source| HttpError::Io { what: "sending the request", source })?;
    let raw = read_head(&mut reader)?;
    let head = Head::parse(&raw)?;
    let body = if method == "HEAD" || head.status == 204 || head.status == 304 || (100..200).contains(&head.status) {
        Framing::Length(0)
    } else {
        head.framing()?
    };
    Ok(Response { head, body: Body { reader, framing: body, deadline, chunk_left: 0, done: false } })
}

/// Reads the head through one limit, so that a line that never ends costs at most
/// [`MAX_HEAD`] bytes.
fn read_head(reader: &mut impl BufRead) -> Result<Vec<u8>, HttpError> {
    let mut limited = reader.take(MAX_HEAD as u64);
    let mut raw = Vec::with_capacity(1024);
    loop {
        let start = raw.len();
        let n = limited.read_until(b'\n', &mut raw).map_err(|source| HttpError::Io { what: "reading the answer", source })?;
        if n == 0 || !raw.ends_with(b"\n") {
            return Err(HttpError::Protocol(if raw.len() >= MAX_HEAD {
                format!("response headers over {MAX_HEAD} bytes")
            } else if raw.is_empty() {
                "the server closed the connection without an answer".to_string()
            } else {
                "the answer ends inside its headers".to_string()
            }));
        }
        if raw.get(start..).is_some_and(|line| line == b"\r\n" || line == b"\n") && start > 0 {
            return Ok(raw);
        }
    }
}

/// A response's status line and headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Status code.
    pub status: u16,
    /// Reason phrase.
    pub reason: String,
    /// Headers in order, names lower-cased.
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// Parses a response head (status line, header lines, the empty line).
    pub fn parse(raw: &[u8]) -> Result<Head, HttpError> {
        let bad = |why: String| HttpError::Protocol(format!("not an HTTP answer: {why}"));
        let text = std::str::from_utf8(raw).map_err(|_| bad("headers are not text".into()))?;
        let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        if !version.starts_with("HTTP/1.") {
            return Err(bad(format!("status line {:?}", truncate(status_line))));
        }
        let status = parts
            .next()
            .filter(|c| c.len() == 3)
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| bad(format!("status line {:?}", truncate(status_line))))?;
        let reason = parts.next().unwrap_or_default().to_string();
        let mut headers = Vec::new();
        for line in lines.take_while(|l| !l.is_empty()) {
            let (name, value) = line.split_once(':').ok_or_else(|| bad(format!("header line {:?}", truncate(line))))?;
            if name.is_empty() || name.contains(|c: char| c.is_whitespace()) {
                return Err(bad(format!("header name {:?}", truncate(name))));
            }
            headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
        }
        Ok(Head { status, reason, headers })
    }

    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// `Content-Length`, when given (and valid).
    pub fn content_length(&self) -> Option<u64> {
        self.header("content-length").and_then(|v| v.parse().ok())
    }

    /// How the body ends. Both a chunked encoding and a length, or lengths that disagree,
    /// are refused: a body read two ways is how requests get smuggled.
    fn framing(&self) -> Result<Framing, HttpError> {
        let bad = |why: String| HttpError::Protocol(format!("not an HTTP answer: {why}"));
        let lengths: Vec<&str> = self.headers.iter().filter(|(n, _)| n == "content-length").map(|(_, v)| v.as_str()).collect();
        let length = match lengths.first() {
            None => None,
            Some(first) => {
                let n = first.parse::<u64>().map_err(|_| bad(format!("Content-Length {:?}", truncate(first))))?;
                if lengths.iter().any(|l| l != first) {
                    return Err(bad("Content-Length given twice with different values".into()));
                }
                Some(n)
            }
        };
        match (self.header("transfer-encoding"), length) {
            (Some(te), None) if te.eq_ignore_ascii_case("chunked") => Ok(Framing::Chunked),
            (Some(te), _) if te.eq_ignore_ascii_case("identity") => Ok(length.map_or(Framing::Close, Framing::Length)),
            (Some(te), Some(_)) if te.eq_ignore_ascii_case("chunked") => Err(bad("both Transfer-Encoding and Content-Length".into())),
            (Some(te), _) => Err(HttpError::Protocol(format!("transfer-encoding {:?} is not supported", truncate(te)))),
            (None, Some(n)) => Ok(Framing::Length(n)),
            (None, None) => Ok(Framing::Close),
        }
    }
}

fn truncate(s: &str) -> &str {
    s.char_indices().nth(80).map_or(s, |(i, _)| &s[..i])
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// This many bytes remain.
    Length(u64),
    Chunked,
    /// Until the server closes the connection.
    Close,
}

/// An answer: its head, and its body through [`Read`].
pub struct Response {
    /// Status line and headers.
    pub head: Head,
    body: Body,
}

impl Response {
    /// The whole body, refused past `max` bytes.
    pub fn read_body(mut self, max: u64) -> Result<Vec<u8>, HttpError> {
        let too_large = || HttpError::Protocol(format!("the body is larger than {max} bytes"));
        if matches!(self.body.framing, Framing::Length(n) if n > max) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        (&mut self).take(max + 1).read_to_end(&mut body).map_err(|source| HttpError::Io { what: "reading the body", source })?;
        if body.len() as u64 > max {
            return Err(too_large());
        }
        Ok(body)
    }
}

impl Read for Response {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.body.read(buf)
    }
}

struct Body {
    reader: BufReader<Box<dyn Stream>>,
    framing: Framing,
    deadline: Option<Instant>,
    /// Bytes left in the current chunk.
    chunk_left: u64,
    done: bool,
}

fn invalid(why: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.into())
}

impl Body {
    /// Reads one CRLF-terminated line of a chunked body, bounded.
    fn chunk_line(&mut self) -> io::Result<String> {
        let mut line = Vec::new();
        (&mut self.reader).take(MAX_CHUNK_LINE).read_until(b'\n', &mut line)?;
        if !line.ends_with(b"\n") {
            return Err(if line.len() as u64 >= MAX_CHUNK_LINE {
                invalid("a chunked body's size line is too long")
            } else {
                io::Error::new(io::ErrorKind::UnexpectedEof, "the chunked body ends early")
            });
        }
        String::from_utf8(line).map(|l| l.trim_end().to_string()).map_err(|_| invalid("a chunk size line is not text"))
    }

    /// Moves to the next chunk; false at the last one (its trailers read).
    fn next_chunk(&mut self) -> io::Result<bool> {
        let line = self.chunk_line()?;
        let size = line.split(';').next().unwrap_or_default().trim();
        if size.is_empty() || size.len() > 15 {
            return Err(invalid(format!("bad chunk size {:?}", truncate(size))));
        }
        let n = u64::from_str_radix(size, 16).map_err(|_| invalid(format!("bad chunk size {:?}", truncate(size))))?;
        if n == 0 {
            let mut trailers = 0u64;
            loop {
                let line = self.chunk_line()?;
                trailers += line.len() as u64 + 2;
                if line.is_empty() {
                    return Ok(false);
                }
                if trailers > MAX_CHUNK_LINE {
                    return Err(invalid("a chunked body's trailers are too long"));
                }
            }
        }
        self.chunk_left = n;
        Ok(true)
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.deadline.is_some_and(|d| Instant::now() > d) {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "the answer did not end in time"));
        }
        let want = match self.framing {
            Framing::Length(0) => {
                self.done = true;
                return Ok(0);
            }
            Framing::Length(left) => left,
            Framing::Close => u64::MAX,
            Framing::Chunked => {
                if self.chunk_left == 0 && !self.next_chunk()? {
                    self.done = true;
                    return Ok(0);
                }
                self.chunk_left
            }
        };
        let len = buf.len().min(usize::try_from(want).unwrap_or(usize::MAX));
        let n = match self.reader.read(buf.get_mut(..len).unwrap_or_default()) {
            Ok(n) => n,
            // A TLS peer that closes without close_notify: the end of a close-delimited body.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && self.framing == Framing::Close => 0,
            Err(e) => return Err(e),
        };
        match self.framing {
            Framing::Close if n == 0 => self.done = true,
            _ if n == 0 => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the connection closed before the end of the body")),
            Framing::Length(left) => self.framing = Framing::Length(left - n as u64),
            Framing::Chunked => {
                self.chunk_left -= n as u64;
                if self.chunk_left == 0 {
                    let mut crlf = [0u8; 2];
                    self.reader.read_exact(&mut crlf)?;
                    if &crlf != b"\r\n" {
                        return Err(invalid("a chunk does not end with CRLF"));
                    }
                }
            }
            Framing::Close => {}
        }
        Ok(n)
    }
}

/// One plain-HTTP request with an empty body; the status and the body (at most `max` bytes).
/// `timeout` bounds the connect, each read and the whole answer.
pub fn plain_request(method: &str, url: &Url, timeout: Duration, max: u64) -> Result<(u16, Vec<u8>), HttpError> {
    let deadline = Instant::now() + timeout;
    let stream = open_plain(url, timeout)?;
    let response = send(stream, method, url, &[], Some(deadline))?;
    let status = response.head.status;
    Ok((status, response.read_body(max)?))
}

/// A scripted HTTP server on loopback for tests of this client and of what uses it (the
/// feature `testing`, for dev-dependencies only).
#[cfg(any(test, feature = "testing"))]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
pub mod testing {
    use super::Url;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    /// Serves `connections` connections on loopback, each answered with `answer(request)`
    /// (its head as text); returns the requests it read. Also the agent's download tests' server.
    pub fn serve_with(
        connections: usize,
        mut answer: impl FnMut(&str) -> Vec<u8> + Send + 'static,
    ) -> (Url, std::thread::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = Url::local(listener.local_addr().unwrap(), "/f");
        let server = std::thread::spawn(move || {
            let mut requests = Vec::new();
            for _ in 0..connections {
                let (mut conn, _) = listener.accept().unwrap();
                let mut request = Vec::new();
                let mut byte = [0u8; 1];
                while !request.ends_with(b"\r\n\r\n") && conn.read(&mut byte).unwrap() == 1 {
                    request.push(byte[0]);
                }
                let request = String::from_utf8(request).unwrap();
                let _ = conn.write_all(&answer(&request));
                requests.push(request);
            }
            requests
        });
        (url, server)
    }

    /// What a server of `data` answers a request from byte `from` (`Range: bytes=from-`): a
    /// 206 with its `Content-Range` past byte 0, else a 200 with a strong ETag; the body cut
    /// off after `cut` bytes when given (a connection that breaks).
    pub fn ranged_answer(data: &[u8], from: usize, cut: Option<usize>) -> Vec<u8> {
        let rest = &data[from..];
        let head = if from > 0 {
            format!(
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {from}-{}/{}\r\nContent-Length: {}\r\n\r\n",
                data.len() - 1,
                data.len(),
                rest.len()
            )
        } else {
            format!("HTTP/1.1 200 OK\r\nETag: \"v1\"\r\nContent-Length: {}\r\n\r\n", data.len())
        };
        [head.as_bytes(), &rest[..cut.unwrap_or(rest.len()).min(rest.len())]].concat()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::serve_with;
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn urls() {
        let u = |s| Url::parse(s).unwrap();
        assert_eq!(u("http://h:8000/a/b.dbu"), Url { scheme: Scheme::Http, host: "h".into(), port: 8000, path: "/a/b.dbu".into() });
        assert_eq!(u("https://[::1]/x?y=1#f"), Url { scheme: Scheme::Https, host: "::1".into(), port: 443, path: "/x?y=1".into() });
        assert_eq!(u("http://h"), Url { scheme: Scheme::Http, host: "h".into(), port: 80, path: "/".into() });
        assert_eq!(u("http://h?q").path, "/?q");
        assert_eq!(u("http://[::1]:81/x").authority(), "[::1]:81");
        assert_eq!(u("https://cdn.example/a.dbu").to_string(), "https://cdn.example/a.dbu");
        assert_eq!(u("http://10.0.0.2:8081").to_string(), "http://10.0.0.2:8081/");
        for (bad, why) in [
            ("http://h:x/", "`x` is not a port"),
            ("http://h:0/", "`0` is not a port"),
            ("http://h:70000/", "is not a port"),
            ("http://h:80:81/", "is not a port"),
            ("http://u:p@h/x", "credentials"),
            ("ftp://h/x", "must start with http:// or https://"),
            ("http:///x", "needs a host"),
            ("http://[::1/x", "unclosed ["),
            ("http://[::1]x/", "after the IPv6 address"),
            ("http://h/a b", "spaces"),
        ] {
            let err = Url::parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    /// Serves each of `answers` to one connection in turn; returns the requests it read.
    fn serve(answers: Vec<Vec<u8>>) -> (Url, std::thread::JoinHandle<Vec<String>>) {
        let mut answers = answers.into_iter();
        serve_with(answers.len(), move |_| answers.next().unwrap_or_default())
    }

    fn body_of(answer: &[u8]) -> Result<Vec<u8>, HttpError> {
        let (url, server) = serve(vec![answer.to_vec()]);
        let result = plain_request("GET", &url, Duration::from_secs(5), 1024).map(|(_, b)| b);
        server.join().unwrap();
        result
    }

    #[test]
    fn bodies_by_length_chunks_and_close() {
        assert_eq!(body_of(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloEXTRA").unwrap(), b"hello");
        assert_eq!(
            body_of(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n6\r\n world\r\n0\r\nT: 1\r\n\r\n").unwrap(),
            b"hello world"
        );
        assert_eq!(body_of(b"HTTP/1.0 200 OK\r\n\r\nuntil close").unwrap(), b"until close");
        assert_eq!(body_of(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap(), b"");
    }

    #[test]
    fn malformed_answers_are_named() {
        for (answer, why) in [
            (&b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort"[..], "before the end of the body"),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n0\r\n\r\n", "does not end with CRLF"),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab", "before the end of the body"),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n", "ends early"),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n", "larger than 1024 bytes"),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", "different values"),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\nab", "both Transfer-Encoding"),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nab", "\"gzip\" is not supported"),
            (b"SSH-2.0-OpenSSH\r\n\r\n", "status line"),
            (b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", "header line"),
            (b"HTTP/1.1 200 OK\r\nX: y", "ends inside its headers"),
            (b"", "without an answer"),
        ] {
            let err = body_of(answer).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_err().to_string();
            assert!(err.contains(why), "{:?}: {err}", String::from_utf8_lossy(answer));
        }
        let big_chunk = format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{}\r\n", "1".repeat(5000));
        assert!(body_of(big_chunk.as_bytes()).unwrap_err().to_string().contains("size line is too long"));
    }

    #[test]
    fn a_header_that_never_ends_costs_at_most_max_head() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = Url::local(listener.local_addr().unwrap(), "/a.dbu");
        // The server sends one header line without end, as fast as it can, until the client
        // hangs up; it reports how much it got rid of.
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut request = [0u8; 1024];
            let _ = conn.read(&mut request);
            let mut sent = conn.write(b"HTTP/1.1 200 OK\r\nX-Endless: ").unwrap_or(0);
            let chunk = vec![b'a'; 64 * 1024];
            while sent < 256 * 1024 * 1024 {
                match conn.write(&chunk) {
                    Ok(n) => sent += n,
                    Err(_) => break,
                }
            }
            sent
        });
        let err = plain_request("GET", &url, Duration::from_secs(30), 1024).unwrap_err();
        assert!(err.to_string().contains(&format!("response headers over {MAX_HEAD} bytes")), "{err}");
        drop(err);
        let sent = server.join().unwrap();
        // What the client read (MAX_HEAD) plus what the sockets' buffers held when it hung up.
        assert!(sent < 32 * 1024 * 1024, "the client kept reading: {sent} bytes of one header line");
    }

    #[test]
    fn the_request_names_host_and_closes() {
        let (url, server) = serve(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec()]);
        plain_request("POST", &url, Duration::from_secs(5), 10).unwrap();
        let request = server.join().unwrap().remove(0);
        assert!(request.starts_with(&format!("POST /f HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n", url.port)), "{request}");
        assert!(request.contains("Connection: close\r\n") && request.contains("Content-Length: 0\r\n"), "{request}");
    }
}
