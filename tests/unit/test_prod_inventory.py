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
