"""The controller's own CPU per host per task as the fleet widens, with forks 50 (ansible.cfg's).

Wide fleets are simulated honestly with what is here: N inventory hosts, each an alias of one of the sandbox's
hosts (dealt round-robin), each with its own SSH ControlPersist master, as N real hosts would have. The modules
run inside the sandbox hosts' containers, so they are not the controller's work; what is counted is the CPU of
ansible-playbook, its forks and their ssh clients (this process's reaped children, getrusage), less what the
same command takes with no task (its start and the inventory's parse). The wall time is
not the figure: N aliases of 4 hosts share this machine's 2 cores. The measured run follows an unmeasured one
that opens the SSH masters and writes the files, so it changes nothing, like a re-run of a converged fleet.

The playbook: a command, a stat and a copy (three module runs on the host) and a set_fact (controller only).
Prints per N: wall time, controller CPU, cores it kept busy, ms per host per task; then how the last figure grows
from the smallest N to the largest (1.0: flat). Figures, not pass/fail. SIMULATED fleet; real Ansible and SSH.

    python benchmarks/controller_scale.py [-i inventories/sandbox/hosts.yml] [--hosts 1,10,50,100,200]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

PROJECT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PLAYBOOK = """\
- name: Touch each host as a converged stage does
  hosts: all
  gather_facts: false
  tasks:
    - name: Run a command
      ansible.builtin.command: "true"
      changed_when: false
    - name: Read a file's state
      ansible.builtin.stat:
        path: /etc/hostname
    - name: Keep a fact
      ansible.builtin.set_fact:
        scale_alias: "{{ inventory_hostname }}"
    - name: Write a file
      ansible.builtin.copy:
        content: "{{ scale_alias }}\\n"
        dest: /tmp/inferfleet-scale-{{ inventory_hostname }}
        mode: "0644"
"""
TASKS = 4
CONNECTION_VARS = ("ansible_host", "ansible_port", "ansible_user", "ansible_ssh_private_key_file",
                   "ansible_ssh_common_args", "ansible_python_interpreter")


def sandbox_hosts(inventory: Path) -> list[dict]:
    listing = json.loads(subprocess.run([str(BIN / "ansible-inventory"), "-i", str(inventory), "--list"],
                                        check=True, capture_output=True, text=True, cwd=PROJECT).stdout)
    hostvars = listing["_meta"]["hostvars"]
    return [{k: v for k, v in hostvars[h].items() if k in CONNECTION_VARS} for h in sorted(hostvars)]


def wide_inventory(path: Path, hosts: list[dict], count: int, control_dir: Path) -> None:
    aliases = {}
    for n in range(count):
        # one ControlPersist master per alias, as each real host has its own (the default path is per address)
        aliases[f"scale-{n:03d}"] = dict(hosts[n % len(hosts)], ansible_control_path=str(control_dir / f"{n:03d}"))
    path.write_text(yaml.safe_dump({"all": {"hosts": aliases}}))


def run(inventory: Path, playbook: Path, env: dict) -> tuple[float, float, str]:
    """Wall seconds, the CPU seconds of ansible-playbook and everything it started, and its output."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    done = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(inventory), str(playbook)], cwd=PROJECT, env=env,
                          capture_output=True, text=True)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"ansible-playbook failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-i", "--inventory", type=Path, default=PROJECT / "inventories" / "sandbox" / "hosts.yml")
    parser.add_argument("--hosts", default="4,50,200", help="fleet widths to measure (comma-separated)")
    args = parser.parse_args()
    widths = [int(n) for n in args.hosts.split(",")]
    base = sandbox_hosts(args.inventory)
    env = dict(os.environ, ANSIBLE_CONFIG=str(PROJECT / "ansible.cfg"),
               ANSIBLE_SSH_RETRIES="5", PATH=f"{BIN}:{os.environ['PATH']}")
    print(f"controller CPU per host per task, forks 50, {TASKS} tasks, aliases of {len(base)} sandbox host(s) "
          f"(SIMULATED fleet; real Ansible and SSH)")
    print(f"{'hosts':>6} {'wall s':>8} {'tasks CPU s':>12} {'cores busy':>11} {'ms/host/task':>13}")
    per_task = {}
    with tempfile.TemporaryDirectory(prefix="ifscale-", dir="/tmp") as tmp:
        root = Path(tmp)
        playbook = root / "scale.yml"
        playbook.write_text(PLAYBOOK)
        empty = root / "empty.yml"
        empty.write_text(PLAYBOOK.split("  tasks:")[0] + "  tasks: []\n")
        (root / "cp").mkdir()
        for count in widths:
            inventory = root / f"hosts-{count}.yml"
            wide_inventory(inventory, base, count, root / "cp")
            run(inventory, playbook, env)  # opens the masters, writes the files
            _, startup, _ = run(inventory, empty, env)  # ansible-playbook's start and the inventory's parse
            wall, cpu, out = run(inventory, playbook, env)
            cpu -= startup
            if any(int(n) for n in re.findall(r"changed=(\d+)", out.split("PLAY RECAP")[-1])):
                raise SystemExit(f"the measured run changed something:\n{out[-2000:]}")
            per_task[count] = cpu / (count * TASKS) * 1000
            print(f"{count:>6} {wall:>8.1f} {cpu:>12.1f} {cpu / wall:>11.2f} {per_task[count]:>13.1f}", flush=True)
        for path in (root / "cp").glob("*"):  # end the masters
            subprocess.run(["ssh", "-o", f"ControlPath={path}", "-O", "exit", "x"], capture_output=True)
    low, high = min(widths), max(widths)
    print(f"growth of controller CPU per host per task, {high} hosts / {low}: {per_task[high] / per_task[low]:.2f} "
          f"(1.0: flat)")


if __name__ == "__main__":
    main()
