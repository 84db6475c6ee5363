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
    let seed = std::env::var("CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(doorbell_base::time::now_ms);
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
        let newest = agent.json("/rings?limit=1")[0]["seq"].as_u64().unwrap_or(0);
        assert!(newest >= max_seq, "cycle {cycle}: the store holds rings up to {newest}, but ring {max_seq} was reported stored");

        // Load it up, and kill it at a random moment in the middle of the writes.
        let kill_after = Duration::from_millis(5 + next(&mut rng) % 150);
        let t = Instant::now();
        let mut presses = 0;
        // On a loaded machine the first writes come late: the kill waits for this cycle's first
        // stored alert too (up to 10 s), so that every cycle kills in the middle of writes.
        let from = agent.log_lines().len();
        let wrote = || agent.log_lines().iter().skip(from).any(|l| l.contains("alert raised stored:"));
        while t.elapsed() < kill_after || presses < 3 || (!wrote() && t.elapsed() < Duration::from_secs(10)) {
            let _ = doorbell_base::client::request(agent.addr, "POST", "/simulate/press", Duration::from_secs(2));
            presses += 1;
        }
        let mut agent = agent;
        // Returns once the agent is dead and every line it wrote has been read.
        agent.signal(libc::SIGKILL);

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

const STORE_CYCLES: u64 = 25;
const WRITER_ENV: &str = "CRASH_STORE_WRITER";

/// The value of record `i`: 0.2-4 KB, its bytes derived from `i` so a zeroed or shifted
/// page shows.
fn record(i: u64) -> Vec<u8> {
    let len = 200 + (i * 7919 % 3800) as usize;
    (0..len).map(|k| (i as usize * 31 + k) as u8).collect()
}

/// The store's own writes under SIGKILL, in more volume than the agent's rings give: this
/// test binary, run again as a writer, stores records in groups of 1-6 with a flush after
/// each group and reports the last flushed record, until it is killed at a random moment.
/// Every reported record must read back intact. The writes run through many pages and
/// several segments of sled's write buffer, whose pages vendor/sled gives back to the
/// kernel as soon as they are on disk ([buffer patch]).
#[test]
fn sigkill_during_store_flushes_keeps_every_flushed_record() {
    if let Some(dir) = std::env::var_os(WRITER_ENV) {
        return write_until_killed(std::path::Path::new(&dir));
    }
    let dir = tempfile::tempdir().unwrap();
    let seed = std::env::var("CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(doorbell_base::time::now_ms);
    println!("CRASH_SEED={seed}");
    let mut rng = seed;
    let mut flushed: Option<u64> = None;
    for cycle in 0..STORE_CYCLES {
        let mut writer = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "sigkill_during_store_flushes_keeps_every_flushed_record", "--nocapture", "--test-threads=1"])
            .env(WRITER_ENV, dir.path())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = writer.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            use std::io::BufRead;
            std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .filter_map(|l| l.strip_prefix("flushed ").and_then(|n| n.parse::<u64>().ok()))
                .last()
        });
        std::thread::sleep(Duration::from_millis(20 + next(&mut rng) % 80));
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(writer.id() as i32, libc::SIGKILL) };
        let _ = writer.wait();
        if let Some(last) = reader.join().unwrap() {
            assert!(flushed.is_none_or(|f| last > f), "cycle {cycle}: the writer went backwards to {last}");
            flushed = Some(last);
        }

        let (store, reset) = doorbell_agent::store::Store::open(dir.path(), &Default::default(), Default::default()).unwrap();
        assert!(reset.is_none(), "cycle {cycle} (seed {seed}): the store was reset after SIGKILL");
        let tree = store.tree("crash").unwrap();
        if let Some(last) = flushed {
            for i in 0..=last {
                let got = tree.get(i.to_be_bytes()).unwrap();
                assert!(
                    got.as_deref() == Some(&record(i)[..]),
                    "cycle {cycle} (seed {seed}): record {i} of 0..={last} flushed is lost or damaged"
                );
            }
        }
        println!("cycle {cycle}: {} records flushed, all intact", flushed.map_or(0, |f| f + 1));
    }
    // Enough volume to cross segments of the 512 KiB write buffer several times.
    let written: u64 = (0..=flushed.expect("the writer flushed nothing")).map(|i| record(i).len() as u64).sum();
    assert!(written > 2 * 512 * 1024, "only {written} bytes were flushed");
}

/// The writer side: continues after the last record on disk, forever.
fn write_until_killed(dir: &std::path::Path) {
    use std::io::Write;
    let (store, _) = doorbell_agent::store::Store::open(dir, &Default::default(), Default::default()).unwrap();
    let tree = store.tree("crash").unwrap();
    let mut i = tree.last().unwrap().map_or(0, |(k, _)| u64::from_be_bytes(k.as_ref().try_into().unwrap()) + 1);
    let mut out = std::io::stdout().lock();
    loop {
        let group_end = i + 1 + i % 6;
        while i < group_end {
            tree.insert(i.to_be_bytes(), record(i)).unwrap();
            i += 1;
        }
        store.flush().unwrap();
        writeln!(out, "flushed {}", i - 1).unwrap();
        out.flush().unwrap();
    }
}
