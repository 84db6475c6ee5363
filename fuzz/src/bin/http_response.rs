//! Answers of an HTTP server to the agent's one HTTP/1.1 client (`doorbell_base::http`: the
//! update download, the camera snapshot source, the probe CLI, slotctl's health check): the
//! status line and headers, read within 16 KiB; then the body as `Content-Length`, chunked
//! (size lines, extensions, trailers) or close-delimited, within the caller's maximum.
//!
//! Input: the bytes the server sends on one connection, which then closes.

use std::io::{Cursor, Read, Write};
use std::time::{Duration, Instant};

use doorbell_base::http::{self, Url};

/// A download's ceiling here is the artifact's size; a smaller one exercises the refusals.
const MAX_BODY: u64 = 64 * 1024;

/// One connection: reads the server's bytes, swallows the request.
struct Connection(Cursor<Vec<u8>>);

impl Read for Connection {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Connection {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn main() {
    let Ok(url) = Url::parse("http://artifacts.example:8080/agent.dbu") else { return };
    afl::fuzz!(|data: &[u8]| {
        let stream = Box::new(Connection(Cursor::new(data.to_vec())));
        let deadline = Instant::now() + Duration::from_secs(1);
        let Ok(response) = http::send(stream, "GET", &url, &[("Range", "bytes=100-")], Some(deadline)) else { return };
        let head = &response.head;
        let _ = (head.status, head.content_length(), head.header("etag"), head.header("content-range"));
        let _ = response.read_body(MAX_BODY);
    });
}
