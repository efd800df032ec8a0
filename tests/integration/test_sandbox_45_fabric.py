"""Stage fabric on the sandbox: the real stage (link checks over SSH, the build in the test image, the test in a
container given the cards by the SIMULATED vendor runtimes) runs the SIMULATED stand-ins of hccl_demo, hccl_test
and nccl-tests. Every figure is simulated; what is tested is the gate: who passes, who fails, and why."""

import json

import pytest
import yaml
from test_sandbox_00_preflight import ssh

from inferfleet import up
from inferfleet.paths import project_dir

pytestmark = pytest.mark.integration
ALL_PROFILES = ["gaudi2", "ascend910b", "h100", "cpu"]
STATUS = {"gaudi2-1": "pass", "ascend910b-1": "pass", "h100-1": "pass", "cpu-1": "skipped"}


def reports(result):
    return {host: result.facts(host, "fabric_report") for host in result.hosts}


def failures_by_host(result):
    found = {}
    for failure in result.failures:
        found.setdefault(failure.host, []).append(failure.msg)
    return found


@pytest.fixture(scope="module")
def gated(sandbox):
    """Docker and the images (the fabric test runs in the serving image), then the gate: one run."""
    result = up(sandbox.inventory, stages=["preflight", "docker", "images", "fabric"])
    assert result.ok, [(f.host, f.task, f.msg[:1500]) for f in result.failures]
    return sandbox, result


def test_a_healthy_fleet_passes_and_the_run_is_recorded(gated):
    sandbox, result = gated
    found = reports(result)
    assert {host: r["status"] for host, r in found.items()} == STATUS
    gaudi = found["gaudi2-1"]["rows"][0]
    assert gaudi["ranks"] == 8 and gaudi["thresholds"]["nw_bandwidth"]["min"] == 127.0  # the Gaudi2 default
    assert gaudi["measured"]["nw_bandwidth"] > 127 and found["gaudi2-1"]["simulated"] is True
    assert found["ascend910b-1"]["rows"][0]["thresholds"]["alg_bandwidth"]["source"] == "fabric_thresholds"
    assert found["h100-1"]["tool"] == "nccl-tests" and found["h100-1"]["rows"][0]["measured"]["busbw"] > 300
    record = _record(result)
    assert set(record["hosts"]) == set(STATUS) and record["hosts"]["cpu-1"]["reasons"] == [
        "cpu hosts have no collective to test"]
    # the build is kept on the host, keyed by image and source; the test containers are gone
    built = ssh(sandbox, "gaudi2-1", "ls -d /var/lib/inferfleet/fabric/build-*/hccl_demo && "
                                     "docker ps -aq --filter name=inferfleet-fabric | wc -l").stdout.split()
    assert len(built) == 2 and built[1] == "0"


def _record(result):
    """The run's JSON record under the controller's results directory."""
    return json.loads((project_dir() / ".cache" / "results" / "fabric" / f"{result.run_dir.name}.json").read_text())


def test_a_rerun_measures_again_and_changes_nothing_check_mode_runs_nothing(gated):
    sandbox, first = gated
    # a test container an interrupted run left behind is replaced, not an obstacle
    left = ("docker create --name inferfleet-fabric-all_reduce --entrypoint true "
            "$(docker images --format '{{.Repository}}:{{.Tag}}' | head -1)")
    assert ssh(sandbox, "h100-1", left).returncode == 0
    again = up(sandbox.inventory, stages=["fabric"])
    assert again.ok and again.changed == 0
    assert {host: r["status"] for host, r in reports(again).items()} == STATUS
    assert ssh(sandbox, "h100-1", "docker ps -aq --filter name=inferfleet-fabric | wc -l").stdout.strip() == "0"
    assert _record(again)["hosts"]["h100-1"]["time"] >= _record(first)["hosts"]["h100-1"]["time"]
    check = up(sandbox.inventory, stages=["fabric"], check=True, diff=True)
    assert check.ok and check.changed == 0
    assert {r["status"] for host, r in reports(check).items() if host != "cpu-1"} == {"not run"}


@pytest.mark.parametrize("host, kind, value, words", [
    ("gaudi2-1", "port_down", "0:3", "card 0 (0000:33:00.0) port 3 is DOWN"),
    ("gaudi2-1", "slow_link", "3:0.4", "is not above the threshold 127 GB/s (Gaudi2 default (256m, 8 ranks))"),
    ("ascend910b-1", "link_down", 2, "card 2: link status is DOWN (wanted UP)"),
    ("ascend910b-1", "tool_missing", "hccn_tool", "hccn_tool is not installed"),
    ("h100-1", "collective_wrong", None, "Out of bounds values: 2 FAILED"),
    ("h100-1", "collective_crash", None, "killed by signal 6 after 4 result row(s)"),
])
def test_each_fault_fails_only_its_host_with_the_reason(gated, host, kind, value, words):
    sandbox, _ = gated
    sandbox.set_fault(host, kind, value)
    try:
        result = up(sandbox.inventory, stages=["fabric"])
    finally:
        sandbox.set_fault(host, "clear")
    failed = failures_by_host(result)
    assert set(failed) == {host}, failed
    assert words in failed[host][0] and "Fix:" in failed[host][0], failed[host][0]
    assert {h: r["status"] for h, r in reports(result).items()} == dict(STATUS, **{host: "fail"})


def test_a_held_card_skips_the_host_and_a_group_threshold_overrides_the_default(gated):
    sandbox, _ = gated
    group_vars = sandbox.inventory.parent / "group_vars" / "gaudi"
    group_vars.mkdir(exist_ok=True)
    (group_vars / "fabric.yml").write_text(yaml.safe_dump({"fabric_thresholds": {"all_reduce": {"nw_bandwidth": 900}}}))
    sandbox.set_fault("h100-1", "hold", 4)
    try:
        result = up(sandbox.inventory, stages=["fabric"], limit="gaudi2-1,h100-1")
    finally:
        sandbox.set_fault("h100-1", "release", 4)
        (group_vars / "fabric.yml").unlink()
    found = reports(result)
    assert found["h100-1"]["status"] == "skipped" and "card(s) 4 held" in found["h100-1"]["reasons"][0]
    assert set(failures_by_host(result)) == {"gaudi2-1"}
    rule = found["gaudi2-1"]["rows"][0]["thresholds"]["nw_bandwidth"]
    assert rule == {"min": 900.0, "source": "fabric_thresholds"}
    assert found["gaudi2-1"]["rows"][0]["thresholds"]["algo_bandwidth"]["min"] == 73.0  # the default stays


@pytest.mark.parametrize("thresholds, words", [
    ({"all_reduce": {"nw_bandwidth": -1}}, "fabric_thresholds.all_reduce.nw_bandwidth: must be > 0, got -1"),
    ({"all_reduce": {"nw_bandwidth": "fast"}}, "fabric_thresholds.all_reduce.nw_bandwidth: must be"),
    ({"allreduce": {"nw_bandwidth": 100}}, "fabric_thresholds.allreduce: hccl_demo has no test 'allreduce'"),
])
def test_bad_thresholds_are_refused_before_any_host_runs_anything(gated, thresholds, words):
    sandbox, _ = gated
    result = up(sandbox.inventory, stages=["fabric"], limit="gaudi2-1", extravars={"fabric_thresholds": thresholds})
    assert not result.ok
    assert any(words in f.msg for f in result.failures), [f.msg for f in result.failures]
    ran = {r.task for r in result.results}
    assert "Check every card's links" not in ran and "Run each test on all the cards" not in ran


@pytest.mark.slow  # a fifth host, Docker installed and the test image pulled on it: about 3 minutes
def test_a_group_runs_one_test_across_two_simulated_hosts(gated, tmp_path):
    sandbox, _ = gated
    inventory_dir = sandbox.inventory.parent
    sandbox.up(profile_names=[*ALL_PROFILES, "gaudi2"], inventory_dir=inventory_dir)
    try:
        result = up(sandbox.inventory, stages=["preflight", "docker", "images", "fabric"], limit="gaudi",
                    extravars={"fabric_group": "rack1"})
        assert result.ok, [(f.host, f.task, f.msg[:1500]) for f in result.failures]
        nodes = reports(result)
        assert set(nodes) == {"gaudi2-1", "gaudi2-2"}
        rows = [nodes[h]["rows"][0] for h in ("gaudi2-1", "gaudi2-2")]
        assert [r["ranks"] for r in rows] == [16, 16]
        assert [nodes[h]["where"]["node_id"] for h in ("gaudi2-1", "gaudi2-2")] == [0, 1]
        # only node 0 prints the result: node 1 reports the group's figures, NW = Algo x 2(n-1)/n with n = 16
        assert rows[0]["measured"] == rows[1]["measured"]
        figures = rows[0]["measured"]
        assert figures["nw_bandwidth"] / figures["algo_bandwidth"] == pytest.approx(30 / 16, abs=1e-3)
        address = yaml.safe_load(sandbox.inventory.read_text())["all"]["children"]["gaudi"]["hosts"]["gaudi2-1"]
        assert nodes["gaudi2-2"]["where"]["comm_id"] == f"{address['ansible_host']}:5555"
    finally:
        sandbox.up(profile_names=ALL_PROFILES, inventory_dir=inventory_dir)
