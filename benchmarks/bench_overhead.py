"""Stage bench on the demo sandbox (`make demo` first): the time the stage adds around vLLM's own client.

Runs the stage on one host (h100-1, the generative service, the sandbox's 1/2/4 sweep) and compares its wall time
with the time the client's containers ran (ansible-runner's job events of the task that runs them). Goal: the
stage adds at most 10 %. The servers are vLLM's CPU build behind SIMULATED cards; what is measured is the stage
(planning, the context, slurping the results, the verdict, the report), not the servers.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from inferfleet import up
from inferfleet.runs import task_seconds

PROJECT = Path(__file__).resolve().parents[1]
INVENTORY = PROJECT / "inventories" / "sandbox" / "hosts.yml"
CLIENT_TASK = "Run the benchmark client, one concurrency after another"


def main() -> None:
    if not INVENTORY.exists():
        sys.exit("no demo sandbox: run `make demo` first")
    started = time.monotonic()
    result = up(INVENTORY, stages=["bench"], limit="h100-1", extravars={"vllm_bench_baseline": "none"})
    stage = time.monotonic() - started
    if not result.ok:
        sys.exit(f"bench stage failed: {[f.msg for f in result.failures]}")
    client = task_seconds(result.run_dir, CLIENT_TASK)
    print("stage bench on h100-1 (SIMULATED card, vLLM CPU build), the client's 3-point sweep:")
    print(f"  stage {stage:.1f} s, client containers {client:.1f} s, added {stage - client:.1f} s "
          f"= {(stage - client) / client:.0%} of the client's time (goal <= 10%)")
    print(json.dumps({"stage_s": stage, "client_s": client, "overhead": (stage - client) / client}))


if __name__ == "__main__":
    main()
