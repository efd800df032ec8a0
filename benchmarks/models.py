"""Stage models on the demo sandbox (`make demo` first): what it costs, in ratios measured in one run.

1. Hub bytes / model size for 1 and for 3 hosts (goal <= 1.1): the controller fetches each model once into a
   fleet cache (cold here: a new cache directory per run), the hosts copy from it.
2. A 5 GB model directory (a file:// source on the controller, placed on one host): the cold placement, then the
   re-run (goal: under 2 s per host, no hashing: one stat per file).
3. Download throughput of the real huggingface_hub client from the local hub against a plain `curl` of the same
   file (goal >= 0.9), and of the whole fetch (download + verification).

The hub is the sandbox's (SIMULATED Hugging Face / ModelScope API on loopback); the hosts are real over SSH.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from inferfleet import models, up
from inferfleet.runs import task_seconds
from inferfleet.sandbox import hub

PROJECT = Path(__file__).resolve().parents[1]
INVENTORY = PROJECT / "inventories" / "sandbox" / "hosts.yml"
STATE = PROJECT / ".sandbox" / "inferfleet"
GIB = 1024**3


def hub_root() -> Path:
    return STATE / "hub"


def model_bytes(names) -> int:
    root = PROJECT / ".cache" / "models"
    return sum(p.stat().st_size for n in names for p in (root / n).rglob("*") if p.is_file())


def hub_ratio(limit: str, names: tuple[str, ...], work: Path) -> float:
    start = hub.bytes_served(hub_root())[1]
    result = up(INVENTORY, stages=["models"], limit=limit,
                extravars={"inferfleet_model_cache_dir": str(work / f"cache-{limit.count(',') + 1}")})
    if not result.ok:
        sys.exit(f"models stage failed: {[f.msg for f in result.failures]}")
    return hub.bytes_served(hub_root(), start)[0] / model_bytes(names)


def big_model(work: Path) -> Path:
    """tiny-llama's files and 5 x 1 GiB of filler weights, written once."""
    directory = work / "big-model"
    if not (directory / "filler-00005.safetensors").exists():
        shutil.copytree(PROJECT / ".cache" / "models" / "tiny-llama", directory, dirs_exist_ok=True)
        block = os.urandom(64 * 1024 * 1024)
        for part in range(1, 6):
            with open(directory / f"filler-{part:05d}.safetensors", "wb") as handle:
                for _ in range(16):
                    handle.write(block)
    return directory


def placement(work: Path) -> tuple[float, float, float]:
    """The cold placement and the re-run of the stage, and the re-run's own check of the placed model (the task
    that stats every file against the manifest)."""
    directory = big_model(work)
    extra = {"inferfleet_models": {"/models/tiny-llama": f"file://{directory}"}}
    timings = []
    for _ in range(2):
        started = time.monotonic()
        result = up(INVENTORY, stages=["models"], limit="h100-1", extravars=extra)
        timings.append(time.monotonic() - started)
        if not result.ok:
            sys.exit(f"models stage failed: {[f.msg for f in result.failures]}")
    check = task_seconds(result.run_dir, "Look at each model on the host")
    up(INVENTORY, stages=["models"], limit="h100-1")  # tiny-llama back in place for serving
    return timings[0], timings[1], check


def throughput(work: Path) -> tuple[float, float, float]:
    """MB/s of curl, of huggingface_hub's download and of the whole fetch, for one 1 GiB file."""
    repo = work / "tp-repo"
    repo.mkdir(exist_ok=True)
    (repo / "config.json").write_text("{}")
    if not (repo / "model.safetensors").exists():
        block = os.urandom(64 * 1024 * 1024)
        with open(repo / "model.safetensors", "wb") as handle:
            for _ in range(16):
                handle.write(block)
    root = work / "tp-hub"
    server = hub.serve(root, 0)
    hub.publish(root, "bench/tp", repo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    commit = hub.Repo("bench/tp", repo).commit
    try:
        started = time.monotonic()
        subprocess.run(["curl", "-sf", "-o", str(work / "curl.bin"),
                        f"{url}/bench/tp/resolve/{commit}/model.safetensors"],
                       check=True)
        curl = GIB / 1e6 / (time.monotonic() - started)
        from huggingface_hub import snapshot_download

        started = time.monotonic()
        os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
        snapshot_download("bench/tp", local_dir=str(work / "client"), endpoint=url)
        client = GIB / 1e6 / (time.monotonic() - started)
        started = time.monotonic()
        models.fetch(models.parse_source("hf://bench/tp"), work / "tp-cache", endpoint=url)
        fetch = GIB / 1e6 / (time.monotonic() - started)
    finally:
        server.shutdown()
    return curl, client, fetch


def main() -> None:
    if not INVENTORY.exists() or not hub_root().exists():
        sys.exit("no demo sandbox with its hub: run `make demo` first")
    with tempfile.TemporaryDirectory(prefix="inferfleet-bench-models-", dir=PROJECT / ".cache") as tmp:
        work = Path(tmp)
        one = hub_ratio("gaudi2-1", ("all-MiniLM-L6-v2", "tiny-reranker"), work)
        three = hub_ratio("gaudi2-1,ascend910b-1,h100-1", ("all-MiniLM-L6-v2", "tiny-reranker", "tiny-llama"), work)
        cold, rerun, check = placement(work)
        curl, client, fetch = throughput(work)
    print("stage models (the sandbox's SIMULATED hub on loopback; real clients, SSH, rsync):")
    print(f"  hub bytes / model size, 1 host: {one:.3f}   3 hosts: {three:.3f}   (goal <= 1.1)")
    print(f"  5 GiB model on one host: cold placement {cold:.1f} s; re-run {rerun:.1f} s for the whole stage, of "
          f"which the host's check of the placed model {check:.2f} s (goal < 2 s per host, no hashing)")
    print(f"  1 GiB download: curl {curl:.0f} MB/s, huggingface_hub {client:.0f} MB/s ({client / curl:.2f} x curl, "
          f"goal >= 0.9), whole fetch with verification {fetch:.0f} MB/s ({fetch / curl:.2f} x)")
    print(json.dumps({"hub_ratio_1": one, "hub_ratio_3": three, "cold_s": cold, "rerun_s": rerun, "check_s": check,
                      "curl_mbps": curl, "client_mbps": client, "fetch_mbps": fetch}))


if __name__ == "__main__":
    main()
