//! /health latency of the real agent's probe: one client, and one client among 50
//! concurrent ones (a new connection per request, as curl and most probes do).
//! Prints p50/p99 over every request made, beside criterion's statistics.

#[path = "common.rs"]
mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};

const CLIENTS: usize = 50;

fn health(addr: std::net::SocketAddr) -> Duration {
    let t = Instant::now();
    let (code, _) = doorbell_base::client::request(addr, "GET", "/health", Duration::from_secs(5)).expect("GET /health");
    assert_eq!(code, 200);
    t.elapsed()
}

fn bench(c: &mut Criterion) {
    let agent = common::Agent::start("");
    let addr = agent.addr;
    let mut group = c.benchmark_group("probe");
    let mut one = Vec::new();
    group.bench_function("health_1_client", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let d = health(addr);
                    one.push(d);
                    d
                })
                .sum()
        })
    });

    // 49 background clients hammer /health while the measured one runs.
    let stop = Arc::new(AtomicBool::new(false));
    let all = Arc::new(Mutex::new(Vec::new()));
    let background: Vec<_> = (1..CLIENTS)
        .map(|_| {
            let (stop, all) = (stop.clone(), all.clone());
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    mine.push(health(addr));
                }
                all.lock().expect("samples").extend(mine);
            })
        })
        .collect();
    let mut measured = Vec::new();
    group.bench_function("health_50_clients", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let d = health(addr);
                    measured.push(d);
                    d
                })
                .sum()
        })
    });
    group.finish();
    stop.store(true, Ordering::Relaxed);
    for t in background {
        t.join().expect("client thread");
    }
    let mut all = std::mem::take(&mut *all.lock().expect("samples"));
    all.extend(measured.iter().copied());
    common::report("GET /health, 1 client", &mut one);
    common::report(&format!("GET /health, each of {CLIENTS} concurrent clients"), &mut all);
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
