"""Stage fabric: its time on 1 and on 3 hosts of the demo sandbox (goal: 3 hosts / 1 host <= 1.5), and the speed of
the nccl-tests parser on a 10 MB log.

Needs the demo sandbox with Docker and the images on it (`make demo`, or `inferfleet up --stages
preflight,docker,images`). The figures the stage judges are SIMULATED (sandbox/fabric stand-ins); what is timed is
the stage itself: link checks over SSH, the kept build looked up, the test container, the verdict.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

from inferfleet import fabric, up

PROJECT = Path(__file__).resolve().parents[1]
INVENTORY = PROJECT / "inventories" / "sandbox" / "hosts.yml"
ONE, THREE = "gaudi2-1", "gaudi2-1,ascend910b-1,h100-1"
ROUNDS = 3


def stage_seconds(limit: str) -> float:
    times = []
    for _ in range(ROUNDS):
        started = time.monotonic()
        result = up(INVENTORY, stages=["fabric"], limit=limit)
        times.append(time.monotonic() - started)
        if not result.ok:
            sys.exit(f"fabric stage failed on {limit}: {[f.msg for f in result.failures]}")
    return statistics.median(times)


def parser_speed(megabytes: int = 10) -> tuple[float, int]:
    """MB/s of parse_nccl_tests on a log made of a recorded run's rows, repeated to `megabytes`."""
    recorded = (PROJECT / "tests" / "fixtures" / "fabric" /
                "nccl-tests-2.x-all_reduce_perf-mpirun-np16-g1-2node-16xh100.txt").read_text()
    head, _, rest = recorded.partition("#       size")
    header = "#       size" + rest.split("\n", 2)[0] + "\n" + rest.split("\n", 2)[1] + "\n"
    rows = [line for line in rest.splitlines() if line.strip() and line.strip()[0].isdigit()]
    body = "\n".join(rows) + "\n"
    repeats = megabytes * 1024 * 1024 // len(body) + 1
    text = head + header + body * repeats
    started = time.monotonic()
    parsed = fabric.parse_nccl_tests(text)
    seconds = time.monotonic() - started
    return len(text) / 1e6 / seconds, len(parsed["rows"])


def main() -> None:
    if not INVENTORY.exists():
        sys.exit("no demo sandbox: run `make demo` first")
    up(INVENTORY, stages=["fabric"], limit=THREE)  # warm: the kept builds exist afterwards
    one, three = stage_seconds(ONE), stage_seconds(THREE)
    speed, rows = parser_speed()
    print("stage fabric on the demo sandbox (SIMULATED cards, real Ansible, SSH and Docker), median of "
          f"{ROUNDS} warm runs:")
    print(f"  1 host  ({ONE}): {one:.1f} s")
    print(f"  3 hosts ({THREE}): {three:.1f} s")
    print(f"  3 hosts / 1 host: {three / one:.2f} (goal <= 1.5)")
    print(f"nccl-tests parser on a 10 MB log ({rows} rows): {speed:.1f} MB/s")


if __name__ == "__main__":
    main()
