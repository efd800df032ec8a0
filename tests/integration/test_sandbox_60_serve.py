"""The serve stage on the sandbox: real vLLM servers (the CPU build) behind every SIMULATED card, from site.yml
to status, change, repair, failure, rolling restart and down."""

import json
import math
import threading
import time
import urllib.request

import pytest
import yaml
from helpers import ROOT
from test_sandbox_00_preflight import ssh

from inferfleet import cli, run_playbook, up

pytestmark = pytest.mark.integration
HOST_VARS = ROOT / "inventories" / "sandbox" / "host_vars"
INSTANCES = {  # host -> inferfleet containers the sandbox inventory plans
    "gaudi2-1": {"inferfleet-minilm-embed", "inferfleet-tiny-rerank"},
    "ascend910b-1": {"inferfleet-minilm-replicas-0", "inferfleet-minilm-replicas-1"},
    "h100-1": {"inferfleet-tiny-llama"},
    "cpu-1": set(),
}


def address(sandbox, host):
    inventory = yaml.safe_load(sandbox.inventory.read_text())["all"]["children"]
    return next(g["hosts"][host]["ansible_host"] for g in inventory.values() if host in g["hosts"])


def post(url, body, timeout=60):
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def health(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except OSError:
        return 0


def started_at(sandbox, host):
    """Container name -> StartedAt of the inferfleet containers on a host."""
    out = ssh(sandbox, host, "docker ps -aq --filter label=inferfleet.service | xargs -r docker inspect "
                             "--format '{{.Name}} {{.State.StartedAt}} {{.State.Status}}'").stdout
    return {line.split()[0].lstrip("/"): line.split()[1] for line in out.splitlines() if line.strip()}


def services_of(host, **changes):
    """The host's services from the sandbox inventory, with changes per service name."""
    services = yaml.safe_load((HOST_VARS / f"{host}.yml").read_text())["inferfleet_services"]
    return [dict(s, **changes.get(s["name"], {})) for s in services]


@pytest.fixture(scope="module")
def served(sandbox):
    result = up(sandbox.inventory)
    assert result.ok, [(f.host, f.task, f.msg[:2000]) for f in result.failures]
    return sandbox


def cosine(a, b):
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_site_brings_every_service_to_ready_and_each_answers(served):
    for host, names in INSTANCES.items():
        assert set(started_at(served, host)) == names
    gaudi, h100 = address(served, "gaudi2-1"), address(served, "h100-1")
    vectors = [d["embedding"] for d in post(f"http://{gaudi}:8771/v1/embeddings", {
        "model": "all-MiniLM-L6-v2",
        "input": ["A man is playing a guitar.", "Someone plays an acoustic guitar.",
                  "The stock market fell sharply on Monday."]})["data"]]
    assert len(vectors[0]) == 384
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.3
    documents = ["Cats sleep in the sun.", "Stocks fell.", "The train leaves at noon.", "Dogs bark."]
    scores = post(f"http://{gaudi}:8772/rerank", {"model": "tiny-reranker", "query": "cats?",
                                                   "documents": documents})["results"]
    assert sorted(r["index"] for r in scores) == [0, 1, 2, 3]
    completion = post(f"http://{h100}:8000/v1/completions", {"model": "tiny-llama", "prompt": "Hello",
                                                              "max_tokens": 12, "ignore_eos": True})
    assert completion["usage"]["completion_tokens"] == 12
    ascend = address(served, "ascend910b-1")
    assert [health(f"http://{ascend}:{port}/health") for port in (8101, 8102)] == [200, 200]


CARD_NODES = {"gaudi": "/dev/accel/accel{}", "ascend": "/dev/davinci{}", "nvidia": "/dev/nvidia{}"}


def test_each_serving_container_sees_exactly_its_planned_cards(served, tmp_path):
    """The sandbox's runtimes mount what the vendors' runtimes would (habana: HABANA_VISIBLE_DEVICES, nvidia:
    NVIDIA_VISIBLE_DEVICES; Ascend's cards come as --device): nothing more, nothing less."""
    document = saved_plan(served, tmp_path / "plan.json")
    checked = 0
    for host, plan in document["hosts"].items():
        node = CARD_NODES.get(plan["platform"])
        for inst in plan["instances"] if node else []:
            # the container's /dev, read from the host through its main process (no exec into it)
            root = f"/proc/$(docker inspect -f '{{{{.State.Pid}}}}' {inst['container']['name']})/root"
            seen = ssh(served, host, f"cd {root} && ls -1d {node.format('[0-9]*').lstrip('/')}")
            assert set(seen.stdout.split()) == {node.format(d).lstrip("/") for d in inst["devices"]}, (
                host, inst["name"], seen.stdout, seen.stderr)
            checked += 1
    assert checked == 5


def test_the_sandbox_runtimes_refuse_what_the_vendors_refuse(served):
    image = f"{served.inventory.read_text().split('inferfleet_sandbox_vllm_image: ')[1].split()[0]}"
    # nvidia-container-cli: device error: 9: unknown device (the h100 profile has cards 0-7)
    refused = ssh(served, "h100-1", f"docker run --rm --runtime=nvidia -e NVIDIA_VISIBLE_DEVICES=9 "
                                    f"--entrypoint true {image}")
    assert refused.returncode != 0 and "unknown device" in refused.stderr, refused.stderr


def test_second_run_changes_nothing_and_restarts_nothing(served):
    before = {host: started_at(served, host) for host in INSTANCES}
    again = up(served.inventory)
    assert again.ok, again.failures
    assert {host: recap.changed for host, recap in again.hosts.items()} == dict.fromkeys(INSTANCES, 0)
    assert {host: started_at(served, host) for host in INSTANCES} == before


def saved_plan(sandbox, path):
    """`inferfleet plan --save` after preflight: the plan of the discovered cards (from the fact cache)."""
    assert cli.main(["plan", "-i", str(sandbox.inventory), "--save", str(path)]) == 0
    return json.loads(path.read_text())


def test_the_run_applies_the_saved_plan_byte_for_byte(served, tmp_path):
    document = saved_plan(served, tmp_path / "plan.json")
    result = up(served.inventory, extravars={"inferfleet_saved_plan": str(tmp_path / "plan.json")})
    assert result.ok, result.failures
    assert {host: recap.changed for host, recap in result.hosts.items()} == dict.fromkeys(INSTANCES, 0)
    assert json.loads((result.run_dir / "plan.json").read_text()) == document
    for host, plan in document["hosts"].items():
        for inst in plan["instances"]:
            want = inst["container"]
            (have,) = json.loads(ssh(served, host, f"docker inspect {want['name']}").stdout)
            config, host_config = have["Config"], have["HostConfig"]
            env = dict(item.split("=", 1) for item in config["Env"])
            assert (config["Image"], config["Entrypoint"], config["Cmd"]) == (
                want["image"], want["entrypoint"], want["command"])
            assert {k: env.get(k) for k in want["env"]} == want["env"]
            assert {k: config["Labels"].get(k) for k in want["labels"]} == want["labels"]
            assert host_config["Runtime"] == (want["runtime"] or "runc")
            assert host_config["NetworkMode"] == want["network_mode"]
            assert host_config["RestartPolicy"]["Name"] == want["restart_policy"]
            assert sorted(c.lower().removeprefix("cap_") for c in host_config["CapAdd"] or []) == sorted(
                want["capabilities"])
            assert [f"{d['PathOnHost']}:{d['PathInContainer']}" for d in host_config["Devices"] or []] == \
                want["devices"]


def test_a_saved_plan_is_refused_once_its_inputs_changed(served, tmp_path):
    saved_plan(served, tmp_path / "plan.json")
    result = up(served.inventory, stages=["preflight"], extravars={
        "inferfleet_saved_plan": str(tmp_path / "plan.json"), "host_tuning_hugepages": 14000})
    assert not result.ok
    messages = "\n".join(f.msg for f in result.failures)
    assert "inferfleet_saved_plan" in messages and "is stale: the host's settings" in messages


def test_status_reports_every_instance(served):
    result = run_playbook(served.inventory, "playbooks/status.yml")
    assert result.ok, result.failures
    rows = result.facts("ascend910b-1", "inferfleet_status")
    assert [(r["instance"], r["port"], r["state"], r["health"]) for r in rows] == [
        ("minilm-replicas-0", 8101, "running", "ready"), ("minilm-replicas-1", 8102, "running", "ready")]


def test_changing_one_service_recreates_only_its_instances(served):
    before = started_at(served, "gaudi2-1")
    changed = {"inferfleet_services": services_of("gaudi2-1", **{"tiny-rerank": {"max_model_len": 128}})}
    try:
        result = up(served.inventory, stages=["serve"], limit="gaudi2-1", extravars=changed)
        assert result.ok, result.failures
        after = started_at(served, "gaudi2-1")
        assert after["inferfleet-tiny-rerank"] != before["inferfleet-tiny-rerank"]
        assert after["inferfleet-minilm-embed"] == before["inferfleet-minilm-embed"]
    finally:
        assert up(served.inventory, stages=["serve"], limit="gaudi2-1").ok


def test_a_container_killed_by_hand_is_back_after_a_rerun(served):
    assert ssh(served, "h100-1", "docker kill inferfleet-tiny-llama").returncode == 0
    result = up(served.inventory, stages=["serve"], limit="h100-1")
    assert result.ok, result.failures
    assert result.hosts["h100-1"].changed >= 1
    assert health(f"http://{address(served, 'h100-1')}:8000/health") == 200


def test_a_broken_model_fails_with_its_log_while_the_others_stay_up(served):
    broken = services_of("gaudi2-1") + [{"name": "broken", "model": "/models/does-not-exist", "task": "embed",
                                         "devices": [1], "port": 8779, "startup_timeout": 240,
                                         "extra_args": ["--enforce-eager"]}]
    before = started_at(served, "gaudi2-1")
    try:
        result = up(served.inventory, stages=["serve"], limit="gaudi2-1",
                    extravars={"inferfleet_services": broken})
        assert not result.ok
        message = "\n".join(f.msg for f in result.failures)
        assert "1 of 3 instance(s) not ready" in message and "broken (port 8779)" in message
        assert "last log lines" in message and "does-not-exist" in message
        gaudi = address(served, "gaudi2-1")
        assert [health(f"http://{gaudi}:{port}/health") for port in (8771, 8772)] == [200, 200]
        after = started_at(served, "gaudi2-1")
        assert {k: after[k] for k in before} == before
    finally:
        assert up(served.inventory, stages=["serve"], limit="gaudi2-1").ok
    assert "inferfleet-broken" not in started_at(served, "gaudi2-1")


def test_rolling_restart_keeps_a_replica_serving(served):
    ascend = address(served, "ascend910b-1")
    before = started_at(served, "ascend910b-1")
    rounds, stop = [], threading.Event()

    def probe():
        while not stop.is_set():
            rounds.append(sum(health(f"http://{ascend}:{port}/health") == 200 for port in (8101, 8102)))
            time.sleep(0.2)

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    try:
        result = run_playbook(served.inventory, "playbooks/restart.yml", limit="ascend910b-1")
    finally:
        stop.set()
        prober.join()
    assert result.ok, result.failures
    after = started_at(served, "ascend910b-1")
    assert all(after[name] != before[name] for name in before)
    assert len(rounds) > 50 and min(rounds) >= 1, rounds
    assert 1 in rounds  # one replica really was down at some point


def test_down_removes_inferfleet_containers_only(served):
    image = f"{served.inventory.read_text().split('inferfleet_sandbox_vllm_image: ')[1].split()[0]}"
    assert ssh(served, "gaudi2-1", f"docker run -d --name bystander --entrypoint sleep {image} 600").returncode == 0
    try:
        result = run_playbook(served.inventory, "playbooks/stop.yml")
        assert result.ok, result.failures
        for host in INSTANCES:
            assert started_at(served, host) == {}
        assert ssh(served, "gaudi2-1", "docker inspect -f '{{.State.Status}}' bystander").stdout.strip() == "running"
    finally:
        ssh(served, "gaudi2-1", "docker rm -f bystander")
