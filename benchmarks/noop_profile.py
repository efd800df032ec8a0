"""Where a no-op run of the whole pipeline spends its time, and how that compares with a raw SSH round trip.

Run it on a fleet that has converged (the demo: `make demo`, then `python benchmarks/noop_profile.py`; or any
inventory with -i). It runs site.yml once more, with nothing to change, and reads ansible-runner's events. Every
stage runs but bench, which measures the services anew on each run (it converges nothing); --stages chooses.

- wall time, tasks run, time per task and its ratio to a raw `ssh host true` over a ControlPersist master
  (as ansible.cfg connects);
- per stage (play), per module and per role: tasks, seconds of wall time, share of the run;
- the slowest tasks;
- the controller's CPU (ansible-playbook, its forks and their ssh clients) per host per task, and how much of the
  wall time it is: near 1 per core in use means the controller is the limit, not the hosts.

`--mitogen` then runs it once more with Mitogen's linear strategy (pip install mitogen; not part of inferfleet's
defaults until the whole integration suite passes with it) and prints the ratio of the two.
`--json FILE` also writes the whole profile. Figures, not pass/fail. SIMULATED cards; real Ansible, SSH, Docker.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

from inferfleet import up
from inferfleet.runner import known_stages

PROJECT = Path(__file__).resolve().parents[1]


def ssh_round_trip(inventory: Path, rounds: int = 20) -> tuple[str, float]:
    """Seconds of one `ssh host true` to the inventory's first host, as Ansible connects to it (its user, key and
    common arguments, over a ControlPersist master)."""
    listing = json.loads(subprocess.run([str(Path(sys.executable).parent / "ansible-inventory"), "-i",
                                         str(inventory), "--list"], check=True, capture_output=True, text=True,
                                        cwd=PROJECT).stdout)
    hostvars = listing["_meta"]["hostvars"]
    host = sorted(hostvars)[0]
    hv = hostvars[host]
    with tempfile.TemporaryDirectory() as tmp:
        argv = ["ssh", "-o", "BatchMode=yes", "-o", "ControlMaster=auto", "-o", f"ControlPath={tmp}/cm",
                "-o", "ControlPersist=60", "-p", str(hv.get("ansible_port", 22)),
                *(["-i", hv["ansible_ssh_private_key_file"]] if hv.get("ansible_ssh_private_key_file") else []),
                *shlex.split(hv.get("ansible_ssh_common_args", "")),
                f"{hv.get('ansible_user', 'root')}@{hv.get('ansible_host', host)}", "true"]
        subprocess.run(argv, check=True)
        started = time.monotonic()
        for _ in range(rounds):
            subprocess.run(argv, check=True)
        elapsed = (time.monotonic() - started) / rounds
        subprocess.run([*argv[:-2], "-O", "exit", argv[-2]], capture_output=True)
    return host, elapsed


def _when(event: dict) -> float:
    return datetime.fromisoformat(event["created"]).timestamp()


class Profile:
    """Tasks of one run from ansible-runner's events: what each task is, when it began, how long each host took."""

    def __init__(self):
        self.tasks: dict[str, dict] = {}
        self.ended: float | None = None

    def __call__(self, event: dict) -> bool:
        data = event.get("event_data", {})
        name = event.get("event", "")
        if name == "playbook_on_task_start":
            self.tasks[data["task_uuid"]] = {"task": data.get("task", ""), "action": data.get("task_action", ""),
                                             "play": data.get("play", ""), "role": data.get("role", ""),
                                             "started": _when(event), "hosts": {}}
        elif name.startswith("runner_on_") and data.get("task_uuid") in self.tasks:
            status = name.removeprefix("runner_on_")
            self.tasks[data["task_uuid"]]["hosts"][data.get("host", "?")] = {
                "status": status, "duration": float(data.get("duration") or 0.0)}
        elif name == "playbook_on_stats":
            self.ended = _when(event)
        return False  # nothing kept in the run's artifacts

    def rows(self) -> list[dict]:
        """The tasks in order, each with its wall time (until the next task began)."""
        ordered = sorted(self.tasks.values(), key=lambda t: t["started"])
        if not ordered:
            return []
        ends = [t["started"] for t in ordered[1:]] + [self.ended or ordered[-1]["started"]]
        return [dict(t, wall=max(0.0, end - t["started"])) for t, end in zip(ordered, ends, strict=True)]


def summarize(rows: list[dict], key: str) -> list[tuple[str, int, float]]:
    groups: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        groups[row[key] or "(none)"].append(row["wall"])
    return sorted(((name, len(walls), sum(walls)) for name, walls in groups.items()), key=lambda g: -g[2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-i", "--inventory", type=Path, default=PROJECT / "inventories" / "sandbox" / "hosts.yml")
    parser.add_argument("--stages", default=",".join(s for s in known_stages() if s != "bench"),
                        help="comma-separated stages to run (default: all but bench)")
    parser.add_argument("--json", type=Path, help="also write the profile here")
    parser.add_argument("--top", type=int, default=12, help="slowest tasks to list")
    parser.add_argument("--mitogen", action="store_true", help="also time the run with Mitogen's strategy")
    args = parser.parse_args()
    if not args.inventory.exists():
        sys.exit(f"{args.inventory}: no such inventory (bring the demo fleet up first: make demo)")

    ssh_host, ssh_each = ssh_round_trip(args.inventory)
    profile = Profile()
    cpu_before = os.times()
    result = up(args.inventory, stages=args.stages.split(","), event_handler=profile)
    cpu_after = os.times()
    if not result.ok:
        sys.exit(f"site.yml failed: {result.failures}")
    report(args, result, profile, ssh_host, ssh_each, cpu_before, cpu_after)
    if args.mitogen:
        compare_mitogen(args.inventory, args.stages.split(","), result)


def compare_mitogen(inventory: Path, stages: list[str], default) -> None:
    """The same no-op run with Mitogen's linear strategy: its time against the default strategy's."""
    try:
        import ansible_mitogen
    except ImportError:
        sys.exit("--mitogen: pip install mitogen")
    os.environ["ANSIBLE_STRATEGY_PLUGINS"] = str(Path(ansible_mitogen.__file__).parent / "plugins" / "strategy")
    os.environ["ANSIBLE_STRATEGY"] = "mitogen_linear"
    cpu_before = os.times()
    result = up(inventory, stages=stages)
    cpu_after = os.times()
    cpu = ((cpu_after.children_user - cpu_before.children_user)
           + (cpu_after.children_system - cpu_before.children_system))
    print(f"\nMitogen (mitogen_linear): ok={result.ok} changed={result.changed} {result.elapsed:.1f} s, "
          f"controller CPU {cpu:.1f} s; ratio to the default strategy {result.elapsed / default.elapsed:.2f}")
    for failure in result.failures[:10]:
        print(f"  FAILED {failure.host} {failure.task}: {failure.msg[:200]}")


def report(args, result, profile, ssh_host, ssh_each, cpu_before, cpu_after) -> None:
    rows = profile.rows()
    hosts = len(result.hosts)
    ran = [r for r in rows if any(h["status"] != "skipped" for h in r["hosts"].values())]
    controller_cpu = ((cpu_after.children_user - cpu_before.children_user)
                      + (cpu_after.children_system - cpu_before.children_system))
    inferfleet_cpu = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
    per_task = result.elapsed / max(len(rows), 1)

    print(f"no-op site.yml ({args.stages}) on {hosts} hosts: {result.elapsed:.1f} s, changed={result.changed}, "
          f"{len(rows)} tasks "
          f"({len(ran)} ran on some host, {len(rows) - len(ran)} skipped everywhere)")
    print(f"raw ssh true to {ssh_host} (ControlPersist):  {ssh_each * 1000:7.1f} ms")
    print(f"wall time per task:                   {per_task * 1000:7.1f} ms   ratio to ssh: {per_task / ssh_each:6.1f}"
          "   (goal <= 3)")
    print(f"controller CPU: {controller_cpu:.1f} s (ansible-playbook, forks, ssh) + {inferfleet_cpu:.1f} s "
          f"(this process: runner's event handling) = {controller_cpu / result.elapsed:.2f} cores busy on average; "
          f"{controller_cpu / max(hosts * len(rows), 1) * 1000:.1f} ms per host per task")
    for key, title in (("play", "stage (play)"), ("action", "module"), ("role", "role")):
        print(f"\nby {title}:")
        for name, count, wall in summarize(rows, key)[:15]:
            print(f"  {name[:60]:60s} {count:4d} tasks {wall:7.1f} s {wall / result.elapsed:6.1%}")
    print(f"\nslowest {args.top} tasks:")
    for row in sorted(rows, key=lambda r: -r["wall"])[:args.top]:
        slowest = max(row["hosts"].items(), key=lambda h: h[1]["duration"], default=("-", {"duration": 0}))
        print(f"  {row['wall']:6.2f} s  {row['action'][:28]:28s} {row['task'][:70]:70s} "
              f"(slowest host {slowest[0]} {slowest[1]['duration']:.2f} s)")
    if args.json:
        args.json.write_text(json.dumps({
            "hosts": hosts, "elapsed": result.elapsed, "changed": result.changed, "ssh_round_trip": ssh_each,
            "controller_cpu": controller_cpu, "inferfleet_cpu": inferfleet_cpu, "tasks": rows}, indent=1) + "\n")
        print(f"\nprofile written to {args.json}")


if __name__ == "__main__":
    main()
