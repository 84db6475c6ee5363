//! Simulated press → ring durably stored, through the real release agent: POST
//! /simulate/press, then wait for the agent's `ring N stored` log line, which it writes only
//! after the store flush. Prints p50/p99 over every press beside criterion's statistics.

#[path = "common.rs"]
mod common;

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};

fn bench(c: &mut Criterion) {
    let agent = common::Agent::start("");
    let mut samples = Vec::new();
    c.bench_function("ring/press_to_stored", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                let (code, _) =
                    doorbell_base::client::request(agent.addr, "POST", "/simulate/press", Duration::from_secs(5)).expect("press");
                assert_eq!(code, 202);
                loop {
                    let line = agent.lines.recv_timeout(Duration::from_secs(5)).expect("ring stored line");
                    if line.contains(" stored: id=") && line.contains("] ring ") {
                        break;
                    }
                }
                let d = t.elapsed();
                samples.push(d);
                total += d;
            }
            total
        })
    });
    common::report("simulated press -> ring stored (flushed)", &mut samples);
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
