"""Stage models: sources, the fleet cache filled by the hubs' own clients (huggingface_hub, modelscope) from the
sandbox's local hub, resume, verification and repair, offline bundles, the host-side module, and the planner reading
the cached config. The hub speaks the subset of each API its client uses (tests/fixtures/models/NOTES-hubs.md)."""

import hashlib
import json
import os
import threading

import pytest
from helpers import load_library_module

from inferfleet import models, planner
from inferfleet.sandbox import hub

MIB = 1024 * 1024


# --- sources ------------------------------------------------------------------------------------------------------
def test_sources_and_their_refusals():
    assert models.parse_source("hf://Qwen/Qwen2.5-7B-Instruct@a09a354") == models.ModelRef(
        "hf", "Qwen/Qwen2.5-7B-Instruct", "a09a354")
    assert models.parse_source("modelscope://Qwen/Qwen2-72B-Instruct", "v1.0").revision == "v1.0"
    git = models.parse_source("git+https://www.modelscope.cn/Qwen/Qwen2-72B-Instruct.git@master")
    assert (git.scheme, git.name, git.revision) == ("git", "https://www.modelscope.cn/Qwen/Qwen2-72B-Instruct.git",
                                                    "master")
    assert models.catalogue_entry("/srv/models/x") == models.ModelRef("file", "/srv/models/x")
    entry = models.catalogue_entry({"source": "hf://a/b", "allow_patterns": ["*.json"]})
    assert entry.allow == ("*.json",) and entry.source == "hf://a/b"
    for bad in ("ftp://a/b", "hf://onlyname", "s3://bucket/x", "hf://a/b c"):
        with pytest.raises(ValueError, match="is not a model source"):
            models.parse_source(bad)
    with pytest.raises(ValueError, match="no allow_patterns"):
        models.parse_source("git+https://h/x", allow=["*.json"])
    # the patterns are part of what the cache holds
    assert entry.cache_dir(models.Path("/c")) != models.catalogue_entry("hf://a/b").cache_dir(models.Path("/c"))


def test_patterns_follow_the_hub_clients():
    ref = models.ModelRef("hf", "a/b", allow=("*.json", "*.safetensors"), ignore=("optimizer*",))
    assert models.wanted("config.json", ref) and models.wanted("sub/tokenizer.json", ref)
    assert not models.wanted("pytorch_model.bin", ref) and not models.wanted("optimizer.json", ref)


# --- the hub and the real clients ---------------------------------------------------------------------------------
@pytest.fixture
def local_hub(tmp_path):
    """A local hub with one repository acme/tiny: a 3 MiB LFS file, small files, a file in a subdirectory."""
    repo = tmp_path / "src" / "tiny"
    (repo / "sub").mkdir(parents=True)
    (repo / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "hidden_size": 64,
                                                  "num_attention_heads": 4, "num_hidden_layers": 2,
                                                  "num_key_value_heads": 2, "max_position_embeddings": 256}))
    (repo / "model.safetensors").write_bytes(os.urandom(3 * MIB))
    (repo / "sub" / "tokenizer.json").write_text('{"tokens": []}')
    (repo / "README.md").write_text("tiny")
    root = tmp_path / "hub"
    server = hub.serve(root, 0)
    hub.publish(root, "acme/tiny", repo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}", repo
    server.shutdown()


def faults(root, **values):
    (root / "faults.json").write_text(json.dumps(values))


def test_huggingface_hub_fetches_verifies_and_reuses(local_hub, tmp_path):
    root, url, repo = local_hub
    cache = tmp_path / "cache"
    ref = models.parse_source("hf://acme/tiny@main", ignore=["README.md"])
    first = models.fetch(ref, cache, endpoint=url)
    assert first["where"] == "hub" and first["commit"] == hub.Repo("acme/tiny", repo).commit
    directory = models.Path(first["directory"])
    assert sorted(e["path"] for e in first["files"]) == ["config.json", "model.safetensors", "sub/tokenizer.json"]
    assert first["size"] == 3 * MIB + len('{"tokens": []}') + (repo / "config.json").stat().st_size
    assert (directory / "model.safetensors").read_bytes() == (repo / "model.safetensors").read_bytes()
    assert not directory.with_name(directory.name + ".partial").exists()
    served, lines = hub.bytes_served(root)
    again = models.fetch(ref, cache, endpoint=url)
    assert again["where"] == "fleet cache" and again["files"] == first["files"]
    assert hub.bytes_served(root, lines)[0] < 20000  # metadata only: no file again
    assert served >= 3 * MIB


def test_modelscope_client_fetches_from_the_same_hub(local_hub, tmp_path):
    root, url, repo = local_hub
    manifest = models.fetch(models.parse_source("modelscope://acme/tiny"), tmp_path / "cache", endpoint=url)
    assert manifest["where"] == "hub" and len(manifest["files"]) == 4
    sha = {e["path"]: e["sha256"] for e in manifest["files"]}
    assert sha["model.safetensors"] == hashlib.sha256((repo / "model.safetensors").read_bytes()).hexdigest()
    log = (root / "access.log").read_text()
    assert "/api/v1/models/acme/tiny/repo/files" in log and "FilePath=model.safetensors" in log


def test_a_dropped_connection_resumes_with_a_range_request(local_hub, tmp_path):
    root, url, _ = local_hub
    # the client retries in-process from what it wrote (ModelScope: Range from the partial file's size)
    faults(root, drop={"file": "model.safetensors", "after": 2 * MIB, "count": 1})
    manifest = models.fetch(models.parse_source("modelscope://acme/tiny"), tmp_path / "cache", endpoint=url)
    assert manifest["where"] == "hub"
    gets = [json.loads(line) for line in (root / "access.log").read_text().splitlines()
            if "model.safetensors" in line and '"GET"' in line]
    assert gets[0]["dropped"] and gets[0]["bytes"] == 2 * MIB
    assert gets[1]["range"] == f"bytes={2 * MIB}-" and gets[1]["status"] == 206


def test_wrong_bytes_are_detected_and_fetched_again(local_hub, tmp_path):
    root, url, repo = local_hub
    # huggingface_hub checks sizes only: the LFS sha256 is checked here, and the file fetched again
    faults(root, corrupt={"file": "model.safetensors", "count": 1})
    manifest = models.fetch(models.parse_source("hf://acme/tiny"), tmp_path / "cache", endpoint=url)
    copy = models.Path(manifest["directory"]) / "model.safetensors"
    assert copy.read_bytes() == (repo / "model.safetensors").read_bytes()
    gets = [line for line in (root / "access.log").read_text().splitlines()
            if "resolve" in line and "model.safetensors" in line and '"GET"' in line]
    assert len(gets) == 2


def test_errors_name_the_fix(local_hub, tmp_path):
    root, url, _ = local_hub
    for source, words, fix in (("hf://acme/nope", "no such repository", "inferfleet_hf_token"),
                               ("hf://acme/tiny@v9", "no revision 'v9'", "branch, tag or commit")):
        with pytest.raises(models.ModelError, match=words) as err:
            models.fetch(models.parse_source(source), tmp_path / "cache", endpoint=url)
        assert fix in err.value.fix
    (root / "tokens.json").write_text(json.dumps({"acme/tiny": "s3cret"}))
    with pytest.raises(models.ModelError, match="needs a token"):
        models.fetch(models.parse_source("hf://acme/tiny"), tmp_path / "cache", endpoint=url)
    manifest = models.fetch(models.parse_source("hf://acme/tiny"), tmp_path / "cache", endpoint=url, token="s3cret")
    assert manifest["where"] == "hub"
    with pytest.raises(models.ModelError, match="401"):
        models.fetch(models.parse_source("modelscope://acme/tiny"), tmp_path / "ms", endpoint=url)


def test_no_room_is_refused_before_downloading(local_hub, tmp_path, monkeypatch):
    root, url, _ = local_hub
    monkeypatch.setattr(models, "disk_free", lambda path: MIB)
    with pytest.raises(models.ModelError, match=r"needs 3\.0 MiB more on the controller; .* has 1\.0 MiB free"):
        models.fetch(models.parse_source("hf://acme/tiny"), tmp_path / "cache", endpoint=url)
    assert "resolve" not in (root / "access.log").read_text()


def test_an_offline_bundle_serves_without_the_hub(local_hub, tmp_path):
    root, url, _ = local_hub
    bundle = tmp_path / "bundle"
    pulled = models.fetch(models.parse_source("hf://acme/tiny@main"), bundle, endpoint=url)
    lines = len((root / "access.log").read_text().splitlines())
    offline = models.fetch(models.parse_source("hf://acme/tiny@main"), bundle, offline=True)
    assert offline["where"] == "fleet cache" and offline["commit"] == pulled["commit"]
    assert len((root / "access.log").read_text().splitlines()) == lines  # no request
    with pytest.raises(models.ModelError, match="not in the fleet cache") as err:
        models.fetch(models.parse_source("hf://acme/other"), bundle, offline=True)
    assert "inferfleet models pull" in err.value.fix


def test_a_controller_directory_is_its_own_cache(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    manifest = models.fetch(models.catalogue_entry(str(tmp_path / "m")), tmp_path / "cache")
    assert manifest["where"] == "controller directory" and manifest["files"][0]["path"] == "config.json"
    with pytest.raises(models.ModelError, match="no such directory"):
        models.fetch(models.parse_source("file:///nonexistent/x"), tmp_path / "cache")


def test_the_planner_reads_the_cached_config(local_hub, tmp_path):
    root, url, repo = local_hub
    cache = tmp_path / "cache"
    hv = {"inferfleet_platform": "cpu", "inferfleet_images": {"cpu": "r/vllm:1"}, "inferfleet_vllm_versions":
          {"cpu": "0.32.0"}, "inferfleet_model_cache_dir": str(cache),
          "inferfleet_models": {"/models/tiny": "hf://acme/tiny@main"},
          "inferfleet_services": [{"name": "tiny", "model": "/models/tiny", "port": 8000}]}
    before = planner.plan_hosts([planner.HostInput("h", hv, ("cpu",))])
    assert before.errors and before.errors[0].field == "inferfleet_services[tiny].task"  # nothing to read yet
    models.fetch(models.parse_source("hf://acme/tiny@main"), cache, endpoint=url)
    after = planner.plan_hosts([planner.HostInput("h", hv, ("cpu",))])
    assert after.ok, after.errors
    instance = after.hosts["h"].instances[0]
    assert instance["task"] == "generate" and instance["kv_cache"]["weights_bytes"] == 3 * MIB  # the real file


# --- the host side -----------------------------------------------------------------------------------------------
model_files = load_library_module("model_files")


def manifest_of(directory):
    files = models.file_manifest(directory, models.model_files(directory))
    return {"source": "hf://acme/tiny", "commit": "c1", "files": files}


def test_host_side_states_verification_and_the_swap(tmp_path):
    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    (source / "a.bin").write_bytes(b"x" * 1000)
    (source / "sub" / "b.json").write_text("{}")
    manifest = manifest_of(source)
    path = str(tmp_path / "models" / "tiny")
    assert model_files.status_of(path, manifest) == "absent"
    assert model_files.needed_bytes(path, manifest) == 1002
    os.makedirs(path + ".partial/sub")
    with open(path + ".partial/a.bin", "wb") as handle:
        handle.write(b"x" * 400)  # a cut copy
    assert model_files.status_of(path, manifest) == "partial" and model_files.needed_bytes(path, manifest) == 602
    with open(path + ".partial/a.bin", "wb") as handle:
        handle.write(b"y" * 1000)  # right size, wrong bytes
    entries, bad = model_files.verify_partial(path, manifest)
    assert bad == ["a.bin: sha256 differs", "sub/b.json: missing"] and not os.path.exists(path + ".partial/a.bin")
    os.system(f"cp -a {source}/. {path}.partial/")
    entries, bad = model_files.verify_partial(path, manifest)
    assert bad == []
    model_files.put_in_place(path, manifest, entries)
    assert model_files.status_of(path, manifest) == "present" and not os.path.exists(path + ".partial")
    os.utime(os.path.join(path, "a.bin"), (1, 1))  # touched since it was verified: no longer trusted
    assert model_files.status_of(path, manifest) == "stale"
    newer = dict(manifest, commit="c2")
    assert model_files.status_of(path, newer) == "stale"
    foreign = tmp_path / "theirs"
    foreign.mkdir()
    (foreign / "weights").write_text("mine")
    assert model_files.status_of(str(foreign), manifest) == "foreign"


def test_tokens_are_not_repeated_in_messages_and_vaulted_values_are_strings_without_the_secret():
    from ansible.parsing.vault import EncryptedString

    from inferfleet import inventory, schema

    problems = schema.validate_settings("h", {"inferfleet_platform": "cpu", "inferfleet_hf_token": 987654321})
    assert [p.field for p in problems] == ["inferfleet_hf_token"] and "987654321" not in str(problems[0])
    vaulted = EncryptedString(ciphertext="$ANSIBLE_VAULT;1.1;AES256\n3132")
    assert inventory.plain_value({"inferfleet_hf_token": vaulted}) == {"inferfleet_hf_token": inventory.VAULTED}
    assert schema.validate_settings("h", {"inferfleet_platform": "cpu",
                                          "inferfleet_hf_token": inventory.VAULTED}) == []
    # a token changes no plan: a saved plan stays current whether or not the vault was open
    hv = {"inferfleet_platform": "cpu", "inferfleet_hf_token": "a"}
    one = planner.plan_hosts([planner.HostInput("h", hv, ("cpu",))]).hosts["h"].inputs
    two = planner.plan_hosts([planner.HostInput("h", dict(hv, inferfleet_hf_token="b"), ("cpu",))]).hosts["h"].inputs
    assert one == two


def test_models_pull_fills_a_bundle_an_offline_plan_reads(local_hub, tmp_path, capsys):
    import yaml

    from inferfleet import cli

    _, url, _ = local_hub
    inventory = tmp_path / "inv"
    inventory.mkdir()
    host = {"inferfleet_platform": "cpu", "inferfleet_images": {"cpu": "r/vllm:1"},
            "inferfleet_vllm_versions": {"cpu": "0.32.0"}, "inferfleet_hf_endpoint": url,
            "inferfleet_models": {"/models/tiny": "hf://acme/tiny@main"},
            "inferfleet_services": [{"name": "tiny", "model": "/models/tiny", "port": 8000, "task": "generate"}]}
    (inventory / "hosts.yml").write_text(yaml.safe_dump({"all": {"children": {"cpu": {"hosts": {"c1": host}}}}}))
    bundle = tmp_path / "bundle"
    assert cli.main(["models", "pull", "-i", str(inventory), "--bundle", str(bundle), "--json"]) == 0
    pulled = json.loads(capsys.readouterr().out)["models"]
    assert [(m["model"], m["where"]) for m in pulled] == [("/models/tiny", "hub")]
    # offline, from the bundle: no hub needed, and the planner reads the real weights from it
    offline = dict(host, inferfleet_model_cache_dir=str(bundle), inferfleet_models_offline=True,
                   inferfleet_hf_endpoint="http://127.0.0.1:9")
    (inventory / "hosts.yml").write_text(yaml.safe_dump({"all": {"children": {"cpu": {"hosts": {"c1": offline}}}}}))
    assert cli.main(["plan", "-i", str(inventory), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["hosts"]["c1"]["instances"][0]["kv_cache"]["weights_bytes"] == 3 * MIB


def test_the_module_in_check_mode_reports_the_placement_and_changes_nothing(tmp_path):
    from helpers import ROOT, run_module

    source = tmp_path / "src"
    source.mkdir()
    (source / "config.json").write_text("{}")
    path = tmp_path / "models" / "m"
    result = run_module(ROOT / "plugins" / "modules" / "model_files.py",
                        {"path": str(path), "manifest": manifest_of(source), "state": "present"}, check=True)
    assert result["changed"] is True and result["status"] == "absent" and "diff" in result
    assert not path.exists() and not (tmp_path / "models").exists()
    assert result["needed_bytes"] == 2 and result["free_bytes"] > 0
