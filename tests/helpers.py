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


# Modules in library/ import their helpers as ansible.module_utils.<name>, as Ansible ships them to hosts.
accel_parsers = _load("ansible.module_utils.accel_parsers", ROOT / "module_utils" / "accel_parsers.py")
