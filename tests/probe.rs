//! The probe of the real binary under bad and hostile clients: every answer is a JSON
//! error with the right code, and afterwards /health still answers quickly while the
//! agent's threads and memory stay bounded.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{config, Agent};

/// Sends raw bytes on a fresh connection; returns what came back until close or timeout.
fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    // The server may close mid-write (e.g. after 431); what it answered is still readable.
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn status_of(answer: &str) -> u16 {
    answer.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().count()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()).unwrap().parse().unwrap()
}

fn assert_health_fast(agent: &Agent, context: &str) {
    let t = Instant::now();
    let (code, body) = agent.get("/health");
    assert_eq!(code, 200, "{context}: /health answered {code}: {body}");
    assert!(t.elapsed() < Duration::from_secs(1), "{context}: /health took {:?}", t.elapsed());
}

#[test]
fn wrong_requests_get_json_errors_with_the_right_code() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path(), &config(&dir.path().join("data"), ""));
    let cases: &[(&str, &str, u16)] = &[
        ("GET", "/nope", 404),
        ("GET", "/health/extra", 404),
        ("DELETE", "/health", 405),
        ("POST", "/metrics", 405),
        ("GET", "/simulate/press", 405),
        ("GET", "/alerts?limit=abc", 400),
        ("GET", "/alerts?limit=0", 400),
        ("GET", "/alerts?limit=100000", 400),
        ("GET", "/alerts?state=maybe", 400),
        ("GET", "/alerts?drop=tables", 400),
        ("GET", "/rings?limit=0", 400),
        ("GET", "/rings?limit=1001", 400),
        ("GET", "/rings?seq=1", 400),
        ("POST", "/rings", 405),
    ];
    for (method, path, want) in cases {
        let (code, body) = doorbell_base::client::request(agent.addr, method, path, Duration::from_secs(5)).unwrap();
        assert_eq!(code, *want, "{method} {path}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {body}"));
        assert_eq!(v["code"], *want, "{method} {path}: {body}");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{method} {path}: {body}");
    }
    let allow = raw(agent.addr, b"DELETE /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(allow.to_ascii_lowercase().contains("\r\nallow: get\r\n"), "405 names the allowed method: {allow}");

    let big_body =
        format!("POST /simulate/press HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\nConnection: close\r\n\r\n{}", "x".repeat(5000));
    assert_eq!(status_of(&raw(agent.addr, big_body.as_bytes())), 413);
    assert!(agent.metric("doorbell_security_events_total{kind=\"probe_unknown_path\"}") >= 2.0);
    assert!(agent.metric("doorbell_security_events_total{kind=\"probe_bad_method\"}") >= 4.0);
    assert!(agent.metric("doorbell_http_requests_total{code=\"400\"}") >= 8.0);
    assert_health_fast(&agent, "after wrong requests");
}

#[test]
fn oversized_garbage_and_slow_clients_are_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    // A short timeout so the slow-loris case is quick.
    let cfg = config(&dir.path().join("data"), "").replace("[probe]\n", "[probe]\ntimeout = \"1s\"\n");
    let agent = Agent::start(dir.path(), &cfg);

    let huge = format!("GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(1024 * 1024));
    let answer = raw(agent.addr, huge.as_bytes());
    assert!(answer.is_empty() || status_of(&answer) == 431, "1 MiB header: {answer:.200}");
    assert_health_fast(&agent, "after a 1 MiB header");

    for garbage in
        [&b"\x00\xff\xfe\x13\x37 garbage \x80\x81\r\n\r\n"[..], b"HELLO\r\n\r\n", b"GET\r\n\r\n", b"GET /health HTTP/9.9\r\nfoo\r\n\r\n"]
    {
        let answer = raw(agent.addr, garbage);
        assert!(answer.is_empty() || (400..500).contains(&status_of(&answer)), "garbage {garbage:?}: {answer}");
    }
    assert_health_fast(&agent, "after garbage");

    // Slow loris: one header byte every 200 ms never completes within the 1 s deadline.
    let t = Instant::now();
    let mut s = TcpStream::connect(agent.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut closed = false;
    for b in b"GET /health HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
        if s.write_all(&[*b]).is_err() {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        if t.elapsed() > Duration::from_secs(4) {
            break;
        }
    }
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    let answer = String::from_utf8_lossy(&rest);
    assert!(closed || answer.is_empty() || status_of(&answer) == 408, "slow client: {answer}");
    assert!(t.elapsed() < Duration::from_secs(5), "slow client held a connection for {:?}", t.elapsed());
    assert_health_fast(&agent, "after a slow client");
}

#[test]
fn two_hundred_idle_connections_neither_block_health_nor_grow_threads_or_memory() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path(), &config(&dir.path().join("data"), ""));
    let pid = agent.pid();
    // Warm up the lazily started parts (first requests, first sample) before the baseline.
    for _ in 0..20 {
        agent.get("/metrics");
    }
    std::thread::sleep(Duration::from_millis(500));
    let (threads_before, rss_before) = (threads(pid), rss_kib(pid));

    let idle: Vec<TcpStream> = (0..200).map(|_| TcpStream::connect(agent.addr).unwrap()).collect();
    // Half of them start a request and stall.
    for s in idle.iter().step_by(2) {
        let _ = (&*s).write_all(b"GET /health HTTP/1.1\r\n");
    }
    // Nothing tells when the agent has taken them all in: a fixed moment lets the load land.
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..20 {
        assert_health_fast(&agent, &format!("request {i} with 200 idle connections open"));
    }
    let (threads_during, rss_during) = (threads(pid), rss_kib(pid));
    // max_connections (64) connection threads at most, on top of the idle agent.
    assert!(threads_during <= threads_before + 64, "threads {threads_before} -> {threads_during}");
    assert!(rss_during <= rss_before + 4 * 1024, "RSS {rss_before} KiB -> {rss_during} KiB");
    drop(idle);
    assert_health_fast(&agent, "after the idle connections closed");
}
