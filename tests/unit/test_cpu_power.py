"""cpu_power on sysfs trees laid out as the kernel lays them out.

State names follow the kernel's tables: intel_idle's Sapphire Rapids table (POLL, C1, C1E, C6; C1E is state2
and C6 state3 there, which is why seed 000 runs `cpupower idle-set -d 2` and `-d 3`) and acpi_idle on an AMD
EPYC (POLL, C1, C2), where the same indices mean other states.
"""

from pathlib import Path

import pytest
from helpers import ROOT, load_library_module, run_module

MODULE = ROOT / "plugins" / "modules" / "cpu_power.py"
cpu_power = load_library_module("cpu_power")

SAPPHIRE_RAPIDS = ["POLL", "C1", "C1E", "C6"]
EPYC_ACPI = ["POLL", "C1", "C2"]


def make_tree(root: Path, cpus=4, states=SAPPHIRE_RAPIDS, governor="powersave",
              available="performance powersave", offline=()):
    for cpu in range(cpus):
        base = root / f"cpu{cpu}"
        (base / "cpufreq").mkdir(parents=True)
        (base / "cpufreq" / "scaling_governor").write_text(governor + "\n")
        (base / "cpufreq" / "scaling_available_governors").write_text(available + "\n")
        (base / "online").write_text("0\n" if cpu in offline else "1\n")
        for index, name in enumerate(states):
            state = base / "cpuidle" / f"state{index}"
            state.mkdir(parents=True)
            (state / "name").write_text(name + "\n")
            (state / "disable").write_text("0\n")
    # files that are not CPUs must be ignored
    (root / "cpufreq").mkdir()
    (root / "online").write_text(f"0-{cpus - 1}\n")
    return root


def disabled(root: Path, cpu: int, index: int) -> str:
    return (root / f"cpu{cpu}" / "cpuidle" / f"state{index}" / "disable").read_text().strip()


def test_names_resolve_to_the_indices_of_each_cpu_model(tmp_path):
    intel = make_tree(tmp_path / "intel")
    amd = make_tree(tmp_path / "amd", states=EPYC_ACPI)
    writes = cpu_power.plan_writes(str(intel), cpu_power.read_cpu_tree(str(intel)), disable=["C1E", "C6"])
    assert {Path(w["path"]).parent.name for w in writes} == {"state2", "state3"}
    writes = cpu_power.plan_writes(str(amd), cpu_power.read_cpu_tree(str(amd)), disable=["C2"])
    assert {Path(w["path"]).parent.name for w in writes} == {"state2"}
    assert len(writes) == 4


def test_check_apply_check_apply(tmp_path):
    root = make_tree(tmp_path)
    args = {"governor": "performance", "disable_idle_states": ["C1E", "C6"], "sysfs_root": str(root)}

    first_check = run_module(MODULE, args, check=True)
    assert first_check["changed"] is True
    assert len(first_check["writes"]) == 4 + 4 * 2
    assert first_check["governors"] == {"performance": [0, 1, 2, 3]}
    assert (root / "cpu0/cpufreq/scaling_governor").read_text().strip() == "powersave"
    assert disabled(root, 0, 2) == "0"
    assert "governor powersave" in first_check["diff"]["before"]
    assert "C6 (state3): disabled on cpus 0-3" in first_check["diff"]["after"]

    applied = run_module(MODULE, args)
    assert applied["changed"] is True
    assert all((root / f"cpu{c}/cpufreq/scaling_governor").read_text().strip() == "performance" for c in range(4))
    assert [disabled(root, c, i) for c in range(4) for i in (2, 3)] == ["1"] * 8
    assert [disabled(root, c, i) for c in range(4) for i in (0, 1)] == ["0"] * 8

    second_check = run_module(MODULE, args, check=True)
    assert second_check["changed"] is False and second_check["writes"] == []
    second_apply = run_module(MODULE, args)
    assert second_apply["changed"] is False
    assert second_apply["diff"]["before"] == second_apply["diff"]["after"]


def test_enable_reverts_only_the_named_state(tmp_path):
    root = make_tree(tmp_path)
    run_module(MODULE, {"disable_idle_states": ["C1E", "C6"], "sysfs_root": str(root)})
    result = run_module(MODULE, {"enable_idle_states": ["C6"], "sysfs_root": str(root)})
    assert result["changed"] is True
    assert disabled(root, 1, 3) == "0" and disabled(root, 1, 2) == "1"


def test_absent_state_warns_and_changes_nothing(tmp_path):
    root = make_tree(tmp_path, states=["POLL"])
    result = run_module(MODULE, {"disable_idle_states": ["C6"], "sysfs_root": str(root)})
    assert result["changed"] is False
    assert result["absent_idle_states"] == ["C6"]
    assert any("C6" in w for w in result["warnings"])


def test_governor_the_kernel_does_not_offer_fails_with_the_choices(tmp_path):
    root = make_tree(tmp_path)
    result = run_module(MODULE, {"governor": "schedutil", "sysfs_root": str(root)})
    assert result["failed"] is True
    assert "schedutil" in result["msg"] and "performance powersave" in result["msg"]
    assert "host_tuning_governor" in result["msg"]


def test_offline_cpus_are_skipped(tmp_path):
    root = make_tree(tmp_path, offline=(3,))
    result = run_module(MODULE, {"governor": "performance", "sysfs_root": str(root)})
    assert result["cpus"] == 3
    assert (root / "cpu3/cpufreq/scaling_governor").read_text().strip() == "powersave"


def test_a_write_the_kernel_does_not_keep_fails(tmp_path):
    root = make_tree(tmp_path, cpus=1)
    target = root / "cpu0/cpufreq/scaling_governor"
    target.unlink()
    target.mkdir()  # the write will fail like a read-only sysfs file
    result = run_module(MODULE, {"disable_idle_states": ["C6"], "sysfs_root": str(root)})
    assert result["changed"] is True  # the idle state still works
    failed = run_module(MODULE, {"governor": "performance", "sysfs_root": str(tmp_path / "none")})
    assert failed["failed"] is True and "no CPU found" in failed["msg"]


def test_a_name_in_both_lists_is_refused(tmp_path):
    root = make_tree(tmp_path)
    result = run_module(MODULE, {"disable_idle_states": ["C6"], "enable_idle_states": ["C6"],
                                 "sysfs_root": str(root)})
    assert result["failed"] is True and "C6" in result["msg"]


@pytest.mark.parametrize(("numbers", "text"), [([0, 1, 2, 5], "0-2,5"), ([3], "3"), ([], "")])
def test_cpu_ranges(numbers, text):
    assert cpu_power.cpu_ranges(numbers) == text


def test_cpu_vendor_from_cpuinfo():
    assert cpu_power.cpu_vendor("processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\n") == "GenuineIntel"
    assert cpu_power.cpu_vendor("processor\t: 0\nCPU implementer\t: 0x48\n") == ""
