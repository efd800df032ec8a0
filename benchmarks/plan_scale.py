"""`inferfleet plan` on a generated inventory of 500 Gaudi hosts x 8 services (goal: under 2 s end to end).

Prints the time of the whole command (Ansible's inventory loading included) and of the planner alone.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from inferfleet.inventory import load_hosts
from inferfleet.planner import plan_hosts

HOSTS, SERVICES = 500, 8
CONFIG = {"architectures": ["LlamaForCausalLM"], "hidden_size": 4096, "num_attention_heads": 32,
          "num_key_value_heads": 8, "num_hidden_layers": 32, "max_position_embeddings": 32768,
          "intermediate_size": 14336, "vocab_size": 128256, "torch_dtype": "bfloat16"}


def write_inventory(root: Path) -> Path:
    services = [{"name": f"svc{i}", "model": f"/models/m{i}", "model_config": "llama-8b.json", "devices": [i],
                 "port": 8000 + i, "max_model_len": 8192, "env_preset": "performance", "warmup_cache": True}
                for i in range(SERVICES)]
    group_vars = root / "group_vars" / "gaudi"
    group_vars.mkdir(parents=True)
    (group_vars / "main.yml").write_text(yaml.safe_dump({
        "inferfleet_platform": "gaudi", "inferfleet_images": {"gaudi": "registry.local/vllm-gaudi:1.21"},
        "inferfleet_accelerator": {"model": "HL-225", "count": 8, "memory_gib": 96},
        "inferfleet_services": services}))
    (root / "llama-8b.json").write_text(json.dumps(CONFIG))
    hosts = {f"gaudi-{n:04d}": {"ansible_host": f"10.1.{n // 250}.{n % 250 + 1}"} for n in range(HOSTS)}
    path = root / "hosts.yml"
    path.write_text(yaml.safe_dump({"all": {"children": {"gaudi": {"hosts": hosts}}}}))
    return path


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        inventory = write_inventory(Path(tmp))
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "inferfleet.cli", "plan", "-i", str(inventory), "--json",
                               "--facts-dir", tmp], capture_output=True, text=True)
        whole = time.monotonic() - started
        if proc.returncode != 0:
            sys.exit(f"plan failed: {proc.stdout[-2000:]} {proc.stderr[-2000:]}")
        hosts, _ = load_hosts(inventory)
        started = time.monotonic()
        plan = plan_hosts(hosts)
        planner_only = time.monotonic() - started
    instances = sum(len(h.instances) for h in plan.hosts.values())
    print(f"inferfleet plan --json, {HOSTS} hosts x {SERVICES} services ({instances} instances): {whole:.2f} s "
          f"(goal < 2 s)")
    print(f"planner alone (inventory already loaded):                    {planner_only:.2f} s")


if __name__ == "__main__":
    main()
