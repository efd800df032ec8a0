"""Stages tune + docker on fresh sandbox hosts: cold converge on 1 and on 3 hosts, then the idempotent re-run.

Prints the 3-host/1-host cold ratio (goal <= 1.5), re-run/cold (goal <= 0.3) and the re-run's time per task
against a raw SSH round trip. The sandbox uses the demo's settings (inventories/sandbox/group_vars), so the cold
run includes apt-get install docker.io from Debian's mirror and one (container) reboot per host.
"""

from __future__ import annotations

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


def fleet_run(hosts: int, root: Path) -> dict:
    box = Sandbox(name=f"ifbench{hosts}", state_root=root / f"state{hosts}", registry_port=5077 + hosts,
                  log=lambda *_: None)
    inventory_dir = root / f"inventory{hosts}"
    try:
        up_hosts = box.up(hosts=hosts, profile_names=["cpu"], inventory_dir=inventory_dir, serving=False)
        shutil.copytree(PROJECT / "inventories" / "sandbox" / "group_vars", inventory_dir / "group_vars")
        inventory = inventory_dir / "hosts.yml"
        cold = up(inventory, stages=STAGES)
        if not cold.ok:
            sys.exit(f"cold run failed: {cold.failures}")
        again = up(inventory, stages=STAGES)
        if not again.ok or again.changed:
            sys.exit(f"re-run failed or changed something: {again.failures} changed={again.changed}")
        host = up_hosts[0].name
        tasks = len([r for r in again.results if r.host == host and r.status != "skipped"])
        return {"cold": cold.elapsed, "again": again.elapsed, "tasks": tasks,
                "ssh": ssh_round_trip(box, up_hosts[0].address, root)}
    finally:
        box.down()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        one = fleet_run(1, Path(tmp))
        three = fleet_run(3, Path(tmp))
    print(f"cold converge, 1 host:            {one['cold']:6.1f} s")
    print(f"cold converge, 3 hosts:           {three['cold']:6.1f} s")
    print(f"ratio 3 hosts / 1 host:           {three['cold'] / one['cold']:6.2f}  (goal <= 1.5)")
    print(f"idempotent re-run, 3 hosts:       {three['again']:6.1f} s (changed=0)")
    print(f"ratio re-run / cold (3 hosts):    {three['again'] / three['cold']:6.2f}  (goal <= 0.3)")
    per_task = three["again"] / three["tasks"]
    print(f"re-run per task ({three['tasks']} tasks/host):   {per_task * 1000:6.0f} ms against a raw ssh round trip "
          f"of {three['ssh'] * 1000:.0f} ms: ratio {per_task / three['ssh']:.1f}")


if __name__ == "__main__":
    main()
