#!/usr/bin/env python3
"""Soak: the release agent against a broker that flaps, watching its memory.

Starts a mosquitto of its own and the agent (simulated button, 1 s sampling, telemetry every
10 s). Every --flap seconds the broker is stopped for --down seconds and started again; a
ring is pressed every 5 s throughout, so the outbox fills while the broker is away and
drains when it is back. RSS is sampled every 10 s, split into anonymous memory (heap,
stacks) and file-backed pages (the binary's code, faulted in as more code paths run, bounded
and reclaimable). At the end it prints them over time with the growth after the warm-up
and the least-squares slope, and exits 1 if anonymous memory grew by more than
--max-growth MiB after the warm-up or a ring was not delivered.

Usage: scripts/soak.py [--duration 1800] [--flap 60] [--down 10] [--press-every 5] [--binary PATH] [--fleet PATH]
Stdlib only; needs mosquitto. The observer is `doorbell-fleet watch --session`. The agent
runs with the Environment= of its systemd unit (scripts/harness.py), as on a device.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

from harness import free_port, http, unit_environment

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIB = 1024 * 1024


def wait_port(port):
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")


def mosquitto(port, persistence_dir):
    conf = os.path.join(persistence_dir, "mosquitto.conf")
    with open(conf, "w") as f:
        # `user root`: as root, mosquitto would switch to its own user and then fail to save
        # its persistence (subscriber sessions) into this directory; ignored when not root.
        f.write(f"user root\nlistener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {persistence_dir}/\n")
    exe = next((p for p in ("/usr/sbin/mosquitto", "/usr/bin/mosquitto") if os.path.exists(p)), "mosquitto")
    proc = subprocess.Popen([exe, "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return proc


def rss_kib(pid):
    """(total, anonymous, file-backed) resident KiB."""
    with open(f"/proc/{pid}/status") as f:
        fields = {l.split(":")[0]: int(l.split()[1]) for l in f if l.startswith(("VmRSS:", "RssAnon:", "RssFile:"))}
    return fields["VmRSS"], fields["RssAnon"], fields["RssFile"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=1800)
    ap.add_argument("--flap", type=int, default=60, help="seconds between broker outages")
    ap.add_argument("--down", type=int, default=10, help="seconds the broker stays down")
    ap.add_argument("--warmup", type=int, default=300, help="seconds before RSS growth is judged")
    ap.add_argument("--max-growth", type=float, default=0.5, help="allowed RSS growth after the warm-up, MiB")
    ap.add_argument("--press-every", type=float, default=5, help="seconds between rings (0: no rings)")
    ap.add_argument("--binary", default=os.path.join(REPO, "target", "release", "doorbell-agent"))
    ap.add_argument("--fleet", default=os.path.join(REPO, "target", "release", "doorbell-fleet"), help="the operator's tool")
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="doorbell-soak.")
    port = free_port()
    broker = mosquitto(port, work)
    rings_file = os.path.join(work, "rings.txt")
    # The observer: the operator CLI following the device with a persistent session, so the
    # broker queues what arrives while it is away.
    sub = subprocess.Popen([args.fleet, "--broker", f"mqtt://127.0.0.1:{port}", "watch", "soak", "--json", "--session", "soak-watch"],
                           stdout=open(rings_file, "w"), stderr=open(os.path.join(work, "watch.log"), "w"))
    config = os.path.join(work, "config.toml")
    with open(config, "w") as f:
        f.write(f'device_id = "soak"\ndata_dir = "{work}/data"\n[gpio]\nbackend = "simulated"\n'
                # No debounce or rate limit: every press is a ring, so the flow runs flat out.
                f'debounce = "0s"\nburst = 10000\nrings_per_minute = 600000\n[probe]\nlisten = "127.0.0.1:0"\n'
                f'[sampler]\ninterval = "1s"\n[mqtt]\nurl = "mqtt://127.0.0.1:{port}"\ntelemetry_interval = "10s"\n'
                f'reconnect_min = "500ms"\nreconnect_max = "5s"\n')
    agent = subprocess.Popen([args.binary, "-c", config, "run"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             env=dict(os.environ, **unit_environment(), RUST_LOG="warn,doorbell_agent=info"))
    addr = None
    for line in agent.stderr:
        if " ready in " in line:
            addr = line.rsplit("probe http://", 1)[1].strip()
            break
    if not addr:
        sys.exit("the agent did not start")
    # Keep reading the agent's log so that its pipe never fills.
    subprocess.Popen(["cat"], stdin=agent.stderr, stdout=subprocess.DEVNULL)

    start = time.monotonic()
    samples, pressed, next_flap, next_press, next_sample = [], 0, start + args.flap, start, start
    broker_down_until = None
    while time.monotonic() - start < args.duration:
        now = time.monotonic()
        if args.press_every and now >= next_press:
            http(addr, "POST", "/simulate/press")
            pressed += 1
            next_press += args.press_every
        if broker_down_until is None and now >= next_flap:
            broker.send_signal(signal.SIGTERM)
            broker.wait()
            broker_down_until = now + args.down
        elif broker_down_until is not None and now >= broker_down_until:
            broker = mosquitto(port, work)
            broker_down_until, next_flap = None, now + args.flap
        if now >= next_sample:
            samples.append((now - start, *rss_kib(agent.pid)))
            next_sample += 10
        time.sleep(0.2)

    if broker_down_until is not None:
        broker = mosquitto(port, work)
    status = json.loads(http(addr, "GET", "/status"))
    deadline = time.monotonic() + 60
    while status["outbox_depth"] and time.monotonic() < deadline:
        time.sleep(1)
        status = json.loads(http(addr, "GET", "/status"))
    time.sleep(2)
    agent.send_signal(signal.SIGTERM)
    agent.wait(timeout=10)
    sub.terminate()
    broker.terminate()
    delivered = set()
    for line in open(rings_file):
        m = json.loads(line)
        if m["topic"].endswith("/events/ring"):
            delivered.add(m["payload"]["seq"])

    print(f"\nsoak: {args.duration} s, broker down {args.down} s every {args.flap} s, {pressed} rings pressed")
    for t, total, anon, file in samples[:: max(1, len(samples) // 20)]:
        print(f"  t={t:6.0f} s  RSS {total / 1024:6.2f} MiB  (heap and other anonymous {anon / 1024:5.2f}, file-backed {file / 1024:5.2f})")
    after = [s for s in samples if s[0] >= args.warmup] or samples

    def trend(col, name):
        first, last = after[0][col] / 1024, after[-1][col] / 1024
        n = len(after)
        mt, mk = sum(s[0] for s in after) / n, sum(s[col] for s in after) / n
        var = sum((s[0] - mt) ** 2 for s in after) or 1
        slope = sum((s[0] - mt) * (s[col] - mk) for s in after) / var * 3600 / 1024
        print(f"  {name} after warm-up: {first:.2f} -> {last:.2f} MiB (growth {last - first:+.2f} MiB, slope {slope:+.3f} MiB/h)")
        return last - first

    trend(1, "RSS")
    anon_growth = trend(2, "anonymous")
    trend(3, "file-backed")
    print(f"  peak RSS {max(s[1] for s in samples) / 1024:.2f} MiB")
    # Every ring the agent stored (its own count) must have reached the watcher.
    stored = status["rings"]["stored"]
    missing = set(range(1, stored + 1)) - delivered
    print(f"  rings: {pressed} pressed, {stored} stored, {len(delivered)} delivered to a watcher with a persistent session; outbox depth at the end: {status['outbox_depth']}")
    # File-backed pages (the binary's code as more paths run) are bounded by the files and
    # reclaimable; a leak shows as anonymous growth.
    ok = anon_growth <= args.max_growth and not missing
    if missing:
        print(f"  MISSING rings: {sorted(missing)[:20]}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
