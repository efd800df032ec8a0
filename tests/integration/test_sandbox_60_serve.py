"""The serve stage on the sandbox: real vLLM servers (the CPU build) behind every SIMULATED card, from site.yml
to status, change, repair, failure, rolling restart and down."""

import json
import math
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest
import yaml
from helpers import ROOT
from test_sandbox_00_preflight import ssh

from inferfleet import cli, run_playbook, up
from inferfleet.runner import known_stages

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


def post(url, body, timeout=60, headers=None, key=None):
    sent = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    request = urllib.request.Request(url, json.dumps(body).encode(), sent)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        if headers is not None:  # by lower-case name: HAProxy sends header names in lower case
            headers.update((name.lower(), value) for name, value in response.headers.items())
        return json.loads(response.read())


MINILM = "/models/all-MiniLM-L6-v2"
# every stage but bench: its regression gate judges speed, which the restarts and probes of these tests vary
# (test_sandbox_70_bench runs it on a settled fleet)
PIPELINE = [stage for stage in known_stages() if stage != "bench"]
KEYS = yaml.safe_load((HOST_VARS / "gaudi2-1.yml").read_text())["inferfleet_api_keys"]


def embed_through_front_door(sandbox):
    """One embedding request through the replicas' front door, by model path (seed 002's way): the instance
    that answered, or the error."""
    headers = {}
    try:
        data = post(f"http://{address(sandbox, 'ascend910b-1')}:8100/v1/embeddings",
                    {"model": MINILM, "input": "front door"}, timeout=30, headers=headers)
    except OSError as err:
        return f"error: {err}"
    if len(data["data"][0]["embedding"]) != 384 or headers.get("x-inferfleet-model") != MINILM:
        return f"error: unexpected answer {headers} {str(data)[:200]}"
    return headers.get("x-inferfleet-instance", "error: no X-Inferfleet-Instance header")


class Prober:
    """Requests through the front door, one after the other, until stopped."""

    def __init__(self, sandbox):
        self.answers, self._stop = [], threading.Event()
        self._thread = threading.Thread(target=self._run, args=(sandbox,), daemon=True)

    def _run(self, sandbox):
        while not self._stop.is_set():
            self.answers.append(embed_through_front_door(sandbox))
            time.sleep(0.05)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    @property
    def failures(self):
        return [a for a in self.answers if a.startswith("error")]


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
    result = up(sandbox.inventory, stages=PIPELINE)
    assert result.ok, [(f.host, f.task, f.msg[:2000]) for f in result.failures]
    return sandbox


def cosine(a, b):
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_site_brings_every_service_to_ready_and_each_answers(served):
    for host, names in INSTANCES.items():
        assert set(started_at(served, host)) == names
    gaudi, h100 = address(served, "gaudi2-1"), address(served, "h100-1")
    vectors = [d["embedding"] for d in post(f"http://{gaudi}:8770/v1/embeddings", {
        "model": "all-MiniLM-L6-v2",
        "input": ["A man is playing a guitar.", "Someone plays an acoustic guitar.",
                  "The stock market fell sharply on Monday."]}, key=KEYS["minilm-embed"])["data"]]
    assert len(vectors[0]) == 384
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.3
    documents = ["Cats sleep in the sun.", "Stocks fell.", "The train leaves at noon.", "Dogs bark."]
    scores = post(f"http://{gaudi}:8770/rerank", {"model": "tiny-reranker", "query": "cats?",
                                                   "documents": documents}, key=KEYS["tiny-rerank"])["results"]
    assert sorted(r["index"] for r in scores) == [0, 1, 2, 3]
    completion = post(f"http://{h100}:8000/v1/completions", {"model": "tiny-llama", "prompt": "Hello",
                                                              "max_tokens": 12, "ignore_eos": True})
    assert completion["usage"]["completion_tokens"] == 12
    ascend = address(served, "ascend910b-1")
    assert [health(f"http://{ascend}:{port}/health") for port in (8101, 8102)] == [200, 200]


def test_one_port_serves_the_embedding_and_the_rerank_model_as_seed_000(served):
    gaudi, headers = address(served, "gaudi2-1"), {}
    vectors = post(f"http://{gaudi}:8770/v1/embeddings", {"model": "all-MiniLM-L6-v2", "input": ["a", "b"]},
                   headers=headers, key=KEYS["minilm-embed"])["data"]
    assert len(vectors) == 2 and headers["x-inferfleet-instance"] == "gaudi2-1/minilm-embed"
    scores = post(f"http://{gaudi}:8770/rerank", {"model": "/models/tiny-reranker", "query": "cats?",
                                                   "documents": ["Cats sleep.", "Stocks fell."]}, headers=headers,
                  key=KEYS["tiny-rerank"])
    assert len(scores["results"]) == 2 and headers["x-inferfleet-instance"] == "gaudi2-1/tiny-rerank"
    assert headers["x-inferfleet-model"] == "/models/tiny-reranker"
    with urllib.request.urlopen(f"http://{gaudi}:8770/front-door/config", timeout=5) as response:
        effective = {i["instance"]: i for i in json.loads(response.read())["instances"]}
    assert {k: effective["tiny-rerank"][k] for k in ("max_num_seqs", "max_model_len", "tensor_parallel_size")} == {
        "max_num_seqs": 8, "max_model_len": 256, "tensor_parallel_size": 1}


def test_the_api_key_is_required_and_cannot_be_bypassed(served):
    gaudi = address(served, "gaudi2-1")
    for path, body in (("/v1/embeddings", {"model": "all-MiniLM-L6-v2", "input": "x"}),
                       ("/rerank", {"model": "tiny-reranker", "query": "q", "documents": ["d"]})):
        for key in (None, "wrong-key", KEYS["tiny-rerank"] if path == "/v1/embeddings" else KEYS["minilm-embed"]):
            with pytest.raises(urllib.error.HTTPError) as refused:
                post(f"http://{gaudi}:8770{path}", body, key=key)
            assert refused.value.code == 401, (path, key)
    assert health(f"http://{gaudi}:8770/health") == 200  # health checks need no key
    # the instances listen on the host's loopback only: from another machine their ports are closed
    for port in (8771, 8772):
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(f"http://{gaudi}:{port}/v1/models", timeout=5)


def test_the_keys_appear_in_no_log_plan_or_cached_fact(served, tmp_path):
    saved_plan(served, tmp_path / "plan.json")
    places = [tmp_path / "plan.json", ROOT / ".cache" / "facts", ROOT / ".cache" / "runs",
              ROOT / ".cache" / "results"]
    for key in KEYS.values():
        found = subprocess.run(["grep", "-rl", key, *map(str, places)], capture_output=True, text=True)
        assert found.stdout == "", found.stdout
    # the container holds it, as the server needs it
    env = ssh(served, "gaudi2-1", "docker inspect -f '{{json .Config.Env}}' inferfleet-minilm-embed").stdout
    assert f"VLLM_API_KEY={KEYS['minilm-embed']}" in env


def test_no_container_leaves_an_anonymous_volume_on_its_host(served):
    # an image that declares volumes (a build's mounts kept by `docker commit`) leaves two behind per container
    for host in INSTANCES:
        assert ssh(served, host, "docker volume ls -q").stdout.strip() == "", host


def test_the_scrape_configuration_loads_in_prometheus_and_every_target_answers(served, tmp_path):
    path = ROOT / ".cache" / "results" / "prometheus.yml"
    check = subprocess.run(["promtool", "check", "config", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    jobs = {job["job_name"]: job for job in yaml.safe_load(path.read_text())["scrape_configs"]}
    targets = [(group["labels"].get("__metrics_path__", job["metrics_path"]), target) for job in jobs.values()
               for group in job["static_configs"] for target in group["targets"]]
    assert len(targets) == sum(map(len, INSTANCES.values())) + 3  # and the three front doors
    for metrics_path, target in targets:
        with urllib.request.urlopen(f"http://{target}{metrics_path}", timeout=10) as response:
            assert response.status == 200 and b"# TYPE" in response.read(), target


CARD_NODES = {"gaudi": "/dev/accel/accel{}", "ascend": "/dev/davinci{}", "nvidia": "/dev/nvidia{}"}


def test_the_front_door_spreads_requests_over_the_healthy_replicas_and_names_them(served):
    replicas = {f"ascend910b-1/minilm-replicas-{i}" for i in (0, 1)}
    assert {embed_through_front_door(served) for _ in range(12)} == replicas
    # the instances answer to the model path too, directly
    ascend = address(served, "ascend910b-1")
    assert len(post(f"http://{ascend}:8101/v1/embeddings", {"model": MINILM, "input": "x"})["data"]) == 1
    # a replica stopped (docker stop: its restart policy leaves it down) is passed over: no request through the
    # front door fails
    try:
        with Prober(served) as prober:
            time.sleep(1)
            assert ssh(served, "ascend910b-1", "docker stop inferfleet-minilm-replicas-1").returncode == 0
            time.sleep(4)
        assert len(prober.answers) > 10 and prober.failures == [], prober.failures
        assert prober.answers[-1] == "ascend910b-1/minilm-replicas-0"
    finally:
        result = up(served.inventory, stages=["serve"], limit="ascend910b-1")
    assert result.ok, result.failures
    assert {embed_through_front_door(served) for _ in range(12)} == replicas


def test_the_gateway_fleet_front_door_reaches_the_replicas_through_their_hosts_front_door(served):
    headers = {}
    data = post(f"http://{address(served, 'cpu-1')}:9100/v1/embeddings", {"model": MINILM, "input": "fleet"},
                headers=headers)
    assert len(data["data"][0]["embedding"]) == 384
    # the host's front door named the instance; the fleet door kept it
    assert headers["x-inferfleet-instance"] in {f"ascend910b-1/minilm-replicas-{i}" for i in (0, 1)}


def test_a_front_door_serves_https_with_the_users_certificate(served, tmp_path):
    import ssl

    ascend = address(served, "ascend910b-1")
    made = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                           f"/CN={ascend}", "-addext", f"subjectAltName=IP:{ascend}", "-keyout",
                           str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem")], capture_output=True)
    assert made.returncode == 0, made.stderr
    (tmp_path / "door.pem").write_text((tmp_path / "cert.pem").read_text() + (tmp_path / "key.pem").read_text())
    before = started_at(served, "ascend910b-1")
    tls = {"inferfleet_services": services_of("ascend910b-1", **{"minilm-replicas": {
        "front_door": {"port": 8100, "certificate": str(tmp_path / "door.pem")}}})}
    try:
        result = up(served.inventory, stages=["serve"], limit="ascend910b-1", extravars=tls)
        assert result.ok, result.failures
        context = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
        request = urllib.request.Request(f"https://{ascend}:8100/v1/embeddings", json.dumps(
            {"model": MINILM, "input": "over TLS"}).encode(), {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, context=context, timeout=30) as response:
            assert len(json.loads(response.read())["data"][0]["embedding"]) == 384
        assert started_at(served, "ascend910b-1") == before  # the instances were left alone
        key = ssh(served, "ascend910b-1", "stat -c %a /etc/inferfleet/front-door/8100/config/tls.pem").stdout
        assert key.strip() == "600"
    finally:
        assert up(served.inventory, stages=["serve"], limit="ascend910b-1").ok
    assert embed_through_front_door(served).startswith("ascend910b-1/")


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
    again = up(served.inventory, stages=PIPELINE)
    assert again.ok, again.failures
    assert {host: recap.changed for host, recap in again.hosts.items()} == dict.fromkeys(INSTANCES, 0)
    assert {host: started_at(served, host) for host in INSTANCES} == before


def test_front_door_files_changed_by_hand_are_written_back_and_the_door_reloaded(served):
    # A converged run reads the door's files once and skips the writes; what differs must still be written.
    door = "/etc/inferfleet/front-door/8770"
    broken = (f"rm {door}/config/effective.json && echo '# edited' >> {door}/config/haproxy.cfg && "
              f"chmod 0755 {door}/run && echo 'Bearer wrong' > {door}/config/keys/minilm-embed")
    assert ssh(served, "gaudi2-1", broken).returncode == 0
    result = up(served.inventory, stages=["serve"], limit="gaudi2-1")
    assert result.ok, result.failures
    writes = {"Create the directories of the front doors", "Write the API keys the front doors check",
              "Write what the instances run with, behind each front door", "Write the configuration of the front doors"}
    assert {r.task.split(" : ")[-1] for r in result.results if r.status == "changed"} == {
        *writes, "Reload the front doors whose files changed"}
    state = ssh(served, "gaudi2-1", f"stat -c %a {door}/run; tail -1 {door}/config/haproxy.cfg; "
                                    f"cat {door}/config/keys/minilm-embed").stdout.splitlines()
    assert state == ["700", state[1], f"Bearer {KEYS['minilm-embed']}"] and "edited" not in state[1]
    embed_through_front_door(served)
    again = up(served.inventory, stages=["serve"], limit="gaudi2-1")
    assert again.ok and again.hosts["gaudi2-1"].changed == 0
    assert {r.status for r in again.results if r.task.split(" : ")[-1] in writes} == {"skipped"}


def test_unplanned_inferfleet_containers_are_removed_and_others_kept(served):
    image = served.inventory.read_text().split("inferfleet_sandbox_vllm_image: ")[1].split()[0]
    for name, label in (("ghost", "--label inferfleet.service=ghost"),
                        ("ghost-door", "--label inferfleet.front-door=x"), ("bystander", "")):
        assert ssh(served, "h100-1", f"docker run -d --init --name {name} {label} --entrypoint sleep {image} 600"
                   ).returncode == 0
    try:
        result = up(served.inventory, stages=["serve"], limit="h100-1")
        assert result.ok, result.failures
        left = set(ssh(served, "h100-1", "docker ps -a --format '{{.Names}}'").stdout.split())
        assert "bystander" in left and not {"ghost", "ghost-door"} & left and INSTANCES["h100-1"] <= left
    finally:
        ssh(served, "h100-1", "docker rm -f ghost ghost-door bystander")


def saved_plan(sandbox, path):
    """`inferfleet plan --save` after preflight: the plan of the discovered cards (from the fact cache)."""
    assert cli.main(["plan", "-i", str(sandbox.inventory), "--save", str(path)]) == 0
    return json.loads(path.read_text())


def test_the_run_applies_the_saved_plan_byte_for_byte(served, tmp_path):
    document = saved_plan(served, tmp_path / "plan.json")
    # preflight loads the saved plan and serve applies it (the other stages' re-runs are the test above)
    result = up(served.inventory, stages=["preflight", "serve"],
                extravars={"inferfleet_saved_plan": str(tmp_path / "plan.json")})
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
    ascend = address(served, "ascend910b-1")
    assert rows[0]["metrics"] == f"http://{ascend}:8101/metrics" and rows[0]["effective"]["max_num_seqs"] == 8
    (door,) = result.facts("ascend910b-1", "inferfleet_front_doors")
    assert (door["port"], door["services"], door["out_of_rotation"]) == (8100, ["minilm-replicas"], [])
    assert [s["instance"] for s in door["in_rotation"]] == ["minilm-replicas-0", "minilm-replicas-1"]
    assert door["metrics"] == f"http://{ascend}:8100/front-door/metrics"
    (door,) = result.facts("gaudi2-1", "inferfleet_front_doors")
    assert [s["instance"] for s in door["in_rotation"]] == ["minilm-embed", "tiny-rerank"]
    assert result.facts("h100-1", "inferfleet_front_doors") == []
    (door,) = result.facts("cpu-1", "inferfleet_front_doors")
    assert (door["port"], [s["instance"] for s in door["in_rotation"]]) == (9100, ["ascend910b-1"])


def test_changing_one_service_recreates_only_its_instances(served):
    before = started_at(served, "gaudi2-1")
    changed = {"inferfleet_services": services_of("gaudi2-1", **{"tiny-rerank": {"max_model_len": 128,
                                                                                 "max_num_seqs": 4}})}
    try:
        result = up(served.inventory, stages=["serve"], limit="gaudi2-1", extravars=changed)
        assert result.ok, result.failures
        after = started_at(served, "gaudi2-1")
        assert after["inferfleet-tiny-rerank"] != before["inferfleet-tiny-rerank"]
        assert after["inferfleet-minilm-embed"] == before["inferfleet-minilm-embed"]
        # the front door reports what the new container runs with
        gaudi = address(served, "gaudi2-1")
        with urllib.request.urlopen(f"http://{gaudi}:8770/front-door/config", timeout=5) as response:
            effective = {i["instance"]: i for i in json.loads(response.read())["instances"]}
        assert (effective["tiny-rerank"]["max_num_seqs"], effective["tiny-rerank"]["max_model_len"]) == (4, 128)
        assert effective["minilm-embed"]["max_num_seqs"] == 8
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
        on_host = ssh(served, "gaudi2-1", "curl -s -o /dev/null -w '%{http_code} ' 127.0.0.1:8771/health "
                                          "127.0.0.1:8772/health")
        assert on_host.stdout.split() == ["200", "200"]
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
        with Prober(served) as through_front_door:
            result = run_playbook(served.inventory, "playbooks/restart.yml", limit="ascend910b-1")
    finally:
        stop.set()
        prober.join()
    assert result.ok, result.failures
    after = started_at(served, "ascend910b-1")
    assert all(after[name] != before[name] for name in before)
    assert len(rounds) > 50 and min(rounds) >= 1, rounds
    assert 1 in rounds  # one replica really was down at some point
    # each replica left the front door before it stopped: not one request through it failed
    assert len(through_front_door.answers) > 50 and through_front_door.failures == [], through_front_door.failures
    assert set(through_front_door.answers) == {f"ascend910b-1/minilm-replicas-{i}" for i in (0, 1)}
