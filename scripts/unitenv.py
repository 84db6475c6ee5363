"""The environment the agent runs with on a device: the Environment= lines of its unit.

Imported by scripts/footprint.py and scripts/soak.py, so that they measure the agent as
systemd runs it (e.g. glibc's malloc tunables), not as a shell would.
"""

import os

UNIT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "systemd", "doorbell-agent.service")


def unit_environment():
    """NAME=VALUE pairs of the unit's Environment= lines (one assignment per line, unquoted)."""
    env = {}
    with open(UNIT) as f:
        for line in f:
            if line.startswith("Environment="):
                name, _, value = line[len("Environment="):].strip().partition("=")
                env[name] = value
    return env
