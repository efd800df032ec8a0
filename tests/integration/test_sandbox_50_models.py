"""Stage models on the sandbox: the controller fetches each model once from the sandbox's local hub with the real
huggingface_hub and modelscope clients, every host copies it from the fleet cache (rsync), verifies it and puts it
in place. The hub counts its bytes; the hosts are real machines over SSH."""

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_sandbox_00_preflight import ssh

from inferfleet import up
from inferfleet.paths import project_dir
from inferfleet.sandbox import hub

pytestmark = pytest.mark.integration
PLACED = {  # host -> model directories its services use (inventories/sandbox/host_vars)
    "gaudi2-1": ["/models/all-MiniLM-L6-v2", "/models/tiny-reranker"],
    "ascend910b-1": ["/models/all-MiniLM-L6-v2"],
    "h100-1": ["/models/tiny-llama"],
}
MODELS = ("all-MiniLM-L6-v2", "tiny-llama", "tiny-reranker")
TOKEN = "hf_inferfleet_test_TOKEN_7d1f"


def model_bytes():
    root = project_dir() / ".cache" / "models"
    return sum(p.stat().st_size for m in MODELS for p in (root / m).rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def placed(sandbox, tmp_path_factory):
    """preflight + docker (rsync comes with the stage) then models, into a fleet cache of its own (cold)."""
    cache = tmp_path_factory.mktemp("model-cache")
    extra = {"inferfleet_model_cache_dir": str(cache)}
    start = hub.bytes_served(sandbox.hub_root)[1]
    result = up(sandbox.inventory, stages=["preflight", "models"], extravars=extra)
    assert result.ok, [(f.host, f.task, f.msg[:1500]) for f in result.failures]
    return sandbox, extra, result, hub.bytes_served(sandbox.hub_root, start)[0]


def test_each_model_crosses_from_the_hub_once_and_every_host_has_it(placed):
    sandbox, _, result, served = placed
    assert served <= 1.1 * model_bytes(), (served, model_bytes())  # MiniLM goes to two hosts, fetched once
    for host, paths in PLACED.items():
        for path in paths:
            listing = ssh(sandbox, host, f"ls -a {path} {path}.partial 2>&1; cat {path}/.inferfleet-manifest.json")
            assert "model.safetensors" in listing.stdout and "No such file" in listing.stdout  # no .partial left
            manifest = yaml.safe_load(listing.stdout[listing.stdout.index("{"):])
            assert manifest["commit"] and all(f["sha256"] and f["mtime"] for f in manifest["files"])
    assert ssh(sandbox, "cpu-1", "ls /models 2>&1").stdout.strip().endswith("No such file or directory")


def test_a_rerun_reads_only_metadata_and_changes_nothing(placed):
    sandbox, extra, _, _ = placed
    start = hub.bytes_served(sandbox.hub_root)[1]
    started = time.monotonic()
    again = up(sandbox.inventory, stages=["models"], extravars=extra)
    elapsed = time.monotonic() - started
    assert again.ok and again.changed == 0
    log = (sandbox.hub_root / "access.log").read_text().splitlines()[start:]
    assert not [line for line in log if "/resolve/" in line or "FilePath=" in line]  # no file from the hub
    assert elapsed < 60


def test_a_damaged_copy_on_a_host_is_found_and_replaced(placed):
    sandbox, extra, _, _ = placed
    ssh(sandbox, "h100-1", "printf 'x' >> /models/tiny-llama/config.json")
    result = up(sandbox.inventory, stages=["models"], extravars=extra, limit="h100-1")
    assert result.ok and result.changed > 0
    check = ssh(sandbox, "h100-1", "python3 -c \"import json; json.load(open('/models/tiny-llama/config.json'))\"")
    assert check.returncode == 0


def test_no_room_on_the_host_is_refused_with_the_numbers(placed):
    sandbox, extra, _, _ = placed
    ssh(sandbox, "h100-1", "mv /models /models.kept && mkdir /models && mount -t tmpfs -o size=1m tmpfs /models")
    try:
        result = up(sandbox.inventory, stages=["models"], extravars=extra, limit="h100-1")
    finally:
        ssh(sandbox, "h100-1", "umount /models; rmdir /models && mv /models.kept /models")
    messages = [f.msg for f in result.failures]
    assert not result.ok and any("/models/tiny-llama: the copy needs" in m and "free" in m for m in messages), \
        messages


@pytest.mark.parametrize("change, words", [
    ({"inferfleet_models": {"/models/tiny-llama": "ftp://inferfleet/tiny-llama"}}, "is not a model source"),
    ({"inferfleet_models": {"/models/tiny-llama": "hf://inferfleet/tiny-llama@no-such-branch"}},
     "the hub has no revision 'no-such-branch'"),
    ({"inferfleet_models": {"/models/tiny-llama": "hf://inferfleet/not-there"}}, "no such repository"),
])
def test_bad_sources_are_refused_before_any_host_changes(placed, change, words):
    sandbox, extra, _, _ = placed
    result = up(sandbox.inventory, stages=["models"], extravars={**extra, **change}, limit="h100-1")
    assert not result.ok and result.changed == 0
    assert any(words in f.msg for f in result.failures), [f.msg for f in result.failures]


def test_a_gated_model_needs_the_token_and_the_token_is_never_recorded(placed, tmp_path):
    sandbox, extra, _, _ = placed
    tokens = sandbox.hub_root / "tokens.json"
    tokens.write_text(f'{{"inferfleet/tiny-llama": "{TOKEN}"}}')
    vault = sandbox.inventory.parent / "group_vars" / "all" / "hub_token.yml"
    password = tmp_path / "vault-pass"
    password.write_text("inferfleet-test\n")
    gated = {"inferfleet_model_cache_dir": str(tmp_path / "gated-cache"),  # cold: the hub is asked for files
             "inferfleet_models": {"/models/tiny-llama": "hf://inferfleet/tiny-llama"}}
    try:
        refused = up(sandbox.inventory, stages=["models"], extravars=gated, limit="h100-1")
        assert not refused.ok and any("needs a token" in f.msg and "inferfleet_hf_token" in f.msg
                                      for f in refused.failures)
        encrypted = subprocess.run(
            [str(Path(sys.executable).parent / "ansible-vault"), "encrypt_string", "--vault-password-file",
             str(password), TOKEN, "--name", "inferfleet_hf_token"], capture_output=True, text=True, check=True).stdout
        vault.write_text("---\n" + encrypted)
        result = up(sandbox.inventory, stages=["models"], extravars=gated, limit="h100-1",
                    vault_password_files=[str(password)])
        assert result.ok, [f.msg for f in result.failures]
    finally:
        tokens.unlink()
        vault.unlink(missing_ok=True)
    for run in (refused, result):
        leaked = [str(p) for p in run.run_dir.rglob("*") if p.is_file() and TOKEN in p.read_text(errors="replace")]
        assert leaked == [], leaked
    facts = project_dir() / ".cache" / "facts"
    assert not [p for p in facts.rglob("*") if p.is_file() and TOKEN in p.read_text(errors="replace")]
