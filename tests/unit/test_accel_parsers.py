"""Parsers on recorded real outputs (tests/fixtures/accel/README.md names the sources) and on the emulators."""

import pytest
from helpers import FIXTURES
from helpers import accel_parsers as ap

from inferfleet.sandbox.profiles import PROFILES
from inferfleet.sandbox.sim import emulators, simlib

ACCEL = FIXTURES / "accel"


def read(name):
    return (ACCEL / name).read_text()


def test_hl_smi_table_recorded_gaudi2():
    parsed = ap.parse_hl_smi(read("hl-smi_gaudi2_8card_1.21.1.txt"))
    assert parsed["tool_version"] == "hl-1.21.1-fw-59.2.3.0"
    assert parsed["driver_version"] == "1.21.1-bfcec49"
    assert [d["index"] for d in parsed["devices"]] == list(range(8))
    assert {d["name"] for d in parsed["devices"]} == {"HL-225"}
    assert parsed["devices"][0] == {"index": 0, "name": "HL-225", "bus_id": "0000:33:00.0",
                                    "memory_used_mib": 94963, "memory_total_mib": 98304}
    assert parsed["devices"][7]["bus_id"] == "0000:4d:00.0"
    assert parsed["processes"] == []  # every row reads N/A


def test_hl_smi_module_id_query_recorded():
    rows = ap.parse_csv_query(read("hl-smi_query_index_module_id.csv"))
    assert len(rows) == 8
    assert rows[0] == {"index": 0, "module_id": 2}
    assert sorted(r["module_id"] for r in rows) == list(range(8))


def test_csv_query_units_and_noheader():
    text = "0, 2, 0000:33:00.0, 98304 MiB, 768 MiB\n"
    rows = ap.parse_csv_query(text, ["index", "module_id", "bus_id", "memory.total", "memory.used"])
    assert rows == [{"index": 0, "module_id": 2, "bus_id": "0000:33:00.0", "memory.total": 98304,
                     "memory.used": 768}]
    header = "index, memory.total [MiB]\n3, 81559\n"
    assert ap.parse_csv_query(header) == [{"index": 3, "memory.total": 81559}]
    with pytest.raises(ValueError):
        ap.parse_csv_query("index, name\n0\n")


def test_npu_smi_recorded_910b4():
    parsed = ap.parse_npu_smi_info(read("npu-smi_info_910b4_excerpt.txt"))
    assert parsed["tool_version"] == "24.1.1"
    assert [(d["index"], d["name"], d["bus_id"]) for d in parsed["devices"]] == [
        (0, "910B4", "0000:C1:00.0"), (1, "910B4", "0000:C2:00.0")]
    assert parsed["devices"][1]["memory_used_mib"] == 29356
    assert parsed["devices"][1]["memory_total_mib"] == 32768


def test_npu_smi_recorded_two_chips_per_npu():
    parsed = ap.parse_npu_smi_info(read("npu-smi_info_a3_two_chips_excerpt.txt"))
    assert [(d["index"], d["chip"], d["phy_id"]) for d in parsed["devices"]] == [(0, 0, 0), (0, 1, 1), (1, 0, 2)]
    assert parsed["devices"][1]["memory_used_mib"] == 3195


def test_npu_smi_recorded_process_table():
    parsed = ap.parse_npu_smi_info(read("npu-smi_info_processes_excerpt.txt"))
    assert parsed["processes"] == [{"index": 0, "chip": 0, "pid": 632268, "name": "python3.1", "memory_mib": 197}]


def test_nvidia_smi_recorded_tables():
    h100 = ap.parse_nvidia_smi(read("nvidia-smi_h100_535_excerpt.txt"))
    assert (h100["driver_version"], h100["cuda_version"]) == ("535.129.03", "12.2")
    # the published copy stops after GPU 1's first line: only complete cards count
    assert h100["devices"] == [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "bus_id": "00000000:04:00.0",
                                "memory_used_mib": 72459, "memory_total_mib": 81559}]
    a100 = ap.parse_nvidia_smi(read("nvidia-smi_a100_580_excerpt.txt"))
    assert [d["memory_used_mib"] for d in a100["devices"]] == [598, 602]


def test_nvidia_smi_recorded_processes():
    parsed = ap.parse_nvidia_smi(read("nvidia-smi_processes_excerpt.txt"))
    assert [(p["index"], p["pid"], p["type"], p["memory_mib"]) for p in parsed["processes"]] == [
        (0, 10734, "C", 160), (0, 58661, "G", 3), (1, 10734, "C", 160), (2, 18243, "G", 64), (2, 22720, "G", 34)]
    assert parsed["processes"][3]["name"] == "/usr/bin/X"


def test_merge_devices_marks_held_cards_and_module_ids():
    devices = [{"index": 0}, {"index": 1}]
    merged = ap.merge_devices(devices, [{"index": 1, "pid": 7}], module_ids={0: 4, 1: 5})
    assert [(d["module_id"], d["held"]) for d in merged] == [(4, False), (5, True)]


# --- the emulators print what the parsers read, for every simulated profile -----------------------------
RENDER = {
    "gaudi2": (emulators.render_hl_smi, ap.parse_hl_smi),
    "ascend910b": (emulators.render_npu_smi_info, ap.parse_npu_smi_info),
    "h100": (emulators.render_nvidia_smi, ap.parse_nvidia_smi),
}


@pytest.mark.parametrize("profile_name", sorted(RENDER))
def test_emulator_output_round_trips(profile_name):
    profile = PROFILES[profile_name].to_json()
    render, parse = RENDER[profile_name]
    held_node = simlib.HOLD_NODES[profile["platform"]][0].format(i=2)
    cards = simlib.card_states(profile, {"missing": [5]}, {held_node: [(4242, "python3")]})
    parsed = parse(render(profile, cards))
    assert [d["index"] for d in parsed["devices"]] == [0, 1, 2, 3, 4, 6, 7]
    assert {d["memory_total_mib"] for d in parsed["devices"]} == {profile["devices"][0]["memory_mib"]}
    assert [(p["index"], p["pid"]) for p in parsed["processes"]] == [(2, 4242)]
    held = next(d for d in parsed["devices"] if d["index"] == 2)
    assert held["memory_used_mib"] > 0.8 * held["memory_total_mib"]


def test_emulator_layout_matches_recorded_hl_smi_header():
    recorded = read("hl-smi_gaudi2_8card_1.21.1.txt").splitlines()
    profile = PROFILES["gaudi2"].to_json()
    emulated = emulators.render_hl_smi(profile, simlib.card_states(profile, {}, {})).splitlines()
    assert emulated[:3] == recorded[:3]  # same driver/tool versions recorded in the profile
    assert emulated[4:8] == recorded[4:8]
    assert {len(line) for line in emulated} == {len(recorded[0])}


def test_emulator_csv_query_units():
    profile = PROFILES["gaudi2"].to_json()
    cards = simlib.card_states(profile, {}, {})
    text = emulators.render_csv_query(profile, cards, ["index", "module_id", "memory.total"], {"csv", "nounits"},
                                      emulators.HL_QUERY_FIELDS)
    assert text.splitlines()[:2] == ["index, module_id, memory.total [MiB]", "0, 2, 98304"]
    with pytest.raises(ValueError, match="not a valid field"):
        emulators.render_csv_query(profile, cards, ["bogus"], set(), emulators.HL_QUERY_FIELDS)


def test_npu_smi_reports_a_dcmi_failure_that_exits_zero():
    # vllm-project/vllm-ascend issue #2698: npu-smi info printed this and exited 0 in a container
    text = (ACCEL / "npu-smi_info_dcmi_-8005.txt").read_text()
    message = ap.npu_smi_failure(text)
    assert "dcmi ret -8005" in message and "held by another container" in message
    assert ap.parse_npu_smi_info(text)["devices"] == []  # read alone, it would be "no cards"
    ok = (ACCEL / "npu-smi_info_910b4_excerpt.txt").read_text()
    assert ap.npu_smi_failure(ok) is None
