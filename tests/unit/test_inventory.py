import pytest

from inferfleet.inventory import validate_host, validate_inventory

GOOD = {"inferfleet_platform": "gaudi",
        "inferfleet_accelerator": {"model": "HL-225", "count": 8, "memory_gib": 96}}


def fields(problems):
    return [p.field for p in problems]


def test_valid_hosts_have_no_problems():
    assert validate_host("g1", GOOD, ["gaudi"]) == []
    assert validate_host("c1", {"inferfleet_platform": "cpu"}, ["cpu"]) == []


@pytest.mark.parametrize("host_vars, field, words", [
    ({}, "inferfleet_platform", "is not set"),
    ({"inferfleet_platform": "tpu"}, "inferfleet_platform", "not a supported platform"),
    ({"inferfleet_platform": "nvidia"}, "inferfleet_accelerator", "is not set"),
    ({**GOOD, "inferfleet_accelerator": [8]}, "inferfleet_accelerator", "must be a mapping"),
    ({**GOOD, "inferfleet_accelerator": {**GOOD["inferfleet_accelerator"], "count": "eight"}},
     "inferfleet_accelerator.count", "whole number"),
    ({**GOOD, "inferfleet_accelerator": {**GOOD["inferfleet_accelerator"], "count": 0}},
     "inferfleet_accelerator.count", "whole number"),
    ({**GOOD, "inferfleet_accelerator": {**GOOD["inferfleet_accelerator"], "count": True}},
     "inferfleet_accelerator.count", "whole number"),
    ({**GOOD, "inferfleet_accelerator": {**GOOD["inferfleet_accelerator"], "memory_gib": -1}},
     "inferfleet_accelerator.memory_gib", "positive number"),
    ({**GOOD, "inferfleet_accelerator": {"model": "HL-225", "count": 8}},
     "inferfleet_accelerator.memory_gib", "is missing"),
    ({**GOOD, "inferfleet_accelerator": {**GOOD["inferfleet_accelerator"], "memroy_gib": 96}},
     "inferfleet_accelerator.memroy_gib", "not a known key"),
    ({**GOOD, "inferfleet_registry_mirror": "172.18.0.1:5000"}, "inferfleet_registry_mirror", "not an http(s) URL"),
    ({**GOOD, "inferfleet_insecure_registries": "reg:5000"}, "inferfleet_insecure_registries", "must be a list"),
    ({**GOOD, "inferfleet_insecure_registries": ["http://reg:5000"]}, "inferfleet_insecure_registries",
     "HOST[:PORT]"),
])
def test_each_bad_input_names_host_field_and_fix(host_vars, field, words):
    problems = validate_host("bad-1", host_vars, [])
    assert field in fields(problems)
    problem = next(p for p in problems if p.field == field)
    assert words in problem.message
    assert problem.host == "bad-1" and problem.fix
    assert str(problem).startswith(f"host bad-1: {field}: ")


def test_platform_must_match_platform_group():
    problems = validate_host("g1", GOOD, ["ascend", "prod"])
    assert fields(problems) == ["inferfleet_platform"]
    assert "group 'ascend'" in problems[0].message


def test_validate_inventory_reports_every_host_sorted():
    problems = validate_inventory({"b": {}, "a": GOOD, "c": {"inferfleet_platform": "x"}})
    assert [p.host for p in problems] == ["b", "c"]
