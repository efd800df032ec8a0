"""The SIMULATED interconnect the collective-test stand-ins report on (see README.md). Stdlib only: it runs in the
test image, inside a container of a sandbox host.

What a card can do comes from the host's profile (`fabric.busbw_gbps`: the bus bandwidth of a collective over all
the host's cards at large sizes) and its faults; which cards the container has, from its device nodes (the vendor
runtime or --device mounted only those). Figures follow one simple model, not any measurement:
time = 20 us + size / peak, so small messages are latency-bound; a node's peak is its bus bandwidth times its
slowest card's link factor (slow_link), times bandwidth_factor; a down link leaves 5 % (NOT SOURCED: what a real
collective does over a down port was not found published); several nodes run at 80 % of the slowest node.
"""

import glob
import json
import os
import re
import socket
import time

SIM = os.environ.get("INFERFLEET_SIM_DIR", "/etc/inferfleet-sim")
DEV = os.environ.get("INFERFLEET_SIM_DEV_ROOT", "")  # tests point it at a directory of fake nodes
NOTE = "inferfleet sandbox: SIMULATED collective test, not a measurement"
LATENCY_US = 20.0
DOWN_FACTOR = 0.05
SCALE_OUT_FACTOR = 0.8
NODES = {"gaudi": "/dev/accel/accel[0-9]*", "ascend": "/dev/davinci[0-9]*", "nvidia": "/dev/nvidia[0-9]*"}


def load() -> tuple[dict, dict]:
    try:
        with open(os.path.join(SIM, "profile.json"), encoding="utf-8") as handle:
            profile = json.load(handle)
    except OSError:
        raise SystemExit(f"{NOTE}: no simulated hardware profile at {SIM} (the sandbox mounts it into the test "
                         f"container through fabric_volumes)") from None
    try:
        with open(os.path.join(SIM, "faults.json"), encoding="utf-8") as handle:
            faults = json.load(handle)
    except OSError:
        faults = {}
    return profile, faults


def visible_cards(profile: dict) -> list[dict]:
    """The profile's cards whose device node the container has."""
    pattern = DEV + NODES.get(profile["platform"], "/nonexistent")
    indices = {int(re.search(r"(\d+)$", path).group(1)) for path in glob.glob(pattern)}
    return [d for d in profile["devices"] if d["index"] in indices]


def node_peak(profile: dict, faults: dict, cards: list[dict]) -> float:
    """GB/s this node's collective reaches at large sizes."""
    factor = float(faults.get("bandwidth_factor", 1.0))
    slow = faults.get("slow_link", {})
    down = set(faults.get("link_down", [])) | {int(p.split(":")[0]) for p in faults.get("port_down", [])}
    worst = 1.0
    for card in cards:
        worst = min(worst, DOWN_FACTOR if card["index"] in down else float(slow.get(str(card["index"]), 1.0)))
    return profile.get("fabric", {}).get("busbw_gbps", 100.0) * factor * worst


def busbw(peak: float, size: int) -> float:
    """Bus bandwidth (GB/s) at a message size: the link's time for the bytes plus a fixed latency."""
    seconds = LATENCY_US / 1e6 + size / (peak * 1e9)
    return size / seconds / 1e9


def parse_size(text: str) -> int:
    match = re.fullmatch(r"(\d+)([KkMmGg]?)[Bb]?", str(text).strip())
    if not match:
        raise SystemExit(f"{NOTE}: cannot read size {text!r}")
    return int(match[1]) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[match[2].lower()]


def rendezvous(comm_id: str, nodes: int, node_id: int, mine: dict, timeout: float = 120.0) -> list[dict]:
    """Every node's state, in node order: node 0 listens at HCCL_COMM_ID and answers each node with all of
    them, as HCCL's root gathers its ranks there."""
    host, _, port = comm_id.rpartition(":")
    deadline = time.monotonic() + timeout
    if node_id == 0:
        server = socket.create_server((host, int(port)), reuse_port=True)
        server.settimeout(timeout)
        peers, states = [], {0: mine}
        try:
            while len(states) < nodes:
                conn, _ = server.accept()
                state = json.loads(conn.makefile().readline())
                states[state["node_id"]] = state
                peers.append(conn)
        except TimeoutError:
            raise SystemExit(f"{NOTE}: {nodes - len(states)} node(s) did not join {comm_id} within "
                             f"{timeout:.0f} s") from None
        everyone = [states[i] for i in range(nodes)]
        for conn in peers:
            conn.sendall((json.dumps(everyone) + "\n").encode())
            conn.close()
        server.close()
        return everyone
    while True:
        try:
            conn = socket.create_connection((host, int(port)), timeout=5)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"{NOTE}: node 0 at {comm_id} did not answer within {timeout:.0f} s") from None
            time.sleep(0.5)
    conn.sendall((json.dumps(dict(mine, node_id=node_id)) + "\n").encode())
    conn.settimeout(timeout)
    everyone = json.loads(conn.makefile().readline())
    conn.close()
    return everyone
