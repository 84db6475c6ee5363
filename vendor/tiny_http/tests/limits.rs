//! [limits patch] Tests for `Server::from_listener_with_limits` and the accept loop fixes
//! (see PATCHES.md). Every test uses real TCP clients with socket timeouts, so none can hang.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tiny_http::{Limits, Response, Server};

/// Upper bound for any single blocking client operation in these tests.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// The tests of this file run one at a time: one of them counts the threads of the process.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A server on 127.0.0.1 with one worker thread that answers every request with 200 "ok".
struct TestServer {
    server: Arc<Server>,
    addr: SocketAddr,
    worker: Option<JoinHandle<()>>,
}

impl TestServer {
    fn with_limits(limits: Limits) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = Server::from_listener_with_limits(listener, None, limits).unwrap();
        TestServer::start(server, addr)
    }

    fn start(server: Server, addr: SocketAddr) -> TestServer {
        let server = Arc::new(server);
        let inner = Arc::clone(&server);
        let worker = thread::spawn(move || {
            // ends when `unblock()` makes `recv()` fail
            for rq in inner.incoming_requests() {
                let _ = rq.respond(Response::from_string("ok"));
            }
        });
        TestServer {
            server,
            addr,
            worker: Some(worker),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, CLIENT_TIMEOUT).unwrap();
    stream.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    stream
}

/// Reads until the end of the first line of a response, EOF or an error, and returns the
/// status code if a status line was received.
fn read_status(stream: &mut TcpStream) -> Option<u16> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(2).any(|w| w == b"\r\n") {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let mut parts = text.split(' ');
    match parts.next() {
        Some(version) if version.starts_with("HTTP/1.") => parts.next()?.parse().ok(),
        _ => None,
    }
}

/// Sends `GET /health` on a new connection and returns the status and the body.
fn get_health(addr: SocketAddr) -> (u16, String) {
    let mut stream = connect(addr);
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {:?}", response));
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

fn assert_healthy(addr: SocketAddr) {
    assert_eq!(get_health(addr), (200, "ok".to_owned()));
}

/// Threads of this process (entries of /proc/self/task), or None where /proc is not available.
fn thread_count() -> Option<usize> {
    std::fs::read_dir("/proc/self/task")
        .ok()
        .map(|dir| dir.count())
}

/// Threads of this process that have the calling thread's name. On Linux a new thread starts
/// with its creator's name, so when called from a test thread this counts the test thread
/// plus every thread it started, directly or not (server accept thread, pool threads, worker),
/// but not the test harness's threads for other tests.
fn own_thread_count() -> Option<usize> {
    let own = std::fs::read_to_string("/proc/thread-self/comm").ok()?;
    let tasks = std::fs::read_dir("/proc/self/task").ok()?;
    Some(
        tasks
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .filter(|comm| *comm == own)
            .count(),
    )
}

/// True if the server closed `stream` (EOF or reset) within `wait`; false if it is still open.
fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => panic!("unexpected data from the server"),
        Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => false,
        Err(_) => true,
    }
}

/// (a) Idle connections beyond `max_connections` evict the oldest ones instead of piling up
/// threads, and a fresh request is answered soon: the accept thread works through the 200
/// idle connections ahead of it at `max_connections` per 50 ms (the idle time after which a
/// connection may be evicted), i.e. in about 300 ms.
#[test]
fn idle_connections_do_not_lock_out_a_fresh_request() {
    let _serial = serial();
    const MAX: usize = 32;
    // Allowed process threads besides the connection threads: the accept thread, the test
    // worker, pool threads that are finishing a task while a new one is dispatched, and
    // test-harness threads that start meanwhile (they wait for `SERIAL`). Upstream: ~200 more.
    const SLACK: usize = 12;
    // The task pool's 4 initial idle threads, which do not count as available before they have
    // started: pool threads <= max_connections + 4 (but normally == max_connections here).
    const OWN_SLACK: usize = 4;

    let baseline = thread_count();
    let server = TestServer::with_limits(Limits {
        max_connections: MAX,
        // long enough that only eviction (not a timeout) can close the idle connections
        read_timeout: Duration::from_secs(30),
        header_deadline: Duration::from_secs(30),
        ..Limits::default()
    });
    // let the task pool's initial threads start (see OWN_SLACK)
    thread::sleep(Duration::from_millis(100));

    let mut idle = Vec::new();
    let mut peak = 0;
    let mut own_peak = 0;
    let mut sample = || {
        peak = peak.max(thread_count().unwrap_or(0));
        own_peak = own_peak.max(own_thread_count().unwrap_or(0));
    };
    for _ in 0..200 {
        idle.push(connect(server.addr));
        sample();
    }
    // let the accept thread catch up with its backlog
    thread::sleep(Duration::from_millis(200));
    sample();

    let start = Instant::now();
    assert_healthy(server.addr);
    let elapsed = start.elapsed();
    assert!(
        elapsed < Duration::from_secs(1),
        "fresh request took {:?}",
        elapsed
    );

    sample();
    if let Some(baseline) = baseline {
        eprintln!(
            "threads: process baseline {}, peak {}; this test's threads peak {}",
            baseline, peak, own_peak
        );
        assert!(
            peak <= baseline + MAX + SLACK,
            "{} threads with {} idle connections (baseline {}, max_connections {})",
            peak,
            idle.len(),
            baseline,
            MAX
        );
        // this test's own threads: itself, the accept thread, the worker, the task pool
        assert!(
            own_peak <= 3 + MAX + OWN_SLACK,
            "this test reached {} threads, max_connections {}",
            own_peak,
            MAX
        );
    }

    // the oldest connections were evicted, the newest one is still being served
    assert!(closed_within(&mut idle[0], Duration::from_secs(2)));
    assert!(!closed_within(&mut idle[199], Duration::from_millis(200)));
}

/// Writes as much of `data` as the server takes; errors (the server closed) are expected.
fn write_ignoring_errors(stream: &mut TcpStream, data: &[u8]) {
    for chunk in data.chunks(16 * 1024) {
        if stream.write_all(chunk).is_err() {
            break;
        }
    }
}

/// (b) A huge header gets 431 (or a closed connection) quickly, and the server keeps working.
#[test]
fn oversized_header_is_rejected() {
    let _serial = serial();
    let server = TestServer::with_limits(Limits {
        max_connections: 4,
        max_header_bytes: 8 * 1024,
        ..Limits::default()
    });

    // one 1 MiB header line
    let mut request = b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Big: ".to_vec();
    request.resize(request.len() + 1024 * 1024, b'a');
    request.extend_from_slice(b"\r\n\r\n");
    // many small headers, 64 KiB in total
    let mut many = b"GET /health HTTP/1.1\r\nHost: localhost\r\n".to_vec();
    for i in 0..4096 {
        many.extend_from_slice(format!("X-{:04}: abcdef\r\n", i).as_bytes());
    }
    many.extend_from_slice(b"\r\n");

    for request in [request, many].iter() {
        let start = Instant::now();
        let mut stream = connect(server.addr);
        write_ignoring_errors(&mut stream, request);
        let status = read_status(&mut stream);
        let elapsed = start.elapsed();
        assert!(
            status == Some(431) || status.is_none(),
            "got status {:?}",
            status
        );
        assert!(elapsed < Duration::from_secs(2), "took {:?}", elapsed);
        assert_healthy(server.addr);
    }

    // without a line end the server must not wait for the rest either (upstream buffered it all)
    let start = Instant::now();
    let mut stream = connect(server.addr);
    let mut request = b"GET /health HTTP/1.1\r\nX-Big: ".to_vec();
    request.resize(request.len() + 64 * 1024, b'a');
    write_ignoring_errors(&mut stream, &request);
    let status = read_status(&mut stream);
    assert!(status == Some(431) || status.is_none(), "got {:?}", status);
    assert!(start.elapsed() < Duration::from_secs(2));
    assert_healthy(server.addr);
}

/// (c) A slow-loris client (one header byte every 200 ms) is cut off by the header deadline,
/// although each byte arrives well within the read timeout.
#[test]
fn slow_loris_is_cut_off_by_header_deadline() {
    let _serial = serial();
    let deadline = Duration::from_secs(1);
    let server = TestServer::with_limits(Limits {
        max_connections: 4,
        read_timeout: Duration::from_secs(3),
        header_deadline: deadline,
        ..Limits::default()
    });

    let mut stream = connect(server.addr);
    let mut request = b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: ".to_vec();
    request.resize(request.len() + 100, b'a');
    // the reads with a 200 ms timeout pace the writes
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();

    let start = Instant::now();
    let mut response = Vec::new();
    let mut cut_off = None;
    for byte in request.iter() {
        if stream.write_all(&[*byte]).is_err() {
            cut_off = Some(start.elapsed());
            break;
        }
        let mut buf = [0u8; 256];
        match stream.read(&mut buf) {
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {}
            Ok(0) | Err(_) => {
                cut_off = Some(start.elapsed());
                break;
            }
            Ok(n) => {
                // the server answers before closing; read the rest of its answer
                response.extend_from_slice(&buf[..n]);
                cut_off = Some(start.elapsed());
                stream.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
                let _ = stream.read_to_end(&mut response);
                break;
            }
        }
    }

    let cut_off = cut_off.expect("slow-loris client was never cut off");
    assert!(
        cut_off >= deadline - Duration::from_millis(200) && cut_off < deadline * 2,
        "cut off after {:?}, header deadline {:?}",
        cut_off,
        deadline
    );
    if !response.is_empty() {
        assert!(
            response.starts_with(b"HTTP/1.1 408 "),
            "{:?}",
            String::from_utf8_lossy(&response)
        );
    }
    assert_healthy(server.addr);
}

/// (d) Garbage gets 400 and the server keeps answering.
#[test]
fn garbage_gets_400() {
    let _serial = serial();
    let server = TestServer::with_limits(Limits {
        max_connections: 4,
        ..Limits::default()
    });

    let garbage: [&[u8]; 3] = [
        b"THIS IS NOT HTTP\r\n\r\n",
        // binary, e.g. a TLS ClientHello sent to the plain-HTTP port
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\xde\xad\xbe\xef\r\n\r\n",
        b"GET /health HTTP/1.1\r\nthis header has no colon\r\n\r\n",
    ];
    for bytes in garbage.iter() {
        let mut stream = connect(server.addr);
        stream.write_all(bytes).unwrap();
        assert_eq!(
            read_status(&mut stream),
            Some(400),
            "for {:?}",
            String::from_utf8_lossy(bytes)
        );
        assert_healthy(server.addr);
    }
}

/// (e) A request that declares a huge body and is answered without its body being read, as
/// the fuzzer found it (fuzz/, probe_http). Upstream allocated the declared Content-Length
/// to drain the body and aborted the process (PATCHES.md, 8).
#[test]
fn huge_declared_body_left_unread_does_not_allocate_it() {
    let _serial = serial();
    let server = TestServer::with_limits(Limits {
        max_connections: 4,
        ..Limits::default()
    });

    let mut stream = connect(server.addr);
    stream
        .write_all(b"GET /health HTTP/1.1\r\nContent-Length: 45555555555555555\r\n\r\nhello")
        .unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_status(&mut stream), Some(200));
    assert_healthy(server.addr);
}

/// A keep-alive connection is served, then closed once idle for `read_timeout`
/// (which also shows the header deadline's lowered read timeout was restored).
#[test]
fn idle_keep_alive_connection_is_closed_after_read_timeout() {
    let _serial = serial();
    let read_timeout = Duration::from_millis(700);
    let server = TestServer::with_limits(Limits {
        max_connections: 4,
        read_timeout,
        header_deadline: Duration::from_millis(300),
        ..Limits::default()
    });

    let mut stream = connect(server.addr);
    for _ in 0..2 {
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let mut response = Vec::new();
        let mut chunk = [0u8; 1024];
        while !response.ends_with(b"\r\n\r\nok") {
            let n = stream.read(&mut chunk).unwrap();
            assert!(
                n > 0,
                "closed early: {:?}",
                String::from_utf8_lossy(&response)
            );
            response.extend_from_slice(&chunk[..n]);
        }
        assert!(response.starts_with(b"HTTP/1.1 200 "));
    }

    let start = Instant::now();
    assert!(closed_within(&mut stream, CLIENT_TIMEOUT));
    let idle = start.elapsed();
    assert!(
        idle >= read_timeout - Duration::from_millis(100) && idle < read_timeout * 3,
        "closed after {:?} idle, read_timeout {:?}",
        idle,
        read_timeout
    );
}

/// Accept errors no longer stop the server, with or without limits. A non-blocking
/// listener makes every `accept()` without a pending connection fail with EAGAIN, which
/// upstream treated as fatal: it never served a single request.
#[test]
fn accept_errors_are_not_fatal() {
    let _serial = serial();
    for with_limits in [false, true].iter() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let server = if *with_limits {
            Server::from_listener_with_limits(listener, None, Limits::default()).unwrap()
        } else {
            Server::from_listener(listener, None).unwrap()
        };
        let server = TestServer::start(server, addr);
        for _ in 0..3 {
            thread::sleep(Duration::from_millis(120));
            assert_healthy(server.addr);
        }
    }
}

#[test]
fn zero_limits_are_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let limits = Limits {
        max_connections: 0,
        ..Limits::default()
    };
    assert!(Server::from_listener_with_limits(listener, None, limits).is_err());
}

/// Unix-socket listeners are bounded the same way.
#[cfg(unix)]
#[test]
fn unix_socket_connections_are_bounded_too() {
    use std::os::unix::net::{UnixListener, UnixStream};

    let _serial = serial();
    let path = std::env::temp_dir().join(format!("tiny-http-limits-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).unwrap();
    let limits = Limits {
        max_connections: 2,
        ..Limits::default()
    };
    let server = Arc::new(Server::from_listener_with_limits(listener, None, limits).unwrap());
    let inner = Arc::clone(&server);
    let worker = thread::spawn(move || {
        for rq in inner.incoming_requests() {
            let _ = rq.respond(Response::from_string("ok"));
        }
    });

    let unix_connect = || {
        let stream = UnixStream::connect(&path).unwrap();
        stream.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(CLIENT_TIMEOUT)).unwrap();
        stream
    };
    let mut idle: Vec<UnixStream> = (0..3).map(|_| unix_connect()).collect();
    let mut fresh = unix_connect();
    fresh
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = Vec::new();
    fresh.read_to_end(&mut response).unwrap();
    assert!(response.starts_with(b"HTTP/1.1 200 "));
    assert!(response.ends_with(b"\r\n\r\nok"));

    // the oldest idle connection was evicted
    idle[0]
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    match idle[0].read(&mut [0u8; 1]) {
        Ok(0) => {}
        Err(e) => assert!(
            e.kind() != ErrorKind::WouldBlock && e.kind() != ErrorKind::TimedOut,
            "oldest connection still open"
        ),
        Ok(_) => panic!("unexpected data from the server"),
    }
    idle.clear();

    server.unblock();
    worker.join().unwrap();
}

/// Dropping the server ends its connection threads: idle clients see their connection closed.
#[test]
fn dropping_the_server_closes_idle_connections() {
    let _serial = serial();
    let server = TestServer::with_limits(Limits {
        max_connections: 4,
        read_timeout: Duration::from_secs(30),
        ..Limits::default()
    });
    let mut idle = connect(server.addr);
    assert_healthy(server.addr); // the idle connection has surely been accepted by now
    drop(server);
    assert!(closed_within(&mut idle, Duration::from_secs(2)));
}

/// (a') Connections whose request is in progress are never evicted: many more concurrent
/// clients than `max_connections`, against a handler that takes a while, all get their
/// answer (they wait for a slot instead of being reset).
#[test]
fn busy_connections_are_not_evicted() {
    let _serial = serial();
    const MAX: usize = 4;
    const CLIENTS: usize = 24;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let limits = Limits {
        max_connections: MAX,
        ..Limits::default()
    };
    let server = Arc::new(Server::from_listener_with_limits(listener, None, limits).unwrap());
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let server = Arc::clone(&server);
            thread::spawn(move || {
                for rq in server.incoming_requests() {
                    // slower than the idle time after which a connection may be evicted
                    thread::sleep(Duration::from_millis(60));
                    let _ = rq.respond(Response::from_string("ok"));
                }
            })
        })
        .collect();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| thread::spawn(move || get_health(addr)))
        .collect();
    for client in clients {
        assert_eq!(client.join().unwrap(), (200, "ok".to_owned()));
    }
    server.unblock();
    server.unblock();
    for worker in workers {
        let _ = worker.join();
    }
}
