#!/usr/bin/env python3
"""SIMULATED stand-in of mpirun for the hccl_test stand-in (one process stands for the N ranks it prints for)."""
import os
import sys

argv = sys.argv[1:]
while argv and argv[0].startswith("-"):
    argv = argv[2:] if argv[0] in ("-n", "-np", "-f", "-hostfile", "--hostfile", "--prefix", "-x") else argv[1:]
if not argv:
    sys.exit("mpirun (inferfleet sandbox stand-in): no program given")
os.execv(argv[0], argv)
