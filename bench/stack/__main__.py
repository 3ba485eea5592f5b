"""bench/stack: how fast `make up` reaches all-SERVING, and what an idle service weighs.

    python -m bench.stack [--rounds 3]

On a machine that is already set up (`make setup` done, var/ initialized),
stops the stack if it runs, then times `up` (the code behind `make up`)
`--rounds` times from stopped, and after the last start reads each idle
service's resident memory (VmRSS) once the services have settled. Leaves the
stack as it found it. Targets: all SERVING in under 30 s; an idle service
without models at most 120 MB RSS.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from octavia_runtime.config import SERVICES, load
from scripts import stack as local_stack

TARGET_UP_S, TARGET_RSS_MB = 30.0, 120.0
# These load their default model at start (so the first job does not wait for it): not "idle without models".
MODEL_WORKERS = ("transcribe",)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--settle", type=float, default=5.0, help="seconds idle before reading memory")
    args = parser.parse_args()
    config = load()
    was_up = local_stack.is_up(config)
    local_stack.up(config)  # the first start may initialize var/: not timed

    times = []
    for _ in range(args.rounds):
        local_stack.down(config)
        started = time.perf_counter()
        local_stack.up(config)
        times.append(time.perf_counter() - started)
    time.sleep(args.settle)
    run = local_stack.Paths(config.var_dir).run
    memory = {name: rss_mb(int((run / f"{name}.pid").read_text().split()[0])) for name in SERVICES}

    print(f"\nbench/stack: `make up` from stopped to all SERVING, {args.rounds} rounds\n")
    print("| round | seconds |\n|---:|---:|")
    for i, seconds in enumerate(times, 1):
        print(f"| {i} | {seconds:.1f} |")
    print(f"\nidle services, {args.settle:.0f} s after start (VmRSS):\n")
    print("| service | RSS MB |\n|---|---:|")
    for name, mb in memory.items():
        print(f"| {name} | {mb:.0f} |")
    without_models = {name: mb for name, mb in memory.items() if name not in MODEL_WORKERS}
    print(
        f"\nslowest start {max(times):.1f} s (target < {TARGET_UP_S:.0f} s); "
        f"largest idle service without models {max(without_models.values()):.0f} MB (target <= {TARGET_RSS_MB:.0f} MB); "
        f"{', '.join(MODEL_WORKERS)} hold their default model from start"
    )
    if not was_up:
        local_stack.down(config)


if __name__ == "__main__":
    main()
