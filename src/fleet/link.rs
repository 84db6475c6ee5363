//! The connection to the fleet broker: one task owns rumqttc's event loop and does all the
//! publishing, so that it always knows whether the link is up.
//!
//! - Reconnects with exponential backoff and jitter (rumqttc itself retries at once).
//! - On every ConnAck: subscribe to commands, retained birth message, then re-send the
//!   whole outbox from the oldest unacknowledged message (a clean session drops rumqttc's
//!   own queue, so the durable outbox is the only truth).
//! - Outbox messages are removed only when the broker's PUBACK for that exact message
//!   arrives: rumqttc reports `Outgoing::Publish(pkid)` in the order of our publish calls,
//!   so a FIFO of the outbox keys we handed it pairs each packet id with its message.
//!   Publishing only while connected (this task sees a disconnect before it could publish
//!   again, and rumqttc clears unsent requests on a clean-session reconnect) keeps the
//!   FIFO exact.
//! - Telemetry is QoS 0 and only sent while connected.
//! - On shutdown: a clean retained `{online:false}` that waits for its PUBACK, then DISCONNECT.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, Event, EventLoop, Incoming, LastWill, MqttOptions, Outgoing, QoS, SubscribeFilter, SubscribeReasonCode, TlsConfiguration,
    Transport,
};
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep, Instant};

use crate::alerts::Input as AlertInput;
use crate::cmd::{Inbound, Origin};
use crate::config::{MqttConfig, Severity};
use crate::health::{Board, Importance};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::status::View;
use crate::store::{OutboxV1, Store};

use super::{LinkState, Topics};
use crate::tls;

/// Outbox messages handed to rumqttc and not yet acknowledged.
const WINDOW: usize = 64;
/// rumqttc's own in-flight limit: the window plus birth, responses and discovery.
const INFLIGHT: u16 = 100;
/// How often acknowledged messages are removed from the outbox and the removals flushed.
const ACK_FLUSH: Duration = Duration::from_millis(200);
/// How long the stop may take: sending what is queued, then the goodbye message.
const GOODBYE: Duration = Duration::from_millis(1500);
/// Largest MQTT packet in either direction; commands above `max_command_bytes` (and below
/// this) are still read, so they can be answered `failed` instead of breaking the link.
const MAX_PACKET: usize = 8 * 1024 * 1024;

/// Everything the link task needs.
pub struct Link {
    /// The `[mqtt]` settings.
    pub cfg: MqttConfig,
    /// The device's topics.
    pub topics: Topics,
    /// The durable outbox lives here.
    pub store: Store,
    /// Status and telemetry sources.
    pub view: View,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Health board (the degrading `mqtt` check).
    pub health: Board,
    /// Commands go to the dispatcher.
    pub commands: mpsc::Sender<Inbound>,
    /// Outbox drops are reported as an alert once the link is back. Weak: the link outlives
    /// the alert engine at shutdown and must not keep it running.
    pub alerts: mpsc::WeakSender<AlertInput>,
    /// The link state for /status and the STATUS= line.
    pub state: watch::Sender<LinkState>,
    /// The live configuration (`mqtt.telemetry_interval` is followed).
    pub config: watch::Receiver<crate::config::Config>,
}

/// Exponential backoff with jitter: the n-th consecutive failure waits a random time in
/// [d/2, d] with d = min · 2ⁿ capped at max, so a fleet that lost its broker does not
/// reconnect in lockstep.
#[derive(Debug)]
struct Backoff {
    min: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let d = self.min.saturating_mul(1 << self.failures.min(20)).min(self.max);
        self.failures += 1;
        let random = u64::from_le_bytes(uuid::Uuid::new_v4().as_bytes()[..8].try_into().unwrap_or_default());
        d / 2 + d.mul_f64((random % 1000) as f64 / 2000.0)
    }
}

fn ticker(period: Duration) -> tokio::time::Interval {
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks
}

/// What a publish handed to rumqttc was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    /// An outbox message (its key): removed once acknowledged.
    Outbox(u64),
    /// A message announced from memory (its id): forgotten once acknowledged.
    Memory(u64),
    /// The offline status sent at shutdown.
    Goodbye,
    /// Birth, telemetry, discovery: nothing to track.
    Other,
}

/// The publishing side of a connection: rumqttc's client plus the pairing of packet ids
/// with what was published.
struct Session {
    client: AsyncClient,
    /// One entry per publish handed to rumqttc, in order, until rumqttc reports its packet id.
    requested: VecDeque<Tag>,
    /// Packet id → what it carries, for QoS 1 publishes not yet acknowledged.
    sent: HashMap<u16, Tag>,
    /// The newest outbox key handed to rumqttc this session.
    cursor: Option<u64>,
    /// The newest message from memory handed to rumqttc this session.
    memory_cursor: Option<u64>,
    /// Messages after the cursors, read ahead: one store read per window, not per PUBACK
    /// (at most a window of messages, as many as rumqttc holds in flight).
    ahead: VecDeque<(Tag, OutboxV1)>,
    connected: bool,
}

impl Session {
    fn reset(&mut self) {
        self.requested.clear();
        self.sent.clear();
        self.cursor = None;
        self.memory_cursor = None;
        self.ahead.clear();
    }

    /// Outbox and memory messages handed over and not yet acknowledged.
    fn unacked(&self) -> usize {
        let outbox = |t: &Tag| matches!(t, Tag::Outbox(_) | Tag::Memory(_));
        self.requested.iter().filter(|t| outbox(t)).count() + self.sent.values().filter(|t| outbox(t)).count()
    }

    fn publish(&mut self, topic: &str, qos: QoS, retain: bool, payload: Vec<u8>, tag: Tag) -> bool {
        match self.client.try_publish(topic, qos, retain, payload) {
            Ok(()) => {
                self.requested.push_back(tag);
                true
            }
            Err(e) => {
                log::debug!("publish to {topic} deferred: {e}");
                false
            }
        }
    }

    /// rumqttc wrote a publish with `pkid`: pairs it with the oldest request. Returns the tag
    /// when the publish is already complete (QoS 0, packet id 0).
    fn written(&mut self, pkid: u16) -> Option<Tag> {
        let Some(tag) = self.requested.pop_front() else {
            log::warn!("fleet link: rumqttc sent a publish we did not request (pkid {pkid})");
            return None;
        };
        if pkid == 0 {
            return Some(tag);
        }
        self.sent.insert(pkid, tag);
        None
    }
}

impl Link {
    fn options(&self) -> anyhow::Result<MqttOptions> {
        let (host, port) = self.cfg.host_port().map_err(anyhow::Error::msg)?;
        // A test build that must fail the trial's broker check: a closed loopback port
        // refuses every attempt, while the configured URL stays in logs and reasons.
        let (host, port) = if doorbell_base::fault::active() == Some(doorbell_base::fault::Fault::NoBroker) {
            log::warn!("fault injection: connecting to 127.0.0.1:1 instead of {}", self.cfg.url);
            ("127.0.0.1".to_string(), 1)
        } else {
            (host, port)
        };
        let client_id = self.cfg.client_id.clone().unwrap_or_else(|| self.topics.device().to_string());
        let mut o = MqttOptions::new(client_id, host, port);
        o.set_keep_alive(self.cfg.keepalive)
            .set_clean_session(true)
            .set_inflight(INFLIGHT)
            .set_request_channel_capacity(usize::from(INFLIGHT) * 2)
            .set_max_packet_size(MAX_PACKET, MAX_PACKET)
            .set_last_will(LastWill::new(self.topics.status(), self.presence(false, "connection lost"), QoS::AtLeastOnce, true));
        if let Some(user) = &self.cfg.username {
            o.set_credentials(user.clone(), self.cfg.password.clone().unwrap_or_default());
        }
        if self.cfg.tls() {
            let config = tls::client_config(
                self.cfg.ca_file.as_deref(),
                self.cfg.cert_file.as_deref(),
                self.cfg.key_file.as_deref(),
                "mqtt.ca_file",
            )?;
            o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(config)));
        }
        Ok(o)
    }

    /// The retained `P/status` document.
    fn presence(&self, online: bool, state: &str) -> Vec<u8> {
        let info = &self.view.info;
        serde_json::json!({
            "online": online,
            "version": crate::VERSION,
            "slot": self.view.update.borrow().slot,
            "state": state,
            "boot_id": info.boot_id,
            "started_at": doorbell_base::time::rfc3339(info.started_ms),
            "ts": doorbell_base::time::rfc3339(doorbell_base::time::now_ms()),
        })
        .to_string()
        .into_bytes()
    }

    fn telemetry(&self) -> Vec<u8> {
        let sample = self.view.samples.borrow().back().cloned();
        let rings = self.view.rings.borrow().rings;
        let (depth, bytes) = self.store.outbox_depth();
        let m = &self.metrics;
        let results: serde_json::Map<String, serde_json::Value> = ["known", "unknown", "blocked", "no_face", "error"]
            .iter()
            .map(|r| (r.to_string(), serde_json::json!(m.ring_results.get(&[r]) as u64)))
            .collect();
        let p95_ms = |q: Option<f64>| q.map(|s| (s * 1e6).round() / 1e3);
        serde_json::json!({
            "sample": sample,
            "pipeline": {
                "rings_since_start": rings,
                "results": results,
                "stored_p95_ms": p95_ms(m.ring_latency.quantile(&[], 0.95)),
            },
            "outbox": {"depth": depth, "bytes": bytes, "dropped": m.outbox_dropped.total() as u64},
            "ts": doorbell_base::time::rfc3339(doorbell_base::time::now_ms()),
        })
        .to_string()
        .into_bytes()
    }

    fn set_state(&self, f: impl FnOnce(&mut LinkState)) {
        self.state.send_modify(f);
        let s = self.state.borrow();
        let detail = match (&s.connected, &s.last_error) {
            (true, _) => format!("connected to {}", self.cfg.url),
            (false, Some(e)) => format!("{} unreachable: {e}", self.cfg.url),
            (false, None) => format!("connecting to {}", self.cfg.url),
        };
        self.health.set("mqtt", Importance::Degrading, s.connected, detail);
        self.metrics.mqtt_connected.set(&[], f64::from(u8::from(s.connected)));
    }

    /// Runs the link until shutdown.
    pub async fn run(mut self, mut shutdown: Shutdown) {
        let options = match self.options() {
            Ok(o) => o,
            Err(e) => {
                log::error!("fleet link disabled: {e:#}");
                self.set_state(|s| s.last_error = Some(format!("{e:#}")));
                return;
            }
        };
        let (client, mut events) = AsyncClient::new(options, usize::from(INFLIGHT) * 2);
        let mut session = Session {
            client,
            requested: VecDeque::new(),
            sent: HashMap::new(),
            cursor: None,
            memory_cursor: None,
            ahead: VecDeque::new(),
            connected: false,
        };
        // Acknowledged outbox keys, removed (and flushed) together every `ACK_FLUSH`.
        let mut acked = Vec::new();
        let mut backoff = Backoff { min: self.cfg.reconnect_min, max: self.cfg.reconnect_max, failures: 0 };
        let outbox_changed = self.store.outbox_changed();
        let mut telemetry = ticker(self.cfg.telemetry_interval);
        let mut flush = tokio::time::interval(ACK_FLUSH);
        self.set_state(|_| {});

        loop {
            tokio::select! {
                _ = shutdown.recv() => break,
                event = events.poll() => match event {
                    Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                        backoff.failures = 0;
                        session.connected = true;
                        session.reset();
                        // The re-send starts from the oldest message still stored.
                        self.remove_acked(&mut acked).await;
                        self.on_connect(&mut session).await;
                        self.drain(&mut session).await;
                    }
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                        if let Some(tag) = session.written(pkid) {
                            self.acked(tag, &mut acked);
                        }
                    }
                    Ok(Event::Incoming(Incoming::PubAck(ack))) => {
                        if let Some(tag @ (Tag::Outbox(_) | Tag::Memory(_))) = session.sent.remove(&ack.pkid) {
                            self.acked(tag, &mut acked);
                            self.drain(&mut session).await;
                        }
                    }
                    Ok(Event::Incoming(Incoming::Publish(p))) => self.inbound(&p.topic, p.payload.to_vec()),
                    Ok(Event::Incoming(Incoming::SubAck(ack))) => self.subscribed(&ack.return_codes),
                    Ok(_) => {}
                    Err(e) => {
                        session.connected = false;
                        let delay = backoff.next();
                        log::warn!("fleet link to {} down: {e}; retrying in {:.1}s", self.cfg.url, delay.as_secs_f64());
                        self.metrics.errors.inc(&["fleet", "connection"]);
                        self.set_state(|s| {
                            s.connected = false;
                            s.since_ms = doorbell_base::time::now_ms();
                            s.last_error = Some(e.to_string());
                            s.retry_at_ms = Some(doorbell_base::time::now_ms() + delay.as_millis() as u64);
                        });
                        tokio::select! {
                            _ = shutdown.recv() => break,
                            _ = sleep(delay) => {}
                        }
                    }
                },
                _ = outbox_changed.notified(), if session.connected => self.drain(&mut session).await,
                Ok(()) = self.config.changed() => {
                    let new = self.config.borrow_and_update().mqtt.as_ref().map(|m| m.telemetry_interval);
                    if let Some(new) = new.filter(|new| *new != self.cfg.telemetry_interval) {
                        log::info!("telemetry every {} from now on", humantime::format_duration(new));
                        self.cfg.telemetry_interval = new;
                        telemetry = ticker(new);
                    }
                }
                _ = telemetry.tick(), if session.connected => {
                    let payload = self.telemetry();
                    session.publish(&self.topics.telemetry(), QoS::AtMostOnce, false, payload, Tag::Other);
                }
                _ = flush.tick(), if !acked.is_empty() => self.remove_acked(&mut acked).await,
            }
        }
        self.goodbye(session, events, &mut acked).await;
        self.remove_acked(&mut acked).await;
    }

    /// Removes the acknowledged messages from the outbox, durably. Not at each PUBACK: the
    /// store's outbox lock is held across every write's flush, and this task runs on the
    /// runtime's only thread. A removal lost in a crash only means the message is sent again
    /// (consumers de-duplicate by id).
    async fn remove_acked(&self, acked: &mut Vec<u64>) {
        if acked.is_empty() {
            return;
        }
        let (store, keys) = (self.store.clone(), std::mem::take(acked));
        let removed = tokio::task::spawn_blocking(move || {
            for key in keys {
                if let Err(e) = store.outbox_acked(key) {
                    log::error!("fleet link: removing acknowledged message {key}: {e}");
                }
            }
            store.flush()
        });
        if let Ok(Err(e)) = removed.await {
            log::error!("fleet link: flushing acknowledged outbox removals failed: {e}");
        }
    }

    async fn on_connect(&self, session: &mut Session) {
        log::debug!("fleet link to {}: connected, subscribing to commands", self.cfg.url);
        self.set_state(|s| {
            if !s.connected && s.since_ms > 0 {
                s.reconnects += 1;
            }
            s.connected = true;
            s.connects += 1;
            s.since_ms = doorbell_base::time::now_ms();
            s.retry_at_ms = None;
        });
        self.metrics.mqtt_connects.inc(&[]);
        // One SUBSCRIBE for both filters: its SubAck is the moment commands can arrive.
        let filters = self.topics.command_filters().map(|f| SubscribeFilter::new(f, QoS::AtLeastOnce));
        if let Err(e) = session.client.try_subscribe_many(filters) {
            log::error!("fleet link: cannot subscribe to commands: {e}");
        }
        let birth = self.presence(true, if self.view.health.ready() { "running" } else { "starting" });
        session.publish(&self.topics.status(), QoS::AtLeastOnce, true, birth, Tag::Other);
        if self.cfg.home_assistant {
            for (topic, config) in super::discovery::configs(&self.topics, &self.cfg.discovery_prefix) {
                session.publish(&topic, QoS::AtLeastOnce, true, config, Tag::Other);
            }
        }
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.take_outbox_drops()).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => {
                let message = format!("{n} queued messages were dropped while the broker was unreachable (outbox full)");
                log::warn!("{message}");
                if let Some(alerts) = self.alerts.upgrade() {
                    let _ = alerts.try_send(AlertInput::Event { key: "outbox_overflow", severity: Severity::Major, message });
                }
            }
            Ok(Err(e)) => log::error!("fleet link: reading the outbox drop count failed: {e}"),
            Err(e) => log::error!("fleet link: {e}"),
        }
    }

    /// The broker confirmed the command subscription: from here on commands reach us, so
    /// this (not the ConnAck) is when the link is reported up. A broker ACL that refuses
    /// a filter is an operator's misconfiguration worth an error.
    fn subscribed(&self, codes: &[SubscribeReasonCode]) {
        if codes.iter().any(|c| matches!(c, SubscribeReasonCode::Failure)) {
            log::error!(
                "fleet link to {}: the broker refused a command subscription (check its ACL for {:?})",
                self.cfg.url,
                self.topics.command_filters()
            );
            self.metrics.errors.inc(&["fleet", "subscribe_refused"]);
        }
        log::info!("fleet link to {} up", self.cfg.url);
    }

    /// Hands outbox messages to rumqttc up to the window.
    async fn drain(&self, session: &mut Session) {
        while session.connected && session.unacked() < WINDOW {
            if session.ahead.is_empty() {
                // Read on the blocking pool: it may wait for a store write's flush (see
                // remove_acked). What only memory holds goes after what the outbox holds.
                let (store, after, memory_after) = (self.store.clone(), session.cursor, session.memory_cursor);
                let batch = tokio::task::spawn_blocking(move || {
                    let stored: Vec<_> = store.outbox_after(after, WINDOW).into_iter().map(|(k, m)| (Tag::Outbox(k), m)).collect();
                    if !stored.is_empty() {
                        return stored;
                    }
                    store.unstored_after(memory_after, WINDOW).into_iter().map(|(id, m)| (Tag::Memory(id), m)).collect()
                })
                .await
                .unwrap_or_default();
                if batch.is_empty() {
                    return;
                }
                session.ahead = batch.into();
            }
            let Some((tag, m)) = session.ahead.pop_front() else { return };
            let qos = if m.qos == 0 { QoS::AtMostOnce } else { QoS::AtLeastOnce };
            if !session.publish(&m.topic, qos, m.retain, m.payload, tag) {
                // rumqttc's queue is full: read again from the cursor when acknowledgements free it.
                session.ahead.clear();
                return;
            }
            match tag {
                Tag::Outbox(key) => session.cursor = Some(key),
                Tag::Memory(id) => session.memory_cursor = Some(id),
                Tag::Goodbye | Tag::Other => {}
            }
            self.metrics.mqtt_published.inc(&[]);
        }
    }

    /// The broker has a message (PUBACK, or written for QoS 0): counted; an outbox message
    /// is queued for removal, one from memory forgotten.
    fn acked(&self, tag: Tag, acked: &mut Vec<u64>) {
        match tag {
            Tag::Outbox(key) => acked.push(key),
            Tag::Memory(id) => self.store.unstored_acked(id),
            Tag::Goodbye | Tag::Other => return,
        }
        self.metrics.mqtt_acked.inc(&[]);
    }

    fn inbound(&self, topic: &str, payload: Vec<u8>) {
        let Some(command) = self.topics.parse_command(topic) else { return };
        self.metrics.commands.inc(&["received"]);
        if let Err(e) = self.commands.try_send(Inbound { origin: Origin::Fleet(command), payload }) {
            let Inbound { origin: Origin::Fleet(topic), payload } = e.into_inner() else { return };
            log::warn!("fleet link: command {} dropped: too many commands in progress", topic.name);
            self.metrics.commands.inc(&["busy"]);
            let (announce, store) = (super::Announcer::new(self.topics.clone()), self.store.clone());
            // Off the runtime thread: finding the id parses the payload, up to the packet limit.
            tokio::task::spawn_blocking(move || {
                let response = crate::cmd::Response::rejected(&topic.name, &payload, "busy: too many commands in progress");
                store.outbox_push(&[announce.response(&response.to_json())])
            });
        }
    }

    /// At shutdown: sends what the last rings and alerts queued, then the retained offline
    /// status (waiting for its PUBACK), then DISCONNECT, all within `GOODBYE`.
    async fn goodbye(&self, mut session: Session, mut events: EventLoop, acked: &mut Vec<u64>) {
        if !session.connected {
            return;
        }
        let deadline = Instant::now() + GOODBYE;
        self.drain(&mut session).await;
        let payload = self.presence(false, "stopped");
        // The last part of the budget is kept for the offline status, whatever is still unsent.
        let goodbye_due = deadline - Duration::from_millis(500);
        let mut said_goodbye = false;
        loop {
            if !said_goodbye && (session.unacked() == 0 || Instant::now() >= goodbye_due) {
                said_goodbye = session.publish(&self.topics.status(), QoS::AtLeastOnce, true, payload.clone(), Tag::Goodbye);
            }
            let wake = if said_goodbye { deadline } else { goodbye_due.max(Instant::now()) };
            let event = match tokio::time::timeout_at(wake, events.poll()).await {
                Ok(Ok(event)) => event,
                Err(_) if !said_goodbye => continue,
                _ => break,
            };
            match event {
                Event::Outgoing(Outgoing::Publish(pkid)) => {
                    if let Some(tag) = session.written(pkid) {
                        self.acked(tag, acked);
                    }
                }
                Event::Incoming(Incoming::PubAck(ack)) => match session.sent.remove(&ack.pkid) {
                    Some(Tag::Goodbye) => break,
                    Some(tag @ (Tag::Outbox(_) | Tag::Memory(_))) => {
                        self.acked(tag, acked);
                        self.drain(&mut session).await;
                    }
                    _ => {}
                },
                _ => {}
            }
        }
        let _ = session.client.try_disconnect();
        while let Ok(Ok(event)) = tokio::time::timeout_at(deadline, events.poll()).await {
            if event == Event::Outgoing(Outgoing::Disconnect) {
                break;
            }
        }
        self.set_state(|s| s.connected = false);
        log::info!("fleet link closed (offline status {})", if said_goodbye { "published" } else { "not sent: time ran out" });
    }
}
