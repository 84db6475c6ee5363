//! doorbell-agent: command line and the wiring of the running agent. Each component lives
//! in its own module of the library; this file only connects them (see ARCHITECTURE.md).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::sync::{mpsc, watch};

use doorbell_agent::alerts::{self, Engine, Input as AlertInput};
use doorbell_agent::config::{self, Config, Severity};
use doorbell_agent::gpio::{self, PressFilter, PressSink};
use doorbell_agent::health::{Board, Importance};
use doorbell_agent::metrics::Metrics;
use doorbell_agent::pipeline::{self, NoFace, RingFlow, RingStats};
use doorbell_agent::probe::{self, Probe};
use doorbell_agent::sampler::{self, Sampler};
use doorbell_agent::status::{self, Info, View};
use doorbell_agent::store::{self, Store};
use doorbell_agent::{client, doctor, logging, shutdown, systemd, VERSION};

/// Exit code for configuration errors (EX_CONFIG).
const EXIT_CONFIG: u8 = 78;
/// How long a clean stop may take before systemd's patience (5 s) runs out.
const STOP_BUDGET: Duration = Duration::from_secs(4);

/// The on-device agent of a Raspberry Pi video doorbell.
///
/// Reads the doorbell button, runs every ring through the recognition pipeline, samples the
/// device, raises alerts and keeps them durably, and answers a local health probe.
#[derive(Parser)]
#[command(name = "doorbell-agent", version, about, long_about)]
struct Cli {
    /// Configuration file.
    #[arg(short, long, global = true, default_value = config::DEFAULT_PATH, value_name = "PATH")]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent in the foreground (what the systemd unit starts).
    Run,
    /// Validate the configuration and print the effective settings; exit 78 if invalid.
    CheckConfig,
    /// Show what the running agent is doing (reads its local probe).
    Status {
        /// Print the raw /status JSON.
        #[arg(long)]
        json: bool,
    },
    /// Press the simulated doorbell button of a running agent.
    Press,
    /// Check that this device is ready to run the agent; exit 1 on any failure.
    Doctor,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init();
    match cli.command {
        Command::Doctor => {
            let findings = doctor::run(&cli.config, Config::load(&cli.config));
            let (text, verdict) = doctor::render(&findings);
            print!("{text}");
            ExitCode::from(u8::from(verdict == doctor::Verdict::Fail))
        }
        command => {
            let cfg = match Config::load(&cli.config) {
                Ok(cfg) => cfg,
                Err(e) => {
                    eprintln!("configuration error: {e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            let result = match command {
                Command::Run => run(cfg),
                Command::CheckConfig => check_config(&cli.config, &cfg),
                Command::Status { json } => show_status(&cfg, json),
                Command::Press => press(&cfg),
                Command::Doctor => unreachable!("handled above"),
            };
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn check_config(path: &Path, cfg: &Config) -> anyhow::Result<()> {
    println!("{}: valid", path.display());
    println!("# device_id = {:?} (effective)", cfg.device_id());
    print!("{}", toml::to_string(cfg).context("rendering the effective configuration")?);
    Ok(())
}

fn show_status(cfg: &Config, raw: bool) -> anyhow::Result<()> {
    let (code, body) = client::request(cfg.probe.listen, "GET", "/status", Duration::from_secs(3))?;
    anyhow::ensure!(code == 200, "probe answered {code}: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).context("probe sent invalid JSON")?;
    if raw {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", status::pretty(&v));
    }
    Ok(())
}

fn press(cfg: &Config) -> anyhow::Result<()> {
    let (code, body) = client::request(cfg.probe.listen, "POST", "/simulate/press", Duration::from_secs(3))?;
    match code {
        202 => {
            println!("pressed: the ring is on its way (see `doorbell-agent status`)");
            Ok(())
        }
        404 => anyhow::bail!("the running agent does not use the simulated button (gpio.backend is not \"simulated\")"),
        _ => anyhow::bail!("press refused ({code}): {body}"),
    }
}

fn run(cfg: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(4)
        .thread_name("agent")
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(agent(cfg))
}

async fn agent(cfg: Config) -> anyhow::Result<()> {
    let started = Instant::now();
    let metrics = Arc::new(Metrics::default());
    metrics.build_info.set(&[VERSION], 1.0);
    let health = Board::default();
    let device_id = cfg.device_id();
    let (trigger, shutdown) = shutdown::channel();

    let (store, reset) = {
        let (dir, limits, m) = (cfg.data_dir.clone(), cfg.store.clone(), metrics.clone());
        tokio::task::spawn_blocking(move || Store::open(&dir, &limits, m)).await?
    }
    .with_context(|| format!("opening the store in {}", cfg.data_dir.display()))?;
    health.set("store", Importance::Required, true, "open");

    let (alerts_tx, alerts_rx) = mpsc::channel(alerts::QUEUE);
    let (engine, active_alerts) = Engine::new(&cfg.alerts, store.clone(), metrics.clone(), health.clone());
    let engine = std::thread::Builder::new().name("alerts".into()).spawn(move || engine.run(alerts_rx))?;
    if let Some(reset) = reset {
        let message = format!("store was unreadable ({}); moved to {} and started fresh", reset.reason, reset.moved_to.display());
        alerts_tx.send(AlertInput::Event { key: "store_reset", severity: Severity::Critical, message }).await?;
    }

    let (sink, raw_presses) = PressSink::channel(metrics.clone());
    let (mut button, simulator) = gpio::backend(&cfg.gpio);
    match button.start(sink) {
        Ok(()) => health.set("gpio", Importance::Required, true, button.describe()),
        Err(e) => {
            log::error!("button unavailable: {e}");
            health.set("gpio", Importance::Required, false, e.to_string());
            let event = AlertInput::Event { key: "gpio_unavailable", severity: Severity::Critical, message: e.to_string() };
            alerts_tx.send(event).await?;
        }
    }
    let (ring_tx, ring_rx) = mpsc::channel(pipeline::QUEUE);
    let filter = tokio::spawn(gpio::run(raw_presses, ring_tx, PressFilter::new(&cfg.gpio), metrics.clone(), shutdown.clone()));

    let (stats_tx, stats_rx) = watch::channel(RingStats::default());
    let flow = RingFlow {
        store: store.clone(),
        metrics: metrics.clone(),
        recognizer: Box::new(NoFace),
        alerts: alerts_tx.clone(),
        stats: stats_tx,
    };
    let flow = std::thread::Builder::new().name("rings".into()).spawn(move || flow.run(ring_rx))?;
    health.set("pipeline", Importance::Required, true, "placeholder stage (no camera): rings are recorded as no_face");

    let (samples_tx, samples_rx) = watch::channel(VecDeque::new());
    let sampler = Sampler::new(&cfg.sampler, &cfg.data_dir);
    let sampling = tokio::spawn(sampler::run(sampler, samples_tx, alerts_tx.clone(), metrics.clone(), health.clone(), shutdown.clone()));
    let maintenance = tokio::spawn(store::maintain(store.clone(), cfg.store.maintenance_interval, health.clone(), shutdown.clone()));

    let listener = probe::bind(&cfg.probe).with_context(|| format!("binding the probe on {}", cfg.probe.listen))?;
    let view = View {
        info: Info {
            device_id: device_id.clone(),
            boot_id: status::boot_id(),
            started_ms: doorbell_agent::time::now_ms(),
            started,
            gpio: button.describe(),
            listen: cfg.probe.listen.to_string(),
            mqtt_configured: cfg.mqtt.is_some(),
        },
        health: health.clone(),
        store: store.clone(),
        samples: samples_rx,
        rings: stats_rx,
        alerts: active_alerts,
    };
    let state = probe::State {
        view: view.clone(),
        metrics: metrics.clone(),
        simulator,
        sample_interval: cfg.sampler.interval,
    };
    let probe = Probe::start(listener, &cfg.probe, state).map_err(|e| anyhow::anyhow!("starting the probe: {e}"))?;

    systemd::ready(&view.line());
    log::info!(
        "doorbell-agent {VERSION} ready in {} ms: device {device_id}, button {}, probe http://{}",
        started.elapsed().as_millis(),
        button.describe(),
        cfg.probe.listen
    );
    let supervisor = tokio::spawn(systemd::supervise(view, shutdown.clone()));

    let signal = wait_for_signal().await?;
    log::info!("{signal} received: stopping");
    systemd::stopping("stopping: finishing rings and flushing the store");
    let deadline = tokio::time::Instant::now() + STOP_BUDGET;
    trigger.fire();
    // Intake first: the button, then the tasks; the ring thread drains what was accepted.
    drop(button);
    for task in [filter, sampling, maintenance, supervisor] {
        let _ = tokio::time::timeout_at(deadline, task).await;
    }
    drop(alerts_tx);
    let joined = tokio::time::timeout_at(
        deadline,
        tokio::task::spawn_blocking(move || {
            let _ = flow.join();
            let _ = engine.join();
            probe.stop();
        }),
    )
    .await;
    if joined.is_err() {
        log::warn!("components did not stop within {STOP_BUDGET:?}; flushing and exiting anyway");
    }
    tokio::task::spawn_blocking(move || store.flush()).await??;
    log::info!("stopped cleanly");
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}
