"""The fleet's Prometheus scrape configuration: every vLLM instance's /metrics and every front door's HAProxy
metrics, as a prometheus.yml a Prometheus server loads as it is (promtool check config accepts it).

The serve stage rewrites it after each run from the plans of the hosts it served; the target groups of hosts
outside the run (a run with --limit) are kept, those of hosts no longer in the inventory are dropped.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import yaml

from .frontdoor import METRICS_PATH

VLLM_JOB = "vllm"
FRONT_DOOR_JOB = "inferfleet-front-door"
HEADER = ("# Prometheus scrape configuration of the inferfleet fleet, written by the serve stage after each run.\n"
          "# Load it as it is (prometheus --config.file=THIS), or copy its scrape_configs into your own.\n")


def _target(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}"


def target_groups(host: str, plan: dict) -> dict[str, list[dict]]:
    """The host's target groups per job: one per instance and per front door, with their labels."""
    # names may come as str subclasses (Ansible's); the file holds plain strings
    host, platform = str(host), str(plan.get("platform", ""))
    instances = []
    for inst in plan.get("instances") or []:
        labels = {"host": host, "service": str(inst["service"]), "instance": str(inst["name"]),
                  "model": str(inst["model"]), "platform": platform}
        target = _target(inst["health_url"])
        if inst.get("listen") == "127.0.0.1":  # reached through its front door only
            target = f"{urlsplit(inst['health_url']).hostname}:{inst['front_door']['port']}"
            labels["__metrics_path__"] = f"{METRICS_PATH}/{inst['name']}"
            labels["__scheme__"] = inst["front_door"]["scheme"]
        instances.append({"targets": [target], "labels": labels})
    doors = [{"targets": [_target(door["url"])],
              "labels": {"host": host, "service": ",".join(door["services"]), "instance": str(door["name"]),
                         "model": ",".join(b["model"] for b in door["backends"]), "platform": platform,
                         "__scheme__": urlsplit(door["url"]).scheme}}
             for door in plan.get("front_doors") or []]
    return {VLLM_JOB: instances, FRONT_DOOR_JOB: doors}


def prometheus_config(plans: dict[str, dict], existing: str | None, inventory_hosts) -> str:
    """plans: host -> its plan (the serve stage's); existing: the file as it is now, if any."""
    kept: dict[str, list[dict]] = {VLLM_JOB: [], FRONT_DOOR_JOB: []}
    try:
        document = yaml.safe_load(existing or "") or {}
    except yaml.YAMLError:
        document = {}
    for job in document.get("scrape_configs") or [] if isinstance(document, dict) else []:
        if not isinstance(job, dict) or job.get("job_name") not in kept:
            continue
        for group in job.get("static_configs") or []:
            host = (group.get("labels") or {}).get("host")
            if host not in plans and host in inventory_hosts:
                kept[job["job_name"]].append(group)
    for host in sorted(plans):
        for job, groups in target_groups(host, plans[host]).items():
            kept[job] += groups
    for groups in kept.values():
        groups.sort(key=lambda g: (g["labels"]["host"], g["labels"]["instance"]))
    config = {"scrape_configs": [
        {"job_name": VLLM_JOB, "metrics_path": "/metrics", "static_configs": kept[VLLM_JOB]},
        {"job_name": FRONT_DOOR_JOB, "metrics_path": METRICS_PATH, "static_configs": kept[FRONT_DOOR_JOB]},
    ]}
    return HEADER + yaml.safe_dump(config, sort_keys=False, default_flow_style=False)
