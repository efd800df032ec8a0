"""The project's own bad-input set (tests/fixtures/bad_inventories/cases.yml): each case breaks a fresh copy of
inventories/prod, and `inferfleet plan` and `inferfleet up` must both refuse it with the same ERROR lines, each
naming the host (or the inventory), the full variable path, what was given and a fix, and never a traceback.
`up` must refuse before Ansible starts; a sample also goes through ansible-playbook's preflight.

Every copy has each ansible_host rewritten to 127.0.0.1 before anything runs: prod's 10.20.x addresses are never
contacted.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
import yaml
from helpers import FIXTURES, ROOT

from inferfleet import cli, runner

PROD = ROOT / "inventories" / "prod"
CASES_FILE = FIXTURES / "bad_inventories" / "cases.yml"
CASES = yaml.safe_load(CASES_FILE.read_text())
CASE_BY_ID = {case["id"]: case for case in CASES}
LOOPBACK = "127.0.0.1"
ERROR_PREFIX = "ERROR   "
# the part of the sample that also goes through real ansible-playbook (playbooks/00-preflight.yml)
ANSIBLE_SAMPLE = ["accel-count-eight", "platform-tpu", "typo-inferfleet-servics", "host-vars-yaml-error",
                  "max-num-seqs-zero", "dtype-bf61"]


# --- a copy of the prod inventory and the mutations ---------------------------------------------------------------
def _assert_loopback_only(inventory: Path) -> None:
    """No file of the copy may name a host by anything but 127.0.0.1 (prod's fleet is 10.20.x)."""
    for path in inventory.rglob("*"):
        if path.is_file():
            text = path.read_text(errors="replace")
            assert "10.20." not in text, f"{path} still holds a prod address"
            for address in re.findall(r"ansible_host:\s*(\S+)", text):
                assert address.strip("'\"") == LOOPBACK, f"{path}: ansible_host {address} is not {LOOPBACK}"


def prod_copy(dest: Path) -> Path:
    """A copy of inventories/prod at dest with every ansible_host set to 127.0.0.1."""
    shutil.copytree(PROD, dest)
    hosts_file = dest / "hosts.yml"
    text = re.sub(r"(ansible_host:\s*)\S+", rf"\g<1>{LOOPBACK}", hosts_file.read_text())
    hosts_file.write_text(text)
    data = yaml.safe_load(text)

    def addresses(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "ansible_host":
                    yield value
                else:
                    yield from addresses(value)

    found = list(addresses(data))
    assert found and set(found) == {LOOPBACK}, found
    _assert_loopback_only(dest)
    return dest


def _load(path: Path):
    if not path.exists():
        return {}
    text = path.read_text()
    return json.loads(text) if path.suffix == ".json" else (yaml.safe_load(text) or {})


def _dump(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".json":
        path.write_text(json.dumps(data, indent=2) + "\n")
    else:
        path.write_text("---\n" + yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=1000))


def _key(container, segment: str):
    return int(segment) if isinstance(container, list) and re.fullmatch(r"-?\d+", segment) else segment


def _parent(data, path: str, create: bool):
    """The container holding the last segment of a dotted path, and that segment's key."""
    segments = path.split(".")
    node = data
    for segment in segments[:-1]:
        key = _key(node, segment)
        if create and isinstance(node, dict) and key not in node:
            node[key] = {}
        node = node[key]
    return node, _key(node, segments[-1])


def apply_op(inventory: Path, op: dict) -> None:
    if "set" in op:
        path = inventory / op["set"]
        data = _load(path)
        value = op["value"]
        if "repeat" in op:
            value = op.get("prefix", "") + str(value) * op["repeat"]
        node, key = _parent(data, op["path"], create=True)
        if isinstance(node, list) and key == len(node):
            node.append(value)
        else:
            node[key] = value
        _dump(path, data)
    elif "delete" in op:
        path = inventory / op["delete"]
        if "path" not in op:
            path.unlink()
            return
        data = _load(path)
        node, key = _parent(data, op["path"], create=False)
        del node[key]
        _dump(path, data)
    elif "rename" in op:
        path = inventory / op["rename"]
        data = _load(path)
        node, key = _parent(data, op["path"], create=False)
        node[op["to"]] = node.pop(key)
        _dump(path, data)
    elif "write" in op:
        path = inventory / op["write"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(op["text"])
    else:
        raise AssertionError(f"unknown op {op}")


def build_case(case: dict, dest: Path) -> str:
    """The mutated copy for a case; returns what `-i` gets."""
    inventory = prod_copy(dest)
    for op in case["ops"]:
        apply_op(inventory, op)
    _assert_loopback_only(inventory)
    return str(inventory / case.get("inventory", "."))


# --- running the CLI in-process -----------------------------------------------------------------------------------
def run_cli(argv: list[str], capsys) -> tuple[int | None, str, str, str]:
    """(exit code, stdout, stderr, what was raised) of inferfleet.cli.main(argv); nothing escapes."""
    capsys.readouterr()
    raised = ""
    try:
        rc = cli.main(argv)
    except SystemExit as exc:  # argparse and `raise SystemExit(message)`: a message is not a refusal line
        rc = 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
        if not isinstance(exc.code, int) and exc.code is not None:
            raised = f"SystemExit({exc.code!r})"
    except Exception as exc:  # any exception is the bug being looked for
        rc = None
        raised = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    out, err = capsys.readouterr()
    return rc, out, err, raised


def error_lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines() if line.startswith(ERROR_PREFIX)]


@pytest.fixture
def no_ansible(monkeypatch, tmp_path):
    """`up` must refuse before Ansible starts: starting it is a failure (and ansible-runner is blocked too, so that
    no path around run_playbook reaches a host). Run records, if any, go to tmp_path."""

    def refuse(*args, **kwargs):
        raise AssertionError("Ansible started on an invalid inventory")

    monkeypatch.setattr(runner, "run_playbook", refuse)
    monkeypatch.setattr(runner, "up", refuse)
    import ansible_runner

    for name in ("run", "run_async", "run_command", "run_command_async"):
        if hasattr(ansible_runner, name):
            monkeypatch.setattr(ansible_runner, name, refuse)
    monkeypatch.setenv("INFERFLEET_RUNS_DIR", str(tmp_path / "runs"))


def _fields(case: dict) -> list[str]:
    return case["field"] if isinstance(case["field"], list) else [case["field"]]


def matching_lines(case: dict, lines: list[str]) -> list[str]:
    """The ERROR lines that say what the case expects, in the contract's shape."""
    wanted = [case.get("given")] if case.get("given") is not None else []
    wanted += case.get("contains", [])
    found = []
    for line in lines:
        for field in _fields(case):
            if case["host"] == "inventory":
                shaped = line.startswith(f"{ERROR_PREFIX}inventory ") and field in line
            else:
                shaped = line.startswith(f"{ERROR_PREFIX}host {case['host']}: {field}: ")
            if shaped and "(fix: " in line and all(str(w) in line for w in wanted):
                found.append(line)
                break
    return found


def _expectation(case: dict) -> str:
    where = "inventory ..." if case["host"] == "inventory" else f"host {case['host']}"
    extra = [case.get("given")] if case.get("given") is not None else []
    extra += case.get("contains", [])
    return (f"an ERROR line `{where}: {' | '.join(_fields(case))}: ... (fix: ...)`"
            + (f" containing {extra}" if extra else ""))


def _report(rc, out, err, raised) -> str:
    return f"exit {rc}\n--- stdout\n{out}\n--- stderr\n{err}" + (f"\n--- raised\n{raised}" if raised else "")


# --- the tests ----------------------------------------------------------------------------------------------------
def test_the_set_is_large_and_well_formed():
    ids = [case["id"] for case in CASES]
    assert len(ids) >= 60
    assert len(set(ids)) == len(ids), "case ids must be unique"
    for case in CASES:
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", case["id"]), case["id"]
        assert case["ops"] and case["host"] and case["field"], case["id"]
        assert all(isinstance(f, str) and f for f in _fields(case)), case["id"]
        assert isinstance(case.get("given", ""), str), f"{case['id']}: quote `given`"
        for key in ("contains", "absent"):
            assert all(isinstance(s, str) and s for s in case.get(key, [])), f"{case['id']}: {key} must be strings"
    assert set(ANSIBLE_SAMPLE) <= set(CASE_BY_ID)


def test_the_intact_copy_plans_valid(tmp_path, capsys):
    """The copy machinery starts from a valid inventory: without mutations, plan accepts it."""
    inventory = prod_copy(tmp_path / "prod")
    rc, out, err, raised = run_cli(["plan", "-i", str(inventory)], capsys)
    assert rc == 0 and not raised, _report(rc, out, err, raised)
    assert "Traceback" not in out + err
    assert not error_lines(out)


def test_a_limit_matching_no_host_is_refused(tmp_path, capsys):
    inventory = prod_copy(tmp_path / "prod")
    rc, out, err, raised = run_cli(["plan", "-i", str(inventory), "--limit", "nosuchhost"], capsys)
    assert rc == 2 and not raised, _report(rc, out, err, raised)
    assert "Traceback" not in out + err
    assert "nosuchhost" in out + err, _report(rc, out, err, raised)
    assert "plan valid" not in out


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_plan_refuses(case, tmp_path, capsys):
    inventory = build_case(case, tmp_path / "inv")
    rc, out, err, raised = run_cli(["plan", "-i", inventory], capsys)
    report = _report(rc, out, err, raised)
    assert not raised, f"plan raised instead of refusing\n{report}"
    assert "Traceback" not in out + err, report
    assert rc == 2, f"plan did not refuse (exit {rc}, expected 2)\n{report}"
    lines = error_lines(out)
    assert matching_lines(case, lines), f"expected {_expectation(case)}\n{report}"
    for line in lines:
        for absent in case.get("absent", []):
            assert absent not in line, f"the refusal blames the wrong thing ({absent!r}): {line}\n{report}"


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_up_refuses_with_the_same_errors_before_ansible(case, tmp_path, capsys, no_ansible):
    inventory = build_case(case, tmp_path / "inv")
    plan_rc, plan_out, plan_err, plan_raised = run_cli(["plan", "-i", inventory], capsys)
    rc, out, err, raised = run_cli(["up", "-i", inventory], capsys)
    report = _report(rc, out, err, raised)
    assert not raised, f"up raised instead of refusing\n{report}"
    assert "Traceback" not in out + err, report
    assert rc == 2, f"up did not refuse (exit {rc}, expected 2)\n{report}"
    up_lines = set(error_lines(err))
    plan_lines = set(error_lines(plan_out))
    assert up_lines, f"up printed no ERROR line on stderr\n{report}"
    assert up_lines == plan_lines, (
        f"up and plan disagree\nonly in plan: {sorted(plan_lines - up_lines)}\n"
        f"only in up: {sorted(up_lines - plan_lines)}")


def _collapse(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("case_id", ANSIBLE_SAMPLE)
def test_ansible_preflight_refuses_with_the_plan_text(case_id, tmp_path, capsys):
    """Through real ansible-playbook: preflight's first play validates on the controller and stops every host, so
    no host is contacted; Ansible's output carries the problem `plan` printed."""
    case = CASE_BY_ID[case_id]
    inventory = build_case(case, tmp_path / "inv")
    rc, out, err, raised = run_cli(["plan", "-i", inventory], capsys)
    problems = [line[len(ERROR_PREFIX):] for line in matching_lines(case, error_lines(out))]
    assert problems, f"plan gave no matching refusal to look for in Ansible's output\n{_report(rc, out, err, raised)}"
    _assert_loopback_only(Path(inventory) if Path(inventory).is_dir() else Path(inventory).parent)
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1",
               # belt and braces: even a host that got past preflight would find nothing on 127.0.0.1:1
               ANSIBLE_REMOTE_PORT="1", ANSIBLE_TIMEOUT="5",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", inventory,
                           str(ROOT / "playbooks" / "00-preflight.yml")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, f"ansible-playbook accepted the inventory\n{output}"
    assert not re.search(r"unreachable=[1-9]", output), f"a host was contacted\n{output}"
    seen = _collapse(output)
    seen_unquoted = seen.replace("''", "'")  # Ansible's YAML output may double single quotes
    if case["host"] == "inventory":
        # Ansible reads the vars files itself, before the project's code runs, and ansible-core 2.19 does not
        # name the file of a YAML error: the refusal is Ansible's own (the CLI names the file, see above)
        assert "YAML parsing failed" in seen, f"Ansible did not refuse the YAML error\n{output}"
        return
    for problem in problems[:1]:
        text = _collapse(problem)
        assert text in seen or text in seen_unquoted, f"Ansible's output lacks {problem!r}\n{output}"
