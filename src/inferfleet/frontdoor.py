"""Front doors: one port in front of all the instances of a service (or of several services) on a host, an HAProxy
in a container.

HAProxy spreads requests over the instances that pass their /health check, routes by the request's `model` field
when the port serves several models, adds the telemetry headers (X-Inferfleet-Instance, X-Inferfleet-Model) and
takes an instance out of rotation through its admin socket before a rolling restart stops it. The planner gives
each front door its configuration text and container; the serve stage writes and runs them as they are.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from .planner import Findings

INSTANCE_HEADER = "X-Inferfleet-Instance"
# the front door's own metrics (HAProxy's Prometheus exporter); /metrics stays the instances' (vLLM's)
METRICS_PATH = "/front-door/metrics"
# the backend through which an instance's /metrics is reached (its name follows)
METRICS_BACKEND = "METRICS."  # upper case: no service name can begin so
# what the instances behind the front door run with, read from their containers by the serve stage
CONFIG_PATH = "/front-door/config"
MODEL_HEADER = "X-Inferfleet-Model"
# where the configuration and the admin socket are inside the container (the host's directories are mounted there)
CONFIG_DIR = "/etc/inferfleet-front-door"
RUN_DIR = "/run/inferfleet-front-door"


def plan_front_doors(instances: list[dict], services: list, host: str, address: str, image: str, root: str,
                     findings: Findings, base_dir: Path | None = None) -> list[dict]:
    """The host's front doors: one per port the services' front_door keys name. Services naming the same port
    share it and are told apart by the request's model field (seed 000 serves an embedding and a rerank model from
    one port). Marks each instance with its place behind its front door.

    services: the services' specs (schema.Service) in inventory order; instances: the planner's instances."""
    used = {inst["port"]: f"instance {inst['name']}" for inst in instances}
    by_port: dict[int, list] = {}
    for spec in services:
        door = spec.front_door
        if door is None or not any(inst["service"] == spec.name for inst in instances):
            continue
        field = f"inferfleet_services[{spec.name}].front_door"
        if refused(field, door, used, base_dir, findings):
            continue
        sharing = by_port.setdefault(door.port, [])
        if sharing and (sharing[0].front_door != door):
            findings.error(field, f"{door.port} is also the front door of service {sharing[0].name}, with other "
                                  f"settings ({_settings(sharing[0].front_door)} there, {_settings(door)} here)",
                           "services sharing a front door give it the same balance and telemetry_headers")
            continue
        served = {n: other.name for other in sharing for inst in instances if inst["service"] == other.name
                  for n in inst["served_model_names"]}
        clash = next((n for inst in instances if inst["service"] == spec.name for n in inst["served_model_names"]
                      if n in served), None)
        if clash:
            findings.error(field, f"port {door.port}: model name {clash!r} is also served by service {served[clash]} "
                                  "behind this front door, which routes by the request's model",
                           "give the services different served_model_name values, or separate front doors")
            continue
        sharing.append(spec)
    if by_port and not image:
        findings.error("inferfleet_front_door_image", "is empty, and the host has front doors",
                       "set inferfleet_front_door_image to an HAProxy image (docker.io/library/haproxy:3.0)")
        return []
    return [front_door(port, specs, instances, host, address, image, root, base_dir)
            for port, specs in by_port.items() if specs]


def refused(field: str, door, used: dict[int, str], base_dir: Path | None, findings: Findings) -> bool:
    """A front door whose port the host already uses, or whose certificate is missing, is refused."""
    if door.port in used:
        findings.error(f"{field}.port", f"{door.port} is also the port of {used[door.port]} on this host",
                       "give the front door a port nothing else of the host uses")
        return True
    if door.certificate and not certificate_path(door.certificate, base_dir).is_file():
        findings.error(f"{field}.certificate", f"{certificate_path(door.certificate, base_dir)} does not exist on "
                                               "the controller",
                       "give the PEM file (certificate, chain and private key) as a path relative to the "
                       "inventory, or an absolute one")
        return True
    return False


def certificate_path(value: str, base_dir: Path | None) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() or base_dir is None else base_dir / path


def _settings(door) -> str:
    return f"balance {door.balance}, telemetry_headers {str(door.telemetry_headers).lower()}"


def front_door(port: int, specs: list, instances: list[dict], host: str, address: str, image: str,
               root: str, base_dir: Path | None = None) -> dict:
    door = specs[0].front_door
    certificate = str(certificate_path(door.certificate, base_dir).resolve()) if door.certificate else None
    scheme = "https" if certificate else "http"
    backends: list[dict] = []
    for spec in specs:
        for inst in (i for i in instances if i["service"] == spec.name):
            names = inst["served_model_names"]
            backend = next((b for b in backends if b["names"] == names), None)
            if backend is None:
                backend = {"name": f"{spec.name}-{sum(b['service'] == spec.name for b in backends)}",
                           "service": spec.name, "names": names, "model": inst["model"],
                           "api_key": inst.get("api_key", False), "servers": []}
                backends.append(backend)
            backend["servers"].append({"name": inst["name"], "address": "127.0.0.1", "port": inst["port"],
                                       "container": inst["container"]["name"]})
            inst["front_door"] = {"socket": f"{root.rstrip('/')}/{port}/run/admin.sock", "backend": backend["name"],
                                  "server": inst["name"], "port": port, "scheme": scheme}
    return _door(port, [spec.name for spec in specs], door.balance, door.telemetry_headers, certificate, host,
                 address, image, root, backends)


def _door(port: int, services: list[str], balance: str, telemetry: bool, certificate: str | None, host: str,
          address: str, image: str, root: str, backends: list[dict], fleet: bool = False) -> dict:
    """A front door's document: its configuration and its container, as the serve stage applies them."""
    directory = f"{root.rstrip('/')}/{port}"
    name = f"inferfleet-front-door-{port}"
    scheme = "https" if certificate else "http"
    return {
        "name": name, "port": port, "services": services, "balance": balance, "telemetry_headers": telemetry,
        "certificate": certificate, "url": f"{scheme}://{address}:{port}", "backends": backends,
        # a fleet front door's servers, and so its configuration, come when the serve stage runs
        "directory": directory, "fleet": fleet,
        "config": haproxy_config(name, host, port, balance, telemetry, backends, bool(certificate)) if backends
        else None,
        "container": {
            "name": name, "image": image, "entrypoint": ["haproxy"],
            "command": ["-W", "-db", "-f", f"{CONFIG_DIR}/haproxy.cfg"], "user": "root",
            "network_mode": "host", "restart_policy": "unless-stopped",
            "volumes": [f"{directory}/config:{CONFIG_DIR}:ro", f"{directory}/run:{RUN_DIR}"],
            # status reads the front door's state through the stats socket in its directory
            "labels": {"inferfleet.front-door": str(port), "inferfleet.front-door-dir": directory,
                       "inferfleet.front-door-scheme": scheme, "inferfleet.services": ",".join(services)},
        },
    }


def plan_fleet_front_doors(specs: list, instances: list[dict], doors: list[dict], host: str, address: str,
                           image: str, root: str, findings: Findings, base_dir: Path | None = None) -> list[dict]:
    """The fleet front doors this host runs (inferfleet_fleet_front_doors): checked against the host's own ports;
    their servers come from the other hosts' plans when the serve stage runs (fleet_front_door)."""
    used = {inst["port"]: f"instance {inst['name']}" for inst in instances}
    used.update({door["port"]: door["name"] for door in doors})
    planned = []
    for position, spec in enumerate(specs):
        if refused(f"inferfleet_fleet_front_doors[{position}]", spec, used, base_dir, findings):
            continue
        if not image:
            findings.error("inferfleet_front_door_image", "is empty, and the host has a fleet front door",
                           "set inferfleet_front_door_image to an HAProxy image (docker.io/library/haproxy:3.0)")
            continue
        used[spec.port] = f"the fleet front door of service {spec.service}"
        certificate = str(certificate_path(spec.certificate, base_dir).resolve()) if spec.certificate else None
        planned.append(_door(spec.port, [spec.service], spec.balance, spec.telemetry_headers, certificate, host,
                             address, image, root, [], fleet=True))
    return planned


def fleet_front_door(door: dict, plans: dict[str, dict], host: str, keyed: bool) -> dict:
    """A planned fleet front door with its servers: for each host whose plan serves the service, the host's
    front door of the service, or else each of its instances. plans: host -> plan (the run's hosts)."""
    service = door["services"][0]
    servers, model = [], None
    for name in sorted(plans):
        plan = plans[name]
        mine = [inst for inst in plan.get("instances") or [] if inst["service"] == service]
        if not mine:
            continue
        model = model or mine[0]["model"]
        address = urlsplit(mine[0]["health_url"]).hostname
        local = next((d for d in plan.get("front_doors") or [] if service in d["services"]), None)
        if local:
            servers.append({"name": name, "address": address, "port": local["port"],
                            "tls": local.get("certificate") is not None})
        else:
            servers += [{"name": f"{name}.{inst['name']}", "address": address, "port": inst["port"]}
                        for inst in mine]
    if not servers:
        raise ValueError(f"fleet front door {door['port']} of service {service}: no host of this run serves it "
                         "(run the serve stage on the hosts that do, too)")
    backends = [{"name": f"{service}-0", "service": service, "names": [service], "model": model,
                 "api_key": keyed, "servers": servers}]
    return dict(door, backends=backends, config=haproxy_config(
        door["name"], host, door["port"], door["balance"], door["telemetry_headers"], backends,
        door["certificate"] is not None, fleet=True))


def key_file(service: str) -> str:
    """Where the front door reads a service's accepted Authorization header values (one per line)."""
    return f"{CONFIG_DIR}/keys/{service}"


def renamed(door: dict, host: str, address: str) -> dict:
    """The front door of a host planned like an earlier one: the same but for the host's name and address."""
    backends = door["backends"]
    return dict(door, url=f"{'https' if door['certificate'] else 'http'}://{address}:{door['port']}",
                config=haproxy_config(door["name"], host, door["port"], door["balance"], door["telemetry_headers"],
                                      backends, bool(door["certificate"])) if backends else None)


def haproxy_config(name: str, host: str, port: int, balance: str, telemetry: bool, backends: list[dict],
                   tls: bool = False, fleet: bool = False) -> str:
    """HAProxy's configuration of one front door (HAProxy 2.6 and later read it alike). fleet: its servers are
    other hosts (their front doors, which name the instance themselves)."""
    services = ", ".join(dict.fromkeys(b["service"] for b in backends))
    lines = [
        f"# inferfleet {name} on {host} (services {services}), written by the serve stage from the plan",
        "global",
        f"    stats socket {RUN_DIR}/admin.sock mode 600 level admin",
        "    stats timeout 30s",
        "",
        "defaults",
        "    mode http",
        "    timeout connect 5s",
        # generations and big embedding batches take minutes: only an idle client is cut off
        "    timeout client 10m",
        "    timeout server 10m",
        "    timeout queue 1m",
        # a request that met an instance going away goes to another one: refused, closed without an answer, or
        # answered 500/502/503 (vLLM answers 500 to the requests in flight while its engine shuts down). Only a
        # request HAProxy still holds whole is retried, and never one whose answer has begun (a stream)
        "    retries 3",
        "    option redispatch 1",
        "    retry-on conn-failure empty-response 500 502 503",
        # HAProxy retries only a request it read whole before sending it: without this it may send the headers
        # before the body arrives (a client writes them apart), and that request is never retried
        "    option http-buffer-request",
        "",
        # which instances are in rotation, for `inferfleet status`: read-only, on a socket only the host reaches
        "listen stats",
        f"    bind unix@{RUN_DIR}/stats.sock mode 600",
        "    stats enable",
        "    stats uri /",
        "",
        f"frontend {name}",
        f"    bind :{port}" + (f" ssl crt {CONFIG_DIR}/tls.pem" if tls else ""),
        f"    http-request use-service prometheus-exporter if {{ path {METRICS_PATH} }}",
        f"    http-request return status 200 content-type application/json file {CONFIG_DIR}/effective.json "
        f"if {{ path {CONFIG_PATH} }}",
    ]
    if len(backends) > 1:
        # the body, read whole (http-buffer-request), picks the backend by its model field
        lines += ["    http-request set-var(txn.model) req.body,json_query('$.model')"]
        for backend in backends:
            names = " ".join(_quoted(n) for n in backend["names"])
            lines.append(f"    use_backend {backend['name']} if {{ var(txn.model) -m str {names} }}")
    servers = [server for backend in backends for server in backend["servers"]] if not fleet else []
    # each instance's own /metrics, for instances that listen on loopback only (behind an API key)
    lines += [f"    use_backend {METRICS_BACKEND}{s['name']} if {{ path {METRICS_PATH}/{s['name']} }}"
              for s in servers]
    lines.append(f"    default_backend {backends[0]['name']}")
    if telemetry and fleet:
        lines.append(f"    http-response set-header {INSTANCE_HEADER} %[srv_name] if !{{ res.hdr({INSTANCE_HEADER}) "
                     "-m found }")
    elif telemetry:
        lines.append(f"    http-response set-header {INSTANCE_HEADER} {_quoted(host + '/')}%[srv_name]")
    for backend in backends:
        lines += ["", f"backend {backend['name']}", f"    balance {balance}",
                  "    option httpchk GET /health", "    http-check expect status 200",
                  "    default-server inter 1s fall 2 rise 1"]
        if backend.get("api_key"):
            # vLLM checks its key on /v1 paths only; here every path but /health needs it (the serve stage writes
            # the key file, which the plan never holds)
            lines.append(f"    http-request deny deny_status 401 if !{{ path /health }} "
                         f"!{{ req.hdr(authorization) -m str -f {key_file(backend['service'])} }}")
        if telemetry:
            lines.append(f"    http-response set-header {MODEL_HEADER} {_quoted(backend['model'])}")
        # a host's front door with a certificate is reached over TLS; the fleet door trusts the fleet's network
        lines += [f"    server {s['name']} {s['address']}:{s['port']} check" + (" ssl verify none" if s.get("tls")
                                                                                   else "")
                  for s in backend["servers"]]
    for server in servers:
        lines += ["", f"backend {METRICS_BACKEND}{server['name']}", "    http-request set-path /metrics",
                  f"    server {server['name']} {server['address']}:{server['port']}"]
    return "\n".join(lines) + "\n"


def _quoted(text: str) -> str:
    """A word of HAProxy's configuration language: quoted when it holds what would end or change it."""
    if text and all(c.isalnum() or c in "-_./:" for c in text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
