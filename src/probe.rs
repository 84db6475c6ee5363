//! Local HTTP probe on tiny-http: /health, /ready, /metrics, /status, /alerts, /updates, /rings and, with the
//! simulated button, POST /simulate/press.
//!
//! Runs on its own threads. The listener is bound by the agent and handed to the vendored
//! tiny-http with limits: bounded connections (oldest evicted), socket timeouts, a header
//! size and time limit. Handlers only read in-memory state or small store ranges, so a
//! request costs microseconds and a flood cannot grow threads or memory.
// Reads bytes from outside the process: no index or slice that can panic.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::io::Read;
use std::net::TcpListener;
use std::sync::Arc;
use std::thread::JoinHandle;

use tiny_http::{Header, Limits, Method, Request, Response, Server};

use crate::config::ProbeConfig;
use crate::gpio::Simulator;
use crate::health::Status;
use crate::metrics::Metrics;
use crate::status::View;

/// Request handler threads.
const WORKERS: usize = 2;
/// Largest request body accepted (only /simulate/press takes one, and ignores it).
const MAX_BODY: usize = 4096;
/// Largest `limit` on /alerts.
const MAX_ALERTS: usize = 1000;
/// Largest `limit` on /rings.
const MAX_RINGS: usize = 1000;

/// Everything the handlers read.
#[derive(Clone)]
pub struct State {
    /// Status sources.
    pub view: View,
    /// Metrics to render and to count requests in.
    pub metrics: Arc<Metrics>,
    /// Present only with the simulated button backend.
    pub simulator: Option<Simulator>,
    /// The live configuration (the sampler interval judges sample freshness).
    pub config: tokio::sync::watch::Receiver<crate::config::Config>,
}

/// The running probe.
pub struct Probe {
    server: Arc<Server>,
    workers: Vec<JoinHandle<()>>,
}

/// Binds the configured address (before READY, so a port clash fails the start).
pub fn bind(cfg: &ProbeConfig) -> std::io::Result<TcpListener> {
    TcpListener::bind(cfg.listen)
}

impl Probe {
    /// Starts serving on `listener`.
    pub fn start(listener: TcpListener, cfg: &ProbeConfig, state: State) -> Result<Probe, String> {
        let limits = Limits {
            max_connections: cfg.max_connections,
            read_timeout: cfg.timeout,
            write_timeout: cfg.timeout,
            header_deadline: cfg.timeout,
            max_header_bytes: 8 * 1024,
        };
        let server = Arc::new(Server::from_listener_with_limits(listener, None, limits).map_err(|e| e.to_string())?);
        let workers = (0..WORKERS)
            .map(|i| {
                let server = server.clone();
                let state = state.clone();
                std::thread::Builder::new()
                    .name(format!("probe-{i}"))
                    .spawn(move || {
                        // recv() errs only when the server is unblocked for shutdown.
                        while let Ok(request) = server.recv() {
                            handle(&state, request);
                        }
                    })
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Probe { server, workers })
    }

    /// Stops the handler threads.
    pub fn stop(self) {
        for _ in &self.workers {
            self.server.unblock();
        }
        for w in self.workers {
            let _ = w.join();
        }
    }
}

struct Answer {
    code: u16,
    body: String,
    content_type: &'static str,
    allow: Option<&'static str>,
}

fn json(code: u16, value: serde_json::Value) -> Answer {
    Answer { code, body: value.to_string(), content_type: "application/json", allow: None }
}

fn error(code: u16, message: &str) -> Answer {
    json(code, serde_json::json!({"error": message, "code": code}))
}

fn handle(state: &State, mut request: Request) {
    let answer = route(state, &mut request);
    state.metrics.http_requests.inc(&[&answer.code.to_string()]);
    let kind = match answer.code {
        400 => Some("probe_bad_request"),
        404 => Some("probe_unknown_path"),
        405 => Some("probe_bad_method"),
        413 => Some("probe_too_large"),
        _ => None,
    };
    if let Some(kind) = kind {
        state.metrics.security_events.inc(&[kind]);
    }
    let mut response = Response::from_string(answer.body).with_status_code(answer.code);
    if let Ok(h) = Header::from_bytes("Content-Type", answer.content_type) {
        response.add_header(h);
    }
    if let Some(allow) = answer.allow.and_then(|a| Header::from_bytes("Allow", a).ok()) {
        response.add_header(allow);
    }
    // A client that went away mid-answer is its own problem.
    let _ = request.respond(response);
}

fn route(state: &State, request: &mut Request) -> Answer {
    let url = request.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let method = request.method().clone();
    let allowed: &'static str = match path {
        "/health" | "/ready" | "/metrics" | "/status" | "/alerts" | "/updates" | "/rings" => "GET",
        "/simulate/press" if state.simulator.is_some() => "POST",
        _ => return error(404, "no such endpoint"),
    };
    let wanted = if allowed == "GET" { Method::Get } else { Method::Post };
    if method != wanted {
        return Answer { allow: Some(allowed), ..error(405, &format!("{path} accepts {allowed} only")) };
    }
    match path {
        "/health" => health(state),
        "/ready" => {
            let ready = state.view.health.ready();
            json(if ready { 200 } else { 503 }, serde_json::json!({"ready": ready}))
        }
        "/metrics" => {
            refresh_checks(state);
            refresh_gauges(state);
            Answer { code: 200, body: state.metrics.render(), content_type: "text/plain; version=0.0.4; charset=utf-8", allow: None }
        }
        "/status" => {
            refresh_checks(state);
            json(200, state.view.json())
        }
        "/alerts" => alerts(state, query),
        "/updates" => updates(state, query),
        "/rings" => rings(state, query),
        _ => simulate_press(state, request),
    }
}

/// The checks that are read, not pushed: the samples' age and the store's last write.
fn refresh_checks(state: &State) {
    state.view.store.report_health(&state.view.health);
    let samples = state.view.samples.borrow();
    let interval = state.config.borrow().sampler.interval;
    if let Some((ok, detail)) = crate::sampler::freshness(&samples, interval, doorbell_base::time::now_ms()) {
        state.view.health.set("sampler", crate::health::Importance::Degrading, ok, detail);
    }
}

fn refresh_gauges(state: &State) {
    // The store's gauges move with every ring; the maintenance pass alone would be 30 s late.
    state.view.store.update_gauges();
    let report = state.view.health.report();
    for (name, check) in &report.checks {
        state.metrics.health_check.set(&[name], f64::from(u8::from(check.ok)));
    }
    state.metrics.health_score.set(&[], report.score);
    state.metrics.uptime.set(&[], state.view.info.started.elapsed().as_secs_f64().floor());
}

fn health(state: &State) -> Answer {
    refresh_checks(state);
    let report = state.view.health.report();
    let code = if report.status == Status::Unhealthy { 503 } else { 200 };
    json(code, serde_json::json!({"status": report.status, "score": report.score, "checks": report.checks}))
}

fn alerts(state: &State, query: &str) -> Answer {
    let mut active_only = true;
    let mut limit = 100;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("state", "active")) => active_only = true,
            Some(("state", "all")) => active_only = false,
            Some(("limit", n)) => match n.parse::<usize>() {
                Ok(n) if (1..=MAX_ALERTS).contains(&n) => limit = n,
                _ => return error(400, &format!("limit must be a number from 1 to {MAX_ALERTS}")),
            },
            _ => return error(400, "query takes state=active|all and limit=N"),
        }
    }
    let list: Vec<serde_json::Value> = state.view.store.alerts(active_only, limit).iter().map(|(_, a)| a.to_json()).collect();
    json(200, serde_json::Value::Array(list))
}

fn updates(state: &State, query: &str) -> Answer {
    match limit_only(query, crate::update::history::KEPT) {
        Ok(limit) => json(200, serde_json::Value::Array(state.view.history.list(limit).iter().map(|e| e.to_json()).collect())),
        Err(answer) => answer,
    }
}

/// The newest stored rings, newest first: what survived in the store, as an operator on the
/// device (or a test after a power cut) checks it.
fn rings(state: &State, query: &str) -> Answer {
    match limit_only(query, MAX_RINGS) {
        Ok(limit) => json(200, serde_json::Value::Array(state.view.store.rings(limit).iter().map(crate::store::RingV1::to_json).collect())),
        Err(answer) => answer,
    }
}

/// A query of `limit=N` alone (1..=max, default 20), or the 400 answer saying what is allowed.
fn limit_only(query: &str, max: usize) -> Result<usize, Answer> {
    match query.split_once('=') {
        None if query.is_empty() => Ok(20.min(max)),
        Some(("limit", n)) => match n.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(error(400, &format!("limit must be a number from 1 to {max}"))),
        },
        _ => Err(error(400, "query takes limit=N")),
    }
}

fn simulate_press(state: &State, request: &mut Request) -> Answer {
    if request.body_length().is_some_and(|n| n > MAX_BODY) {
        return error(413, &format!("body larger than {MAX_BODY} bytes"));
    }
    // Drain a small body (chunked ones are cut at the limit) so keep-alive stays in sync.
    let mut sink = Vec::new();
    if request.as_reader().take(MAX_BODY as u64 + 1).read_to_end(&mut sink).is_err() || sink.len() > MAX_BODY {
        return error(413, &format!("body larger than {MAX_BODY} bytes"));
    }
    match &state.simulator {
        Some(sim) if sim.press() => json(202, serde_json::json!({"accepted": true})),
        Some(_) => error(503, "press queue is full"),
        None => error(404, "no such endpoint"),
    }
}
