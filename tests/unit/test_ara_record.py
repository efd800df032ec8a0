"""record=True: a real local run recorded by ARA's callback into a database under tmp_path, read back with ARA's
offline API client; the secret the run handled (an -e value, a no_log task's output) is nowhere in the database."""

from __future__ import annotations

import sys

import pytest

from inferfleet import runner

pytest.importorskip("ara.clients.offline", reason="pip install 'inferfleet[record]'")

SECRET = "s3cr3t-ARA-leak-check-9q7"
PLAY = """\
- name: Alpha play
  hosts: all
  gather_facts: false
  tasks:
    - name: Greet
      ansible.builtin.debug:
        msg: hello
- name: Beta play
  hosts: all
  gather_facts: false
  tasks:
    - name: Use the token
      ansible.builtin.debug:
        msg: "token is {{ api_token }}"
      no_log: true
"""


def test_a_recorded_run_is_in_ara_with_its_plays_and_without_its_secret(tmp_path, monkeypatch):
    database = tmp_path / "ara" / "ansible.sqlite"
    monkeypatch.setenv("INFERFLEET_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("ARA_BASE_DIR", str(tmp_path / "ara"))
    monkeypatch.setenv("ARA_DATABASE_NAME", str(database))
    for name in ("ARA_API_CLIENT", "ARA_API_SERVER", "ARA_SETTINGS", "ANSIBLE_CALLBACKS_ENABLED",
                 "ANSIBLE_CALLBACK_PLUGINS"):
        monkeypatch.delenv(name, raising=False)
    inventory = tmp_path / "local.ini"
    inventory.write_text(f"box ansible_connection=local ansible_python_interpreter={sys.executable}\n")
    playbook = tmp_path / "two-plays.yml"
    playbook.write_text(PLAY)

    result = runner.run_playbook(inventory, str(playbook), fact_cache=tmp_path / "facts", record=True,
                                 extravars={"api_token": SECRET})
    assert result.ok, (result.errors, result.failures)
    assert [r.task for r in result.results] == ["Greet", "Use the token"]

    # the callbacks ansible.cfg enables are kept beside ARA's
    env = runner.ara_settings(True)
    assert env["ANSIBLE_CALLBACKS_ENABLED"].split(",") == ["ansible.posix.profile_tasks", "ara_default"]
    assert env["ARA_DATABASE_NAME"] == str(database) and "extra_vars" in env["ARA_IGNORED_ARGUMENTS"].split(",")

    assert database.is_file()
    from ara.clients.offline import AraOfflineClient

    client = AraOfflineClient(run_sql_migrations=False)
    playbooks = client.get("/api/v1/playbooks", path=str(playbook))["results"]
    assert len(playbooks) == 1, playbooks
    assert playbooks[0]["status"] == "completed"
    plays = client.get("/api/v1/plays", playbook=playbooks[0]["id"], order="started")["results"]
    assert [p["name"] for p in plays] == ["Alpha play", "Beta play"]
    tasks = {t["name"]: t for t in client.get("/api/v1/tasks", playbook=playbooks[0]["id"])["results"]}
    assert set(tasks) == {"Greet", "Use the token"}
    # -e is not recorded (ARA_IGNORED_ARGUMENTS)
    arguments = client.get(f"/api/v1/playbooks/{playbooks[0]['id']}")["arguments"]
    assert "Not saved by ARA" in str(arguments.get("extra_vars"))
    # results are recorded, the no_log one censored by Ansible before any callback sees it
    contents = {}
    for result in client.get("/api/v1/results", playbook=playbooks[0]["id"])["results"]:
        contents[result["task"]] = str(client.get(f"/api/v1/results/{result['id']}")["content"])
    assert "hello" in contents[tasks["Greet"]["id"]]
    assert "censored" in contents[tasks["Use the token"]["id"]]
    # decompressed (ARA zlib-compresses contents): the playbook's record, every result, every file recorded
    recorded = [str(client.get(f"/api/v1/playbooks/{playbooks[0]['id']}")), *contents.values()]
    recorded += [str(client.get(f"/api/v1/files/{f['id']}"))
                 for f in client.get("/api/v1/files", playbook=playbooks[0]["id"])["results"]]
    assert len(recorded) > 3 and not [text for text in recorded if SECRET in text]

    # nowhere in the database: not in the arguments, not in the no_log task's result
    data = b"".join(path.read_bytes() for path in database.parent.iterdir()
                    if path.name.startswith(database.name))
    assert data and SECRET.encode() not in data
