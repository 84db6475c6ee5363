//! Alerts: the rule engine's owner. Turns readings, ring outcomes and one-off events into
//! alerts with a raise → (acknowledge) → clear lifecycle, and persists every transition.
//!
//! The engine runs on its own thread because every transition ends in a store flush
//! (blocking I/O). An alert is logged and published as active only after the flush; a
//! transition that cannot be written (full disk) is kept in memory and retried on the
//! next input, so nothing is lost while the process lives.

pub mod rules;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use crate::config::{AlertsConfig, RuleConfig, Severity};
use crate::fleet::Announcer;
use crate::health::{Board, Importance};
use crate::metrics::Metrics;
use crate::store::{AlertState, AlertV1, Damage, RingResult, Store};
use rules::{Rule, Transition};

/// Inputs queued to the engine.
pub const QUEUE: usize = 64;

/// Reply to an operator action on an alert.
pub type Reply = oneshot::Sender<Result<AlertV1, String>>;

/// What the engine consumes.
#[derive(Debug)]
pub enum Input {
    /// Fresh readings (from the sampler).
    Readings(Vec<(&'static str, f64)>),
    /// A ring has been decided.
    Ring(RingResult),
    /// A one-off condition (e.g. `store_reset`) that stays raised until an operator clears it.
    Event {
        /// Alert key.
        key: &'static str,
        /// Severity.
        severity: Severity,
        /// What happened.
        message: String,
    },
    /// An operator has seen the alert with this id (or key).
    Ack(String, Reply),
    /// An operator resolves the alert with this id (or key).
    Clear(String, Reply),
    /// The rules changed (`config/set alerts.*`).
    Rules(AlertsConfig),
}

/// Damage the store found at a reopening: a critical event alert.
impl From<Damage> for Input {
    fn from(damage: Damage) -> Input {
        Input::Event { key: damage.alert_key(), severity: Severity::Critical, message: damage.message() }
    }
}

#[derive(Debug, Clone)]
struct Tracked {
    store_key: Option<u64>,
    alert: AlertV1,
    // Announced from memory (`stored: false`) because the store could not write it.
    announced: bool,
}

/// The engine's state; `run` consumes it on its own thread.
pub struct Engine {
    rules: Vec<Rule>,
    latest: HashMap<&'static str, f64>,
    rings: VecDeque<Instant>,
    errors: VecDeque<Instant>,
    active: BTreeMap<String, Tracked>,
    unsaved: VecDeque<Tracked>,
    store: Store,
    announce: Option<Announcer>,
    metrics: Arc<Metrics>,
    health: Board,
    active_tx: watch::Sender<Vec<AlertV1>>,
}

/// The key of the critical alert raised while the store cannot write.
pub const STORE_UNWRITABLE: &str = "store_unwritable";

/// The effective rule list: built-ins (unless disabled) overridden by name by the operator's.
pub fn effective_rules(cfg: &AlertsConfig) -> Vec<RuleConfig> {
    let mut rules = if cfg.builtin { rules::builtin() } else { Vec::new() };
    for rule in &cfg.rule {
        rules.retain(|r| r.name != rule.name);
        rules.push(rule.clone());
    }
    rules
}

impl Engine {
    /// An engine with the configured rules and the active alerts restored from the store.
    pub fn new(
        cfg: &AlertsConfig,
        store: Store,
        announce: Option<Announcer>,
        metrics: Arc<Metrics>,
        health: Board,
    ) -> (Engine, watch::Receiver<Vec<AlertV1>>) {
        let (active_tx, active_rx) = watch::channel(Vec::new());
        let mut rules: Vec<Rule> = effective_rules(cfg).into_iter().map(Rule::new).collect();
        let mut active = BTreeMap::new();
        // Oldest first, so the newest occurrence of a key wins.
        for (key, alert) in store.alerts(true, usize::MAX).into_iter().rev() {
            if let Some(rule) = rules.iter_mut().find(|r| r.cfg.name == alert.rule) {
                rule.restore_active();
            }
            active.insert(alert.key.clone(), Tracked { store_key: Some(key), alert, announced: false });
        }
        let mut engine = Engine {
            rules,
            latest: HashMap::new(),
            rings: VecDeque::new(),
            errors: VecDeque::new(),
            active,
            unsaved: VecDeque::new(),
            store,
            announce,
            metrics,
            health,
            active_tx,
        };
        engine.publish();
        (engine, active_rx)
    }

    /// Handles inputs until every sender is gone, then persists what is left.
    pub fn run(mut self, mut rx: mpsc::Receiver<Input>) {
        while let Some(input) = rx.blocking_recv() {
            self.handle(input, Instant::now());
        }
        self.persist();
        if !self.unsaved.is_empty() {
            log::error!("{} alert transitions could not be stored before exit", self.unsaved.len());
        }
    }

    /// Applies one input at monotonic time `now`.
    pub fn handle(&mut self, input: Input, now: Instant) {
        match input {
            Input::Readings(readings) => self.latest.extend(readings),
            Input::Ring(result) => {
                self.rings.push_back(now);
                if result == RingResult::Error {
                    self.errors.push_back(now);
                }
            }
            Input::Event { key, severity, message } => self.raise(key, key, severity, message, None, None),
            Input::Ack(id, reply) => {
                let _ = reply.send(self.operator(&id, AlertState::Acknowledged, now));
            }
            Input::Clear(id, reply) => {
                let _ = reply.send(self.operator(&id, AlertState::Cleared, now));
            }
            Input::Rules(cfg) => self.reconfigure(&cfg),
        }
        let windows = [(&mut self.rings, 60, "rings_1m"), (&mut self.errors, 300, "pipeline_errors_5m")];
        for (window, secs, name) in windows {
            while window.front().is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(secs)) {
                window.pop_front();
            }
            self.latest.insert(name, window.len() as f64);
        }
        self.follow_store();
        self.evaluate(now);
        self.persist();
    }

    /// A store that cannot write is a critical alert of its own, cleared once writes work
    /// again; while it lasts the alert lives in memory (announced `stored: false`).
    fn follow_store(&mut self) {
        match self.store.write_error() {
            Some(e) => {
                self.raise(STORE_UNWRITABLE, STORE_UNWRITABLE, Severity::Critical, format!("the store cannot write: {e}"), None, None)
            }
            None => self.clear(STORE_UNWRITABLE, None),
        }
    }

    /// Applies a new rule set: unchanged rules keep their state; alerts raised by a rule
    /// that no longer exists are cleared, since nothing would ever clear them.
    fn reconfigure(&mut self, cfg: &AlertsConfig) {
        let mut old: Vec<Rule> = std::mem::take(&mut self.rules);
        for new in effective_rules(cfg) {
            let rule = match old.iter().position(|r| r.cfg == new) {
                Some(i) => old.swap_remove(i),
                None => {
                    let mut rule = Rule::new(new);
                    if self.active.values().any(|t| t.alert.rule == rule.cfg.name) {
                        rule.restore_active();
                    }
                    rule
                }
            };
            self.rules.push(rule);
        }
        let gone: Vec<String> =
            old.iter().map(|r| r.cfg.name.clone()).filter(|name| !self.rules.iter().any(|r| &r.cfg.name == name)).collect();
        for name in &gone {
            let keys: Vec<String> = self.active.iter().filter(|(_, t)| &t.alert.rule == name).map(|(k, _)| k.clone()).collect();
            for key in keys {
                if let Some(t) = self.active.get_mut(&key) {
                    t.alert.message = format!("{} (cleared: rule removed)", t.alert.message);
                }
                self.clear(&key, None);
            }
        }
        log::info!(
            "alert rules reconfigured: {} rules{}",
            self.rules.len(),
            if gone.is_empty() { String::new() } else { format!(", removed {}", gone.join(", ")) }
        );
    }

    fn evaluate(&mut self, now: Instant) {
        let mut transitions = Vec::new();
        for rule in &mut self.rules {
            let Some(value) = self.latest.get(rule.cfg.metric.as_str()) else { continue };
            if let Some(t) = rule.evaluate(now, *value) {
                transitions.push((rule.cfg.name.clone(), rule.cfg.severity, t));
            }
        }
        for (name, severity, transition) in transitions {
            match transition {
                Transition::Raise { value, threshold, message } => {
                    self.raise(&name, &name, severity, message, Some(value), Some(threshold));
                }
                Transition::Clear { value } => self.clear(&name, Some(value)),
                Transition::Suppressed => self.metrics.alerts_suppressed.inc(&[&name]),
            }
        }
    }

    fn raise(&mut self, key: &str, rule: &str, severity: Severity, message: String, value: Option<f64>, threshold: Option<f64>) {
        if self.active.contains_key(key) {
            return;
        }
        let now = doorbell_base::time::now_ms();
        let alert = AlertV1 {
            id: uuid::Uuid::new_v4().simple().to_string(),
            key: key.into(),
            rule: rule.into(),
            severity,
            state: AlertState::Raised,
            message,
            value,
            threshold,
            raised_ms: now,
            updated_ms: now,
        };
        let tracked = Tracked { store_key: None, alert, announced: false };
        self.active.insert(key.into(), tracked.clone());
        self.unsaved.push_back(tracked);
    }

    fn clear(&mut self, key: &str, value: Option<f64>) {
        let Some(mut tracked) = self.active.remove(key) else { return };
        tracked.announced = false;
        tracked.alert.state = AlertState::Cleared;
        tracked.alert.updated_ms = doorbell_base::time::now_ms();
        if value.is_some() {
            tracked.alert.value = value;
        }
        self.unsaved.push_back(tracked);
    }

    fn operator(&mut self, id: &str, to: AlertState, now: Instant) -> Result<AlertV1, String> {
        let key = self
            .active
            .iter()
            .find(|(k, t)| t.alert.id == id || k.as_str() == id)
            .map(|(k, _)| k.clone())
            .ok_or_else(|| format!("no active alert with id or key `{id}`"))?;
        if to == AlertState::Cleared {
            if let Some(rule) = self.rules.iter_mut().find(|r| r.cfg.name == key) {
                rule.cleared_by_operator(now);
            }
            self.clear(&key, None);
        } else if let Some(tracked) = self.active.get_mut(&key) {
            tracked.alert.state = AlertState::Acknowledged;
            tracked.alert.updated_ms = doorbell_base::time::now_ms();
            let copy = Tracked { announced: false, ..tracked.clone() };
            self.unsaved.push_back(copy);
        }
        let result = self.unsaved.back().map(|t| t.alert.clone()).ok_or("nothing changed")?;
        self.persist();
        if self.unsaved.is_empty() {
            Ok(result)
        } else {
            Err("the store is not writable; the change is kept and retried".into())
        }
    }

    /// Writes pending transitions in order; stops at the first failure and retries later.
    fn persist(&mut self) {
        let mut changed = false;
        while let Some(mut tracked) = self.unsaved.pop_front() {
            let messages = self.announce.as_ref().map(|a| a.alert(&tracked.alert)).unwrap_or_default();
            let written = match tracked.store_key {
                Some(k) => self.store.update_alert(k, &tracked.alert, &messages).map(|()| k),
                None => self.store.insert_alert(&tracked.alert, &messages),
            };
            match written {
                Ok(k) => {
                    tracked.store_key = Some(k);
                    // Later transitions of the same alert and the live copy learn its key.
                    for t in self.unsaved.iter_mut().chain(self.active.values_mut()) {
                        if t.alert.id == tracked.alert.id {
                            t.store_key = Some(k);
                        }
                    }
                    let a = &tracked.alert;
                    self.metrics.alerts.inc(&[a.state.as_str(), a.severity.as_str()]);
                    log::info!(
                        "alert {} stored: key={} id={} severity={} message={:?}",
                        a.state.as_str(),
                        a.key,
                        a.id,
                        a.severity.as_str(),
                        a.message
                    );
                    changed = true;
                }
                Err(e) => {
                    self.metrics.errors.inc(&["alerts", "store_write"]);
                    log::error!("cannot store alert {} ({}): {e}; will retry", tracked.alert.key, tracked.alert.state.as_str());
                    self.unsaved.push_front(tracked);
                    changed |= self.announce_unsaved();
                    break;
                }
            }
        }
        if changed {
            self.publish();
        }
    }

    /// Announces from memory, `stored: false`, every transition waiting for the store that
    /// has not been yet: the fleet hears of it now, the store gets it when it can write.
    fn announce_unsaved(&mut self) -> bool {
        let Some(announce) = &self.announce else { return false };
        let mut any = false;
        for t in self.unsaved.iter_mut().filter(|t| !t.announced) {
            self.store.announce_unstored(announce.alert_unstored(&t.alert));
            t.announced = true;
            if let Some(live) = self.active.get_mut(&t.alert.key).filter(|l| l.alert.id == t.alert.id) {
                live.announced = true;
            }
            log::warn!("alert {} ({}) announced from memory (stored: false)", t.alert.key, t.alert.state.as_str());
            any = true;
        }
        any
    }

    fn publish(&mut self) {
        let active: Vec<AlertV1> = self.active.values().filter(|t| t.store_key.is_some() || t.announced).map(|t| t.alert.clone()).collect();
        for severity in [Severity::Critical, Severity::Major, Severity::Minor, Severity::Warning] {
            let n = active.iter().filter(|a| a.severity == severity).count();
            self.metrics.alerts_active.set(&[severity.as_str()], n as f64);
        }
        let critical: Vec<&str> = active.iter().filter(|a| a.severity == Severity::Critical).map(|a| a.key.as_str()).collect();
        let detail = if critical.is_empty() { "no critical alert".to_string() } else { format!("critical: {}", critical.join(", ")) };
        self.health.set("alerts", Importance::Degrading, critical.is_empty(), detail);
        self.active_tx.send_replace(active);
    }
}

/// Forwards rule changes of the live configuration to the engine until shutdown.
pub async fn follow_rules(
    mut config: watch::Receiver<crate::config::Config>,
    engine: mpsc::Sender<Input>,
    mut shutdown: crate::shutdown::Shutdown,
) {
    let mut current = config.borrow_and_update().alerts.clone();
    loop {
        tokio::select! {
            _ = shutdown.recv() => return,
            changed = config.changed() => if changed.is_err() { return },
        }
        let new = config.borrow_and_update().alerts.clone();
        if new != current && engine.send(Input::Rules(new.clone())).await.is_ok() {
            current = new;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StoreConfig;

    fn engine(dir: &std::path::Path, cfg: &AlertsConfig) -> (Engine, watch::Receiver<Vec<AlertV1>>, Store) {
        let metrics = Arc::new(Metrics::default());
        let (store, _) = Store::open(dir, &StoreConfig::default(), metrics.clone()).unwrap();
        let (e, rx) = Engine::new(cfg, store.clone(), None, metrics, Board::default());
        (e, rx, store)
    }

    fn storm_rule() -> AlertsConfig {
        let rule: RuleConfig = toml::from_str(
            "name = \"ring_storm\"\nmetric = \"rings_1m\"\nop = \">=\"\nthreshold = 3.0\nclear_threshold = 1.0\nseverity = \"minor\"\ncooldown = \"0s\"",
        )
        .unwrap();
        AlertsConfig { builtin: false, rule: vec![rule] }
    }

    #[test]
    fn rings_raise_then_window_clears_and_both_are_stored() {
        let dir = tempfile::tempdir().unwrap();
        let (mut e, rx, store) = engine(dir.path(), &storm_rule());
        let t0 = Instant::now();
        for i in 0..3 {
            e.handle(Input::Ring(RingResult::NoFace), t0 + Duration::from_millis(i));
        }
        assert_eq!(rx.borrow().len(), 1);
        let stored = store.alerts(true, 10);
        assert_eq!(stored[0].1.key, "ring_storm");
        e.handle(Input::Readings(vec![]), t0 + Duration::from_secs(61));
        assert!(rx.borrow().is_empty());
        assert_eq!(store.alerts(false, 10)[0].1.state, AlertState::Cleared);
    }

    #[test]
    fn ack_then_clear_and_restart_restores_active() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut e, _rx, _s) = engine(dir.path(), &AlertsConfig { builtin: false, rule: vec![] });
            e.handle(Input::Event { key: "store_reset", severity: Severity::Critical, message: "m".into() }, Instant::now());
        }
        let (mut e, rx, _s) = engine(dir.path(), &AlertsConfig { builtin: false, rule: vec![] });
        assert_eq!(rx.borrow()[0].key, "store_reset", "active alert survives a restart");
        let (tx, mut ack) = oneshot::channel();
        e.handle(Input::Ack("store_reset".into(), tx), Instant::now());
        assert_eq!(ack.try_recv().unwrap().unwrap().state, AlertState::Acknowledged);
        let (tx, mut clear) = oneshot::channel();
        e.handle(Input::Clear("store_reset".into(), tx), Instant::now());
        assert_eq!(clear.try_recv().unwrap().unwrap().state, AlertState::Cleared);
        assert!(rx.borrow().is_empty());
        let (tx, mut again) = oneshot::channel();
        e.handle(Input::Clear("store_reset".into(), tx), Instant::now());
        assert!(again.try_recv().unwrap().is_err());
    }

    #[test]
    fn operator_rule_replaces_builtin_of_same_name() {
        let mut cfg = storm_rule();
        cfg.builtin = true;
        cfg.rule[0].name = "cpu_high".into();
        let rules = effective_rules(&cfg);
        assert_eq!(rules.iter().filter(|r| r.name == "cpu_high").count(), 1);
        assert_eq!(rules.iter().find(|r| r.name == "cpu_high").unwrap().metric, "rings_1m");
    }
}
