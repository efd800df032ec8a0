"""Stages tune + docker on fresh sandbox hosts: cold converge on 1, 3 and 8 hosts, then the idempotent re-run.

Prints the N-host/1-host cold ratios (goal for 3 hosts <= 1.5; 8 hosts reported), re-run/cold (goal <= 0.3) and
the re-run's time per task against a raw SSH round trip. The sandbox uses the demo's settings
(inventories/sandbox/group_vars), so the cold run includes apt-get install docker.io from Debian's mirror and one
(container) reboot per host.

Every SIMULATED host shares this machine's cores with the others and with the controller: work that keeps a core busy
(dpkg unpacking, Python starting a module) cannot take less than hosts/cores of one host's time, so each ratio is
printed beside that floor and beside the controller's and hosts' CPU seconds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from inferfleet import up
from inferfleet.sandbox.fleet import Sandbox, ssh_options

PROJECT = Path(__file__).resolve().parents[1]
STAGES = ["tune", "docker"]


def ssh_round_trip(box: Sandbox, address: str, root: Path, rounds: int = 20) -> float:
    base = ["ssh", *ssh_options(box.key_path), "-o", "ControlMaster=auto", "-o", f"ControlPath={root}/cm-%r@%h:%p",
            "-o", "ControlPersist=60", f"root@{address}", "true"]
    subprocess.run(base, check=True)
    started = time.monotonic()
    for _ in range(rounds):
        subprocess.run(base, check=True)
    return (time.monotonic() - started) / rounds


def machine_cpu_seconds() -> float:
    """CPU seconds this machine has spent busy (all processes: controller, hosts, Docker), from /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    idle = int(fields[3]) + int(fields[4])
    return (sum(int(f) for f in fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def fleet_run(hosts: int, root: Path) -> dict:
    box = Sandbox(name=f"ifbench{hosts}", state_root=root / f"state{hosts}", registry_port=5077 + hosts,
                  log=lambda *_: None)
    inventory_dir = root / f"inventory{hosts}"
    try:
        up_hosts = box.up(hosts=hosts, profile_names=["cpu"], inventory_dir=inventory_dir, serving=False)
        shutil.copytree(PROJECT / "inventories" / "sandbox" / "group_vars", inventory_dir / "group_vars")
        inventory = inventory_dir / "hosts.yml"
        cpu_before = machine_cpu_seconds()
        cold = up(inventory, stages=STAGES)
        cold_cpu = machine_cpu_seconds() - cpu_before
        if not cold.ok:
            sys.exit(f"cold run failed: {cold.failures}")
        again = up(inventory, stages=STAGES)
        if not again.ok or again.changed:
            sys.exit(f"re-run failed or changed something: {again.failures} changed={again.changed}")
        host = up_hosts[0].name
        tasks = len([r for r in again.results if r.host == host and r.status != "skipped"])
        return {"cold": cold.elapsed, "cold_cpu": cold_cpu, "again": again.elapsed, "tasks": tasks,
                "ssh": ssh_round_trip(box, up_hosts[0].address, root)}
    finally:
        box.down()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", default="1,3,8", help="fleet sizes, the first one the reference (comma-separated)")
    sizes = [int(n) for n in parser.parse_args().hosts.split(",")]
    cores = os.cpu_count() or 1
    print(f"SIMULATED hosts sharing this machine's {cores} cores (they and the controller); real Ansible, SSH, apt")
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            run = runs[n] = fleet_run(n, Path(tmp))
            print(f"cold converge, {n} host(s):        {run['cold']:6.1f} s   machine CPU {run['cold_cpu']:6.1f} s "
                  f"({run['cold_cpu'] / run['cold']:.2f} cores busy)", flush=True)
    ref = runs[sizes[0]]
    for n, run in runs.items():
        if n == sizes[0]:
            continue
        goal = "  (goal <= 1.5)" if (n, sizes[0]) == (3, 1) else ""
        floor = max(1.0, n * ref["cold_cpu"] / ref["cold"] / cores)
        print(f"ratio {n} hosts / {sizes[0]} host(s):   {run['cold'] / ref['cold']:6.2f}{goal}; CPU-bound floor on "
              f"{cores} cores: {floor:.2f}; CPU ratio {run['cold_cpu'] / ref['cold_cpu']:.2f}")
    widest = runs[sizes[-1]]
    print(f"idempotent re-run, {sizes[-1]} hosts:       {widest['again']:6.1f} s (changed=0)")
    print(f"ratio re-run / cold ({sizes[-1]} hosts):    {widest['again'] / widest['cold']:6.2f}  (goal <= 0.3)")
    per_task = widest["again"] / widest["tasks"]
    print(f"re-run per task ({widest['tasks']} tasks/host):   {per_task * 1000:6.0f} ms against a raw ssh round trip "
          f"of {widest['ssh'] * 1000:.0f} ms: ratio {per_task / widest['ssh']:.1f}")


if __name__ == "__main__":
    main()
