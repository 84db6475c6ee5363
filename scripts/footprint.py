#!/usr/bin/env python3
"""Footprint of the release agent against the budgets of a Pi Zero 2 W.

Measures, on the real stripped release binary:
  * binary size (budget 4 MiB without the `faces` feature, 14 MiB with it);
  * start to READY: from exec until systemd's READY=1 arrives on a NOTIFY_SOCKET that this
    script listens on, as systemd would (budget 200 ms; median and max of --starts runs);
  * idle RSS after --duration seconds with 1 s sampling, the simulated button and the
    fleet link up to a mosquitto started for the run (budget 8 MiB; --no-broker leaves the
    link out), and idle CPU over that window from /proc/PID/stat (budget 0.5 % of one core);
  * threads and open file descriptors at the end;
  * RSS after --rings rings pressed through the probe one after the other, each waited for
    until it is stored, the worker deciding each (budget 8 MiB: the same agent, now with its
    ring path, store and malloc arenas in use);
  * the RSS of the pipeline worker the agent keeps warm, with both models loaded (budget
    48 MiB); the models come from scripts/fetch-models.sh (DOORBELL_MODELS).

Usage: scripts/footprint.py [--duration 300] [--starts 10] [--rings 200] [--no-build] [--no-broker]
The agent runs with the Environment= of its systemd unit (scripts/harness.py), as on a device.
Prints a table and exits 1 if a budget is exceeded. Stdlib only.
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from harness import free_port, http, unit_environment

MIB = 1024 * 1024
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CONFIG = """device_id = "footprint"
data_dir = "{data}"
[gpio]
backend = "simulated"
# The rings phase presses one ring after another as fast as they are stored.
debounce = "0ms"
burst = 10000
rings_per_minute = 600000
[probe]
listen = "127.0.0.1:{probe_port}"
[sampler]
interval = "1s"
[capture]
source = "files"
path = "{models}/testset/noface"
[faces]
detector_model = "{models}/face_detection_short_range.onnx"
embedder_model = "{models}/dlib_face_recognition_resnet_v1.onnx"
"""
MODELS = os.environ.get("DOORBELL_MODELS", "/var/cache/doorbell-agent/models-v1")


NO_FACES_TARGET = os.path.join(REPO, "target", "no-faces")

MQTT = """[mqtt]
url = "mqtt://127.0.0.1:{port}"
telemetry_interval = "60s"
"""


def build():
    """Builds the release binary with and without the `faces` feature; returns both paths."""
    subprocess.run(["cargo", "build", "--release", "--locked", "--bin", "doorbell-agent"], cwd=REPO, check=True)
    subprocess.run(["cargo", "build", "--release", "--locked", "--bin", "doorbell-agent", "--no-default-features",
                    "--target-dir", NO_FACES_TARGET], cwd=REPO, check=True)
    return built()


def built():
    return (os.path.join(REPO, "target", "release", "doorbell-agent"),
            os.path.join(NO_FACES_TARGET, "release", "doorbell-agent"))


def start_broker():
    """A mosquitto of its own on a free loopback port; returns (process, port)."""
    port = free_port()
    exe = next((p for p in ("/usr/sbin/mosquitto", "/usr/bin/mosquitto") if os.path.exists(p)), "mosquitto")
    proc = subprocess.Popen([exe, "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    sys.exit("mosquitto did not start")


def start(binary, workdir, notify_path, broker_port=None, probe_port=0):
    """Starts the agent with NOTIFY_SOCKET; returns (process, seconds until READY=1)."""
    data = os.path.join(workdir, "data")
    config = os.path.join(workdir, "config.toml")
    with open(config, "w") as f:
        f.write(CONFIG.format(data=data, models=MODELS, probe_port=probe_port))
        if broker_port:
            f.write(MQTT.format(port=broker_port))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if os.path.exists(notify_path):
        os.unlink(notify_path)
    sock.bind(notify_path)
    sock.settimeout(10)
    env = dict(os.environ, **unit_environment(), NOTIFY_SOCKET=notify_path, RUST_LOG="warn")
    env.pop("JOURNAL_STREAM", None)
    t0 = time.monotonic()
    proc = subprocess.Popen([binary, "-c", config, "run"], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            msg = sock.recv(4096).decode(errors="replace")
            if "READY=1" in msg.split("\n"):
                return proc, time.monotonic() - t0
    except socket.timeout:
        proc.kill()
        sys.exit("the agent did not send READY=1 within 10 s")
    finally:
        sock.close()


def stop(proc):
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def proc_status(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def press_rings(probe_port, count):
    """Presses `count` rings through the probe, each once the previous one is stored."""
    addr = f"127.0.0.1:{probe_port}"

    def stored():
        for line in http(addr, "GET", "/metrics").decode().splitlines():
            if line.startswith("doorbell_ring_stored_seconds_count"):
                return int(float(line.split()[-1]))
        return 0

    first = stored()
    for n in range(1, count + 1):
        http(addr, "POST", "/simulate/press")
        deadline = time.monotonic() + 30
        while stored() < first + n:
            if time.monotonic() > deadline:
                sys.exit(f"ring {n} was not stored within 30 s")
            time.sleep(0.005)


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime (fields 14 and 15)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=300, help="idle window in seconds (default 300)")
    ap.add_argument("--starts", type=int, default=10, help="start-to-READY runs (default 10)")
    ap.add_argument("--no-build", action="store_true", help="use the release binaries as they are")
    ap.add_argument("--no-broker", action="store_true", help="measure without the fleet link")
    ap.add_argument("--rings", type=int, default=200, help="rings pressed after the idle window (default 200)")
    args = ap.parse_args()
    broker, broker_port = (None, None) if args.no_broker else start_broker()

    binary, no_faces = built() if args.no_build else build()
    size, size_no_faces = os.path.getsize(binary), os.path.getsize(no_faces)

    with tempfile.TemporaryDirectory(prefix="doorbell-footprint.") as work:
        notify = os.path.join(work, "notify.sock")
        ready = []
        for i in range(args.starts):
            run_dir = os.path.join(work, f"start{i}")
            os.mkdir(run_dir)
            proc, secs = start(binary, run_dir, notify, broker_port)
            ready.append(secs)
            stop(proc)

        run_dir = os.path.join(work, "idle")
        os.mkdir(run_dir)
        probe_port = free_port()
        proc, _ = start(binary, run_dir, notify, broker_port, probe_port)
        pid = proc.pid
        hz = os.sysconf("SC_CLK_TCK")
        # Let start-up settle (first samples, lazily started threads) before measuring CPU.
        time.sleep(min(5.0, args.duration / 10))
        t0, c0 = time.monotonic(), cpu_ticks(pid)
        peak_rss = 0
        end = t0 + args.duration
        while time.monotonic() < end:
            peak_rss = max(peak_rss, proc_status(pid, "VmRSS"))
            time.sleep(1)
        elapsed, ticks = time.monotonic() - t0, cpu_ticks(pid) - c0
        rss = proc_status(pid, "VmRSS") * 1024
        peak_rss *= 1024
        threads = proc_status(pid, "Threads")
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        workers = [int(c) for t in os.listdir(f"/proc/{pid}/task") for c in open(f"/proc/{pid}/task/{t}/children").read().split()]
        worker_rss = proc_status(workers[0], "VmRSS") * 1024 if workers else None
        press_rings(probe_port, args.rings)
        time.sleep(1)
        rings_rss = proc_status(pid, "VmRSS") * 1024
        stop(proc)
    if broker:
        broker.kill()
        broker.wait()

    cpu = ticks / hz / elapsed * 100
    rows = [
        ("stripped binary without `faces`", f"{size_no_faces / MIB:.2f} MiB", size_no_faces <= 4 * MIB, "<= 4 MiB"),
        ("stripped binary with `faces`", f"{size / MIB:.2f} MiB", size <= 14 * MIB, "<= 14 MiB"),
        (f"start to READY (median of {len(ready)})", f"{statistics.median(ready) * 1000:.1f} ms", statistics.median(ready) <= 0.2, "<= 200 ms"),
        ("start to READY (max)", f"{max(ready) * 1000:.1f} ms", True, ""),
        (f"idle RSS after {elapsed:.0f} s (1 s sampling{'' if args.no_broker else ', link up'})", f"{rss / MIB:.2f} MiB", rss <= 8 * MIB, "<= 8 MiB"),
        ("idle RSS peak", f"{peak_rss / MIB:.2f} MiB", peak_rss <= 8 * MIB, "<= 8 MiB"),
        ("idle CPU (one core)", f"{cpu:.3f} %", cpu <= 0.5, "<= 0.5 %"),
        ("threads / open fds", f"{threads} / {fds}", True, ""),
        (f"RSS after {args.rings} rings", f"{rings_rss / MIB:.2f} MiB", rings_rss <= 8 * MIB, "<= 8 MiB"),
        ("pipeline worker RSS (models loaded)", "not running" if worker_rss is None else f"{worker_rss / MIB:.2f} MiB",
         worker_rss is not None and worker_rss <= 48 * MIB, "<= 48 MiB"),
    ]
    print(f"\nfootprint of {binary}")
    for name, value, ok, budget in rows:
        print(f"  {'ok  ' if ok else 'OVER'} {name:<42} {value:>12}  {budget}")
    if not all(ok for _, _, ok, _ in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
