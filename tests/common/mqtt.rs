//! Real brokers for the fleet tests: an embedded rumqttd and the `mosquitto` binary, both on
//! free ports; a TCP proxy that can be cut like a pulled network cable; and a subscriber
//! that records everything it receives.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, Incoming, MqttOptions, QoS};

/// A free TCP port on loopback (released before it is used: the tiny race is acceptable here).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The embedded rumqttd broker (it has no stop: it lives until the test process ends).
pub struct Rumqttd {
    pub port: u16,
}

impl Rumqttd {
    /// Starts the broker on a free port; a port taken between the choice and the bind (a
    /// loaded machine running many tests) is retried on another one.
    pub fn start() -> Rumqttd {
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port();
            let config = format!(
                r#"
id = 0
[router]
id = 0
max_connections = 10010
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10
[v4.1]
name = "v4-1"
listen = "127.0.0.1:{port}"
next_connection_delay_ms = 0
[v4.1.connections]
connection_timeout_ms = 60000
max_payload_size = 8388608
max_inflight_count = 500
dynamic_filters = true
"#
            );
            let config: rumqttd::Config = toml::from_str(&config).expect("rumqttd config");
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let mut broker = rumqttd::Broker::new(config);
                // start() returns only when it failed (a bind error, say).
                let _ = tx.send(format!("{:?}", broker.start()));
            });
            let end = Instant::now() + Duration::from_secs(10);
            while Instant::now() < end {
                if let Ok(error) = rx.try_recv() {
                    last_error = error;
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Rumqttd { port };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("rumqttd did not start: {last_error}");
    }
}

/// A `mosquitto` process with its own config and persistence directory.
pub struct Mosquitto {
    child: Option<Child>,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

/// Where Debian installs the broker.
pub fn mosquitto_bin() -> PathBuf {
    ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("mosquitto is installed (scripts/test-deps.sh)")
}

impl Mosquitto {
    /// Starts mosquitto on a free port; `listener_extra` goes into its listener section
    /// (TLS files, `allow_anonymous`, password and ACL files).
    pub fn start(listener_extra: &str) -> Mosquitto {
        let dir = tempfile::tempdir().unwrap();
        let mut m = Mosquitto { child: None, port: 0, dir };
        // A port taken between its choice and mosquitto's bind is retried on another one.
        for _ in 0..5 {
            m.port = free_port();
            m.configure(listener_extra);
            if m.run() {
                return m;
            }
        }
        panic!("mosquitto did not start: {}", m.log());
    }

    fn configure(&self, listener_extra: &str) {
        let conf = format!(
            // `user root`: run as root, mosquitto would otherwise switch to its own user and fail
            // to write its persistence into our directory (ignored when not run as root).
            "user root\npersistence true\npersistence_location {}/\nlog_dest stderr\nlog_type error\nlog_type warning\n\
             per_listener_settings false\nmax_queued_messages 100000\nlistener {} 127.0.0.1\n{}\n",
            self.dir.path().display(),
            self.port,
            if listener_extra.contains("allow_anonymous") {
                listener_extra.to_string()
            } else {
                format!("allow_anonymous true\n{listener_extra}")
            }
        );
        std::fs::write(self.dir.path().join("mosquitto.conf"), conf).unwrap();
    }

    /// What mosquitto wrote to stderr (errors and warnings).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    /// Starts the process; false when it exited for a port clash, a panic with its log for
    /// any other failure.
    fn run(&mut self) -> bool {
        let log = std::fs::File::create(self.dir.path().join("mosquitto.log")).unwrap();
        let mut child = Command::new(mosquitto_bin())
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start mosquitto");
        let end = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                let log = self.log();
                assert!(log.contains("Address already in use"), "mosquitto exited ({status}) on port {}: {log}", self.port);
                return false;
            }
            assert!(Instant::now() < end, "mosquitto does not listen on port {} after 10 s: {}", self.port, self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
        true
    }

    /// Stops it the way an operator would (SIGTERM: sessions and queued messages are saved).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same persistence.
    pub fn restart(&mut self) {
        self.stop();
        assert!(self.run(), "mosquitto could not bind its port {} again: {}", self.port, self.log());
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A TCP forwarder in front of a broker that can be cut (connections closed, new ones
/// refused) and restored, like a network cable.
pub struct Proxy {
    pub port: u16,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    pub fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (up2, conns2) = (up.clone(), conns.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !up2.load(Ordering::SeqCst) {
                    // Cut: the connection is reset at once, as if nothing answered.
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else { continue };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                {
                    let mut c = conns2.lock().unwrap();
                    c.push(client.try_clone().unwrap());
                    c.push(server.try_clone().unwrap());
                }
                for (mut from, mut to) in [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)] {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        loop {
                            match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    if to.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                        let _ = to.shutdown(Shutdown::Both);
                        let _ = from.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Proxy { port, up, conns }
    }

    /// Pulls the cable: every connection through the proxy dies, new ones are refused.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    /// Plugs it back in.
    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// One message as a subscriber saw it.
#[derive(Debug, Clone)]
pub struct Msg {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

impl Msg {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).unwrap_or(serde_json::Value::Null)
    }
}

/// A subscriber that records every message on its filters, and subscribes again after
/// every reconnection, as a real consumer does.
pub struct Watcher {
    msgs: Arc<Mutex<Vec<Msg>>>,
    client: Client,
    subscribed: Arc<Mutex<usize>>,
}

/// Client options for the test clients.
pub fn options(id: &str, port: u16) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30)).set_max_packet_size(16 << 20, 16 << 20);
    o
}

impl Watcher {
    /// Subscribes (QoS 1) and returns once the broker has confirmed every filter.
    pub fn start(port: u16, filters: &[&str]) -> Watcher {
        Watcher::with(options(&format!("watcher-{}", uuid::Uuid::new_v4().simple()), port), filters)
    }

    /// The same as `start`, logged in as `user`.
    pub fn as_user(port: u16, user: &str, password: &str, filters: &[&str]) -> Watcher {
        let mut o = options(&format!("watcher-{}", uuid::Uuid::new_v4().simple()), port);
        o.set_credentials(user, password);
        Watcher::with(o, filters)
    }

    /// With explicit client options.
    pub fn with(o: MqttOptions, filters: &[&str]) -> Watcher {
        let (client, mut connection) = Client::new(o, 1000);
        let msgs: Arc<Mutex<Vec<Msg>>> = Arc::default();
        let subscribed = Arc::new(Mutex::new(0usize));
        let (sink, acks, resubscribe) = (msgs.clone(), subscribed.clone(), client.clone());
        let filters: Vec<String> = filters.iter().map(|f| f.to_string()).collect();
        let count = filters.len();
        std::thread::spawn(move || {
            for event in connection.iter() {
                match event {
                    Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                        for f in &filters {
                            let _ = resubscribe.try_subscribe(f.as_str(), QoS::AtLeastOnce);
                        }
                    }
                    Ok(Event::Incoming(Incoming::Publish(p))) => {
                        sink.lock().unwrap().push(Msg { topic: p.topic.clone(), payload: p.payload.to_vec(), retain: p.retain })
                    }
                    Ok(Event::Incoming(Incoming::SubAck(_))) => *acks.lock().unwrap() += 1,
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        });
        let w = Watcher { msgs, client, subscribed };
        w.wait_subscribed(count);
        w
    }

    /// Waits until the broker has confirmed `n` subscriptions in all (they are made again on
    /// every reconnection).
    pub fn wait_subscribed(&self, n: usize) {
        let end = Instant::now() + Duration::from_secs(15);
        while *self.subscribed.lock().unwrap() < n {
            assert!(Instant::now() < end, "subscription not confirmed");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Subscriptions confirmed so far.
    pub fn subscriptions(&self) -> usize {
        *self.subscribed.lock().unwrap()
    }

    pub fn messages(&self) -> Vec<Msg> {
        self.msgs.lock().unwrap().clone()
    }

    /// Messages on one topic.
    pub fn on(&self, topic: &str) -> Vec<Msg> {
        self.messages().into_iter().filter(|m| m.topic == topic).collect()
    }

    /// Waits until `pred` holds for the messages received so far (a snapshot: `pred` may
    /// itself read the watcher).
    pub fn wait(&self, timeout: Duration, pred: impl Fn(&[Msg]) -> bool) -> bool {
        let end = Instant::now() + timeout;
        loop {
            if pred(&self.messages()) {
                return true;
            }
            if Instant::now() > end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Publishes with this watcher's connection (QoS 1).
    pub fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client.publish(topic, QoS::AtLeastOnce, false, payload.into()).unwrap();
    }
}

/// The `[mqtt]` section for an agent of the tests: quick reconnects.
pub fn mqtt_section(port: u16, extra: &str) -> String {
    format!("[mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\nreconnect_min = \"100ms\"\nreconnect_max = \"1s\"\nkeepalive = \"5s\"\n{extra}\n")
}

/// A file in `dir`.
pub fn file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}
