//! The durable writes behind every ring and alert: insert + flush on real sled files in a
//! temp dir (on the SD card of a Pi, this is the cost that dominates a ring).

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use doorbell_agent::config::{Severity, StoreConfig};
use doorbell_agent::metrics::Metrics;
use doorbell_agent::store::{AlertState, AlertV1, RingResult, RingV1, StageMs, Store};

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (store, _) = Store::open(dir.path(), &StoreConfig::default(), Arc::new(Metrics::default())).expect("open store");
    let mut seq = 0;
    c.bench_function("store/put_ring_flushed", |b| {
        b.iter(|| {
            seq += 1;
            let ring = RingV1 {
                id: format!("{seq:032x}"),
                seq,
                trigger: "simulated".into(),
                result: RingResult::NoFace,
                name: None,
                confidence: None,
                stage_ms: StageMs::default(),
                reason: None,
                ts_ms: seq,
            };
            store.put_ring(&ring, &[]).expect("put_ring")
        })
    });
    c.bench_function("store/insert_alert_flushed", |b| {
        b.iter(|| {
            let alert = AlertV1 {
                id: "0123456789abcdef0123456789abcdef".into(),
                key: "cpu_high".into(),
                rule: "cpu_high".into(),
                severity: Severity::Warning,
                state: AlertState::Raised,
                message: "cpu_percent is 91 (> 80 for 2m)".into(),
                value: Some(91.0),
                threshold: Some(80.0),
                raised_ms: 1,
                updated_ms: 1,
            };
            store.insert_alert(&alert, &[]).expect("insert_alert")
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
