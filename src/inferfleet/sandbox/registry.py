"""The sandbox's local registry: Debian's `docker-registry` (distribution v2) run with a minimal config of our
own (the packaged config asks for basic auth), standing in for upstream registries this machine cannot reach."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

# info level: the access log ("response completed ... http.response.written=N") is how benchmarks count bytes
CONFIG = """\
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: 0.0.0.0:{port}
"""


@dataclass
class Registry:
    pid: int
    port: int


def alive(pid: int | None, marker: bytes = b"docker-registry") -> bool:
    """The process `pid` runs and its command line holds `marker` (a pid the system gave to another program is
    not ours)."""
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return marker in handle.read()
    except OSError:
        return False


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def ensure(directory: Path, port: int, known_pid: int | None, log=print) -> Registry:
    """Start the registry unless the one this sandbox started is still running."""
    if alive(known_pid):
        return Registry(known_pid, port)
    if _listening(port):
        raise RuntimeError(f"port {port} is taken by another program: pick another with --registry-port")
    data = directory / "data"
    data.mkdir(parents=True, exist_ok=True)
    config = directory / "config.yml"
    config.write_text(CONFIG.format(root=data, port=port))
    log(f"starting local registry on :{port} (data in {data})")
    with open(directory / "registry.log", "ab") as out:
        proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=out, stderr=out,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 15
    while not _listening(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = (directory / "registry.log").read_text(errors="replace")[-1500:]
            raise RuntimeError(f"docker-registry did not start on :{port}\n{tail}")
        time.sleep(0.1)
    return Registry(proc.pid, port)


def bytes_served(log_path: Path, offset: int = 0) -> tuple[int, int]:
    """Bytes the registry sent in GET responses since `offset` in its log, and the new offset (HEAD responses
    log their Content-Length but send no body)."""
    import re

    total = 0
    with open(log_path, "rb") as handle:
        handle.seek(offset)
        data = handle.read()
    for line in data.splitlines():
        if b'msg="response completed"' in line and b"http.request.method=GET" in line:
            match = re.search(rb"http\.response\.written=(\d+)", line)
            total += int(match.group(1)) if match else 0
    return total, offset + len(data)


def stop(pid: int | None, marker: bytes = b"docker-registry") -> bool:
    """Stop our process `pid` (SIGTERM, then up to 5 s for it to go); False when it was not running."""
    if not alive(pid, marker):
        return False
    os.kill(pid, signal.SIGTERM)
    for _ in range(50):
        if not alive(pid, marker):
            break
        time.sleep(0.1)
    return True
