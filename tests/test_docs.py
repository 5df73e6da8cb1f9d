"""The documents tell the truth about the running server.

- Every `curl` line in README.md and QUICK_REFERENCE.md runs, in document order, against a live
  server and answers 2xx (or the status its `# → NNN detail` comment declares).
- Every ```python block of README.md, QUICK_REFERENCE.md, VISUAL_GUIDE.md and bench/README.md
  runs, or says why not (see "Python blocks" below).
- Every endpoint in the README table exists in the OpenAPI schema, and every operation of the
  schema is in the table.
- Every setting and its default, and every bound in names.py, is in the README as in the code.
- Every HTTP row of the QUICK_REFERENCE blocking table is measured against the server.
- The Python code patterns use DBOS APIs that exist, and no sync DBOS call in async code
  unless the line is marked as the wrong way (❌).

Python blocks. An HTML comment on the lines just before a block's opening fence (blank lines
may sit between) says how the block is run; a block without one is a script.

- No marker (a script): the block runs as `python -c` in the project folder, in document order
  among the document's curl lines, against the live test server: `http://localhost:8000` and
  `ws://localhost:8000` become that server's URL, `sqlite:///dbos_workflow_communication.sqlite`
  (the server's default database) becomes that server's database URL, `my-wf-N` and
  `quick-wf-N` get this run's suffix, and `DBOS_SYSTEM_DATABASE_URL` in its environment is the
  server's database (for a DBOSClient). It must exit 0.
- `<!-- doc-test: script` + driver lines + `-->`: the same, with the driver lines run after the
  block (for a block that only defines functions: the driver calls them).
- `<!-- doc-test: dbos` + driver lines + `-->`: a block that defines DBOS workflows or steps.
  It runs in a subprocess of its own, at module level, with DBOS configured on a fresh SQLite
  file; then the driver lines run as the body of an `async def`, after `DBOS.launch()`, in
  `asyncio.run`. The driver starts the block's workflows for real (small n, short timeouts)
  and checks what they did.
- `<!-- not-run: reason -->`: not run; the reason is required. The block must still parse.

In every run mode, each `# → text` comment of the block or the driver promises `text` in what
it prints, and every function the block defines must be called by the block or the driver,
unless its text holds ❌ (a wrong-way example). A block that defines `@DBOS.workflow` or
`@DBOS.step` functions must be `doc-test: dbos` or `not-run`.
"""

import ast
import asyncio
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from dbos import DBOS

from tests.support import ROOT, ServerProcess, process_env, unique_id, wait_until
from workflow_comm import names
from workflow_comm.settings import DEFAULT_SQLITE_URL, Settings

DOCS = ("README.md", "QUICK_REFERENCE.md")  # the documents with curl walkthroughs and tables
ALL_DOCS = (*DOCS, "VISUAL_GUIDE.md", "bench/README.md")  # every Python block of these runs
MIN_CURL_COMMANDS = {"README.md": 10, "QUICK_REFERENCE.md": 10}
DOC_BASE_URL = "http://localhost:8000"
SHELL_LANGS = frozenset({"bash", "sh", "shell", "console"})
# The example workflow IDs: each document has its own, so following both gives no 409.
DOC_WORKFLOW_ID = re.compile(r"\b(my-wf|quick-wf)-(\d+)\b")
STARTED_ID = re.compile(r"/start-workflow-([a-z]+)/([A-Za-z0-9._:-]+)/")
MARKER = re.compile(r"^(doc-test|not-run):\s*(.*)$")
RUN_MODES = ("script", "dbos")
BLOCK_TIMEOUT = 90
# The docs use demo-friendly step lengths; the test runs them at this speed.
TEST_STEP_SECONDS = 0.1
CURL_MAX_TIME = 30
# "At once", generously: the workflows in these checks take 30 s per step or wait 30 s.
AT_ONCE = 3.0
SLOW = 30


# ---------------------------------------------------------------- reading the documents


@dataclass(frozen=True)
class Block:
    doc: str
    line: int  # line of the opening fence, 1-based
    lang: str
    text: str
    mode: str = "script"  # "script", "dbos", "not-run", or what a bad marker said
    note: str = ""  # the reason of a not-run block
    driver: str = ""  # the lines a doc-test marker runs after the block

    def where(self) -> str:
        return f"{self.doc}:{self.line}"


@dataclass(frozen=True)
class DocCommand:
    """One curl command (continuation lines joined), or one runnable Python example."""

    doc: str
    line: int
    kind: str  # "curl" or "python"
    text: str
    expect_status: int | None = None
    expect_detail: str | None = None
    block: Block | None = None  # a Python example's block

    def where(self) -> str:
        return f"{self.doc}:{self.line}"


def read_doc(name: str) -> str:
    return (ROOT / name).read_text()


def marker_before(lines: list[str], fence: int) -> tuple[str, str, str] | None:
    """(kind, rest of its first line, driver) of the HTML comment just before line `fence`."""
    end = fence - 1
    while end >= 0 and not lines[end].strip():
        end -= 1
    if end < 0 or not lines[end].rstrip().endswith("-->"):
        return None
    start = end
    while start >= 0 and not lines[start].lstrip().startswith("<!--"):
        start -= 1
    if start < 0:
        return None
    comment = "\n".join(lines[start : end + 1]).strip()[4:-3]
    head, _, driver = comment.strip("\n").partition("\n")
    match = MARKER.match(head.strip())
    if not match:
        return None
    return match.group(1), match.group(2).strip(), driver


def fenced_blocks(name: str) -> list[Block]:
    blocks: list[Block] = []
    lines = read_doc(name).splitlines()
    index = 0
    while index < len(lines):
        match = re.match(r"^(`{3,})(\S*)\s*$", lines[index])
        if not match:
            index += 1
            continue
        fence, lang, start = match.group(1), match.group(2).lower(), index
        marker = marker_before(lines, start)
        index += 1
        body: list[str] = []
        while index < len(lines) and lines[index].rstrip() != fence:
            body.append(lines[index])
            index += 1
        block = Block(name, start + 1, lang, "\n".join(body))
        if marker and marker[0] == "not-run":
            block = Block(block.doc, block.line, lang, block.text, "not-run", marker[1])
        elif marker:
            block = Block(block.doc, block.line, lang, block.text, marker[1], "", marker[2])
        blocks.append(block)
        index += 1
    return blocks


def split_comment(line: str) -> tuple[str, str | None]:
    """A shell line's code and its trailing `#` comment, minding quotes."""
    quote: str | None = None
    for pos, char in enumerate(line):
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "#" and (pos == 0 or line[pos - 1].isspace()):
            return line[:pos].rstrip(), line[pos + 1 :].strip()
    return line.rstrip(), None


def curl_commands(block: Block) -> list[DocCommand]:
    commands: list[DocCommand] = []
    lines = block.text.splitlines()
    index = 0
    while index < len(lines):
        first = index
        code, comment = split_comment(lines[index])
        parts = [code]
        while code.endswith("\\") and index + 1 < len(lines):
            parts[-1] = code[:-1].rstrip()
            index += 1
            code, comment = split_comment(lines[index])
            parts.append(code.strip())
        index += 1
        text = " ".join(parts).strip()
        if not text.startswith("curl "):
            continue
        expected = re.match(r"^→\s*(\d{3})\s*(.*)$", comment or "")
        commands.append(
            DocCommand(
                doc=block.doc,
                line=block.line + 1 + first,
                kind="curl",
                text=text,
                expect_status=int(expected.group(1)) if expected else None,
                expect_detail=(expected.group(2).strip() or None) if expected else None,
            )
        )
    return commands


def doc_commands(name: str) -> list[DocCommand]:
    """Every curl command and Python script block of a document, in document order."""
    commands: list[DocCommand] = []
    for block in fenced_blocks(name):
        if block.lang in SHELL_LANGS or block.lang == "":
            commands.extend(curl_commands(block))
        elif block.lang == "python" and block.mode == "script":
            code = block.text + ("\n\n" + block.driver if block.driver.strip() else "")
            commands.append(DocCommand(block.doc, block.line, "python", code, block=block))
    return commands


def markdown_table(name: str, heading: str) -> list[list[str]]:
    """The body rows (cells stripped) of the first table after `heading`."""
    lines = read_doc(name).splitlines()
    start = lines.index(heading)
    rows: list[list[str]] = []
    for line in lines[start + 1 :]:
        if line.startswith("#"):
            break
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif rows:
            break
    assert len(rows) > 2, f"{name}: no table under {heading!r}"
    return rows[2:]  # without the header and the |---| line


def ticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def http_routes(cell: str) -> list[tuple[str, str]]:
    """(METHOD, path) of every `METHOD /path...` in a cell, path without its query."""
    found = []
    for code in ticked(cell):
        match = re.match(r"^(GET|POST|PUT|PATCH|DELETE|WS) (/\S*)", code)
        if match:
            found.append((match.group(1), match.group(2).split("?")[0]))
    return found


def shape(path: str) -> str:
    """A path with its parameter names erased: /workflows/{id} -> /workflows/{}."""
    return re.sub(r"\{[^}]*\}", "{}", path)


# ---------------------------------------------------------------- running the commands


def rewrite(text: str, base_url: str, run: str, database_url: str = "") -> str:
    """Point a documented command at the server under test, with this run's workflow IDs."""
    text = text.replace(DOC_BASE_URL, base_url)
    text = text.replace(DOC_BASE_URL.replace("http", "ws"), base_url.replace("http", "ws", 1))
    if database_url:
        text = text.replace(DEFAULT_SQLITE_URL, database_url)
    text = DOC_WORKFLOW_ID.sub(lambda m: f"{m.group(0)}-{run}", text)
    text = re.sub(
        r"step_seconds=([0-9.]+)",
        lambda m: f"step_seconds={min(float(m.group(1)), TEST_STEP_SECONDS):g}",
        text,
    )

    def quick_start(match: re.Match[str]) -> str:
        url = match.group(0)
        if "step_seconds=" in url:
            return url
        return url + ("&" if "?" in url else "?") + f"step_seconds={TEST_STEP_SECONDS:g}"

    return re.sub(r"/start-workflow-[a-z]+/[^\s\"']+", quick_start, text)


@dataclass
class Outcome:
    returncode: int
    status: int | None
    stdout: str
    stderr: str


def run_curl(command: str) -> Outcome:
    # The status goes to stderr, so the body on stdout stays as the reader would see it.
    flags = f"-sS --max-time {CURL_MAX_TIME} -w '%{{stderr}}HTTP_STATUS %{{http_code}}\\n'"
    assert command.startswith("curl ")
    done = subprocess.run(
        ["bash", "-c", f"curl {flags} {command[5:]}"],
        capture_output=True,
        text=True,
        timeout=CURL_MAX_TIME + 10,
    )
    status = re.search(r"HTTP_STATUS (\d{3})", done.stderr)
    return Outcome(
        done.returncode, int(status.group(1)) if status else None, done.stdout, done.stderr
    )


def run_python(code: str, database_url: str = "") -> Outcome:
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT,
        cwd=ROOT,
        env=process_env(database_url),
    )
    return Outcome(done.returncode, None, done.stdout, done.stderr)


def promises(code: str) -> list[str]:
    """What the `# → text` comments of a Python example say it prints."""
    return re.findall(r"#\s*→\s*(.+?)\s*$", code, flags=re.MULTILINE)


def problem(command: DocCommand, sent: str, outcome: Outcome) -> str | None:
    """What is wrong with this command's outcome, or None."""
    if outcome.returncode != 0:
        return f"exit status {outcome.returncode}"
    if command.kind == "python":
        missing = [text for text in promises(command.text) if text not in outcome.stdout]
        return f"its output lacks {missing}" if missing else None
    if outcome.status is None:
        return "no HTTP status"
    if command.expect_status is not None:
        if outcome.status != command.expect_status:
            return f"HTTP {outcome.status}, the document says {command.expect_status}"
        if command.expect_detail and command.expect_detail not in outcome.stdout:
            return f"the body lacks the documented {command.expect_detail!r}"
        return None
    if not 200 <= outcome.status < 300:
        return f"HTTP {outcome.status}"
    if " -N " in f" {sent} " and "event: closed" not in outcome.stdout:
        return "the live stream did not end with `event: closed`"
    return None


@pytest.mark.parametrize("doc", [doc for doc in ALL_DOCS if doc_commands(doc)])
def test_every_documented_command_runs(doc: str, base_url: str, database_url: str) -> None:
    """Every curl line and Python script block in the document works, in order."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed: the documented commands cannot be run")
    commands = doc_commands(doc)
    curls = sum(c.kind == "curl" for c in commands)
    assert curls >= MIN_CURL_COMMANDS.get(doc, 0), f"{doc}: found only {commands}"
    run = uuid.uuid4().hex[:8]  # one per document and run: reruns against one database work
    failures = []
    for command in commands:
        sent = rewrite(command.text, base_url, run, database_url)
        outcome = run_curl(sent) if command.kind == "curl" else run_python(sent, database_url)
        wrong = problem(command, sent, outcome)
        if wrong:
            failures.append(
                f"{command.where()}: {wrong}\n  ran: {sent}\n"
                f"  stdout: {outcome.stdout[-600:]!r}\n  stderr: {outcome.stderr[-600:]!r}"
            )
    assert not failures, f"{len(failures)} of {len(commands)} commands failed:\n" + "\n".join(
        failures
    )


def test_walkthrough_covers_every_mechanism() -> None:
    """The README walkthrough runs each mechanism, the status endpoints and live push."""
    sent = " ".join(c.text for c in doc_commands("README.md"))
    for needed in (
        "/start-workflow-events/",
        "/workflow-events/",
        "/start-workflow-messaging/",
        "/send-message/",
        "/start-workflow-streaming/",
        "/workflow-stream/",
        "/workflows/",
        "/health",
        "curl -N",
    ):
        assert needed in sent, f"README.md has no curl example with {needed!r}"


def test_documents_use_their_own_workflow_ids() -> None:
    """Following README and QUICK_REFERENCE one after the other starts no ID twice."""
    seen: dict[str, tuple[str, str]] = {}
    clashes = []
    for doc in ALL_DOCS:
        for command in doc_commands(doc):
            for kind, workflow_id in STARTED_ID.findall(command.text):
                first = seen.setdefault(workflow_id, (command.where(), kind))
                if first[0].split(":")[0] != doc or first[1] != kind:
                    clashes.append(f"{command.where()} starts {workflow_id!r}, as {first[0]} did")
    assert not clashes, "\n".join(clashes)


# ---------------------------------------------------------------- Python blocks


@pytest.fixture(scope="session")
def database_url(request: pytest.FixtureRequest, backend: str) -> str:
    """The system database of the server under test ("" if unknown: --base-url without it)."""
    if backend == "external":
        return os.environ.get("DBOS_SYSTEM_DATABASE_URL", "")
    server: ServerProcess = request.getfixturevalue(f"{backend}_server")
    own = server.env.get("DBOS_SYSTEM_DATABASE_URL")
    return own or f"sqlite:///{server.workdir / DEFAULT_SQLITE_URL.removeprefix('sqlite:///')}"


def all_python_blocks() -> list[Block]:
    return [b for doc in ALL_DOCS for b in fenced_blocks(doc) if b.lang == "python"]


def defined_functions(tree: ast.Module) -> dict[str, ast.FunctionDef | ast.AsyncFunctionDef]:
    return {
        node.name: node
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }


def called_names(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            names.add(node.func.id)
        elif isinstance(node, ast.Call):  # passed to start_workflow_async(fn, ...) and the like
            names.update(arg.id for arg in node.args if isinstance(arg, ast.Name))
    return names


def uses_dbos_decorators(tree: ast.Module) -> bool:
    return any(
        "DBOS.workflow" in ast.unparse(decorator) or "DBOS.step" in ast.unparse(decorator)
        for func in defined_functions(tree).values()
        for decorator in func.decorator_list
    )


def driver_tree(block: Block) -> ast.Module:
    """The driver parsed as what it is: the body of an async function in dbos mode."""
    if block.mode == "dbos":
        body = "".join(f"    {line}\n" for line in block.driver.splitlines()) or "    pass\n"
        return ast.parse(f"async def _driver():\n{body}")
    return ast.parse(block.driver)


@pytest.mark.parametrize("block", all_python_blocks(), ids=Block.where)
def test_python_block_runs_or_says_why(block: Block) -> None:
    """Each Python block is run by one of the tests here, or its marker says why it is not."""
    tree = ast.parse(block.text)
    if block.mode == "not-run":
        assert block.note, f"{block.where()}: `<!-- not-run: reason -->` needs its reason"
        return
    assert block.mode in RUN_MODES, (
        f"{block.where()}: unknown marker `doc-test: {block.mode}`; use one of {RUN_MODES} "
        "or `not-run: reason` (see this file's docstring)"
    )
    if block.mode == "script":
        assert not uses_dbos_decorators(tree), (
            f"{block.where()}: the block defines DBOS workflows or steps; mark it "
            "`<!-- doc-test: dbos` with a driver that runs them, or `<!-- not-run: reason -->`"
        )
    else:
        assert block.driver.strip(), f"{block.where()}: `doc-test: dbos` needs driver lines"
    called = called_names(tree) | called_names(driver_tree(block))
    lines = block.text.splitlines()
    idle = [
        name
        for name, func in defined_functions(tree).items()
        if name not in called
        and not any("❌" in line for line in lines[func.lineno - 1 : func.end_lineno])
    ]
    assert not idle, (
        f"{block.where()}: {idle} defined but never run; call them in the block or in the "
        "driver lines of its marker"
    )


DBOS_APP_HEAD = """import asyncio
import sys

from dbos import DBOS

"""

DBOS_APP_TAIL = """

DBOS(
    config={
        "name": "doc-test",
        "system_database_url": sys.argv[1],
        "notification_listener_polling_interval_sec": 0.01,
        "log_level": "WARNING",
    }
)
try:
    asyncio.run(_doc_test_driver())
finally:
    DBOS.destroy(workflow_completion_timeout_sec=0)
"""


def dbos_app(block: Block) -> str:
    """The block at module level, then its driver after DBOS.launch(), as one program."""
    driver = "".join(f"    {line}\n" for line in block.driver.splitlines())
    return (
        DBOS_APP_HEAD
        + block.text
        + "\n\n\nasync def _doc_test_driver() -> None:\n    DBOS.launch()\n"
        + driver
        + DBOS_APP_TAIL
    )


@pytest.mark.parametrize(
    "block", [b for b in all_python_blocks() if b.mode == "dbos"], ids=Block.where
)
def test_dbos_block_runs(block: Block, tmp_path: Path) -> None:
    """The workflows of a `doc-test: dbos` block run for real, as its driver lines say."""
    program = tmp_path / "doc_block.py"
    program.write_text(dbos_app(block))
    database = f"sqlite:///{tmp_path / 'doc_block.sqlite'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMM_", "DBOS_"))}
    done = subprocess.run(
        [sys.executable, str(program), database],
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT,
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 0, (
        f"{block.where()}: exit {done.returncode} running {program}\n"
        f"stdout: {done.stdout[-1500:]}\nstderr: {done.stderr[-3000:]}"
    )
    missing = [
        text for text in promises(block.text + "\n" + block.driver) if text not in done.stdout
    ]
    assert not missing, f"{block.where()}: its output lacks {missing}; stdout: {done.stdout}"


# ---------------------------------------------------------------- endpoints, settings, bounds


def openapi_routes(client: httpx.Client) -> set[tuple[str, str]]:
    schema = client.get("/openapi.json").json()
    return {
        (method.upper(), shape(path)) for path, ops in schema["paths"].items() for method in ops
    }


@pytest.mark.parametrize("doc", DOCS)
def test_documented_endpoints_exist(doc: str, client: httpx.Client) -> None:
    """Every HTTP endpoint in the document's endpoint table is in the server's OpenAPI schema."""
    served = openapi_routes(client)
    documented = {
        (method, shape(path))
        for row in markdown_table(doc, "## Endpoints")
        for method, path in http_routes(row[0])
        if method != "WS"
    }
    assert documented, f"{doc}: no endpoints parsed"
    missing = sorted(documented - served)
    assert not missing, f"{doc} documents endpoints the server lacks: {missing}"


def test_every_endpoint_is_documented(client: httpx.Client) -> None:
    """Every operation in the OpenAPI schema has a row in the README endpoint table."""
    documented = {
        (method, shape(path))
        for row in markdown_table("README.md", "## Endpoints")
        for method, path in http_routes(row[0])
    }
    undocumented = sorted(openapi_routes(client) - documented)
    assert not undocumented, f"README.md endpoint table lacks {undocumented}"


def env_names(name: str) -> list[str]:
    alias = Settings.model_fields[name].validation_alias
    choices = getattr(alias, "choices", None)
    return [str(c) for c in choices] if choices else [f"COMM_{name.upper()}"]


@pytest.mark.parametrize("name", list(Settings.model_fields))
def test_setting_is_documented(name: str) -> None:
    """The README configuration table names this setting's variable and its real default."""
    rows = [r for r in markdown_table("README.md", "## Configuration") if f"`{name}`" in r[0]]
    assert len(rows) == 1, f"README.md configuration table: {len(rows)} rows for {name}"
    row = rows[0]
    for env in env_names(name):
        assert env in ticked(row[1]), f"{name}: {env} missing from {row[1]!r}"
    default = Settings.model_fields[name].default
    if default in ("", (), None):
        assert "empty" in row[2], f"{name}: default is empty, README says {row[2]!r}"
        return
    shown = ticked(row[2])
    assert shown, f"{name}: no `default` in {row[2]!r}"
    if isinstance(default, bool):
        assert shown[0] == str(default).lower(), f"{name}: default {default}, README {shown[0]}"
    elif isinstance(default, int | float):
        assert float(shown[0]) == float(default), f"{name}: default {default}, README {shown[0]}"
    else:
        assert shown[0] == default, f"{name}: default {default!r}, README {shown[0]!r}"


def numeric_bounds() -> dict[str, int | float]:
    return {
        name: value
        for name, value in vars(names).items()
        if name.isupper() and isinstance(value, int | float) and not isinstance(value, bool)
    }


def test_bounds_match_keys() -> None:
    """Each bound the README names has the value names.py gives it, and none is left out."""
    named: set[str] = set()
    for row in markdown_table("README.md", "## Bounds and limits"):
        for name in ticked(row[-1]):
            assert hasattr(names, name), f"README names names.{name}, which does not exist"
            named.add(name)
            value = getattr(names, name)
            if isinstance(value, str):
                continue
            text = f"{value:g}" if isinstance(value, float) else str(value)
            assert re.search(rf"(?<![\d.]){re.escape(text)}(?![\d.])", row[1]), (
                f"keys.{name} = {text}, README says {row[1]!r}"
            )
    unnamed = sorted(set(numeric_bounds()) - named)
    assert not unnamed, f"README bounds table leaves out keys {unnamed}"


# ---------------------------------------------------------------- Python code patterns


@pytest.mark.parametrize("block", all_python_blocks(), ids=Block.where)
def test_code_pattern_uses_real_async_apis(block: Block) -> None:
    """The example parses, every DBOS.x it uses exists, and async code awaits *_async calls."""
    tree = ast.parse(block.text)
    lines = block.text.splitlines()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "DBOS"
        ):
            assert hasattr(DBOS, node.attr), f"{block.doc}:{block.line}: no DBOS.{node.attr}"
    for func in ast.walk(tree):
        if not isinstance(func, ast.AsyncFunctionDef):
            continue
        for call in ast.walk(func):
            if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)):
                continue
            target = call.func
            is_sync_dbos = (
                isinstance(target.value, ast.Name)
                and target.value.id == "DBOS"
                and hasattr(DBOS, f"{target.attr}_async")
            )
            if is_sync_dbos:
                line = lines[call.lineno - 1]
                assert "❌" in line, (
                    f"{block.doc}:{block.line + call.lineno}: DBOS.{target.attr} in async code "
                    "raises (or blocks) in DBOS 3.4; use the _async variant or mark it ❌"
                )


# ---------------------------------------------------------------- the blocking table


@dataclass(frozen=True)
class BlockingRow:
    method: str
    path: str
    claim: str  # "Yes", "No" or "Stays open"
    text: str


def blocking_rows() -> list[BlockingRow]:
    rows = []
    for cells in markdown_table("QUICK_REFERENCE.md", "### Client side: HTTP requests"):
        for method, path in http_routes(cells[0]):
            if method == "WS":
                continue  # not HTTP: the WebSocket's own tests cover it
            claim = re.sub(r"[*,].*$", "", cells[1].replace("**", "", 2)).strip()
            rows.append(BlockingRow(method, path, claim, " | ".join(cells)))
    return rows


def post(client: httpx.Client, path: str) -> dict[str, Any]:
    answer = client.post(path)
    assert answer.status_code == 200, f"POST {path}: {answer.status_code} {answer.text}"
    body: dict[str, Any] = answer.json()
    return body


def cancel(client: httpx.Client, workflow_id: str) -> None:
    client.post(f"/workflows/{workflow_id}/cancel")  # 409 once finished: fine


def waiting_workflow(client: httpx.Client) -> str:
    """A messaging workflow waiting (30 s) for an approval nobody sends."""
    wf = unique_id("docs-wait")
    post(client, f"/start-workflow-messaging/{wf}/2?step_seconds=0&approval_timeout={SLOW}")
    return wf


def slow_streaming_workflow(client: httpx.Client) -> str:
    """A streaming workflow whose first step takes 30 s: its stream stays open."""
    wf = unique_id("docs-slow")
    post(client, f"/start-workflow-streaming/{wf}/2?step_seconds={SLOW}")
    wait_until(
        lambda: client.get(f"/workflow-stream/{wf}").json()["total_messages"] >= 2,
        timeout=15,
        what=f"first stream entries of {wf}",
    )
    return wf


def timed(call: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    start = time.perf_counter()
    answer = call()
    return answer, time.perf_counter() - start


def check_event_wait_holds_only_that_request(client: httpx.Client, base_url: str) -> None:
    wf = waiting_workflow(client)
    wait_s = 2.0
    try:
        with ThreadPoolExecutor(1) as pool, httpx.Client(base_url=base_url, timeout=30) as other:
            waiting = pool.submit(
                timed, lambda: other.get(f"/workflow-events/{wf}/progress?timeout={wait_s:g}")
            )
            time.sleep(0.3)  # let the event request reach the server before /health
            health, health_s = timed(lambda: client.get("/health"))
            still_waiting = not waiting.done()
            answer, event_s = waiting.result(timeout=30)
        assert health.status_code == 200 and still_waiting and health_s < wait_s / 2, (
            f"/health took {health_s:.3f}s and answered while the event request was "
            f"{'still waiting' if still_waiting else 'already done'}"
        )
        assert answer.status_code == 404, f"unset key: {answer.status_code} {answer.text}"
        assert wait_s - 0.1 <= event_s < wait_s + AT_ONCE, (
            f"GET event with ?timeout={wait_s:g} on an unset key took {event_s:.3f}s"
        )
    finally:
        cancel(client, wf)


def check_event_set_returns_at_once(client: httpx.Client, base_url: str) -> None:
    wf = waiting_workflow(client)
    try:
        answer, elapsed = timed(lambda: client.get(f"/workflow-events/{wf}/status?timeout=30"))
        assert answer.status_code == 200, answer.text
        assert elapsed < AT_ONCE, f"GET of a key already set took {elapsed:.3f}s"
    finally:
        cancel(client, wf)


def check_event_finished_returns_at_once(client: httpx.Client, base_url: str) -> None:
    wf = unique_id("docs-done")
    post(client, f"/start-workflow-events/{wf}/1?step_seconds=0")
    wait_until(
        lambda: client.get(f"/workflows/{wf}").json()["status"] == "SUCCESS",
        timeout=15,
        what=f"{wf} to finish",
    )
    answer, elapsed = timed(lambda: client.get(f"/workflow-events/{wf}/never-set?timeout=30"))
    assert answer.status_code == 404, answer.text
    assert elapsed < AT_ONCE, f"GET of a key a finished workflow never set took {elapsed:.3f}s"


def check_all_events_at_once(client: httpx.Client, base_url: str) -> None:
    wf = waiting_workflow(client)
    try:
        answer, elapsed = timed(lambda: client.get(f"/workflow-events/{wf}/all"))
        assert answer.status_code == 200, answer.text
        assert elapsed < AT_ONCE, f"GET /all on a running workflow took {elapsed:.3f}s"
    finally:
        cancel(client, wf)


def check_stream_page_at_once(client: httpx.Client, base_url: str) -> None:
    wf = slow_streaming_workflow(client)
    try:
        answer, elapsed = timed(lambda: client.get(f"/workflow-stream/{wf}"))
        assert answer.status_code == 200, answer.text
        assert answer.json()["closed"] is False, answer.text
        assert elapsed < AT_ONCE, f"GET /workflow-stream on an open stream took {elapsed:.3f}s"
    finally:
        cancel(client, wf)


def check_send_does_not_wait_for_receipt(client: httpx.Client, base_url: str) -> None:
    wf = waiting_workflow(client)
    try:
        # On a topic the workflow never reads: the send cannot be waiting for the receiver.
        answer, elapsed = timed(
            lambda: client.post(f"/send-message/{wf}?topic=docs-unread", json={"n": 1})
        )
        assert answer.status_code == 200, answer.text
        assert elapsed < AT_ONCE, f"POST /send-message took {elapsed:.3f}s"
        status = client.get(f"/workflow-events/{wf}/status").json()["value"]
        assert status == names.STATUS_WAITING, f"the workflow moved on: {status}"
    finally:
        cancel(client, wf)


def check_start_does_not_wait_for_the_workflow(client: httpx.Client, base_url: str) -> None:
    started = []
    try:
        for kind in ("events", "messaging", "streaming"):
            wf = unique_id(f"docs-start-{kind}")
            started.append(wf)
            answer, elapsed = timed(
                partial(client.post, f"/start-workflow-{kind}/{wf}/2?step_seconds={SLOW}")
            )
            assert answer.status_code == 200, answer.text
            assert elapsed < AT_ONCE, f"starting the {kind} workflow took {elapsed:.3f}s"
            status = client.get(f"/workflows/{wf}").json()["status"]
            assert status in ("PENDING", "ENQUEUED"), f"{kind} workflow already {status}"
    finally:
        for wf in started:
            cancel(client, wf)


def check_status_at_once(client: httpx.Client, base_url: str) -> None:
    wf = waiting_workflow(client)
    try:
        answer, elapsed = timed(lambda: client.get(f"/workflows/{wf}"))
        assert answer.status_code == 200, answer.text
        assert elapsed < AT_ONCE, f"GET /workflows/{{id}} took {elapsed:.3f}s"
    finally:
        cancel(client, wf)


class SseReader:
    """Reads an SSE response on a thread, so the test can look at it while it is open."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.lines: list[str] = []
        self.status: int | None = None
        self.ended = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            with httpx.stream("GET", self.url, timeout=httpx.Timeout(5, read=60)) as answer:
                self.status = answer.status_code
                for line in answer.iter_lines():
                    self.lines.append(line)
        except httpx.HTTPError as exc:
            self.lines.append(f"!! {type(exc).__name__}: {exc}")
        finally:
            self.ended.set()

    def saw(self, text: str) -> bool:
        return any(text in line for line in self.lines)


def check_live_stays_open(start: Callable[[httpx.Client], str], path: str) -> Callable[..., None]:
    def check(client: httpx.Client, base_url: str) -> None:
        wf = start(client)
        try:
            reader = SseReader(base_url + path.format(workflow_id=wf))
            wait_until(lambda: reader.saw("data:"), timeout=15, what=f"first event on {path}")
            time.sleep(1.0)  # open and idle for a while: nothing may end it
            assert not reader.ended.is_set() and not reader.saw("event: closed"), (
                f"{path} ended while the workflow was running: {reader.lines[-5:]}"
            )
            cancel(client, wf)
            assert reader.ended.wait(15), f"{path} still open 15 s after the workflow ended"
            assert reader.saw("event: closed"), f"{path} ended without closed: {reader.lines}"
        finally:
            cancel(client, wf)

    return check


@dataclass(frozen=True)
class Check:
    claim: str
    behaviour: str
    run: Callable[[httpx.Client, str], None]


CHECKS: dict[tuple[str, str], list[Check]] = {
    ("GET", "/workflow-events/{workflow_id}/{event_key}"): [
        Check(
            "Yes",
            "waits for an unset key, server answers meanwhile",
            check_event_wait_holds_only_that_request,
        ),
        Check("Yes", "returns at once when the key is set", check_event_set_returns_at_once),
        Check(
            "Yes",
            "returns at once when the workflow finished",
            check_event_finished_returns_at_once,
        ),
    ],
    ("GET", "/workflow-events/{workflow_id}/all"): [
        Check("No", "returns at once", check_all_events_at_once)
    ],
    ("GET", "/workflow-stream/{workflow_id}"): [
        Check("No", "returns at once on an open stream", check_stream_page_at_once)
    ],
    ("POST", "/send-message/{workflow_id}"): [
        Check("No", "does not wait for the receiver", check_send_does_not_wait_for_receipt)
    ],
    ("POST", "/start-workflow-{kind}/{workflow_id}/{n_steps}"): [
        Check("No", "does not wait for the workflow", check_start_does_not_wait_for_the_workflow)
    ],
    ("GET", "/workflows/{workflow_id}"): [Check("No", "returns at once", check_status_at_once)],
    ("GET", "/workflow-stream/{workflow_id}/live"): [
        Check(
            "Stays open",
            "open while running, closed at the end",
            check_live_stays_open(slow_streaming_workflow, "/workflow-stream/{workflow_id}/live"),
        )
    ],
    ("GET", "/workflow-events/{workflow_id}/live"): [
        Check(
            "Stays open",
            "open while running, closed at the end",
            check_live_stays_open(waiting_workflow, "/workflow-events/{workflow_id}/live"),
        )
    ],
    ("GET", "/workflows/{workflow_id}/live"): [
        Check(
            "Stays open",
            "open while running, closed at the end",
            check_live_stays_open(waiting_workflow, "/workflows/{workflow_id}/live"),
        )
    ],
}


def blocking_cases() -> list[Any]:
    cases = []
    for row in blocking_rows():
        checks: list[Check | None] = [*CHECKS.get((row.method, row.path), [])] or [None]
        for check in checks:
            name = f"{row.method} {row.path}" + (f": {check.behaviour}" if check else "")
            cases.append(pytest.param(row, check, id=name))
    return cases


def test_blocking_table_has_every_http_row() -> None:
    """The client-side table has a row for each endpoint the checks below measure."""
    documented = {(row.method, row.path) for row in blocking_rows()}
    missing = sorted(set(CHECKS) - documented)
    assert not missing, f"QUICK_REFERENCE blocking table lacks rows for {missing}"


@pytest.mark.parametrize(("row", "check"), blocking_cases())
def test_blocking_claim(
    row: BlockingRow, check: Check | None, client: httpx.Client, base_url: str
) -> None:
    """What the QUICK_REFERENCE blocking table says about this HTTP call is what it does."""
    assert check is not None, f"no check for the row {row.text!r}: add one to CHECKS"
    assert row.claim == check.claim, (
        f"the table says {row.claim!r} for {row.method} {row.path}; measured: {check.claim!r}"
    )
    check.run(client, base_url)


SYNC_CALLS: dict[str, Callable[[], Any]] = {
    "set_event": lambda: DBOS.set_event("key", 1),
    "get_event": lambda: DBOS.get_event("wf", "key"),
    "get_all_events": lambda: DBOS.get_all_events("wf"),
    "send": lambda: DBOS.send("wf", {}, "topic"),
    "recv": lambda: DBOS.recv("topic"),
    "write_stream": lambda: DBOS.write_stream("key", 1),
    "close_stream": lambda: DBOS.close_stream("key"),
    "read_stream": lambda: next(iter(DBOS.read_stream("wf", "key"))),
    "get_result": lambda: DBOS.get_result("wf"),
    "list_workflows": lambda: DBOS.list_workflows(),
    "cancel_workflow": lambda: DBOS.cancel_workflow("wf"),
    "resume_workflow": lambda: DBOS.resume_workflow("wf"),
}


def documented_sync_calls() -> list[str]:
    text = read_doc("README.md")
    listed = re.search(r"the synchronous calls \(([^)]*)", text)
    assert listed, "README.md troubleshooting no longer lists the synchronous calls"
    return ticked(listed.group(1))


def test_documented_sync_calls_are_checked() -> None:
    """The README's list of sync calls that raise is the list the next test proves."""
    assert documented_sync_calls() == list(SYNC_CALLS)


@pytest.mark.parametrize("name", list(SYNC_CALLS))
def test_sync_call_raises_in_event_loop(name: str) -> None:
    """As README and QUICK_REFERENCE say: in DBOS 3.4 this sync call raises in async code."""

    async def in_a_running_loop() -> None:
        SYNC_CALLS[name]()

    with pytest.raises(RuntimeError, match="was called while an event loop is running"):
        asyncio.run(in_a_running_loop())


@pytest.mark.parametrize(
    "path",
    ["/workflow-stream/{}/live", "/workflow-events/{}/live", "/workflows/{}/live"],
)
def test_live_responses_turn_proxy_buffering_off(path: str, client: httpx.Client) -> None:
    """As "Behind a reverse proxy" says: SSE answers carry X-Accel-Buffering: no."""
    wf = unique_id("docs-proxy")
    post(client, f"/start-workflow-streaming/{wf}/1?step_seconds=0")
    with client.stream("GET", path.format(wf)) as answer:
        assert answer.status_code == 200, answer.read()
        headers = {k: answer.headers.get(k) for k in ("x-accel-buffering", "cache-control")}
    assert headers == {"x-accel-buffering": "no", "cache-control": "no-cache"}, headers
