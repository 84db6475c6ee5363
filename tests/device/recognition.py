"""Recognition on ARM vs x86: one small labelled photo set, run through a live agent.

The issue's step 3: rings on the labelled photos give the same results on ARM as on x86
(known, unknown, no_face), with descriptors within a stated tolerance of x86's. This
module is the piece `scenario.py` uses for it (Python 3.11, standard library only):

- `PHOTOS` / `ENROLL` and `stage(dir)`: the photo set, copied into a capture directory
  with names that fix the ring order, plus `expected.json` (labels, sizes, sha256);
- `config_toml(...)`: the agent settings the set needs (simulated button without rate
  limit, `files` capture of the staged dir with `frames = 1`, models, probe, socket);
- `run_set(run, cfg_path, photos_dir=..., read_file=...)`: drives an agent through its
  CLI only (enroll, one press per staged photo, status polls, export) and returns every
  ring's result/person/confidence and the descriptors;
- `decode_export_file(bytes)`: the gallery export envelope exactly as src/faces/gallery.rs and
  src/store/records.rs write it (format byte, CRC-32, postcard `GalleryFile::V1`);
- `compare(x86, arm)`: same result and person per ring, descriptors and confidences within
  the tolerances below;
- `reference()`: the x86 reference, live, from target/release/doorbell-agent;
- `on_device(r, photos_dir)`: the same set on scenario.py's emulated Pi (serial console,
  GPIO button, probe forward).

`run(args) -> (rc, stdout)` runs `doorbell-agent ARGS...` wherever the agent is (a host
subprocess, or a serial console of the emulated Pi); each command's output is small (the
largest is `status --json`, ~1-2 KiB) and is parsed tolerantly (CRLF, an echoed command line,
a prompt, interleaved kernel messages). The export file is binary: `read_file(path) ->
bytes` reads it back (on the device: `base64 PATH` through the console, then
`decode_base64_output(text)`).

Tolerances (derivation and measurements at DESCRIPTOR_L2_TOL): descriptor L2 distance
x86↔ARM ≤ 1e-3 (cosine ≥ 1 - 5e-7), cosine similarities ≤ 2e-3 apart, reported confidences
≤ 0.02 apart; results and people must be identical. Measured: x86 and aarch64 (NEON, generic
and Cortex-A53 kernels) give bit-identical descriptors; an unfused evaluation order moves
them by ≤ 5.5e-6.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Callable

from common import free_port

MODELS = Path(os.environ.get("DOORBELL_MODELS", "/var/cache/doorbell-agent/models-v1"))
TESTSET = MODELS / "testset"
DETECTOR = "face_detection_short_range.onnx"
EMBEDDER = "dlib_face_recognition_resnet_v1.onnx"

# --- the photo set ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Photo:
    """One staged photo: where it comes from in the test set, and what a ring on it is."""

    name: str  # staged file name; the files source rings them in name order
    src: str  # path in the test set (scripts/fetch-models.sh)
    result: str  # expected ring result
    person: str | None = None  # expected person (known rings)
    why: str = ""


PERSON = "obama"

# Not .jpg/.jpeg: the files source (src/capture.rs) only replays those, so the enrollment
# photo sits in the same flat directory without ever being rung; `faces enroll --image`
# takes any file. Flat, so a harness can copy the directory file by file.
ENROLL = Photo("enroll-obama-1.img", "person/obama/1.jpg", "enroll", PERSON, "910x1137; the enrolled sample")

PHOTOS: list[Photo] = [
    Photo("01-known-obama-2.jpg", "person/obama/2.jpg", "known", PERSON, "626x1200: another photo of the enrolled person"),
    Photo("02-unknown-biden-1.jpg", "person/biden/1.jpg", "unknown", None, "970x2204: the other person of the set"),
    Photo("03-no_face-sample4-1.jpg", "noface/sample4-1.jpg", "no_face", None, "320x510: an empty scene"),
    Photo("04-known-obama-3.jpg", "person/obama/3.jpg", "known", PERSON, "1434x2333: a third photo, other light/pose"),
    Photo("05-unknown-stranger-4-2.jpg", "stranger/sample4-2.jpg", "unknown", None, "426x491: the stranger closest to the enrolled photo (cosine 0.851)"),
    Photo("06-no_face-sample6-2.jpg", "noface/sample6-2.jpg", "no_face", None, "299x555: a window blind and a wall"),
]
"""Rung in this order on a fresh store (ring N shows file N-1 with `frames = 1`)."""

EXPECTED_FILE = "expected.json"

# --- tolerances -----------------------------------------------------------------------------
#
# Where x86 and ARM could differ: JPEG decoding is integer (zune-jpeg's AVX2, NEON and scalar
# paths share the same 14-bit fixed-point constants); the letterbox, alignment warp, blur
# measure and matching are scalar f32 Rust (IEEE, no FMA contraction): identical inputs,
# identical bits. tract's kernels are per-architecture (x86 FMA/AVX-512, aarch64 NEON with
# generic, Cortex-A53 and A55 variants picked from /proc/cpuinfo), and a different
# accumulation order or an unfused multiply-add would round each convolution's sum of up to
# 3*3*256 = 2304 products differently, through 29 layers of the ResNet and through
# BlazeFace's keypoints into the 150x150 chip's sampling.
#
# Measured (the pipeline worker's own protocol, every face of the labelled set, release builds
# of this tree): x86_64 with AVX-512, x86_64 restricted to AVX2+FMA
# (qemu-x86_64 -cpu Haswell), aarch64 NEON generic kernels and aarch64 Cortex-A53 kernels
# (qemu-aarch64, TRACT_CPU_AARCH64_KIND=a53, as on the emulated Pi) give bit-identical
# descriptors, scores, boxes and blur measures: tract's kernels all accumulate each output in
# k order with fused multiply-adds. What an evaluation-order change costs was measured by
# taking FMA away (qemu-x86_64 -cpu Nehalem: tract's generic SSE kernels, unfused): descriptor
# L2 up to 5.5e-6 (max |d| 1.3e-6), boxes 6e-5 px, similarities up to 7e-7.
#
# What a difference costs: decisions compare the cosine similarity of unit descriptors with
# faces.match_threshold = 0.90. Same-person similarities are 0.95-0.97 and the closest
# stranger of the whole set is at 0.86 (docs/face-recognition.md, "Numbers"); in this set the nearest
# decision is the stranger at 0.851 (margin 0.049), then obama/2 at 0.960 (0.060). If the
# probe's and the enrolled descriptor each move by at most e (L2), their dot product moves by
# at most 2e + e^2 (unit vectors), so no decision can flip while 2e < 0.04: e < 0.02.
DESCRIPTOR_L2_TOL = 1e-3
"""Max L2 distance between the x86 and ARM descriptor of the same photo (unit vectors:
cosine >= 1 - tol^2/2 = 1 - 5e-7; max |d| <= tol). 20x below the 0.02 at which a decision
could flip; 180x above the largest difference an evaluation-order change produced (5.5e-6),
so a tract or compiler upgrade that reorders sums does not fail the test, while a wrong ARM
kernel, a misaligned chip or a decoding difference of a grey level does."""
SIMILARITY_TOL = 2 * DESCRIPTOR_L2_TOL
"""Max difference of a photo's cosine similarity to the enrolled person between x86 and ARM
(both descriptors may move by DESCRIPTOR_L2_TOL): 2e-3, 20x inside the 0.04 margin."""
CONFIDENCE_SLOPE = 40.0  # src/faces/matcher.rs CONFIDENCE_SLOPE
MATCH_THRESHOLD = 0.90  # faces.match_threshold default
CONFIDENCE_TOL = CONFIDENCE_SLOPE / 4 * SIMILARITY_TOL
"""Max difference of a reported confidence: the logistic 1/(1+exp(-40(s-t))) has slope at
most 40/4 = 10, so similarities within 2e-3 give confidences within 0.02."""
# --- staging --------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def stage(dir: Path, testset: Path = TESTSET) -> dict:
    """Copies the enrollment photo and PHOTOS into `dir` (created; must not hold other
    .jpg/.jpeg files, which the files source would ring too) and writes `expected.json`.
    Returns that manifest: enrollment photo, ring photos in ring order, expected labels,
    sizes and sha256 (for a harness to check its copy on the device)."""
    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    strays = sorted(p.name for p in dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg") and p.name not in {x.name for x in PHOTOS})
    if strays:
        raise RuntimeError(f"{dir} holds other JPEGs the files source would ring: {strays}")
    if not testset.is_dir():
        raise RuntimeError(f"no labelled test set in {testset}: run scripts/fetch-models.sh (or set DOORBELL_MODELS)")
    entries = []
    for photo in [ENROLL, *PHOTOS]:
        src = testset / photo.src
        shutil.copyfile(src, dir / photo.name)
        entries.append({"photo": photo, "bytes": src.stat().st_size, "sha256": _sha256(src)})
    m = {
        "person": PERSON,
        "enroll": {"file": ENROLL.name, "src": ENROLL.src, "bytes": entries[0]["bytes"], "sha256": entries[0]["sha256"]},
        "rings": [
            {"file": e["photo"].name, "src": e["photo"].src, "result": e["photo"].result, "person": e["photo"].person,
             "bytes": e["bytes"], "sha256": e["sha256"]}
            for e in entries[1:]
        ],
    }
    if sorted(r["file"] for r in m["rings"]) != [r["file"] for r in m["rings"]]:
        raise AssertionError("PHOTOS must be listed in name order (the files source's ring order)")
    (dir / EXPECTED_FILE).write_text(json.dumps(m, indent=1) + "\n")
    return m


def manifest() -> dict:
    """The manifest `stage` writes, without copying anything."""
    return {
        "person": PERSON,
        "enroll": {"file": ENROLL.name, "src": ENROLL.src},
        "rings": [{"file": p.name, "src": p.src, "result": p.result, "person": p.person} for p in PHOTOS],
    }


def config_toml(
    *,
    data_dir: str,
    photos_dir: str,
    probe_listen: str = "127.0.0.1:8080",
    control_socket: str | None = None,
    models_dir: str | None = None,
    device_id: str | None = None,
    slow: bool = False,
) -> str:
    """The agent configuration the set needs. `models_dir=None` keeps the agent's default
    (the installed models); `slow=True` widens the pipeline deadlines for an emulated CPU
    (the control socket's own 60 s answer limit still bounds one enrollment)."""
    q = json.dumps  # a TOML basic string is a JSON string for these values
    lines = []
    if device_id:
        lines.append(f"device_id = {q(device_id)}")
    lines += [
        f"data_dir = {q(data_dir)}",
        "",
        "[gpio]",
        'backend = "simulated"',
        'debounce = "0ms"        # presses come one per decided ring; never merge them',
        "burst = 1000            # and never rate-limit them",
        "rings_per_minute = 60000",
        "",
        "[probe]",
        f"listen = {q(probe_listen)}",
        "",
        "[control]",
    ]
    if control_socket:
        lines.append(f"socket = {q(control_socket)}")
    lines += [
        "",
        "[capture]",
        'source = "files"',
        f"path = {q(photos_dir)}",
        "frames = 1              # ring N shows file N-1 (name order), nothing else",
        "",
        "[faces]",
    ]
    if models_dir:
        lines += [f"detector_model = {q(models_dir.rstrip('/') + '/' + DETECTOR)}", f"embedder_model = {q(models_dir.rstrip('/') + '/' + EMBEDDER)}"]
    lines += ["", "[pipeline]", 'idle_exit = "0s"']
    if slow:
        lines += ['ring_deadline = "55s"', 'start_timeout = "300s"', 'budget = "300s"', 'health_interval = "300s"']
    return "\n".join(lines) + "\n"


# --- tolerant parsing of CLI output ---------------------------------------------------------

_KERNEL_LINE = re.compile(r"^\s*\[\s*\d+\.\d+\]")


def _clean(text: str | bytes) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)  # terminal escapes
    return "\n".join(line for line in text.split("\n") if not _KERNEL_LINE.match(line))


def json_from_output(text: str | bytes) -> dict:
    """The JSON object a command printed, found in console noise around it."""
    text = _clean(text)
    decoder = json.JSONDecoder()
    for m in re.finditer(r"^[ \t]*\{", text, re.M):
        try:
            value, _ = decoder.raw_decode(text, m.end() - 1)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    raise ValueError(f"no JSON object in the output: {text[:300]!r}")


def decode_base64_output(text: str | bytes) -> bytes:
    """Bytes from the output of coreutils `base64 FILE` read through a console: the longest
    block of base64's lines (76 characters each, the last one shorter and a multiple of 4),
    whatever surrounds it (echoed command, prompt, kernel messages). The caller checks what
    it decoded (the export's CRC does)."""
    chars = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")
    best: list[str] = []
    block: list[str] = []
    for line in [line.strip() for line in _clean(text).split("\n")]:
        if len(line) == 76 and "=" not in line and chars.match(line):
            block.append(line)  # a full line: the block goes on
            continue
        if 0 < len(line) < 76 and len(line) % 4 == 0 and chars.match(line):
            block.append(line)  # the short last line ends the block
        if sum(map(len, block)) > sum(map(len, best)):
            best = block
        block = []
    if sum(map(len, block)) > sum(map(len, best)):
        best = block
    if not best:
        raise ValueError("no base64 block in the output")
    return base64.b64decode("".join(best), validate=True)


# --- the export envelope --------------------------------------------------------------------

GALLERY_MAGIC = "doorbell-agent gallery"  # src/faces/gallery.rs MAGIC
ENVELOPE_FORMAT = 1  # src/store/records.rs FORMAT
DIMS = 128


class ExportError(ValueError):
    """The export file is not a gallery this module understands."""


class _Postcard:
    """A reader of postcard's wire format: LEB128 varints for integers, lengths and enum
    variants; f32 as 4 little-endian bytes; strings and sequences length-prefixed."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ExportError(f"truncated at byte {self.pos} (needs {n} more, {len(self.data) - self.pos} left)")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def varint(self, bits: int = 64) -> int:
        value = shift = 0
        for _ in range((bits + 6) // 7):
            (b,) = self.take(1)
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                if value >> bits:
                    raise ExportError(f"varint overflows u{bits} at byte {self.pos}")
                return value
            shift += 7
        raise ExportError(f"varint too long at byte {self.pos}")

    def string(self) -> str:
        n = self.varint()
        try:
            return self.take(n).decode("utf-8")
        except UnicodeDecodeError as e:
            raise ExportError(f"invalid UTF-8 string at byte {self.pos}: {e}") from None

    def f32(self) -> float:
        return struct.unpack("<f", self.take(4))[0]


def decode_export_file(data: bytes) -> dict:
    """The whole export envelope: `[format=1][crc32 LE][postcard(GalleryFile::V1{magic,
    device_id, exported_ms, embedder, people: [PersonV1{name, list, embedder, samples,
    enrolled_ms, updated_ms}]})]`. Raises ExportError on anything else."""
    if len(data) < 5:
        raise ExportError(f"too short ({len(data)} bytes)")
    if data[0] != ENVELOPE_FORMAT:
        newer = ENVELOPE_FORMAT < data[0] < 16
        raise ExportError(f"envelope format {data[0]}" + (" (a newer agent's)" if newer else " (not a gallery file)"))
    crc = struct.unpack("<I", data[1:5])[0]
    payload = data[5:]
    if zlib.crc32(payload) & 0xFFFFFFFF != crc:  # crc32fast = CRC-32/ISO-HDLC, as zlib
        raise ExportError(f"CRC mismatch (stored {crc:08x}, computed {zlib.crc32(payload) & 0xFFFFFFFF:08x})")
    r = _Postcard(payload)
    variant = r.varint(32)
    if variant != 0:
        raise ExportError(f"GalleryFile variant {variant} (only V1 = 0 is known: a newer agent's file)")
    magic = r.string()
    if magic != GALLERY_MAGIC:
        raise ExportError(f"wrong magic {magic!r}")
    out = {"format": data[0], "crc32": f"{crc:08x}", "magic": magic, "device_id": r.string(), "exported_ms": r.varint(), "embedder": r.string()}
    people = []
    for _ in range(r.varint()):
        name = r.string()
        lst = r.varint(32)
        if lst not in (0, 1):
            raise ExportError(f"person {name!r}: list variant {lst}")
        embedder = r.string()
        samples = []
        for _ in range(r.varint()):
            n = r.varint()
            samples.append([r.f32() for _ in range(n)])
        people.append({
            "name": name, "list": ("known", "blocked")[lst], "embedder": embedder, "samples": samples,
            "enrolled_ms": r.varint(), "updated_ms": r.varint(),
        })
    if r.pos != len(payload):
        raise ExportError(f"{len(payload) - r.pos} trailing bytes after the gallery")
    for p in people:
        if p["embedder"] != out["embedder"]:
            raise ExportError(f"person {p['name']!r} is from embedder {p['embedder']}, the file from {out['embedder']}")
        if not p["samples"]:
            raise ExportError(f"person {p['name']!r} has no sample")
        for s in p["samples"]:
            if len(s) != DIMS or not all(math.isfinite(v) for v in s):
                raise ExportError(f"person {p['name']!r}: a descriptor of {len(s)} values, not {DIMS} finite ones")
            if abs(math.sqrt(sum(v * v for v in s)) - 1.0) > 1e-3:
                raise ExportError(f"person {p['name']!r}: a descriptor is not unit length")
    out["people"] = people
    return out


# --- driving an agent -------------------------------------------------------------------------

Run = Callable[[list[str]], "tuple[int, str]"]


class SetError(RuntimeError):
    """The agent did not do what the set needs."""


class SetFailure(SetError):
    """A failure that waiting longer cannot mend (ends a poll at once)."""


def _call(run: Run, cfg_path: str, args: list[str], *, expect: str | None = None) -> str:
    rc, out = run(["-c", cfg_path, *args])
    out = _clean(out)
    if rc != 0 or (expect is not None and expect not in out):
        raise SetError(f"`doorbell-agent {' '.join(args)}` exited {rc}: {out.strip()[-600:]}")
    return out


def status(run: Run, cfg_path: str) -> dict:
    """The agent's /status document (`status --json`)."""
    return json_from_output(_call(run, cfg_path, ["status", "--json"]))


def _poll(what: str, check: Callable[[], "dict | None"], timeout: float) -> dict:
    """Calls `check` until it returns something, backing off from 20 ms to 1 s."""
    deadline = time.monotonic() + timeout
    pause, last_error = 0.02, None
    while True:
        try:
            got = check()
            if got is not None:
                return got
        except SetFailure:
            raise
        except (SetError, ValueError) as e:  # agent still starting, console noise
            last_error = e
        if time.monotonic() >= deadline:
            raise SetError(f"{what}: not within {timeout:.0f} s" + (f" (last error: {last_error})" if last_error else ""))
        time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 1.6, 1.0)


def wait_running(run: Run, cfg_path: str, timeout: float = 120.0) -> dict:
    """Waits until `status` answers with state `running` (store, button and pipeline up)."""
    return _poll("agent running", lambda: (lambda s: s if s.get("state") == "running" else None)(status(run, cfg_path)), timeout)


def _people(run: Run, cfg_path: str) -> list[str]:
    listed = json_from_output(_call(run, cfg_path, ["faces", "list", "--json"]))
    return [p["name"] for p in listed.get("people", [])]


def _remove(run: Run, cfg_path: str, name: str) -> None:
    _call(run, cfg_path, ["faces", "remove", name], expect="removed")


def _ring_file(seq: int, files: list[str], frames: int = 1) -> str:
    """The file the files source shows for ring `seq` (src/capture.rs `Files::grab`)."""
    return files[((seq - 1) * frames) % len(files)]


PROBE_PREFIX = "probe-"


def run_set(
    run: Run,
    cfg_path: str,
    *,
    photos_dir: str,
    read_file: Callable[[str], bytes] | None = None,
    export_path: str | None = None,
    ring_timeout: float = 120.0,
    probes: bool = True,
    clear_gallery: bool = False,
    press_fn: Callable[[], None] | None = None,
    status_fn: Callable[[], dict] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Runs the set on the agent configured by `cfg_path` (a path where the agent is):
    enrolls PERSON from the enrollment photo, presses one ring per staged photo and waits
    for each to be decided, then (with `probes`) enrolls each ring's face photo as
    `probe-<file>` so the export carries its descriptor, exports the gallery, reads it back
    with `read_file` (default: a local read) and removes the probes again.

    `photos_dir` is where the staged photos are on the agent's side (its capture.path);
    `export_path` where the export goes (default: photos_dir/gallery.export). The agent must
    run with capture.frames = 1 from photos_dir and let one press per decided ring through
    (`config_toml`'s settings do). Rings are mapped to photos by their sequence number, so
    earlier rings of the same agent do not matter. `press_fn` presses the button (default:
    `doorbell-agent press`, which needs gpio.backend = "simulated"; on a real or emulated
    button, whatever drives the line); `status_fn` returns the /status document (default:
    `doorbell-agent status --json`; e.g. a GET of the probe). The gallery must hold nobody
    but PERSON and probes (they are removed first) unless `clear_gallery`.

    Returns {"rings": [{file, seq, result, person, confidence, reason, stage_ms, decided_s}]
    in file order, "descriptors": {"enroll": [...], "<ring file>": [...]}, "export": {...},
    "timings": {...}, "agent": {...}}."""
    say = log or (lambda _m: None)
    read_file = read_file or (lambda p: Path(p).read_bytes())
    photos_dir = photos_dir.rstrip("/")
    export_path = export_path or f"{photos_dir}/gallery.export"
    files = [p.name for p in PHOTOS]
    t_start = time.monotonic()
    timings: dict[str, float] = {}
    get_status = status_fn or (lambda: status(run, cfg_path))
    press = press_fn or (lambda: _call(run, cfg_path, ["press"], expect="pressed") and None)

    first = _poll("agent running", lambda: (lambda s: s if s.get("state") == "running" else None)(get_status()), ring_timeout)
    agent = {"version": first.get("version"), "device_id": first.get("device_id")}

    # A clean gallery: the set's own names go, anyone else is an error unless asked.
    ours = lambda n: n == PERSON or n.startswith(PROBE_PREFIX)  # noqa: E731
    for name in _people(run, cfg_path):
        if ours(name) or clear_gallery:
            _remove(run, cfg_path, name)
        else:
            raise SetError(f"{name!r} is enrolled: it would take part in matching (remove them, or pass clear_gallery=True)")

    t = time.monotonic()
    _call(run, cfg_path, ["faces", "enroll", PERSON, "--image", f"{photos_dir}/{ENROLL.name}"], expect="enrolled")
    timings["enroll_s"] = round(time.monotonic() - t, 3)
    say(f"enrolled {PERSON} from {ENROLL.name} in {timings['enroll_s']} s")

    rings = []
    t_rings = time.monotonic()
    for _ in files:
        before = get_status()["rings"]
        count, last_seq = before.get("since_start", 0), (before.get("last") or {}).get("seq")
        t = time.monotonic()
        press()

        def decided() -> dict | None:
            now = get_status()["rings"]
            if now.get("since_start", 0) == count:
                return None
            if now["since_start"] < count:
                raise SetFailure(f"rings since start went from {count} to {now['since_start']}: the agent restarted")
            if now["since_start"] != count + 1:
                raise SetFailure(f"{now['since_start'] - count} rings were stored for one press: something else rings this agent")
            last = now.get("last") or {}
            if last.get("seq") == last_seq:
                raise SetFailure(f"ring count moved but the last ring is still #{last_seq}")
            return last

        last = _poll(f"ring after press #{len(rings) + 1}", decided, ring_timeout)
        elapsed = round(time.monotonic() - t, 3)
        ring = {
            "file": _ring_file(int(last["seq"]), files),
            "seq": last["seq"],
            "result": last.get("result"),
            "person": last.get("name"),
            "confidence": last.get("confidence"),
            "reason": last.get("reason"),
            "stage_ms": last.get("stage_ms"),
            "decided_s": elapsed,
        }
        say(f"ring #{ring['seq']} {ring['file']}: {ring['result']} {ring['person'] or ''} {ring['confidence']} ({elapsed} s)")
        rings.append(ring)
    timings["rings_s"] = round(time.monotonic() - t_rings, 3)
    if sorted(r["file"] for r in rings) != files:
        raise SetError(f"the rings did not show every staged photo once: {[r['file'] for r in rings]}")
    rings.sort(key=lambda r: r["file"])

    probe_names = {}
    if probes:
        t = time.monotonic()
        for p in PHOTOS:
            if p.result in ("known", "unknown"):
                name = PROBE_PREFIX + p.name.rsplit(".", 1)[0]
                _call(run, cfg_path, ["faces", "enroll", name, "--image", f"{photos_dir}/{p.name}"], expect="enrolled")
                probe_names[name] = p.name
        timings["probes_s"] = round(time.monotonic() - t, 3)
        say(f"embedded {len(probe_names)} probe photos in {timings['probes_s']} s")

    t = time.monotonic()
    out = _call(run, cfg_path, ["faces", "export", export_path], expect="exported")
    m = re.search(r"\((\d+) bytes\)", out)
    data = read_file(export_path)
    if m and int(m.group(1)) != len(data):
        raise SetError(f"the export is {m.group(1)} bytes on the agent's side, {len(data)} read back")
    envelope = decode_export_file(data)
    timings["export_s"] = round(time.monotonic() - t, 3)
    for name in probe_names:
        _remove(run, cfg_path, name)

    people = {p["name"]: p for p in envelope["people"]}
    missing = [n for n in [PERSON, *probe_names] if n not in people]
    if missing or len(people) != 1 + len(probe_names):
        raise SetError(f"the export holds {sorted(people)}, expected {PERSON} and {len(probe_names)} probes")
    descriptors = {"enroll": people[PERSON]["samples"][-1]}
    for name, file in probe_names.items():
        if len(people[name]["samples"]) != 1:
            raise SetError(f"{name} has {len(people[name]['samples'])} samples, expected 1")
        descriptors[file] = people[name]["samples"][0]
    if len(people[PERSON]["samples"]) != 1:
        raise SetError(f"{PERSON} has {len(people[PERSON]['samples'])} samples, expected 1 (was the gallery clean?)")
    timings["total_s"] = round(time.monotonic() - t_start, 3)
    return {
        "agent": agent,
        "person": PERSON,
        "rings": rings,
        "descriptors": descriptors,
        "export": {k: envelope[k] for k in ("device_id", "embedder", "exported_ms", "crc32")} | {"bytes": len(data), "people": len(people)},
        "timings": timings,
    }


# --- comparison ----------------------------------------------------------------------------


def _dot(a: list[float], b: list[float]) -> float:
    return math.fsum(x * y for x, y in zip(a, b))


def _unit(a: list[float]) -> list[float]:
    n = math.sqrt(_dot(a, a))
    return [x / n for x in a]


def descriptor_diff(a: list[float], b: list[float]) -> dict:
    """max |a_i - b_i|, L2 distance and cosine similarity of two descriptors."""
    if len(a) != len(b):
        raise ValueError(f"descriptors of {len(a)} and {len(b)} values")
    d = [x - y for x, y in zip(a, b)]
    return {
        "max_abs": max(abs(x) for x in d),
        "l2": math.sqrt(math.fsum(x * x for x in d)),
        "cosine": _dot(a, b) / math.sqrt(_dot(a, a) * _dot(b, b)),
    }


def similarities(result: dict) -> dict[str, float]:
    """Cosine similarity of each probe photo to the enrolled person (as the matcher
    computes it: the unit mean of one sample is the sample)."""
    enrolled = _unit(result["descriptors"]["enroll"])
    return {f: _dot(_unit(d), enrolled) for f, d in result["descriptors"].items() if f != "enroll"}


def expected_confidence(result: str, s: float) -> float | None:
    """The confidence src/faces/matcher.rs reports for similarity `s` (one face)."""
    c = 1.0 / (1.0 + math.exp(-CONFIDENCE_SLOPE * (s - MATCH_THRESHOLD)))
    return {"known": c, "unknown": 1.0 - c}.get(result)


def check_expected(result: dict) -> list[str]:
    """Where a run's rings differ from the labels."""
    labels = {p.name: p for p in PHOTOS}
    problems = []
    for r in result["rings"]:
        p = labels.get(r["file"])
        if p is None:
            problems.append(f"{r['file']}: not a photo of the set")
        elif (r["result"], r["person"]) != (p.result, p.person):
            problems.append(f"{r['file']}: {r['result']}/{r['person']}, labelled {p.result}/{p.person}" + (f" ({r['reason']})" if r.get("reason") else ""))
    if sorted(r["file"] for r in result["rings"]) != sorted(labels):
        problems.append("not every photo of the set was rung exactly once")
    return problems


def compare(x86: dict, arm: dict) -> tuple[bool, str]:
    """x86 reference vs ARM run: every ring the same result and person (and as labelled),
    confidences within CONFIDENCE_TOL, each photo's descriptor within DESCRIPTOR_L2_TOL,
    similarities to the enrolled person within SIMILARITY_TOL. Returns (ok, report)."""
    lines, failures = [], []
    for name, run in (("x86", x86), ("arm", arm)):
        for p in check_expected(run):
            failures.append(f"{name}: {p}")
    lines.append(f"x86 {x86.get('agent', {}).get('version')} on {x86.get('export', {}).get('device_id')}; "
                 f"arm {arm.get('agent', {}).get('version')} on {arm.get('export', {}).get('device_id')}")
    if x86.get("export", {}).get("embedder") != arm.get("export", {}).get("embedder"):
        failures.append(f"embedders differ: {x86.get('export', {}).get('embedder')} vs {arm.get('export', {}).get('embedder')}")

    lines.append(f"{'ring':<30} {'x86':<16} {'arm':<16} {'conf x86':>10} {'conf arm':>10} {'|d conf|':>9}")
    xr, ar = {r["file"]: r for r in x86["rings"]}, {r["file"]: r for r in arm["rings"]}
    max_dconf = 0.0
    for f in sorted(set(xr) | set(ar)):
        a, b = xr.get(f), ar.get(f)
        if a is None or b is None:
            failures.append(f"{f}: rung on {'arm' if a is None else 'x86'} only")
            continue
        la, lb = f"{a['result']}/{a['person'] or '-'}", f"{b['result']}/{b['person'] or '-'}"
        ca, cb = a.get("confidence"), b.get("confidence")
        dconf = abs(ca - cb) if ca is not None and cb is not None else None
        if (a["result"], a["person"]) != (b["result"], b["person"]):
            failures.append(f"{f}: x86 {la}, arm {lb}")
        if (ca is None) != (cb is None):
            failures.append(f"{f}: confidence {ca} on x86, {cb} on arm")
        if dconf is not None:
            max_dconf = max(max_dconf, dconf)
            if dconf > CONFIDENCE_TOL:
                failures.append(f"{f}: confidence differs by {dconf:.3g} > {CONFIDENCE_TOL:g}")
        fmt = lambda c: "-" if c is None else f"{c:.6f}"  # noqa: E731
        lines.append(f"{f:<30} {la:<16} {lb:<16} {fmt(ca):>10} {fmt(cb):>10} {'-' if dconf is None else f'{dconf:.2e}':>9}")

    lines.append("")
    lines.append(f"{'descriptor':<30} {'max |d|':>10} {'L2':>10} {'cosine':>18}   (tolerance L2 <= {DESCRIPTOR_L2_TOL:g})")
    xd, ad = x86["descriptors"], arm["descriptors"]
    worst = {"max_abs": 0.0, "l2": 0.0, "cosine": 1.0}
    identical = 0
    if "enroll" not in xd or "enroll" not in ad:
        failures.append("the enrolled descriptor is missing")
    for f in sorted(set(xd) | set(ad)):
        if f not in xd or f not in ad:
            lines.append(f"{f:<30} (only on {'x86' if f in xd else 'arm'}: one side ran without probes; not compared)")
            continue
        d = descriptor_diff(xd[f], ad[f])
        identical += xd[f] == ad[f]
        worst = {"max_abs": max(worst["max_abs"], d["max_abs"]), "l2": max(worst["l2"], d["l2"]), "cosine": min(worst["cosine"], d["cosine"])}
        if not d["l2"] <= DESCRIPTOR_L2_TOL:
            failures.append(f"descriptor of {f}: L2 {d['l2']:.3g} > {DESCRIPTOR_L2_TOL:g}")
        lines.append(f"{f:<30} {d['max_abs']:>10.3e} {d['l2']:>10.3e} {d['cosine']:>18.15f}")

    sx, sa = similarities(x86), similarities(arm)
    if sx or sa:
        lines.append("")
        lines.append(f"{'similarity to ' + PERSON:<30} {'x86':>10} {'arm':>10} {'|d|':>9} {'margin':>8}   (tolerance {SIMILARITY_TOL:g}; threshold {MATCH_THRESHOLD})")
        for f in sorted(set(sx) & set(sa)):
            ds = abs(sx[f] - sa[f])
            if ds > SIMILARITY_TOL:
                failures.append(f"{f}: similarity differs by {ds:.3g} > {SIMILARITY_TOL:g}")
            margin = min(abs(sx[f] - MATCH_THRESHOLD), abs(sa[f] - MATCH_THRESHOLD))
            lines.append(f"{f:<30} {sx[f]:>10.6f} {sa[f]:>10.6f} {ds:>9.2e} {margin:>8.4f}")
        # The reported confidences should be the matcher's curve of these similarities (a
        # photo with several faces is a weighted vote instead: informational only).
        for name, run, sims in (("x86", x86, sx), ("arm", arm, sa)):
            for r in run["rings"]:
                if r["file"] in sims and r.get("confidence") is not None:
                    want = expected_confidence(r["result"], sims[r["file"]])
                    if want is not None and abs(want - r["confidence"]) > 1e-4:
                        lines.append(f"note: {name} {r['file']}: confidence {r['confidence']:.6f}, the curve of its similarity gives {want:.6f} (several faces?)")

    lines.append("")
    lines.append(f"worst: descriptor max |d| {worst['max_abs']:.3e}, L2 {worst['l2']:.3e}, cosine {worst['cosine']:.15f}; confidence |d| {max_dconf:.3e}")
    lines.append(f"bit-identical descriptors: {identical} of {len(set(xd) & set(ad))} (measured x86 vs aarch64 on the whole set: all)")
    if failures:
        lines.append("FAILED:")
        lines += [f"  - {f}" for f in failures]
    else:
        lines.append("OK: same results and people on every ring, descriptors and confidences within tolerance")
    return not failures, "\n".join(lines)


def host_runner(agent: Path) -> Run:
    """`run` for an agent binary on this machine."""

    def run(args: list[str]) -> tuple[int, str]:
        p = subprocess.run([str(agent), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=180)
        return p.returncode, p.stdout.decode("utf-8", "replace")

    return run


def reference(
    repo: Path,
    photos: Path,
    work: Path,
    *,
    probes: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict:
    """The x86 reference, live: runs the set against a fresh local agent (the operator's
    release build, REPO/target/release/doorbell-agent) with a temp data dir under `work`,
    simulated button, files capture of `photos` (staged there), `frames = 1`, probe on a
    free port, control socket in the temp dir, no broker. About 1-2 s."""
    agent = Path(repo) / "target/release/doorbell-agent"
    Path(work).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="dba-rec-", dir=work))
    try:
        stage(photos)
        sock = tmp / "control.sock"
        if len(str(sock)) > 100:  # a Unix socket path has at most 107 bytes
            sock = Path(tempfile.mkdtemp(prefix="dba-")) / "control.sock"
        cfg = tmp / "config.toml"
        cfg.write_text(config_toml(
            data_dir=str(tmp / "data"), photos_dir=str(photos), probe_listen=f"127.0.0.1:{free_port()}",
            control_socket=str(sock), models_dir=str(MODELS), device_id="x86-reference",
        ))
        agent_log = (tmp / "agent.log").open("wb")
        t = time.monotonic()
        proc = subprocess.Popen([str(agent), "-c", str(cfg), "run"], stdout=agent_log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            run = host_runner(agent)

            def alive(args: list[str]) -> tuple[int, str]:
                if proc.poll() is not None:
                    raise RuntimeError(f"the agent exited {proc.returncode}: {(tmp / 'agent.log').read_text()[-2000:]}")
                return run(args)

            wait_running(alive, str(cfg), timeout=30)
            started = round(time.monotonic() - t, 3)
            result = run_set(alive, str(cfg), photos_dir=str(photos), probes=probes, ring_timeout=30, log=log)
            result["timings"]["agent_start_s"] = started
            return result
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            agent_log.close()
            if sock.parent != tmp:
                shutil.rmtree(sock.parent, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --- the emulated device (tests/device/scenario.py) ----------------------------------------


def on_device(
    r,
    photos_dir: str,
    *,
    cfg_path: str = "/etc/doorbell-agent/config.toml",
    export_path: str = "/tmp/doorbell-test-gallery.export",
    probes: bool = True,
    ring_timeout: float = 300.0,
    log: Callable[[str], None] | None = None,
) -> dict:
    """The set on the emulated Pi of scenario.py: `r.sh(cmd, timeout) -> (rc, output)` runs
    on its serial console (the CLI, `base64` of the export), `r.press_button()` presses the
    GPIO button, `r.probe(path) -> (code, body)` reads /status through the host forward (no
    process start in the guest per poll). The device's config must replay `photos_dir`
    (staged by `stage`) with capture.frames = 1; earlier rings do not matter."""
    import shlex

    say = log or (lambda m: print(m, file=sys.stderr))

    def run(args: list[str]) -> tuple[int, str]:
        return r.sh("doorbell-agent " + " ".join(shlex.quote(a) for a in args), timeout=240)

    def read_file(path: str) -> bytes:
        rc, out = r.sh(f"base64 {shlex.quote(path)}; rc=$?; rm -f {shlex.quote(path)}; exit $rc", timeout=120)
        if rc != 0:
            raise SetError(f"base64 {path} exited {rc}: {out[-300:]}")
        return decode_base64_output(out)

    def status_fn() -> dict:
        code, body = r.probe("/status", timeout=10)
        if code != 200:
            raise SetError(f"/status answered {code}")
        return json.loads(body)

    # The camera's frames on the card must be exactly the set (another JPEG would shift rings).
    d = shlex.quote(photos_dir.rstrip("/"))
    rc, out = r.sh(f"cd {d} && sha256sum -- *.jpg *.jpeg {shlex.quote(ENROLL.name)} 2>/dev/null; true", timeout=60)
    have = {m.group(2): m.group(1) for m in re.finditer(r"^([0-9a-f]{64})\s+\*?(\S+)$", _clean(out), re.M)}
    want = {p.name: _sha256(TESTSET / p.src) for p in [ENROLL, *PHOTOS]}
    if have != want:
        raise SetError(f"{photos_dir} on the device holds {sorted(have)}, expected exactly {sorted(want)} with the set's sha256")
    return run_set(run, cfg_path, photos_dir=photos_dir, read_file=read_file, export_path=export_path, ring_timeout=ring_timeout,
                   probes=probes, press_fn=r.press_button, status_fn=status_fn, log=say)
