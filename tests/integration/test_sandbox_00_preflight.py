"""The sandbox fleet over real SSH: preflight reads the SIMULATED cards and refuses bad inventories."""

import subprocess

import pytest
import yaml

from inferfleet import up
from inferfleet.sandbox.fleet import ssh_options

pytestmark = pytest.mark.integration

EXPECTED = {  # host -> (platform, cards, MiB per card) as the vendor tool of each profile reports them
    "gaudi2-1": ("gaudi", 8, 98304),
    "ascend910b-1": ("ascend", 8, 65536),
    "h100-1": ("nvidia", 8, 81559),
    "cpu-1": ("cpu", 0, 0),
}


def ssh(sandbox, host, command):
    address = next(h.address for h in sandbox.status() if h.name == host)
    return subprocess.run(["ssh", *ssh_options(sandbox.key_path), f"root@{address}", command],
                          capture_output=True, text=True, timeout=60)


def test_preflight_reads_each_hosts_cards_over_ssh(sandbox):
    result = up(sandbox.inventory, stages=["preflight"])
    assert result.ok, result.failures
    assert set(result.hosts) == set(EXPECTED)
    assert result.changed == 0
    for host, (platform, count, mib) in EXPECTED.items():
        accel = result.facts(host, "inferfleet_accel")
        assert accel["platform"] == platform
        assert accel["count"] == count
        assert accel["memory_total_mib"] == mib
        assert accel["simulated"] is True
        assert all(not d["held"] for d in accel["devices"])
    gaudi = result.facts("gaudi2-1", "inferfleet_accel")
    assert [d["module_id"] for d in gaudi["devices"]] == [2, 6, 3, 7, 0, 4, 5, 1]


def test_held_card_shows_its_holder(sandbox):
    sandbox.set_fault("h100-1", "hold", 3)
    try:
        result = up(sandbox.inventory, stages=["preflight"], limit="h100-1")
        assert result.ok, result.failures
        devices = result.facts("h100-1", "inferfleet_accel")["devices"]
        assert [d["index"] for d in devices if d["held"]] == [3]
        assert devices[3]["processes"][0]["pid"] > 0
    finally:
        sandbox.set_fault("h100-1", "release", 3)


def test_missing_card_fails_preflight_naming_the_variable(sandbox):
    sandbox.set_fault("gaudi2-1", "missing", 7)
    try:
        assert ssh(sandbox, "gaudi2-1", "test -e /dev/accel/accel7").returncode == 1
        result = up(sandbox.inventory, stages=["preflight"])
        assert not result.ok
        messages = [f.msg for f in result.failures if f.host == "gaudi2-1"]
        assert any("inferfleet_accelerator.count is 8 but 7 card(s)" in m for m in messages), messages
    finally:
        sandbox.set_fault("gaudi2-1", "present", 7)
    assert ssh(sandbox, "gaudi2-1", "test -e /dev/accel/accel7").returncode == 0


def test_malformed_inventory_fails_before_any_host_is_touched(sandbox, tmp_path):
    inventory = yaml.safe_load(sandbox.inventory.read_text())
    children = inventory["all"]["children"]
    children["gaudi"]["hosts"]["gaudi2-1"]["inferfleet_accelerator"]["count"] = "eight"
    children["nvidia"]["hosts"]["h100-1"]["inferfleet_platform"] = "tpu"
    bad = tmp_path / "hosts.yml"
    bad.write_text(yaml.safe_dump(inventory))
    marker = "stat -c %Y /root/.ansible 2>/dev/null || echo none"
    before = {host: ssh(sandbox, host, marker).stdout for host in EXPECTED}

    result = up(bad, stages=["preflight"])

    assert not result.ok
    failures = {f.host: f.msg for f in result.failures}
    assert "inferfleet_accelerator.count" in failures["gaudi2-1"] and "eight" in failures["gaudi2-1"]
    assert "inferfleet_platform" in failures["h100-1"] and "fix:" in failures["h100-1"]
    # any_errors_fatal: no task ran on any host after validation, so nothing connected or changed
    assert {r.task for r in result.results} == {"Validate the settings and plan the services of each host"}
    assert result.changed == 0
    assert {host: ssh(sandbox, host, marker).stdout for host in EXPECTED} == before


def test_check_mode_changes_nothing(sandbox):
    result = up(sandbox.inventory, stages=["preflight"], check=True, diff=True)
    assert result.ok, result.failures
    assert result.changed == 0


def test_sandbox_up_again_keeps_the_hosts(sandbox):
    before = {c.name: c.id for c in sandbox._containers()}
    statuses = sandbox.up(profile_names=["gaudi2", "ascend910b", "h100", "cpu"],
                          inventory_dir=sandbox.inventory.parent)
    assert {c.name: c.id for c in sandbox._containers()} == before
    assert {s.state for s in statuses} == {"running"}


def test_a_host_removed_by_hand_comes_back_with_an_empty_docker(sandbox):
    assert ssh(sandbox, "cpu-1", "touch /var/lib/docker/left-by-the-old-host").returncode == 0
    sandbox.client.containers.get(f"{sandbox.name}-cpu-1").remove(force=True)  # not `sandbox down`
    sandbox.up(profile_names=["gaudi2", "ascend910b", "h100", "cpu"], inventory_dir=sandbox.inventory.parent)
    probe = ssh(sandbox, "cpu-1", "ls -A /var/lib/docker")  # (no Docker yet: the docker stage installs it)
    assert probe.returncode == 0 and probe.stdout == "", (probe.stdout, probe.stderr)


def machine_hugepages():
    with open("/proc/sys/vm/nr_hugepages") as handle:
        return handle.read().strip()


def test_real_tools_work_on_the_simulated_kernel_files(sandbox):
    before = machine_hugepages()
    wanted = "14999" if before != "14999" else "14998"
    out = ssh(sandbox, "cpu-1", "cpupower idle-set -d 2 >/dev/null; cat /sys/devices/system/cpu/cpu1/cpuidle/state2/"
                                f"{{name,disable}}; sysctl -w vm.nr_hugepages={wanted} >/dev/null; "
                                "sysctl -n vm.nr_hugepages")
    assert out.stdout.split() == ["C1E", "1", wanted]
    assert machine_hugepages() == before  # the machine's own kernel is untouched
