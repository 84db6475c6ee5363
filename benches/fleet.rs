//! The fleet link of the real release agent against a real mosquitto on loopback:
//! - a simulated press until the ring event reaches a subscriber (stored, queued, published,
//!   PUBACKed by the broker and forwarded), p50/p99 printed;
//! - the outbox drain after an outage: 5,000 rings queued while the cable is pulled (a TCP
//!   proxy), then the time until the broker has acknowledged them all, messages/s printed.

#[path = "common.rs"]
mod common;
#[path = "../tests/common/mqtt.rs"]
mod mqtt;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use rumqttc::{Client, Event, Incoming, QoS};

const QUEUED: u64 = 5000;

fn metric(agent: &common::Agent, series: &str) -> f64 {
    let (_, text) = doorbell_base::client::request(agent.addr, "GET", "/metrics", Duration::from_secs(5)).expect("metrics");
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' '))).map_or(0.0, |v| v.trim().parse().unwrap_or(0.0))
}

fn press(agent: &common::Agent) {
    let (code, _) = doorbell_base::client::request(agent.addr, "POST", "/simulate/press", Duration::from_secs(5)).expect("press");
    assert_eq!(code, 202);
}

/// Waits for the agent's `ring N stored` line.
fn stored(agent: &common::Agent, seq: u64) {
    let want = format!("] ring {seq} stored");
    while !agent.lines.recv_timeout(Duration::from_secs(10)).expect("ring stored").contains(&want) {}
}

fn bench(c: &mut Criterion) {
    let broker = mqtt::Mosquitto::start("");
    let proxy = mqtt::Proxy::start(broker.port);
    let mqtt = format!("[mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\nreconnect_min = \"100ms\"\nreconnect_max = \"200ms\"\n[store]\nmax_outbox_messages = 20000\n", proxy.port);
    let agent = common::Agent::start(&mqtt);

    // A subscriber that reports each ring's arrival time.
    let (client, mut connection) = Client::new(mqtt::options("bench-subscriber", broker.port), 10_000);
    client.subscribe("doorbell/bench/events/ring", QoS::AtLeastOnce).expect("subscribe");
    let (arrived, arrivals) = mpsc::channel();
    std::thread::spawn(move || {
        for event in connection.iter() {
            match event {
                Ok(Event::Incoming(Incoming::Publish(_))) => {
                    let _ = arrived.send(Instant::now());
                }
                Ok(Event::Incoming(Incoming::SubAck(_))) => {
                    let _ = arrived.send(Instant::now());
                }
                Ok(_) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    });
    arrivals.recv_timeout(Duration::from_secs(10)).expect("subscribed");
    while metric(&agent, "doorbell_mqtt_connected") < 1.0 {
        std::thread::sleep(Duration::from_millis(20));
    }

    let mut seq = 0;
    let mut latencies = Vec::new();
    c.bench_function("fleet/press_to_ring_at_subscriber", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                press(&agent);
                let at = arrivals.recv_timeout(Duration::from_secs(10)).expect("ring at the subscriber");
                seq += 1;
                stored(&agent, seq);
                latencies.push(at - t);
                total += at - t;
            }
            total
        })
    });
    common::report("press -> ring event at an MQTT subscriber (PUBACKed, forwarded)", &mut latencies);

    let mut rates = Vec::new();
    let mut group = c.benchmark_group("fleet");
    group.sample_size(10);
    group.bench_function("outbox_drain_5000", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                proxy.cut();
                for _ in 0..QUEUED {
                    press(&agent);
                    seq += 1;
                    stored(&agent, seq);
                }
                let acked = metric(&agent, "doorbell_mqtt_acked_total");
                proxy.restore();
                let t = Instant::now();
                while metric(&agent, "doorbell_mqtt_acked_total") < acked + QUEUED as f64 {
                    std::thread::sleep(Duration::from_millis(2));
                }
                let d = t.elapsed();
                rates.push(QUEUED as f64 / d.as_secs_f64());
                total += d;
                while arrivals.try_recv().is_ok() {}
            }
            total
        })
    });
    group.finish();
    // The drain includes the reconnection (backoff up to 200 ms) before the first message.
    rates.sort_by(f64::total_cmp);
    if let (Some(min), Some(max)) = (rates.first(), rates.last()) {
        println!(
            "outbox drain after an outage ({QUEUED} rings, reconnection included): {min:.0} to {max:.0} messages/s, median {:.0}",
            rates[rates.len() / 2]
        );
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(10)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
