"""daemon.json merging and the docker info check, on a recorded `docker info` (tests/fixtures/docker)."""

import json

from helpers import FIXTURES

from inferfleet.dockercfg import (
    check_docker_info,
    daemon_settings,
    merge_daemon_json,
    merge_values,
    packages_to_install,
)

INFO = json.loads((FIXTURES / "docker" / "docker-info-20.10-habana.json").read_text())
HABANA = {"habana": {"path": "/usr/bin/habana-container-runtime"}}


def test_user_keys_survive_and_ours_are_merged():
    user = {"registry-mirrors": ["https://mirror.aliyuncs.com"], "log-driver": "journald",
            "runtimes": {"custom": {"path": "/opt/custom-runc"}}, "features": {"buildkit": True}}
    wanted = daemon_settings(registry_mirrors=["http://10.0.0.5:5000"], insecure_registries=["10.0.0.5:5000"],
                             runtimes=HABANA)
    result = merge_daemon_json(json.dumps(user), wanted)
    merged = result["merged"]
    assert result["update_needed"] is True and result["error"] == ""
    assert merged["registry-mirrors"] == ["http://10.0.0.5:5000", "https://mirror.aliyuncs.com"]
    assert merged["runtimes"] == {"custom": {"path": "/opt/custom-runc"}, **HABANA}
    assert merged["log-driver"] == "journald" and merged["features"] == {"buildkit": True}
    assert merged["insecure-registries"] == ["10.0.0.5:5000"]
    again = merge_daemon_json(json.dumps(merged, indent=4), wanted)
    assert again["update_needed"] is False and again["merged"] == merged


def test_missing_empty_and_broken_files():
    assert merge_daemon_json(None, {"a": 1})["merged"] == {"a": 1}
    assert merge_daemon_json("  \n", {})["update_needed"] is False
    broken = merge_daemon_json('{"registry-mirrors": [', {"a": 1})
    assert broken["merged"] is None and "not valid JSON" in broken["error"]
    assert "not an object" in merge_daemon_json("[1]", {})["error"]


def test_settings_omit_what_is_not_managed_and_options_win():
    assert daemon_settings() == {}
    settings = daemon_settings(log_driver="json-file", log_opts={"max-size": "100m", "max-file": 3},
                               default_runtime="habana", runtimes={"habana": {"path": "/x", "runtimeArgs": []}},
                               options={"log-opts": {"max-file": "5"}, "live-restore": True})
    assert settings == {"log-driver": "json-file", "log-opts": {"max-size": "100m", "max-file": "5"},
                        "runtimes": {"habana": {"path": "/x"}}, "default-runtime": "habana", "live-restore": True}


def test_merge_values_replaces_scalars_and_keeps_list_order():
    assert merge_values({"a": 1, "b": [1, 2]}, {"a": 2, "b": [3, 2]}) == {"a": 2, "b": [3, 2, 1]}


def test_docker_info_check_on_a_recorded_engine():
    good = daemon_settings(registry_mirrors=["http://172.18.0.1:5000"], insecure_registries=["172.18.0.1:5000"],
                           runtimes=HABANA)
    assert check_docker_info(INFO, good) == []
    bad = daemon_settings(registry_mirrors=["http://10.9.9.9:5000"], insecure_registries=["10.9.9.9:5000"],
                          runtimes={"nvidia": {"path": "nvidia-container-runtime"}}, default_runtime="habana",
                          data_root="/data/docker")
    problems = check_docker_info(INFO, bad)
    assert len(problems) == 5
    assert any("runtime nvidia is not registered" in p and "habana" in p for p in problems)
    assert any("default runtime is runc" in p for p in problems)


def test_images_go_through_the_lan_mirror_under_their_upstream_name():
    from inferfleet.dockercfg import image_registry, image_sources, mirror_ref

    assert image_registry("vllm/vllm-openai:v0.11.0") == "docker.io"
    assert image_registry("quay.io/ascend/vllm-ascend:v0.11.0") == "quay.io"
    assert image_registry("10.0.0.1:5000/x/y:1") == "10.0.0.1:5000"
    assert mirror_ref("quay.io/ascend/vllm-ascend:v0.11.0", "http://lan:5001/") == \
        "lan:5001/quay.io/ascend/vllm-ascend:v0.11.0"
    assert mirror_ref("vllm/vllm-openai:v0.11.0", "http://lan:5001") == "lan:5001/docker.io/vllm/vllm-openai:v0.11.0"
    assert mirror_ref("debian:bookworm", "http://lan:5001") == "lan:5001/docker.io/library/debian:bookworm"
    assert mirror_ref("docker.io/library/debian:12", "lan:5001") == "lan:5001/docker.io/library/debian:12"
    assert mirror_ref("Reg.Local:5000/x/y:1", "lan:5001") == "lan:5001/reg.local-5000/x/y:1"
    assert image_sources(["quay.io/a/b:1"]) == [{"image": "quay.io/a/b:1", "source": "quay.io/a/b:1",
                                                 "mirrored": False, "built": False}]
    assert image_sources(["quay.io/a/b:1"], "http://lan:5001")[0]["source"] == "lan:5001/quay.io/a/b:1"
    assert image_sources(["reg/built:1", "quay.io/a/b:1"], "", ["reg/built:1"])[0]["built"] is True


def test_image_builds_are_those_the_plan_uses_keyed_on_what_they_are_built_from(tmp_path):
    from inferfleet.dockercfg import build_keys, image_builds

    source = tmp_path / "vllm-fork"
    source.mkdir()
    (source / "setup.py").write_text("print('v1')\n")
    build = {"image": "reg/vllm-fork-gaudi:1", "base": "vault/base:1", "path": str(source), "env": {}}
    (built,) = image_builds([build, dict(build, image="reg/unused:1")], ["reg/vllm-fork-gaudi:1"], "http://lan:5001")
    assert built["push"] == "lan:5001/docker.io/reg/vllm-fork-gaudi:1" and len(built["key"]) == 16
    assert image_builds([build], ["reg/vllm-fork-gaudi:1"])[0]["key"] == built["key"]  # the same inputs
    (source / "setup.py").write_text("print('v2')\n")
    assert image_builds([build], ["reg/vllm-fork-gaudi:1"])[0]["key"] != built["key"]  # the source changed
    assert image_builds([dict(build, base="vault/base:2")], ["reg/vllm-fork-gaudi:1"])[0]["key"] != built["key"]
    assert build_keys([{"Config": {"Labels": {"inferfleet.build": "abc"}}}, {"Config": {"Labels": None}}]) == [
        "abc", ""]


def test_installed_packages_are_not_installed_again():
    status = (FIXTURES / "docker" / "dpkg-query-docker-packages.txt").read_text()
    assert packages_to_install(["docker.io", "python3-requests", "runc"], status) == []
    assert packages_to_install(["docker.io", "nosuchpkg"], status) == ["nosuchpkg"]


def test_removed_pinned_and_wildcard_packages_are_left_to_apt():
    removed = (FIXTURES / "docker" / "dpkg-query-removed-package.txt").read_text()
    assert packages_to_install(["openssh-server", "python3"], removed) == ["openssh-server"]
    status = (FIXTURES / "docker" / "dpkg-query-docker-packages.txt").read_text()
    assert packages_to_install(["docker.io=20.10.24+dfsg1-1+b3", "runc*"], status) == [
        "docker.io=20.10.24+dfsg1-1+b3", "runc*"]
    assert packages_to_install(["docker.io"], "") == ["docker.io"]
