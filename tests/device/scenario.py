#!/usr/bin/env python3
"""The device test's scenario (scripts/test-device.sh runs it; root; Python stdlib only).

`prepare` (with the network, before the run): a release key, the update artifacts, the
labelled photos, the site config, and a fresh copy of the base SD image into which
scripts/flash.sh installs the aarch64 build exactly as docs/deploying.md tells a user to.

`run` (inside an empty network namespace): a Mosquitto broker and an artifact server on this
namespace's loopback, the emulated Pi Zero 2 W booting the flashed card (tests/device/board.py),
and the steps, each checked from outside the VM as an operator sees it: the probe through a
host forward, the broker's messages through mosquitto_sub, the operator's
`doorbell-agent fleet` commands, the serial console for what an operator would type on the
device (`systemctl status`, `doorbell-agent doctor`, `update status`). A failure names the
step and prints the guest's serial console and journal.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import board as board_mod  # noqa: E402
from common import StepFailed, check, log, wait_for  # noqa: E402
import recognition  # noqa: E402
import update  # noqa: E402

DEVICE = "pi-zero-2w-emu"
TARGET = "aarch64-unknown-linux-gnu"
BROKER_PORT = 1883
HTTP_PORT = 8000
PROBE_PORT = 8080
BUTTON = 17
# The edge-interrupt path, on -M virt (not a Pi): its own device id, line 5 of the PL061.
VIRT_DEVICE = "virt-edge-emu"
VIRT_BUTTON = 5
# Inside the device: the host's loopback services, through QEMU's guestfwd.
HOST = "10.0.2.100"
PHOTOS_ON_DEVICE = "/var/lib/doorbell-test/photos"


# Longest a boot may take to the agent's READY and the serial shell: emulation on a busy
# CI machine has taken 110 s where a quiet one takes 45 s.
BOOT_TIMEOUT = 420


# ---------------------------------------------------------------------------------------------
# prepare


def site_config(public_key: str, *, virt: bool = False) -> str:
    """The device's configuration as an operator writes it for this fleet (flash.sh --config);
    `virt`: the same card on -M virt, with edge interrupts (the default detection)."""
    if virt:
        board, device, pin = "-M virt board", VIRT_DEVICE, VIRT_BUTTON
        detect = '# -M virt\'s PL061 raises edge interrupts: the default detection.\ndetect = "interrupt"'
    else:
        board, device, pin = "Pi Zero 2 W", DEVICE, BUTTON
        detect = ('# The emulated BCM2835 never raises a GPIO edge interrupt: read the level instead.\n'
                  'detect = "poll"\npoll_interval = "10ms"')
    return f"""# The emulated {board} of the device test (tests/device/scenario.py).
device_id = "{device}"

[gpio]
backend = "rppal"
pin = {pin}
pull = "up"
active_low = true
{detect}
# The scenario presses faster than a visitor: a stream of rings before a power cut.
burst = 50
rings_per_minute = 600

[probe]
# Reached from the host through QEMU's forward of guest port {PROBE_PORT}.
listen = "0.0.0.0:{PROBE_PORT}"

[sampler]
interval = "5s"

[mqtt]
url = "mqtt://{HOST}:{BROKER_PORT}"
telemetry_interval = "10s"
reconnect_max = "5s"

[capture]
# No camera on an emulated Pi: the labelled photos, in turn, one per ring.
source = "files"
path = "{PHOTOS_ON_DEVICE}"
frames = 1

[pipeline]
# Under emulation (TCG, one host thread for four cores) the worker loads the models in tens
# of seconds and a ring takes seconds: generous bounds, still bounded.
start_timeout = "180s"
ring_deadline = "120s"

[update]
public_key = "{public_key}"
soak = "15s"
deadline = "6m"
broker_timeout = "60s"
"""


def root_partition_offset(image: Path) -> tuple[int, int]:
    """(byte offset, byte size) of the image's Linux partition, from its MBR."""
    out = subprocess.run(["sfdisk", "-J", str(image)], check=True, capture_output=True, text=True).stdout
    table = json.loads(out)["partitiontable"]
    sector = int(table.get("sectorsize", 512))
    for p in table["partitions"]:
        if p["type"] in ("83", "0x83"):
            return p["start"] * sector, p["size"] * sector
    raise SystemExit(f"{image}: no Linux partition")


@contextlib.contextmanager
def mounted(image: Path):
    """The image's root file system, mounted (loop device) for the duration."""
    offset, size = root_partition_offset(image)
    mnt = image.parent / "mnt"
    mnt.mkdir(exist_ok=True)
    loop = subprocess.run(["losetup", "-f", "--show", "-o", str(offset), "--sizelimit", str(size), str(image)],
                          check=True, capture_output=True, text=True).stdout.strip()
    try:
        subprocess.run(["mount", loop, str(mnt)], check=True)
        try:
            yield mnt
        finally:
            subprocess.run(["umount", str(mnt)], check=True)
    finally:
        subprocess.run(["losetup", "-d", loop], check=True)


def add_test_files(image: Path, photos: Path) -> None:
    """Puts the labelled photos (the emulated camera's frames) onto the card's root."""
    with mounted(image) as mnt:
        dest = mnt / PHOTOS_ON_DEVICE.lstrip("/")
        shutil.copytree(photos, dest, dirs_exist_ok=True)
        for p in [dest, *dest.rglob("*")]:
            os.chown(p, 0, 0)
            p.chmod(0o755 if p.is_dir() else 0o644)


def prepare(a: argparse.Namespace) -> None:
    work, repo = Path(a.work), Path(a.repo)
    agent = repo / "target/device" / TARGET / "doorbell-agent"
    arts = update.make_artifacts(work / "artifacts", agent, repo)
    photos = work / "photos"
    recognition.stage(photos)
    cfg = work / "site.toml"
    cfg.write_text(site_config(arts.public_key))
    sd = work / "sd.img"
    log(f"fresh SD card from {a.image}")
    subprocess.run(["cp", "--sparse=always", a.image, str(sd)], check=True)
    log("scripts/flash.sh --config site.toml --public-key ... sd.img (as docs/deploying.md tells a user)")
    subprocess.run([str(repo / "scripts/flash.sh"), "--target", TARGET, "--config", str(cfg),
                    "--public-key", arts.public_key, str(sd)], check=True)
    add_test_files(sd, photos)
    # The same card for -M virt, with that board's configuration (flash.sh wrote the file;
    # rewriting it in place keeps its owner and mode).
    sd_virt = work / "sd-virt.img"
    subprocess.run(["cp", "--sparse=always", str(sd), str(sd_virt)], check=True)
    with mounted(sd_virt) as mnt:
        (mnt / "etc/doorbell-agent/config.toml").write_text(site_config(arts.public_key, virt=True))
    state = {"kernel": a.kernel, "dtb": a.dtb, "initrd": a.initrd, "image": str(sd), "virt_image": str(sd_virt),
             "artifacts": arts.to_json()}
    (work / "prepare.json").write_text(json.dumps(state, indent=2))


# ---------------------------------------------------------------------------------------------
# run: what an operator has on their side


class Broker:
    """A Mosquitto broker on this namespace's loopback, and a subscriber to everything."""

    def __init__(self, work: Path):
        self.work = work
        conf = work / "mosquitto.conf"
        conf.write_text(f"listener {BROKER_PORT} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                        f"log_dest file {work / 'mosquitto.log'}\n")
        self.proc = subprocess.Popen(["/usr/sbin/mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=open(work / "mosquitto.err", "w"))
        wait_for("mosquitto listening", lambda: _connects(BROKER_PORT), 10, 0.1)
        self.messages: list[dict] = []
        self.lock = threading.Lock()
        # -F: retained flag, topic, payload, one message a line (payloads are compact JSON).
        self.sub = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(BROKER_PORT), "-q", "1",
                                     "-t", "doorbell/#", "-F", "%r %t %p", "-V", "mqttv311"],
                                    stdout=subprocess.PIPE, text=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        with open(self.work / "mqtt.log", "w") as f:
            for line in self.sub.stdout:
                f.write(f"{time.time():.3f} {line}")
                f.flush()
                parts = line.rstrip("\n").split(" ", 2)
                if len(parts) < 2:
                    continue
                payload = parts[2] if len(parts) == 3 else ""
                try:
                    body = json.loads(payload) if payload else None
                except ValueError:
                    body = payload
                with self.lock:
                    self.messages.append({"at": time.monotonic(), "retained": parts[0] == "1",
                                          "topic": parts[1], "payload": body})

    def seen(self, suffix: str, since: float = 0.0, pred=lambda p: True, device: str = DEVICE) -> list[dict]:
        """Payloads on doorbell/DEVICE/SUFFIX received after `since` (monotonic) that match."""
        topic = f"doorbell/{device}/{suffix}"
        with self.lock:
            return [m["payload"] for m in self.messages
                    if m["topic"] == topic and m["at"] >= since and isinstance(m["payload"], dict) and pred(m["payload"])]

    def close(self) -> None:
        for p in (self.sub, self.proc):
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()


def _connects(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Run:
    """What the steps share."""

    repo: Path
    work: Path
    board: board_mod.Board
    broker: Broker
    server: update.Server
    arts: update.Artifacts
    host_cli: Path
    virt: board_mod.Board
    device: str = DEVICE
    button: int = BUTTON
    boot_started: float = 0.0
    figures: dict = field(default_factory=dict)

    def fleet(self, *args: str, timeout: float = 120) -> tuple[int, str, str]:
        """The operator's `doorbell-fleet --broker ... ARGS` on this machine."""
        p = subprocess.run([str(self.host_cli), "--broker", f"mqtt://127.0.0.1:{BROKER_PORT}", *args],
                           capture_output=True, text=True, timeout=timeout)
        return p.returncode, p.stdout, p.stderr

    def probe(self, path: str, timeout: float = 10) -> tuple[int, str]:
        """A GET on the device's probe, through the host forward."""
        url = f"http://127.0.0.1:{self.board.port['probe']}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def sh(self, cmd: str, timeout: float = 120) -> tuple[int, str]:
        return self.board.sh(cmd, timeout=timeout)

    def must(self, cmd: str, timeout: float = 120) -> str:
        rc, out = self.sh(cmd, timeout)
        check(rc == 0, f"`{cmd}` on the device exited {rc}:\n{out}")
        return out

    def boot(self, what: str) -> float:
        """Starts the board and waits until the agent answers /ready; returns boot → READY (s)."""
        self.board.start()
        self.boot_started = time.monotonic()
        # The button is wired active-low with a pull-up: its line idles high. The emulated
        # BCM2835 has no pull resistors, so the host holds the line high as the pull-up would.
        self.board.gpio(self.button, True)
        wait_for(f"{what}: the agent's /ready through the probe forward",
                 lambda: self.probe("/ready", timeout=3)[0] == 200, BOOT_TIMEOUT, 1)
        ready = time.monotonic() - self.boot_started
        # Measured from QEMU's start like /ready: the autologin shell can come after the agent.
        self.board.wait_shell(timeout=BOOT_TIMEOUT)
        return ready

    def press_button(self, hold: float = 0.15) -> None:
        """A visitor presses the button: the line goes low for `hold` seconds, then back high."""
        self.board.gpio(self.button, False)
        time.sleep(hold)
        self.board.gpio(self.button, True)

    def check_button_line(self) -> None:
        """The kernel's view: the button's line of gpiochip0 is held by the agent, as an input."""
        line = self.sh(f"gpioinfo gpiochip0 | grep -E '^\\s+line +{self.button}:'")[1].strip()
        log(f"gpioinfo: {line}")
        check('"doorbell-agent"' in line and "input" in line, f"line {self.button} is not held by the agent as an input: {line!r}")

    def ring_events(self, since: float = 0.0, pred=lambda p: True) -> list[dict]:
        return self.broker.seen("events/ring", since, pred, self.device)


# ---------------------------------------------------------------------------------------------
# the steps


def step_first_boot(r: Run) -> None:
    ready = r.boot("first boot")
    r.figures["boot_to_ready_s"] = round(ready, 1)
    log(f"first boot: agent READY {ready:.1f} s after QEMU started (emulation time, not Pi time)")
    active = r.sh("systemctl is-active doorbell-agent")[1].strip()
    check(active == "active", f"systemctl is-active doorbell-agent: {active}")
    status = r.sh("systemctl status doorbell-agent --no-pager -l | head -n 12")[1]
    log("systemctl status doorbell-agent:\n" + status)
    m = re.search(r'Status: "([^"]*)"', status)
    check(m is not None, "systemctl status shows no Status: line (the unit's STATUS=)")
    check(m.group(1).startswith(("healthy", "degraded")), f"STATUS= says {m.group(1)!r}")
    rc, doctor = r.sh("doorbell-agent doctor", timeout=180)
    log(f"doorbell-agent doctor (exit {rc}):\n{doctor}")
    fails = [line for line in doctor.splitlines() if line.lstrip().startswith("FAIL")]
    check(rc == 0 and not fails, f"doctor failed: {fails or doctor}")


def step_button(r: Run) -> None:
    pid = r.must("systemctl show -p MainPID --value doorbell-agent").strip()
    user = r.must(f"ps -o user= -p {pid}").strip()
    check(user == "doorbell", f"the agent runs as {user!r}, not the unit's unprivileged doorbell user")
    gpio_log = r.sh("journalctl -b -u doorbell-agent --no-pager -o cat | grep -i -m3 -E 'gpio|button'")[1]
    log(f"the button backend, as the agent logged it:\n{gpio_log}")
    before = time.monotonic()
    r.press_button()
    ring = wait_for("a ring event from the GPIO press at the broker",
                    lambda: r.ring_events(before, lambda p: p.get("trigger") == "button"), 180)
    r.figures["press_to_event_s"] = round(time.monotonic() - before, 1)
    log(f"GPIO {BUTTON} pressed from the host → ring {ring[0]['seq']} ({ring[0]['result']}) at the broker "
        f"{r.figures['press_to_event_s']} s later")
    r.check_button_line()


def step_recognition(r: Run) -> None:
    reference = recognition.reference(r.repo, r.work / "photos", r.work / "x86")
    arm = recognition.on_device(r, PHOTOS_ON_DEVICE)
    ok, report = recognition.compare(reference, arm)
    log("recognition, x86 vs the emulated Pi:\n" + report)
    r.figures["recognition"] = report
    check(ok, "recognition on ARM differs from x86:\n" + report)


def step_fleet(r: Run) -> None:
    births = r.broker.seen("status", 0, lambda p: p.get("online") is True)
    check(births, "no birth (online: true) on the device's status topic")
    check(births[-1].get("version"), f"birth without a version: {births[-1]}")
    check(births[-1].get("slot") == "a", f"the birth does not name slot a, which the agent runs from: {births[-1]}")
    log(f"birth: {births[-1]}")
    rings = r.ring_events()
    check(rings, "no ring event reached the subscriber")
    tel = wait_for("telemetry", lambda: r.broker.seen("telemetry"), 30)
    log(f"telemetry: {len(tel)} messages, the last: {json.dumps(tel[-1])[:300]}")
    rc, out, err = r.fleet("send", DEVICE, "ping", "--wait", "--timeout", "60s")
    log(f"fleet send {DEVICE} ping --wait (exit {rc}):\n{out}{err}")
    check(rc == 0 and "successful" in out, "ping not answered successful")
    before = time.monotonic()
    rc, out, err = r.fleet("send", DEVICE, "press", "--wait", "--timeout", "180s", timeout=240)
    log(f"fleet send {DEVICE} press --wait (exit {rc}):\n{out}{err}")
    check(rc == 0 and "successful" in out, "press not answered successful")
    wait_for("the fleet press's ring event", lambda: r.ring_events(before, lambda p: p.get("trigger") == "fleet"), 60)
    rc, out, err = r.fleet("devices")
    log(f"fleet devices:\n{out}")
    check(rc == 0 and re.search(rf"^{DEVICE} +yes +\S+ +a +running ", out, re.M), "fleet devices does not show the device online in slot a")


def step_power_cut_rings(r: Run) -> None:
    """Power is cut while rings stream in; every ring the broker saw must be in the store."""
    since = time.monotonic()
    deadline = since + 240
    pressed = 0
    while time.monotonic() < deadline and len(r.ring_events(since, lambda p: p.get("trigger") == "button")) < 4:
        r.press_button(0.1)
        pressed += 1
        time.sleep(1.5)
    seen = r.ring_events(since, lambda p: p.get("trigger") == "button")
    check(len(seen) >= 4, f"only {len(seen)} ring events for {pressed} presses before the cut")
    # Two more presses in flight, then the plug is pulled.
    r.press_button(0.1)
    time.sleep(0.7)
    r.press_button(0.1)
    time.sleep(0.3)
    r.board.power_cut()
    reported = {e["id"]: e["seq"] for e in r.ring_events(since)}
    all_reported = {e["id"]: e["seq"] for e in r.ring_events()}
    log(f"power cut after {pressed + 2} presses: {len(reported)} rings reported stored in this stream")
    ready = r.boot("boot after the power cut during rings")
    log(f"after the cut: READY {ready:.1f} s after QEMU started")
    code, body = r.probe("/rings?limit=1000")
    check(code == 200, f"/rings answered {code}: {body}")
    stored = {x["id"]: x["seq"] for x in json.loads(body)}
    missing = {i: s for i, s in all_reported.items() if stored.get(i) != s}
    check(not missing, f"rings the broker saw but the store lost after the power cut: {missing}")
    top = max(all_reported.values())
    before = time.monotonic()
    r.press_button()
    nxt = wait_for("a ring after the power cut", lambda: r.ring_events(before, lambda p: p.get("trigger") == "button"), 180)
    check(nxt[0]["seq"] > top, f"ring sequence reused after the power cut: {nxt[0]['seq']} <= {top}")
    r.figures["power_cut_rings"] = (f"{pressed + 2} presses, {len(reported)} ring events before the cut; every ring event of the run "
                                    f"({len(all_reported)}) in the store after it, {len(stored)} stored; next seq {nxt[0]['seq']} > {top}")
    log(r.figures["power_cut_rings"])


def step_edge_interrupts(r: Run) -> None:
    """The default detection, edge interrupts through the GPIO character device, which the
    emulated BCM2835 cannot raise: the same card on -M virt, whose PL061 can (not a Pi)."""
    r.board.power_cut()  # the Pi is done; one emulator at a time on these two cores
    v = dataclasses.replace(r, board=r.virt, device=VIRT_DEVICE, button=VIRT_BUTTON)
    ready = v.boot("-M virt boot")
    r.figures["virt_boot_to_ready_s"] = round(ready, 1)
    log(f"-M virt: agent READY {ready:.1f} s after QEMU started")
    button = v.sh("journalctl -b -u doorbell-agent --no-pager -o cat | grep -m1 'button:'")[1].strip()
    log(f"the button, as the agent logged it: {button}")
    check(f"gpiochip0 line {VIRT_BUTTON} (pull-up, active-low, interrupts)" in button,
          f"the agent does not wait for edges on gpiochip0 line {VIRT_BUTTON}: {button!r}")
    v.check_button_line()
    since = time.monotonic()
    presses = 3
    for _ in range(presses):
        v.press_button()
        time.sleep(1.0)
    rings = wait_for(f"{presses} ring events from {presses} edge-detected presses",
                     lambda: (lambda e: e if len(e) >= presses else None)(v.ring_events(since, lambda p: p.get("trigger") == "button")),
                     180)
    took = time.monotonic() - since
    time.sleep(3)  # a release edge or a bounce counted as a press would show up by now
    rings = v.ring_events(since, lambda p: p.get("trigger") == "button")
    seqs = [e["seq"] for e in rings]
    check(len(rings) == presses, f"{presses} presses gave {len(rings)} ring events (seq {seqs})")
    r.figures["virt_edge_presses"] = f"{presses} presses -> {presses} ring events (seq {seqs}) within {took:.1f} s"
    log(r.figures["virt_edge_presses"])


STEPS = [
    ("1 first boot: the unit, STATUS=, doctor", step_first_boot),
    ("2 the button: rppal backend on pinctrl-bcm2835, GPIO 17 from the host", step_button),
    ("3 recognition on ARM equals x86", step_recognition),
    ("4 fleet: birth, ring events, telemetry, ping, press", step_fleet),
    ("5 update: committed, then a bad one rolled back", update.run_step),
    ("6a power cut during a stream of rings", step_power_cut_rings),
    ("6b power cut during an update's install", update.power_cut_step),
    ("7 edge interrupts: the character device's events on -M virt's PL061", step_edge_interrupts),
]


def report_failure(r: Run, name: str, err: BaseException) -> None:
    print(f"\n*** device test FAILED at step {name}: {err}\n", flush=True)
    board = r.virt if r.virt.boots else r.board  # the one that was running
    print(f"--- the guest's serial console ({board.machine}, last lines) ---")
    print(board.serial_tail(120))
    if board.alive():
        try:
            rc, journal = board.sh("journalctl -b --no-pager -n 150 -o short-monotonic", timeout=60)
            print("--- the guest's journal (this boot, last 150 lines) ---")
            print(journal)
        except Exception as e:  # the console itself may be what failed
            print(f"(journal not readable over the console: {e})")
    print(f"--- run directory: {r.work} (board/ and virt/: serial-N.log, qemu-N.log; mqtt.log, mosquitto.log) ---", flush=True)


def run(a: argparse.Namespace) -> int:
    work, repo = Path(a.work), Path(a.repo)
    state = json.loads((work / "prepare.json").read_text())
    arts = update.Artifacts.from_json(state["artifacts"])
    broker = Broker(work)
    server = update.serve(work / "artifacts", HTTP_PORT)
    b = board_mod.Board(work / "board", Path(state["kernel"]), Path(state["dtb"]), Path(state["initrd"]),
                        Path(state["image"]), forwards={"probe": PROBE_PORT},
                        guestfwds={BROKER_PORT: BROKER_PORT, HTTP_PORT: HTTP_PORT})
    virt = board_mod.Board(work / "virt", Path(state["kernel"]), None, Path(state["initrd"]), Path(state["virt_image"]),
                           forwards={"probe": PROBE_PORT}, guestfwds={BROKER_PORT: BROKER_PORT}, machine="virt")
    r = Run(repo=repo, work=work, board=b, broker=broker, server=server, virt=virt, arts=arts, host_cli=repo / "target/release/doorbell-fleet")
    results = []
    t0 = time.monotonic()
    try:
        for name, fn in STEPS:
            log(f"STEP {name}")
            s0 = time.monotonic()
            try:
                fn(r)
            except (StepFailed, board_mod.BoardError, subprocess.TimeoutExpired) as e:
                report_failure(r, name, e)
                return 1
            results.append((name, time.monotonic() - s0))
            log(f"PASS {name} ({time.monotonic() - s0:.0f} s)")
    finally:
        b.close()
        virt.close()
        server.close()
        broker.close()
    print("\nevery step passed (times are QEMU emulation on this machine, not Pi times):")
    for name, secs in results:
        print(f"  {secs:6.0f} s  {name}")
    print(f"  {time.monotonic() - t0:6.0f} s  in all")
    print("figures: " + json.dumps(r.figures, indent=2))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--repo", required=True)
    p.add_argument("--work", required=True)
    for k in ("kernel", "dtb", "initrd", "image"):
        p.add_argument(f"--{k}", required=True)
    q = sub.add_parser("run")
    q.add_argument("--repo", required=True)
    q.add_argument("--work", required=True)
    a = ap.parse_args()
    if a.cmd == "prepare":
        prepare(a)
        return 0
    return run(a)


if __name__ == "__main__":
    sys.exit(main())
