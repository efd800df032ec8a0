"""`inferfleet rehearse -i inventories/prod`: the prod example's own plan, run by site.yml on a sandbox shaped like
it (one host per group, SIMULATED cards), then each fault kind on the host it names.

The slowest module: a second fleet of four hosts serving eight vLLM instances. The shared sandbox's hosts are
stopped meanwhile (this machine has two cores) and started again after.
"""

import json
import os
import xml.etree.ElementTree as ET

import pytest
import xmlschema
from helpers import FIXTURES, ROOT

from inferfleet import cli
from inferfleet.rehearse import rehearse
from inferfleet.sandbox.fleet import LABEL

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROD = ROOT / "inventories" / "prod"
HOSTS = ["gaudi2-node01", "ascend-node01", "h100-node01", "gateway01"]
STAGES = ["preflight", "tune", "docker", "images", "fabric", "models", "serve", "bench"]
INSTANCES = {"gaudi2-node01": ["qwen2-72b", "gte-embed", "gte-rerank"], "ascend-node01": ["qwen25-7b"],
             "h100-node01": ["bge-rerank-0", "bge-rerank-1", "bge-rerank-2", "bge-rerank-3"], "gateway01": []}


@pytest.fixture(scope="module")
def quiet_sandbox(sandbox):
    """The shared sandbox's hosts stopped while the rehearsal's fleet runs, started again after."""
    hosts = sandbox.client.containers.list(filters={"label": f"{LABEL}={sandbox.name}"})
    for host in hosts:
        host.stop(timeout=30)
    yield
    for host in hosts:
        host.start()


@pytest.fixture(scope="module")
def rehearsal(quiet_sandbox, tmp_path_factory):
    root = tmp_path_factory.mktemp("rehearsal")
    port = int(os.environ.get("INFERFLEET_TEST_REGISTRY_PORT", "5055")) + 10
    options = {"name": "ifrehearse", "state_root": root / "state", "registry_port": port, "log": print}
    junit = root / "rehearsal.xml"
    code = cli.main(["rehearse", "-i", str(PROD), "--sample", "1", "--keep", "--junit", str(junit),
                     "--name", options["name"], "--state-dir", str(options["state_root"]),
                     "--registry-port", str(port)])
    yield code, junit, options
    from inferfleet.sandbox.fleet import Sandbox

    Sandbox(name=options["name"], state_root=options["state_root"], registry_port=port).down()


def test_the_prod_example_rehearses_every_sampled_host_and_service(rehearsal, capsys):
    code, junit, options = rehearsal
    state = options["state_root"] / options["name"] / "rehearsal"
    report = json.loads((state / "report.json").read_text())
    failed = [c for c in report["cases"] if c["failure"] or c["skipped"]]
    assert code == 0 and report["ok"], failed
    assert report["hosts"] == HOSTS and report["simulated"] is True
    # one case per host and stage, one per instance's smoke request, and the plan's
    root = ET.fromstring(junit.read_text())
    xmlschema.XMLSchema(str(FIXTURES / "junit" / "junit-10.xsd")).validate(junit.read_text())
    smoke = sum(len(v) for v in INSTANCES.values())
    assert int(root.get("tests")) == 1 + len(HOSTS) * len(STAGES) + smoke
    assert root.get("failures") == "0"
    names = {(c.get("classname"), c.get("name")) for c in root.iter("testcase")}
    for host, instances in INSTANCES.items():
        assert {(host, stage) for stage in STAGES} <= names
        assert {(host, f"smoke {inst}") for inst in instances} <= names
    # the substitution table, with every production model and image in it
    table = {row["what"]: row for row in json.loads((state / "substitutions.json").read_text())}
    for path in ("/models/Qwen2-72B-Instruct", "/models/gte-modernbert-base",
                 "/models/gte-reranker-modernbert-base", "/opt/share/plm/bge-reranker-large",
                 "/workspace/models/Qwen2.5-7B-Instruct"):
        assert f"model {path}" in table
    assert table["image (gaudi)"]["production"].startswith("registry.example.com/inferfleet/vllm-fork-gaudi")
    # the plan applied is production's, apart from the declared substitutions
    assert report["plan"]["undeclared"] == []
    assert any(".args" in line for line in report["plan"]["declared"])  # gaudi's vLLM 0.9.0 pooling flags
    applied = json.loads((state / "runs").glob("*/plan.json").__next__().read_text())["hosts"]
    assert applied["gaudi2-node01"]["instances"][0]["tensor_parallel_size"] == 4
    assert applied["gaudi2-node01"]["accelerator"]["simulated"] is True
    # nothing of the rehearsal reached production's caches
    assert not (ROOT / ".cache" / "facts" / "gaudi2-node01").exists()


def _fault_run(options, stages, fault):
    return rehearse(PROD, stages=stages, sample=1, faults=[fault], keep=True, name=options["name"],
                    state_root=options["state_root"], registry_port=options["registry_port"], log=print)


@pytest.mark.parametrize("stages, fault, stage, words", [
    (["preflight"], "h100-node01:card_held:2", "preflight", "card 2 is held by"),
    (["preflight"], "gaudi2-node01:card_missing:7", "preflight", "inferfleet_accelerator.count is 8 but 7 card(s)"),
    (["preflight", "fabric"], "gaudi2-node01:slow_link:3:0.3", "fabric", "is not above the threshold"),
    (["preflight", "fabric"], "gaudi2-node01:port_down:0:3", "fabric", "port 3 is DOWN"),
    (["docker"], "ascend-node01:daemon_json_invalid", "docker", "daemon.json is not valid JSON"),
    (["preflight", "tune"], "h100-node01:host_lost:tune", "tune", "UNREACHABLE"),
])
def test_each_fault_fails_its_host_at_its_stage(rehearsal, stages, fault, stage, words):
    _, _, options = rehearsal
    host = fault.split(":")[0]
    report = _fault_run(options, stages, fault)
    assert not report.ok
    failed = [c for c in report.cases if c.failure is not None]
    assert {(c.classname, c.name) for c in failed} == {(host, stage)}, [(c.classname, c.name, c.failure)
                                                                       for c in failed]
    assert words in failed[0].failure, failed[0].failure
