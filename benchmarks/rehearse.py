"""`inferfleet rehearse -i inventories/prod`: its time warm (the rehearsal fleet kept up, images and models in place;
goal <= 10 min on this machine) for --sample 1 and --sample 2, and the ratio of the two.

The prod example has five hosts in four groups; --sample 1 rehearses four (gaudi2-node02, which serves nothing, is
left out), --sample 2 all five. Each figure is one whole rehearsal: the sandbox checked, the substitutions, site.yml
(every stage) on the SIMULATED fleet, the plan comparison and the report. The first round of each size is a warm-up
(it creates what is missing) and is not counted.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from inferfleet.rehearse import rehearse

PROJECT = Path(__file__).resolve().parents[1]
PROD = PROJECT / "inventories" / "prod"


def seconds(sample: int) -> float:
    rehearse(PROD, sample=sample, keep=True, log=lambda line: None)  # warm-up: creates what is missing
    started = time.monotonic()
    report = rehearse(PROD, sample=sample, keep=True, log=lambda line: None)
    took = time.monotonic() - started
    if not report.ok:
        sys.exit(f"rehearsal --sample {sample} failed: {report.summary()}")
    print(f"--sample {sample}: {len(report.hosts)} host(s), {len(report.cases)} case(s), {took:.0f} s warm",
          flush=True)
    return took


def main() -> int:
    one = seconds(1)
    two = seconds(2)
    print(f"rehearsal warm, --sample 1: {one:.0f} s (goal <= 600 s: {'met' if one <= 600 else 'MISSED'})")
    print(f"--sample 2 / --sample 1: {two / one:.2f} (5 hosts against 4; SIMULATED cards, real Ansible, SSH, "
          "Docker and vLLM CPU)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
