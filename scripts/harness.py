"""What the measuring scripts share (footprint.py, soak.py, fleet-scale.py): the environment
the agent runs with on a device, a free port, and a request to the agent's probe.
"""

import os
import socket
import urllib.request

UNIT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "systemd", "doorbell-agent.service")


def unit_environment():
    """NAME=VALUE pairs of the unit's Environment= lines (one assignment per line, unquoted),
    so that the scripts measure the agent as systemd runs it (e.g. glibc's malloc tunables)."""
    env = {}
    with open(UNIT) as f:
        for line in f:
            if line.startswith("Environment="):
                name, _, value = line[len("Environment="):].strip().partition("=")
                env[name] = value
    return env


def free_port():
    """A loopback TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(addr, method, path):
    """The body of one request to the probe at `addr` (host:port)."""
    req = urllib.request.Request(f"http://{addr}{path}", method=method)
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.read()
