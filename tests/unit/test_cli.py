import pytest

from inferfleet import cli, runner


def test_known_stages_follow_site_yml():
    stages = runner.known_stages()
    assert stages[0] == "preflight"
    order = ["preflight", "tune", "docker", "images", "fabric", "models", "serve", "bench"]
    assert [s for s in order if s in stages] == stages


def test_up_rejects_unknown_stage(tmp_path, capsys):
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all: {}\n")
    assert cli.main(["up", "-i", str(inventory), "--stages", "preflight,warp"]) == 2
    assert "unknown stage(s) warp" in capsys.readouterr().err


def test_up_rejects_missing_inventory(tmp_path, capsys):
    assert cli.main(["up", "-i", str(tmp_path / "none.yml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_extra_vars_take_key_value_mappings_and_files(tmp_path):
    assert cli._extravars(["a=1", "b=x=y"]) == {"a": "1", "b": "x=y"}
    varfile = tmp_path / "vars.yml"
    varfile.write_text("host_tuning_kernel_cmdline: {nosmt: null}\n")
    assert cli._extravars(['{"c": [1, 2]}', f"@{varfile}"]) == {"c": [1, 2],
                                                              "host_tuning_kernel_cmdline": {"nosmt": None}}
    for bad in (["novalue"], ["[1, 2]"], ["{a: [1"]):
        with pytest.raises(SystemExit):
            cli._extravars(bad)


def test_sandbox_rejects_unknown_profile(capsys):
    assert cli.main(["sandbox", "up", "--profiles", "gaudi2,tpu"]) == 2
    assert "unknown sandbox profile" in capsys.readouterr().err


def test_run_result_summary():
    result = runner.RunResult(rc=0, status="successful", elapsed=1.0,
                              hosts={"a": runner.HostRecap("a", ok=3, changed=1)},
                              results=[runner.TaskResult("a", "t", "ok",
                                                         data={"ansible_facts": {"k": 1}})])
    assert result.ok and result.changed == 1 and result.failures == []
    assert result.facts("a", "k") == 1 and result.facts("b", "k") is None
    result.hosts["a"].unreachable = 1
    assert not result.ok
