import os
import shutil
from pathlib import Path

import pytest
from helpers import ROOT

from inferfleet.sandbox.fleet import LABEL, Sandbox

ALL_PROFILES = ["gaudi2", "ascend910b", "h100", "cpu"]


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory):
    """A fleet with all four profiles, apart from the demo's (own name, registry port and state).
    INFERFLEET_TEST_KEEP=DIR keeps it in DIR after the tests and finds it there again (a developer's loop)."""
    keep = os.environ.get("INFERFLEET_TEST_KEEP")
    root = Path(keep) if keep else tmp_path_factory.mktemp("sandbox")
    box = Sandbox(name=os.environ.get("INFERFLEET_TEST_SANDBOX", "ifci"), state_root=root / "state",
                  registry_port=int(os.environ.get("INFERFLEET_TEST_REGISTRY_PORT", "5055")))
    box.up(profile_names=ALL_PROFILES, inventory_dir=root / "inventory")
    box.inventory = root / "inventory" / "hosts.yml"
    # the settings and services `make demo` runs with
    for part in ("group_vars", "host_vars"):  # the demo's services too
        shutil.copytree(ROOT / "inventories" / "sandbox" / part, root / "inventory" / part, dirs_exist_ok=True)
    yield box
    if keep:
        return
    removed = box.down()
    leftovers = box.client.containers.list(all=True, filters={"label": f"{LABEL}={box.name}"})
    assert not leftovers, f"sandbox down left containers: {leftovers}"
    assert any(item.startswith("registry process") for item in removed)
