//! Streaming HTTP/1.1 download of an artifact into a file, with progress and hard bounds
//! (size, whole-download deadline). Plain `http://` only for now: the artifact carries its
//! own signature, so transport security adds privacy, not integrity; `https://` arrives
//! with the TLS stack of the MQTT fleet link.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::{Duration, Instant};

use super::artifact::Refusal;

/// Largest response head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Socket timeout for each read (a stalled server), within the overall deadline.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Splits `http://host[:port]/path` into (host, port, path).
pub fn parse_url(url: &str) -> Result<(String, u16, String), Refusal> {
    let bad = |why: &str| Refusal::Io(format!("URL {url}: {why}"));
    if url.starts_with("https://") {
        return Err(bad("https is not supported yet (the artifact is signed: use http:// or a file)"));
    }
    let rest = url.strip_prefix("http://").ok_or_else(|| bad("must start with http://"))?;
    let (authority, path) = rest.split_once('/').map_or((rest, "/".to_string()), |(a, p)| (a, format!("/{p}")));
    if authority.is_empty() || authority.contains('@') {
        return Err(bad("needs a host (and no user info)"));
    }
    // `[v6]:port`, `[v6]`, `host:port`, `host`.
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (h, rest) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
            (h, rest.strip_prefix(':'))
        }
        None => authority.rsplit_once(':').map_or((authority, None), |(h, p)| (h, Some(p))),
    };
    let port = port.map_or(Ok(80), |p| p.parse().map_err(|_| bad("bad port")))?;
    Ok((host.to_string(), port, path))
}

/// Downloads `url` into `dest`, at most `max` bytes, within `timeout`; calls `progress(got,
/// total)` as bytes arrive. Returns the byte count.
pub fn download(url: &str, dest: &Path, max: u64, timeout: Duration, progress: &mut dyn FnMut(u64, Option<u64>)) -> Result<u64, Refusal> {
    let deadline = Instant::now() + timeout;
    let (host, port, path) = parse_url(url)?;
    let io = |what: &str| {
        let what = format!("{what} {url}");
        move |e: std::io::Error| Refusal::io(&what, e)
    };
    let addr = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(io("resolving"))?
        .next()
        .ok_or_else(|| Refusal::Io(format!("resolving {url}: no address")))?;
    let mut stream = TcpStream::connect_timeout(&addr, READ_TIMEOUT.min(timeout)).map_err(io("connecting to"))?;
    stream.set_read_timeout(Some(READ_TIMEOUT)).map_err(io("configuring"))?;
    stream.set_write_timeout(Some(READ_TIMEOUT)).map_err(io("configuring"))?;
    let head = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: doorbell-agent/{}\r\nConnection: close\r\n\r\n", crate::VERSION);
    stream.write_all(head.as_bytes()).map_err(io("requesting"))?;

    let mut reader = BufReader::new(stream);
    // The status line and headers together are read through one limit, so that a line that
    // never ends costs at most MAX_HEAD bytes, not the agent's memory.
    let mut head = (&mut reader).take(MAX_HEAD as u64);
    let too_long = || Refusal::Io(format!("{url}: response headers cut short or over {MAX_HEAD} bytes"));
    let mut status = String::new();
    head.read_line(&mut status).map_err(io("reading the answer of"))?;
    if !status.ends_with('\n') {
        return Err(too_long());
    }
    let code = status.split_whitespace().nth(1).and_then(|c| c.parse::<u16>().ok());
    let mut length = None;
    loop {
        let mut line = String::new();
        head.read_line(&mut line).map_err(io("reading the headers of"))?;
        if !line.ends_with('\n') {
            return Err(too_long());
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            let k = k.trim().to_ascii_lowercase();
            if k == "content-length" {
                length = v.trim().parse::<u64>().ok();
            } else if k == "transfer-encoding" && !v.trim().eq_ignore_ascii_case("identity") {
                return Err(Refusal::Io(format!(
                    "{url}: transfer-encoding {} is not supported (serve the file with a Content-Length)",
                    v.trim()
                )));
            }
        }
    }
    match code {
        Some(200) => {}
        Some(c) => return Err(Refusal::Io(format!("{url}: server answered {c} ({})", status.trim()))),
        None => return Err(Refusal::Io(format!("{url}: not an HTTP answer"))),
    }
    if let Some(len) = length.filter(|&l| l > max) {
        return Err(Refusal::TooLarge { size: len, max });
    }
    let mut file = File::create(dest).map_err(|e| Refusal::io(dest.display(), e))?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0u64;
    progress(0, length);
    loop {
        if Instant::now() > deadline {
            return Err(Refusal::Io(format!("{url}: download not finished within {}", humantime::format_duration(timeout))));
        }
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // A connection that dies midway is a truncated download, said as such below.
            Err(e) if length.is_some() => {
                log::warn!("download of {url} broke off after {got} bytes: {e}");
                break;
            }
            Err(e) => return Err(Refusal::io(format!("downloading {url}"), e)),
        };
        got += n as u64;
        if got > max {
            return Err(Refusal::TooLarge { size: got, max });
        }
        file.write_all(&buf[..n]).map_err(|e| Refusal::io(dest.display(), e))?;
        progress(got, length);
    }
    if let Some(len) = length.filter(|&l| got < l) {
        return Err(Refusal::Truncated { got, expected: len });
    }
    file.flush().map_err(|e| Refusal::io(dest.display(), e))?;
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_that_never_ends_costs_at_most_max_head() {
        use std::net::TcpListener;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
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
        let dir = tempfile::tempdir().unwrap();
        let url = format!("http://127.0.0.1:{port}/a.dbu");
        let err = download(&url, &dir.path().join("a"), 1 << 30, Duration::from_secs(30), &mut |_, _| {}).unwrap_err();
        assert!(err.to_string().contains(&format!("response headers cut short or over {MAX_HEAD} bytes")), "{err}");
        let sent = server.join().unwrap();
        // What the client read (MAX_HEAD) plus what the sockets' buffers held when it hung up.
        assert!(sent < 32 * 1024 * 1024, "the client kept reading: {sent} bytes of one header line");
    }

    #[test]
    fn urls() {
        assert_eq!(parse_url("http://h:8000/a/b.dbu").unwrap(), ("h".into(), 8000, "/a/b.dbu".into()));
        assert_eq!(parse_url("http://[::1]/x").unwrap(), ("::1".into(), 80, "/x".into()));
        assert_eq!(parse_url("http://h").unwrap(), ("h".into(), 80, "/".into()));
        assert_eq!(parse_url("http://[::1]:81/x").unwrap(), ("::1".into(), 81, "/x".into()));
        assert!(parse_url("http://h:x/").is_err());
        assert!(parse_url("https://h/x").is_err());
        assert!(parse_url("ftp://h/x").is_err());
    }
}
