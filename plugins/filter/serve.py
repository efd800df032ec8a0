# Copyright: inferfleet contributors
# Apache License 2.0
"""Filters for the serve stage's reports."""

import csv
import json
import re
import shlex
from pathlib import Path

from ansible.errors import AnsibleFilterError

IMPORT_ERROR = None
try:
    from inferfleet import frontdoor, scrape
    from inferfleet.actions import ModeAction
except ImportError as exc:  # pragma: no cover - depends on the controller's environment
    frontdoor = scrape = None
    IMPORT_ERROR = exc


def _require():
    if frontdoor is None:
        raise AnsibleFilterError("the inferfleet Python package is not importable on the controller: %s (install "
                                 "it with `pip install inferfleet`, or run in the inferfleet EE)" % IMPORT_ERROR)


def _serve_plans(hostvars, hosts):
    """host -> the plan the serve stage loaded on it, for the run's hosts that loaded one."""
    plans = {}
    for name in hosts:
        loaded = hostvars[name].get("__vllm_service_plan") or {}
        if loaded.get("plan"):
            plans[name] = loaded["plan"]
    return plans


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
    if instance.get("listen") == "127.0.0.1":  # behind its front door only
        door = instance["front_door"]
        base = "%s://%s:%s" % (door.get("scheme", "http"), base.split("://", 1)[1].rsplit(":", 1)[0], door["port"])
    auth = " -H \"Authorization: Bearer $API_KEY\"" if instance.get("api_key") else ""
    return "%s (%s): curl -s %s%s -H 'Content-Type: application/json'%s -d %s" % (
        instance["name"], task, base, path, auth, shlex.quote(json.dumps(body)))


def inferfleet_front_door_line(door):
    """One line per front door: its URL and the instances behind it."""
    servers = ["%s:%s" % (s["name"], s["port"]) for b in door["backends"] for s in b["servers"]]
    return "front door %s (%s): %s" % (door["url"], ", ".join(door["services"]), ", ".join(servers))


def _arg(command, flag):
    match = re.search(r"(?:^|\s)%s[ =](\S+)" % re.escape(flag), command or "")
    return match.group(1) if match else None


# What an instance runs with, read from its container's command line (flag -> key); null: the flag is absent and
# vLLM's own default applies
EFFECTIVE_FLAGS = (("--max-num-seqs", "max_num_seqs", int), ("--max-num-batched-tokens", "max_num_batched_tokens", int),
                   ("--max-model-len", "max_model_len", int), ("--tensor-parallel-size", "tensor_parallel_size", int),
                   ("--api-server-count", "api_server_count", int),
                   ("--gpu-memory-utilization", "gpu_memory_utilization", float))


def effective_settings(argv):
    """The serving settings of a vLLM command line (a list of arguments)."""
    argv = [str(a) for a in argv or []]
    found = {}
    for flag, key, kind in EFFECTIVE_FLAGS:
        value = None
        for position, arg in enumerate(argv):
            if arg == flag and position + 1 < len(argv):
                value = argv[position + 1]
            elif arg.startswith(flag + "="):
                value = arg.split("=", 1)[1]
        try:
            found[key] = None if value is None else kind(value)
        except ValueError:
            found[key] = value
    return found


def inferfleet_effective_config(infos, host, port):
    """The front door's /front-door/config document: what each instance behind it runs with, from the
    docker_container_info results of their containers."""
    instances = []
    for info in infos:
        container = info.get("container") or {}
        config = container.get("Config") or {}
        labels = config.get("Labels") or {}
        instances.append(dict(
            {"instance": labels.get("inferfleet.instance"), "service": labels.get("inferfleet.service"),
             "running": (container.get("State") or {}).get("Running", False),
             "started": (container.get("State") or {}).get("StartedAt"), "image": config.get("Image"),
             "config_hash": labels.get("inferfleet.config-hash")},
            **effective_settings(config.get("Cmd"))))
    return {"host": host, "front_door_port": port, "instances": instances}


def inferfleet_status_probe(container):
    """A docker_host_info container as an instance vllm_ready can probe once."""
    labels = container.get("Labels") or {}
    command = container.get("Command") or ""
    name = labels.get("inferfleet.instance") or container["Names"][0].lstrip("/")
    return {"name": name, "port": int(_arg(command, "--port") or 0), "service": labels.get("inferfleet.service"),
            "container": {"name": container["Names"][0].lstrip("/")},
            "smoke": {"served_model_name": _arg(command, "--served-model-name") or name}}


def _metrics_url(container, address, port, schemes):
    """vLLM's /metrics of an instance: on its port, or through its front door when it listens on loopback only.
    schemes: front door port -> http or https."""
    labels = container.get("Labels") or {}
    door = labels.get("inferfleet.front-door-port")
    if door and _arg(container.get("Command") or "", "--host") == "127.0.0.1":
        _require()
        return "%s://%s:%s%s/%s" % (schemes.get(door, "http"), address, door, frontdoor.METRICS_PATH,
                                    labels.get("inferfleet.instance"))
    return "http://%s:%s/metrics" % (address, port)


def inferfleet_status_rows(containers, probes, host, address=None, doors=None):
    """Rows of `inferfleet status`: host, service, instance, image, state, health, port, uptime, metrics (vLLM's
    Prometheus endpoint). doors: the front doors' containers."""
    by_name = {p["name"]: p for p in probes or []}
    schemes = {(d.get("Labels") or {}).get("inferfleet.front-door"): (d.get("Labels") or {}).get(
        "inferfleet.front-door-scheme", "http") for d in doors or []}
    rows = []
    for container in containers:
        probe = inferfleet_status_probe(container)
        result = by_name.get(probe["name"], {})
        labels = container.get("Labels") or {}
        health = "ready" if result.get("ready") else (result.get("error") or "unknown")
        rows.append({"host": host, "service": labels.get("inferfleet.service", "?"), "instance": probe["name"],
                     "image": container.get("Image", "?"), "state": container.get("State", "?"),
                     "health": health, "port": probe["port"], "uptime": container.get("Status", ""),
                     "metrics": _metrics_url(container, address or host, probe["port"], schemes),
                     "effective": effective_settings(shlex.split(container.get("Command") or "")),
                     "config_hash": labels.get("inferfleet.config-hash", "")})
    return sorted(rows, key=lambda r: (r["service"], r["instance"]))


def inferfleet_status_line(row):
    return "%(service)s/%(instance)s  port %(port)s  %(state)s  %(health)s  %(uptime)s  %(image)s" % row


def inferfleet_front_door_rows(results, host, address=None):
    """Rows of `inferfleet status` for front doors, from the uri results of their stats sockets (HAProxy's CSV:
    one row per proxy and server, the server's state in `status`: UP, DOWN, MAINT, DRAIN, or "UP 1/2" while a
    check is under way)."""
    rows = []
    for result in results or []:
        container = result["item"]
        labels = container.get("Labels") or {}
        row = {"host": host, "front_door": container["Names"][0].lstrip("/"),
               "port": int(labels.get("inferfleet.front-door", 0)),
               "services": (labels.get("inferfleet.services") or "").split(","),
               "state": container.get("State", "?"), "in_rotation": [], "out_of_rotation": []}
        row["url"] = "%s://%s:%s" % (labels.get("inferfleet.front-door-scheme", "http"), address or host, row["port"])
        _require()
        row["metrics"] = row["url"] + frontdoor.METRICS_PATH
        content = result.get("content") or ""
        if result.get("status") != 200 or not content.startswith("# pxname"):
            row["error"] = result.get("msg") or "no statistics from the front door"
        for stat in csv.DictReader(content.lstrip("# ").splitlines()) if "error" not in row else []:
            if stat["svname"] in ("FRONTEND", "BACKEND") or stat["pxname"] == "stats" \
                    or stat["pxname"].startswith(frontdoor.METRICS_BACKEND):
                continue
            server = {"backend": stat["pxname"], "instance": stat["svname"], "status": stat["status"]}
            row["in_rotation" if stat["status"].split(" ")[0] == "UP" else "out_of_rotation"].append(server)
        row["summary"] = _front_door_summary(row)
        rows.append(row)
    return sorted(rows, key=lambda r: r["port"])


def _front_door_summary(row):
    if row.get("error"):
        return "front door port %s (%s): %s" % (row["port"], ",".join(row["services"]), row["error"])
    out = ", ".join("%s %s" % (s["instance"], s["status"]) for s in row["out_of_rotation"])
    return "front door port %s (%s): in rotation %s%s" % (
        row["port"], ",".join(row["services"]), ", ".join(s["instance"] for s in row["in_rotation"]) or "none",
        "; out: " + out if out else "")


def inferfleet_complete_front_door(door, hostvars, hosts, host, api_keys):
    """A planned front door as the serve stage runs it: a fleet front door gets its servers from the plans of
    the run's hosts (inferfleet.frontdoor.fleet_front_door); a host's own is complete already."""
    if not door.get("fleet"):
        return door
    _require()
    plans = {name: plan for name, plan in _serve_plans(hostvars, hosts).items() if name != host}
    try:
        return frontdoor.fleet_front_door(door, plans, host, door["services"][0] in (api_keys or {}))
    except ValueError as err:
        raise AnsibleFilterError(str(err)) from None


def inferfleet_front_door_parts(doors, part):
    """What the serve stage writes or reads for each of a host's front doors, one item per (door, thing), so that one
    task loops over them all: `key_files` (the door, a service whose API key it checks) or `containers` (the door, a
    container behind it on this host, whether that container's description holds an API key)."""
    items = []
    for door in doors:
        secret = any(b.get("api_key") for b in door["backends"])
        if part == "key_files":
            services = [b["service"] for b in door["backends"] if b.get("api_key")]
            items += [{"door": door["name"], "directory": door["directory"], "service": s}
                      for s in sorted(set(services), key=services.index)]
        elif part == "containers":
            items += [{"door": door["name"], "container": server["container"], "secret": secret}
                      for backend in door["backends"] for server in backend["servers"] if "container" in server]
        else:
            raise AnsibleFilterError("front_door_parts: part is key_files or containers, got %r" % (part,))
    return items


def inferfleet_prometheus_path(configured, results_dir):
    """The scrape configuration's path: vllm_service_prometheus_config, else prometheus.yml in the results
    directory."""
    _require()
    return configured or str(ModeAction.results_dir({"inferfleet_results_dir": results_dir}) / "prometheus.yml")


def inferfleet_prometheus_config(hostvars, hosts, path, inventory_hosts):
    """The fleet's scrape configuration (inferfleet.scrape) from the serve plans of the run's hosts."""
    _require()
    plans = _serve_plans(hostvars, hosts)
    existing = Path(path).read_text() if Path(path).is_file() else None
    return scrape.prometheus_config(plans, existing, list(inventory_hosts))


class FilterModule:
    def filters(self):
        return {"endpoint_line": inferfleet_endpoint_line,
                "front_door_line": inferfleet_front_door_line,
                "front_door_rows": inferfleet_front_door_rows,
                "prometheus_path": inferfleet_prometheus_path,
                "complete_front_door": inferfleet_complete_front_door,
                "front_door_parts": inferfleet_front_door_parts,
                "effective_config": inferfleet_effective_config,
                "prometheus_config": inferfleet_prometheus_config,
                "status_probe": inferfleet_status_probe,
                "status_rows": inferfleet_status_rows,
                "status_line": inferfleet_status_line}
