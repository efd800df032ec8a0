#!/usr/bin/env python3
"""SIMULATED stand-in of HabanaAI/hccl_demo's run_hccl_demo.py (pure mode: HCCL_COMM_ID rendezvous). It prints
what hccl_demo prints (format of hccl_demo HEAD f623d69: correctness lines `rank=R size=S <float> ... which is
fine.`, the root's [BENCHMARK] block in GB/s, `Exiting HCCL demo with code: N`), with SIMULATED figures."""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
import simcollective as sim  # noqa: E402

OPS = {"broadcast": "hcclBroadcast", "all_reduce": "hcclAllReduce", "reduce_scatter": "hcclReduceScatter",
       "all_gather": "hcclAllGather", "send_recv": "hcclSendRecv", "reduce": "hcclReduce", "all2all": "hcclAlltoAll"}


def nw_factor(test: str, n: int) -> float:
    """NW = Algo x factor (hccl_demo.cpp: 2(n-1)/n all_reduce, (n-1)/n reduce_scatter and all2all, n-1
    all_gather, 1 otherwise)."""
    return {"all_reduce": 2 * (n - 1) / n, "reduce_scatter": (n - 1) / n, "all2all": (n - 1) / n,
            "all_gather": n - 1}.get(test, 1.0)


def finish(code: int) -> None:
    print(f"\nExiting HCCL demo with code: {code}")
    sys.exit(code)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nranks", type=int, default=-1)
    parser.add_argument("--node_id", type=int, default=-1)
    parser.add_argument("--ranks_per_node", type=int, default=8)
    parser.add_argument("--test", default="broadcast")
    parser.add_argument("--size", default="33554432")
    parser.add_argument("--loop", type=int, default=1000)
    parser.add_argument("-clean", "--clean", action="store_true")
    args = parser.parse_args()
    print("Welcome to HCCL demo")
    print(sim.NOTE)
    profile, faults = sim.load()
    cards = sim.visible_cards(profile)
    if args.nranks < 1 or args.node_id < 0:
        print(f"HCCL demo error: HCCL demo error: [validate_arguments] Argument nranks was set to: {args.nranks}")
        finish(1)
    print("HCCL demo runs in pure mode")
    if len(cards) < args.ranks_per_node:
        for _ in range(args.ranks_per_node - len(cards)):
            print("HCCL demo error: In function initDevice(): synDeviceAcquire(&resources.deviceHandle, nullptr) "
                  "failed with synapse error: 20")
        finish(1)
    if faults.get("collective_crash"):
        print("terminate called without an active exception", flush=True)
        os._exit(134)
    size, n, per_node = sim.parse_size(args.size), args.nranks, args.ranks_per_node
    nodes = max(1, n // per_node)
    mine = {"peak": sim.node_peak(profile, faults, cards), "wrong": bool(faults.get("collective_wrong"))}
    everyone = [mine]
    if nodes > 1:
        everyone = sim.rendezvous(os.environ.get("HCCL_COMM_ID", "127.0.0.1:5555"), nodes, args.node_id, mine)
    peak = min(s["peak"] for s in everyone) * (sim.SCALE_OUT_FACTOR if nodes > 1 else 1.0)
    wrong = any(s["wrong"] for s in everyone)
    if args.test == "all_reduce":
        for local in range(per_node):
            rank = local + args.node_id * per_node
            outputs = [n * (n - 1) // 2 + n * n * k + (1 if wrong and rank == 0 else 0) for k in range(4)]
            inputs = " ".join(str(rank + n * k) for k in range(4))
            print(f"rank={rank} size={size} <float> Input Buffer [{inputs} ...] Output Buffer "
                  f"[{' '.join(map(str, outputs))} ...] which is {'bad' if wrong and rank == 0 else 'fine'}.")
    if wrong:
        print("HCCL demo error: Collective operation has failed on correctness.")
        finish(1)
    if args.node_id == 0:
        nw = sim.busbw(peak, size)
        headline = f"{OPS[args.test]}(dataSize={size}, count={size // 4}, dtype=float, iterations={args.loop})"
        rule = "#" * (len(headline) + 12)
        print(rule)
        print(f"[BENCHMARK] {headline}")
        print(f"[BENCHMARK]     NW Bandwidth   : {nw:.6f} GB/s")
        print(f"[BENCHMARK]     Algo Bandwidth : {nw / nw_factor(args.test, n):.6f} GB/s")
        print(rule)
    finish(0)


main()
