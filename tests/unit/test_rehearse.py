"""`inferfleet rehearse` without a fleet: which hosts, what stands in for what, how the plans compare, the report,
the faults, and the refusals it shares with `up`. The rehearsal itself: tests/integration/test_sandbox_90_rehearse.py.
"""

import copy
import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import xmlschema
import yaml
from helpers import FIXTURES, ROOT

from inferfleet import cli
from inferfleet.inventory import load_hosts, plan_inventory
from inferfleet.planner import plan_hosts
from inferfleet.rehearse import (
    UNREHEARSED_ADDRESS,
    Case,
    Fault,
    Refused,
    cases,
    connection_vars,
    junit_xml,
    plan_differences,
    rehearse,
    sample_hosts,
    stage_of_plays,
    substitutions,
)
from inferfleet.runner import TaskResult, known_stages
from inferfleet.sandbox import profiles
from inferfleet.sandbox.vllm.rehearsal_vllm import rewrite

PROD = ROOT / "inventories" / "prod"
SCHEMA = xmlschema.XMLSchema(str(FIXTURES / "junit" / "junit-10.xsd"))


@pytest.fixture(scope="module")
def prod_hosts():
    hosts, problems = load_hosts(PROD)
    assert not problems
    return hosts


def test_a_sample_keeps_serving_hosts_of_each_group_and_the_hosts_behind_a_fleet_door(prod_hosts):
    assert sample_hosts(prod_hosts, None) == [h.name for h in prod_hosts]
    # gaudi2-node02 declares no service: gaudi2-node01, which does, stands for the gaudi group
    assert sorted(sample_hosts(prod_hosts, 1)) == ["ascend-node01", "gateway01", "gaudi2-node01", "h100-node01"]
    assert sorted(sample_hosts(prod_hosts, 2)) == sorted(h.name for h in prod_hosts)
    # the gateway's fleet door serves bge-rerank: a sample that keeps the gateway keeps a host serving it
    gateway = [h for h in prod_hosts if h.name in ("gateway01", "h100-node01")]
    gateway[1].groups = ("cpu",)  # both in one group, sample 1: the door's server comes along
    try:
        assert sorted(sample_hosts(gateway, 1)) == ["gateway01", "h100-node01"]
    finally:
        gateway[1].groups = ("nvidia",)
    with pytest.raises(ValueError, match="at least 1"):
        sample_hosts(prod_hosts, 0)


def test_each_host_is_shaped_like_its_declaration():
    assert profiles.derive("nvidia", "NVIDIA H100 80GB HBM3", 8, 80) == profiles.PROFILES["h100"]
    assert profiles.derive("ascend", "910B3", 8, 64) == profiles.PROFILES["ascend910b"]
    gaudi3 = profiles.derive("gaudi", "HL-325L", 4, 128)
    assert gaudi3.model == "HL-325L" and len(gaudi3.devices) == 4
    assert {d.memory_mib for d in gaudi3.devices} == {131072}
    assert "accel/accel3" in gaudi3.device_nodes and "accel/accel4" not in gaudi3.device_nodes
    assert "accel/accel_controlD4" not in gaudi3.device_nodes
    assert profiles.derive("ascend", None, 2, None).device_nodes == (
        "davinci0", "davinci1", "davinci_manager", "devmm_svm", "hisi_hdc")
    with pytest.raises(ValueError, match="1 to 8 gaudi cards"):
        profiles.derive("gaudi", "HL-225", 16, 96)


def _substitute(hosts, tmp_path):
    return substitutions(hosts, "0.32.0", "10.9.0.1:5030/inferfleet/vllm-cpu-rehearsal:0.32.0", "10.9.0.1:5030",
                         "http://127.0.0.1:5032", tmp_path / "models", tmp_path / "state")


def test_every_substitution_is_a_row_and_the_models_keep_their_production_ids(prod_hosts, tmp_path):
    extra, rows, publish = _substitute(prod_hosts, tmp_path)
    table = {row.what: row for row in rows}
    # each production model is answered by the local hub under its own id, by a stand-in of its task
    assert publish == {
        "Qwen/Qwen2-72B-Instruct": tmp_path / "models" / "tiny-qwen2",
        "Qwen/Qwen2.5-7B-Instruct": tmp_path / "models" / "tiny-qwen2",
        # 768 wide, as gte-modernbert-base: the smoke request checks the width the plan expects
        "Alibaba-NLP/gte-modernbert-base": tmp_path / "models" / "tiny-embed-768",
        "Alibaba-NLP/gte-reranker-modernbert-base": tmp_path / "models" / "tiny-reranker",
        "BAAI/bge-reranker-large": tmp_path / "models" / "tiny-reranker"}
    assert extra["inferfleet_models"]["/models/Qwen2-72B-Instruct"] == {
        "source": "modelscope://Qwen/Qwen2-72B-Instruct",
        "allow_patterns": ["*.safetensors", "*.json", "*.txt", "*.model", "*.jinja"]}
    row = table["model /models/Qwen2-72B-Instruct"]
    assert row.production == "modelscope://Qwen/Qwen2-72B-Instruct"
    # the same architecture where the sandbox has one, else the task's stand-in, and the row says which
    assert row.rehearsal == "tiny-qwen2 (generate; same architecture)"
    assert row.hosts == "gaudi2-node01/qwen2-72b"
    assert table["model /models/gte-modernbert-base"].rehearsal == (
        "tiny-embed-768 (embed; production ModernBertModel, stand-in BertModel; 768 wide)")
    assert table["model /opt/share/plm/bge-reranker-large"].rehearsal == (
        "tiny-reranker (rerank; production XLMRobertaForSequenceClassification, stand-in "
        "BertForSequenceClassification)")
    # images, versions, builds and the front door image, each declared
    assert table["image (gaudi)"].production == "registry.example.com/inferfleet/vllm-fork-gaudi:1.21.3-aice-v1.21.0"
    assert set(extra["inferfleet_images"].values()) == {"10.9.0.1:5030/inferfleet/vllm-cpu-rehearsal:0.32.0"}
    assert table["vLLM version (gaudi)"].production == "0.9.0" and "vLLM version (cpu)" not in table
    assert extra["images_builds"] == [] and "image builds" in table
    assert table["front door image"].production == "docker.io/library/haproxy:3.0"
    # nothing the rehearsal keeps lands in production's caches
    assert extra["inferfleet_model_cache_dir"] == str(tmp_path / "state" / "model-cache")
    assert extra["inferfleet_results_dir"] == str(tmp_path / "state" / "results")
    assert extra["vllm_bench_num_prompts"] == 20 and "bench sizes" in table
    assert "num_prompts 3000" in table["bench sizes"].production


def test_no_rehearsed_task_can_reach_a_production_address(prod_hosts, tmp_path):
    every = [h.name for h in prod_hosts]
    extra = connection_vars({"gaudi2-node01": "10.213.0.10"}, tmp_path / "key", every)
    hosts, problems = load_hosts(PROD, extra_vars=extra)
    assert not problems
    where = {h.name: h.vars["ansible_host"] for h in hosts}
    # production's addresses (10.20.x.y) are nowhere: a rehearsed host is at its sandbox host, the others at an
    # address that is never routed
    assert where == {name: "10.213.0.10" if name == "gaudi2-node01" else UNREHEARSED_ADDRESS for name in every}
    assert UNREHEARSED_ADDRESS.startswith("192.0.2.")  # TEST-NET-1


def test_identical_plans_differ_only_by_declared_substitutions(prod_hosts):
    production = plan_hosts(prod_hosts).to_dict()["hosts"]
    rehearsal = copy.deepcopy(production)
    replace = {"10.20.0.11": "10.213.0.10",
               "registry.example.com/inferfleet/vllm-fork-gaudi:1.21.3-aice-v1.21.0": "sandbox/vllm:1"}
    for inst in rehearsal["gaudi2-node01"]["instances"]:
        inst["health_url"] = inst["health_url"].replace("10.20.0.11", "10.213.0.10")
        inst["image"] = "sandbox/vllm:1"
        inst["config_hash"] = "changed"  # follows from the rest: not compared
    assert plan_differences(production, rehearsal, replace, set()) == ([], [])
    # the image's vLLM version was substituted on gaudi: its flags may differ, and only those
    rehearsal["gaudi2-node01"]["instances"][1]["args"] = ["--runner", "pooling"]
    declared, undeclared = plan_differences(production, rehearsal, replace, {"gaudi"})
    assert len(declared) == 1 and declared[0].startswith("gaudi2-node01.instances[1].args:") and undeclared == []
    # anything else is undeclared: the plan is not production's
    rehearsal["gaudi2-node01"]["instances"][0]["devices"] = [4, 5, 6, 7]
    rehearsal["h100-node01"]["instances"][0]["port"] = 9999
    _, undeclared = plan_differences(production, rehearsal, replace, {"gaudi"})
    assert undeclared == ["gaudi2-node01.instances[0].devices: [0, 1, 2, 3] -> [4, 5, 6, 7]",
                          "h100-node01.instances[0].port: 8001 -> 9999"]


def _results():
    stage = {v: k for k, v in stage_of_plays(ROOT, known_stages(ROOT)).items()}
    return [
        TaskResult("a", "Validate", "ok", play=stage["preflight"]),
        TaskResult("b", "Validate", "ok", play=stage["preflight"]),
        TaskResult("a", "Pull", "changed", play=stage["images"]),
        TaskResult("b", "Pull", "failed", msg="pull refused", play=stage["images"]),
        TaskResult("a", "Wait until every instance serves", "ok", play=stage["serve"], data={"instances": [
            {"name": "llm", "ready": True, "smoke": {"tokens": 3}, "seconds": 12.5},
            {"name": "emb", "ready": False, "smoke": {}, "error": "health 503 after 300 s"}]}),
    ]


def test_each_host_and_stage_is_a_case_and_each_smoke_request_too():
    stages = ["preflight", "images", "serve"]
    found = cases(_results(), ["a", "b"], stages, stage_of_plays(ROOT, known_stages(ROOT)))
    by = {(c.classname, c.name): c for c in found}
    assert len(found) == 2 * 3 + 2
    assert by[("a", "preflight")].failure is None and by[("a", "serve")].failure is None
    assert by[("b", "images")].failure == "Pull: pull refused"
    assert by[("b", "serve")].skipped.startswith("not reached")
    assert by[("a", "smoke llm")].failure is None and by[("a", "smoke llm")].seconds == 12.5
    assert by[("a", "smoke emb")].failure == "health 503 after 300 s"


def test_the_junit_report_validates_against_the_xunit_schema_and_counts_its_cases():
    found = [Case("plan", "production plan", "plan")] + cases(
        _results(), ["a", "b"], ["preflight", "images", "serve"], stage_of_plays(ROOT, known_stages(ROOT)))
    document = junit_xml(found)
    SCHEMA.validate(document)
    root = ET.fromstring(document)
    assert (root.get("tests"), root.get("failures")) == ("9", "2")
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert set(suites) == {"plan", "a", "b"}
    assert (suites["b"].get("tests"), suites["b"].get("failures"), suites["b"].get("skipped")) == ("3", "1", "1")
    assert len(list(suites["a"].iter("testcase"))) == 5  # 3 stages + 2 smoke requests
    failure = next(suites["b"].iter("failure"))
    assert failure.get("message") == "Pull: pull refused"
    assert not SCHEMA.is_valid(document.replace('name="production plan" ', ""))  # the schema does judge


def test_faults_name_a_rehearsed_host_and_a_known_kind():
    hosts = ["gaudi2-node01", "h100-node01"]
    assert Fault.parse("h100-node01:slow_link:1:0.2", hosts) == Fault("h100-node01", "slow_link", "1:0.2")
    assert Fault.parse("gaudi2-node01:host_lost", hosts) == Fault("gaudi2-node01", "host_lost", None)
    with pytest.raises(ValueError, match="not a rehearsed host"):
        Fault.parse("gaudi2-node02:card_held:0", hosts)
    with pytest.raises(ValueError, match="KIND one of card_held"):
        Fault.parse("h100-node01:melt", hosts)
    with pytest.raises(ValueError, match="card_missing needs a value"):
        Fault.parse("h100-node01:card_missing", hosts)


def test_the_stand_in_vllm_keeps_the_plans_flags_it_can_take(tmp_path):
    model = tmp_path / "tiny"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"max_position_embeddings": 2048}))
    args = ["serve", str(model), "--port", "30001", "--tensor-parallel-size", "4", "--max-model-len", "8192",
            "--max-num-batched-tokens", "8192", "--dtype", "bfloat16", "--max-num-seqs", "64"]
    out, notes = rewrite(args)
    assert out == ["serve", str(model), "--port", "30001", "--tensor-parallel-size", "1", "--max-model-len", "2048",
                   "--max-num-batched-tokens", "4096", "--dtype", "float32", "--max-num-seqs", "64",
                   "--enforce-eager"]
    assert notes[0] == "--tensor-parallel-size: 4 -> 1"
    assert "--max-model-len: 8192 -> 2048 (the stand-in model's context)" in notes
    # what fits passes unchanged; other subcommands are not touched
    fits = ["serve", str(model), "--max-model-len", "512", "--dtype", "float32", "--enforce-eager"]
    assert rewrite(fits) == (fits, [])
    assert rewrite(["bench", "serve", "--tensor-parallel-size", "4"]) == (
        ["bench", "serve", "--tensor-parallel-size", "4"], [])
    # a sentence-transformers model's max_seq_length (and the tokenizer's limit) bound the context, as in vLLM
    (model / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 256}))
    (model / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 1000000000000000019884624838656}))
    assert rewrite(["serve", str(model), "--max-model-len", "4096"])[0][3] == "256"


BROKEN = {
    # the 72B model on one 96 GiB card
    "does not fit its card": ("gaudi2-node01", lambda s: s[0].update(devices=[0], tensor_parallel_size=1)),
    # Qwen2.5-7B has 28 attention heads
    "TP does not divide the heads": ("ascend-node01", lambda s: s[0].update(devices=[0, 1, 2],
                                                                           tensor_parallel_size=3)),
    "two services on one card": ("h100-node01", lambda s: s.append(
        {"name": "second", "model": "/opt/share/plm/bge-reranker-large",
         "model_config": "model_configs/bge-reranker-large.json", "task": "rerank", "devices": [2], "port": 8100})),
}


@pytest.mark.parametrize("change", sorted(BROKEN))
def test_a_broken_production_change_fails_the_rehearsal_as_up_fails(change, tmp_path, capsys):
    inventory = tmp_path / "prod"
    shutil.copytree(PROD, inventory)
    host, mutate = BROKEN[change]
    path = inventory / "host_vars" / f"{host}.yml"
    data = yaml.safe_load(path.read_text())
    mutate(data["inferfleet_services"])
    path.write_text(yaml.safe_dump(data))
    errors = [f"ERROR   {e}" for e in plan_inventory(inventory).errors]
    assert errors and all(host in e for e in errors), errors
    assert cli.main(["up", "-i", str(inventory)]) == 2
    up_lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ERROR")]
    assert cli.main(["rehearse", "-i", str(inventory), "--sample", "1"]) == 2
    rehearse_err = capsys.readouterr().err
    assert [line for line in rehearse_err.splitlines() if line.startswith("ERROR")] == up_lines == errors
    assert "rehearsal not started" in rehearse_err
    with pytest.raises(Refused):
        rehearse(inventory, state_root=tmp_path / "never-made")
    assert not (tmp_path / "never-made").exists()  # refused before any sandbox


def test_the_ci_jobs_run_the_rehearsal_on_inventory_changes():
    github = yaml.safe_load((ROOT / "docs" / "ci" / "github-actions.yml").read_text())
    job = next(iter(github["jobs"].values()))
    assert github[True]["pull_request"]["paths"] == ["inventories/prod/**"]  # YAML 1.1 reads `on` as True
    run = "\n".join(step.get("run", "") for step in job["steps"])
    assert "inferfleet rehearse -i inventories/prod" in run and "--junit" in run
    gitlab = yaml.safe_load((ROOT / "docs" / "ci" / "gitlab-ci.yml").read_text())
    rehearse_job = gitlab["rehearse"]
    assert rehearse_job["rules"][0]["changes"] == ["inventories/prod/**/*"]
    assert rehearse_job["artifacts"]["reports"]["junit"].endswith(".xml")
    assert any("inferfleet rehearse -i inventories/prod" in line for line in rehearse_job["script"])


def test_a_rehearsal_names_its_model_paths_as_production_does(prod_hosts, tmp_path):
    extra, _, _ = _substitute(prod_hosts, tmp_path)
    production = {path for h in prod_hosts for s in h.vars.get("inferfleet_services", []) for path in [s["model"]]}
    assert production <= set(extra["inferfleet_models"])
    assert Path(extra["inferfleet_model_cache_dir"]).parent == tmp_path / "state"


def test_the_os_row_says_what_the_fact_cache_knows(prod_hosts, tmp_path):
    from inferfleet.rehearse import os_facts

    (tmp_path / "gaudi2-node01").write_text(json.dumps({"ansible_distribution": "Ubuntu",
                                                        "ansible_distribution_version": "22.04"}))
    (tmp_path / "h100-node01").write_text("{not json")
    facts = os_facts(tmp_path, ["gaudi2-node01", "h100-node01", "gateway01"])
    assert facts == {"gaudi2-node01": "Ubuntu 22.04"}
    _, rows, _ = substitutions(prod_hosts, "0.32.0", "img", "r:1", "http://h", tmp_path, tmp_path, facts)
    row = next(r for r in rows if r.what == "OS")
    assert (row.production, row.rehearsal) == ("Ubuntu 22.04 (fact cache); not in the fact cache",
                                               "Debian 12 (the sandbox host image)")
