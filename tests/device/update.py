"""Step 5 of the device test: an A/B update over MQTT that commits, and one that rolls back.

Host side (Python 3.11 stdlib only, plus the repository's own tools):

- `make_artifacts(work, agent_aarch64, repo)`: a release key made with `doorbell-release
  keygen`, and three artifacts signed with it exactly as `scripts/sign-release.sh` signs a
  release (zstd -19, `doorbell-release sign`), each checked with `doorbell-release inspect`:
  `good` (the aarch64 release build as the next patch version), `bad` (a newer version that
  cannot start: a static aarch64 program that exits 1 before READY, the way a broken release
  fails on a device), `later` (the release build again, newer still, for the power-cut step).
- `serve(dir, port)`: the artifact server (stdlib http.server on 127.0.0.1, `.dbu` files only,
  with a Content-Length as the device's downloader requires), `.url_for(name)` as the device
  sees it through QEMU's guestfwd (http://10.0.2.100:PORT/NAME).
- `send_update(fleet, device, url, wait_s)`: the operator's `doorbell-fleet send DEVICE
  update --arg url=URL --wait --timeout Ns --json`, its answers parsed (accepted, executing
  with progress, then successful or failed with the reason).
- `device_update_state(sh)` and `agree(state)`: on the device, `doorbell-agent update status
  --json` (the slot state), `systemctl show doorbell-agent` (ActiveState, SubState,
  StatusText, MainPID, ...), what MainPID runs, the `current`/`committed` links and the
  agent's own /status; `agree` lists every place where they disagree.
- `run_step(r)` (step 5) and `power_cut_step(r)` (step 6b) for tests/device/scenario.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import tomllib
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple

from common import StepFailed, check, log, wait_for

# What a flashed device has (scripts/install.sh, docs/deploying.md, "Deploying to devices").
INSTALL_ROOT = "/opt/doorbell-agent"
DEVICE_CLI = "/usr/local/bin/doorbell-agent"                        # -> current/doorbell-agent
COMMITTED_CLI = f"{INSTALL_ROOT}/committed/doorbell-agent"          # the last committed build
SLOTCTL = "doorbell-slotctl"                                        # /usr/local/sbin (on root's PATH)
UNIT = "doorbell-agent.service"
# The host as the device reaches it (QEMU guestfwd).
DEVICE_HOST = "10.0.2.100"

TARGET_OF_MACHINE = {183: "aarch64-unknown-linux-gnu", 62: "x86_64-unknown-linux-gnu"}
CC_OF_TARGET = {"aarch64-unknown-linux-gnu": "aarch64-linux-gnu-gcc", "x86_64-unknown-linux-gnu": "gcc"}
HOST_TARGET = {"x86_64": "x86_64-unknown-linux-gnu", "aarch64": "aarch64-unknown-linux-gnu"}.get(os.uname().machine)

# How the bad build fails on the device: slotctl's post-stop records each run's end this way
# (EXIT_CODE=exited, EXIT_STATUS=1), and the rollback reason lists them.
BAD_EXIT_STATUS = 1
BAD_FAILURE = f"exited with status {BAD_EXIT_STATUS}"

# A release that cannot start. It answers --version like the agent (install.sh and slotctl's
# state recovery ask a slot's binary for its version), then exits 1 before READY on every
# other invocation: under the unit that is a failed start, Restart=on-failure, and slotctl
# counts the trial's tries down to a rollback. Static, so it needs nothing from the device.
CANNOT_START_C = r"""
/* doorbell-agent VERSION as a broken release: it cannot start (device test, tests/device/update.py). */
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--version") == 0 || strcmp(argv[i], "-V") == 0) {
            puts("doorbell-agent " VERSION);
            return 0;
        }
    }
    fprintf(stderr, "doorbell-agent " VERSION ": cannot start: this build is broken (a release that exits before READY)\n");
    return EXIT_STATUS;
}
"""


# ---------------------------------------------------------------------------------------------
# artifacts


@dataclass
class Artifact:
    """One signed `.dbu` file and what its manifest says."""

    path: Path
    version: str
    target: str
    sha256: str          # of the binary inside (the slot state records this one)
    size: int            # binary bytes
    compressed_size: int
    key_id: str
    binary: Path         # the binary that was signed
    what: str            # for logs

    @property
    def name(self) -> str:
        return self.path.name


@dataclass
class Artifacts:
    """The release key and the signed artifacts of the update step."""

    dir: Path            # the artifacts (serve this directory: only *.dbu files are served)
    key_file: Path       # the secret key (0600, in dir/keys, never served or printed)
    pub_file: Path
    public_key: str      # base64, for `[update] public_key` / `flash.sh --public-key`
    key_id: str
    target: str
    base_version: str    # Cargo.toml's: what the flashed build reports and slot a holds
    good: Artifact
    bad: Artifact
    later: Artifact
    # Artifact version -> the version the running build reports (crate::VERSION): `good` and
    # `later` are the flashed build re-signed as newer versions, so it still says base_version.
    builds: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        def plain(v):
            if isinstance(v, Path):
                return str(v)
            if isinstance(v, dict):
                return {k: plain(x) for k, x in v.items()}
            return v
        return plain(dataclasses.asdict(self))

    @staticmethod
    def from_json(d: dict) -> "Artifacts":
        def art(x: dict) -> Artifact:
            return Artifact(**{**x, "path": Path(x["path"]), "binary": Path(x["binary"])})
        return Artifacts(**{**d, "dir": Path(d["dir"]), "key_file": Path(d["key_file"]), "pub_file": Path(d["pub_file"]),
                            "good": art(d["good"]), "bad": art(d["bad"]), "later": art(d["later"])})


def cargo_version(repo: Path) -> str:
    """The agent's version: its package's, which it inherits from the workspace."""
    with open(repo / "Cargo.toml", "rb") as f:
        manifest = tomllib.load(f)
    version = manifest["package"]["version"]
    return manifest["workspace"]["package"]["version"] if version == {"workspace": True} else version


def bump_patch(version: str, by: int) -> str:
    """`0.1.0` + 2 -> `0.1.2` (a pre-release `0.2.0-rc.1` + 1 -> `0.2.1`: newer either way)."""
    m = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?", version)
    if not m:
        raise ValueError(f"version {version!r} is not MAJOR.MINOR.PATCH")
    return f"{m[1]}.{m[2]}.{int(m[3]) + by}"


def elf_target(path: Path) -> str:
    """The target triple of an ELF executable, from its class and machine."""
    head = path.read_bytes()[:20]
    if len(head) < 20 or head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
        raise ValueError(f"{path}: not a little-endian ELF64 executable")
    machine = int.from_bytes(head[18:20], "little")
    if machine not in TARGET_OF_MACHINE:
        raise ValueError(f"{path}: ELF machine {machine} is not a target of this test")
    return TARGET_OF_MACHINE[machine]


def _run(cmd: list, what: str, **kw) -> subprocess.CompletedProcess:
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if p.returncode != 0:
        raise StepFailed(f"{what}: `{' '.join(map(str, cmd))}` exited {p.returncode}:\n{p.stdout}{p.stderr}")
    return p


def release_tool(repo: Path) -> Path:
    """The build host's `doorbell-release`. scripts/test-device.sh builds it beside the
    operator's tools (`cargo build --release --bin doorbell-agent --bin doorbell-fleet --bin doorbell-release`);
    when it is missing it is built the same way (the release agent's dependencies are reused,
    only the small binary is compiled and linked). DOORBELL_RELEASE_TOOL overrides."""
    if os.environ.get("DOORBELL_RELEASE_TOOL"):
        return Path(os.environ["DOORBELL_RELEASE_TOOL"])
    target_dir = Path(os.environ.get("CARGO_TARGET_DIR") or repo / "target")
    tool = target_dir / "release" / "doorbell-release"
    if not tool.exists():
        _run(["cargo", "build", "--locked", "--release", "--quiet", "--bin", "doorbell-release"], "building doorbell-release", cwd=repo)
    return tool


def _keygen(tool: Path, keys: Path) -> tuple[Path, Path]:
    """A release key pair (kept across reruns on the same work dir); prints nothing."""
    keys.mkdir(parents=True, exist_ok=True)
    keys.chmod(0o700)
    secret, public = keys / "release.key", keys / "release.pub"
    if not (secret.exists() and public.exists()):
        for p in (secret, public):
            p.unlink(missing_ok=True)
        # Its stdout names the key file and the public key only; captured, not echoed.
        _run([tool, "keygen", "--out", keys / "release"], "doorbell-release keygen")
    return secret, public


def _sign(tool: Path, key: Path, binary: Path, version: str, target: str, out: Path) -> None:
    """What scripts/sign-release.sh does, with the given doorbell-release (it would `cargo run`
    a debug build of it): zstd -19, then `doorbell-release sign`."""
    if shutil.which("zstd") is None:
        raise StepFailed("the zstd tool is missing (scripts/cross-build.sh and scripts/test-deps.sh install it)")
    with tempfile.NamedTemporaryFile(dir=out.parent, prefix=".payload.", suffix=".zst") as z:
        subprocess.run(["zstd", "-19", "-q", "-f", "-c", str(binary)], stdout=z, check=True)
        z.flush()
        _run([tool, "sign", "--key", key, "--version", version, "--target", target, "--binary", binary,
              "--zstd", z.name, "--out", out], f"signing {binary} as {version}")


def inspect_artifact(tool: Path, path: Path, public_key: str) -> dict:
    """`doorbell-release inspect FILE --public-key KEY`: the manifest, with the signature checked.

    inspect verifies with the device-side `verify_manifest`, which after the signature also
    requires the manifest's target to be the tool's own (x86_64 here): for an aarch64 artifact
    it ends with "built for aarch64-…, this device runs x86_64-…". That check comes after the
    key and the signature have passed (crates/artifact/src/lib.rs), so exactly that refusal, for
    the target the manifest names, still means "signature good"."""
    cmd = [str(tool), "inspect", str(path), "--public-key", public_key]
    p = subprocess.run(cmd, capture_output=True, text=True)
    lines = p.stdout.splitlines()
    try:
        manifest = json.loads(lines[0])
    except (IndexError, ValueError):
        raise StepFailed(f"doorbell-release inspect {path.name}: no manifest:\n{p.stdout}{p.stderr}") from None
    good = p.returncode == 0 and any(line.startswith("signature: good") for line in lines)
    foreign = (p.returncode == 1 and manifest.get("target") != HOST_TARGET
               and f"built for {manifest.get('target')}, this device runs {HOST_TARGET}" in p.stderr)
    if not (good or foreign):
        raise StepFailed(f"doorbell-release inspect {path.name} (exit {p.returncode}): signature not good:\n{p.stdout}{p.stderr}")
    return manifest


def build_cannot_start(out: Path, version: str, target: str) -> Path:
    """The bad release: a static program for `target` that answers --version and exits 1."""
    cc = CC_OF_TARGET.get(target)
    if cc is None or shutil.which(cc) is None:
        raise StepFailed(f"no C compiler for {target} ({cc}; scripts/cross-build.sh installs gcc-aarch64-linux-gnu)")
    out.parent.mkdir(parents=True, exist_ok=True)
    src = out.with_suffix(".c")
    src.write_text(CANNOT_START_C)
    _run([cc, "-static", "-Os", "-s", f'-DVERSION="{version}"', f"-DEXIT_STATUS={BAD_EXIT_STATUS}", "-o", out, src],
         f"compiling the bad build with {cc}")
    return out


def make_artifacts(work: Path, agent_aarch64: Path, repo: Path, tool: Path | None = None) -> Artifacts:
    """The release key and the three signed artifacts, in `work` (the artifacts at its top,
    the key in work/keys). The target comes from the agent's ELF header, so an x86_64 build
    works as a stand-in on the build host."""
    work, agent, repo = Path(work), Path(agent_aarch64), Path(repo)
    if not agent.exists():
        raise StepFailed(f"{agent} does not exist (scripts/cross-build.sh aarch64-unknown-linux-gnu makes it)")
    tool = Path(tool) if tool else release_tool(repo)
    work.mkdir(parents=True, exist_ok=True)
    target = elf_target(agent)
    base = cargo_version(repo)
    secret, public = _keygen(tool, work / "keys")
    public_key = public.read_text().strip()
    bad_bin = build_cannot_start(work / "build" / "doorbell-agent", bump_patch(base, 2), target)

    def one(binary: Path, version: str, what: str) -> Artifact:
        out = work / f"doorbell-agent-{version}-{target}.dbu"
        _sign(tool, secret, binary, version, target, out)
        m = inspect_artifact(tool, out, public_key)
        data = binary.read_bytes()
        expect = {"version": version, "target": target, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        wrong = {k: (m.get(k), v) for k, v in expect.items() if m.get(k) != v}
        if wrong:
            raise StepFailed(f"{out.name}: manifest disagrees with what was signed: {wrong}")
        return Artifact(path=out, version=version, target=target, sha256=m["sha256"], size=m["size"],
                        compressed_size=m["compressed_size"], key_id=m["key_id"], binary=binary, what=what)

    good = one(agent, bump_patch(base, 1), "the release build, as the next version")
    bad = one(bad_bin, bump_patch(base, 2), f"a build that cannot start (exits {BAD_EXIT_STATUS} before READY)")
    later = one(agent, bump_patch(base, 3), "the release build, newer still (power cut during its install)")
    return Artifacts(dir=work, key_file=secret, pub_file=public, public_key=public_key, key_id=good.key_id,
                     target=target, base_version=base, good=good, bad=bad, later=later,
                     builds={base: base, good.version: base, later.version: base, bad.version: bad.version})


# ---------------------------------------------------------------------------------------------
# the artifact server


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Top-level `.dbu` files only (never the keys beside them), with a Content-Length."""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self._only_artifacts() and super().do_GET()

    def do_HEAD(self):  # noqa: N802
        self._only_artifacts() and super().do_HEAD()

    def _only_artifacts(self) -> bool:
        name = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
        if "/" in name or not name.endswith(".dbu") or not (Path(self.directory) / name).is_file():
            self.send_error(404, "not an artifact")
            return False
        return True

    def log_message(self, *args):
        pass


class Server:
    """A running artifact server; `close()` stops it."""

    def __init__(self, directory: Path, port: int, device_base: str | None, bind: str):
        self.dir = Path(directory)
        handler = lambda *a, **kw: _Handler(*a, directory=str(self.dir), **kw)  # noqa: E731
        self.httpd = http.server.ThreadingHTTPServer((bind, port), handler)
        self.httpd.daemon_threads = True
        self.bind, self.port = bind, self.httpd.server_address[1]
        self.device_base = (device_base or f"http://{DEVICE_HOST}:{self.port}").rstrip("/")
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                       name="artifact-http", daemon=True)
        self.thread.start()

    def url_for(self, name: str) -> str:
        """The URL the device downloads `name` from (through the guestfwd)."""
        return f"{self.device_base}/{urllib.parse.quote(name)}"

    def local_url_for(self, name: str) -> str:
        return f"http://{self.bind}:{self.port}/{urllib.parse.quote(name)}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def serve(directory: Path, port: int, device_base: str | None = None, bind: str = "127.0.0.1") -> Server:
    """Serves the `.dbu` files of `directory` on bind:port (port 0: any free one).

    Not `fleet rollout --serve`: rollout is the operator's tool for waves of devices and
    prints only each device's final outcome, while this step follows one device's whole
    `update` lifecycle (`fleet send --wait --json`) for two artifacts from one server."""
    return Server(directory, port, device_base, bind)


# ---------------------------------------------------------------------------------------------
# the operator's update command


@dataclass
class Answer:
    """One response on P/cmd/res to the command."""

    device: str
    status: str                  # accepted | executing | successful | failed
    progress: float | None
    reason: str | None
    result: dict | None
    ts: str | None
    raw: dict


class Sent(NamedTuple):
    """What `fleet send ... update --wait --json` printed and returned."""

    rc: int
    answers: list[Answer]
    out: str
    err: str
    args: list[str]

    @property
    def statuses(self) -> list[str]:
        """Every answer's status, in order (repeats included: the outbox is at-least-once)."""
        return [a.status for a in self.answers]

    @property
    def lifecycle(self) -> list[str]:
        """The statuses with consecutive repeats folded: e.g. accepted, executing, successful."""
        out: list[str] = []
        for s in self.statuses:
            if not out or out[-1] != s:
                out.append(s)
        return out

    @property
    def final(self) -> Answer | None:
        return next((a for a in reversed(self.answers) if a.status in ("successful", "failed")), None)

    @property
    def reason(self) -> str | None:
        f = self.final
        return f.reason if f else None

    @property
    def id(self) -> str | None:
        return next((a.raw.get("id") for a in self.answers if a.raw.get("id")), None)

    def describe(self) -> str:
        lines = [f"$ doorbell-fleet --broker ... {' '.join(self.args)}  (exit {self.rc})"]
        for a in self.answers:
            detail = f" {a.progress:.2f}" if a.progress is not None else ""
            if a.reason:
                detail += f": {a.reason}"
            elif a.result:
                detail += f": {json.dumps(a.result)}"
            lines.append(f"  {a.ts or '-':<25} {a.status}{detail}")
        if self.err.strip():
            lines.append("  stderr: " + self.err.strip())
        return "\n".join(lines)


def parse_answers(out: str) -> list[Answer]:
    """The `--json` lines of `fleet send`: {"device": ..., "response": {id, name, status, ...}}."""
    answers = []
    for line in out.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            d = json.loads(line)
        except ValueError:
            continue
        r = d.get("response") if isinstance(d, dict) else None
        if not isinstance(r, dict):
            continue
        answers.append(Answer(device=d.get("device", "?"), status=r.get("status", "?"), progress=r.get("progress"),
                              reason=r.get("reason"), result=r.get("result"), ts=r.get("ts"), raw=r))
    return answers


def send_update(fleet: Callable, device_id: str, url: str, wait_s: float) -> Sent:
    """The operator's command: `fleet send DEVICE update --arg url=URL --wait --timeout Ns
    --json` (`fleet(*args, timeout=...)` runs `doorbell-fleet ARGS`). The signed manifest
    is inside the artifact, so the command carries only its URL. Exit 0 only when the final
    answer is `successful`."""
    args = ["send", device_id, "update", "--arg", f"url={url}", "--wait", "--timeout", f"{int(wait_s)}s", "--json"]
    rc, out, err = fleet(*args, timeout=wait_s + 60)
    return Sent(rc, parse_answers(out), out, err, args)


def lifecycle_problems(sent: Sent, want: str) -> list[str]:
    """What is wrong with the answers of an update command that should end `want`."""
    p = []
    if sent.final is None:
        p.append(f"no final answer (statuses {sent.statuses})")
    elif sent.final.status != want:
        p.append(f"final answer {sent.final.status!r}, expected {want!r} (reason: {sent.final.reason})")
    if sent.rc != (0 if want == "successful" else 1):
        p.append(f"fleet send exited {sent.rc}")
    life = sent.lifecycle
    if not life or life[0] != "accepted":
        p.append(f"the first answer is not `accepted`: {life}")
    if "executing" not in life:
        p.append(f"no `executing` answer: {life}")
    if any(a.status not in ("accepted", "executing", "successful", "failed") for a in sent.answers):
        p.append(f"unknown statuses: {sent.statuses}")
    return p


# ---------------------------------------------------------------------------------------------
# the device's views of the update state

_STATE_SCRIPT = r"""
run() { n=$1; shift; printf '\n@@begin %s@@\n' "$n"; "$@" 2>&1; r=$?; printf '\n@@end %s %d@@\n' "$n" "$r"; return $r; }
CLI=__CLI__
# During a trial `current` (and the CLI link) is the version on trial, which may not start at
# all: then the committed build's CLI reads the same file, and slotctl as a last resort.
if ! run update-status "$CLI" update status --json; then
    CLI=__COMMITTED_CLI__
    run update-status-committed "$CLI" update status --json || run slotctl-status __SLOTCTL__ status --json
fi
run unit systemctl show __UNIT__ -p ActiveState,SubState,Result,StatusText,MainPID,NRestarts,ExecMainCode,ExecMainStatus
pid=$(systemctl show -p MainPID --value __UNIT__)
run exe readlink "/proc/$pid/exe"
run current readlink __ROOT__/current
run committed readlink __ROOT__/committed
run agent-status "$CLI" status --json
"""

_SECTION = re.compile(r"@@begin (\S+)@@\n(.*?)\n?@@end \1 (\d+)@@", re.S)


def _first_json(text: str):
    """The first JSON object in `text` (log lines may surround it)."""
    for m in re.finditer(r"(?m)^\{", text):
        try:
            return json.JSONDecoder().raw_decode(text[m.start():])[0]
        except ValueError:
            continue
    return None


def _slot_of(path: str | None) -> str | None:
    m = re.search(r"(?:^|/)slots/([ab])(?:/|$)", path or "")
    return m[1] if m else None


def device_update_state(sh: Callable[[str], tuple[int, str]], *, cli: str | None = None,
                        committed_cli: str | None = None, slotctl: str | None = None, unit: str | None = None,
                        root: str | None = None) -> dict:
    """One round trip to the device; returns

    {"slots": the slot state (update status --json) or None, "source": which CLI read it,
     "unit": {ActiveState, SubState, Result, StatusText, MainPID, NRestarts, ...},
     "main_pid": int, "main_exe": path, "running_slot": a|b|None,
     "current": a|b|None, "committed_link": a|b|None,
     "agent": the agent's /status (doorbell-agent status --json) or None, "errors": {...}}"""
    cli, committed_cli = cli or DEVICE_CLI, committed_cli or COMMITTED_CLI
    slotctl, unit, root = slotctl or SLOTCTL, unit or UNIT, root or INSTALL_ROOT
    script = (_STATE_SCRIPT.replace("__CLI__", cli).replace("__COMMITTED_CLI__", committed_cli)
              .replace("__SLOTCTL__", slotctl).replace("__UNIT__", unit).replace("__ROOT__", root))
    rc, out = sh(script)
    sections = {m[1]: (int(m[3]), m[2]) for m in _SECTION.finditer(out.replace("\r\n", "\n"))}
    st: dict = {"slots": None, "source": None, "unit": {}, "main_pid": 0, "main_exe": None, "running_slot": None,
                "current": None, "committed_link": None, "agent": None, "errors": {}, "sections": sections}
    for name, source in (("update-status", cli), ("update-status-committed", committed_cli), ("slotctl-status", slotctl)):
        if name in sections:
            code, text = sections[name]
            parsed = _first_json(text) if code == 0 else None
            if isinstance(parsed, dict) and "committed" in parsed:
                st["slots"], st["source"] = parsed, f"{source} {'status' if 'slotctl' in name else 'update status'} --json"
                break
            st["errors"][name] = f"exit {code}: {text.strip()[-400:]}"
    code, text = sections.get("unit", (1, "no answer"))
    for line in text.splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            st["unit"][k.strip()] = v
    st["main_pid"] = int(st["unit"].get("MainPID") or 0)
    code, text = sections.get("exe", (1, ""))
    if code == 0 and st["main_pid"]:
        st["main_exe"] = text.strip()
        st["running_slot"] = _slot_of(st["main_exe"])
    for key, sec in (("current", "current"), ("committed_link", "committed")):
        code, text = sections.get(sec, (1, ""))
        st[key] = _slot_of(text.strip()) if code == 0 else None
    code, text = sections.get("agent-status", (1, "no answer"))
    agent = _first_json(text) if code == 0 else None
    if isinstance(agent, dict):
        st["agent"] = agent
    else:
        st["errors"]["agent-status"] = f"exit {code}: {text.strip()[-400:]}"
    return st


def summary(state: dict) -> str:
    """One line for logs: the slot state, the unit, what runs."""
    s = state.get("slots") or {}
    u = state.get("unit") or {}
    line = "no slot state"
    if s:
        slots = s.get("slots") or {}
        c = s.get("committed")
        t = s.get("trial")
        line = (f"trial {t['version']} in slot {t['slot']} ({t['tries_left']} of {t['tries']} tries left)" if t else
                f"{(slots.get(c) or {}).get('version')} committed in slot {c}")
        if s.get("outcomes"):
            o = s["outcomes"][-1]
            line += f"; last {o['kind']} {o['version']}"
    a = state.get("agent") or {}
    return (f"{line} | unit {u.get('ActiveState')}/{u.get('SubState')} MainPID {state.get('main_pid')} "
            f"(slot {state.get('running_slot')}) restarts {u.get('NRestarts')} | STATUS={u.get('StatusText')!r} | "
            f"agent {a.get('version')} slot {a.get('slot')} update {(a.get('update') or {}).get('state')}")


def agree(state: dict, builds: dict[str, str] | None = None) -> list[str]:
    """Where `systemctl` (the unit, its MainPID, STATUS=), the slot links, the agent's /status
    and `update status` (the slot state) disagree; [] when they tell the same story.

    `builds` (Artifacts.builds) maps an artifact version to the version its build reports:
    with it, the running agent's /status version is checked too (a re-signed build keeps its
    compiled-in version, so without the map that comparison would be meaningless)."""
    s, unit = state.get("slots"), state.get("unit") or {}
    if not s:
        return [f"no slot state from the device ({state.get('errors')})"]
    m: list[str] = []
    slots = s.get("slots") or {}
    trial, committed = s.get("trial"), s.get("committed")
    cver = (slots.get(committed) or {}).get("version")
    expected = trial["slot"] if trial else committed
    xver = trial["version"] if trial else cver
    if (unit.get("ActiveState"), unit.get("SubState")) != ("active", "running"):
        m.append(f"systemd: {UNIT} is {unit.get('ActiveState')}/{unit.get('SubState')} (result {unit.get('Result')}), "
                 f"while update status says {'trial ' + trial['version'] if trial else cver + ' committed'} in slot {expected}")
    if state.get("current") != expected:
        m.append(f"`current` -> slot {state.get('current')}, the slot state expects slot {expected}")
    if state.get("committed_link") != committed:
        m.append(f"`committed` -> slot {state.get('committed_link')}, the slot state says slot {committed} is committed")
    if state.get("running_slot") != expected:
        m.append(f"systemd's MainPID {state.get('main_pid')} runs {state.get('main_exe')} (slot {state.get('running_slot')}), "
                 f"the slot state expects slot {expected}")
    text = unit.get("StatusText") or ""
    if trial:
        want = f"trial {trial['version']} in slot {trial['slot']}"
        if not text.startswith(want):
            m.append(f"STATUS={text!r} does not start with {want!r} (update status: trial running)")
    else:
        if text.startswith("trial "):
            m.append(f"STATUS={text!r} shows a trial, update status shows none ({cver} committed in slot {committed})")
        last = (s.get("outcomes") or [None])[-1]
        if (u := re.match(r"updated to (\S+) in slot (\w)", text)):
            if (u[1], u[2]) != (cver, committed):
                m.append(f"STATUS={text!r}, update status: {cver} committed in slot {committed}")
            if not last or (last["kind"], last["version"]) != ("successful", u[1]):
                m.append(f"STATUS={text!r}, the last outcome in update status is {last and (last['kind'], last['version'])}")
        if (r := re.match(r"rolled back (\S+) -> (\S+) in slot (\w)", text)):
            if (r[2], r[3]) != (cver, committed):
                m.append(f"STATUS={text!r}, update status: {cver} committed in slot {committed}")
            if not last or (last["kind"], last["version"], last["from_version"]) != ("rolled_back", r[1], r[2]):
                m.append(f"STATUS={text!r}, the last outcome in update status is "
                         f"{last and (last['kind'], last['version'], last['from_version'])}")
    agent = state.get("agent")
    if agent is None:
        m.append(f"the agent's /status does not answer ({state['errors'].get('agent-status')})")
    else:
        if agent.get("slot") != expected:
            m.append(f"the agent's /status says slot {agent.get('slot')}, the slot state expects slot {expected}")
        upd = agent.get("update") or {}
        phases = ("trial", "committing") if trial else ("idle",)
        if upd.get("state") not in phases:
            m.append(f"the agent's /status says update {upd.get('state')!r}, update status implies {' or '.join(phases)}")
        acv = (upd.get("committed") or {}).get("version")
        if acv != cver or (upd.get("committed") or {}).get("slot") != committed:
            m.append(f"the agent's /status says {acv} committed in slot {(upd.get('committed') or {}).get('slot')}, "
                     f"update status says {cver} in slot {committed}")
        if builds and xver in builds and agent.get("version") != builds[xver]:
            m.append(f"the agent runs build {agent.get('version')}, slot {expected} should hold {xver} (build {builds[xver]})")
    return m


def wait_agree(sh: Callable, timeout: float, builds: dict[str, str] | None = None,
               settled: Callable[[dict], bool] = lambda st: not (st.get("slots") or {}).get("trial"),
               every: float = 2.0) -> tuple[dict, list[str]]:
    """Polls until the views agree and `settled(state)` (default: no trial); returns the last
    state and its mismatches ([] on success). STATUS= and /status follow the state within ~1 s."""
    deadline = time.monotonic() + timeout
    while True:
        st = device_update_state(sh)
        problems = agree(st, builds)
        if not settled(st):
            problems = problems + ["not settled yet: " + summary(st)]
        if not problems or time.monotonic() > deadline:
            return st, problems
        time.sleep(every)


def journal(sh: Callable, lines: int = 60) -> str:
    """The agent's and slotctl's recent journal lines (for a failure report)."""
    return sh(f"journalctl -b --no-pager -o short-monotonic -n {lines} -u {UNIT} -u 'doorbell-agent-*' 2>&1")[1]


# ---------------------------------------------------------------------------------------------
# the scenario's steps (tests/device/scenario.py: `update.run_step(r)`, `update.power_cut_step(r)`)


def _url(r, art: Artifact) -> str:
    """The artifact's URL as the device reaches it; the host side must serve it, or the
    device's refusal would be a misleading `io` one."""
    head = urllib.request.Request(r.server.local_url_for(art.name), method="HEAD")
    with urllib.request.urlopen(head, timeout=10) as resp:
        check(resp.status == 200, f"the artifact server does not serve {art.name}: {resp.status}")
    return r.server.url_for(art.name)


def _settled_on(version: str, kind: str, request_id: str | None):
    """A settle predicate: no trial, and the last outcome is `kind` of `version` for the command."""
    def ok(st: dict) -> bool:
        s = st.get("slots") or {}
        last = (s.get("outcomes") or [{}])[-1]
        return (not s.get("trial") and last.get("kind") == kind and last.get("version") == version
                and (request_id is None or last.get("request_id") == request_id))
    return ok


def _views(r) -> str:
    """What an operator sees on the device: `systemctl status` and `update status`."""
    unit = r.sh("systemctl status doorbell-agent --no-pager -l --lines=0 | head -n 12")[1]
    status = r.sh(f"{DEVICE_CLI} update status 2>&1 || {COMMITTED_CLI} update status 2>&1")[1]
    return f"$ systemctl status doorbell-agent\n{unit.rstrip()}\n$ doorbell-agent update status\n{status.rstrip()}"


def _update_and_settle(r, art: Artifact, want: str, result_problems, figure: str, what: str,
                       settled_kind: str = "successful", wait_s: float = 900) -> dict:
    """Sends `art` as the operator would, checks the answers end in `want` and pass
    `result_problems(sent)`, records the time as `figure`, then waits until the device's views
    agree on the settled outcome; returns that state."""
    t0 = time.monotonic()
    sent = send_update(r.fleet, r.device, _url(r, art), wait_s)
    took = time.monotonic() - t0
    log(sent.describe())
    problems = lifecycle_problems(sent, want) or result_problems(sent)
    check(not problems, f"update to {art.version}: " + "; ".join(problems) + "\n" + journal(r.sh))
    r.figures[figure] = round(took, 1)
    st, problems = wait_agree(r.sh, 60, r.arts.builds, _settled_on(art.version, settled_kind, sent.id))
    log(f"after {what} ({took:.0f} s from the command): {summary(st)}\n{_views(r)}")
    check(not problems, f"after {what}, the device's views disagree:\n  " + "\n  ".join(problems))
    return st


def run_step(r) -> None:
    """Step 5: the good artifact over MQTT is staged, tried and committed; the bad one fails its
    trial, is rolled back and answered `failed` with the reason; `systemctl status` and
    `update status` agree after each."""
    arts: Artifacts = r.arts
    st, problems = wait_agree(r.sh, 60, arts.builds)
    log(f"before: {summary(st)}")
    check(not problems, "before the update, the device's views disagree:\n  " + "\n  ".join(problems))
    base_slot = st["slots"]["committed"]
    new_slot = "b" if base_slot == "a" else "a"

    # 1. The good one: committed.
    def good_result(sent: Sent) -> list[str]:
        res = (sent.final.result or {}) if sent.final else {}
        problems = []
        if (res.get("outcome"), res.get("version"), res.get("slot")) != ("successful", arts.good.version, new_slot):
            problems.append(f"result {res}, expected successful {arts.good.version} in slot {new_slot}")
        if "passed its checks" not in (res.get("reason") or ""):
            problems.append(f"commit reason {res.get('reason')!r}")
        return problems

    _update_and_settle(r, arts.good, "successful", good_result, "update_commit_s", "the commit")

    # 2. The bad one: fails on every start of its trial, rolled back, answered failed.
    want = f"rolled_back: {arts.bad.version} (from {arts.good.version})"

    def bad_reason(sent: Sent) -> list[str]:
        reason = sent.reason or ""
        if reason.startswith(want) and "failed on all" in reason and BAD_FAILURE in reason:
            return []
        return [f"reason {reason!r}, expected {want!r}: failed on all ... starts ({BAD_FAILURE}, ...)"]

    since = time.monotonic()
    st = _update_and_settle(r, arts.bad, "failed", bad_reason, "update_rollback_s", "the rollback", settled_kind="rolled_back")
    s = st["slots"]
    check((s["committed"], s["slots"][new_slot]["version"]) == (new_slot, arts.good.version),
           f"after the rollback: committed {s['committed']}, expected {arts.good.version} in slot {new_slot}")
    check(arts.bad.sha256 in s.get("bad", []), "the bad build's sha256 is not remembered as bad")
    # The rolled-back version's outcome also reaches P/alerts (imported by the version back in).
    wait_for("an update_rolled_back alert for the bad version on the broker",
             lambda: r.broker.seen("alerts", since, lambda p: p.get("key") == "update_rolled_back"
                                   and arts.bad.version in (p.get("message") or "")), 60, 1)


def power_cut_step(r, wait_s: float = 900, after_staged_s: float = 2.5) -> None:
    """Step 6b: power is cut while the device installs an update (`after_staged_s` after its
    `executing 0.90` answer: staged, the agent restarting, slotctl's pre-start about to write
    the slot). After the reboot the device must run a verified slot and finish the update by
    itself: the operator's `fleet send --wait`, still waiting, gets `successful` from the new
    version once it committed; `doorbell-slotctl verify` passes and the views agree."""
    arts: Artifacts = r.arts
    device = r.device
    before = device_update_state(r.sh)
    log(f"before: {summary(before)}")
    url = _url(r, arts.later)
    since = time.monotonic()
    box: dict = {}
    op = threading.Thread(target=lambda: box.setdefault("sent", send_update(r.fleet, device, url, wait_s)), daemon=True)
    op.start()

    def staged():
        return r.broker.seen("cmd/res", since, lambda p: p.get("name") == "update" and (p.get("progress") or 0) >= 0.9)

    deadline = time.monotonic() + 600
    while not staged() and op.is_alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    check(bool(staged()), f"no `executing 0.90` (staged) answer before the cut; operator: {box.get('sent')}")
    time.sleep(after_staged_s)
    r.board.power_cut()
    log(f"power cut {time.monotonic() - since:.1f} s after the command, {after_staged_s} s after it was staged")
    ready = r.boot("boot after the power cut during an install")
    log(f"after the cut: READY {ready:.1f} s after QEMU started")
    # Where the cut landed: still staged (installed now), mid-install (the slot rewritten), or on
    # trial (the cut run counted as a try, "power loss or kill").
    log(f"right after the boot: {summary(device_update_state(r.sh))}")
    op.join(wait_s + 120)
    sent = box.get("sent")
    check(sent is not None, "the operator's fleet send did not return")
    log(sent.describe())
    problems = lifecycle_problems(sent, "successful")
    res = (sent.final.result or {}) if sent.final else {}
    if not problems and res.get("version") != arts.later.version:
        problems.append(f"result {res}, expected {arts.later.version}")
    st, mism = wait_agree(r.sh, 120, arts.builds, _settled_on(arts.later.version, "successful", sent.id))
    log(f"after the reboot: {summary(st)}\n{_views(r)}")
    rc, out = r.sh(f"{SLOTCTL} verify")
    check(rc == 0, f"doorbell-slotctl verify after the power cut: exit {rc}\n{out}")
    check(not problems, f"update to {arts.later.version} across the power cut: " + "; ".join(problems) + "\n" + journal(r.sh))
    check(not mism, "after the power cut, the device's views disagree:\n  " + "\n  ".join(mism))
    r.figures["power_cut_update"] = (f"{arts.later.version} committed across a power cut {after_staged_s} s after "
                                     f"staging; outcome reason: {res.get('reason')}")
