"""State shared by the sandbox's simulated hardware (runs inside a sandbox host, stdlib only).

SIMULATION: nothing here touches real accelerators. The profile describes fake cards; faults are switches the
tests flip; "held" cards are found the way real tools find them, by scanning /proc for open device nodes.
"""

from __future__ import annotations

import json
import os

SIM_ROOT = os.environ.get("INFERFLEET_SIM_ROOT", "/")
CONFIG_DIR = os.path.join(SIM_ROOT, "etc/inferfleet-sim")
PROFILE_PATH = os.path.join(CONFIG_DIR, "profile.json")
FAULTS_PATH = os.path.join(CONFIG_DIR, "faults.json")

# Device node that marks a card as in use, per platform, formatted with the card index.
HOLD_NODES = {
    "gaudi": ("/dev/accel/accel{i}", "/dev/accel/accel_controlD{i}"),
    "ascend": ("/dev/davinci{i}",),
    "nvidia": ("/dev/nvidia{i}",),
}
# Share of a card's memory a holder shows as used (a loaded model fills most of the card).
HELD_MEMORY_SHARE = 0.9


def load_json(path: str, default):
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return default


def load_profile() -> dict:
    profile = load_json(PROFILE_PATH, None)
    if profile is None:
        raise SystemExit(f"inferfleet-sim: no simulated hardware profile at {PROFILE_PATH}")
    return profile


def load_faults() -> dict:
    return load_json(FAULTS_PATH, {})


def scan_holders(proc_root: str = "/proc") -> dict[str, list[tuple[int, str]]]:
    """Map each open /dev path to the (pid, command) pairs holding it."""
    holders: dict[str, list[tuple[int, str]]] = {}
    try:
        pids = [entry for entry in os.listdir(proc_root) if entry.isdigit()]
    except OSError:
        return holders
    for pid in pids:
        fd_dir = os.path.join(proc_root, pid, "fd")
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(os.path.join(fd_dir, fd))
            except OSError:
                continue
            if target.startswith("/dev/"):
                holders.setdefault(target, []).append((int(pid), _comm(proc_root, pid)))
    return holders


def _comm(proc_root: str, pid: str) -> str:
    try:
        with open(os.path.join(proc_root, pid, "comm"), encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError:
        return "?"


def card_states(profile: dict, faults: dict, holders: dict | None = None) -> list[dict]:
    """The cards a vendor tool would list now: missing ones left out, holders and memory use filled in."""
    if holders is None:
        holders = scan_holders()
    missing = set(faults.get("missing", []))
    patterns = HOLD_NODES.get(profile["platform"], ())
    cards = []
    for device in profile["devices"]:
        if device["index"] in missing:
            continue
        procs: list[tuple[int, str]] = []
        for pattern in patterns:
            for proc in holders.get(pattern.format(i=device["index"]), []):
                if proc not in procs:
                    procs.append(proc)
        used = device["idle_used_mib"]
        per_proc = 0
        if procs:
            per_proc = int(device["memory_mib"] * HELD_MEMORY_SHARE) // len(procs)
            used += per_proc * len(procs)
        cards.append(dict(device, used_mib=min(used, device["memory_mib"]), processes=procs,
                          proc_mib=per_proc))
    return cards
