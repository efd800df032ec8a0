import importlib.util
import os
from pathlib import Path

import helpers

spec = importlib.util.spec_from_file_location("accel_facts", helpers.ROOT / "plugins" / "modules" / "accel_facts.py")
accel_facts = importlib.util.module_from_spec(spec)
spec.loader.exec_module(accel_facts)


def fake_proc(root: Path, pid: int, fds: dict, cgroup: str = "0::/\n"):
    (root / str(pid) / "fd").mkdir(parents=True)
    for fd, target in fds.items():
        os.symlink(target, root / str(pid) / "fd" / str(fd))
    (root / str(pid) / "cgroup").write_text(cgroup)


def test_scan_holders_and_container_of(tmp_path):
    container = "a" * 64
    fake_proc(tmp_path, 10, {3: "/dev/accel/accel_controlD2", 4: "/dev/null"},
              f"12:devices:/docker/{container}\n")
    fake_proc(tmp_path, 11, {3: "/dev/accel/accel_controlD2", 5: "pipe:[123]"})
    holders = accel_facts.scan_holders(str(tmp_path))
    assert holders["/dev/accel/accel_controlD2"] == {10, 11}
    assert "pipe:[123]" not in holders
    assert accel_facts.container_of(10, str(tmp_path)) == "a" * 12
    assert accel_facts.container_of(11, str(tmp_path)) is None


def test_module_is_documented():
    import yaml

    doc = yaml.safe_load(accel_facts.DOCUMENTATION)
    assert doc["module"] == "accel_facts"
    assert set(doc["options"]["platform"]["choices"]) == {"gaudi", "ascend", "nvidia", "cpu"}
    assert yaml.safe_load(accel_facts.RETURN)["ansible_facts"]
    assert "accel_facts:" in accel_facts.EXAMPLES
