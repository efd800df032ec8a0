"""Sandbox fleet bring-up time: warm (host image cached) and, with --cold, cold (image rebuilt), 1 and 3 hosts.

Prints figures against the goals (3 hosts warm < 15 s, cold < 90 s); not pass/fail. Uses its own sandbox name
and registry port, and removes what it created. --cold deletes the cached host image first.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from inferfleet.sandbox import image
from inferfleet.sandbox.fleet import Sandbox

DEFAULT_REPOSITORY = image.REPOSITORY

GOALS = {("warm", 3): 15.0, ("cold", 3): 90.0}
# Cold runs build under their own name so that images other fleets use are never touched.
COLD_REPOSITORY = "inferfleet-sandbox-host-bench"


def timed_up(hosts: int, cold: bool, root: Path) -> float:
    box = Sandbox(name="ifbench", state_root=root / "state", registry_port=5077, log=lambda *_: None)
    box.down()
    image.REPOSITORY = COLD_REPOSITORY if cold else DEFAULT_REPOSITORY
    if cold:
        for img in box.client.images.list(name=COLD_REPOSITORY):
            box.client.images.remove(img.id, force=True)
    started = time.monotonic()
    box.up(hosts=hosts, profile_names=["gaudi2", "ascend910b", "cpu"], inventory_dir=root / "inventory", serving=False)
    elapsed = time.monotonic() - started
    box.down()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cold", action="store_true", help="also measure with the host image rebuilt")
    args = parser.parse_args()
    kinds = ["warm"] + (["cold"] if args.cold else [])
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        image.build(Sandbox().client)  # a warm run needs the image present
        print(f"{'kind':<6}{'hosts':>6}{'seconds':>10}{'goal':>8}  ratio to goal")
        results = {}
        for kind in kinds:
            for hosts in (1, 3):
                seconds = timed_up(hosts, kind == "cold", root)
                results[(kind, hosts)] = seconds
                goal = GOALS.get((kind, hosts))
                ratio = f"{seconds / goal:.2f}" if goal else "-"
                print(f"{kind:<6}{hosts:>6}{seconds:>10.1f}{(goal or 0):>8.0f}  {ratio}")
        for kind in kinds:
            print(f"{kind}: 3 hosts / 1 host = {results[(kind, 3)] / results[(kind, 1)]:.2f}")
        client = Sandbox().client
        for img in client.images.list(name=COLD_REPOSITORY):
            client.images.remove(img.id, force=True)


if __name__ == "__main__":
    main()
