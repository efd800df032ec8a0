import json
import os
import re
import signal
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from types import SimpleNamespace

import ansible_runner
import pytest

from inferfleet import cli, runner, runs
from inferfleet.inventory import load_hosts
from inferfleet.paths import project_dir


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


# --- the ansible-playbook surface: version, verbosity, vault, become, --limit, run directories ---

HOSTS = """\
all:
  children:
    gaudi:
      vars:
        inferfleet_platform: gaudi
        inferfleet_accelerator: {model: HL-225, count: 8, memory_gib: 96}
      hosts:
        gaudi-1: {ansible_host: 127.0.0.1, ansible_port: 1}
        gaudi-2: {ansible_host: 127.0.0.1, ansible_port: 1}
    cpu:
      vars:
        inferfleet_platform: cpu
      hosts:
        cpu-1: {ansible_host: 127.0.0.1, ansible_port: 1}
"""


@pytest.fixture(autouse=True)
def runs_dir(tmp_path, monkeypatch):
    """Runs go under the test's tmp dir; ANSIBLE_CONFIG, which the --limit check sets, is put back afterwards."""
    monkeypatch.setenv("INFERFLEET_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.delenv("INFERFLEET_RUNS_KEEP", raising=False)
    monkeypatch.setenv("ANSIBLE_CONFIG", str(project_dir() / "ansible.cfg"))
    return tmp_path / "runs"


@pytest.fixture
def inventory(tmp_path):
    path = tmp_path / "hosts.yml"
    path.write_text(HOSTS)
    return path


@pytest.fixture
def fake_run(monkeypatch):
    """ansible_runner.run replaced: records its arguments, streams a few events, writes stdout as runner would."""
    calls = []

    def run(**kwargs):
        calls.append(kwargs)
        handler = kwargs["event_handler"]
        handler({"event": "verbose", "stdout": "Using /x/ansible.cfg as config file"})
        handler({"event": "runner_on_ok", "event_data": {"host": "gaudi-1", "task": "preflight : Show cards",
                                                         "res": {"changed": True, "msg": "2 cards"}}})
        handler({"event": "playbook_on_stats", "event_data": {"ok": {"gaudi-1": 3}, "changed": {"gaudi-1": 1}}})
        artifacts = Path(kwargs["private_data_dir"]) / "artifacts" / kwargs["ident"]
        artifacts.mkdir(parents=True)
        (artifacts / "stdout").write_text("PLAY [all]\n")
        return SimpleNamespace(rc=0, status="successful")

    monkeypatch.setattr(ansible_runner, "run", run)
    return calls


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_version_prints_inferfleet_and_ansible_core(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"inferfleet {version('inferfleet')}"
    assert f"ansible-core {version('ansible-core')}" in lines


def test_parser_takes_ansible_playbook_flags():
    parser = cli.build_parser()
    args = parser.parse_args(["-v", "up", "-i", "h.yml", "-vv", "--vault-id", "prod@prompt", "--vault-id", "f",
                              "--vault-password-file", "pw", "--ask-vault-pass", "-K"])
    assert (args.global_verbosity, args.verbosity) == (1, 2)
    assert args.vault_id == ["prod@prompt", "f"] and args.vault_password_file == ["pw"]
    assert args.ask_vault_pass and args.ask_become_pass
    for command in ("status", "down"):
        args = parser.parse_args([command, "-i", "h.yml", "-vvv", "-J", "--ask-become-pass", "--limit", "gaudi"])
        assert args.verbosity == 3 and args.ask_vault_pass and args.ask_become_pass and args.limit == "gaudi"
    args = parser.parse_args(["up", "-i", "h.yml"])
    assert (args.global_verbosity, args.verbosity, args.vault_id, args.ask_vault_pass) == (0, 0, [], False)


def test_limit_matching_no_host_is_refused_before_anything_runs(inventory, fake_run, runs_dir, capsys):
    for command in ("up", "status", "down"):
        assert cli.main([command, "-i", str(inventory), "--limit", "nvidia"]) == 2
        err = capsys.readouterr().err
        assert f"ERROR   inventory {inventory}: --limit: 'nvidia' matches no host of the inventory" in err
        assert "(hosts: cpu-1, gaudi-1, gaudi-2)" in err
    assert fake_run == [] and not runs_dir.exists()


def test_limit_lists_only_the_first_hosts(tmp_path):
    many = tmp_path / "many.ini"
    many.write_text("\n".join(f"h{i:02d} ansible_host=127.0.0.1" for i in range(12)) + "\n")
    hosts, (problem,) = load_hosts(many, limit="x")
    assert hosts == [] and re.search(r"\(hosts: h00, h01, .*, h09, \.\.\. \(12 in all\)\)", problem.fix)
    hosts, problems = load_hosts(many, limit="h0*:&h05")
    assert [h.name for h in hosts] == ["h05"] and problems == []


def test_inventory_without_hosts_is_refused(tmp_path, fake_run, capsys):
    empty = tmp_path / "empty.yml"
    empty.write_text("all:\n  children:\n    gaudi: {}\n")
    assert cli.main(["up", "-i", str(empty)]) == 2
    assert f"ERROR   inventory {empty}: hosts: the inventory has no hosts" in capsys.readouterr().err
    assert fake_run == []


def test_up_records_a_run_directory(inventory, fake_run, runs_dir, capsys):
    assert cli.main(["up", "-i", str(inventory), "--limit", "gaudi", "--stages", "preflight", "--check",
                     "-e", "registry_password=hunter2"]) == 0
    out = capsys.readouterr().out
    (run_dir,) = runs_dir.iterdir()
    assert runs.RUN_ID.match(run_dir.name) and run_dir.name.split("-")[1] == "up"
    call = fake_run[0]
    assert call["private_data_dir"] == str(run_dir)
    assert call["extravars"] == {"registry_password": "hunter2", "inferfleet_run_dir": str(run_dir)}
    assert call["limit"] == "gaudi" and call["tags"] == "preflight" and call["cmdline"] == "--check"
    assert call["verbosity"] == 0 and call["passwords"] is None
    assert (run_dir / "artifacts" / "playbook" / "stdout").is_file()
    record = json.loads((run_dir / "run.json").read_text())
    assert record["command"] == "up" and record["inventory"] == str(inventory)
    assert record["argv"][-2:] == ["-e", "registry_password=<redacted>"]
    assert record["stages"] == ["preflight"] and record["limit"] == "gaudi" and record["check"] is True
    assert record["rc"] == 0 and record["ok"] is True and record["elapsed"] >= 0
    assert record["recap"]["gaudi-1"]["ok"] == 3 and record["recap"]["gaudi-1"]["changed"] == 1
    assert record["started"] < record["finished"]
    log = (run_dir / "log.txt").read_text()
    assert "inferfleet: running stages preflight on" in log and "gaudi-1" in log and "RECAP" in log
    assert f"recorded in {run_dir}" in out
    # without -v Ansible's other output is not shown
    assert "Using /x/ansible.cfg" not in out


def test_verbosity_reaches_runner_and_shows_ansible_output(inventory, fake_run, runs_dir, capsys):
    assert cli.main(["-v", "up", "-i", str(inventory), "-vv"]) == 0
    assert fake_run[0]["verbosity"] == 3
    assert "Using /x/ansible.cfg as config file" in capsys.readouterr().out
    (run_dir,) = runs_dir.iterdir()
    assert "Using /x/ansible.cfg as config file" in (run_dir / "log.txt").read_text()
    for command in ("status", "down"):
        assert cli.main([command, "-i", str(inventory), "-vvvv"]) == 0
        assert fake_run[-1]["verbosity"] == 4


def test_vault_and_become_options_and_passwords_reach_runner(inventory, fake_run, tmp_path, monkeypatch):
    (tmp_path / "pw").write_text("x\n")
    (tmp_path / "prod-pw").write_text("y\n")
    monkeypatch.chdir(tmp_path)  # relative paths are the user's, made absolute for runner
    prompts = []
    answers = {"BECOME password: ": "b-secret", "Vault password: ": "v-secret",
               "Vault password (stage): ": "s-secret"}
    monkeypatch.setattr(cli.getpass, "getpass", lambda prompt: prompts.append(prompt) or answers[prompt])
    assert cli.main(["status", "-i", str(inventory), "--vault-id", "prod@prod-pw", "--vault-id", "stage@prompt",
                     "--vault-password-file", "pw", "--ask-vault-pass", "-K"]) == 0
    assert sorted(prompts) == sorted(answers)
    call = fake_run[0]
    assert call["cmdline"].split() == ["--vault-id", f"prod@{tmp_path / 'prod-pw'}", "--vault-id", "stage@prompt",
                                       "--vault-password-file", str(tmp_path / "pw"), "--ask-vault-pass",
                                       "--ask-become-pass"]
    assert call["passwords"] == {r"^Vault password:\s*?$": "v-secret", r"^BECOME password.*:\s*?$": "b-secret",
                                 r"^Vault password \(stage\):\s*?$": "s-secret"}
    assert call["suppress_env_files"] is True
    for secret in answers.values():
        assert secret not in call["cmdline"] and secret not in json.dumps(call["envvars"])


def test_password_patterns_match_ansible_prompts():
    _, passwords = runner.ansible_options(["a.b@prompt"], secrets=runner.Secrets(
        vault="v", become="b", vault_ids={"a.b": "ab"}))
    answer = {prompt: next((a for p, a in passwords.items() if re.search(p, prompt, re.M)), None)
              for prompt in ("Vault password: ", "BECOME password: ", "BECOME password[defaults to SSH password]: ",
                             "Vault password (a.b): ", "Vault password (aXb): ", "New vault password: ")}
    assert answer == {"Vault password: ": "v", "BECOME password: ": "b",
                      "BECOME password[defaults to SSH password]: ": "b", "Vault password (a.b): ": "ab",
                      "Vault password (aXb): ": None, "New vault password: ": None}


def test_missing_vault_file_is_refused_before_any_prompt(inventory, fake_run, runs_dir, monkeypatch, capsys):
    monkeypatch.setattr(cli.getpass, "getpass", lambda prompt: pytest.fail(f"asked {prompt!r}"))
    assert cli.main(["up", "-i", str(inventory), "--vault-password-file", "nope", "-K"]) == 2
    assert "--vault-password-file nope is not a file" in capsys.readouterr().err
    assert cli.main(["up", "-i", str(inventory), "--vault-id", "prod@nope", "-K"]) == 2
    assert "--vault-id prod@nope: nope is not a file" in capsys.readouterr().err
    assert fake_run == [] and not runs_dir.exists()


def _runner_writing_like_ansible_runner(monkeypatch, configs):
    """ansible_runner.run up to the spawn of ansible-playbook: the real init_runner (which dumps kwargs into env/
    unless told not to, and prepares command and env), then the `command` and stdout artifacts Runner.run writes."""
    from ansible_runner.interface import init_runner

    def run(**kwargs):
        handler = kwargs["event_handler"]
        config = init_runner(**kwargs, cancel_callback=lambda: False).config
        configs.append(config)
        artifacts = Path(config.artifact_dir)
        artifacts.mkdir(parents=True, exist_ok=True)
        (artifacts / "command").write_text(json.dumps({"command": config.command, "cwd": config.cwd,
                                                       "env": config.env}))
        (artifacts / "stdout").write_text("BECOME password: \nVault password: \n")
        handler({"event": "playbook_on_stats", "event_data": {"ok": {"gaudi-1": 1}}})
        return SimpleNamespace(rc=0, status="successful")

    monkeypatch.setattr(ansible_runner, "run", run)


def test_secrets_are_absent_from_every_file_of_the_run(inventory, runs_dir, monkeypatch, capsys):
    secrets = {"BECOME password: ": "become-Zq81x", "Vault password: ": "vault-Pw93k",
               "Vault password (prod): ": "prod-Lm27c"}
    monkeypatch.setattr(cli.getpass, "getpass", lambda prompt: secrets[prompt])
    monkeypatch.setenv("SOME_API_TOKEN", "envtoken-Ux55")  # the caller's environment, copied by runner
    configs = []
    _runner_writing_like_ansible_runner(monkeypatch, configs)
    assert cli.main(["up", "-i", str(inventory), "-vvv", "--ask-vault-pass", "-K", "--vault-id", "prod@prompt"]) == 0
    # the answers did reach runner, to answer the prompts...
    assert sorted(configs[0].expect_passwords.values(), key=str) == sorted([*secrets.values(), None, None], key=str)
    # ...and are nowhere on disk, nor printed
    (run_dir,) = runs_dir.iterdir()
    files = _files(run_dir)
    assert {"run.json", "log.txt", "command", "stdout"} <= {f.name for f in files}
    for path in files:
        text = path.read_bytes()
        for secret in (*secrets.values(), "envtoken-Ux55"):
            assert secret.encode() not in text, f"{secret} in {path}"
    command = json.loads((run_dir / "artifacts" / "playbook" / "command").read_text())
    assert "SOME_API_TOKEN" in command["env_inherited"] and command["env"]["ANSIBLE_CONFIG"]
    out = capsys.readouterr()
    assert not any(secret in out.out + out.err for secret in secrets.values())


def test_prompts_are_answered_by_a_real_ansible_playbook(tmp_path, runs_dir):
    """The prompt patterns against ansible-playbook itself: a local play (no connection) with vaulted vars."""
    from ansible.parsing.vault import VaultLib, VaultSecret

    (tmp_path / "default.yml").write_bytes(VaultLib([("default", VaultSecret(b"pw-d"))]).encrypt("one: alpha\n"))
    (tmp_path / "lab.yml").write_bytes(VaultLib([("lab", VaultSecret(b"pw-l"))]).encrypt("two: beta\n",
                                                                                            vault_id="lab"))
    (tmp_path / "local.ini").write_text("box ansible_connection=local ansible_python_interpreter=python3\n")
    (tmp_path / "play.yml").write_text(
        "- hosts: all\n  gather_facts: false\n  vars_files: [default.yml, lab.yml]\n"
        "  tasks:\n    - name: Show\n      ansible.builtin.debug:\n        msg: '{{ one }} {{ two }}'\n")

    def hung(*_):
        raise TimeoutError("ansible-playbook waits for a password no pattern answered")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)
    try:
        result = runner.run_playbook(tmp_path / "local.ini", str(tmp_path / "play.yml"), vault_ids=["lab@prompt"],
                                     secrets=runner.Secrets(vault="pw-d", become="pw-b", vault_ids={"lab": "pw-l"}))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert result.ok, (result.errors, result.failures)
    assert [r.msg for r in result.results if r.task == "Show"] == ["alpha beta"]
    assert result.run_dir.parent == runs_dir and runs.read_record(result.run_dir)["command"] == "play"
    assert (result.run_dir / "artifacts" / "playbook" / "stdout").read_text().count("password") >= 3
    for path in _files(result.run_dir):
        assert not any(s in path.read_bytes() for s in (b"pw-d", b"pw-l", b"pw-b")), path


def test_runs_lists_and_shows(inventory, fake_run, runs_dir, capsys):
    assert cli.main(["runs"]) == 0
    assert "no runs under" in capsys.readouterr().out
    assert cli.main(["runs", "show", "latest"]) == 2
    assert "no runs under" in capsys.readouterr().err
    assert cli.main(["up", "-i", str(inventory)]) == 0
    assert cli.main(["down", "-i", str(inventory)]) == 0
    capsys.readouterr()
    assert cli.main(["runs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["id", "command", "started", "elapsed", "ok", "inventory"]
    assert [line.split()[1] for line in lines[1:]] == ["down", "up"]
    assert all(line.split()[4] == "ok" and line.endswith(str(inventory)) for line in lines[1:])
    assert cli.main(["runs", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r["command"] for r in listed] == ["down", "up"] and listed[0]["ok"] is True
    up_id = listed[1]["id"]
    assert cli.main(["runs", "show", up_id[:-2]]) == 0
    out = capsys.readouterr().out
    path, _, document = out.partition("\n")
    assert path == str(runs_dir / up_id) and json.loads(document)["command"] == "up"
    assert cli.main(["runs", "show", "latest", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["command"] == "down" and shown["path"] == listed[0]["path"]
    assert cli.main(["runs", "show", "2"]) == 2
    assert "is ambiguous" in capsys.readouterr().err
    assert cli.main(["runs", "show", "nope"]) == 2


def test_runs_keep_only_the_newest(inventory, fake_run, runs_dir, monkeypatch):
    monkeypatch.setenv("INFERFLEET_RUNS_KEEP", "2")
    for _ in range(4):
        assert cli.main(["status", "-i", str(inventory)]) == 0
    assert len(list(runs_dir.iterdir())) == 2
    monkeypatch.setenv("INFERFLEET_RUNS_KEEP", "none")
    assert cli.main(["status", "-i", str(inventory)]) == 2
    assert len(fake_run) == 4


def test_api_up_returns_its_run_dir(inventory, fake_run, runs_dir):
    result = runner.up(inventory, limit="cpu-1")
    assert isinstance(result, runner.RunResult) and result.ok
    assert result.run_dir.parent == runs_dir and result.run_dir.name.split("-")[1] == "up"
    assert result.to_dict()["run_dir"] == str(result.run_dir)
    assert fake_run[0]["extravars"]["inferfleet_run_dir"] == str(result.run_dir)
    mine = runs_dir / "mine"
    mine.mkdir()
    assert runner.run_playbook(inventory, "playbooks/status.yml", run_dir=mine).run_dir == mine
    assert runs.read_record(mine)["rc"] == 0 and fake_run[1]["private_data_dir"] == str(mine)


def test_limit_check_reads_the_inventory_with_the_projects_ansible_cfg(inventory, tmp_path):
    """In a fresh process (ansible reads its configuration once): the check imports ansible under our ansible.cfg,
    even when the caller's environment names another one."""
    other = tmp_path / "other.cfg"
    other.write_text("[defaults]\n")
    code = (f"from inferfleet.inventory import load_hosts; "
            f"print([h.name for h in load_hosts({str(inventory)!r}, limit='gaudi')[0]]); "
            "import ansible.constants as C; print(C.CONFIG_FILE)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "ANSIBLE_CONFIG": str(other)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["['gaudi-1', 'gaudi-2']", str(project_dir() / "ansible.cfg")]


def test_a_run_that_breaks_before_the_playbook_ends_is_recorded_as_ended(inventory, runs_dir, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise ValueError("the plan is invalid")

    monkeypatch.setattr(runner, "up", broken)
    assert cli.main(["up", "-i", str(inventory)]) == 2
    assert "inferfleet: the plan is invalid" in capsys.readouterr().err
    (entry,) = runs.list_runs(runs_dir)
    assert entry["finished"] and entry["ok"] is False and "the plan is invalid" in entry["status"]
    assert not runs.in_progress(entry)


def test_plan_saves_a_valid_plan_for_up(inventory, tmp_path, fake_run, runs_dir, capsys):
    saved = tmp_path / "plan.json"
    assert cli.main(["plan", "-i", str(inventory), "--save", str(saved), "--facts-dir", str(tmp_path)]) == 0
    document = json.loads(saved.read_text())
    assert set(document) == {"format", "hash", "hosts"} and sorted(document["hosts"]) == ["cpu-1", "gaudi-1",
                                                                                         "gaudi-2"]
    assert oct(saved.stat().st_mode & 0o777) == "0o600"
    assert cli.main(["up", "-i", str(inventory), "--plan", str(saved)]) == 0
    assert fake_run[0]["extravars"]["inferfleet_saved_plan"] == str(saved.resolve())
    capsys.readouterr()
    for bad, words in (("{}", "not a saved plan"), ("[", "cannot read a saved plan")):
        (tmp_path / "bad.json").write_text(bad)
        assert cli.main(["up", "-i", str(inventory), "--plan", str(tmp_path / "bad.json")]) == 2
        assert words in capsys.readouterr().err
    assert len(fake_run) == 1


def test_an_invalid_plan_is_not_saved_and_up_refuses_it_as_plan_does(tmp_path, fake_run, capsys):
    bad = tmp_path / "bad.yml"
    bad.write_text(HOSTS.replace("count: 8", "count: eight"))
    saved = tmp_path / "plan.json"
    assert cli.main(["plan", "-i", str(bad), "--save", str(saved)]) == 2
    plan_errors = [line for line in capsys.readouterr().out.splitlines() if line.startswith("ERROR")]
    assert not saved.exists() and len(plan_errors) == 2
    assert "host gaudi-1: inferfleet_accelerator.count: must be a whole number, got 'eight'" in plan_errors[0]
    assert cli.main(["up", "-i", str(bad)]) == 2
    assert capsys.readouterr().err.splitlines() == plan_errors
    assert fake_run == []
