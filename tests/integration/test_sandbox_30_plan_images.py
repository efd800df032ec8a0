"""Plan on discovered cards, refusal of a held card, and the images stage through the LAN mirror, on the sandbox
fleet (cards SIMULATED; registry, mirror and Docker engines real)."""

import json
import subprocess
import sys

import pytest
from test_sandbox_00_preflight import EXPECTED, ssh

from inferfleet import up
from inferfleet.sandbox import registry

pytestmark = pytest.mark.integration
LLM_CONFIG = {"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "num_attention_heads": 4,
              "num_key_value_heads": 2, "num_hidden_layers": 2, "max_position_embeddings": 2048,
              "vocab_size": 1000, "intermediate_size": 128}


@pytest.fixture(scope="module")
def tiny_image(sandbox, tmp_path_factory):
    """A small image (2 MB of random bytes) pushed to the sandbox's registry, named as hosts see it."""
    root = tmp_path_factory.mktemp("image")
    (root / "payload").write_bytes(__import__("os").urandom(2 * 1024 * 1024))
    local = f"127.0.0.1:{sandbox.registry_port}/inferfleet/tiny:1"
    subprocess.run(f"tar -C {root} -c payload | docker import - {local}", shell=True, check=True,
                   capture_output=True)
    subprocess.run(["docker", "push", "-q", local], check=True, capture_output=True)
    inventory = sandbox.inventory.read_text()
    registry_address = next(line.split(": ")[1] for line in inventory.splitlines()
                            if line.strip().startswith("inferfleet_sandbox_registry:"))
    return f"{registry_address}/inferfleet/tiny:1"


def services(image):
    # the tiny image alone: no fleet front door on the gateway (its HAProxy image is the demo's vLLM image)
    return {"inferfleet_registry_mirror": "{{ inferfleet_sandbox_mirror }}", "inferfleet_fleet_front_doors": [],
            "inferfleet_images": dict.fromkeys(("gaudi", "ascend", "nvidia", "cpu"), image),
            "inferfleet_services": [{"name": "llm", "model": "/models/tiny", "model_config": LLM_CONFIG,
                                     "port": 8200, "max_model_len": 1024}]}


def test_plan_uses_the_discovered_module_ids(sandbox, tiny_image):
    extra = services(tiny_image)
    # cards 0 and 2 of the gaudi2 profile hold module ids 2 and 3: a 2-card group Habana supports
    extra["inferfleet_services"][0]["devices"] = [0, 2]
    extra["inferfleet_services"][0]["tensor_parallel_size"] = 2
    result = up(sandbox.inventory, stages=["preflight"], limit="gaudi2-1", extravars=extra)
    assert result.ok, result.failures
    plan = json.loads((result.run_dir / "plan.json").read_text())["hosts"]["gaudi2-1"]
    assert plan["accelerator"]["discovered"] is True and plan["accelerator"]["simulated"] is True
    # the gaudi2 profile's module ids for cards 0 and 1 (hl-smi -Q index,module_id)
    env = plan["instances"][0]["env"]
    assert (env["HABANA_VISIBLE_DEVICES"], env["HABANA_VISIBLE_MODULES"]) == ("0,2", "2,3")


def test_a_held_card_makes_preflight_refuse_the_service(sandbox, tiny_image):
    extra = services(tiny_image)
    extra["inferfleet_services"][0]["devices"] = [3]
    sandbox.set_fault("gaudi2-1", "hold", 3)
    try:
        result = up(sandbox.inventory, stages=["preflight"], limit="gaudi2-1", extravars=extra)
    finally:
        sandbox.set_fault("gaudi2-1", "release", 3)
    assert not result.ok
    messages = [f.msg for f in result.failures if f.host == "gaudi2-1"]
    assert any("inferfleet_services[llm].devices: card 3 is held by pid" in m for m in messages), messages


def test_images_come_through_the_mirror_once_and_a_rerun_transfers_nothing(sandbox, tiny_image):
    assert up(sandbox.inventory, stages=["docker"]).ok
    upstream_log = sandbox.state / "registry" / "registry.log"
    _, offset = registry.bytes_served(upstream_log)
    first = up(sandbox.inventory, stages=["images"], extravars=services(tiny_image))
    assert first.ok, first.failures
    served, offset = registry.bytes_served(upstream_log, offset)
    size = 2 * 1024 * 1024
    # four hosts pulled; upstream sent the layer once (the mirror kept it), plus manifests
    assert size <= served <= 1.1 * size, served
    for host in EXPECTED:
        images = ssh(sandbox, host, "docker image inspect --format '{{json .RepoTags}}' " + tiny_image)
        assert tiny_image in json.loads(images.stdout)

    again = up(sandbox.inventory, stages=["images"], extravars=services(tiny_image))
    assert again.ok and again.changed == 0
    served_again, _ = registry.bytes_served(upstream_log, offset)
    assert served_again < 10_000, served_again


def test_plan_cli_reads_the_discovered_cards(sandbox, tiny_image, tmp_path):
    extra = tmp_path / "services.json"
    extra.write_text(json.dumps(services(tiny_image)))
    # the CLI plans from the inventory alone; give it the services through an inventory file of its own
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(sandbox.inventory.read_text())
    group_vars = tmp_path / "group_vars" / "all"
    group_vars.mkdir(parents=True)
    (group_vars / "services.json").write_text(extra.read_text())
    out = subprocess.run([sys.executable, "-m", "inferfleet.cli", "plan", "-i", str(inventory), "--json"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    plan = json.loads(out.stdout)
    assert plan["hosts"]["gaudi2-1"]["accelerator"]["discovered"] is True
    assert plan["hosts"]["cpu-1"]["instances"][0]["docker_run"][:2] == ["docker", "run"]
