#!/usr/bin/env python3
"""SIMULATED stand-in of HabanaAI/hccl_demo's binary (README.md): the build's product. run_hccl_demo.py does the
simulated run; this file only has to exist, as the real build leaves ./hccl_demo."""
import sys

sys.exit("inferfleet sandbox: SIMULATED hccl_demo binary; run it through run_hccl_demo.py")
