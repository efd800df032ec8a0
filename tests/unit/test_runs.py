import os
import stat
from datetime import datetime, timedelta, timezone

import pytest

from inferfleet import runs
from inferfleet.paths import project_dir

T0 = datetime(2025, 3, 4, 5, 6, 7, 123456, tzinfo=timezone.utc)


def _make(root, command="up", seconds=0, **record):
    moment = T0 + timedelta(seconds=seconds)
    path = runs.create(command, root=root, keep=1000, now=moment)
    if record:
        runs.update_record(path, record)
    return path


def test_run_id_is_utc_command_and_six_hex():
    local = T0.astimezone(timezone(timedelta(hours=8)))
    assert runs.run_id("up", local, "a1b2c3") == "20250304T050607Z-up-a1b2c3"
    assert runs.RUN_ID.match(runs.run_id("up", T0, "a1b2c3"))
    # a name from a playbook path becomes one safe path component
    assert runs.run_id("../Site.YML", T0, "000000") == "20250304T050607Z-site_yml-000000"
    assert runs.run_id("///", T0, "000000") == "20250304T050607Z-run-000000"


def test_create_makes_a_private_directory_with_its_first_record(tmp_path):
    path = runs.create("status", root=tmp_path / "runs", record={"argv": ["status", "-i", "x"]}, keep=5, now=T0)
    assert path.parent == tmp_path / "runs"
    match = runs.RUN_ID.match(path.name)
    assert match and match.group(1) == "20250304T050607Z" and match.group(2) == "status"
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    record = runs.read_record(path)
    assert record["id"] == path.name and record["command"] == "status"
    assert record["started"] == "2025-03-04T05:06:07.123456Z"
    assert record["argv"] == ["status", "-i", "x"] and record["rc"] is None and record["ok"] is None
    assert record["pid"] == os.getpid()


def test_create_in_the_same_second_gives_distinct_directories(tmp_path):
    paths = {runs.create("up", root=tmp_path, keep=100, now=T0) for _ in range(10)}
    assert len(paths) == 10 and all(p.is_dir() for p in paths)


def test_update_record_merges_and_read_record_tolerates_damage(tmp_path):
    path = _make(tmp_path)
    runs.update_record(path, {"rc": 0, "ok": True})
    record = runs.read_record(path)
    assert record["rc"] == 0 and record["ok"] is True and record["command"] == "up"
    assert not list(path.glob(".*.tmp"))
    (path / runs.RECORD).write_text("{half")
    assert runs.read_record(path) == {}
    (path / runs.RECORD).write_text("[1, 2]")
    assert runs.read_record(path) == {}
    assert runs.read_record(tmp_path / "missing") == {}


def test_list_runs_newest_first_and_only_run_directories(tmp_path):
    old = _make(tmp_path, "up", 0, ok=True)
    new = _make(tmp_path, "down", 60)
    (tmp_path / "notes").mkdir()
    (tmp_path / "20250304T050607Z-up-zzzzzz").mkdir()  # not hex: not a run
    (tmp_path / "20250304T050607Z-up-abcdef.txt").write_text("a file")
    entries = runs.list_runs(tmp_path)
    assert [e["id"] for e in entries] == [new.name, old.name]
    assert entries[0]["path"] == str(new) and entries[1]["ok"] is True
    assert runs.list_runs(tmp_path / "none") == []


def test_list_runs_orders_runs_of_the_same_second_by_their_start(tmp_path):
    first = _make(tmp_path)
    second = _make(tmp_path)
    runs.update_record(first, {"started": "2025-03-04T05:06:07.000001Z"})
    runs.update_record(second, {"started": "2025-03-04T05:06:07.900000Z"})
    assert [e["id"] for e in runs.list_runs(tmp_path)] == [second.name, first.name]
    # a run whose record is gone still sorts by the second in its name
    (first / runs.RECORD).unlink()
    later = _make(tmp_path, seconds=1)
    assert [e["id"] for e in runs.list_runs(tmp_path)] == [later.name, second.name, first.name]


def test_prune_deletes_the_oldest_beyond_keep_and_nothing_else(tmp_path):
    made = [_make(tmp_path, seconds=i, finished="x") for i in range(5)]
    other = tmp_path / "keep-me"
    other.mkdir()
    removed = runs.prune(tmp_path, 2)
    assert sorted(removed) == sorted(made[:3])
    assert [e["id"] for e in runs.list_runs(tmp_path)] == [made[4].name, made[3].name]
    assert other.is_dir()
    assert runs.prune(tmp_path, 2) == []


def test_prune_spares_the_protected_run_and_runs_in_progress(tmp_path):
    running = _make(tmp_path, seconds=0)  # this process, not finished: in progress
    protected = _make(tmp_path, seconds=1, finished="x")
    dead = _make(tmp_path, seconds=2, pid=2**22 + 12345)  # no such process: it crashed, prunable
    newest = _make(tmp_path, seconds=3, finished="x")
    removed = runs.prune(tmp_path, 1, protect=protected)
    assert removed == [dead]
    assert running.is_dir() and protected.is_dir() and newest.is_dir()
    runs.update_record(running, {"finished": "x"})
    assert runs.prune(tmp_path, 1, protect=newest) == [protected, running]


def test_create_keeps_at_most_keep_runs(tmp_path):
    made = [runs.create("up", root=tmp_path, keep=3, now=T0 + timedelta(seconds=i)) for i in range(5)]
    for path in made:
        runs.update_record(path, {"finished": "x"})
    newest = runs.create("up", root=tmp_path, keep=3, now=T0 + timedelta(seconds=9))
    assert [e["path"] for e in runs.list_runs(tmp_path)] == [str(newest), str(made[4]), str(made[3])]


def test_keep_count_from_the_environment(monkeypatch):
    monkeypatch.delenv("INFERFLEET_RUNS_KEEP", raising=False)
    assert runs.keep_count() == 50
    monkeypatch.setenv("INFERFLEET_RUNS_KEEP", "7")
    assert runs.keep_count() == 7
    for bad in ("0", "-1", "ten", "2.5"):
        monkeypatch.setenv("INFERFLEET_RUNS_KEEP", bad)
        with pytest.raises(ValueError, match="INFERFLEET_RUNS_KEEP must be a whole number >= 1"):
            runs.keep_count()


def test_runs_root_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("INFERFLEET_RUNS_DIR", raising=False)
    assert runs.runs_root() == project_dir() / ".cache" / "runs"
    monkeypatch.setenv("INFERFLEET_RUNS_DIR", str(tmp_path / "r"))
    assert runs.runs_root() == tmp_path / "r"


def test_resolve_latest_whole_id_and_unique_prefix(tmp_path):
    with pytest.raises(LookupError, match="no runs under"):
        runs.resolve("latest", tmp_path)
    a = _make(tmp_path, seconds=0)
    b = _make(tmp_path, seconds=3600)
    assert runs.resolve("latest", tmp_path)["path"] == str(b)
    assert runs.resolve(a.name, tmp_path)["path"] == str(a)
    assert runs.resolve("20250304T05", tmp_path)["path"] == str(a)
    with pytest.raises(LookupError, match=r"'2025' is ambiguous, 2 runs start with it"):
        runs.resolve("2025", tmp_path)
    with pytest.raises(LookupError, match="no run 'nope'"):
        runs.resolve("nope", tmp_path)


def test_redact_argv_hides_secret_looking_extra_vars_only():
    argv = ["up", "-i", "hosts.yml", "-e", "ansible_become_password=s3cret", "-e", "model=qwen",
            "--extra-vars=api_token=t0k", "-eregistry_pass=p4ss", "--extra", '{"vault_secret": "v4l"}',
            "-e", "@vars.yml", "-e", '{"a": 1}', "--limit", "gaudi"]
    redacted = runs.redact_argv(argv)
    assert redacted == ["up", "-i", "hosts.yml", "-e", "ansible_become_password=<redacted>", "-e", "model=qwen",
                        "--extra-vars=api_token=<redacted>", "-eregistry_pass=<redacted>", "--extra", "<redacted>",
                        "-e", "@vars.yml", "-e", '{"a": 1}', "--limit", "gaudi"]
    assert not any(secret in " ".join(redacted) for secret in ("s3cret", "t0k", "p4ss", "v4l"))


def test_a_tasks_duration_comes_from_the_job_events(tmp_path):
    import json

    from inferfleet.runs import task_seconds

    events = tmp_path / "artifacts" / "playbook" / "job_events"
    events.mkdir(parents=True)
    for n, (host, task, duration) in enumerate((("a", "Build", 3.5), ("b", "Build", 4.25), ("a", "Run", 1.0))):
        (events / f"{n}.json").write_text(json.dumps({"event": "runner_on_ok", "event_data": {
            "host": host, "task": task, "duration": duration}}))
    assert task_seconds(tmp_path, "Build", "b") == 4.25 and task_seconds(tmp_path, "Run") == 1.0
    assert task_seconds(tmp_path, "Missing") != task_seconds(tmp_path, "Missing")  # NaN
