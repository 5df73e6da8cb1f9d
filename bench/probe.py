"""GET /health from a process of its own, until told to stop: the server's latency as a
load balancer would see it, unaffected by the driver's own event loop and GIL.

    python -m bench.probe http://127.0.0.1:8200 --interval 0.05

One keep-alive connection, one request every `interval` seconds (after the previous
answer). It prints `ready` once the first answer came, probes until its stdin is closed,
then prints every sample as JSON:
`[[unix_time, milliseconds, status], ...]` (status 0: no answer).
"""

import argparse
import json
import sys
import threading
import time

import httpx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base_url")
    parser.add_argument("--interval", type=float, default=0.05)
    parser.add_argument("--path", default="/health")
    args = parser.parse_args()
    stop = threading.Event()

    def until_stdin_closes() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=until_stdin_closes, daemon=True).start()
    samples: list[list[float]] = []
    with httpx.Client(base_url=args.base_url, timeout=30.0) as http:
        while not stop.is_set():
            at, started = time.time(), time.perf_counter()
            try:
                status = http.get(args.path).status_code
            except httpx.HTTPError:
                status = 0
            samples.append([round(at, 4), round((time.perf_counter() - started) * 1000, 3), status])
            if len(samples) == 1:
                sys.stdout.write("ready\n")
                sys.stdout.flush()
            stop.wait(args.interval)
    json.dump(samples, sys.stdout)


if __name__ == "__main__":
    main()
