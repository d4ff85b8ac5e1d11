"""The preprocess fan-out's driver cost on Ray: driver CPU time and peak RSS for N small tasks, and the
most tasks in flight at once; prints JSON.

    .venv/bin/python benchmarks/ray_fanout.py [--small 500] [--large 5000] [--window 0]

Each size runs in its own process (peak RSS is its own) on a local Ray sized to this machine. The ratio
of driver CPU time between the sizes shows whether the driver's work grows linearly with the tasks.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def _noop(x: int) -> int:
    return x + 1


def one(n: int, window: int | None) -> dict:
    import ray

    from imagineid.parallel import init_ray, parallel_map

    init_ray()
    parallel_map(_noop, list(range(8)), workers=2, progress=False)  # warm the workers up
    peak: list[int] = []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    out = parallel_map(_noop, list(range(n)), workers=2, progress=False, max_in_flight=window, peak=peak)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    assert out == [x + 1 for x in range(n)]
    ray.shutdown()
    return {
        "tasks": n,
        "driver_cpu_s": round(cpu, 3),
        "wall_s": round(wall, 3),
        "max_in_flight": max(peak),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", type=int, default=500)
    parser.add_argument("--large", type=int, default=5000)
    parser.add_argument("--window", type=int, default=0, help="max tasks in flight (0: parallel_map's default)")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    window = args.window or None
    if args.one:
        print(json.dumps(one(args.one, window)))
        return
    runs = []
    for n in (args.small, args.large):
        cmd = [sys.executable, __file__, "--one", str(n), "--window", str(args.window)]
        runs.append(json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()[-1]))
    small, large = runs
    print(
        json.dumps(
            {
                "benchmark": "ray_fanout",
                "runs": runs,
                "driver_cpu_ratio": round(large["driver_cpu_s"] / max(small["driver_cpu_s"], 1e-9), 2),
                "task_ratio": round(large["tasks"] / small["tasks"], 2),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
