"""Validation of the tune/docker stage variables and the tune stage's verification table."""

import pytest

from inferfleet.schema import validate_settings as validate_host
from inferfleet.tuning import (
    MISMATCH,
    OK,
    PENDING_REBOOT,
    SHORT,
    parse_sysctl_conf,
    render_rows,
    sysctl_drift,
    tuning_rows,
)

CPU_HOST = {"inferfleet_platform": "cpu"}


@pytest.mark.parametrize(("extra", "field", "words"), [
    ({"host_tuning_hugepages": "lots"}, "host_tuning_hugepages", "whole number"),
    ({"host_tuning_hugepages": -1}, "host_tuning_hugepages", ">= 0, got -1"),
    ({"host_tuning_hugepages": 1.5}, "host_tuning_hugepages", "whole number"),
    ({"host_tuning_governor": "turbo"}, "host_tuning_governor", "must be one of"),
    ({"host_tuning_disable_idle_states": ["C1E", "deep"]}, "host_tuning_disable_idle_states", "'deep'"),
    ({"host_tuning_disable_idle_states": "C6"}, "host_tuning_disable_idle_states", "must be a list"),
    ({"host_tuning_reboot": "always"}, "host_tuning_reboot", "must be one of"),
    ({"host_tuning_kernel_cmdline": {"iommu=pt": None}}, "host_tuning_kernel_cmdline", "not a kernel argument"),
    ({"docker_engine_source": "snap"}, "docker_engine_source", "must be one of"),
    ({"accel_runtime_ascend_mode": "auto"}, "accel_runtime_ascend_mode", "must be one of"),
    ({"docker_engine_daemon_options": ["x"]}, "docker_engine_daemon_options", "must be a mapping"),
    ({"docker_engine_users": "alice"}, "docker_engine_users", "must be a list"),
])
def test_bad_stage_variables_are_refused(extra, field, words):
    problems = validate_host("h1", {**CPU_HOST, **extra}, ["cpu"])
    assert [p.field.split("[")[0].split(".")[0] for p in problems] == [field], problems
    assert words in problems[0].message
    assert problems[0].fix


def test_good_stage_variables_pass():
    good = {**CPU_HOST, "host_tuning_hugepages": "15000", "host_tuning_governor": "performance",
            "host_tuning_disable_idle_states": ["C1E", "C6", "POLL", "C1_ACPI"], "host_tuning_reboot": "if_needed",
            "host_tuning_kernel_cmdline": {"intel_iommu": "on", "nosmt": None}, "docker_engine_source": "upstream",
            "docker_engine_users": ["alice"], "accel_runtime_ascend_mode": "runtime"}
    assert validate_host("h1", good, ["cpu"]) == []


def test_sysctl_conf_parsing_follows_systemd_sysctl():
    text = "# ours\nvm.nr_hugepages=100\n; old\nkernel/numa_balancing = 0\n-vm.nr_hugepages = 15000\nbad line\n"
    assert parse_sysctl_conf(text) == {"vm.nr_hugepages": "15000", "kernel.numa_balancing": "0"}


WANTED = {"governor": "performance", "disable_idle_states": ["C1E", "C6"], "hugepages": 15000,
          "numa_balancing": False, "cmdline_args": {"cpufreq.default_governor": "performance"}}


def cpu_result(governors, disabled):
    cpus = [0, 1, 2, 3]
    return {"governors": governors, "idle_states": [
        {"name": "POLL", "index": 0, "cpus": cpus, "disabled_cpus": []},
        {"name": "C1E", "index": 2, "cpus": cpus, "disabled_cpus": disabled}]}


def by_setting(rows):
    return {r["setting"]: r for r in rows}


def test_a_tuned_host_is_all_ok_except_the_pending_reboot():
    rows = by_setting(tuning_rows(
        WANTED, cpu_result({"performance": [0, 1, 2, 3]}, [0, 1, 2, 3]),
        {"cmdline": "quiet cpufreq.default_governor=performance", "running": "ro quiet"},
        {"vm.nr_hugepages": "15000", "kernel.numa_balancing": "0"},
        "vm.nr_hugepages=15000\nkernel.numa_balancing=0\n", boot_unit=True))
    assert rows["cpu governor"]["status"] == OK
    assert rows["cpu governor"]["persisted"] == "boot unit, cmdline"
    assert rows["idle state C1E (state2)"]["now"] == "disabled on 4/4 cpus"
    assert rows["idle state C6"]["now"] == "absent on this CPU" and rows["idle state C6"]["status"] == OK
    assert rows["vm.nr_hugepages"]["persisted"] == "sysctl.d"
    assert rows["kernel.numa_balancing"]["status"] == OK
    assert rows["cmdline cpufreq.default_governor"]["status"] == PENDING_REBOOT


def test_untuned_values_are_mismatches_and_short_hugepages_are_flagged():
    rows = by_setting(tuning_rows(
        WANTED, cpu_result({"powersave": [0, 1], "performance": [2, 3]}, [0]),
        None, {"vm.nr_hugepages": "9000", "kernel.numa_balancing": "1"}, "", boot_unit=False))
    assert rows["cpu governor"]["status"] == MISMATCH and rows["cpu governor"]["now"] == "performance,powersave"
    assert rows["cpu governor"]["persisted"] == "no"
    assert rows["idle state C1E (state2)"]["status"] == MISMATCH
    assert rows["vm.nr_hugepages"]["status"] == SHORT and rows["vm.nr_hugepages"]["persisted"] == "no"
    assert rows["kernel.numa_balancing"]["status"] == MISMATCH
    assert rows["cmdline cpufreq.default_governor"]["persisted"] == "no (no GRUB file)"


def test_a_converged_host_has_no_sysctl_left_to_do():
    assert sysctl_drift(WANTED, {"vm.nr_hugepages": "15000", "kernel.numa_balancing": "0"},
                        "vm.nr_hugepages = 15000\nkernel.numa_balancing=0\n") == {}


def test_sysctl_drift_names_the_running_value_and_the_file_apart():
    drift = sysctl_drift(WANTED, {"vm.nr_hugepages": "9000", "kernel.numa_balancing": "0"},
                         "vm.nr_hugepages=15000\n")
    assert drift == {"vm.nr_hugepages": ["now"], "kernel.numa_balancing": ["persisted"]}
    assert sysctl_drift(WANTED, {}, "") == {"vm.nr_hugepages": ["now", "persisted"],
                                            "kernel.numa_balancing": ["now", "persisted"]}


def test_sysctl_drift_leaves_out_settings_left_alone():
    assert sysctl_drift({**WANTED, "hugepages": None, "numa_balancing": None}, {}, "") == {}


def test_render_aligns_columns():
    lines = render_rows([{"setting": "a", "wanted": "1", "now": "1", "persisted": "x", "status": OK}])
    assert lines[0].startswith("setting  wanted  now  persisted  status")
    assert lines[1] == "a        1       1    x          ok"
