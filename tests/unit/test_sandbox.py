import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import ROOT

from inferfleet.inventory import load_hosts, plan_inventory
from inferfleet.sandbox import image, profiles
from inferfleet.sandbox.fleet import HostStatus, Sandbox, write_inventory
from inferfleet.sandbox.sim import emulators
from inferfleet.schema import validate_settings

SIM = Path(emulators.__file__).resolve().parent


def test_plan_assigns_profiles_in_turn_with_stable_names():
    specs = Sandbox(name="t").plan_hosts(5, ["gaudi2", "cpu"])
    assert [(s.name, s.profile) for s in specs] == [
        ("gaudi2-1", "gaudi2"), ("cpu-1", "cpu"), ("gaudi2-2", "gaudi2"), ("cpu-2", "cpu"), ("gaudi2-3", "gaudi2")]
    assert specs[0].container == "t-gaudi2-1"
    assert len(Sandbox().plan_hosts(None, ["gaudi2", "ascend910b", "h100", "cpu"])) == 4
    with pytest.raises(ValueError):
        Sandbox().plan_hosts(0, ["cpu"])


def test_parse_profiles_rejects_unknown_names():
    assert profiles.parse_profiles("gaudi2, cpu") == ["gaudi2", "cpu"]
    with pytest.raises(ValueError, match="unknown sandbox profile 'tpu'"):
        profiles.parse_profiles("gaudi2,tpu")


def test_profiles_carry_the_cards_the_issue_asks_for():
    expected = {"gaudi2": ("gaudi", 8, 96), "ascend910b": ("ascend", 8, 64), "h100": ("nvidia", 8, 80),
                "cpu": ("cpu", 0, 0)}
    for name, (platform, count, memory) in expected.items():
        profile = profiles.get_profile(name)
        assert (profile.platform, len(profile.devices), profile.memory_gib) == (platform, count, memory)
        assert profile.to_json()["simulated"] is True
    assert "davinci_manager" in profiles.get_profile("ascend910b").device_nodes
    assert "accel/accel_controlD7" in profiles.get_profile("gaudi2").device_nodes


def test_inventory_groups_hosts_by_platform(tmp_path):
    hosts = [HostStatus("gaudi2-1", "gaudi2", "x-gaudi2-1", "running", "172.18.0.2"),
             HostStatus("cpu-1", "cpu", "x-cpu-1", "running", "172.18.0.3")]
    path = write_inventory(tmp_path, hosts, tmp_path / "key", "172.18.0.1:5000", "x", "172.18.0.1:5001")
    text = path.read_text()
    assert "SIMULATED" in text.splitlines()[1]
    data = yaml.safe_load(text)["all"]
    assert data["vars"]["inferfleet_sandbox_mirror"] == "http://172.18.0.1:5001"
    assert data["vars"]["inferfleet_docker_hub_mirror"] == "http://172.18.0.1:5000"
    assert data["vars"]["inferfleet_insecure_registries"] == ["172.18.0.1:5000", "172.18.0.1:5001"]
    gaudi = data["children"]["gaudi"]["hosts"]["gaudi2-1"]
    assert gaudi["inferfleet_accelerator"] == {"model": "HL-225", "count": 8, "memory_gib": 96}
    assert "inferfleet_accelerator" not in data["children"]["cpu"]["hosts"]["cpu-1"]
    # everything the sandbox writes is a declared setting, with the demo's settings and services beside it
    for part in ("group_vars", "host_vars"):
        shutil.copytree(ROOT / "inventories" / "sandbox" / part, tmp_path / part)
    serving = write_inventory(tmp_path, hosts, tmp_path / "key", "172.18.0.1:5000", "x", "172.18.0.1:5001",
                              extra_vars={"inferfleet_sandbox_vllm_image": "172.18.0.1:5000/inferfleet/vllm-cpu:1",
                                          "inferfleet_sandbox_models_dir": str(tmp_path / "models")})
    loaded, problems = load_hosts(serving)
    assert problems == [] and [validate_settings(h.name, h.vars, h.groups) for h in loaded] == [[], []]
    no_serving = write_inventory(tmp_path, hosts, tmp_path / "key", "172.18.0.1:5000", "x", None,
                                 extra_vars={"inferfleet_serving": False})
    assert plan_inventory(no_serving).errors == []  # the services name models that --no-serving did not make


def test_image_tag_follows_its_inputs(tmp_path, monkeypatch):
    first = image.image_tag()
    assert first == image.image_tag() and first.startswith("inferfleet-sandbox-host:")
    ca = tmp_path / "extra.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    assert image.image_tag(ca) != first
    monkeypatch.setattr(image, "PACKAGES", image.PACKAGES + ("vim",))
    assert image.image_tag() != first


def run_tool(tool, args, root):
    env = dict(os.environ, INFERFLEET_SIM_ROOT=str(root))
    link = root / tool
    if not link.exists():
        link.symlink_to(SIM / "inferfleet-sim")
    return subprocess.run([sys.executable, str(link), *args], capture_output=True, text=True, env=env)


def test_emulator_commands_follow_profile_and_faults(tmp_path):
    config = tmp_path / "etc" / "inferfleet-sim"
    config.mkdir(parents=True)
    (config / "profile.json").write_text(json.dumps(profiles.get_profile("ascend910b").to_json()))
    (config / "faults.json").write_text(json.dumps({"missing": [3], "link_down": [1]}))
    info = run_tool("npu-smi", ["info"], tmp_path)
    assert info.returncode == 0
    assert info.stdout.count("910B3") == 7
    assert run_tool("hccn_tool", ["-i", "1", "-link", "-g"], tmp_path).stdout == "link status: DOWN\n"
    assert run_tool("hccn_tool", ["-i", "0", "-link", "-g"], tmp_path).stdout == "link status: UP\n"
    missing = run_tool("hccn_tool", ["-i", "3", "-link", "-g"], tmp_path)
    assert missing.returncode == 1
    version = run_tool("npu-smi", ["--version"], tmp_path)
    assert "SIMULATED" in version.stdout


def test_sandbox_subnet_avoids_used_networks_and_addresses_stay_put():
    import ipaddress

    from inferfleet.sandbox.fleet import assign_addresses, free_subnet

    used = [ipaddress.ip_network("10.213.0.0/24"), ipaddress.ip_network("10.213.1.128/25")]
    subnet = free_subnet(used)
    assert subnet == ipaddress.ip_network("10.213.2.0/24")
    first = assign_addresses(["gaudi2-1", "cpu-1"], subnet, {})
    assert first == {"gaudi2-1": "10.213.2.10", "cpu-1": "10.213.2.11"}
    # a host added later takes a free address; the others keep theirs
    second = assign_addresses(["h100-1", "cpu-1"], subnet, first)
    assert second == {"cpu-1": "10.213.2.11", "h100-1": "10.213.2.10"}
    # addresses from another subnet are not reused
    assert assign_addresses(["cpu-1"], subnet, {"cpu-1": "172.18.0.5"}) == {"cpu-1": "10.213.2.10"}
