# Copyright: inferfleet contributors
# Apache License 2.0
"""Filters for the serve stage's reports."""

import json
import re
import shlex


def inferfleet_endpoint_line(instance):
    """One line per instance: where it listens and a curl a user can paste."""
    smoke = instance.get("smoke") or {}
    base = instance["health_url"].rsplit("/health", 1)[0]
    served = smoke.get("served_model_name", instance["name"])
    task = smoke.get("task", "generate")
    if task == "embed":
        path, body = "/v1/embeddings", {"model": served, "input": "hello world"}
    elif task == "rerank":
        path, body = "/rerank", {"model": served, "query": "what do cats like?",
                                 "documents": ["cats like sleeping", "stocks fell"]}
    else:
        path, body = "/v1/completions", {"model": served, "prompt": "Hello", "max_tokens": 16}
    return "%s (%s): curl -s %s%s -H 'Content-Type: application/json' -d %s" % (
        instance["name"], task, base, path, shlex.quote(json.dumps(body)))


def _arg(command, flag):
    match = re.search(r"(?:^|\s)%s[ =](\S+)" % re.escape(flag), command or "")
    return match.group(1) if match else None


def inferfleet_status_probe(container):
    """A docker_host_info container as an instance vllm_ready can probe once."""
    labels = container.get("Labels") or {}
    command = container.get("Command") or ""
    name = labels.get("inferfleet.instance") or container["Names"][0].lstrip("/")
    return {"name": name, "port": int(_arg(command, "--port") or 0),
            "container": {"name": container["Names"][0].lstrip("/")},
            "smoke": {"served_model_name": _arg(command, "--served-model-name") or name}}


def inferfleet_status_rows(containers, probes, host):
    """Rows of `inferfleet status`: host, service, instance, image, state, health, port, uptime."""
    by_name = {p["name"]: p for p in probes or []}
    rows = []
    for container in containers:
        probe = inferfleet_status_probe(container)
        result = by_name.get(probe["name"], {})
        labels = container.get("Labels") or {}
        health = "ready" if result.get("ready") else (result.get("error") or "unknown")
        rows.append({"host": host, "service": labels.get("inferfleet.service", "?"), "instance": probe["name"],
                     "image": container.get("Image", "?"), "state": container.get("State", "?"),
                     "health": health, "port": probe["port"], "uptime": container.get("Status", ""),
                     "config_hash": labels.get("inferfleet.config-hash", "")})
    return sorted(rows, key=lambda r: (r["service"], r["instance"]))


def inferfleet_status_line(row):
    return "%(service)s/%(instance)s  port %(port)s  %(state)s  %(health)s  %(uptime)s  %(image)s" % row


class FilterModule:
    def filters(self):
        return {"inferfleet_endpoint_line": inferfleet_endpoint_line,
                "inferfleet_status_probe": inferfleet_status_probe,
                "inferfleet_status_rows": inferfleet_status_rows,
                "inferfleet_status_line": inferfleet_status_line}
