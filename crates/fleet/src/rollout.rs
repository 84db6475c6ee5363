//! `rollout`: updates devices in waves with one artifact, through the devices' own
//! `update` command (so every device verifies, stages, trials and commits or rolls back on
//! its own), and stops starting new waves once the failures exceed the budget.
//!
//! The devices need a URL to fetch the artifact from: `--url` names one, `--serve ADDR`
//! serves the artifact from this machine (tiny_http, with a Content-Length: the devices'
//! downloader refuses chunked answers).

use std::collections::BTreeMap;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use rumqttc::{Event, Incoming, Publish, QoS};
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::broker::{self, Broker};
use doorbell_artifact::{self as artifact, Manifest};

/// `rollout` options.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// The signed update artifact (`doorbell-release sign` output).
    pub artifact: PathBuf,
    /// `all` (every device online now) or a comma-separated list of device ids.
    #[arg(long, default_value = "all")]
    pub devices: String,
    /// Cumulative percentages of the selected devices updated by the end of each wave.
    #[arg(long, value_delimiter = ',', default_value = "10,25,50,100")]
    pub waves: Vec<u8>,
    /// Failures tolerated; one more halts the rollout after the wave it happened in.
    #[arg(long, default_value_t = 0)]
    pub max_failures: usize,
    /// How long each wave may take for all its devices to report their final outcome
    /// (download, restart, trial soak and commit).
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Serve the artifact over HTTP from this address (devices must reach it; with an
    /// unspecified address such as 0.0.0.0, also give --url).
    #[arg(long, value_name = "ADDR")]
    pub serve: Option<SocketAddr>,
    /// The URL the devices download the artifact from.
    #[arg(long, value_name = "URL", required_unless_present = "serve")]
    pub url: Option<String>,
    /// Sign the commands with this fleet key (needed when devices set `mqtt.command_key`).
    #[arg(long, value_name = "FILE")]
    pub sign_key: Option<PathBuf>,
    /// Allow a downgrade or reinstall (the devices' `force`).
    #[arg(long)]
    pub force: bool,
}

/// How one device's update ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// Not in a wave that ran (the rollout halted first).
    NotStarted,
    /// Left out: offline, unknown, already on the version.
    Skipped,
    /// Sent, no final answer yet.
    Running,
    /// Committed the new version.
    Successful,
    /// Refused, rolled back, or no answer in time.
    Failed,
}

impl Outcome {
    fn as_str(&self) -> &'static str {
        match self {
            Outcome::NotStarted => "not_started",
            Outcome::Skipped => "skipped",
            Outcome::Running => "running",
            Outcome::Successful => "successful",
            Outcome::Failed => "failed",
        }
    }
}

/// One line of the final table.
#[derive(Debug, Clone)]
struct Row {
    from: String,
    to: String,
    outcome: Outcome,
    reason: String,
    started: Option<Instant>,
    duration: Option<Duration>,
}

/// Device counts at the end of each wave: cumulative, rounded up, the first wave at least one.
fn wave_ends(n: usize, waves: &[u8]) -> anyhow::Result<Vec<usize>> {
    let mut last = 0u8;
    for &w in waves {
        anyhow::ensure!(w > last && w <= 100, "--waves must increase strictly within 1..=100 (got {waves:?})");
        last = w;
    }
    let mut ends: Vec<usize> = waves.iter().map(|&w| (n * w as usize).div_ceil(100).max(1).min(n)).collect();
    ends.dedup();
    Ok(ends)
}

/// The artifact's manifest (unverified here: every device verifies it against its key).
fn read_manifest(path: &Path) -> anyhow::Result<Manifest> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let header = artifact::read_header(&mut f).with_context(|| format!("{}", path.display()))?;
    serde_json::from_slice(&header.manifest_bytes).with_context(|| format!("{}: bad manifest", path.display()))
}

/// Serves `file` at `/{name}` until the returned server is dropped.
fn serve(addr: SocketAddr, file: &Path) -> anyhow::Result<(std::sync::Arc<tiny_http::Server>, String)> {
    let server = std::sync::Arc::new(tiny_http::Server::http(addr).map_err(|e| anyhow::anyhow!("serving on {addr}: {e}"))?);
    let bound = server.server_addr().to_ip().context("the artifact server has no IP address")?;
    let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("artifact.dbu").to_string();
    let (path, file, s) = (format!("/{name}"), file.to_path_buf(), server.clone());
    std::thread::Builder::new().name("artifact-http".into()).spawn(move || {
        for request in s.incoming_requests() {
            let answer = match (request.method(), request.url() == path) {
                (tiny_http::Method::Get, true) => match File::open(&file) {
                    // A Content-Length (never chunked): the devices insist on one.
                    Ok(f) => request.respond(tiny_http::Response::from_file(f).with_chunked_threshold(usize::MAX)),
                    Err(e) => request.respond(tiny_http::Response::from_string(e.to_string()).with_status_code(500)),
                },
                _ => request.respond(tiny_http::Response::from_string("not found").with_status_code(404)),
            };
            if let Err(e) = answer {
                eprintln!("artifact server: {e}");
            }
        }
    })?;
    Ok((server, format!("http://{bound}/{name}")))
}

/// Runs a rollout; exit code 1 when it halted on the failure budget.
pub async fn run(broker: &Broker, o: Options) -> anyhow::Result<u8> {
    let manifest = read_manifest(&o.artifact)?;
    let key = o.sign_key.as_deref().map(broker::signing_key).transpose()?;
    let (_server, url) = match (o.serve, &o.url) {
        (Some(addr), url) => {
            anyhow::ensure!(
                url.is_some() || !addr.ip().is_unspecified(),
                "--serve {addr}: devices cannot fetch from an unspecified address; add --url"
            );
            let (server, served) = serve(addr, &o.artifact)?;
            (Some(server), url.clone().unwrap_or(served))
        }
        (None, Some(url)) => (None, url.clone()),
        (None, None) => bail!("give --serve ADDR or --url URL"),
    };
    let roster = broker::roster(broker).await?;
    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    let wanted: Vec<String> = if o.devices == "all" {
        roster.iter().filter(|(_, (s, _))| s["online"] == true).map(|(d, _)| d.clone()).collect()
    } else {
        o.devices.split(',').map(str::trim).filter(|d| !d.is_empty()).map(String::from).collect()
    };
    anyhow::ensure!(!wanted.is_empty(), "no devices selected (--devices {}; none online?)", o.devices);
    let mut targets = Vec::new();
    for device in wanted {
        let status = roster.get(&device).map(|(s, _)| s);
        let from = status.and_then(|s| s["version"].as_str()).unwrap_or("-").to_string();
        let skip = match status {
            None => Some("unknown device (no retained status)".to_string()),
            Some(s) if s["online"] != true => Some("offline".into()),
            Some(_) if from == manifest.version && !o.force => Some(format!("already on {from}")),
            Some(_) => None,
        };
        let outcome = if skip.is_some() { Outcome::Skipped } else { Outcome::NotStarted };
        if skip.is_none() {
            targets.push(device.clone());
        }
        let row = Row { from, to: manifest.version.clone(), outcome, reason: skip.unwrap_or_default(), started: None, duration: None };
        rows.insert(device, row);
    }
    let ends = if targets.is_empty() { Vec::new() } else { wave_ends(targets.len(), &o.waves)? };
    eprintln!(
        "rollout of {} ({}) to {} devices in {} waves from {url}, failure budget {}",
        manifest.version,
        manifest.target,
        targets.len(),
        ends.len(),
        o.max_failures
    );

    let (client, mut events) = broker::connect(broker)?;
    let p = &broker.prefix;
    broker::subscribe(&client, &mut events, broker, &[format!("{p}/+/cmd/res")]).await?;
    // The event loop runs on its own so that publishing many commands never waits on it.
    let (tx, mut responses) = mpsc::unbounded_channel::<Publish>();
    let poller = tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Incoming::Publish(m))) => {
                    if tx.send(m).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("broker: {e}; reconnecting");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    });

    let started = Instant::now();
    let (mut ids, mut failures, mut halted, mut begun) = (BTreeMap::new(), 0usize, false, 0usize);
    for (n, &end) in ends.iter().enumerate() {
        let wave = &targets[begun..end];
        begun = end;
        eprintln!("wave {}: {} devices ({})", n + 1, wave.len(), wave.join(", "));
        let mut args = Map::new();
        args.insert("url".into(), Value::from(url.clone()));
        if o.force {
            args.insert("force".into(), Value::from(true));
        }
        for device in wave {
            let id = uuid::Uuid::new_v4().simple().to_string();
            let payload = broker::command_payload(&id, device, "update", &args, key.as_ref());
            client.publish(format!("{p}/{device}/cmd/update"), QoS::AtLeastOnce, false, payload.to_string()).await?;
            ids.insert(id, device.clone());
            if let Some(row) = rows.get_mut(device) {
                (row.outcome, row.started) = (Outcome::Running, Some(Instant::now()));
            }
        }
        let deadline = Instant::now() + o.timeout;
        while wave.iter().any(|d| rows[d].outcome == Outcome::Running) {
            let Ok(Some(m)) = tokio::time::timeout_at(deadline, responses.recv()).await else { break };
            let Ok(response) = serde_json::from_slice::<Value>(&m.payload) else { continue };
            let Some(device) = response["id"].as_str().and_then(|id| ids.get(id)) else { continue };
            let Some(row) = rows.get_mut(device).filter(|r| r.outcome == Outcome::Running) else { continue };
            let status = response["status"].as_str().unwrap_or_default();
            row.outcome = match status {
                "successful" => Outcome::Successful,
                "failed" => Outcome::Failed,
                _ => continue,
            };
            row.duration = row.started.map(|s| s.elapsed());
            row.reason = response["reason"].as_str().unwrap_or_default().to_string();
            if let Some(v) = response["result"]["version"].as_str() {
                row.to = v.to_string();
            }
            eprintln!("  {device}: {status}{}", if row.reason.is_empty() { String::new() } else { format!(": {}", row.reason) });
        }
        for device in wave {
            let Some(row) = rows.get_mut(device) else { continue };
            if row.outcome == Outcome::Running {
                row.outcome = Outcome::Failed;
                row.reason = format!("no final answer within {}", humantime::format_duration(o.timeout));
                row.duration = row.started.map(|s| s.elapsed());
            }
            failures += usize::from(row.outcome == Outcome::Failed);
        }
        if failures > o.max_failures {
            eprintln!("halting: {failures} failures exceed the budget of {}", o.max_failures);
            halted = true;
            break;
        }
    }
    poller.abort();
    let _ = client.disconnect().await;
    print_table(&rows);
    let count = |x: Outcome| rows.values().filter(|r| r.outcome == x).count();
    println!(
        "\n{} successful, {} failed, {} skipped, {} not started; {} in {:.1} s",
        count(Outcome::Successful),
        count(Outcome::Failed),
        count(Outcome::Skipped),
        count(Outcome::NotStarted),
        if halted { "HALTED" } else { "done" },
        started.elapsed().as_secs_f64()
    );
    Ok(u8::from(halted))
}

fn print_table(rows: &BTreeMap<String, Row>) {
    println!("{:<24} {:<10} {:<10} {:<12} {:>8}  REASON", "DEVICE", "FROM", "TO", "OUTCOME", "SECONDS");
    for (device, r) in rows {
        let secs = r.duration.map_or_else(|| "-".to_string(), |d| format!("{:.1}", d.as_secs_f64()));
        println!("{device:<24} {:<10} {:<10} {:<12} {secs:>8}  {}", r.from, r.to, r.outcome.as_str(), r.reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waves_are_cumulative_and_round_up() {
        assert_eq!(wave_ends(20, &[10, 25, 50, 100]).unwrap(), vec![2, 5, 10, 20]);
        assert_eq!(wave_ends(3, &[10, 25, 50, 100]).unwrap(), vec![1, 2, 3]);
        assert_eq!(wave_ends(1, &[10, 100]).unwrap(), vec![1]);
        assert_eq!(wave_ends(10, &[50]).unwrap(), vec![5], "a rollout may stop short of everyone");
        assert!(wave_ends(10, &[50, 25]).is_err());
        assert!(wave_ends(10, &[0, 100]).is_err());
        assert!(wave_ends(10, &[101]).is_err());
    }
}
