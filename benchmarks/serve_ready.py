"""Serve stage on the sandbox: time to all-ready for every sandbox service started together against the slowest
one started alone (goal <= 1.3), and readiness detection latency: time between a server first answering /health
200 and the stage marking it ready (goal <= 1 s). Real vLLM (CPU build) servers; the cards are SIMULATED.

Runs on the demo sandbox (`make demo` first): it stops the services, starts them all, then the slowest service
alone, and finally brings the demo's services back.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

from inferfleet import run_playbook, up

PROJECT = Path(__file__).resolve().parents[1]
INVENTORY = PROJECT / "inventories" / "sandbox" / "hosts.yml"


def ready_results(result) -> list[dict]:
    instances = []
    for item in result.results:
        if item.task.endswith("Wait until every instance serves and answers its smoke request") and item.data:
            instances += item.data.get("instances", [])
    return instances


def serve(limit: str | None = None, extravars: dict | None = None):
    if not run_playbook(INVENTORY, "playbooks/stop.yml", limit=limit).ok:
        sys.exit("stop failed")
    result = up(INVENTORY, stages=["serve"], limit=limit, extravars=extravars)
    if not result.ok:
        sys.exit(f"serve failed: {[f.msg for f in result.failures]}")
    return result, ready_results(result)


def main() -> None:
    if not INVENTORY.exists():
        sys.exit("no sandbox inventory: run `make demo` first")
    together, instances = serve()
    slowest = max(instances, key=lambda i: i["seconds"])
    host = next(r.host for r in together.results if r.data and any(
        i.get("name") == slowest["name"] for i in r.data.get("instances", [])))
    # the serve stage ran alone: it planned and saved each host's plan itself
    saved = json.loads((together.run_dir / "plans" / f"{host}.json").read_text())
    service = next(i["service"] for i in saved["instances"] if i["name"] == slowest["name"])
    specs = yaml.safe_load((PROJECT / "inventories" / "sandbox" / "host_vars" / f"{host}.yml").read_text())
    alone_spec = [s for s in specs["inferfleet_services"] if s["name"] == service]
    # the slowest service alone, with nothing else running anywhere
    run_playbook(INVENTORY, "playbooks/stop.yml")
    _, alone_instances = serve(limit=host, extravars={"inferfleet_services": alone_spec})
    alone_time = max(i["seconds"] for i in alone_instances)
    all_ready = max(i["seconds"] for i in instances)
    print(f"{len(instances)} instances started together: all ready after {all_ready:.1f} s "
          f"(slowest {slowest['name']})")
    print(f"service {service} alone ({len(alone_instances)} instance(s)): ready after {alone_time:.1f} s")
    print(f"ratio together / alone: {all_ready / alone_time:.2f} (goal <= 1.3; 2 cores shared by all servers)")
    latencies = [i["health_to_ready"] for i in instances + alone_instances]
    up(INVENTORY, stages=["serve"])
    print(f"readiness detection (first /health 200 -> marked ready, smoke request included): "
          f"max {max(latencies):.2f} s, mean {sum(latencies) / len(latencies):.2f} s (goal <= 1 s)")


if __name__ == "__main__":
    main()
