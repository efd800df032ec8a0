#!/usr/bin/python
# Copyright: inferfleet contributors
# Apache License 2.0


DOCUMENTATION = r"""
---
module: vllm_ready
short_description: Wait until vLLM instances serve, and prove it with a request each
description:
  - Polls every instance at once (one thread each) on the host it runs on. Connection refused means the server
    is still starting (vLLM binds its port before it listens); C(/health) 200 means the engine is up; then
    C(/v1/models) must list the served name, and a smoke request by task must succeed (generate a short
    completion of the requested token count, embed vectors of the model's width, rerank a score per document).
  - Notices readiness within I(poll_interval) of it happening, and stops waiting for an instance whose container
    exited or is restarting, returning the container state and the last lines of its log.
  - With I(wait=false), probes each instance once (for status reports) without smoke requests.
  - Never changes anything; check mode returns without probing.
options:
  instances:
    description:
      - The instances, as the planner describes them (name, port, container.name, startup_timeout and
        smoke with task, served_model_name, embedding_dim).
    type: list
    elements: dict
    required: true
  address:
    description: Where the servers listen, seen from the host (they use the host's network).
    type: str
    default: 127.0.0.1
  poll_interval:
    description: Seconds between probes of a starting instance.
    type: float
    default: 0.2
  wait:
    description: Wait for readiness (true) or probe once (false).
    type: bool
    default: true
  max_tokens:
    description: Tokens the generate smoke request asks for (and checks it got).
    type: int
    default: 8
  log_lines:
    description: Lines of the container log returned for an instance that failed.
    type: int
    default: 30
  api_keys:
    description:
      - "API key per service name; the requests to an instance of such a service carry
        C(Authorization: Bearer KEY). The instances say their service in I(service)."
    type: dict
    default: {}
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
author:
  - inferfleet contributors (@inferfleet)
"""

EXAMPLES = r"""
- name: Wait for every planned instance
  vllm_ready:
    instances: "{{ inferfleet_plan.instances }}"
  register: ready

- name: Probe the instances once for a status report
  vllm_ready:
    instances: "{{ inferfleet_plan.instances }}"
    wait: false
"""

RETURN = r"""
instances:
  description: One result per instance.
  returned: always
  type: list
  elements: dict
  contains:
    name: {description: Instance name., type: str}
    ready: {description: Serving and answered its smoke request., type: bool}
    health: {description: Last /health status code (0 when the connection was refused)., type: int}
    seconds: {description: Seconds from the start of the wait to readiness., type: float}
    health_to_ready: {description: Seconds between the first /health 200 and readiness., type: float}
    smoke: {description: "What the smoke request returned (tokens, dimension, scores).", type: dict}
    error: {description: Why the instance is not ready., type: str}
    state: {description: "Container state when it failed (status, exit code, restarts).", type: str}
    log_tail: {description: Last lines of the container log when it failed., type: str}
failed_instances:
  description: Names of the instances that are not ready.
  returned: always
  type: list
"""

import json
import subprocess
import threading
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.six.moves.urllib.error import HTTPError, URLError
from ansible.module_utils.urls import open_url

PARAPHRASES = ["A man is playing a guitar.", "Someone plays an acoustic guitar."]
UNRELATED = "The stock market fell sharply on Monday."
RERANK_QUERY = "What do cats like?"
RERANK_DOCUMENTS = ["Cats like to sleep in the sun.", "Stock prices went down.", "The train leaves at noon."]


def http(method, url, body=None, timeout=30.0, key=None):
    """(status, parsed JSON or text); status 0 when the connection is refused or the server is unreachable."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = "Bearer %s" % key
    try:
        with open_url(url, data=data, method=method, headers=headers, timeout=timeout) as response:
            raw = response.read().decode("utf-8", "replace")
            status = response.status
    except HTTPError as err:
        raw, status = err.read().decode("utf-8", "replace"), err.code
    except (URLError, OSError, ValueError):
        return 0, None
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw


def smoke_request(task, served, max_tokens):
    """(path, body) of the smoke request for a task."""
    if task == "generate":
        return "/v1/completions", {"model": served, "prompt": "The weather today is", "max_tokens": max_tokens,
                                   "temperature": 0, "ignore_eos": True}
    if task == "embed":
        return "/v1/embeddings", {"model": served, "input": PARAPHRASES + [UNRELATED]}
    return "/rerank", {"model": served, "query": RERANK_QUERY, "documents": RERANK_DOCUMENTS}


def check_smoke(task, status, body, expected):
    """(ok, details or reason) for a smoke response; pure, tested on recorded vLLM responses."""
    if status != 200 or not isinstance(body, dict):
        return False, "smoke request answered %s: %s" % (status, str(body)[:300])
    if task == "generate":
        tokens = (body.get("usage") or {}).get("completion_tokens")
        choices = body.get("choices") or []
        if not choices or tokens != expected.get("max_tokens"):
            return False, "completion returned %s token(s), asked %s" % (tokens, expected.get("max_tokens"))
        return True, {"completion_tokens": tokens, "finish_reason": choices[0].get("finish_reason")}
    if task == "embed":
        vectors = [item.get("embedding") or [] for item in body.get("data") or []]
        widths = sorted({len(v) for v in vectors})
        want = expected.get("embedding_dim")
        if len(vectors) != len(PARAPHRASES) + 1 or len(widths) != 1 or (want and widths[0] != want):
            return False, "embeddings returned %d vector(s) of width %s, wanted %d of width %s" % (
                len(vectors), widths, len(PARAPHRASES) + 1, want or "any")
        return True, {"vectors": len(vectors), "dimension": widths[0]}
    results = body.get("results") or []
    indices = sorted(r.get("index") for r in results)
    if indices != list(range(len(RERANK_DOCUMENTS))) or not all(
            isinstance(r.get("relevance_score"), (int, float)) for r in results):
        return False, "rerank returned %d score(s) for %d documents" % (len(results), len(RERANK_DOCUMENTS))
    return True, {"scores": [r["relevance_score"] for r in sorted(results, key=lambda r: r["index"])]}


def container_state(name):
    """(running, description) of a container from docker inspect."""
    proc = subprocess.run(["docker", "inspect", "--format",
                           "{{.State.Status}} {{.State.ExitCode}} {{.RestartCount}} {{.State.Restarting}}", name],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return False, "no container %s" % name
    status, code, restarts, restarting = (proc.stdout.split() + ["", "", "", ""])[:4]
    running = status == "running" and restarts == "0" and restarting != "true"
    return running, "%s (exit code %s, restarts %s)" % (status, code, restarts)


def log_tail(name, lines):
    proc = subprocess.run(["docker", "logs", "--tail", str(lines), name], capture_output=True, text=True, check=False)
    return (proc.stdout + proc.stderr).strip()[-4000:]


def probe(instance, params, started, results):
    name = instance["name"]
    base = "http://%s:%s" % (params["address"], instance["port"])
    smoke = instance.get("smoke") or {}
    served = smoke.get("served_model_name") or name
    key = (params["api_keys"] or {}).get(instance.get("service"))
    # an empty container name turns the container checks off (a server not run by inferfleet)
    container = (instance.get("container") or {}).get("name", "inferfleet-%s" % name)
    deadline = started + float(instance.get("startup_timeout") or 600)
    result = {"name": name, "port": instance["port"], "ready": False, "health": 0, "error": ""}
    first_health = None
    last_state_check = 0.0
    while True:
        status = http("GET", base + "/health", timeout=5)[0]
        result["health"] = status
        if status == 200:
            first_health = first_health or time.time()
            code, models = http("GET", base + "/v1/models", timeout=10, key=key)
            names = [m.get("id") for m in (models or {}).get("data", [])] if isinstance(models, dict) else []
            if code == 200 and served in names:
                if not params["wait"]:
                    result.update(ready=True, models=names)
                    break
                path, body = smoke_request(smoke.get("task", "generate"), served, params["max_tokens"])
                code, answer = http("POST", base + path, body, timeout=120, key=key)
                ok, details = check_smoke(smoke.get("task", "generate"), code, answer,
                                          {"max_tokens": params["max_tokens"],
                                           "embedding_dim": smoke.get("embedding_dim")})
                if ok:
                    now = time.time()
                    result.update(ready=True, smoke=details, seconds=round(now - started, 3),
                                  health_to_ready=round(now - first_health, 3))
                    break
                result["error"] = details
                break
            result["error"] = "/v1/models lists %s, not %s" % (names, served)
        elif status not in (0, 503) and not params["wait"]:
            result["error"] = "/health answered %s" % status
            break
        if not params["wait"]:
            result["error"] = result["error"] or ("not answering (connection refused)" if status == 0 else
                                                  "/health answered %s" % status)
            break
        now = time.time()
        if container and now - last_state_check > 2:
            last_state_check = now
            running, description = container_state(container)
            if not running:
                result["error"] = "container %s is not running: %s" % (container, description)
                break
        if now > deadline:
            result["error"] = "not ready within startup_timeout %ss (last /health: %s)" % (
                instance.get("startup_timeout") or 600, status or "connection refused")
            break
        time.sleep(params["poll_interval"])
    if not result["ready"] and params["wait"] and container:
        result["state"] = container_state(container)[1]
        result["log_tail"] = log_tail(container, params["log_lines"])
    results[name] = result


def main():
    module = AnsibleModule(
        argument_spec=dict(
            instances=dict(type="list", elements="dict", required=True),
            address=dict(type="str", default="127.0.0.1"),
            poll_interval=dict(type="float", default=0.2),
            wait=dict(type="bool", default=True),
            max_tokens=dict(type="int", default=8, no_log=False),
            log_lines=dict(type="int", default=30),
            api_keys=dict(type="dict", default={}, no_log=True),
        ),
        supports_check_mode=True,
    )
    if module.check_mode:
        module.exit_json(changed=False, instances=[], failed_instances=[], skipped_reason="check mode")
    started = time.time()
    results = {}
    threads = [threading.Thread(target=probe, args=(inst, module.params, started, results), daemon=True)
               for inst in module.params["instances"]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ordered = [results[inst["name"]] for inst in module.params["instances"]]
    failed = [r["name"] for r in ordered if not r["ready"]]
    if failed and module.params["wait"]:
        lines = []
        for r in ordered:
            if not r["ready"]:
                lines.append("%s (port %s): %s; container %s\n    last log lines:\n    %s" % (
                    r["name"], r["port"], r["error"], r.get("state", "?"),
                    "\n    ".join((r.get("log_tail") or "").splitlines()[-12:])))
        module.fail_json(msg="%d of %d instance(s) not ready:\n  %s" % (len(failed), len(ordered), "\n  ".join(lines)),
                         instances=ordered, failed_instances=failed)
    module.exit_json(changed=False, instances=ordered, failed_instances=failed)


if __name__ == "__main__":
    main()
