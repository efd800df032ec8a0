#!/usr/bin/env python3
"""SIMULATED stand-in of CANN's hccl_test programs (bin/<collective>_test), run under mpirun. It prints the
binary's format (hicann/oam-tools src/hccl_test hccl_opbase_rootinfo_base.cc: `%-17llu | %-14.2f | %-20.5f |
success`) with SIMULATED figures; alg_bandwidth is GB/s with GB = 1e9, as the real one computes it."""
import argparse
import os
import sys

here = os.path.dirname(os.path.realpath(__file__))
sys.path[:0] = [here, os.path.dirname(here)]
import simcollective as sim  # noqa: E402

# alg_bandwidth = bytes per NPU / time; all_gather counts every rank's part (hccl_allgather_rootinfo_test.cc)
BUS_PER_ALG = {"all_reduce": lambda n: 2 * (n - 1) / n, "reduce_scatter": lambda n: (n - 1) / n,
               "all_gather": lambda n: (n - 1) / n, "alltoall": lambda n: (n - 1) / n,
               "alltoallv": lambda n: (n - 1) / n}


def main() -> None:
    test = os.path.basename(sys.argv[0]).removesuffix("_test")
    parser = argparse.ArgumentParser()
    parser.add_argument("-b", "--minbytes", default="64M")
    parser.add_argument("-e", "--maxbytes", default="64M")
    parser.add_argument("-f", "--stepfactor", type=int, default=2)
    parser.add_argument("-n", "--iters", type=int, default=20)
    parser.add_argument("-w", "--warmup_iters", type=int, default=5)
    parser.add_argument("-p", "--npus", type=int, default=8)
    parser.add_argument("-d", "--datatype", default="fp32")
    parser.add_argument("-o", "--op", default="sum")
    args = parser.parse_args()
    low, high = sim.parse_size(args.minbytes), sim.parse_size(args.maxbytes)
    print(sim.NOTE)
    print(f"the minbytes is {low}, maxbytes is {high}, iters is {args.iters}, warmup_iters is {args.warmup_iters}")
    profile, faults = sim.load()
    cards = sim.visible_cards(profile)
    if len(cards) < args.npus:
        for _ in range(args.npus - len(cards)):
            print("hccl interface return err ./common/src/hccl_test_common.cc:538, retcode: 7 ")
            print("This is an error in init_hcclComm.")
        sys.exit(1)
    peak = sim.node_peak(profile, faults, cards)
    n = args.npus
    print("%-15s | %-12s | %-18s | %s" % ("data_size(Bytes):", "aveg_time(us):", "alg_bandwidth(GB/s):",
                                          "check_result:"))
    size, rows, failed = low, 0, False
    while size <= high:
        alg = sim.busbw(peak, size) / BUS_PER_ALG.get(test, lambda n: 1.0)(n)
        time_us = size / (alg * 1e3)
        check = "success"
        if faults.get("collective_wrong") and size >= 1048576 and not failed:
            check, failed = "failed", True
            print("local rank_id 0, check result failed, %-17d | %-14.2f | %-20.5f | failed" % (size, time_us, alg))
        print("%-17d | %-14.2f | %-20.5f | %s" % (size, time_us, alg, check), flush=True)
        rows += 1
        if faults.get("collective_crash") and rows == 3:
            os._exit(134)
        if args.stepfactor < 2:
            break
        size *= args.stepfactor
    sys.exit(1 if failed else 0)


main()
