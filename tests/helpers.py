import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# The checkout is the collection inferfleet.fleet: .collections/ansible_collections/inferfleet/fleet links to it, so
# the modules' imports (ansible_collections.inferfleet.fleet.plugins.module_utils.<name>) resolve as on a host.
COLLECTIONS = ROOT / ".collections"
sys.path.insert(0, str(COLLECTIONS))
from ansible_collections.inferfleet.fleet.plugins.module_utils import accel_parsers, fabric_parsers  # noqa: E402, F401


def run_module(path: Path, args: dict, check: bool = False, bin_dirs: tuple = ()) -> dict:
    """Run an Ansible module of plugins/modules/ as Ansible would (a JSON args file), return its JSON result.
    bin_dirs: directories put first on PATH (stand-ins for the tools the module runs)."""
    import json
    import subprocess
    import tempfile

    payload = {"ANSIBLE_MODULE_ARGS": dict(args, _ansible_check_mode=check, _ansible_diff=True)}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(payload, handle)
    try:
        proc = subprocess.run([sys.executable, str(path), handle.name], capture_output=True, text=True,
                              env={"PYTHONPATH": str(COLLECTIONS),
                                   "PATH": ":".join([*map(str, bin_dirs), "/usr/bin:/bin"])})
    finally:
        Path(handle.name).unlink()
    try:
        result = json.loads(proc.stdout)
    except ValueError as err:
        raise AssertionError(f"module printed no JSON: {proc.stdout!r} {proc.stderr!r}") from err
    # ansible-core 2.19 returns warnings as structured events; tests read their text
    result["warnings"] = [w["event"]["msg"] if isinstance(w, dict) else w for w in result.get("warnings", [])]
    return result


def load_library_module(name: str):
    return _load(f"inferfleet_library_{name}", ROOT / "plugins" / "modules" / f"{name}.py")
