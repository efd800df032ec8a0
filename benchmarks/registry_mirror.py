"""Bytes the upstream registry serves when 3 sandbox hosts pull one image, with and without the LAN mirror
(goal with it: <= 1.1 x the image size; without it the fleet pulls it 3 times)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from inferfleet import up
from inferfleet.sandbox import registry
from inferfleet.sandbox.fleet import Sandbox, ssh_options

PROJECT = Path(__file__).resolve().parents[1]
SIZE_MB = 64


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        box = Sandbox(name="ifmirror", state_root=root / "state", registry_port=5091, log=lambda *_: None)
        try:
            hosts = box.up(hosts=3, profile_names=["cpu"], inventory_dir=root / "inventory", serving=False)
            shutil.copytree(PROJECT / "inventories" / "sandbox" / "group_vars", root / "inventory" / "group_vars")
            inventory = root / "inventory" / "hosts.yml"
            if not up(inventory, stages=["docker"]).ok:
                sys.exit("docker stage failed")
            (root / "payload").write_bytes(os.urandom(SIZE_MB * 1024 * 1024))
            local = f"127.0.0.1:{box.registry_port}/inferfleet/bench:1"
            subprocess.run(f"tar -C {root} -c payload | docker import - {local} && docker push -q {local}",
                           shell=True, check=True, capture_output=True)
            address = next(line.split(": ")[1] for line in inventory.read_text().splitlines()
                           if line.strip().startswith("inferfleet_sandbox_registry:"))
            image = f"{address}/inferfleet/bench:1"
            extra = {"inferfleet_images": {"cpu": image}, "images_extra": [image]}
            log = box.state / "registry" / "registry.log"
            results = {}
            for label, mirror in (("without mirror", {}),
                                  ("with mirror", {"inferfleet_registry_mirror": "{{ inferfleet_sandbox_mirror }}"})):
                _, offset = registry.bytes_served(log)
                run = up(inventory, stages=["images"], extravars={**extra, **mirror})
                if not run.ok:
                    sys.exit(f"images stage failed: {run.failures}")
                results[label] = (registry.bytes_served(log, offset)[0], run.elapsed)
                for host in hosts:  # start the next case from hosts without the image
                    subprocess.run(["ssh", *ssh_options(box.key_path), f"root@{host.address}",
                                    "docker image rm -f $(docker image ls -q) >/dev/null 2>&1; true"], check=True)
        finally:
            box.down()
    size = SIZE_MB * 1024 * 1024
    for label, (served, elapsed) in results.items():
        print(f"3 hosts, {SIZE_MB} MiB image, {label:15} upstream served {served / 2**20:7.1f} MiB = "
              f"{served / size:4.2f} x image ({elapsed:.1f} s)")
    print("goal with the mirror: <= 1.10 x image")


if __name__ == "__main__":
    main()
