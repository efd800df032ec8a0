import pytest

from inferfleet.schema import validate_settings as validate_host

GOOD = {"inferfleet_platform": "gaudi",
        "inferfleet_accelerator": {"model": "HL-225", "count": 8, "memory_gib": 96}}


def fields(problems):
    return [p.field for p in problems]


def test_valid_hosts_have_no_problems():
    assert validate_host("g1", GOOD, ["gaudi"]) == []
    assert validate_host("c1", {"inferfleet_platform": "cpu"}, ["cpu"]) == []


@pytest.mark.parametrize("host_vars, field, words", [
    ({}, "inferfleet_platform", "is not set"),
    ({"inferfleet_platform": "tpu"}, "inferfleet_platform", "must be one of gaudi, ascend, nvidia or cpu, got 'tpu'"),
    ({"inferfleet_platform": "nvidia"}, "inferfleet_accelerator", "is not set"),
    ({**GOOD, "inferfleet_accelerator": [8]}, "inferfleet_accelerator", "must be a mapping"),
    ({**GOOD, "inferfleet_accelerator": {**GOOD["inferfleet_accelerator"], "count": "eight"}},
     "inferfleet_accelerator.count", "whole number"),
    ({**GOOD, "inferfleet_accelerator": {**GOOD["inferfleet_accelerator"], "count": 0}},
     "inferfleet_accelerator.count", "must be >= 1, got 0"),
    ({**GOOD, "inferfleet_accelerator": {**GOOD["inferfleet_accelerator"], "count": True}},
     "inferfleet_accelerator.count", "whole number, got True"),
    ({**GOOD, "inferfleet_accelerator": {**GOOD["inferfleet_accelerator"], "memory_gib": -1}},
     "inferfleet_accelerator.memory_gib", "must be > 0, got -1"),
    ({**GOOD, "inferfleet_accelerator": {"model": "HL-225", "count": 8}},
     "inferfleet_accelerator.memory_gib", "is missing"),
    ({**GOOD, "inferfleet_accelerator": {**GOOD["inferfleet_accelerator"], "memroy_gib": 96}},
     "inferfleet_accelerator.memroy_gib", "not a known key"),
    ({**GOOD, "inferfleet_registry_mirror": "172.18.0.1:5000"}, "inferfleet_registry_mirror", "not an http(s) URL"),
    ({**GOOD, "inferfleet_insecure_registries": "reg:5000"}, "inferfleet_insecure_registries", "must be a list"),
    ({**GOOD, "inferfleet_insecure_registries": ["http://reg:5000"]}, "inferfleet_insecure_registries",
     "HOST[:PORT]"),
    ({**GOOD, "vllm_bench_rerun": "sometimes"}, "vllm_bench_rerun",
     "must be one of changed or always, got 'sometimes'"),
])
def test_each_bad_input_names_host_field_and_fix(host_vars, field, words):
    problems = validate_host("bad-1", host_vars, [])
    problem = next((p for p in problems if p.field.startswith(field)), None)
    assert problem, problems
    assert words in problem.message
    assert problem.host == "bad-1" and problem.fix
    assert str(problem).startswith(f"host bad-1: {problem.field}: ") and "(fix: " in str(problem)


def test_platform_must_match_platform_group():
    problems = validate_host("g1", GOOD, ["ascend", "prod"])
    assert fields(problems) == ["inferfleet_platform"]
    assert "group 'ascend'" in problems[0].message


def test_a_misspelt_setting_is_refused_with_the_name_it_resembles():
    problems = validate_host("c1", {"inferfleet_platform": "cpu", "inferfleet_servics": []}, ["cpu"])
    assert [(p.field, "did you mean inferfleet_services?" in p.message) for p in problems] == [
        ("inferfleet_servics", True)]
    # runtime facts under our prefixes are not settings
    assert validate_host("c1", {"inferfleet_platform": "cpu", "inferfleet_accel": {}}, ["cpu"]) == []


def test_service_problems_name_the_service_and_key():
    from inferfleet.schema import parse_service

    spec, label, problems = parse_service("h1", 2, {"name": "qwen", "model": "/m", "port": 8000,
                                                    "max_num_seqs": 0, "dtype": "bf61", "max_num_seq": 3})
    assert spec is None and label == "qwen"
    assert {p.field for p in problems} == {"inferfleet_services[qwen].max_num_seqs",
                                           "inferfleet_services[qwen].dtype", "inferfleet_services[qwen].max_num_seq"}
    messages = " | ".join(map(str, problems))
    assert "got 0" in messages and "got 'bf61'" in messages and "did you mean max_num_seqs?" in messages
    _, label, problems = parse_service("h1", 3, {"name": "Has Space", "model": "/m", "port": 1})
    assert label == "3" and problems[0].field == "inferfleet_services[3].name"


def test_generated_files_agree_with_the_schema():
    from inferfleet.schema_docs import generated

    for path, text in generated().items():
        assert path.read_text() == text, f"{path} differs: run python -m inferfleet.schema_docs --write"


def test_role_defaults_agree_with_the_schema():
    import yaml
    from helpers import ROOT

    from inferfleet.schema import ROLE_SETTINGS

    for role, (group, _) in ROLE_SETTINGS.items():
        defaults = yaml.safe_load((ROOT / "roles" / role / "defaults" / "main.yml").read_text()) or {}
        for name, info in group.model_fields.items():
            assert name in defaults, f"{role}: {name} is declared in the schema but has no role default"
            if not (info.json_schema_extra or {}).get("templated"):
                assert defaults[name] == info.default, f"{role}: {name} default differs from the schema"
        assert set(defaults) <= set(group.model_fields), f"{role}: defaults the schema does not declare"


def test_an_image_build_takes_one_source():
    base = {"image": "reg/vllm:1", "base": "vault/base:1"}
    for build, words in (({**base}, "exactly one of them"),
                         ({**base, "git": "https://g/x", "path": "/s"}, "exactly one"),
                         ({**base, "git": "https://g/x"}, "needs ref")):
        problems = validate_host("c1", {"inferfleet_platform": "cpu", "images_builds": [build]}, ["cpu"])
        assert [p.field for p in problems] == ["images_builds[0]"] and words in problems[0].message, problems
    assert validate_host("c1", {"inferfleet_platform": "cpu", "images_builds": [{**base, "path": "/src"}]},
                         ["cpu"]) == []
