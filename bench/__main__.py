"""Benchmark the server: delivery and push latency, throughput, concurrency, fan-out.

    .venv/bin/python -m bench --quick          # about 2 minutes
    .venv/bin/python -m bench --full           # longer, more samples
    .venv/bin/python -m bench --smoke --out-dir /tmp/b   # seconds; what the smoke test runs

Starts a throwaway Postgres (or uses DBOS_SYSTEM_DATABASE_URL), the server as its own
process, and writes <out-dir>/<mode>.json, <mode>.md and <mode>-*.png.
"""

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

import uvloop

from bench import report
from bench.run import PHASE_GROUPS, run_all
from bench.scales import SCALES

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    mode = parser.add_mutually_exclusive_group()
    for name in SCALES:
        mode.add_argument(f"--{name}", dest="mode", action="store_const", const=name)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the server, e.g. COMM_NOTIFICATION_COALESCE_SEC=0.01",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="record every server-side phase with py-spy into <out-dir>/<mode>-profiles/",
    )
    parser.add_argument(
        "--only",
        default=None,
        help="comma-separated subset of: " + ", ".join(PHASE_GROUPS),
    )
    args = parser.parse_args()
    # Progress from the benchmark only: not every request of httpx or step of pgserver.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("bench").setLevel(logging.INFO)
    scale = SCALES[args.mode or "quick"]
    extra_env = dict(item.split("=", 1) for item in args.server_env)
    database_url = os.environ.get("DBOS_SYSTEM_DATABASE_URL")
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    profile_dir = args.out_dir / f"{scale.name}-profiles" if args.profile else None
    only = set(args.only.split(",")) if args.only else None
    if only and not only <= set(PHASE_GROUPS):
        parser.error(f"--only: unknown {sorted(only - set(PHASE_GROUPS))}")
    run = asyncio.run(run_all(scale, database_url, extra_env, profile_dir, only))
    paths = report.write(args.out_dir, run.latency, run.results)
    for path in paths:
        logging.getLogger("bench").info("wrote %s", path)
    return 1 if run.results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
