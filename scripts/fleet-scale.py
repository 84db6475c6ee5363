#!/usr/bin/env python3
"""Fleet scale: N real agents (simulated button, separate data dirs) against one mosquitto
on this machine, driven by the operator CLI.

Measures: time for all N agents to report ready and online; `doorbell-fleet devices`
listing all N (and its run time); `doorbell-fleet send all ping --wait` collecting N
successful answers (and its run time); the agents' total RSS; a clean stop of all of them.
Exits 1 if any check fails.

Usage: scripts/fleet-scale.py [--agents 200] [--binary PATH] [--fleet PATH]
Stdlib only; needs mosquitto.
"""

import argparse
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time

from harness import free_port

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", type=int, default=200)
    ap.add_argument("--binary", default=os.path.join(REPO, "target", "release", "doorbell-agent"))
    ap.add_argument("--fleet", default=os.path.join(REPO, "target", "release", "doorbell-fleet"), help="the operator's tool")
    args = ap.parse_args()
    n = args.agents
    # Each agent and the broker's connections need descriptors.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 65536)), hard))

    work = tempfile.mkdtemp(prefix="doorbell-fleet.")
    port = free_port()
    conf = os.path.join(work, "mosquitto.conf")
    with open(conf, "w") as f:
        f.write(f"user root\nlistener {port} 127.0.0.1\nallow_anonymous true\nmax_connections -1\n")
    exe = next((p for p in ("/usr/sbin/mosquitto", "/usr/bin/mosquitto") if os.path.exists(p)), "mosquitto")
    broker = subprocess.Popen([exe, "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    broker_url = f"mqtt://127.0.0.1:{port}"

    t0 = time.monotonic()
    agents = []
    for i in range(n):
        d = os.path.join(work, f"door-{i:03}")
        os.makedirs(d)
        cfg = os.path.join(d, "config.toml")
        with open(cfg, "w") as f:
            f.write(f'device_id = "door-{i:03}"\ndata_dir = "{d}/data"\n[gpio]\nbackend = "simulated"\n[probe]\nlisten = "127.0.0.1:0"\n'
                    f'[sampler]\ninterval = "5s"\n[mqtt]\nurl = "{broker_url}"\ntelemetry_interval = "60s"\n')
        log = open(os.path.join(d, "agent.log"), "w")
        agents.append(subprocess.Popen([args.binary, "-c", cfg, "run"], stdout=subprocess.DEVNULL, stderr=log, env=dict(os.environ, RUST_LOG="info")))

    def up(i):
        with open(os.path.join(work, f"door-{i:03}", "agent.log")) as f:
            return "fleet link to" in f.read()

    deadline = time.monotonic() + 120
    waiting = set(range(n))
    while waiting and time.monotonic() < deadline:
        waiting = {i for i in waiting if not up(i)}
        time.sleep(0.2)
    started = time.monotonic() - t0
    failures = []
    if waiting:
        failures.append(f"{len(waiting)} agents never connected")

    def cli(*cli_args):
        t = time.monotonic()
        out = subprocess.run([args.fleet, "--broker", broker_url, *cli_args], capture_output=True, text=True, timeout=180)
        return out, time.monotonic() - t

    out, devices_s = cli("devices")
    online = sum(1 for line in out.stdout.splitlines() if line.startswith("door-") and " yes " in line)
    if online != n:
        failures.append(f"fleet devices lists {online} online, expected {n}")
    out, send_s = cli("send", "all", "ping", "--wait", "--timeout", "120s")
    ok = sum(1 for line in out.stdout.splitlines() if line.startswith("door-") and line.split()[1].startswith("successful"))
    summary = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr.strip()
    if out.returncode != 0 or ok != n:
        failures.append(f"fleet send all ping: {ok} successful, exit {out.returncode}: {summary}")

    rss = 0
    for a in agents:
        with open(f"/proc/{a.pid}/status") as f:
            rss += next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
    t = time.monotonic()
    for a in agents:
        a.send_signal(signal.SIGTERM)
    codes = [a.wait(timeout=30) for a in agents]
    stop_s = time.monotonic() - t
    if any(codes):
        failures.append(f"{sum(1 for c in codes if c)} agents did not exit 0")
    broker.terminate()

    print(f"\nfleet of {n} agents against one mosquitto ({broker_url})")
    print(f"  all connected after            {started:6.1f} s")
    print(f"  fleet devices                  {devices_s:6.2f} s  ({online} online)")
    print(f"  fleet send all ping --wait     {send_s:6.2f} s  ({ok} successful; {summary})")
    print(f"  total RSS of the agents        {rss / 1024:6.1f} MiB ({rss / 1024 / n:.2f} MiB each)")
    print(f"  SIGTERM to all, all exited     {stop_s:6.2f} s")
    for f in failures:
        print(f"  FAIL: {f}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
