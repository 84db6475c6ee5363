//! doorbell-agent: command line and the wiring of the running agent. Each component lives
//! in its own module of the library; this file only connects them (see ARCHITECTURE.md).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use ed25519_dalek::VerifyingKey;
use tokio::sync::{mpsc, watch};

use doorbell_agent::alerts::{self, Engine, Input as AlertInput};
use doorbell_agent::cmd::{Context, Dispatcher, Ledger};
use doorbell_agent::config::{Config, Severity};
use doorbell_agent::fleet::{Announcer, Link, LinkState, Topics};
use doorbell_agent::gpio::{self, PressSink};
use doorbell_agent::health::{Board, Importance};
use doorbell_agent::local::{self, faces::FacesCommand};
use doorbell_agent::metrics::Metrics;
use doorbell_agent::pipeline::control::FacesHandle;
use doorbell_agent::pipeline::{self, Recognizer, RingFlow, RingStats};
use doorbell_agent::probe::{self, Probe};
use doorbell_agent::sampler::{self, Sampler};
use doorbell_agent::settings::{self, Settings};
use doorbell_agent::status::{self, Info, View};
use doorbell_agent::store::{self, Store};
use doorbell_agent::update::canary::{self, Canary};
use doorbell_agent::update::checks::{BrokerReachable, RequiredHealth, TrialCheck};
use doorbell_agent::update::history::History;
use doorbell_agent::update::trial::{self, UpdateView};
use doorbell_agent::{doctor, shutdown, systemd, VERSION};
use doorbell_base::fault::{self, Fault};
use doorbell_base::logging::Recent;
use doorbell_base::{client, logging};
use doorbell_slotctl::ctl::Requests;
use doorbell_slotctl::Layout;

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
    #[arg(short, long, global = true, default_value = doorbell_base::device::CONFIG_PATH, value_name = "PATH")]
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
    /// The face gallery of a running agent: enroll, remove, list, feedback, export, import
    /// (through its local control socket).
    #[command(subcommand)]
    Faces(FacesCommand),
    /// Check that this device is ready to run the agent; exit 1 on any failure.
    Doctor,
    /// The face pipeline worker the agent starts itself (speaks postcard on stdin/stdout).
    #[cfg(feature = "faces")]
    #[command(hide = true)]
    PipelineWorker,
    /// A/B self-update: apply a signed artifact, roll back, show state and history.
    #[command(subcommand)]
    Update(UpdateCommand),
}

#[derive(Subcommand)]
enum UpdateCommand {
    /// Verify and stage a signed artifact (file or http:// URL); the agent restarts into it
    /// on trial and commits it once healthy, or it is rolled back.
    Apply {
        /// Artifact file or http:// URL.
        source: String,
        /// Allow a downgrade, a reinstall, or a version that failed here before.
        #[arg(long)]
        force: bool,
        /// Return once the trial has started instead of waiting for its outcome.
        #[arg(long)]
        no_wait: bool,
    },
    /// Slots, trial and last outcome (from the slot state; works with the agent down).
    Status {
        /// Print the raw slot state.
        #[arg(long)]
        json: bool,
    },
    /// Roll back: end the running trial, or go back to the other slot.
    Rollback,
    /// Past updates with outcome, reason and timings (from the running agent's store).
    History {
        /// Entries to show.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..=200))]
        limit: u16,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run) {
        doorbell_base::die_on_broken_pipe();
    }
    let logs = logging::init();
    logging::panic_hook();
    match cli.command {
        Command::Doctor => {
            let findings = doctor::run(&cli.config, settings::load(&cli.config).map(|loaded| loaded.config));
            let (text, verdict) = doctor::render(&findings);
            print!("{text}");
            ExitCode::from(u8::from(verdict == doctor::Verdict::Fail))
        }
        command => {
            let loaded = match settings::load(&cli.config) {
                Ok(loaded) => loaded,
                Err(e) => {
                    eprintln!("configuration error: {e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            let result = match command {
                Command::Run => run(&cli.config, loaded, logs),
                #[cfg(feature = "faces")]
                Command::PipelineWorker => doorbell_agent::worker::serve::serve(&loaded.config).context("pipeline worker").map(|()| 0),
                Command::CheckConfig => check_config(&cli.config, &loaded).map(|()| 0),
                Command::Status { json } => show_status(&loaded.config, json).map(|()| 0),
                Command::Press => press(&loaded.config).map(|()| 0),
                Command::Faces(f) => local::faces::run(&loaded.config, f).map(|()| 0),
                Command::Update(u) => update(&loaded.config, u).map(|()| 0),
                Command::Doctor => unreachable!("handled above"),
            };
            match result {
                Ok(code) => ExitCode::from(code),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn update(cfg: &Config, command: UpdateCommand) -> anyhow::Result<()> {
    use doorbell_agent::update::cli;
    match command {
        UpdateCommand::Apply { source, force, no_wait } => cli::apply(cfg, &source, force, !no_wait),
        UpdateCommand::Status { json } => cli::status(cfg, json),
        UpdateCommand::Rollback => cli::rollback(cfg),
        UpdateCommand::History { limit, json } => cli::history(cfg, limit.into(), json),
    }
}

fn check_config(path: &Path, loaded: &settings::Loaded) -> anyhow::Result<()> {
    println!("{}: valid", path.display());
    if let Some(overlay) = &loaded.overlay {
        println!("# with the fleet's changes from {}", overlay.display());
    }
    if let Some(warning) = &loaded.warning {
        println!("# WARNING: {warning}");
    }
    println!("# device_id = {:?} (effective)", loaded.config.device_id());
    print!("{}", toml::to_string(&loaded.config).context("rendering the effective configuration")?);
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

fn run(path: &Path, loaded: settings::Loaded, logs: Recent) -> anyhow::Result<u8> {
    if fault::active() == Some(Fault::CrashAtStart) {
        fault::crash();
    }
    if fault::active() == Some(Fault::Bloat) {
        // Written, so every page is resident; leaked, so it stays for the process's life.
        let ballast: &'static mut [u8] = Box::leak(vec![0xA5u8; fault::BLOAT_MIB * 1024 * 1024].into_boxed_slice());
        std::hint::black_box(ballast);
    }
    doorbell_agent::memory::limit_arenas();
    doorbell_agent::memory::map_large_allocations();
    // One thread runs every task: the agent's async work is light (MQTT, the local socket,
    // timers), and a multi-thread scheduler costs two more threads and, after every batch of
    // tasks, libm's `pow` (its poll-time average), ~0.5 MiB of RSS together on a 512 MB
    // device. What can block (sled, files, parsing large requests) goes to the blocking pool;
    // rings and alerts have their own threads.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(4)
        .thread_name("agent")
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(agent(path, loaded, logs))
}

/// The face recognizer: the real one (its worker is this binary, `pipeline-worker`), or the
/// refusing stand-in of a build without the `faces` feature.
#[cfg(feature = "faces")]
fn recognizer(
    cfg: &Config,
    config_path: &Path,
    store: &Store,
    metrics: &Arc<Metrics>,
    health: &Board,
    alerts: &mpsc::Sender<AlertInput>,
) -> anyhow::Result<Box<dyn Recognizer>> {
    use doorbell_agent::faces::{Parts, Recognition};
    // /proc/self/exe runs exactly this binary even after an update replaced the file.
    let worker = (PathBuf::from("/proc/self/exe"), vec!["-c".into(), config_path.as_os_str().to_owned(), "pipeline-worker".into()]);
    let parts = Parts { store: store.clone(), metrics: metrics.clone(), health: health.clone(), alerts: alerts.clone(), worker };
    health.set("pipeline", Importance::Required, true, "worker not started yet");
    Ok(Box::new(Recognition::new(cfg, parts).context("opening the face gallery")?))
}

#[cfg(not(feature = "faces"))]
fn recognizer(
    _cfg: &Config,
    _config_path: &Path,
    _store: &Store,
    _metrics: &Arc<Metrics>,
    health: &Board,
    _alerts: &mpsc::Sender<AlertInput>,
) -> anyhow::Result<Box<dyn Recognizer>> {
    health.set("pipeline", Importance::Required, false, pipeline::NOT_BUILT_IN);
    Ok(Box::new(pipeline::NotBuiltIn))
}

async fn agent(path: &Path, loaded: settings::Loaded, logs: Recent) -> anyhow::Result<u8> {
    let started = Instant::now();
    let cfg = loaded.config.clone();
    let settings = Settings::new(path, loaded.config);
    let metrics = Arc::new(Metrics::default());
    metrics.build_info.set(&[VERSION], 1.0);
    let health = Board::default();
    let device_id = cfg.device_id();
    let (trigger, shutdown) = shutdown::channel();
    let (stopper, mut stop_requests) = shutdown::stopper();

    let (store, damage) = {
        let (dir, limits, m) = (cfg.data_dir.clone(), cfg.store.clone(), metrics.clone());
        tokio::task::spawn_blocking(move || Store::open(&dir, &limits, m)).await?
    }
    .with_context(|| format!("opening the store in {}", cfg.data_dir.display()))?;
    store.report_health(&health);

    let announce = cfg.mqtt.as_ref().map(|m| Announcer::new(Topics::new(&m.topic_prefix, &device_id)));
    let (alerts_tx, alerts_rx) = mpsc::channel(alerts::QUEUE);
    let (engine, active_alerts) = Engine::new(&cfg.alerts, store.clone(), announce.clone(), metrics.clone(), health.clone());
    let engine = std::thread::Builder::new().name("alerts".into()).spawn(move || engine.run(alerts_rx))?;
    if let Some(damage) = damage {
        let (key, message) = (damage.alert_key(), damage.message());
        alerts_tx.send(AlertInput::Event { key, severity: Severity::Critical, message }).await?;
    }
    if let Some(warning) = loaded.warning {
        log::warn!("{warning}");
        alerts_tx.send(AlertInput::Event { key: "config_overlay_ignored", severity: Severity::Major, message: warning }).await?;
    }

    let (sink, raw_presses) = PressSink::channel(metrics.clone());
    let (mut button, simulator) = gpio::backend(&cfg.gpio);
    match button.start(sink.clone()) {
        Ok(()) => health.set("gpio", Importance::Required, true, button.describe()),
        Err(e) => {
            log::error!("button unavailable: {e}");
            health.set("gpio", Importance::Required, false, e.to_string());
            let event = AlertInput::Event { key: "gpio_unavailable", severity: Severity::Critical, message: e.to_string() };
            alerts_tx.send(event).await?;
        }
    }
    let (ring_tx, ring_rx) = mpsc::channel(pipeline::QUEUE);
    let filter = tokio::spawn(gpio::run(raw_presses, ring_tx, metrics.clone(), settings.subscribe(), shutdown.clone()));

    let (stats_tx, stats_rx) = watch::channel(RingStats::default());
    let flow = RingFlow {
        store: store.clone(),
        announce: announce.clone(),
        metrics: metrics.clone(),
        recognizer: recognizer(&cfg, path, &store, &metrics, &health, &alerts_tx)?,
        alerts: alerts_tx.clone(),
        stats: stats_tx,
        budget: cfg.pipeline.budget,
    };
    // The control API of the pipeline owner; fleet commands (face/…) reach it through `faces`.
    let (faces, control_rx) = FacesHandle::channel();
    let handle = tokio::runtime::Handle::current();
    let flow = std::thread::Builder::new().name("rings".into()).spawn(move || flow.run(handle, ring_rx, control_rx))?;
    if fault::active() == Some(Fault::Unhealthy) {
        // Its own check: the recognizer keeps `pipeline` up to date and would overwrite it.
        health.set("pipeline_self_test", Importance::Required, false, "fault injection: the pipeline self-test fails");
    }

    let (samples_tx, samples_rx) = watch::channel(VecDeque::new());
    let sampler = Sampler::new(&cfg.sampler, &cfg.data_dir);
    let sampling = tokio::spawn(sampler::run(
        sampler,
        samples_tx,
        alerts_tx.clone(),
        metrics.clone(),
        health.clone(),
        settings.subscribe(),
        shutdown.clone(),
    ));
    let rules = tokio::spawn(alerts::follow_rules(settings.subscribe(), alerts_tx.clone(), shutdown.clone()));
    let maintenance = tokio::spawn(store::maintain(
        store.clone(),
        cfg.store.maintenance_interval,
        health.clone(),
        alerts_tx.clone(),
        stopper.clone(),
        shutdown.clone(),
    ));

    let layout = Layout::from_config(&cfg.update);
    let history = History::open(&store).context("opening the update history")?;
    // The slot is known from the start, so the first birth on the broker already names it.
    let (update_tx, update_rx) = watch::channel(UpdateView { slot: doorbell_slotctl::running_slot(&layout), ..UpdateView::default() });
    let (link_tx, link_rx) = watch::channel(LinkState::default());
    // A broker wait that outlasts the deadline would be reported as a missed deadline.
    let broker_timeout = cfg.update.broker_timeout.min(cfg.update.deadline.saturating_sub(cfg.update.soak));
    let mut checks: Vec<Box<dyn TrialCheck>> = vec![
        Box::new(RequiredHealth::new(health.clone())),
        Box::new(BrokerReachable::new(cfg.mqtt.as_ref().map(|m| m.url.clone()), link_rx.clone(), broker_timeout)),
    ];
    if cfg.update.canary {
        let limits = canary::Limits::from_config(&cfg.update);
        checks.push(Box::new(Canary::new(metrics.clone(), Requests::new(&cfg.data_dir).dir, limits)));
    }
    let updates = trial::Task {
        layout: layout.clone(),
        requests: Requests::new(&cfg.data_dir),
        soak: cfg.update.soak,
        history: history.clone(),
        checks,
        canary: cfg.update.canary.then(|| metrics.clone()),
        alerts: alerts_tx.clone(),
        view: update_tx,
        stop: stopper.clone(),
    };
    updates.catch_up().await;

    let listener = probe::bind(&cfg.probe).with_context(|| format!("binding the probe on {}", cfg.probe.listen))?;
    // The bound address, which differs from the configured one when it asks for port 0.
    let listen = listener.local_addr().context("reading the probe address")?;
    let view = View {
        info: Info {
            device_id: device_id.clone(),
            boot_id: status::boot_id(),
            started_ms: doorbell_base::time::now_ms(),
            started,
            gpio: button.describe(),
            listen: listen.to_string(),
        },
        health: health.clone(),
        store: store.clone(),
        samples: samples_rx,
        rings: stats_rx,
        alerts: active_alerts,
        link: cfg.mqtt.is_some().then_some(link_rx),
        update: update_rx,
        history,
    };

    // One dispatcher for fleet (MQTT) and local (control socket) commands.
    let (commands_tx, commands_rx) = mpsc::channel(32);
    let ledger = Ledger::open(&store).context("opening the command ledger")?;
    let key = match &cfg.mqtt {
        Some(mqtt) => {
            mqtt.command_key().map_err(anyhow::Error::msg)?.map(|k| VerifyingKey::from_bytes(&k)).transpose().context("mqtt.command_key")?
        }
        None => None,
    };
    let commands = Dispatcher {
        ctx: Context {
            view: view.clone(),
            alerts: alerts_tx.clone(),
            press: sink,
            logs,
            settings: settings.clone(),
            stop: stopper,
            faces,
            update_lock: Arc::default(),
        },
        store: store.clone(),
        ledger,
        announce: announce.clone(),
        max_bytes: cfg.mqtt.as_ref().map_or(0, |m| m.max_command_bytes),
        max_local_bytes: cfg.control.max_request_bytes(),
        key,
        metrics: metrics.clone(),
    };
    let dispatcher = tokio::spawn(commands.run(commands_rx, shutdown.clone()));
    // Without the socket the doorbell still rings and the fleet still commands: an alert, not
    // a failed start (a unit older than this version has no RuntimeDirectory= for it).
    let socket = cfg.control_socket();
    let control = match local::Server::bind(&socket, &cfg.control) {
        Ok(server) => Some(tokio::spawn(server.run(commands_tx.clone(), shutdown.clone()))),
        Err(e) => {
            log::error!("local control socket unavailable: {e}");
            let message = format!("local control socket unavailable (doorbell-agent faces … cannot reach the agent): {e}");
            alerts_tx.send(AlertInput::Event { key: "control_socket_unavailable", severity: Severity::Major, message }).await?;
            None
        }
    };

    // The fleet link stops last, after everything that queues messages has been stored.
    let (link_trigger, link_shutdown) = shutdown::channel();
    let mut link = None;
    if let (Some(mqtt), Some(announce)) = (&cfg.mqtt, &announce) {
        let task = Link {
            cfg: mqtt.clone(),
            topics: announce.topics().clone(),
            store: store.clone(),
            view: view.clone(),
            metrics: metrics.clone(),
            health: health.clone(),
            commands: commands_tx,
            alerts: alerts_tx.downgrade(),
            state: link_tx,
            config: settings.subscribe(),
        };
        link = Some(tokio::spawn(task.run(link_shutdown)));
    }

    let state = probe::State { view: view.clone(), metrics: metrics.clone(), simulator, config: settings.subscribe() };
    let probe = Probe::start(listener, &cfg.probe, state).map_err(|e| anyhow::anyhow!("starting the probe: {e}"))?;

    if fault::active() == Some(Fault::HangBeforeReady) {
        log::warn!("fault injection: hanging before READY");
        std::future::pending::<()>().await;
    }
    let updating = tokio::spawn(updates.run(shutdown.clone()));
    doorbell_agent::memory::shed_unused_code();
    // Caught before READY: systemd may stop us the moment we are ready, and the default
    // action of SIGTERM would end the agent without its clean stop.
    let stop_signal = stop_signals()?;
    systemd::ready(&view.line());
    log::info!(
        "doorbell-agent {VERSION} ready in {} ms: device {device_id}, button {}, control {}, probe http://{}",
        started.elapsed().as_millis(),
        button.describe(),
        socket.display(),
        listen
    );
    let supervisor = tokio::spawn(systemd::supervise(view, shutdown.clone()));

    let code = tokio::select! {
        signal = stop_signal => {
            log::info!("{signal} received: stopping");
            0
        }
        Some(stop) = stop_requests.recv() => {
            log::info!("stopping with exit code {}: {}", stop.code, stop.reason);
            stop.code
        }
    };
    systemd::stopping("stopping: finishing rings and flushing the store");
    let deadline = tokio::time::Instant::now() + STOP_BUDGET;
    trigger.fire();
    // Intake first: the button, then the tasks; the ring thread drains what was accepted.
    drop(button);
    for task in [Some(filter), Some(sampling), Some(rules), Some(maintenance), Some(supervisor), Some(updating), control, Some(dispatcher)]
        .into_iter()
        .flatten()
    {
        let _ = tokio::time::timeout_at(deadline, task).await;
    }
    drop(alerts_tx);
    let joined = tokio::time::timeout_at(
        deadline,
        tokio::task::spawn_blocking(move || {
            let _ = flow.join();
            let _ = engine.join();
        }),
    )
    .await;
    if joined.is_err() {
        log::warn!("rings and alerts did not drain within {STOP_BUDGET:?}");
    }
    // Everything is stored now: the link sends what it can and says goodbye.
    link_trigger.fire();
    if let Some(link) = link {
        let _ = tokio::time::timeout_at(deadline, link).await;
    }
    tokio::task::spawn_blocking(move || probe.stop()).await?;
    // A store that cannot write (a full or read-only card) does not turn a stop into a
    // failure: what could be written was, and the unit must not count a crash.
    let kept = store.kept_rings();
    if kept > 0 {
        log::error!("{kept} rings the store could not write are lost with this stop (they were announced)");
    }
    match tokio::task::spawn_blocking(move || store.close()).await? {
        Ok(()) => log::info!("stopped cleanly"),
        Err(e) => log::error!("stopped; the store's last flush failed: {e}"),
    }
    Ok(code)
}

/// Catches SIGTERM and SIGINT from this call on; the future names the first to arrive.
fn stop_signals() -> anyhow::Result<impl std::future::Future<Output = &'static str>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    })
}
