"""The emulated Raspberry Pi Zero 2 W of the device test bed (Python 3.11, stdlib only).

QEMU's `-M raspi3b` (BCM2837, 4x Cortex-A53, 1 GiB: the Zero 2 W's SoC class) boots Debian's
arm64 kernel with the `bcm2837-rpi-zero-2-w.dtb` device tree, the test bed's initramfs and an
SD-card image from scripts/pi-image.sh (pass a copy: the board writes to it). What the board
offers a test:

- the serial console (PL011, ttyAMA0) as a unix socket this module reads, logged by QEMU to
  RUN_DIR/serial-N.log (N = boot count); the image's test-bed-only autologin gives a root
  shell there: `sh()` runs one command and returns (exit status, output);
- the GPIO levels, driven from outside through QEMU's qtest protocol (GPSET0/GPCLR0); the
  emulated BCM2835 GPIO has no edge interrupts and no pulls: the guest reads levels only;
- the network: QEMU user networking with restrict=on (the guest reaches nothing but what is
  forwarded): `forwards` host 127.0.0.1:free port -> guest port, `guestfwds` guest
  10.0.2.100:port -> host 127.0.0.1:port (one `socat` per guest connection);
- power: `power_cut()` is SIGKILL to QEMU; `start()` boots the same image again.

QEMU's stderr goes to RUN_DIR/qemu-N.log, its command line to RUN_DIR/qemu-N.cmdline.
Measured on the shared 2-core machine (TCG, thread=single): root shell 42-46 s
after start(), `running` ~1 s later, DHCP lease 45-47 s; the same after a power cut (ext4
journal replay).

Usage:
    with Board(run_dir, kernel, dtb, initrd, image_copy, forwards={"probe": 8080},
               guestfwds={1883: broker_port}) as b:
        b.start()
        b.gpio(17, True)                # levels can be set before the guest is up
        b.wait_shell()                  # seconds since start()
        rc, out = b.sh("systemctl is-active doorbell-agent")
        urllib.request.urlopen(f"http://127.0.0.1:{b.port['probe']}/health")
        b.power_cut(); b.start(); b.wait_shell()

The guest's clock: no RTC and no time server, so each boot starts at the image's build time
(systemd's /usr/lib/clock-epoch): `doorbell-agent doctor` warns that the clock is not
synchronised, as it would on a Pi without a network.
"""

from __future__ import annotations

import base64
import codecs
import ctypes
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from common import free_port

GPSET0 = 0x3F20001C  # BCM2837 GPIO output set, pins 0-31 (bus address 0x7e20001c)
GPCLR0 = 0x3F200028  # output clear, pins 0-31
GPSET1 = 0x3F200020  # pins 32-53
GPCLR1 = 0x3F20002C
PL061_LINES = 8  # -M virt's GPIO controller (line 3 is its power button)
GUEST_HOST_ADDR = "10.0.2.100"  # where the guest reaches the guestfwds
# The kernel command line; the same as the image's cmdline.txt (scripts/pi-image.sh).
# loglevel=3 and systemd.show_status=auto keep the serial console (the test's shell) quiet
# but for errors; iomem=relaxed lets /dev/mem map the GPIO registers (rppal's Gpio::new()).
CMDLINE = "console=ttyAMA0 root=LABEL=rootfs rootwait iomem=relaxed loglevel=3 systemd.show_status=auto"
PROMPT = "[board]# "


class BoardError(Exception):
    """The board did not do what was asked; the message says what and shows the console."""


def _die_with_parent() -> None:
    """In QEMU's child process before exec: SIGKILL when the test process dies, so that a
    killed test never leaves an emulator running (PR_SET_PDEATHSIG)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


class Board:
    """One emulated board: `machine="raspi3b"` (the Pi Zero 2 W, `dtb` its device tree) or
    `machine="virt"` (not a Pi: the same kernel and card on a virtio disk, QEMU's own device
    tree, and a PL061 GPIO controller that raises real edge interrupts)."""

    def __init__(self, run_dir: Path, kernel: Path, dtb: Path | None, initrd: Path, image: Path,
                 forwards: dict[str, int] | None = None, guestfwds: dict[int, int] | None = None,
                 *, machine: str = "raspi3b", qemu: str = "qemu-system-aarch64", cmdline: str = CMDLINE,
                 accel: str = "tcg,thread=single"):
        if machine not in ("raspi3b", "virt") or (machine == "raspi3b") != (dtb is not None):
            raise BoardError(f"machine {machine!r} with dtb {dtb}: raspi3b needs the Pi's device tree, virt none")
        self.machine = machine
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.kernel, self.initrd, self.image = Path(kernel), Path(initrd), Path(image)
        self.dtb = Path(dtb) if dtb is not None else None
        for what, p in (("kernel", self.kernel), ("dtb", self.dtb), ("initrd", self.initrd), ("image", self.image)):
            if p is not None and not p.is_file():
                raise BoardError(f"{what} {p}: no such file")
        self.forwards = dict(forwards or {})
        self.guestfwds = dict(guestfwds or {})
        if self.guestfwds and not shutil.which("socat"):
            raise BoardError("guestfwds need socat on this machine (apt-get install socat; scripts/pi-image.sh installs it)")
        self.qemu, self.cmdline, self.accel = qemu, cmdline, accel
        self.port: dict[str, int] = {}  # forwards' host ports on 127.0.0.1
        self.boots = 0
        self.proc: subprocess.Popen | None = None
        self.t_start = 0.0
        # Unix sockets live in a short private directory (sun_path holds 107 bytes).
        self._sockdir = Path(tempfile.mkdtemp(prefix="board-", dir="/tmp"))
        self._serial: socket.socket | None = None
        self._qtest: socket.socket | None = None
        self._qtest_buf = b""
        self._pl061 = ""  # virt: the GPIO controller's QOM path, for qtest's set_irq_in
        self._reader: threading.Thread | None = None
        self._text = ""  # this boot's console output, \r removed
        self._eof = False
        self._cond = threading.Condition()
        self._io = threading.Lock()  # one sh()/gpio() at a time
        self._shell_ready = False
        self._seq = 0

    # -----------------------------------------------------------------------------------------
    # lifecycle

    def __enter__(self) -> "Board":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _qemu_args(self, ports: dict[str, int], socks: dict[str, Path], serial_log: Path) -> list[str]:
        net = ["user", "id=n0", "restrict=on", "ipv6=off"]
        for name, guest_port in self.forwards.items():
            net.append(f"hostfwd=tcp:127.0.0.1:{ports[name]}-:{guest_port}")
        for guest_port, host_port in self.guestfwds.items():
            # cmd: runs one socat per guest connection (a tcp: chardev is a single connection,
            # made when QEMU starts, and never again).
            net.append(f"guestfwd=tcp:{GUEST_HOST_ADDR}:{guest_port}-cmd:socat - TCP:127.0.0.1:{host_port}")
        if self.machine == "raspi3b":
            board = ["-M", "raspi3b", "-dtb", str(self.dtb), "-drive", f"if=sd,format=raw,file={self.image}",
                     "-device", "usb-net,netdev=n0"]
        else:
            # QMP only to find the PL061 (qom-list); the card on a virtio disk.
            board = ["-M", "virt", "-cpu", "cortex-a53", "-smp", "2", "-m", "1024",
                     "-drive", f"if=none,id=sd0,format=raw,file={self.image}", "-device", "virtio-blk-device,drive=sd0",
                     "-device", "virtio-net-device,netdev=n0",
                     "-chardev", f"socket,id=qmp0,path={socks['qmp']}", "-mon", "chardev=qmp0,mode=control"]
        return [
            self.qemu, *board[:2], "-accel", self.accel,
            "-kernel", str(self.kernel), "-initrd", str(self.initrd), "-append", self.cmdline, *board[2:],
            "-netdev", ",".join(net),
            "-chardev", f"socket,id=ser0,path={socks['serial']},logfile={serial_log},logappend=off",
            "-serial", "chardev:ser0",
            "-qtest", f"unix:{socks['qtest']}", "-qtest-log", "/dev/null",
            "-display", "none", "-monitor", "none", "-no-reboot",
        ]

    def start(self) -> None:
        """Boots the image (the next boot of the same card). Returns once QEMU runs."""
        if self.alive():
            raise BoardError("start(): the board is already running")
        self._disconnect()
        self.boots += 1
        n = self.boots
        qemu_log = self.run_dir / f"qemu-{n}.log"
        serial_log = self.run_dir / f"serial-{n}.log"
        last_err = ""
        for attempt in range(1, 4):
            self.port = {name: free_port() for name in self.forwards}
            socks = {k: self._sockdir / f"{k}-{n}.sock" for k in ("serial", "qtest", "qmp")[:3 if self.machine == "virt" else 2]}
            listeners = []
            for p in socks.values():
                p.unlink(missing_ok=True)
                ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                ls.bind(str(p))
                ls.listen(1)
                listeners.append(ls)
            args = self._qemu_args(self.port, socks, serial_log)
            (self.run_dir / f"qemu-{n}.cmdline").write_text(" ".join(args) + "\n")
            with self._cond:
                self._text, self._eof = "", False
            self._shell_ready = False
            with open(qemu_log, "wb") as err:
                self.t_start = time.monotonic()
                # Its own session: a ^C to the test does not kill QEMU behind the Board's back;
                # it dies with the test process all the same (PR_SET_PDEATHSIG: start() from
                # the thread that lives as long as the board).
                self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                             start_new_session=True, preexec_fn=_die_with_parent)
            conns: list[socket.socket] | None = []
            try:
                # QEMU connects to both sockets while it sets up its backends, then sets up
                # the network: a host forward that cannot listen ends QEMU only after that.
                for ls in listeners:
                    conns.append(self._accept(ls, 30))
                self._wait_forwards(30)
            except BoardError:
                for c in conns:
                    c.close()
                conns = None
            finally:
                for ls in listeners:
                    ls.close()
            if conns is not None:
                self._serial, self._qtest = conns[:2]
                self._qtest_buf = b""
                if self.machine == "virt":
                    with conns[2] as qmp:
                        self._pl061 = self._find_pl061(qmp)
                self._reader = threading.Thread(target=self._read_serial, name=f"board-serial-{n}", daemon=True)
                self._reader.start()
                return
            # QEMU failed to start: a host port taken since free_port() found it is retried.
            self._kill()
            last_err = qemu_log.read_text(errors="replace").strip()
            if re.search(r"host forwarding|Address already in use|could not set up host", last_err, re.I):
                continue
            break
        raise BoardError(f"QEMU did not start (boot {n}; {qemu_log}):\n{last_err}\ncommand: {' '.join(args)}")

    @staticmethod
    def _find_pl061(qmp: socket.socket) -> str:
        """The QOM path of -M virt's PL061 (`/machine/unattached/device[N]`, N depending on
        the command line), from QMP's qom-list."""
        qmp.settimeout(30)
        f = qmp.makefile("rwb")

        def call(cmd: dict) -> dict:
            f.write(json.dumps(cmd).encode() + b"\n")
            f.flush()
            while True:  # skip asynchronous events
                msg = json.loads(f.readline() or b"{}")
                if "return" in msg or "error" in msg or not msg:
                    return msg

        try:
            json.loads(f.readline() or b"{}")  # the greeting
            call({"execute": "qmp_capabilities"})
            listed = call({"execute": "qom-list", "arguments": {"path": "/machine/unattached"}}).get("return", [])
        except (OSError, ValueError) as e:
            raise BoardError(f"QMP: cannot list the machine's devices: {e}") from None
        finally:
            f.close()
        found = [d["name"] for d in listed if d.get("type") == "child<pl061>"]
        if len(found) != 1:
            raise BoardError(f"QMP: expected one pl061 under /machine/unattached, found {found}")
        return f"/machine/unattached/{found[0]}"

    def _accept(self, ls: socket.socket, timeout: float) -> socket.socket:
        deadline = time.monotonic() + timeout
        ls.settimeout(0.2)
        while True:
            try:
                conn, _ = ls.accept()
                conn.settimeout(None)
                return conn
            except socket.timeout:
                pass
            if self.proc is None or self.proc.poll() is not None or time.monotonic() > deadline:
                raise BoardError("QEMU did not connect its sockets")

    def _wait_forwards(self, timeout: float) -> None:
        """Waits until QEMU itself listens on every forward's host port (BoardError if it
        exits first: e.g. the port was taken meanwhile)."""
        want = {self.port[name] for name in self.forwards}
        deadline = time.monotonic() + timeout
        while want:
            if self.proc is None or self.proc.poll() is not None or time.monotonic() > deadline:
                raise BoardError("QEMU did not set up its host forwards")
            try:
                mine = {os.readlink(f"/proc/{self.proc.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{self.proc.pid}/fd")}
            except OSError:
                mine = set()
            listening = set()
            with open("/proc/net/tcp") as f:
                for line in f.readlines()[1:]:
                    cols = line.split()
                    # local address 0100007F:PORT, state 0A = LISTEN, inode
                    if cols[3] == "0A" and f"socket:[{cols[9]}]" in mine:
                        listening.add(int(cols[1].split(":")[1], 16))
            want -= listening
            if want:
                time.sleep(0.05)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def serial_log(self) -> Path:
        """QEMU's log of this (or the last) boot's console."""
        return self.run_dir / f"serial-{self.boots}.log"

    def elapsed(self) -> float:
        """Seconds since the last start()."""
        return time.monotonic() - self.t_start

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()

    def _disconnect(self) -> None:
        for s in (self._serial, self._qtest):
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass
        self._serial = self._qtest = None
        if self._reader is not None:
            self._reader.join(timeout=5)
            self._reader = None
        self._shell_ready = False
        for p in self._sockdir.glob("*.sock"):
            p.unlink(missing_ok=True)

    def power_cut(self) -> None:
        """SIGKILL to QEMU: what pulling the power looks like to the guest. Waits for it."""
        self._kill()
        self._disconnect()

    def close(self) -> None:
        """Kills QEMU if it runs and removes the sockets. The Board can not start again."""
        self._kill()
        self._disconnect()
        shutil.rmtree(self._sockdir, ignore_errors=True)

    # -----------------------------------------------------------------------------------------
    # serial console

    def _read_serial(self) -> None:
        dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
        sock = self._serial
        while True:
            try:
                data = sock.recv(65536) if sock is not None else b""
            except OSError:
                data = b""
            with self._cond:
                if data:
                    self._text += dec.decode(data).replace("\r", "")
                else:
                    self._eof = True
                self._cond.notify_all()
            if not data:
                return

    def _send(self, text: str) -> None:
        if self._serial is None:
            raise BoardError("the board is not running")
        self._serial.sendall(text.encode())

    def serial_tail(self, lines: int = 80) -> str:
        """The last lines of this (or the last) boot's console."""
        with self._cond:
            text = self._text
        if not text and self.boots:
            log = self.run_dir / f"serial-{self.boots}.log"
            if log.exists():
                text = log.read_text(errors="replace").replace("\r", "")
        return "\n".join(text.splitlines()[-lines:])

    def _wait_text(self, pattern: re.Pattern, start: int, deadline: float) -> re.Match | None:
        """Waits for `pattern` in the console output from offset `start`; None at the deadline
        or when QEMU has gone."""
        with self._cond:
            while True:
                m = pattern.search(self._text, start)
                if m:
                    return m
                left = deadline - time.monotonic()
                if left <= 0 or self._eof:
                    return None
                self._cond.wait(min(left, 0.5))

    def _fail(self, what: str) -> BoardError:
        state = "running" if self.alive() else f"QEMU exited ({self.proc.returncode if self.proc else '-'})"
        return BoardError(f"{what} [boot {self.boots}, {self.elapsed():.0f} s after start, {state}]\n"
                          f"--- serial console (last 60 lines) ---\n{self.serial_tail(60)}\n---")

    def wait_shell(self, timeout: float = 180) -> float:
        """Waits for the autologin root shell on the console and prepares it for sh() (no echo,
        no line editing, a plain prompt, no pager or colours). Returns seconds since start()."""
        deadline = self.t_start + timeout
        if self._shell_ready:
            return self.elapsed()
        login = re.compile(r"\(automatic login\)|root@[\w.-]+:[^\n]*[#$] ?$"
                           r"|(?P<fatal>Kernel panic - not syncing|initramfs: rebooting|reboot: Restarting system)", re.M)
        m = self._wait_text(login, 0, deadline)
        if m and m.group("fatal"):
            time.sleep(2)  # the rest of the message
            raise self._fail(f"the boot failed ({m.group('fatal')})")
        if not m:
            raise self._fail(f"no root shell on the serial console within {timeout:.0f} s of start")
        if m.group(0) == "(automatic login)":
            # login(1) hangs the tty up before it starts the shell (input typed meanwhile is
            # lost): wait for bash's prompt, briefly (a changed PS1 is probed for below).
            self._wait_text(re.compile(r"root@[\w.-]+:[^\n]*[#$] ?$", re.M), m.end(),
                            min(deadline, time.monotonic() + 15))
        setup = ("stty -echo cols 500 rows 50; set +o emacs +o vi; unset HISTFILE PROMPT_COMMAND; "
                 f"export PS1='{PROMPT}' PS2='' TERM=dumb LC_ALL=C.UTF-8 SYSTEMD_PAGER=cat PAGER=cat "
                 "SYSTEMD_COLORS=0 SYSTEMD_URLIFY=0; ")
        while True:
            nonce = secrets.token_hex(4)
            with self._cond:
                start = len(self._text)
            # The marker printed differs from the command typed (%s): echo cannot fake it.
            self._send(setup + f"printf '\\n__READY_%s__\\n' {nonce}\n")
            if self._wait_text(re.compile(f"__READY_{nonce}__"), start, min(deadline, time.monotonic() + 5)):
                self._shell_ready = True
                return self.elapsed()
            if time.monotonic() >= deadline or not self.alive():
                raise self._fail(f"the serial shell did not answer within {timeout:.0f} s of start")

    def sh(self, cmd: str, timeout: float = 60) -> tuple[int, str]:
        """Runs `cmd` (bash, in a subshell, stdin /dev/null, stderr into stdout) on the serial
        console; returns (exit status, output). Kernel messages printed meanwhile may show up
        in the output. On timeout: ^C to the command and BoardError with the console."""
        if not self._shell_ready:
            self.wait_shell()
        with self._io:
            self._seq += 1
            tag = f"{self._seq}x{secrets.token_hex(4)}"
            b64 = base64.b64encode(cmd.encode()).decode()
            # Short lines (the tty's canonical line buffer holds 4095 bytes); the command
            # travels base64-encoded, safe from the tty's special characters.
            lines = ["__c="] + [f"__c+={b64[i:i + 512]}" for i in range(0, len(b64), 512)]
            lines.append(f"printf '\\n__B%s__\\n' {tag}; ( eval \"$(printf %s \"$__c\" | base64 -d)\" ) </dev/null 2>&1 | cat; "
                         f"printf '\\n__E%s_%s__\\n' {tag} \"${{PIPESTATUS[0]}}\"")
            with self._cond:
                start = len(self._text)
            self._send("\n".join(lines) + "\n")
            pattern = re.compile(rf"\n__B{tag}__\n(.*?)\n__E{tag}_(\d+)__\n", re.S)
            m = self._wait_text(pattern, max(0, start - 1), time.monotonic() + timeout)
            if not m:
                if self.alive():
                    try:
                        self._send("\x03")
                    except OSError:
                        pass
                raise self._fail(f"command timed out after {timeout:.0f} s: {cmd!r}")
            return int(m.group(2)), m.group(1)

    # -----------------------------------------------------------------------------------------
    # GPIO

    def _qtest_cmd(self, line: str, timeout: float = 10) -> str:
        if self._qtest is None:
            raise BoardError("the board is not running (no qtest connection)")
        self._qtest.settimeout(timeout)
        self._qtest.sendall(line.encode() + b"\n")
        try:
            while b"\n" not in self._qtest_buf:
                data = self._qtest.recv(4096)
                if not data:
                    raise BoardError(f"qtest: QEMU closed the connection at {line!r}")
                self._qtest_buf += data
        except socket.timeout:
            raise BoardError(f"qtest: no reply to {line!r} within {timeout:.0f} s") from None
        reply, self._qtest_buf = self._qtest_buf.split(b"\n", 1)
        return reply.decode(errors="replace")

    def gpio(self, pin: int, high: bool) -> None:
        """Drives the level the guest reads on GPIO `pin`: on raspi3b (0-53) GPSET/GPCLR, a
        level only; on virt (0-7) the PL061's input line, whose change raises an edge."""
        if self.machine == "raspi3b":
            if not 0 <= pin <= 53:
                raise ValueError(f"GPIO {pin}: the BCM2837 has 0-53")
            reg = (GPSET0 if high else GPCLR0) if pin < 32 else (GPSET1 if high else GPCLR1)
            cmd = f"writel {reg:#x} {1 << (pin % 32):#x}"
        else:
            if not 0 <= pin < PL061_LINES:
                raise ValueError(f"GPIO {pin}: the PL061 has 0-{PL061_LINES - 1}")
            cmd = f"set_irq_in {self._pl061} unnamed-gpio-in {pin} {int(high)}"
        with self._io:
            reply = self._qtest_cmd(cmd)
        if reply.split()[:1] != ["OK"]:
            raise BoardError(f"qtest: {cmd!r} answered {reply!r}")
