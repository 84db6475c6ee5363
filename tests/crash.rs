//! Durability under SIGKILL: the real agent is killed at random moments while it is busy
//! storing rings and raising alerts, then restarted on the same sled files, over and over.
//! Every alert and ring it reported as stored (its log line comes only after the flush) must
//! still be there, the store must open without being reset, and ring numbers never repeat.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{config, Agent};

const CYCLES: u64 = 12;
const RULES: u64 = 30;

/// Rules that each raise once as the ring count of the last minute climbs (one every 10
/// rings, so a kill lands among the alert writes); named per cycle so every cycle raises
/// fresh alerts.
fn rules(cycle: u64) -> String {
    // Recognition is not what is tested here: without face models every ring is an instant
    // `error` (no model load to wait for), so a cycle stores as many rings and alerts as it can.
    let mut out = String::from("[pipeline]\nrestart_backoff = \"10m\"\nrestart_backoff_max = \"1h\"\n\n[alerts]\nbuiltin = false\n");
    for k in 1..=RULES {
        out.push_str(&format!(
            "[[alerts.rule]]\nname = \"c{cycle}_{k}\"\nmetric = \"rings_1m\"\nop = \">=\"\nthreshold = {}.0\nseverity = \"minor\"\ncooldown = \"0s\"\n",
            k * 10
        ));
    }
    out
}

/// A tiny deterministic generator (the seed is printed so a failure can be replayed).
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    *state >> 33
}

fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    line.split_whitespace().find_map(|w| w.strip_prefix(name))
}

#[test]
fn sigkill_while_writing_never_loses_what_was_reported_stored() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let seed = std::env::var("CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(doorbell_agent::time::now_ms);
    println!("CRASH_SEED={seed}");
    let mut rng = seed;

    let mut stored_alerts: BTreeSet<String> = BTreeSet::new();
    let mut max_seq = 0u64;
    for cycle in 0..CYCLES {
        let agent = Agent::start(dir.path(), &config(&data, &rules(cycle)).replace("face_detection_short_range.onnx", "absent.onnx"));
        assert!(!agent.log().contains("cannot be opened"), "cycle {cycle}: store was reset:\n{}", agent.log());

        // Everything reported stored before the last kill is still there.
        let all = agent.json(&format!("/alerts?state=all&limit={}", 1000));
        let present: BTreeSet<String> = all.as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap().to_string()).collect();
        let lost: Vec<_> = stored_alerts.difference(&present).collect();
        assert!(lost.is_empty(), "cycle {cycle} (seed {seed}): alerts reported stored but gone after SIGKILL: {lost:?}");
        let stored_rings = agent.json("/status")["rings"]["stored"].as_u64().unwrap();
        assert!(stored_rings >= max_seq, "cycle {cycle}: {stored_rings} rings stored, but ring {max_seq} was reported stored");

        // Load it up, and kill it at a random moment in the middle of the writes.
        let kill_after = Duration::from_millis(5 + next(&mut rng) % 150);
        let t = Instant::now();
        let mut presses = 0;
        while t.elapsed() < kill_after || presses < 3 {
            let _ = doorbell_agent::client::request(agent.addr, "POST", "/simulate/press", Duration::from_secs(2));
            presses += 1;
        }
        let mut agent = agent;
        let pid = agent.pid() as i32;
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let _ = agent.child.wait();
        std::thread::sleep(Duration::from_millis(50));

        for line in agent.log_lines() {
            if line.contains("alert raised stored:") {
                stored_alerts.insert(field(&line, "id=").unwrap().to_string());
            }
            if let Some(seq) = ring_seq(&line) {
                // Ring numbers only go up, also across kills: none is ever reused.
                assert!(seq > max_seq, "cycle {cycle} (seed {seed}): ring {seq} after ring {max_seq}");
                max_seq = seq;
            }
        }
        println!(
            "cycle {cycle}: killed after {kill_after:?} and {presses} presses; {} alerts, ring {max_seq} stored so far",
            stored_alerts.len()
        );
    }
    assert!(stored_alerts.len() as u64 >= CYCLES, "the test must actually have stored alerts ({})", stored_alerts.len());

    // Ring numbers never repeat: the next ring after all the kills comes after the last one.
    let agent = Agent::start(dir.path(), &config(&data, ""));
    assert_eq!(agent.post("/simulate/press").0, 202);
    let line = agent.wait_log(|l| ring_seq(l).is_some(), Duration::from_secs(5)).expect("ring after the kills");
    let seq = ring_seq(&line).unwrap();
    assert!(seq > max_seq, "new ring {seq} must come after ring {max_seq} reported before a kill");
}

/// The sequence number of a `ring N stored: ...` log line.
fn ring_seq(line: &str) -> Option<u64> {
    let (n, rest) = line.split_once("ring ")?.1.split_once(' ')?;
    rest.starts_with("stored:").then(|| n.parse().ok()).flatten()
}
