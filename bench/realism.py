"""Realism of the persona engine on synthetic persons with known habits: today vs the profile.

For each seed, writes a year of a synthetic person's chats (bridges.simulate.synthetic_export),
simulates the held-out 30 % twice in the same process: today's engine (behaviour without the
profile, the baseline) and the engine driven by the profile learned from the first 70 %, and
prints the KS distances (goal <= 0.10, with the 5 % critical value for the sample sizes), the
starts per day (goal: within 20 %) and the reaction rate.

    python bench/realism.py [--seeds 1 2 3] [--days 360]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import structlog

from bridges.simulate import SimulationOptions, simulate, synthetic_export

STATS = ("reply_latency", "burst_length", "hour_of_week")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--days", type=int, default=360)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    print(
        f"{'seed':>4} {'engine':<8} "
        + " ".join(f"{s:>22}" for s in STATS)
        + f" {'starts/day (person)':>22} {'reactions':>16} {'secs':>6}"
    )
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as tmp:
            exports = synthetic_export(
                Path(tmp), seed, days=args.days, channels=("general", "games", "dm")
            )
            for label, profile in (("today", False), ("profile", True)):
                t = time.perf_counter()
                r = simulate(
                    SimulationOptions(
                        exports=exports, speaker="Sam", seed=seed, use_profile=profile
                    )
                ).realism
                secs = time.perf_counter() - t
                cells = [f"{r[s]['ks']:.3f} (crit {r[s]['critical_5pct']:.3f})" for s in STATS]
                st, re_ = r["starts_per_day"], r["reaction_rate"]
                starts = f"{st['bot']:.2f} ({st['person']:.2f}, off {st['relative_error']:.0%})"
                reacts = f"{re_['bot']:.3f} ({re_['person']:.3f})"
                print(
                    f"{seed:>4} {label:<8} "
                    + " ".join(f"{c:>22}" for c in cells)
                    + f" {starts:>22} {reacts:>16} {secs:6.1f}"
                )
    print("goal: KS <= 0.10 on each; starts per day within 20 % of the person's")


if __name__ == "__main__":
    main()
