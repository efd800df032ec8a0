"""The fabric stage's pieces: parsers on recorded real outputs (tests/fixtures/fabric/NOTES-*.md names the source of
each sample), the plan of the gate, its verdicts, the link module on recorded outputs, and the sandbox's SIMULATED
stand-ins and emulators read back by the same parsers."""

import json
import os
import subprocess
import sys

import pytest
from helpers import FIXTURES, ROOT, load_library_module
from helpers import fabric_parsers as fp

from inferfleet import fabric, planner
from inferfleet.sandbox.profiles import PROFILES
from inferfleet.sandbox.sim import emulators, simlib

FABRIC = FIXTURES / "fabric"
STAND_INS = ROOT / "src" / "inferfleet" / "sandbox" / "fabric"


def read(name):
    return (FABRIC / name).read_text()


# --- hccl_demo ----------------------------------------------------------------------------------------------------
def test_hccl_demo_current_gbps_block():
    parsed = fabric.parse_hccl_demo(read("hccl_demo-gbps-dataSize-all_reduce-1node-8ranks-gaudi2-vllm-fork.txt"))
    assert parsed["results"] == [{"op": "hcclAllReduce", "size": 33554432, "nw_bandwidth": 258.259144,
                                  "algo_bandwidth": 147.576654}]
    assert fabric.measured("hccl_demo", parsed) == {"nw_bandwidth": 258.259144, "algo_bandwidth": 147.576654}


def test_hccl_demo_august_2024_headline_and_full_run():
    parsed = fabric.parse_hccl_demo(read("hccl_demo-gbps-src-dst-data_size-all_reduce-1node-8ranks-openshift.txt"))
    assert parsed["results"][0]["size"] == 33554432 and parsed["results"][0]["nw_bandwidth"] == 258.209121
    full = fabric.parse_hccl_demo(read("hccl_demo-gbps-dataSize-all_reduce-1GiB-8ranks-full-run-excerpt.txt"))
    assert full["results"][0]["size"] == 1073741824 and full["results"][0]["algo_bandwidth"] == 147.543405
    assert full["bad"] == [] and full["errors"] == []


def test_hccl_demo_2022_mbps_is_the_nw_figure_in_gbps():
    parsed = fabric.parse_hccl_demo(read("hccl_demo-2022-a977e3d-mbps-all_reduce-1node-4ranks.txt"))
    # `count=134217728, dtype=fp32`: 4-byte elements
    assert parsed["results"][0]["size"] == 536870912
    assert parsed["results"][0]["nw_bandwidth"] == pytest.approx(69.214565)
    assert "algo_bandwidth" not in parsed["results"][0]


def test_hccl_demo_non_root_node_prints_no_benchmark():
    node1 = fabric.parse_hccl_demo(read("hccl_demo-2022-a977e3d-mbps-reduce_scatter-2node-node1.txt"))
    assert node1["results"] == [] and node1["bad"] == []
    node0 = fabric.parse_hccl_demo(read("hccl_demo-2022-a977e3d-mbps-reduce_scatter-2node-node0.txt"))
    assert node0["results"][0]["op"] == "hcclReduceScatter"


def test_hccl_demo_readme_placeholders_yield_no_figure():
    for name in ("hccl_demo-2023-605f21e-README-PLACEHOLDER-nw-algo-mbps-all_reduce-8ranks.txt",
                 "hccl_demo-f623d69-README-PLACEHOLDER-size_range-summary-report.txt"):
        assert fabric.measured("hccl_demo", fabric.parse_hccl_demo(read(name))) == {}


# --- hccl_test ----------------------------------------------------------------------------------------------------
def test_hccl_test_doc_table_and_binary_printf():
    doc = fabric.parse_hccl_test(read("hccl_test-all_reduce_test-8npu-doc-example.txt"))
    assert len(doc["rows"]) == 14 and doc["rows"][0] == {"size": 8192, "time_us": 764.55, "alg_bandwidth": 0.00998,
                                                         "check": "success"}
    assert fabric.measured("hccl_test", doc) == {"alg_bandwidth": 23.76245, "alg_bandwidth_peak": 23.76245}
    stub = fabric.parse_hccl_test(read("hccl_test-all_reduce_test-hccl-vm-stub-2mb.txt"))
    assert stub["rows"] == [{"size": 2097152, "time_us": 1000.0, "alg_bandwidth": 2.09715, "check": "success"}]


def test_hccl_test_init_failure_is_a_reason():
    parsed = fabric.parse_hccl_test(read("hccl_test-retcode7-init_hcclComm-error.txt"))
    assert parsed["rows"] == [] and "retcode: 7" in parsed["errors"][0]
    assert "retcode: 7" in fabric.wrong_results("hccl_test", parsed)[0]


# --- nccl-tests ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, rows, busbw, avg", [
    ("nccl-tests-2.17.1-all_reduce_perf-2node-gh200.txt", 25, 122.57, 19.7866),
    ("nccl-tests-2.18.3-all_reduce_perf-2node-gh200-int8.txt", 28, 101.7, 17.8617),
    ("nccl-tests-2.x-all_reduce_perf-mpirun-n2-g8-2node-16xh100.txt", 31, 219.51, 50.906),
    ("nccl-tests-2.x-all_reduce_perf-mpirun-np16-g1-2node-16xh100.txt", 31, 338.82, 70.742),
    ("nccl-tests-2.x-all_reduce_perf-2node-p5-srun-excerpt.txt", 32, 487.09, None),  # srun --label prefixes
    ("nccl-tests-pre2.13-all_reduce_perf-8xa100-g8-validation0.txt", 34, 235.26, 68.4048),  # NCCL INFO lines
])
def test_nccl_tests_layouts(name, rows, busbw, avg):
    parsed = fabric.parse_nccl_tests(read(name))
    assert len(parsed["rows"]) == rows
    figures = fabric.measured("nccl-tests", parsed)
    assert figures["busbw"] == busbw and figures.get("busbw_avg") == avg
    assert figures["busbw_peak"] >= figures["busbw"]
    assert fabric.wrong_results("nccl-tests", parsed) == []


def test_nccl_tests_wrong_results_and_failures():
    wrong = fabric.parse_nccl_tests(read("nccl-tests-2.17.8-all_reduce_perf-2node-wrong-FAILED.txt"))
    assert (wrong["out_of_bounds"], wrong["oob_status"]) == (4, "FAILED")
    reasons = fabric.wrong_results("nccl-tests", wrong)
    assert reasons[0] == "Out of bounds values: 4 FAILED"
    assert "1048576 bytes: 96 wrong element(s) (out-of-place)" in reasons
    assert any("Test failure common.cu:1189" in r for r in reasons)
    busy = fabric.parse_nccl_tests(read("nccl-tests-2.17.8-all_reduce_perf-cuda-device-busy-failure.txt"))
    assert busy["rows"] == [] and "busy or unavailable" in fabric.wrong_results("nccl-tests", busy)[0]
    excerpt = fabric.parse_nccl_tests(read("nccl-tests-2.17.9-all_reduce_perf-4node-wrong-results-excerpt.txt"))
    assert "18134 wrong element(s)" in fabric.wrong_results("nccl-tests", excerpt)[0]


def test_nccl_tests_before_2_13_has_no_redop_column_and_an_error_delta():
    parsed = fabric.parse_nccl_tests(read("nccl-tests-pre2.13-all_gather_perf-12xv100-error-col-FAILED.txt"))
    assert len(parsed["rows"]) == 31 and parsed["rows"][3]["size"] == 48
    assert all(r["out_of_place"]["wrong"] is None for r in parsed["rows"])  # a delta, not a count
    assert fabric.wrong_results("nccl-tests", parsed) == ["Out of bounds values: 4 FAILED"]


# --- link tools ---------------------------------------------------------------------------------------------------
def test_hl_smi_link_recorded():
    ports = fp.parse_hl_smi_link(read("hl-smi-n-link-gaudi2e-1.23.0-loop-excerpt.txt"))
    assert [p["port"] for p in ports] == [0, 1, 2, 3, 4, 5, *range(10, 22)]
    assert {p["state"] for p in ports} == {"UP"}
    assert fp.parse_hl_smi_link("port 7:\tDOWN\n") == [{"port": 7, "state": "DOWN"}]


def test_hccn_outputs_recorded():
    assert fp.parse_hccn_fields(read("hccn_tool-link-g-loop-excerpt.txt").splitlines()[0]) == {"link status": "UP"}
    assert fp.parse_hccn_fields(read("hccn_tool-net_health-g-socket-failed.txt")) == {
        "net health status": "Socket failed"}
    fields = fp.parse_hccn_fields("\n".join(read("hccn_tool-ip-g-8npu-loop-910b3.txt").splitlines()[:2]))
    assert fields == {"ipaddr": "11.12.165.80", "netmask": "255.255.255.0"}
    first = fp.parse_hccn_ping("\n".join(read("hccn_tool-ping-g-8npu-loop-910b3.txt").splitlines()[:5]))
    assert first == {"device": 0, "address": "11.12.165.80", "transmitted": 3, "received": 3, "loss_pct": 0.0,
                     "timeouts": 0, "errors": []}
    lost = fp.parse_hccn_ping(read("hccn_tool-ping-partial-loss-excerpt.txt"))
    assert (lost["received"], lost["timeouts"], lost["loss_pct"]) == (2, 1, 33.33)


@pytest.mark.parametrize("name, kind, nics", [
    ("nvidia-smi-topo-8xh200-nv18-8nic.txt", "NV18", 8),
    ("nvidia-smi-topo-dgx-a100-nv12-mlx5.txt", "NV12", 12),
    ("nvidia-smi-topo-8xv100-sxm2-nv1-nv2-excerpt.txt", None, 0),
])
def test_nvidia_topo_recorded(name, kind, nics):
    topo = fp.parse_nvidia_topo(read(name))
    assert topo["gpus"] == [f"GPU{i}" for i in range(8)] and len(topo["nics"]) == nics
    assert topo["links"]["GPU0"]["GPU0"] == "X"
    if kind:
        assert {v for k, v in topo["links"]["GPU3"].items() if k != "GPU3"} == {kind}
    else:  # the DGX-1 hybrid cube mesh
        assert topo["links"]["GPU0"]["GPU3"] == "NV2" and topo["links"]["GPU0"]["GPU4"] == "SYS"
    assert topo["cpu_affinity"]["GPU0"]


# --- the link module on recorded outputs --------------------------------------------------------------------------
fabric_links = load_library_module("fabric_links")


class FakeModule:
    """What fabric_links asks of AnsibleModule: run_command, answered from a table of argv -> output."""

    def __init__(self, answers):
        self.answers, self.calls = answers, []

    def run_command(self, argv):
        self.calls.append(argv)
        return self.answers(argv)


def test_gaudi_links_name_card_bus_and_port():
    down_port = "port  0:        UP\nport  8:        DOWN\nport  9:        DOWN\n"

    def answers(argv):
        bus = argv[-1]
        return 0, down_port if bus == "0000:34:00.0" else read("hl-smi-n-link-gaudi2e-1.23.0-loop-excerpt.txt"), ""

    cards = [{"index": 0, "bus_id": "0000:33:00.0"}, {"index": 1, "bus_id": "0000:34:00.0"}]
    problems = fabric_links.gaudi(FakeModule(answers), "hl-smi", cards, external={8}, require_external=False)
    assert problems == ["card 1 (0000:34:00.0) port 9 is DOWN"]  # port 8 leaves the host: not needed here
    problems = fabric_links.gaudi(FakeModule(answers), "hl-smi", cards, external={8}, require_external=True)
    assert problems == ["card 1 (0000:34:00.0) port 8 is DOWN", "card 1 (0000:34:00.0) port 9 is DOWN"]


def test_ascend_links_health_address_and_ping():
    ips = read("hccn_tool-ip-g-8npu-loop-910b3.txt").splitlines()

    def answers(argv):
        card = int(argv[2])
        if "-link" in argv:
            return 0, "link status: DOWN\n" if card == 1 else "link status: UP\n", ""
        if "-net_health" in argv:
            return 0, "net health status: Success\n", ""
        if "-ip" in argv:
            return 0, "\n".join(ips[2 * card:2 * card + 2]) + "\n", ""
        if card == 2:
            return 1, read("hccn_tool-ping-partial-loss-excerpt.txt"), ""
        return 0, read("hccn_tool-ping-success.txt"), ""

    cards = [{"index": i, "bus_id": ""} for i in range(3)]
    module = FakeModule(answers)
    problems = fabric_links.ascend(module, "hccn_tool", cards, ping=True)
    assert problems == ["card 1: link status is DOWN (wanted UP)",
                        "card 2: ping of card 0 (11.12.165.80) lost 1 of 3 packet(s)"]
    assert cards[0]["ipaddr"] == "11.12.165.80" and cards[0]["ping"]["address"] == "11.12.165.81"
    assert ["hccn_tool", "-i", "2", "-ping", "-g", "address", "11.12.165.80"] in module.calls


# --- the plan -----------------------------------------------------------------------------------------------------
def host(platform="gaudi", model="HL-225", count=8, **settings):
    hv = {"inferfleet_platform": platform, "ansible_host": "10.0.0.5",
          "inferfleet_images": {platform: "registry.example.com/vllm:1"}, **settings}
    if platform != "cpu":
        hv["inferfleet_accelerator"] = {"model": model, "count": count, "memory_gib": 64}
    return planner.HostInput("h1", hv, (platform,))


def plan_of(hv_host):
    plan = planner.plan_hosts([hv_host])
    return plan.hosts["h1"].fabric, plan.errors, plan.warnings


def test_gaudi2_plan_runs_seed_004s_hccl_demo_with_omnias_thresholds():
    gate, errors, _ = plan_of(host())
    assert errors == [] and gate["run"] and gate["tool"] == "hccl_demo"
    test = gate["tests"][0]
    assert (test["test"], test["size"], test["iterations"]) == ("all_reduce", 256 * 1024**2, 1000)
    assert test["thresholds"] == {"algo_bandwidth": {"min": 73.0, "source": "Gaudi2 default (256m, 8 ranks)"},
                                  "nw_bandwidth": {"min": 127.0, "source": "Gaudi2 default (256m, 8 ranks)"}}
    where = fabric.resolve_group("h1", gate, [{"name": "h1", "address": "10.0.0.5"}])
    # seed 004: HCCL_COMM_ID=127.0.0.1:5555 python3 run_hccl_demo.py --nranks 8 --node_id 0 --size 32m --test
    # all_reduce --loop 10000 --ranks_per_node 8 (here at the size Omnia's thresholds are for)
    assert fabric.test_argv(gate, test, where) == [
        "python3", "run_hccl_demo.py", "--nranks", "8", "--node_id", "0", "--size", "268435456", "--test",
        "all_reduce", "--loop", "1000", "--ranks_per_node", "8"]
    assert where["comm_id"] == "127.0.0.1:5555"
    assert gate["container"]["runtime"] == "habana" and gate["container"]["capabilities"] == ["sys_nice"]
    assert gate["container"]["env"]["HABANA_VISIBLE_DEVICES"] == "0,1,2,3,4,5,6,7"
    assert gate["external_ports"] == [8, 22, 23]


def test_gaudi3_thresholds_and_a_user_override():
    gate, _, _ = plan_of(host(model="HL-325L", fabric_thresholds={"all_reduce": {"nw_bandwidth": 300}}))
    thresholds = gate["tests"][0]["thresholds"]
    assert thresholds["nw_bandwidth"] == {"min": 300.0, "source": "fabric_thresholds"}
    assert thresholds["algo_bandwidth"]["min"] == 146.0
    # the defaults are for 8 ranks at 256m: 4 cards or another size get none
    assert plan_of(host(count=4))[0]["tests"][0]["thresholds"] == {}
    other_size = plan_of(host(fabric_tests=[{"test": "all_reduce", "size": "32m"}]))[0]
    assert other_size["tests"][0]["thresholds"] == {}


def test_ascend_and_nvidia_plans_run_the_documented_commands():
    ascend, errors, _ = plan_of(host("ascend", "910B3"))
    assert errors == []
    assert ascend["source"] == {"image_path": "/usr/local/Ascend/ascend-toolkit/latest/tools/hccl_test"}
    assert ascend["build"] == "make MPI_HOME=/usr/local/mpich ASCEND_DIR=/usr/local/Ascend/ascend-toolkit/latest"
    where = fabric.resolve_group("h1", ascend, [{"name": "h1", "address": "10.0.0.5"}])
    # hccl_test docs: mpirun -n 8 ./bin/all_reduce_test -b 8K -e 64M -f 2 -d fp32 -o sum -p 8
    assert fabric.test_argv(ascend, ascend["tests"][0], where) == [
        "/usr/local/mpich/bin/mpirun", "-n", "8", "./bin/all_reduce_test", "-b", "8192", "-e", str(1024**3), "-f",
        "2", "-d", "fp32", "-o", "sum", "-n", "20", "-p", "8"]
    assert "/dev/davinci7:/dev/davinci7" in ascend["container"]["devices"]
    assert "/etc/hccn.conf:/etc/hccn.conf:ro" in ascend["container"]["volumes"]
    command = fabric.container_command(ascend, ["x"])
    assert command[:4] == ["timeout", "-k", "30", "1800"] and "/usr/local/mpich/lib:" in command[-1]
    nvidia, _, _ = plan_of(host("nvidia", "NVIDIA H100 80GB HBM3"))
    # nccl-tests README: ./build/all_reduce_perf -b 8 -e 128M -f 2 -g 8
    assert fabric.test_argv(nvidia, nvidia["tests"][0], where) == [
        "./build/all_reduce_perf", "-b", "8", "-e", str(8 * 1024**3), "-f", "2", "-g", "8", "-n", "20"]
    assert nvidia["tests"][0]["thresholds"] == {}  # no published value: measured and reported only


def test_skips_and_refusals():
    assert plan_of(host("cpu"))[0] == {"run": False, "reason": "cpu hosts have no collective to test"}
    assert plan_of(host(count=1))[0]["reason"] == "1 card(s): no collective between cards to test"
    assert plan_of(host(fabric_enabled=False))[0]["reason"] == "fabric_enabled is false"
    gate, _, warnings = plan_of(host(inferfleet_images={}))
    assert not gate["run"] and warnings[0].field == "fabric_image"
    _, errors, _ = plan_of(host(fabric_tests=[{"test": "all2all_x"}], fabric_thresholds={
        "all_reduce": {"busbw": 1}, "broadcast_x": {"nw_bandwidth": 1}}))
    assert [e.field for e in errors] == ["fabric_tests[0].test", "fabric_thresholds.all_reduce.busbw",
                                         "fabric_thresholds.broadcast_x"]
    assert "hccl_demo measures no 'busbw'" in errors[1].message and "nw_bandwidth" in errors[1].fix
    _, errors, _ = plan_of(host("nvidia", "NVIDIA H100 80GB HBM3", fabric_group="rack1"))
    assert errors[0].field == "fabric_group" and "MPI" in errors[0].message
    _, errors, _ = plan_of(host("nvidia", "x", fabric_tests=[{"test": "all_reduce", "min_size": "2G", "size": "1G"}]))
    assert errors[0].field == "fabric_tests[0].min_size"


def test_schema_refuses_bad_threshold_input_naming_field_and_fix():
    for bad, field in (({"all_reduce": {"nw_bandwidth": -5}}, "fabric_thresholds.all_reduce.nw_bandwidth"),
                       ({"all_reduce": {"nw_bandwidth": "fast"}}, "fabric_thresholds.all_reduce.nw_bandwidth"),
                       ({"all_reduce": 127}, "fabric_thresholds.all_reduce")):
        _, errors, _ = plan_of(host(fabric_thresholds=bad))
        assert [e.field for e in errors] == [field], errors
        assert "{all_reduce: {nw_bandwidth: 127}}" in errors[0].fix


# --- a group across hosts -----------------------------------------------------------------------------------------
def members(*specs):
    return [{"name": n, "address": f"10.0.0.{i + 1}", "group": g, "ranks_per_node": r, "running": run}
            for i, (n, g, r, run) in enumerate(specs)]


def test_group_rendezvous_at_the_first_member():
    gate = plan_of(host(fabric_group="rack1"))[0]
    fleet = members(("a", None, 8, True), ("b", "rack1", 8, True), ("c", "rack1", 8, True))
    where = fabric.resolve_group("c", gate, fleet)
    assert where == {"nodes": 2, "node_id": 1, "comm_id": "10.0.0.2:5555", "ranks": 16, "members": ["b", "c"]}
    argv = fabric.test_argv(gate, gate["tests"][0], where)
    assert argv[argv.index("--nranks") + 1] == "16" and argv[argv.index("--node_id") + 1] == "1"
    assert argv[argv.index("--ranks_per_node") + 1] == "8"
    stopped = fabric.resolve_group("b", gate, members(("b", "rack1", 8, True), ("c", "rack1", 8, False)))
    assert "c is not in this run" in stopped["error"]
    uneven = fabric.resolve_group("b", gate, members(("b", "rack1", 8, True), ("c", "rack1", 4, True)))
    assert "different card counts (b: 8, c: 4)" in uneven["error"]


# --- verdicts -----------------------------------------------------------------------------------------------------
def gaudi_gate():
    gate = plan_of(host())[0]
    return gate, gate["tests"][0], {"ranks": 8, "nodes": 1, "node_id": 0}


def test_judge_passes_and_fails_on_the_threshold():
    gate, test, where = gaudi_gate()
    good = read("hccl_demo-gbps-dataSize-all_reduce-1node-8ranks-gaudi2-vllm-fork.txt")
    row = fabric.judge(gate, test, where, 0, good)
    assert row["status"] == "pass" and row["measured"]["nw_bandwidth"] == 258.259144
    slow = good.replace("258.259144", "98.500000").replace("147.576654", "56.285714")
    row = fabric.judge(gate, test, where, 0, slow)
    assert row["status"] == "fail"
    assert row["reasons"] == [
        "algo_bandwidth 56.29 GB/s is not above the threshold 73 GB/s (Gaudi2 default (256m, 8 ranks))",
        "nw_bandwidth 98.50 GB/s is not above the threshold 127 GB/s (Gaudi2 default (256m, 8 ranks))"]
    rows = fabric.table_rows([row])
    assert rows[1] == ["all_reduce", "256M", "8", "algo_bandwidth", "56.29", "73", "BELOW"]


def test_judge_reports_wrong_results_timeouts_crashes_and_silence():
    gate, test, where = gaudi_gate()
    bad = ("rank=0 size=8 <float> Input Buffer [0 8 16 24 ...] Output Buffer [29 92 156 220 ...] which is bad.\n"
           "HCCL demo error: Collective operation has failed on correctness.\n\nExiting HCCL demo with code: 1\n")
    row = fabric.judge(gate, test, where, 1, bad)
    assert row["status"] == "fail" and "which is bad." in row["reasons"][0]
    assert "timed out after 1800 s" in fabric.judge(gate, test, where, 124, "")["reasons"][0]
    crashed = fabric.judge(gate, test, where, 134, "terminate called without an active exception\n")
    assert crashed["reasons"] == ["terminate called without an active exception"]
    # a crash mid-table: the signal and the last words, no verdict on the partial figures
    partial = read("nccl-tests-2.17.1-all_reduce_perf-2node-gh200.txt").split("# Out of bounds")[0]
    nvidia = plan_of(host("nvidia", "x", fabric_thresholds={"all_reduce": {"busbw": 300}}))[0]
    row = fabric.judge(nvidia, nvidia["tests"][0], where, 134, partial)
    assert row["reasons"] == ["killed by signal 6 after 25 result row(s)"]
    assert not any("threshold" in r for r in row["reasons"]) and row["measured"]["busbw"] == 122.57
    silent = fabric.judge(gate, test, where, 0, "Welcome to HCCL demo\n")
    assert silent["reasons"] == ["printed no bandwidth figure"]


def test_judge_non_root_node_takes_the_roots_figures():
    gate, test, _ = gaudi_gate()
    node1 = read("hccl_demo-2022-a977e3d-mbps-reduce_scatter-2node-node1.txt")
    where = {"ranks": 16, "nodes": 2, "node_id": 1}
    row = fabric.judge(gate, dict(test, thresholds={}), where, 0, node1,
                       {"measured": {"nw_bandwidth": 205.9, "algo_bandwidth": 109.8}})
    assert row["status"] == "measured" and row["measured"]["nw_bandwidth"] == 205.9


# --- the sandbox: SIMULATED stand-ins and emulators read back by the parsers ---------------------------------------
@pytest.fixture
def simulated(tmp_path):
    """A sim directory and fake device nodes for each profile, as a sandbox test container sees them."""
    made = []

    def make(profile_name, faults=None, cards=range(8)):
        made.append(profile_name)
        root = tmp_path / f"{profile_name}-{len(made)}"
        (root / "dev" / "accel").mkdir(parents=True)
        for i in cards:
            for node in (f"accel/accel{i}", f"davinci{i}", f"nvidia{i}"):
                (root / "dev" / node).touch()
        (root / "profile.json").write_text(json.dumps(PROFILES[profile_name].to_json()))
        (root / "faults.json").write_text(json.dumps(faults or {}))
        build = tmp_path / f"build-{profile_name}"
        if not build.exists():
            subprocess.run(["cp", "-a", f"{STAND_INS}/.", str(build)], check=True)
            subprocess.run(["make", "-s", "-C", str(build)], check=True, capture_output=True)

        def run(argv, **env):
            proc = subprocess.run(argv, cwd=build, capture_output=True, text=True, timeout=60,
                                  env={**os.environ, "INFERFLEET_SIM_DIR": str(root),
                                       "INFERFLEET_SIM_DEV_ROOT": str(root), **env})
            return proc.returncode, proc.stdout + proc.stderr
        return run
    return make


def test_stand_ins_print_what_the_parsers_read(simulated):
    gaudi = simulated("gaudi2")
    code, out = gaudi([sys.executable, "run_hccl_demo.py", "--nranks", "8", "--node_id", "0", "--size", "256m",
                       "--test", "all_reduce", "--loop", "10", "--ranks_per_node", "8"])
    assert code == 0 and "SIMULATED" in out
    figures = fabric.measured("hccl_demo", fabric.parse_hccl_demo(out))
    assert figures["nw_bandwidth"] / figures["algo_bandwidth"] == pytest.approx(1.75, abs=1e-4)  # 2(n-1)/n
    assert figures["nw_bandwidth"] > 127
    code, out = simulated("ascend910b")([sys.executable, "bin/all_reduce_test", "-b", "8192", "-e", "1073741824",
                                         "-f", "2", "-p", "8"])
    parsed = fabric.parse_hccl_test(out)
    assert code == 0 and len(parsed["rows"]) == 18 and {r["check"] for r in parsed["rows"]} == {"success"}
    code, out = simulated("h100")([sys.executable, "build/all_reduce_perf", "-b", "8", "-e", "8G", "-f", "2",
                                   "-g", "8"])
    parsed = fabric.parse_nccl_tests(out)
    assert code == 0 and len(parsed["rows"]) == 31 and parsed["oob_status"] == "OK"
    assert fabric.measured("nccl-tests", parsed)["busbw"] == pytest.approx(360, rel=0.01)


def test_stand_ins_under_faults(simulated):
    slow = simulated("gaudi2", {"slow_link": {"3": 0.4}})
    code, out = slow([sys.executable, "run_hccl_demo.py", "--nranks", "8", "--node_id", "0", "--size", "256m",
                      "--test", "all_reduce", "--ranks_per_node", "8"])
    assert fabric.measured("hccl_demo", fabric.parse_hccl_demo(out))["nw_bandwidth"] < 127
    code, out = simulated("h100", {"collective_wrong": True})([sys.executable, "build/all_reduce_perf", "-b", "8",
                                                               "-e", "8M", "-f", "2", "-g", "8"])
    assert code == 1 and fabric.wrong_results("nccl-tests", fabric.parse_nccl_tests(out))[0] == \
        "Out of bounds values: 2 FAILED"
    code, out = simulated("ascend910b", {"collective_crash": True})([sys.executable, "bin/all_reduce_test",
                                                                      "-b", "8K", "-e", "1G", "-f", "2", "-p", "8"])
    assert code == 134 and len(fabric.parse_hccl_test(out)["rows"]) == 3
    code, out = simulated("gaudi2", cards=range(6))([sys.executable, "run_hccl_demo.py", "--nranks", "8",
                                                     "--node_id", "0", "--ranks_per_node", "8"])
    assert code == 1 and "synDeviceAcquire" in fabric.parse_hccl_demo(out)["errors"][0]


def test_stand_ins_rendezvous_across_two_nodes(simulated):
    import socket
    import threading

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    nodes = [simulated("gaudi2"), simulated("gaudi2", {"slow_link": {"0": 0.5}})]
    outputs = {}

    def node(k):
        outputs[k] = nodes[k]([sys.executable, "run_hccl_demo.py", "--nranks", "16", "--node_id", str(k), "--size",
                               "256m", "--test", "all_reduce", "--ranks_per_node", "8"],
                              HCCL_COMM_ID=f"127.0.0.1:{port}")
    threads = [threading.Thread(target=node, args=(k,)) for k in (1, 0)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert outputs[0][0] == 0 and outputs[1][0] == 0
    root = fabric.measured("hccl_demo", fabric.parse_hccl_demo(outputs[0][1]))
    assert fabric.parse_hccl_demo(outputs[1][1])["results"] == []  # only the root prints
    assert root["nw_bandwidth"] / root["algo_bandwidth"] == pytest.approx(2 * 15 / 16, abs=1e-4)
    assert root["nw_bandwidth"] < 0.5 * 250  # the slowest node's link sets the pace


def test_emulators_print_what_the_link_parsers_read():
    gaudi = PROFILES["gaudi2"].to_json()
    cards = simlib.card_states(gaudi, {}, {})
    text, code = emulators.render_hl_smi_link(["-n", "link", "-i", cards[2]["bus_id"]], gaudi, cards,
                                              {"port_down": ["2:5"]})
    ports = fp.parse_hl_smi_link(text)
    assert code == 0 and len(ports) == 24 and [p["port"] for p in ports if p["state"] == "DOWN"] == [5]
    ascend = PROFILES["ascend910b"].to_json()
    text, code = emulators.render_hccn(["-i", "0", "-ping", "-g", "address", "192.168.100.102"], ascend,
                                       {"link_down": [1]})
    ping = fp.parse_hccn_ping(text)
    assert code == 1 and ping["received"] == 0 and ping["timeouts"] == 3 and ping["device"] == 0
    nvidia = PROFILES["h100"].to_json()
    topo = fp.parse_nvidia_topo(emulators.render_nvidia_topo(nvidia, simlib.card_states(nvidia, {}, {})))
    assert topo["gpus"] == [f"GPU{i}" for i in range(8)] and topo["links"]["GPU1"]["GPU6"] == "NV18"
