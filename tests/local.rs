//! The local control socket of the real binary: its protocol against garbage, oversized and
//! slow clients, the CLI's errors when no agent runs or the caller may not connect, and its
//! place beside the fleet link (no signature asked, answers never published over MQTT).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use common::mqtt::{mqtt_section, Rumqttd, Watcher};
use common::{config, Agent};
use serde_json::Value;

const P: &str = "doorbell/test-door";

/// A connection to the agent's socket that reads answers line by line.
struct Conn(BufReader<UnixStream>);

impl Conn {
    fn open(socket: &Path) -> Conn {
        let stream = UnixStream::connect(socket).unwrap_or_else(|e| panic!("{}: {e}", socket.display()));
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Conn(BufReader::new(stream))
    }

    /// Sends `line` and returns its answers up to the final one (or the end of the stream).
    fn send(&mut self, line: &[u8]) -> Vec<Value> {
        self.0.get_mut().write_all(line).unwrap();
        self.0.get_mut().write_all(b"\n").unwrap();
        self.answers()
    }

    fn answers(&mut self) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            let mut line = String::new();
            if self.0.read_line(&mut line).unwrap_or(0) == 0 {
                return out;
            }
            let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
            let last = matches!(v["status"].as_str(), Some("successful" | "failed"));
            out.push(v);
            if last {
                return out;
            }
        }
    }
}

fn last(answers: &[Value]) -> &Value {
    answers.last().expect("an answer")
}

#[test]
fn garbage_oversized_and_slow_clients_get_failed_answers_and_the_agent_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let extra = "[control]\nmax_request_mib = 1\nmax_connections = 2\ntimeout = \"2s\"";
    let agent = Agent::start(dir.path(), &config(&data, extra));
    let socket = data.join("control.sock");
    assert_eq!(std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777, 0o660);

    let mut c = Conn::open(&socket);
    let a = c.send(b"{nope");
    assert_eq!((a.len(), last(&a)["status"].as_str()), (1, Some("failed")));
    assert!(last(&a)["reason"].as_str().unwrap().starts_with("malformed JSON"), "{a:?}");
    assert!(last(&c.send(b"[1,2]"))["reason"].as_str().unwrap().starts_with("malformed request"));
    let unknown = c.send(br#"{"id":"u1","name":"frob"}"#);
    assert_eq!((last(&unknown)["id"].as_str(), last(&unknown)["reason"].as_str()), (Some("u1"), Some("unknown command `frob`")));
    // The same connection still works, with the whole lifecycle.
    let ping = c.send(br#"{"id":"p1","name":"ping"}"#);
    let steps: Vec<_> = ping.iter().map(|v| v["status"].as_str().unwrap()).collect();
    assert_eq!(steps, ["accepted", "executing", "successful"], "{ping:?}");
    assert_eq!(ping[2]["result"]["pong"], true);
    // A repeated id is answered from the ledger, not run again.
    let again = c.send(br#"{"id":"p1","name":"ping"}"#);
    assert_eq!((again.len(), last(&again)["status"].as_str()), (1, Some("successful")));
    assert!(agent.metric("doorbell_commands_total{event=\"repeated\"}") >= 1.0);
    // A client that sends nothing more is cut off after control.timeout (its slot is free
    // once it sees the close, so what follows does not depend on timing).
    let cut = c.answers();
    assert!(last(&cut)["reason"].as_str().unwrap().starts_with("timeout"), "{cut:?}");

    // More than max_request_mib without a newline: refused, the rest never read.
    let mut big = Conn::open(&socket);
    let _ = big.0.get_mut().write_all(&vec![b'x'; 1024 * 1024 + 1]);
    let a = big.answers();
    assert!(last(&a)["reason"].as_str().unwrap().starts_with("too large"), "{a:?}");

    // Beyond max_connections, a client is told the socket is busy.
    let (mut idle, _second) = (Conn::open(&socket), Conn::open(&socket));
    let mut third = Conn::open(&socket);
    let busy = third.answers();
    assert!(last(&busy)["reason"].as_str().unwrap().starts_with("busy"), "{busy:?}");
    let cut = idle.answers();
    assert!(last(&cut)["reason"].as_str().unwrap().starts_with("timeout"), "{cut:?}");

    let ping = Conn::open(&socket).send(br#"{"id":"p2","name":"ping"}"#);
    assert_eq!(last(&ping)["status"], "successful", "the agent kept going");
    assert_eq!(agent.get("/health").0, 200);
}

#[test]
fn the_cli_says_when_no_agent_runs_or_the_socket_is_forbidden() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, config(&data, "")).unwrap();
    let c = cfg.to_str().unwrap();
    let socket = data.join("control.sock");

    let (code, _, err) = common::run(&["-c", c, "faces", "list"]);
    assert_eq!(code, 1);
    assert!(err.contains("no agent is running") && err.contains("does not exist"), "{err}");
    // A socket left by a crashed agent: nobody answers.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let (code, _, err) = common::run(&["-c", c, "faces", "list"]);
    assert_eq!(code, 1);
    assert!(err.contains("no agent is running: nothing answers on"), "{err}");

    // The agent replaces the stale socket.
    let mut agent = Agent::start_with(&cfg);
    let (code, out, err) = common::run(&["-c", c, "faces", "list"]);
    if cfg!(feature = "faces") {
        assert_eq!((code, out.as_str()), (0, "nobody is enrolled\n"), "{err}");
    } else {
        assert_eq!(code, 1);
        assert!(err.contains("not built into this binary"), "{err}");
    }

    // Someone outside the agent's user and group.
    // SAFETY: geteuid(2) has no preconditions.
    let (code, err) = if unsafe { libc::geteuid() } == 0 {
        for d in [dir.path(), data.as_path()] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
        use std::os::unix::process::CommandExt;
        let out = std::process::Command::new(common::BIN).args(["-c", c, "faces", "list"]).uid(65534).gid(65534).output().unwrap();
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
    } else {
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o000)).unwrap();
        let (code, _, err) = common::run(&["-c", c, "faces", "list"]);
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o660)).unwrap();
        (code, err)
    };
    assert_eq!(code, 1);
    assert!(err.contains("permission denied on") && err.contains("doorbell"), "{err}");

    // A clean stop removes the socket.
    let (status, _) = agent.signal(libc::SIGTERM);
    assert!(status.success());
    assert!(!socket.exists());
}

#[test]
fn local_commands_need_no_fleet_signature_and_their_answers_stay_off_mqtt() {
    let broker = Rumqttd::start();
    let dir = tempfile::tempdir().unwrap();
    let (_, public) = common::fleet_keygen(dir.path());
    let extra = format!("command_key = \"{public}\"\nmax_command_bytes = 1024");
    let data = dir.path().join("data");
    let agent = Agent::start(dir.path(), &config(&data, &mqtt_section(broker.port, &extra)));
    let watcher = Watcher::start(broker.port, &[&format!("{P}/cmd/res")]);
    assert!(agent.wait_link_up(Duration::from_secs(10)));
    let socket = data.join("control.sock");

    // Device-changing, unsigned: done locally (file permissions authorise the socket) ...
    let local = Conn::open(&socket).send(br#"{"id":"local-set","name":"config/set","args":{"gpio.burst":4}}"#);
    assert_eq!(last(&local)["status"], "successful", "{local:?}");
    // ... refused over MQTT.
    watcher.publish(&format!("{P}/cmd/config/set"), r#"{"id":"fleet-set","gpio.burst":5}"#);
    let fleet = final_response(&watcher, "fleet-set");
    assert!(fleet["reason"].as_str().unwrap().starts_with("not authorised"), "{fleet}");

    // An answer larger than an MQTT message may be is refused with the reason; locally the
    // larger limit of the socket applies.
    watcher.publish(&format!("{P}/cmd/config/get"), r#"{"id":"fleet-get"}"#);
    let fleet = final_response(&watcher, "fleet-get");
    assert_eq!(fleet["status"], "failed");
    assert!(fleet["reason"].as_str().unwrap().contains("mqtt.max_command_bytes"), "{fleet}");
    let local = Conn::open(&socket).send(br#"{"id":"local-get","name":"config/get"}"#);
    assert_eq!(last(&local)["status"], "successful");
    assert!(last(&local).to_string().len() > 1024);

    // Everything the fleet saw was about its own commands, up to the answer to a last one,
    // which comes after any answer to the local ones.
    watcher.publish(&format!("{P}/cmd/ping"), r#"{"id":"fleet-last"}"#);
    assert_eq!(final_response(&watcher, "fleet-last")["status"], "successful");
    let ids: Vec<String> = watcher.messages().iter().map(|m| m.json()["id"].as_str().unwrap_or_default().to_string()).collect();
    assert!(ids.iter().all(|id| id.starts_with("fleet-")), "local answers were published: {ids:?}");
}

/// The final `P/cmd/res` answer to `id`.
fn final_response(watcher: &Watcher, id: &str) -> Value {
    let done = |m: &common::mqtt::Msg| {
        let v = m.json();
        v["id"] == id && matches!(v["status"].as_str(), Some("successful" | "failed"))
    };
    assert!(watcher.wait(Duration::from_secs(10), |msgs| msgs.iter().any(done)), "no final answer to {id}");
    watcher.messages().into_iter().find(done).unwrap().json()
}
