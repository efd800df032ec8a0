"""The SIMULATED vendor container runtimes (src/inferfleet/sandbox/sim/runtimes.py), as pure functions of a spec.

Every test names the vendor source of the rule it checks; tests/fixtures/runtimes/README.md lists them all.
The sample spec is the config.json dockerd 20.10.24 wrote for a real container (fixture README says how)."""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT

from inferfleet.sandbox import profiles
from inferfleet.sandbox.sim import runtimes as rt

FIXTURES = ROOT / "tests" / "fixtures" / "runtimes"
SIM = ROOT / "src" / "inferfleet" / "sandbox" / "sim"
# Recorded in HabanaAI/habana-container-runtime cmd/habana-container-runtime/main_test.go (TestHasCreateCommand):
# how containerd calls a runtime (ids shortened).
TASK = "/run/containerd/io.containerd.runtime.v2.task/k8s.io/258c"
CONTAINERD_CREATE = ["--root", "/run/containerd/runc/k8s.io", "--log", f"{TASK}/log.json", "--log-format", "json",
                     "create", "--bundle", "./testdata/input", "--pid-file", f"{TASK}/init.pid", "258c"]


def docker_spec(*env: str, drop: tuple[str, ...] = ("HABANA_",)) -> dict:
    spec = json.loads((FIXTURES / "docker-20.10.24-config.json").read_text())
    kept = [e for e in spec["process"]["env"] if not e.startswith(drop)]
    spec["process"]["env"] = kept + list(env)
    return spec


class FakeHost(rt.Host):
    """A host described by dicts: char nodes (path -> (major, minor)), directories, files and their text."""

    def __init__(self, profile_name, nodes, dirs=(), files=None, faults=None):
        super().__init__(profiles.get_profile(profile_name).to_json(), faults)
        self.nodes, self.dirs, self.files = dict(nodes), set(dirs), dict(files or {})

    def lstat(self, path):
        if path in self.nodes:
            return os.stat_result((stat.S_IFCHR | 0o666, 0, 0, 1, 0, 0, 0, 0, 0, 0),
                                  {"st_rdev": os.makedev(*self.nodes[path])})
        if path in self.files:
            return os.stat_result((stat.S_IFREG | 0o644, 0, 0, 1, 0, 0, 0, 0, 0, 0))
        raise FileNotFoundError(path)

    def stat(self, path):
        if path in self.dirs:
            return os.stat_result((stat.S_IFDIR | 0o755, 0, 0, 1, 0, 0, 0, 0, 0, 0))
        return self.lstat(path)

    def listdir(self, path):
        prefix = path.rstrip("/") + "/"
        names = {p[len(prefix):].split("/")[0] for p in self.nodes if p.startswith(prefix)}
        if not names:
            raise FileNotFoundError(path)
        return sorted(names)

    def read_text(self, path):
        return self.files[path]


def gaudi_host(faults=None):
    nodes = {f"/dev/accel/accel{i}": (234, 2 * i) for i in range(8)}
    nodes.update({f"/dev/accel/accel_controlD{i}": (234, 2 * i + 1) for i in range(8)})
    for i in (faults or {}).get("missing", []):
        nodes.pop(f"/dev/accel/accel{i}")
        nodes.pop(f"/dev/accel/accel_controlD{i}")
    return FakeHost("gaudi2", nodes, faults=faults)


def nvidia_host(faults=None):
    nodes = {f"/dev/nvidia{i}": (195, i) for i in range(8) if i not in (faults or {}).get("missing", [])}
    nodes.update({"/dev/nvidiactl": (195, 255), "/dev/nvidia-uvm": (508, 0), "/dev/nvidia-uvm-tools": (508, 1)})
    return FakeHost("h100", nodes, faults=faults)


ASCEND_FILES = {"/etc/ascend-docker-runtime.d/base.list": "\n".join(rt.ASCEND_BASE_LIST),
                "/usr/local/bin/npu-smi": "", "/usr/local/Ascend/driver/version.info": ""}


def ascend_host(files=None):
    nodes = {f"/dev/davinci{i}": (236, i) for i in range(8)}
    nodes.update({"/dev/davinci_manager": (237, 0), "/dev/devmm_svm": (238, 0), "/dev/hisi_hdc": (239, 0)})
    dirs = {"/etc/ascend-docker-runtime.d", "/usr/local/Ascend/driver/lib64", "/usr/local/dcmi"}
    return FakeHost("ascend910b", nodes, dirs, files if files is not None else ASCEND_FILES)


def config(tool, **changes):
    name = {rt.HABANA: "gaudi2", rt.NVIDIA: "h100", rt.ASCEND: "ascend910b"}[tool]
    return dict(rt.load_config(tool, profiles.get_profile(name).to_json(), paths=()), **changes)


def habana(spec, version="1.21.1", host=None, **changes):
    return rt.apply(rt.HABANA, spec, host or gaudi_host(), config(rt.HABANA, version=version, **changes))


def nvidia(spec, host=None, **changes):
    return rt.apply(rt.NVIDIA, spec, host or nvidia_host(), config(rt.NVIDIA, **changes))


def ascend(spec, host=None, **changes):
    return rt.apply(rt.ASCEND, spec, host or ascend_host(), config(rt.ASCEND, **changes), bundle="/b")


def added(result):
    return [p.rsplit("/", 1)[-1] for p in result.devices]


# --- habana-container-runtime -------------------------------------------------------------------------------
def test_habana_visible_devices_adds_both_nodes_of_each_card_with_lstat_numbers():
    # specs.go addAcceleratorDevices (v1.15.0): /dev/accel/accel<i> and accel_controlD<i>; addDevicesToSpec /
    # addAllowList: type c, lstat major/minor and mode, uid/gid 0, allow rule "rwm"
    result = habana(docker_spec("HABANA_VISIBLE_DEVICES=0,1"), version="1.15.0")
    assert added(result) == ["accel0", "accel_controlD0", "accel1", "accel_controlD1"]
    assert result.spec["linux"]["devices"][1] == {"path": "/dev/accel/accel_controlD0", "type": "c", "major": 234,
                                                  "minor": 1, "fileMode": 0o666, "uid": 0, "gid": 0}
    rules = result.spec["linux"]["resources"]["devices"]
    assert rules[0] == {"allow": False, "access": "rwm"}  # docker's deny-all stays first
    assert {"allow": True, "type": "c", "major": 234, "minor": 2, "access": "rwm"} in rules
    assert result.env == []  # before v1.16 the runtime writes no variable


def test_habana_unset_mounts_every_card_unless_configured_otherwise():
    # config.go defaultConfig: visible_devices_all_as_default = true; specs.go filterDevicesByENV: no variable ->
    # every device; main.go: `!AlwaysMount && !IsHabanaContainer` -> no change
    assert len(habana(docker_spec(), version="1.15.0").devices) == 16
    assert len(habana(docker_spec("HABANA_VISIBLE_DEVICES=all"), version="1.15.0").devices) == 16
    assert habana(docker_spec(), version="1.15.0", visible_devices_all_as_default=False).devices == []


def test_habana_unknown_or_bad_index_starts_the_container_without_cards():
    # main.go handleRequest: no matching device -> logger.Info("No habanalabs accelerators found"); return nil.
    # The runtime never refuses; v1.16.0 adds HABANA_RUNTIME_ERROR (strconv.Quote'd).
    for value in ("9", "x", "", " 1"):
        old = habana(docker_spec(f"HABANA_VISIBLE_DEVICES={value}"), version="1.15.0")
        assert old.devices == [] and old.env == []
        new = habana(docker_spec(f"HABANA_VISIBLE_DEVICES={value}"), version="1.16.0")
        assert new.devices == [] and new.env == ['HABANA_RUNTIME_ERROR="no accelerators found"']
    assert added(habana(docker_spec("HABANA_VISIBLE_DEVICES=0,9"), version="1.15.0")) == ["accel0",
                                                                                        "accel_controlD0"]


def test_habana_card_whose_nodes_are_gone_is_not_offered():
    # discover.go AcceleratorDevices globs /dev/accel/accel*: a card without nodes is not a device
    result = habana(docker_spec("HABANA_VISIBLE_DEVICES=3"), version="1.15.0", host=gaudi_host({"missing": [3]}))
    assert result.devices == []


def test_habana_1_16_appends_sorted_module_ids_which_replace_the_users():
    # v1.16.0 specs.go addAcceleratorModuleIDs: sort.Strings(module ids) appended as HABANA_VISIBLE_MODULES;
    # runc's prepareEnv keeps the last value of a key
    spec = docker_spec("HABANA_VISIBLE_MODULES=7", "HABANA_VISIBLE_DEVICES=1,0")
    result = habana(spec, version="1.16.0")
    assert result.env == ["HABANA_VISIBLE_MODULES=2,6"]  # cards 0,1 have module ids 2,6 (profile, hl-smi -Q)
    assert rt._env_map(result.spec["process"]["env"])["HABANA_VISIBLE_MODULES"] == "2,6"


def test_habana_modules_alone_select_cards_only_where_the_runtime_honours_them():
    spec = docker_spec("HABANA_VISIBLE_MODULES=2,6")
    # <= v1.16.0 (all published source): the variable is not read -> every card; v1.16 then rewrites it to all
    assert len(habana(spec, version="1.15.0").devices) == 16
    everything = habana(spec, version="1.16.0")
    assert len(everything.devices) == 16 and everything.env == ["HABANA_VISIBLE_MODULES=0,1,2,3,4,5,6,7"]
    # docs.habana.ai Multiple Dockers Each with a Single Workload (latest): mounts by module id (version boundary
    # not sourced: MODULES_SELECT_SINCE)
    assert added(habana(spec, version="1.21.1")) == ["accel0", "accel_controlD0", "accel1", "accel_controlD1"]
    assert len(habana(spec, version="1.21.1", honours_visible_modules=False).devices) == 16


def test_habana_both_variables_must_agree_where_modules_are_honoured():
    agree = habana(docker_spec("HABANA_VISIBLE_DEVICES=0,1", "HABANA_VISIBLE_MODULES=6,2"))
    assert added(agree) == ["accel0", "accel_controlD0", "accel1", "accel_controlD1"]
    with pytest.raises(rt.Refusal) as refused:
        habana(docker_spec("HABANA_VISIBLE_DEVICES=0,1", "HABANA_VISIBLE_MODULES=0,1"))
    assert "not documented" in refused.value.stderr and "SIMULATED" in refused.value.stderr
    # before modules were honoured, the pair is simply DEVICES plus an untouched (<1.16) variable
    old = habana(docker_spec("HABANA_VISIBLE_DEVICES=0,1", "HABANA_VISIBLE_MODULES=0,1"), version="1.15.0")
    assert len(old.devices) == 4 and old.env == []


# --- nvidia-container-runtime (legacy) ----------------------------------------------------------------------
def test_nvidia_indices_add_the_gpus_and_the_driver_control_nodes():
    # libnvidia-container common.c select_devices (index); nvc_info.c lookup_devices: nvidiactl, nvidia-uvm,
    # nvidia-uvm-tools where found
    result = nvidia(docker_spec("NVIDIA_VISIBLE_DEVICES=0,1"))
    assert added(result) == ["nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools"]
    assert added(nvidia(docker_spec("NVIDIA_VISIBLE_DEVICES= 3 ,,"))) == ["nvidia3", "nvidiactl", "nvidia-uvm",
                                                                         "nvidia-uvm-tools"]


def test_nvidia_uuid_and_bus_id_as_nvidia_smi_prints_them():
    uuid = rt._nv_uuid(5)  # "GPU 5: ... (UUID: GPU-5e1a0005-...)" as the nvidia-smi -L emulator prints it
    assert added(nvidia(docker_spec(f"NVIDIA_VISIBLE_DEVICES={uuid.lower()}")))[0] == "nvidia5"
    assert added(nvidia(docker_spec("NVIDIA_VISIBLE_DEVICES=0000:0A:00.0")))[0] == "nvidia2"  # common.c PCI form


def test_nvidia_all_none_void_and_unset():
    # toolkit devices.go NewVisibleDevices / cuda_image.go DevicesFromEnvvars; docs "Specialized Configurations
    # with Docker": none = no GPU but driver; void, empty or unset = same as runc
    assert len(nvidia(docker_spec("NVIDIA_VISIBLE_DEVICES=all")).devices) == 11
    assert added(nvidia(docker_spec("NVIDIA_VISIBLE_DEVICES=none"))) == ["nvidiactl", "nvidia-uvm",
                                                                        "nvidia-uvm-tools"]
    for env in (("NVIDIA_VISIBLE_DEVICES=void",), ("NVIDIA_VISIBLE_DEVICES=",), ()):
        assert nvidia(docker_spec(*env)).devices == []
    assert len(nvidia(docker_spec("NVIDIA_VISIBLE_DEVICES=0,all")).devices) == 11  # first special value wins


def test_nvidia_unset_in_a_legacy_cuda_image_means_all():
    # cuda_image.go IsLegacy: CUDA_VERSION set and NVIDIA_REQUIRE_CUDA empty; unset -> "all"
    assert len(nvidia(docker_spec("CUDA_VERSION=11.0")).devices) == 11
    assert nvidia(docker_spec("CUDA_VERSION=12.2.0", "NVIDIA_REQUIRE_CUDA=cuda>=12.2")).devices == []


def test_nvidia_unknown_device_fails_the_prestart_hook():
    # configure.c warnx("device error: %s"), common.c error "<dev>: unknown device"; hook stderr starts with
    # auto.go's "Auto-detected mode as 'legacy'"; runc 1.1 wraps a failed hook (toolkit issue #29 and others)
    for token in ("8", "GPU-00000000-dead", "0:0", "-1"):
        with pytest.raises(rt.Refusal) as refused:
            nvidia(docker_spec(f"NVIDIA_VISIBLE_DEVICES=1,{token}"))
        assert refused.value.docker == (
            "runc create failed: unable to start container process: error during container init: error running "
            "hook #0: error running hook: exit status 1, stdout: , stderr: Auto-detected mode as 'legacy'\n"
            f"nvidia-container-cli: device error: {token}: unknown device")
    spec = docker_spec("NVIDIA_VISIBLE_DEVICES=3")
    spec["hooks"] = {"prestart": [{"path": "/usr/bin/true"}]}
    with pytest.raises(rt.Refusal, match="(?s)hook #1: .*device error: 3: unknown device"):
        nvidia(spec, host=nvidia_host({"missing": [3]}))


def test_nvidia_cuda_requirement_is_checked_against_the_driver():
    # dsl.c dsl_evaluate: ' ' = or, ',' = and; the message names the first alternative; cuda rule against the
    # driver's CUDA version (profile: 12.2); NVIDIA_DISABLE_REQUIRE (cuda_image.go HasDisableRequire)
    newer = "NVIDIA_REQUIRE_CUDA=cuda>=12.4 brand=tesla,driver>=470,driver<471"
    with pytest.raises(rt.Refusal) as refused:
        nvidia(docker_spec("NVIDIA_VISIBLE_DEVICES=0", newer))
    assert refused.value.docker.endswith(
        "nvidia-container-cli: requirement error: unsatisfied condition: cuda>=12.4, please update your driver to "
        "a newer version, or use an earlier cuda container")
    assert nvidia(docker_spec("NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_REQUIRE_CUDA=cuda>=12.2")).devices
    assert nvidia(docker_spec("NVIDIA_VISIBLE_DEVICES=0", newer, "NVIDIA_DISABLE_REQUIRE=true")).devices
    assert nvidia(docker_spec("NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_REQUIRE_CUDA=cuda>=12.4 driver>=535")).devices
    with pytest.raises(rt.Refusal, match="requirement error: unsatisfied condition: arch>=10.0$"):
        nvidia(docker_spec("NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_REQUIRE_ARCH=arch>=10.0"))
    with pytest.raises(rt.Refusal, match="requirement error: invalid expression$"):
        nvidia(docker_spec("NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_REQUIRE_X=cuda==12"))


@pytest.mark.parametrize("v1, op, v2, want", [
    ("12.2", ">=", "12.4", False), ("12.4", ">=", "12.4", True), ("12.4.1", ">", "12.4", True),
    ("12.4.0", "=", "12.4", True), ("535.129.03", "<", "536", True), ("12.2", "!=", "12.2.0", False),
    ("12.a", ">=", "1", -1),
])
def test_dsl_compare_version_matches_libnvidia_container(v1, op, v2, want):
    assert rt.dsl_compare_version(v1, op, v2) == want


def test_nvidia_jit_cdi_toolkit_is_labelled_where_its_text_is_not_sourced():
    # toolkit v1.18.0-rc.1 CHANGELOG: "Default to jit-cdi mode in the nvidia runtime"
    with pytest.raises(rt.Refusal, match="SIMULATED.*mode jit-cdi.*not modelled"):
        nvidia(docker_spec("NVIDIA_VISIBLE_DEVICES=9"), version="1.18.0")
    assert added(nvidia(docker_spec("NVIDIA_VISIBLE_DEVICES=1"), version="1.18.0"))[0] == "nvidia1"


# --- ascend-docker-runtime ----------------------------------------------------------------------------------
def test_ascend_devices_manager_nodes_and_base_list_mounts():
    # process.go addDevice + addManagerDevice (910: davinci_manager, devmm_svm, hisi_hdc); hook process.go
    # readMountConfig (base.list entries that exist, files and directories); addAscendDockerEnv
    result = ascend(docker_spec("ASCEND_VISIBLE_DEVICES=0,1"))
    assert added(result) == ["davinci0", "davinci1", "davinci_manager", "devmm_svm", "hisi_hdc"]
    assert result.mounts == ["/usr/local/bin/npu-smi", "/usr/local/Ascend/driver/lib64", "/usr/local/dcmi"]
    assert result.spec["mounts"][-1]["options"] == ["rbind", "rprivate", "ro"]
    assert result.env == ["ASCEND_DOCKER_RUNTIME=True"]
    # version.info and /etc/ascend_install.info are not in base.list: the runtime does not mount them
    assert "/usr/local/Ascend/driver/version.info" not in result.mounts


def test_ascend_ranges_and_lists():
    # process.go getDeviceListFromVisibleValue: "a-b" ranges and single ids; removeDuplication (adjacent only)
    assert added(ascend(docker_spec("ASCEND_VISIBLE_DEVICES=0-3")))[:4] == ["davinci0", "davinci1", "davinci2",
                                                                          "davinci3"]
    assert rt.ascend_parse("0-2, 5,5,1") == [0, 1, 2, 5, 1]
    assert added(ascend(docker_spec("ASCEND_VISIBLE_DEVICES=Ascend910-2,Ascend910-3")))[:2] == ["davinci2",
                                                                                               "davinci3"]


@pytest.mark.parametrize("value, message", [
    ("x", "failed to parse device : invalid single device parameter: x"),
    ("0,,1", "failed to parse device : invalid single device parameter: "),
    ("3-1", "failed to parse device : left boarder (3) should not be larger than the right one(1)"),
    ("0-200", "failed to parse device : invalid right boarder range parameter: 200"),
    ("-1", "failed to parse device : invalid left boarder range parameter: "),
    ("1-2-3", "failed to parse device : invalid device range: 1-2-3"),
    ("Ascend310P-0", "failed to parse ascend device : chip type not match really: 310P"),
    ("Ascend910-0,Ascend310-1", "failed to parse ascend device : invalid device chip type: Ascend310-1"),
])
def test_ascend_refuses_a_bad_visible_devices_value(value, message):
    with pytest.raises(rt.Refusal) as refused:
        ascend(docker_spec(f"ASCEND_VISIBLE_DEVICES={value}"))
    text = ("failed to modify spec file /b/config.json: failed to check ASCEND_VISIBLE_DEVICES parameter, err: "
            + message)
    assert refused.value.stderr.endswith(" " + text)  # log.Fatal: "2006/01/02 15:04:05 <err>"
    assert refused.value.docker.startswith(text)


def test_ascend_refuses_an_id_the_host_does_not_have():
    # process.go addDeviceToSpec: oci.DeviceFromPath (lstat) error, "%v"
    with pytest.raises(rt.Refusal) as refused:
        ascend(docker_spec("ASCEND_VISIBLE_DEVICES=0,9"))
    assert refused.value.stderr.endswith(
        "failed to modify spec file /b/config.json: failed to add device to env: failed to add davinci device to "
        "spec: failed to get /dev/davinci9 info : no such file or directory")


def test_ascend_unset_empty_or_void_mounts_nothing():
    # process.go checkVisibleDevice: "" or "void" -> no device, no hook; the env marker is still added
    for env in ((), ("ASCEND_VISIBLE_DEVICES=",), ("ASCEND_VISIBLE_DEVICES=void",)):
        result = ascend(docker_spec(*env))
        assert result.devices == [] and result.mounts == [] and result.env == ["ASCEND_DOCKER_RUNTIME=True"]


def test_ascend_runtime_options():
    # hook process.go parseRuntimeOptions (NODRV, VIRTUAL only); NODRV: devices only (hiascend "Usage on the Docker
    # Client", example 2); an invalid option fails the prestart hook
    nodrv = ascend(docker_spec("ASCEND_VISIBLE_DEVICES=0", "ASCEND_RUNTIME_OPTIONS=NODRV"))
    assert added(nodrv)[0] == "davinci0" and nodrv.mounts == []
    with pytest.raises(rt.Refusal) as refused:
        ascend(docker_spec("ASCEND_VISIBLE_DEVICES=0", "ASCEND_RUNTIME_OPTIONS=FOO"))
    assert "error running hook #0: error running hook: exit status 1, stdout: , stderr: ascend-docker-hook" in (
        refused.value.docker)
    assert refused.value.docker.endswith(
        'failed in runtime.doProcess: &errors.errorString{s:"failed to parse runtime options: '
        '&errors.errorString{s:\\"invalid runtime option of invalid input value\\"}"}')
    with pytest.raises(rt.Refusal, match="failed to get /dev/vdavinci100 info : no such file or directory"):
        ascend(docker_spec("ASCEND_VISIBLE_DEVICES=100", "ASCEND_RUNTIME_OPTIONS=VIRTUAL"))


def test_ascend_custom_mount_list():
    files = dict(ASCEND_FILES, **{"/etc/ascend-docker-runtime.d/hostlog.list": "/usr/local/bin/npu-smi\n"})
    result = ascend(docker_spec("ASCEND_VISIBLE_DEVICES=0", "ASCEND_RUNTIME_MOUNTS=HostLog"), ascend_host(files))
    assert result.mounts == ["/usr/local/bin/npu-smi"]
    with pytest.raises(rt.Refusal, match="failed to process config nolist"):
        ascend(docker_spec("ASCEND_VISIBLE_DEVICES=0", "ASCEND_RUNTIME_MOUNTS=nolist"))


# --- the OCI command line and the shim ----------------------------------------------------------------------
def test_oci_command_line_as_containerd_passes_it():
    command, options, rest = rt.parse_args(CONTAINERD_CREATE)
    assert command == "create" and options["--log-format"] == "json" and options["--log"].endswith("log.json")
    assert rt.bundle_dir(rest) == "./testdata/input"
    assert rt.bundle_dir(["--bundle=/x", "id"]) == "/x" and rt.bundle_dir(["-b", "/y", "id"]) == "/y"
    assert rt.parse_args(["--root", "/r", "delete", "--force", "create"])[0] == "delete"


def run_main(tool, tmp_path, env, host, extra=()):
    bundle = tmp_path / "bundle"
    bundle.mkdir(exist_ok=True)
    (bundle / "config.json").write_text(json.dumps(docker_spec(*env)))
    log = tmp_path / "log.json"
    argv = ["--root", "/run/runc", "--log", str(log), "--log-format", "json", *extra, "create", "--bundle",
            str(bundle), "--pid-file", str(bundle / "init.pid"), "cid"]
    calls = []
    code = rt.main(tool, argv, host=host, execvp=lambda prog, args: calls.append((prog, args)))
    return code, calls, json.loads((bundle / "config.json").read_text()), log, argv


def test_shim_create_edits_the_spec_then_runs_runc_with_the_same_arguments(tmp_path, monkeypatch):
    monkeypatch.setattr(rt, "SIM_LOG", str(tmp_path / "sim.log"))
    code, calls, spec, log, argv = run_main(rt.NVIDIA, tmp_path, ["NVIDIA_VISIBLE_DEVICES=2"], nvidia_host())
    assert code == 0 and calls == [("runc", ["runc", *argv])]
    assert [d["path"] for d in spec["linux"]["devices"]][0] == "/dev/nvidia2"
    assert not log.exists() and "devices ['/dev/nvidia2'" in (tmp_path / "sim.log").read_text()


def test_shim_refusal_prints_the_vendor_text_and_tells_containerd(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(rt, "SIM_LOG", str(tmp_path / "sim.log"))
    code, calls, spec, log, _ = run_main(rt.NVIDIA, tmp_path, ["NVIDIA_VISIBLE_DEVICES=8"], nvidia_host())
    assert code == 1 and calls == [] and "devices" not in spec["linux"]
    err = capsys.readouterr().err
    assert "nvidia-container-cli: device error: 8: unknown device" in err and "SIMULATED" in err
    entry = json.loads(log.read_text().splitlines()[-1])  # containerd getLastRuntimeError: last level=error
    assert entry["level"] == "error" and "device error: 8: unknown device" in entry["msg"]
    assert "SIMULATED nvidia-container-runtime 1.17.8" in entry["msg"]


def test_shim_passes_other_commands_to_runc_untouched(tmp_path):
    calls = []
    argv = ["--root", "/run/runc", "--log", "x", "delete", "--force", "cid"]
    assert rt.main(rt.HABANA, argv, host=gaudi_host(), execvp=lambda p, a: calls.append(a)) == 0
    assert calls == [["runc", *argv]]


def test_runtime_version_comes_from_the_profile_and_the_host_overrides(tmp_path):
    profile = profiles.get_profile("gaudi2").to_json()
    assert profile["runtimes"]["habana-container-runtime"]["version"] == "1.21.1"
    first, second = tmp_path / "etc.json", tmp_path / "run.json"
    first.write_text(json.dumps({rt.HABANA: {"version": "1.15.0", "visible_devices_all_as_default": False}}))
    second.write_text(json.dumps({rt.HABANA: {"version": "1.16.0"}}))
    loaded = rt.load_config(rt.HABANA, profile, paths=(first, second))
    assert loaded["version"] == "1.16.0" and loaded["visible_devices_all_as_default"] is False
    assert rt.load_config(rt.NVIDIA, profiles.get_profile("h100").to_json(), paths=())["version"] == "1.17.8"


def write_sim_root(tmp_path, profile_name, runtimes_json=None):
    config = tmp_path / "etc" / "inferfleet-sim"
    config.mkdir(parents=True)
    (config / "profile.json").write_text(json.dumps(profiles.get_profile(profile_name).to_json()))
    (config / "faults.json").write_text("{}")
    if runtimes_json:
        (config / "runtimes.json").write_text(json.dumps(runtimes_json))
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "runc").write_text("#!/bin/sh\necho \"fake-runc $*\"\n")
    (fake / "runc").chmod(0o755)
    return fake


def run_shim(tmp_path, tool, fake_bin, env):
    link = tmp_path / tool
    link.symlink_to(SIM / "inferfleet-sim")
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps(docker_spec(*env)))
    environ = dict(os.environ, INFERFLEET_SIM_ROOT=str(tmp_path), PATH=f"{fake_bin}:{os.environ['PATH']}")
    argv = [str(link), "--log", str(tmp_path / "log.json"), "--log-format", "json", "create", "--bundle",
            str(bundle), "cid"]
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=environ), bundle


def test_the_installed_shim_refuses_and_execs_runc_as_a_process(tmp_path):
    # the entry point a sandbox host runs: dispatch by name, real exec of runc (a fake one on PATH)
    fake = write_sim_root(tmp_path, "ascend910b")
    refused, _ = run_shim(tmp_path, "ascend-docker-runtime", fake, ["ASCEND_VISIBLE_DEVICES=x"])
    assert refused.returncode == 1 and "fake-runc" not in refused.stdout
    assert "invalid single device parameter: x" in refused.stderr and "SIMULATED" in refused.stderr
    assert "invalid single device parameter: x" in (tmp_path / "log.json").read_text()


def test_the_installed_shim_reads_an_older_version_from_runtimes_json(tmp_path):
    fake = write_sim_root(tmp_path, "gaudi2", {rt.HABANA: {"version": "1.16.0"}})
    done, bundle = run_shim(tmp_path, "habana-container-runtime", fake, ["HABANA_VISIBLE_DEVICES=9"])
    assert done.returncode == 0 and done.stdout.startswith("fake-runc --log")
    spec = json.loads((bundle / "config.json").read_text())
    assert 'HABANA_RUNTIME_ERROR="no accelerators found"' in spec["process"]["env"]


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
def test_the_installed_shim_stats_real_device_nodes(tmp_path):
    fake = write_sim_root(tmp_path, "h100")
    dev = tmp_path / "dev"
    dev.mkdir()
    for name, minor in (("nvidia0", 0), ("nvidia1", 1), ("nvidiactl", 255)):
        os.mknod(dev / name, 0o666 | stat.S_IFCHR, os.makedev(195, minor))
    done, bundle = run_shim(tmp_path, "nvidia-container-runtime", fake, ["NVIDIA_VISIBLE_DEVICES=1"])
    assert done.returncode == 0, done.stderr
    devices = json.loads((bundle / "config.json").read_text())["linux"]["devices"]
    assert [(d["path"], d["major"], d["minor"]) for d in devices] == [("/dev/nvidia1", 195, 1),
                                                                       ("/dev/nvidiactl", 195, 255)]


def test_fixture_readme_names_a_source_for_each_runtime():
    text = (FIXTURES / "README.md").read_text()
    for repo in ("HabanaAI/habana-container-runtime", "NVIDIA/nvidia-container-toolkit", "NVIDIA/libnvidia-container",
                 "Ascend/mind-cluster", "docs.habana.ai"):
        assert repo in text
    assert Path(FIXTURES / "docker-20.10.24-config.json").exists()
