"""`ansible-test sanity` on the collection inferfleet.fleet as its tarball installs it (no checkout files in it).

ansible-test --local still makes one venv per sanity test and bootstraps pip into each with a get-pip script it
downloads from ci-files.testing.ansible.com, which this machine cannot reach. The script is given in its cache instead:
pip's own wheel of the same version, from PyPI, installing pip (what get-pip does). Everything else ansible-test
installs (pylint, pycodestyle, voluptuous, ...) comes from PyPI at its own pinned versions.

    python tests/collection_sanity.py [WORKDIR]
"""

import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def ansible_test_pip_version() -> str:
    """The pip version ansible-test bootstraps into its venvs."""
    import ansible_test

    source = (Path(ansible_test.__file__).parent / "_internal" / "python_requirements.py").read_text()
    return re.search(r"pip='([0-9.]+)'", source).group(1)


def bootstrap_script(home: Path) -> Path:
    """The get-pip stand-in, in ansible-test's cache under `home`."""
    version = ansible_test_pip_version()
    wheels = home / "pip-wheel"
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(wheels), f"pip=={version}"],
                   check=True, capture_output=True)
    (wheel,) = wheels.glob(f"pip-{version}-*.whl")
    script = home / ".ansible" / "test" / "cache" / f"get_pip_{version.replace('.', '_')}.py"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(
        "# get-pip stand-in (tests/collection_sanity.py): pip's own wheel installs pip\n"
        "import runpy\nimport sys\n\n"
        f"sys.path.insert(0, {str(wheel)!r})\n"
        "sys.argv = ['pip', 'install'] + [a for a in sys.argv[1:] if a not in ('--no-setuptools', '--no-wheel')]\n"
        "runpy.run_module('pip', run_name='__main__', alter_sys=True)\n")
    return script


def run(workdir: Path) -> subprocess.CompletedProcess:
    """Build the tarball, install it under workdir and run every sanity test on it; returns the finished process."""
    dist = workdir / "dist"
    subprocess.run([str(BIN / "ansible-galaxy"), "collection", "build", "--force", "--output-path", str(dist),
                    str(ROOT)], check=True, capture_output=True)
    (tarball,) = dist.glob("inferfleet-fleet-*.tar.gz")
    subprocess.run([str(BIN / "ansible-galaxy"), "collection", "install", "--no-deps", "--force", "-p",
                    str(workdir / "collections"), str(tarball)], check=True, capture_output=True, cwd=workdir)
    collection = workdir / "collections" / "ansible_collections" / "inferfleet" / "fleet"
    home = workdir / "home"
    bootstrap_script(home)
    env = {"HOME": str(home), "PATH": f"{BIN}:/usr/bin:/bin", "LANG": "C.UTF-8"}
    return subprocess.run([str(BIN / "ansible-test"), "sanity", "--local", "--python",
                           f"{sys.version_info.major}.{sys.version_info.minor}", "--requirements", "--color", "no"],
                          cwd=collection, env=env, capture_output=True, text=True, timeout=1800)


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="inferfleet-sanity-"))
    done = run(target)
    print(done.stdout[-20000:], done.stderr[-20000:], sep="\n")
    sys.exit(done.returncode)
