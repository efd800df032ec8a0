import json
import subprocess
import sys
from pathlib import Path

from helpers import ROOT

from inferfleet.schema import validate_settings as validate_host


def test_prod_example_is_a_valid_mixed_fleet():
    ansible_inventory = Path(sys.executable).parent / "ansible-inventory"
    out = subprocess.run([str(ansible_inventory), "-i", str(ROOT / "inventories/prod/hosts.yml"), "--list"],
                         capture_output=True, text=True, check=True).stdout
    data = json.loads(out)
    groups = {g: set(v.get("hosts", [])) for g, v in data.items() if isinstance(v, dict) and g != "_meta"}
    assert {"gaudi", "ascend", "nvidia", "cpu"} <= set(groups)
    for host, host_vars in data["_meta"]["hostvars"].items():
        member_of = [g for g, hosts in groups.items() if host in hosts]
        assert validate_host(host, host_vars, member_of) == [], host
        assert host_vars["inferfleet_platform"] in member_of


def test_the_prod_directory_is_read_without_its_model_configs_as_inventory():
    """`-i inventories/prod` (the directory): model_configs/*.json are files the services name, not inventory."""
    import os

    ansible_inventory = Path(sys.executable).parent / "ansible-inventory"
    out = subprocess.run([str(ansible_inventory), "-i", str(ROOT / "inventories/prod"), "--list"],
                         capture_output=True, text=True, check=True,
                         env=dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg")))
    assert "Skipping" not in out.stderr and "WARNING" not in out.stderr, out.stderr
    assert set(json.loads(out.stdout)["_meta"]["hostvars"]) == {"gaudi2-node01", "gaudi2-node02", "ascend-node01",
                                                                "h100-node01", "gateway01"}
