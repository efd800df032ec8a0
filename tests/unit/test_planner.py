"""The planner: arithmetic generalised from the seeds, one bad spec per rule (each names host, service and
field), the seed deployments of inventories/prod, and the docker run argv per platform."""

import json
import subprocess
import sys

import pytest
from helpers import ROOT

from inferfleet.inventory import load_hosts
from inferfleet.planner import HostInput, hpu_buckets, kv_bytes_per_token, plan_hosts

PROD = ROOT / "inventories" / "prod"
CONFIGS = PROD / "model_configs"
QWEN72 = json.loads((CONFIGS / "Qwen2-72B-Instruct.json").read_text())
QWEN7 = json.loads((CONFIGS / "Qwen2.5-7B-Instruct.json").read_text())
# seed 001's example model: vicuna-13b-v1.5-16k (40 layers, 40 heads, hidden 5120, no GQA)
VICUNA = {"architectures": ["LlamaForCausalLM"], "hidden_size": 5120, "num_attention_heads": 40,
          "num_hidden_layers": 40, "max_position_embeddings": 16384, "torch_dtype": "float16",
          "vocab_size": 32000, "intermediate_size": 13824}
GAUDI = {"inferfleet_platform": "gaudi", "inferfleet_accelerator": {"model": "HL-225", "count": 8, "memory_gib": 96},
         "inferfleet_images": {"gaudi": "reg/vllm-gaudi:1"}, "inferfleet_vllm_versions": {"gaudi": "0.9.0"}}


def plan_one(services, base=GAUDI, discovered=None, **extra):
    return plan_hosts([HostInput("h1", {**base, **extra, "inferfleet_services": services}, (), discovered, ROOT)])


def llm(**spec):
    """A Qwen2-72B service on 4 cards; a key given as None is left out."""
    base = {"name": "llm", "model": "/m/qwen", "model_config": QWEN72, "port": 8000, "devices": [0, 1, 2, 3],
            "tensor_parallel_size": 4, "max_model_len": 8192, **spec}
    return {k: v for k, v in base.items() if v is not None}


def test_seed_001_formula_is_the_no_gqa_case():
    # seed 001: 40 * (2 * (40 / 1) * (5120 / 40)) * 16 / 8 / 1024 / 1024 = 0.78125 MiB per token
    assert kv_bytes_per_token(VICUNA, tp=1) == int(0.78125 * 1024 * 1024)


def test_gqa_tp_and_fp8_shrink_the_kv_cache():
    full = kv_bytes_per_token(QWEN72, tp=1)
    assert full == 2 * 80 * 8 * 128 * 2
    assert kv_bytes_per_token(QWEN72, tp=4) == full // 4
    assert kv_bytes_per_token(QWEN72, tp=4, kv_cache_dtype="fp8") == full // 8
    # TP beyond the KV heads replicates them: one head per device at least
    assert kv_bytes_per_token(QWEN72, tp=16) == 2 * 80 * 1 * 128 * 2


def test_max_concurrency_follows_the_formula():
    inst = plan_one([llm()]).hosts["h1"].instances[0]
    kv = inst["kv_cache"]
    weights_per_card = kv["weights_bytes"] / 4
    expected = int((96 * 1024**3 * 0.9 - weights_per_card) // (kv["bytes_per_token"] * 8192))
    assert kv["max_concurrency"] == expected
    assert 60 < expected < 100
    assert 140e9 < kv["weights_bytes"] < 150e9  # Qwen2-72B in BF16: about 145 GB


def issues(plan):
    """(host, service, key) of each error on a service key."""
    found = []
    for e in plan.errors:
        service, _, key = e.field.removeprefix("inferfleet_services[").partition("].")
        found.append((e.host, service, key))
    return found


@pytest.mark.parametrize(("services", "expected"), [
    ([llm(tensor_parallel_size=3, devices=[0, 1, 2])], ("h1", "llm", "tensor_parallel_size")),  # 64 % 3
    ([llm(tensor_parallel_size=16, devices=list(range(8)))], ("h1", "llm", "tensor_parallel_size")),  # > kv heads
    ([llm(devices=[0, 1, 2], tensor_parallel_size=2)], ("h1", "llm", "tensor_parallel_size")),  # 3 % 2
    ([llm(max_model_len=65536)], ("h1", "llm", "max_model_len")),
    ([llm(devices=[0], tensor_parallel_size=1)], ("h1", "llm", "gpu_memory_utilization")),  # 135 GiB on one card
    ([llm(devices=[6, 7, 8, 9])], ("h1", "llm", "devices")),  # cards 8, 9 do not exist
    ([llm(), llm(name="llm2", port=8100)], ("h1", "llm", "devices")),  # same cards, no share_devices
    ([llm(), {"name": "e", "model": "/m/e", "task": "embed", "devices": [0], "port": 8000}], ("h1", "e", "port")),
    ([llm(), llm(port=8100, devices=[4, 5, 6, 7])], ("h1", "llm", "name")),
    ([llm(tensr_parallel_size=4)], ("h1", "llm", "tensr_parallel_size")),
    ([llm(model_config=None, models=["/a", "/b"])], ("h1", "llm", "model")),
    ([{"name": "e", "models": ["/a", "/b"], "task": "generate", "port": 1, "devices": [0]}], ("h1", "e", "models")),
    ([llm(env_preset="turbo")], ("h1", "llm", "env_preset")),
    ([llm(task="classify")], ("h1", "llm", "task")),
    ([llm(max_model_len=32768, gpu_memory_utilization=0.36)], ("h1", "llm", "max_model_len")),
    ([llm(share_devices=True, gpu_memory_utilization=0.6),
      llm(name="b", port=9000, share_devices=True, gpu_memory_utilization=0.6)], ("h1", "b", "gpu_memory_utilization")),
    ([llm(image=None)], ("h1", "llm", "image")),
    ([llm(port=None)], ("h1", "llm", "port")),
    ([llm(device_count=12, devices=None)], ("h1", "llm", "device_count")),
    ([llm(model_config="model_configs/none.json")], ("h1", "llm", "model_config")),
])
def test_each_rule_names_host_service_and_field(services, expected):
    plan = plan_one(services, inferfleet_images={} if "image" in str(expected) else GAUDI["inferfleet_images"])
    assert expected in issues(plan), plan.errors
    assert not plan.ok


def test_a_held_card_is_refused_with_its_holder():
    discovered = {"count": 8, "memory_total_mib": 98304, "devices": [
        {"index": i, "module_id": (2, 6, 3, 7, 0, 4, 5, 1)[i], "held": i == 2,
         "processes": [{"pid": 4242, "container": "abc123"}] if i == 2 else []} for i in range(8)]}
    plan = plan_one([llm(devices=[0, 2, 4, 7])], discovered=discovered)  # module ids 2, 3, 0, 1: a Habana group
    assert issues(plan) == [("h1", "llm", "devices")]
    assert "card 2 is held by pid 4242 (container abc123)" in plan.errors[0].message
    # device_count takes the other 4-card module group, free of the held card; module ids come from discovery
    ok = plan_one([llm(devices=None, device_count=4)], discovered=discovered)
    inst = ok.hosts["h1"].instances[0]
    assert inst["devices"] == [1, 3, 5, 6]
    assert (inst["env"]["HABANA_VISIBLE_DEVICES"], inst["env"]["HABANA_VISIBLE_MODULES"]) == ("1,3,5,6", "4,5,6,7")


def test_a_missing_card_leaves_its_module_group_out_of_the_choice():
    # card 7 (module 1) is gone: the group {0,1,2,3} cannot be picked, {4,5,6,7} (cards 1, 3, 5, 6) still can
    discovered = {"count": 7, "memory_total_mib": 98304, "devices": [
        {"index": i, "module_id": (2, 6, 3, 7, 0, 4, 5, 1)[i], "held": False, "processes": []} for i in range(7)]}
    plan = plan_one([llm(devices=None, device_count=4)], discovered=discovered)
    assert plan.hosts["h1"].instances[0]["devices"] == [1, 3, 5, 6], plan.errors
    taken = plan_one([llm(devices=None, device_count=8, tensor_parallel_size=4)], discovered=discovered)
    assert issues(taken) == [("h1", "llm", "device_count")]


def test_explicit_cards_are_reserved_before_device_count_picks():
    plan = plan_one([{"name": "e", "model": "/m/e", "task": "embed", "port": 8100},
                     llm(devices=[0, 1, 2, 3])])
    assert plan.ok, plan.errors
    assert plan.hosts["h1"].instances[0]["devices"] == [7]  # automatic choice starts from the last card


def test_shared_card_splits_memory_as_seed_000():
    pair = [{"name": n, "model": f"/m/{n}", "task": t, "devices": [4], "share_devices": True, "port": p}
            for n, t, p in (("emb", "embed", 8771), ("rr", "rerank", 8772))]
    plan = plan_one(pair)
    assert plan.ok, plan.errors
    assert [i["memory_fraction"] for i in plan.hosts["h1"].instances] == [0.3, 0.3]  # 7 // 2 / 10
    three = plan_one([{"name": "p", "models": ["/a", "/b", "/c"], "task": "embed", "devices": [4], "port": 9000}])
    assert [i["memory_fraction"] for i in three.hosts["h1"].instances] == [0.2] * 3
    assert [i["port"] for i in three.hosts["h1"].instances] == [9000, 9001, 9002]


def test_replicas_per_device_group_as_seed_001():
    spec = {"name": "bge", "model": "/m/bge", "task": "rerank", "devices": [2, 3], "replicas": 2, "port": 8001}
    nvidia = {"inferfleet_platform": "nvidia", "inferfleet_images": {"nvidia": "vllm/vllm-openai:v0.11.0"},
              "inferfleet_accelerator": {"model": "H100", "count": 8, "memory_gib": 80}}
    instances = plan_one([spec], base=nvidia).hosts["h1"].instances
    assert [(i["devices"], i["port"]) for i in instances] == [([2], 8001), ([2], 8002), ([3], 8003), ([3], 8004)]
    assert instances[0]["env"]["NVIDIA_VISIBLE_DEVICES"] == "2"
    assert "--runtime=nvidia" in instances[0]["docker_run"]


def test_env_priority_preset_then_file_then_env(tmp_path):
    env_file = tmp_path / "env.json"
    env_file.write_text(json.dumps({"VLLM_SKIP_WARMUP": "true", "EXTRA": "file"}))
    inst = plan_one([llm(env_preset="performance", env_file=str(env_file), env={"EXTRA": "cli"})]).hosts["h1"]
    env = inst.instances[0]["env"]
    assert env["VLLM_SKIP_WARMUP"] == "true" and env["EXTRA"] == "cli" and env["PT_HPU_LAZY_MODE"] == "1"
    assert env["VLLM_PROMPT_SEQ_BUCKET_MAX"] == "8192"
    gaudi_plugin = plan_one([llm(env_preset="performance")], inferfleet_gaudi_stack="vllm-gaudi")
    env = gaudi_plugin.hosts["h1"].instances[0]["env"]
    assert env["PT_HPU_LAZY_MODE"] == "0" and "VLLM_PROMPT_QUERY_BUCKET_MAX" in env
    assert not any("PROMPT_SEQ" in k for k in env)


def test_buckets_cover_the_limits():
    env = hpu_buckets("vllm-fork", max_model_len=4096, max_num_seqs=2, max_num_batched_tokens=4096)
    assert env["VLLM_PROMPT_SEQ_BUCKET_MAX"] == "4096" and env["VLLM_DECODE_BS_BUCKET_MAX"] == "2"
    assert int(env["VLLM_DECODE_BLOCK_BUCKET_MAX"]) * 128 >= 2 * 4096


def test_warmup_cache_key_follows_what_invalidates_it():
    def cache(**spec):
        return plan_one([llm(warmup_cache=True, **spec)]).hosts["h1"].instances[0]["warmup_cache_dir"]
    assert cache() == cache()
    assert len({cache(), cache(max_model_len=4096), cache(image="reg/other:2"), cache(dtype="float16")}) == 4
    env = plan_one([llm(warmup_cache=True)]).hosts["h1"].instances[0]["env"]
    assert env["PT_HPU_RECIPE_CACHE_CONFIG"].count(",") == 2  # exactly 3 fields (hardware note)


def test_gaudi_and_ascend_container_flags():
    gaudi = plan_one([llm()]).hosts["h1"].instances[0]["docker_run"]
    for flag in ("--runtime=habana", "--cap-add=sys_nice", "--net=host", "--ipc=host"):
        assert flag in gaudi
    ascend = {"inferfleet_platform": "ascend", "inferfleet_images": {"ascend": "quay.io/ascend/vllm-ascend:v0.11.0"},
              "inferfleet_accelerator": {"model": "910B3", "count": 8, "memory_gib": 64}}
    spec = {"name": "q", "model": "/w/q", "model_config": QWEN7, "devices": [1], "port": 8080, "max_model_len": 8192}
    inst = plan_one([spec], base=ascend).hosts["h1"].instances[0]
    argv = inst["docker_run"]
    # only the planned card is mounted (vllm-ascend's docs: --device /dev/davinciN per card), and inside the
    # container it is the first one
    assert inst["env"]["ASCEND_RT_VISIBLE_DEVICES"] == "0"
    assert [d for d in inst["container"]["devices"] if "davinci" in d and "manager" not in d] == [
        "/dev/davinci1:/dev/davinci1"]
    for part in ("/dev/davinci1:/dev/davinci1", "/dev/davinci_manager:/dev/davinci_manager",
                 "/usr/local/Ascend/driver/lib64:/usr/local/Ascend/driver/lib64:ro"):
        assert part in argv
    assert argv[argv.index("--entrypoint") + 1:][:3] == ["vllm", "quay.io/ascend/vllm-ascend:v0.11.0", "serve"]


def test_prod_inventory_plans_the_seed_deployments():
    hosts, problems = load_hosts(PROD / "hosts.yml")
    assert problems == []
    plan = plan_hosts(hosts)
    assert plan.ok, [str(e) for e in plan.errors]
    gaudi = {i["name"]: i for i in plan.hosts["gaudi2-node01"].instances}
    assert gaudi["qwen2-72b"]["devices"] == [0, 1, 2, 3] and gaudi["qwen2-72b"]["tensor_parallel_size"] == 4
    assert gaudi["gte-embed"]["devices"] == gaudi["gte-rerank"]["devices"] == [4]
    assert gaudi["gte-embed"]["env"]["PT_HPU_LAZY_MODE"] == "0"
    ascend = plan.hosts["ascend-node01"].instances
    assert [(i["name"], i["devices"], i["port"]) for i in ascend] == [("qwen25-7b", [0], 8080)]
    assert len(plan.hosts["h100-node01"].instances) == 4


def test_plan_cli_json_and_exit_codes(tmp_path):
    out = subprocess.run([sys.executable, "-m", "inferfleet.cli", "plan", "-i", str(PROD / "hosts.yml"), "--json",
                          "--facts-dir", str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    document = json.loads(out.stdout)
    assert set(document) == {"format", "hash", "hosts", "errors", "warnings"}
    inst = document["hosts"]["gaudi2-node01"]["instances"][0]
    assert {"service", "name", "image", "devices", "port", "tensor_parallel_size", "memory_fraction", "env",
            "docker_run", "health_url", "kv_cache"} <= set(inst)
    assert set(inst["kv_cache"]) >= {"bytes_per_token", "weights_bytes", "max_concurrency"}
    bad = tmp_path / "bad.yml"
    bad.write_text("all:\n  hosts:\n    h1:\n      inferfleet_platform: cpu\n      inferfleet_images: {cpu: img}\n"
                   "      inferfleet_vllm_versions: {cpu: 0.32.0}\n"
                   "      inferfleet_services: [{name: x, model: /m, task: embed, port: 80, devices: [0]}]\n")
    out = subprocess.run([sys.executable, "-m", "inferfleet.cli", "plan", "-i", str(bad)], capture_output=True,
                         text=True)
    assert out.returncode == 2 and "inferfleet_services[x].devices: a cpu host has no cards" in out.stdout


def test_presets_and_serving_defaults_come_from_the_role_data_files():
    from inferfleet.planner import presets, serving_default

    env = plan_one([llm()]).hosts["h1"].instances[0]["env"]
    for key, value in presets()["gaudi/vllm-fork"]["default"].items():
        assert env[key] == value
    cpu = {"inferfleet_platform": "cpu", "inferfleet_images": {"cpu": "reg/vllm-cpu:1"},
           "inferfleet_vllm_versions": {"cpu": "0.32.0"}}
    inst = plan_one([{"name": "e", "model": "/m/e", "task": "embed", "port": 9000}], base=cpu).hosts["h1"].instances[0]
    assert inst["args"][inst["args"].index("--max-num-seqs") + 1] == str(serving_default("max_num_seqs", "cpu"))
    assert inst["startup_timeout"] == serving_default("startup_timeout", "cpu")
    assert inst["container"]["restart_policy"] == serving_default("restart_policy")


def test_a_host_without_serving_plans_nothing_and_reads_no_service():
    plan = plan_one([{"name": "broken", "model_config": "{{ undefined }}"}], inferfleet_serving=False)
    assert plan.ok, plan.errors
    assert plan.hosts["h1"].instances == []


def test_plan_inputs_change_with_settings_and_with_discovered_cards():
    from inferfleet.planner import stale_reasons

    def inputs(services, discovered=None, **extra):
        return plan_one(services, discovered=discovered, **extra).hosts["h1"].inputs

    base = inputs([llm()])
    assert base == inputs([llm()])
    assert stale_reasons(base, inputs([llm()])) == []
    changed = inputs([llm(max_model_len=4096)])
    assert [r.split(" (")[0] for r in stale_reasons(base, changed)] == [
        "the host's settings"]
    assert inputs([llm()], host_tuning_hugepages=100)["settings"] != base["settings"]
    discovered = {"count": 8, "memory_total_mib": 98304,
                  "devices": [{"index": i, "module_id": i, "held": False} for i in range(8)]}
    now = inputs([llm()], discovered)
    assert now["settings"] == base["settings"] and now["cards"] != base["cards"]
    assert "computed before discovery" in stale_reasons(base, now)[0]
    held = {**discovered, "devices": [dict(d, held=d["index"] == 7) for d in discovered["devices"]]}
    assert stale_reasons(now, inputs([llm()], held)) == [
        "the cards preflight discovered differ from those the plan was computed with"]


def test_the_plan_document_hash_follows_the_hosts_plans():
    document = plan_one([llm()]).to_dict()
    assert document["format"] == 1 and len(document["hash"]) == 64
    assert plan_one([llm()]).to_dict()["hash"] == document["hash"]
    assert plan_one([llm(max_num_seqs=8)]).to_dict()["hash"] != document["hash"]


def test_hosts_with_equal_inputs_get_equal_plans_with_their_own_address():
    services = [llm(), {"name": "e", "model": "/m/e", "task": "embed", "devices": [5], "port": 9000}]
    hosts = [HostInput(name, {**GAUDI, "ansible_host": address, "inferfleet_services": services}, ("gaudi",), None,
                       ROOT) for name, address in (("g1", "10.0.0.1"), ("g2", "10.0.0.2"))]
    together = plan_hosts(hosts)
    alone = plan_hosts(hosts[1:])
    assert together.hosts["g2"].to_dict() == alone.hosts["g2"].to_dict()
    assert [str(w) for w in together.warnings if w.host == "g2"] == [str(w) for w in alone.warnings]
    assert together.hosts["g2"].instances[0]["health_url"] == "http://10.0.0.2:8000/health"
    assert together.hosts["g1"].instances[0]["health_url"] == "http://10.0.0.1:8000/health"


SMALL = {"model_config": None, "weights_gib": 10, "task": "generate"}  # no model arithmetic in the way

# Intel Gaudi docs, "Multiple Workloads on a Single Docker": partial-card workloads of 2 or 4 cards only in the
# module-id groups {0,1} {2,3} {4,5} {6,7} and {0,1,2,3} {4,5,6,7}.
GAUDI_MODULES = {"count": 8, "memory_total_mib": 98304, "devices": [
    {"index": i, "module_id": (2, 6, 3, 7, 0, 4, 5, 1)[i], "held": False, "numa_node": 0 if i < 4 else 1}
    for i in range(8)]}


@pytest.mark.parametrize(("devices", "tp", "ok"), [
    ([0, 1], 2, True),            # module ids 0, 1 (no discovery: ids are indices)
    ([1, 2], 2, False),           # 1, 2
    ([4, 5, 6, 7], 4, True),
    ([2, 3, 4, 5], 4, False),
    ([0, 1, 2], 3, False),        # 3 cards: no such group
    (list(range(8)), 8, True),    # the whole host
    ([5], 1, True),
])
def test_gaudi_instances_run_on_the_card_groups_habana_supports(devices, tp, ok):
    same_ids = {"count": 8, "memory_total_mib": 98304,
                "devices": [{"index": i, "module_id": i, "held": False} for i in range(8)]}
    plan = plan_one([llm(devices=devices, tensor_parallel_size=tp, **SMALL)], discovered=same_ids)
    assert plan.ok is ok, plan.errors
    if not ok:
        assert "Habana runs a workload on 1 card, on all of them, or on 2 cards with module ids" in str(plan.errors[0])
        # before preflight read the module ids, the rule cannot be judged: a warning, and preflight decides
        offline = plan_one([llm(devices=devices, tensor_parallel_size=tp, **SMALL)])
        assert offline.ok and any("module ids" in w.message for w in offline.warnings)


def test_gaudi_groups_are_judged_by_module_id_and_picked_from_the_last_group():
    # indices 0 and 2 hold module ids 2 and 3: a group; indices 0 and 1 (2 and 6) are not
    assert plan_one([llm(devices=[0, 2], tensor_parallel_size=2, **SMALL)],
                    discovered=GAUDI_MODULES).ok
    refused = plan_one([llm(devices=[0, 1], tensor_parallel_size=2, **SMALL)],
                       discovered=GAUDI_MODULES)
    assert "(module ids [2, 6])" in refused.errors[0].message and "use cards [4, 7] or [0, 2]" in \
        refused.errors[0].fix
    picked = plan_one([llm(devices=None, tensor_parallel_size=2, device_count=2, **SMALL)],
                      discovered=GAUDI_MODULES).hosts["h1"].instances[0]
    # the last group, {6, 7}: cards 1 and 3; the runtime mounts by index, the framework inside picks by module id
    assert (picked["env"]["HABANA_VISIBLE_DEVICES"], picked["env"]["HABANA_VISIBLE_MODULES"]) == ("1,3", "6,7")


def test_several_cards_come_from_one_numa_node_when_it_has_enough():
    nvidia = {"inferfleet_platform": "nvidia", "inferfleet_images": {"nvidia": "vllm/vllm-openai:v0.11.0"},
              "inferfleet_accelerator": {"model": "H100", "count": 8, "memory_gib": 80}}
    discovered = {"count": 8, "memory_total_mib": 81559, "devices": [
        {"index": i, "held": i in (5, 6), "numa_node": 0 if i < 4 else 1} for i in range(8)]}
    spec = {"name": "e", "model": "/m/e", "task": "embed", "device_count": 3, "port": 9000}
    inst = plan_one([spec], base=nvidia, discovered=discovered).hosts["h1"].instances
    # node 1 has only cards 4 and 7 free: the three come from node 0, the last ones first
    assert [i["devices"] for i in inst] == [[1], [2], [3]]  # one instance per card (TP 1)


EMBED = {"name": "e", "model": "/m/gte-modernbert-base", "task": "embed", "devices": [5], "port": 9000}


@pytest.mark.parametrize(("version", "embed", "rerank"), [
    # docs.vllm.ai/en/v0.9.1/models/pooling_models.html: --task embed, and score for sentence pairs
    ("0.9.0", ["--task", "embed"], ["--task", "score"]),
    ("0.10.0", ["--task", "embed"], ["--task", "score"]),
    # vllm-project/vllm pull request 21470, documented from v0.10.1.1: --runner pooling
    ("0.10.1", ["--runner", "pooling"], ["--runner", "pooling"]),
    ("0.32.0", ["--runner", "pooling"], ["--runner", "pooling"]),
])
def test_pooling_flags_follow_the_images_vllm_version(version, embed, rerank):
    services = [dict(EMBED, vllm_version=version),
                dict(EMBED, name="r", task="rerank", port=9001, vllm_version=version, share_devices=True)]
    services[0]["share_devices"] = True
    args = {i["name"]: i["args"] for i in plan_one(services).hosts["h1"].instances}
    assert args["e"][-2:] == embed and args["r"][-2:] == rerank


def test_the_vllm_version_comes_from_the_service_the_host_or_the_tag_and_is_needed_for_pooling():
    def version_args(**spec):
        plan = plan_one([dict(EMBED, **spec)], inferfleet_vllm_versions={})
        return plan.errors or plan.hosts["h1"].instances[0]["args"][-2:]
    assert version_args(image="vllm/vllm-openai:v0.9.2") == ["--task", "embed"]
    assert version_args(image="quay.io/ascend/vllm-ascend:v0.11.0") == ["--runner", "pooling"]
    (unknown,) = version_args()
    assert unknown.field == "inferfleet_services[e].vllm_version" and "reg/vllm-gaudi:1" in unknown.message


@pytest.mark.parametrize(("version", "flag", "words"), [
    ("0.9.0", "--runner=pooling", "--runner exists from vLLM 0.10.1 on"),
    ("0.13.0", "--task", "--task was removed in vLLM 0.13.0"),  # vLLM v0.13.0 release notes
])
def test_extra_args_the_version_lacks_are_refused(version, flag, words):
    plan = plan_one([dict(EMBED, vllm_version=version, extra_args=[flag, "embed"])])
    assert [e.field for e in plan.errors] == ["inferfleet_services[e].extra_args"]
    assert words in plan.errors[0].message and f"vLLM {version}" in plan.errors[0].message


def test_quantization_maps_to_vllms_flags_and_to_inc_on_gaudi():
    # docs.vllm.ai/en/v0.10.0/features/quantization/inc.html: QUANT_CONFIG=... --quantization inc
    # --kv-cache-dtype fp8_inc
    quant = "/models/qwen/inc/quant.json"
    inst = plan_one([llm(quantization="fp8", quant_config=quant)]).hosts["h1"].instances[0]
    args = inst["args"]
    assert args[args.index("--quantization") + 1] == "inc" and args[args.index("--kv-cache-dtype") + 1] == "fp8_inc"
    assert "--dtype" not in args or args[args.index("--dtype") + 1] != "fp8"
    assert inst["env"]["QUANT_CONFIG"] == quant and f"{quant}:{quant}:ro" in inst["container"]["volumes"]
    assert [e.field for e in plan_one([llm(quantization="fp8")]).errors] == ["inferfleet_services[llm].quant_config"]
    # seed 004's start script: -d awq|gptq pass --quantization awq_hpu|gptq_hpu, each with --dtype bfloat16
    awq = plan_one([llm(quantization="awq", dtype=None)]).hosts["h1"].instances[0]["args"]
    assert awq[awq.index("--quantization") + 1] == "awq_hpu" and awq[awq.index("--dtype") + 1] == "bfloat16"
    nvidia = {"inferfleet_platform": "nvidia", "inferfleet_images": {"nvidia": "vllm/vllm-openai:v0.11.0"},
              "inferfleet_accelerator": {"model": "H100", "count": 8, "memory_gib": 80}}
    for method in ("fp8", "awq", "gptq"):
        args = plan_one([llm(quantization=method)], base=nvidia).hosts["h1"].instances[0]["args"]
        assert args[args.index("--quantization") + 1] == method
    # dtype takes vLLM's --dtype values only: fp8 is a quantization, not a dtype
    assert [e.field for e in plan_one([llm(dtype="fp8")]).errors] == ["inferfleet_services[llm].dtype"]


ASCEND = {"inferfleet_platform": "ascend", "inferfleet_images": {"ascend": "quay.io/ascend/vllm-ascend:v0.11.0"},
          "inferfleet_accelerator": {"model": "910B3", "count": 8, "memory_gib": 64}}
QWEN7_SPEC = {"name": "q", "model": "/w/q", "model_config": QWEN7, "port": 8080, "max_model_len": 8192}


def test_a_multi_card_ascend_service_mounts_its_cards_and_the_hccl_files():
    inst = plan_one([dict(QWEN7_SPEC, devices=[2, 3], tensor_parallel_size=2)], base=ASCEND).hosts["h1"].instances[0]
    container = inst["container"]
    assert [d for d in container["devices"] if d.startswith("/dev/davinci") and d[12].isdigit()] == [
        "/dev/davinci2:/dev/davinci2", "/dev/davinci3:/dev/davinci3"]
    assert inst["env"]["ASCEND_RT_VISIBLE_DEVICES"] == "0,1"
    # seed 002's multi-card container: -v /usr/bin/hccn_tool -v /etc/hccn.conf
    assert {"/usr/bin/hccn_tool:/usr/bin/hccn_tool:ro", "/etc/hccn.conf:/etc/hccn.conf:ro"} <= set(
        container["volumes"])
    single = plan_one([dict(QWEN7_SPEC, devices=[2])], base=ASCEND).hosts["h1"].instances[0]["container"]
    assert not any("hccn" in v for v in single["volumes"])


def test_the_ascend_docker_runtime_mode_names_the_cards_in_ascend_visible_devices():
    inst = plan_one([dict(QWEN7_SPEC, devices=[5])], base=ASCEND,
                    accel_runtime_ascend_mode="runtime").hosts["h1"].instances[0]
    assert inst["container"]["runtime"] == "ascend" and inst["container"]["devices"] == []
    # the runtime's base.list mounts neither of these (Ascend/mind-cluster, the installer's base.list)
    assert {"/usr/local/Ascend/driver/version.info:/usr/local/Ascend/driver/version.info:ro",
            "/etc/ascend_install.info:/etc/ascend_install.info:ro"} <= set(inst["container"]["volumes"])
    assert inst["env"]["ASCEND_VISIBLE_DEVICES"] == "5" and inst["env"]["ASCEND_RT_VISIBLE_DEVICES"] == "0"
    assert "--runtime=ascend" in inst["docker_run"]


def test_gaudi_big_model_flags_and_skipping_warmup_on_a_warm_cache():
    inst = plan_one([llm(unlimited_memlock=True, warmup_cache=True, skip_warmup_when_cached=True)]).hosts[
        "h1"].instances[0]
    container, argv = inst["container"], inst["docker_run"]
    # seed 004: --cap-add SYS_PTRACE --cap-add=CAP_IPC_LOCK --ulimit memlock=-1:-1
    assert {"sys_nice", "sys_ptrace", "ipc_lock"} == set(container["capabilities"])
    assert argv[argv.index("--ulimit") + 1] == "memlock=-1:-1"
    assert container["entrypoint"][:2] == ["/bin/sh", "-c"] and inst["warmup_cache_dir"] in container["entrypoint"][2]
    assert "VLLM_SKIP_WARMUP=true" in container["entrypoint"][2] and container["command"][0] == "/m/qwen"
    image_at = argv.index("reg/vllm-gaudi:1")
    assert argv[image_at - 2:image_at] == ["--entrypoint", "/bin/sh"] and argv[image_at + 1] == "-c"
    assert [e.field for e in plan_one([llm(skip_warmup_when_cached=True)]).errors] == [
        "inferfleet_services[llm].skip_warmup_when_cached"]


def test_buckets_follow_seed_004s_start_script():
    # start_gaudi_vllm_server.sh -b 128 -i 800,1024 -o 400,512 -t 8192 (vllm-fork aice/v1.21.0, scripts/utils.sh
    # set_bucketing)
    env = hpu_buckets("vllm-fork", 8192, 128, 8192, input_len=[800, 1024], output_len=[400, 512])
    assert [env[f"VLLM_{k}_BUCKET_{e}"] for k in ("PROMPT_BS", "PROMPT_SEQ", "DECODE_BS", "DECODE_BLOCK")
            for e in ("MIN", "STEP", "MAX")] == ["1", "1", "10", "896", "128", "1152", "1", "8", "128",
                                                 "128", "128", "1664"]
    # -b 24 -i 4,38912 -o 4,2048 -t 40960 -r 8,24000 (set_partial_warmup): only the hot buckets are warmed
    hot = hpu_buckets("vllm-fork", 40960, 24, 40960, input_len=[4, 38912], output_len=[4, 2048],
                      hot_buckets=[8, 24000])
    assert (hot["VLLM_SKIP_LAZY_WARMUP"], hot["VLLM_PROMPT_SEQ_BUCKET_MAX"], hot["VLLM_DECODE_BS_BUCKET_MAX"],
            hot["VLLM_DECODE_BLOCK_BUCKET_MAX"]) == ("true", "24000", "8", "1664")


def test_seed_000s_preset_is_literal_for_embedding_and_small_gte_models_run_eagerly():
    gte = {"architectures": ["ModernBertModel"], "hidden_size": 768, "num_attention_heads": 12,
           "num_hidden_layers": 22, "intermediate_size": 1152, "vocab_size": 50368, "max_position_embeddings": 8192}
    spec = dict(EMBED, model_config=gte, env_preset="performance", max_model_len=4096)
    env = plan_one([spec]).hosts["h1"].instances[0]["env"]
    literal = {"VLLM_PROMPT_BS_BUCKET_MAX": "8", "VLLM_PROMPT_SEQ_BUCKET_MIN": "1",
               "VLLM_PROMPT_SEQ_BUCKET_STEP": "512",
               "VLLM_PROMPT_SEQ_BUCKET_MAX": "4096", "VLLM_DECODE_BS_BUCKET_MAX": "2",
               "VLLM_DECODE_BLOCK_BUCKET_MIN": "1", "VLLM_DECODE_BLOCK_BUCKET_MAX": "2"}
    assert {k: env[k] for k in literal} == literal
    assert env["PT_HPU_LAZY_MODE"] == "0"  # gte under 1B parameters (seed 000)
    assert plan_one([dict(spec, env={"PT_HPU_LAZY_MODE": 1})]).hosts["h1"].instances[0]["env"][
        "PT_HPU_LAZY_MODE"] == "1"  # the service's own env wins
    # embedding prompts are bucketed to 8192 tokens at most
    too_long = plan_one([dict(spec, env={"VLLM_PROMPT_SEQ_BUCKET_MAX": 16384})])
    assert [e.field for e in too_long.errors] == ["inferfleet_services[e].env"]
    assert "Gaudi buckets embed prompts up to 8192" in too_long.errors[0].message


@pytest.mark.parametrize(("model", "distribution", "image"), [
    # vllm-ascend docs/source/installation.md: <version> A2 Ubuntu, -a3, -310p, each also -openeuler
    ("910B3", "Ubuntu", "quay.io/ascend/vllm-ascend:v0.11.0"),
    ("910B3", "openEuler", "quay.io/ascend/vllm-ascend:v0.11.0-openeuler"),
    ("Ascend910", "Ubuntu", "quay.io/ascend/vllm-ascend:v0.11.0-a3"),
    ("Ascend910", "openEuler", "quay.io/ascend/vllm-ascend:v0.11.0-a3-openeuler"),
    ("310P3", "Ubuntu", "quay.io/ascend/vllm-ascend:v0.11.0-310p"),
])
def test_a_vllm_ascend_version_becomes_the_image_of_the_hosts_cards(model, distribution, image):
    discovered = {"count": 8, "model": model, "memory_total_mib": 65536, "distribution": distribution,
                  "devices": [{"index": i, "held": False} for i in range(8)]}
    inst = plan_one([dict(QWEN7_SPEC, devices=[0])], base=ASCEND, discovered=discovered).hosts["h1"].instances[0]
    assert inst["image"] == image
    named = plan_one([dict(QWEN7_SPEC, devices=[0], image="quay.io/ascend/vllm-ascend:v0.11.0-a3")], base=ASCEND,
                     discovered=discovered).hosts["h1"].instances[0]
    assert named["image"] == "quay.io/ascend/vllm-ascend:v0.11.0-a3"  # a variant the user named stays
