//! Download of an artifact into a file over `http://` or `https://` (rustls; the system's
//! roots or `update.ca_file`), within a size bound and a whole-download deadline. A
//! connection that breaks is retried with backoff, and resumed with a `Range` request from
//! the last byte written instead of starting over. Transport security adds privacy: the
//! artifact's signature, checked after the download, is what decides trust.
// Reads bytes from outside the process: no index or slice that can panic.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use doorbell_artifact::Refusal;
use doorbell_base::http::{self, HttpError, Scheme, Url};

/// Socket timeout for the connect and each read (a stalled server), within the deadline.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// First wait before a retry; doubled per attempt up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Checks that `url` is one this module downloads from.
pub fn parse_url(url: &str) -> Result<Url, Refusal> {
    Url::parse(url).map_err(|e| Refusal::Io(format!("URL {e}")))
}

/// What one attempt ended with.
enum Attempt {
    /// The whole file is written.
    Done,
    /// A fault a later attempt may not meet.
    Retry(Refusal),
    /// A refusal no retry changes.
    Fail(Refusal),
}

/// Where a download stands across attempts.
struct Part<'a> {
    url: &'a Url,
    file: File,
    dest: &'a Path,
    max: u64,
    deadline: Instant,
    /// Bytes written so far.
    got: u64,
    /// The whole file's size, when the server said.
    total: Option<u64>,
    /// The strong ETag or Last-Modified of what was written, for `If-Range`.
    validator: Option<String>,
}

/// Downloads `url` into `dest`, at most `max` bytes, within `timeout` (retries included);
/// calls `progress(got, total)` as bytes arrive. Returns the byte count.
pub fn download(
    url: &str,
    dest: &Path,
    max: u64,
    timeout: Duration,
    ca_file: Option<&Path>,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<u64, Refusal> {
    let deadline = Instant::now() + timeout;
    let url = parse_url(url)?;
    let tls = match url.scheme {
        Scheme::Http => None,
        Scheme::Https => Some(crate::tls::client_config(ca_file, None, None, "update.ca_file").map_err(|e| Refusal::Io(e.to_string()))?),
    };
    let file = File::create(dest).map_err(|e| Refusal::io(dest.display(), e))?;
    let mut part = Part { url: &url, file, dest, max, deadline, got: 0, total: None, validator: None };
    let mut backoff = FIRST_BACKOFF;
    let mut attempts = 1;
    loop {
        match part.attempt(tls.clone(), progress) {
            Attempt::Done => break,
            Attempt::Fail(refusal) => return Err(refusal),
            Attempt::Retry(refusal) => {
                if Instant::now() + backoff >= deadline {
                    log::warn!("download of {url}: giving up after {attempts} attempts within {}", humantime::format_duration(timeout));
                    return Err(refusal);
                }
                log::warn!("download of {url}: {refusal}; attempt {} in {}s, from byte {}", attempts + 1, backoff.as_secs(), part.got);
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
                attempts += 1;
            }
        }
    }
    part.file.flush().map_err(|e| Refusal::io(dest.display(), e))?;
    Ok(part.got)
}

impl Part<'_> {
    fn io_refusal(&self, e: HttpError) -> Attempt {
        let refusal = Refusal::Io(format!("{}: {e}", self.url));
        if e.is_transient() {
            Attempt::Retry(refusal)
        } else {
            Attempt::Fail(refusal)
        }
    }

    /// One request: the whole file, or the rest of it from byte `got`.
    fn attempt(&mut self, tls: Option<Arc<rustls::ClientConfig>>, progress: &mut dyn FnMut(u64, Option<u64>)) -> Attempt {
        let range = format!("bytes={}-", self.got);
        let mut headers = vec![("Accept", "application/octet-stream")];
        if self.got > 0 {
            headers.push(("Range", range.as_str()));
            // The rest of the same file, or (when it changed on the server) all of the new one.
            if let Some(v) = &self.validator {
                headers.push(("If-Range", v.as_str()));
            }
        }
        let response = match crate::tls::open(self.url, READ_TIMEOUT.min(self.deadline.saturating_duration_since(Instant::now())), tls)
            .and_then(|stream| http::send(stream, "GET", self.url, &headers, Some(self.deadline)))
        {
            Ok(r) => r,
            Err(e) => return self.io_refusal(e),
        };
        let head = &response.head;
        match head.status {
            200 => {
                if self.got > 0 {
                    log::warn!("download of {}: the server sent the whole file again; starting over", self.url);
                    if let Err(e) = self.file.set_len(0).and_then(|()| self.file.seek(SeekFrom::Start(0)).map(drop)) {
                        return Attempt::Fail(Refusal::io(self.dest.display(), e));
                    }
                    self.got = 0;
                }
                self.total = head.content_length();
                self.validator = head.header("etag").filter(|e| !e.starts_with("W/")).or(head.header("last-modified")).map(String::from);
            }
            206 => match head.header("content-range").and_then(content_range) {
                Some((start, total)) if start == self.got => self.total = total.or(self.total),
                _ => {
                    return Attempt::Fail(Refusal::Io(format!(
                        "{}: asked for the rest from byte {}, the server answered {:?}",
                        self.url,
                        self.got,
                        head.header("content-range").unwrap_or("no Content-Range")
                    )))
                }
            },
            // Asked for the rest of a file that is complete.
            416 if self.got > 0 && self.total == Some(self.got) => return Attempt::Done,
            code => {
                let refusal = Refusal::Io(format!("{}: server answered {code} {}", self.url, head.reason));
                // Overloaded, timed out or behind a failing gateway: worth another try.
                return if matches!(code, 408 | 429 | 500 | 502 | 503 | 504) { Attempt::Retry(refusal) } else { Attempt::Fail(refusal) };
            }
        }
        if let Some(total) = self.total.filter(|&t| t > self.max) {
            return Attempt::Fail(Refusal::TooLarge { size: total, max: self.max });
        }
        self.body(response, progress)
    }

    /// Appends the body to the file.
    fn body(&mut self, mut body: impl Read, progress: &mut dyn FnMut(u64, Option<u64>)) -> Attempt {
        let mut buf = vec![0u8; 64 * 1024];
        progress(self.got, self.total);
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut && Instant::now() > self.deadline => {
                    return Attempt::Fail(Refusal::Io(format!("{}: download not finished in time ({} bytes)", self.url, self.got)))
                }
                Err(e) => {
                    let refusal = match self.total {
                        Some(expected) => Refusal::Truncated { got: self.got, expected },
                        None => Refusal::Io(format!("{}: broke off after {} bytes: {e}", self.url, self.got)),
                    };
                    return Attempt::Retry(refusal);
                }
            };
            self.got += n as u64;
            if self.got > self.max {
                return Attempt::Fail(Refusal::TooLarge { size: self.got, max: self.max });
            }
            if let Err(e) = self.file.write_all(buf.get(..n).unwrap_or_default()) {
                return Attempt::Fail(Refusal::io(self.dest.display(), e));
            }
            progress(self.got, self.total);
        }
        match self.total {
            Some(expected) if self.got < expected => Attempt::Retry(Refusal::Truncated { got: self.got, expected }),
            _ => Attempt::Done,
        }
    }
}

/// `bytes START-END/TOTAL` → (START, TOTAL unless `*`).
fn content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let (range, total) = value.strip_prefix("bytes ")?.split_once('/')?;
    let start = range.split_once('-')?.0.trim().parse().ok()?;
    Some((start, total.trim().parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(content_range("bytes 100-199/200"), Some((100, Some(200))));
        assert_eq!(content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(content_range("bytes */200"), None);
        assert_eq!(content_range("items 1-2/3"), None);
    }

    /// A server of `data` that answers each connection by `script`: `Some(n)` sends only the
    /// first `n` bytes of what was asked for, then hangs up; `None` the whole rest. Honours
    /// `Range: bytes=N-` unless `ranges` is false. Returns the requests; [`ranges`] reads them.
    fn server(data: Vec<u8>, script: Vec<Option<usize>>, ranges: bool) -> (String, std::thread::JoinHandle<Vec<String>>) {
        let mut script = script.into_iter();
        let (url, handle) = doorbell_base::http::testing::serve_with(script.len(), move |request| {
            let cut = script.next().flatten();
            let from = if ranges { range_of(request).map_or(0, |r| r.parse().unwrap()) } else { 0 };
            doorbell_base::http::testing::ranged_answer(&data, from, cut)
        });
        (format!("http://{}:{}/a.dbu", url.host, url.port), handle)
    }

    /// The `Range: bytes=N-` start of a request, as text.
    fn range_of(request: &str) -> Option<String> {
        request.lines().find_map(|l| l.strip_prefix("Range: bytes=")).map(|r| r.trim_end_matches('-').to_string())
    }

    /// The `Range` start of each request a [`server`] read.
    fn ranges(requests: Vec<String>) -> Vec<Option<String>> {
        requests.iter().map(|r| range_of(r)).collect()
    }

    fn data() -> Vec<u8> {
        (0..300_000u32).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn a_cut_download_resumes_from_the_last_byte() {
        let (url, server) = server(data(), vec![Some(100_000), Some(50_000), None], true);
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("a");
        let got = download(&url, &dest, 1 << 20, Duration::from_secs(60), None, &mut |_, _| {}).unwrap();
        assert_eq!(got, 300_000);
        assert_eq!(std::fs::read(&dest).unwrap(), data());
        assert_eq!(ranges(server.join().unwrap()), vec![None, Some("100000".into()), Some("150000".into())]);
    }

    #[test]
    fn a_server_without_ranges_starts_over() {
        let (url, server) = server(data(), vec![Some(100_000), None], false);
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("a");
        assert_eq!(download(&url, &dest, 1 << 20, Duration::from_secs(60), None, &mut |_, _| {}).unwrap(), 300_000);
        assert_eq!(std::fs::read(&dest).unwrap(), data());
        assert_eq!(ranges(server.join().unwrap()), vec![None, Some("100000".into())]);
    }

    #[test]
    fn retries_stop_at_the_deadline_with_the_truncation() {
        let (url, _server) = server(data(), vec![Some(1000); 3], true);
        let dir = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let err = download(&url, &dir.path().join("a"), 1 << 20, Duration::from_secs(2), None, &mut |_, _| {}).unwrap_err();
        assert!(matches!(err, Refusal::Truncated { got: 2000, expected: 300_000 }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(3), "waited past the deadline: {:?}", started.elapsed());
    }

    #[test]
    fn refusals_are_not_retried() {
        let (url, _server) =
            doorbell_base::http::testing::serve_with(1, |_| b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec());
        let url = format!("http://{}:{}/missing.dbu", url.host, url.port);
        let dir = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let err = download(&url, &dir.path().join("a"), 1 << 20, Duration::from_secs(30), None, &mut |_, _| {}).unwrap_err();
        assert!(err.to_string().contains("server answered 404 Not Found"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(1));
        let err =
            download(&url.replace("http:", "ftp:"), &dir.path().join("a"), 1, Duration::from_secs(5), None, &mut |_, _| {}).unwrap_err();
        assert!(err.to_string().contains("must start with http:// or https://"), "{err}");
    }
}
