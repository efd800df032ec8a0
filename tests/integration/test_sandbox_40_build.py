"""Building an image once per fleet (seed 004, section 1.4: a vLLM source on the vendor's base image, installed
for the target device), pushed to the LAN mirror and run by every host. The "vendor base" is the sandbox's vLLM
CPU image and the source a stand-in (tests/fixtures/vllm_source) that pip installs offline."""

import pytest
from helpers import FIXTURES
from test_sandbox_00_preflight import ssh

from inferfleet import up

# slow: the build pushes its 2.6 GB base through the empty mirror once, about 5 minutes on 2 cores
pytestmark = [pytest.mark.integration, pytest.mark.slow]
HOSTS = ("gaudi2-1", "h100-1")


def sandbox_value(sandbox, name):
    return sandbox.inventory.read_text().split(f"{name}: ")[1].split()[0]


def build_vars(sandbox, image):
    return {"inferfleet_registry_mirror": "{{ inferfleet_sandbox_mirror }}",
            "images_builds": [{"image": image, "base": sandbox_value(sandbox, "inferfleet_sandbox_vllm_image"),
                               "path": str(FIXTURES / "vllm_source")}],
            "inferfleet_images": dict.fromkeys(("gaudi", "ascend", "nvidia", "cpu"), image),
            "inferfleet_services": [{"name": "llm", "model": "/models/tiny", "task": "generate", "port": 8300,
                                     "max_model_len": 256, "devices": [0]}]}


def test_the_fleet_builds_an_image_once_and_every_host_gets_it(sandbox):
    image = "registry.example.com/inferfleet/vllm-fork-gaudi:test"
    extra = build_vars(sandbox, image)
    result = up(sandbox.inventory, stages=["images"], limit=",".join(HOSTS), extravars=extra)
    assert result.ok, [(f.host, f.task, f.msg[:1500]) for f in result.failures]
    builds = {host: ssh(sandbox, host, "ls /var/lib/inferfleet/builds 2>/dev/null").stdout.split() for host in HOSTS}
    assert sorted(len(found) for found in builds.values()) == [0, 1], builds  # built on one host only
    for host in HOSTS:
        probe = ssh(sandbox, host, f"docker run --rm --entrypoint python3 {image} -c "
                                   "'import vllm_source_probe as p; print(p.TARGET_DEVICE)'")
        assert probe.stdout.strip() == "hpu", (host, probe.stdout, probe.stderr)  # VLLM_TARGET_DEVICE=hpu install

    again = up(sandbox.inventory, stages=["images"], limit=",".join(HOSTS), extravars=extra)
    assert again.ok and again.changed == 0, [r.task for r in again.results if r.status == "changed"]
