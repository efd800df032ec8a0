"""runner.run_playbook's ansible-runner options: event_handler, cancel_callback, status_handler, artifact_dir and the
container options. Real ansible-playbook runs on localhost (connection local), except for the container options,
whose hand-over to ansible_runner.run is checked by capturing its keywords (no container engine needed)."""

from __future__ import annotations

import json
import sys
import threading

import pytest

from inferfleet import runner, runs

PLAY = """\
- name: First play
  hosts: all
  gather_facts: false
  tasks:
    - name: One
      ansible.builtin.debug:
        msg: one
    - name: Nap
      ansible.builtin.command: sleep {nap}
      changed_when: false
    - name: Two
      ansible.builtin.debug:
        msg: two
"""


@pytest.fixture
def local(tmp_path, monkeypatch):
    """A local inventory and play under tmp_path, runs and facts kept there too."""
    monkeypatch.setenv("INFERFLEET_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.delenv("INFERFLEET_RUNS_KEEP", raising=False)
    inventory = tmp_path / "local.ini"
    inventory.write_text(f"box ansible_connection=local ansible_python_interpreter={sys.executable}\n")

    def play(nap: float = 0) -> str:
        path = tmp_path / "play.yml"
        path.write_text(PLAY.format(nap=nap))
        return str(path)

    return inventory, play, tmp_path


def test_event_handler_gets_every_raw_event_and_decides_what_runner_saves(local):
    inventory, play, tmp_path = local
    seen: list[dict] = []

    def keep_only_ok(event: dict) -> bool:
        seen.append(event)
        return event.get("event") == "runner_on_ok"

    result = runner.run_playbook(inventory, play(), fact_cache=tmp_path / "facts", event_handler=keep_only_ok)
    assert result.ok and result.status == "successful"
    names = [e["event"] for e in seen]
    assert names[0] == "playbook_on_start" and "playbook_on_stats" in names
    assert [e["event_data"]["task"] for e in seen if e["event"] == "runner_on_ok"] == ["One", "Nap", "Two"]
    # our own handler still builds the result from every event, saved or not
    assert [r.task for r in result.results] == ["One", "Nap", "Two"] and result.hosts["box"].ok == 3
    # runner saved only what the handler kept
    saved = [json.loads(p.read_text())["event"]
             for p in (result.run_dir / "artifacts" / "playbook" / "job_events").glob("*.json")]
    assert saved and set(saved) == {"runner_on_ok"} and len(saved) == 3


def test_cancel_callback_stops_the_run_after_the_first_task(local):
    inventory, play, tmp_path = local
    first_done = threading.Event()
    statuses: list[str] = []

    def on_event(event: dict) -> bool:
        if event.get("event") == "runner_on_ok":
            first_done.set()
        return True

    result = runner.run_playbook(inventory, play(nap=30), fact_cache=tmp_path / "facts", event_handler=on_event,
                                 cancel_callback=first_done.is_set,
                                 status_handler=lambda data, runner_config=None: statuses.append(data["status"]))
    assert result.status == "canceled" and not result.ok and result.rc != 0
    # canceled while Nap slept: One ran, Two never did
    assert [r.task for r in result.results] == ["One"]
    assert result.elapsed < 25
    assert statuses[0] == "starting" and statuses[-1] == "canceled"
    assert runs.read_record(result.run_dir)["status"] == "canceled"


def test_artifact_dir_is_where_runner_keeps_its_artifacts(local):
    inventory, play, tmp_path = local
    artifacts = tmp_path / "elsewhere"
    result = runner.run_playbook(inventory, play(), fact_cache=tmp_path / "facts", artifact_dir=artifacts)
    assert result.ok
    assert (artifacts / "playbook" / "stdout").read_text().count("ok: [box]") == 3
    assert list((artifacts / "playbook" / "job_events").glob("*.json"))
    assert not (result.run_dir / "artifacts" / "playbook" / "job_events").exists()
    # the environment in runner's command artifact is scrubbed there too
    command = json.loads((artifacts / "playbook" / "command").read_text())
    assert "env_inherited" in command and "PATH" in command["env"]


@pytest.fixture
def captured(monkeypatch, local):
    """ansible_runner.run replaced: its keywords are captured and a successful, empty run returned."""
    import ansible_runner

    calls: list[dict] = []

    class Done:
        rc = 0
        status = "successful"

    def fake_run(**kwargs):
        calls.append(kwargs)
        return Done()

    monkeypatch.setattr(ansible_runner, "run", fake_run)
    return calls


def test_container_options_are_handed_to_runner_with_the_paths_the_run_names(local, captured):
    inventory, play, tmp_path = local
    playbook = play()
    result = runner.run_playbook(inventory, playbook, fact_cache=tmp_path / "facts", process_isolation=True,
                                 process_isolation_executable="docker", container_image="quay.io/x/ee:1",
                                 container_options=["--network=host"], container_volume_mounts=["/srv/a:/srv/a:ro"])
    assert result.ok
    kwargs = captured[0]
    assert kwargs["process_isolation"] is True and kwargs["process_isolation_executable"] == "docker"
    assert kwargs["container_image"] == "quay.io/x/ee:1" and kwargs["container_options"] == ["--network=host"]
    mounts = kwargs["container_volume_mounts"]
    assert mounts[0] == "/srv/a:/srv/a:ro"
    sources = {m.split(":")[0] for m in mounts}
    # the project (ansible.cfg), the run dir (inferfleet_run_dir) and the fact cache, inventory and play beside it
    assert {str(runner.project_dir()), str(result.run_dir), str(tmp_path)} <= sources
    # no host PATH into the container; the fact cache where the host keeps it, not runner's /runner/artifacts
    assert "PATH" not in kwargs["envvars"]
    assert kwargs["envvars"]["ANSIBLE_CACHE_PLUGIN_CONNECTION"] == str(tmp_path / "facts")
    # runner gives a container `-i /runner/inventory`: the run dir's inventory/ holds the user's
    assert (result.run_dir / "inventory" / "local.ini").resolve() == inventory.resolve()


def test_without_containers_the_host_path_goes_and_no_container_option(local, captured):
    inventory, play, tmp_path = local
    runner.run_playbook(inventory, play(), fact_cache=tmp_path / "facts")
    kwargs = captured[0]
    assert "process_isolation" not in kwargs and "container_image" not in kwargs
    assert kwargs["envvars"]["PATH"].startswith(str(runner.Path(sys.executable).parent))


def test_a_container_engine_without_an_image_is_refused_before_any_run(local, captured):
    inventory, play, _ = local
    with pytest.raises(ValueError, match="container_image"):
        runner.run_playbook(inventory, play(), process_isolation=True, process_isolation_executable="podman")
    assert not captured


NO_LOG_PLAY = """\
- name: Hidden results
  hosts: all
  gather_facts: false
  tasks:
    - name: Change with items hidden
      ansible.builtin.command: "true"
      changed_when: item == 'b'
      loop: [a, b]
      no_log: true
    - name: Keep with items hidden
      ansible.builtin.command: "true"
      changed_when: false
      loop: [a, b]
      no_log: "{{ item == 'a' }}"
    - name: Change hidden
      ansible.builtin.command: "true"
      changed_when: true
      no_log: true
    - name: Keep hidden
      ansible.builtin.command: "true"
      changed_when: false
      no_log: true
"""


def test_a_hidden_result_keeps_its_changed_status_and_hides_the_rest(local):
    inventory, _, tmp_path = local
    path = tmp_path / "hidden.yml"
    path.write_text(NO_LOG_PLAY)
    result = runner.run_playbook(inventory, str(path), fact_cache=tmp_path / "facts")
    assert result.ok and result.hosts["box"].changed == 2
    assert [(r.task, r.status) for r in result.results] == [
        ("Change with items hidden", "changed"), ("Keep with items hidden", "ok"), ("Change hidden", "changed"),
        ("Keep hidden", "ok")]
    assert all("censored" in r.data for r in result.results if r.task != "Keep with items hidden")
