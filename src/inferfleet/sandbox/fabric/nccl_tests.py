#!/usr/bin/env python3
"""SIMULATED stand-in of NVIDIA/nccl-tests programs (build/<collective>_perf). It prints nccl-tests 2.17.8's
layout (src/util.cu: header, `%12li  %12li  %8s  %6s  %6s` then `  %7s  %6s  %6s  %6g` per placement, the
`# Out of bounds values` / `# Avg bus bandwidth` footer) with SIMULATED figures."""
import argparse
import os
import socket
import sys

here = os.path.dirname(os.path.realpath(__file__))
sys.path[:0] = [here, os.path.dirname(here)]
import simcollective as sim  # noqa: E402

# busbw = algbw x factor (nccl-tests doc/PERFORMANCE.md)
BUS_FACTOR = {"all_reduce": lambda n: 2 * (n - 1) / n, "reduce_scatter": lambda n: (n - 1) / n,
              "all_gather": lambda n: (n - 1) / n, "alltoall": lambda n: (n - 1) / n}
REDOP = {"all_reduce": "sum", "reduce_scatter": "sum", "reduce": "sum"}
HEADER = (
    "#                                                              out-of-place                       in-place          ",
    "#       size         count      type   redop    root     time   algbw   busbw  #wrong     time   algbw   busbw  #wrong ",
    "#        (B)    (elements)                               (us)  (GB/s)  (GB/s)             (us)  (GB/s)  (GB/s)         ",
)


def fit(value: float, width: int) -> str:
    """util.cu getFloatStr: %.2f, then %.1f, %.0f, %.1e, %.0e, whichever fits the width."""
    for fmt in ("%.2f", "%.1f", "%.0f", "%.1e", "%.0e"):
        text = fmt % value
        if len(text) <= width:
            return text
    return text


def main() -> None:
    test = os.path.basename(sys.argv[0]).removesuffix("_perf")
    parser = argparse.ArgumentParser()
    parser.add_argument("-b", "--minbytes", default="32M")
    parser.add_argument("-e", "--maxbytes", default="32M")
    parser.add_argument("-f", "--stepfactor", type=int, default=1)
    parser.add_argument("-g", "--ngpus", type=int, default=1)
    parser.add_argument("-n", "--iters", type=int, default=20)
    args = parser.parse_args()
    low, high = sim.parse_size(args.minbytes), sim.parse_size(args.maxbytes)
    profile, faults = sim.load()
    cards = sim.visible_cards(profile)
    host, pid = socket.gethostname()[:10], os.getpid()
    print(f"# {sim.NOTE}")
    print("# nccl-tests version 2.17.8 nccl-headers=22902 nccl-library=22902")
    print(f"# Collective test starting: {test}_perf")
    print(f"# nThread 1 nGpus {args.ngpus} minBytes {low} maxBytes {high} step: {args.stepfactor}(factor) warmup "
          f"iters: 1 iters: {args.iters} agg iters: 1 validation: 1 graph: 0")
    print("#\n# Using devices")
    if len(cards) < args.ngpus:
        print(f"{host}: Test CUDA failure common.cu:1304 'invalid device ordinal'")
        sys.exit(2)
    for rank, card in enumerate(cards[:args.ngpus]):
        bus = card["bus_id"].split(":")
        domain, number, device = int(bus[0], 16), int(bus[1], 16), int(bus[2].split(".")[0], 16)
        print("#  Rank %2d Group  0 Pid %6d on %10s device %2d [%04x:%02x:%02x] %s"
              % (rank, pid, host, rank, domain & 0xFFFF, number, device, profile["model"]))
    print("#")
    print("\n".join(HEADER))
    n, peak = args.ngpus, sim.node_peak(profile, faults, cards[:args.ngpus])
    size, total, rows, wrong_checks = low, 0.0, 0, 0
    while size <= high:
        bus = sim.busbw(peak, size)
        alg = bus / BUS_FACTOR.get(test, lambda n: 1.0)(n)
        time_us = size / (alg * 1e3)
        wrong = 96 if faults.get("collective_wrong") and size == 1048576 else 0
        wrong_checks += 2 if wrong else 0
        cells = "%12li  %12li  %8s  %6s  %6s" % (size, size // 4, "float", REDOP.get(test, "none"), "-1")
        for _ in ("out-of-place", "in-place"):
            cells += "  %7s  %6s  %6s  %6g" % (fit(time_us, 7), fit(alg, 6), fit(bus, 6), wrong)
        print(cells, flush=True)
        total += 2 * bus
        rows += 1
        if faults.get("collective_crash") and rows == 4:
            os._exit(134)
        if args.stepfactor < 2:
            break
        size *= args.stepfactor
    print("# %-20s : %d %s" % ("Out of bounds values", wrong_checks, "FAILED" if wrong_checks else "OK"))
    print("# %-20s : %g " % ("Avg bus bandwidth", total / (2 * rows)))
    print("#\n# Collective test concluded: %s_perf\n#\n" % test)
    if wrong_checks:
        print(f" .. {host} pid {pid}: Test failure common.cu:1189")
        sys.exit(1)


main()
