"""Sampling profiles of the server process (py-spy), one per benchmark phase.

`python -m bench --quick --profile` records each server-side phase with py-spy (no change
to the server, no restart) and writes <mode>-profile-<phase>.txt: the functions where the
server's busy threads were found most often, by self and by inclusive samples.
"""

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TOP = 25


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise RuntimeError("py-spy is not installed: scripts/setup.sh bench")
    return found


@contextmanager
def recording(pid: int, raw_path: Path, rate: int = 250) -> Iterator[None]:
    """py-spy record on `pid` for the duration of the block (collapsed stacks in raw_path)."""
    raw_path.parent.mkdir(parents=True, exist_ok=True)
    # --gil: only the thread holding the GIL, i.e. where the Python process spends its CPU.
    command = [py_spy(), "record", "--pid", str(pid), "--rate", str(rate), "--nonblocking", "--gil"]
    command += ["--format", "raw", "--output", str(raw_path)]
    spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            spy.wait(timeout=10)
        except subprocess.TimeoutExpired:  # a phase shorter than py-spy's start-up
            spy.kill()


_FRAME = re.compile(r"^(?P<name>.*?) \((?P<file>[^:()]*)(?::\d+)?\)$")


def _short(frame: str) -> str:
    """`name (path/to/site-packages/pkg/mod.py:12)` -> `pkg/mod.py:name`."""
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match["file"]
    for marker in ("site-packages/", "/work/main/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{path}:{match['name']}"


def _package(short: str) -> str:
    """`fastapi/routing.py:f` -> `fastapi`; `asyncio/tasks.py:f` -> `asyncio`."""
    head = short.split(":", 1)[0]
    return head.split("/", 1)[0] if "/" in head else head


def summarize(raw_path: Path) -> str:
    """The top functions by self and inclusive share of samples, as plain text."""
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw_path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";")]
        total += count
        self_time[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    if not total:
        return "no samples (the server was idle)\n"
    lines = [f"{total} samples of the thread holding the GIL", "", "self %  function"]
    lines += [f"{100 * n / total:6.1f}  {name}" for name, n in self_time.most_common(TOP)]
    by_package: Counter[str] = Counter()
    for name, n in self_time.items():
        by_package[_package(name)] += n
    lines += ["", "self %  package"]
    lines += [f"{100 * n / total:6.1f}  {name}" for name, n in by_package.most_common(12)]
    lines += ["", "incl %  function"]
    lines += [f"{100 * n / total:6.1f}  {name}" for name, n in inclusive.most_common(TOP)]
    return "\n".join(lines) + "\n"
