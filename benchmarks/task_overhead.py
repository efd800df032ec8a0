"""Ansible round trip per task on a sandbox host against a raw `ssh host true` over the same kind of connection.

Both use a ControlPersist master, as ansible.cfg does. Prints seconds per operation and their ratio (later issues
drive it down); not pass/fail.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from inferfleet import run_playbook
from inferfleet.sandbox.fleet import Sandbox, ssh_options

TASKS = 20
SSH_ROUNDS = 20
PLAYBOOK = """\
- name: Time trivial tasks
  hosts: all
  gather_facts: false
  tasks:
""" + "".join(f"""    - name: Run trivial command {i}
      ansible.builtin.command: "true"
      changed_when: false
""" for i in range(TASKS))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        box = Sandbox(name="ifbench", state_root=root / "state", registry_port=5077, log=lambda *_: None)
        try:
            host = box.up(hosts=1, profile_names=["cpu"], inventory_dir=root / "inventory", serving=False)[0]
            control = ["-o", "ControlMaster=auto", "-o", f"ControlPath={root}/cm-%r@%h:%p", "-o", "ControlPersist=60"]
            target = f"root@{host.address}"
            subprocess.run(["ssh", *ssh_options(box.key_path), *control, target, "true"], check=True)
            started = time.monotonic()
            for _ in range(SSH_ROUNDS):
                subprocess.run(["ssh", *ssh_options(box.key_path), *control, target, "true"], check=True)
            ssh_each = (time.monotonic() - started) / SSH_ROUNDS

            project = Path(__file__).resolve().parents[1]
            playbook = project / "benchmarks" / ".task_overhead.yml"
            playbook.write_text(PLAYBOOK)
            try:
                run_playbook(root / "inventory" / "hosts.yml", str(playbook.relative_to(project)))  # warm caches
                result = run_playbook(root / "inventory" / "hosts.yml", str(playbook.relative_to(project)))
            finally:
                playbook.unlink()
            if not result.ok:
                sys.exit(f"benchmark playbook failed: {result.failures}")
            task_each = result.elapsed / TASKS
            print(f"raw ssh true (ControlPersist):   {ssh_each * 1000:7.1f} ms")
            print(f"ansible task (command: true):    {task_each * 1000:7.1f} ms  (playbook of {TASKS} tasks, "
                  f"{result.elapsed:.2f} s incl. start-up)")
            print(f"ratio task / ssh round trip:     {task_each / ssh_each:7.2f}")
        finally:
            box.down()


if __name__ == "__main__":
    main()
