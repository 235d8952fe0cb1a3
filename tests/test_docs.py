"""The reference in docs/ names what the code does: the variables it reads, the frames and
events it sends. Each check fails with the names that differ, on either side."""

from __future__ import annotations

import ast
import re
import typing
from collections.abc import Iterable, Iterator
from pathlib import Path

from inkwave import env
from orders.models import OrderEventKind
from orders.protocol import CLIENT_FRAMES, SERVER_FRAMES, CloseCode, ErrorCode, RoomEvent

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PROJECT_PACKAGES = ("inkwave", "monitoring", "orders", "notifications")
# The readers of inkwave/env.py; each takes the variable's name first.
ENV_READERS = {name for name in vars(env) if name.startswith("env_")}
SCRIPTS = ("scripts/run", "scripts/test", "scripts/lib.sh", "scripts/screenshots")


def assert_same(documented: Iterable[object], actual: Iterable[object], what: str) -> None:
    documented, actual = set(documented), set(actual)
    assert documented == actual, (
        f"{what}: documented but not in the code: {sorted(map(str, documented - actual))}; "
        f"in the code but not documented: {sorted(map(str, actual - documented))}"
    )


# --- Reading the code --------------------------------------------------------------------


def project_modules() -> Iterator[Path]:
    yield ROOT / "manage.py"
    for package in PROJECT_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            # env.py holds the readers themselves, which take the name as an argument.
            if path != ROOT / "inkwave" / "env.py":
                yield path


def _is_os_environ(node: ast.expr) -> bool:
    return ast.unparse(node) in ("os.environ", "environ")


def variables_read(tree: ast.AST, where: str) -> tuple[set[str], set[str]]:
    """(every variable name read, those read by env_secret) in one module."""
    names: set[str] = set()
    secrets: set[str] = set()

    def literal(node: ast.expr | None, call: ast.AST) -> str:
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
            raise AssertionError(
                f"{where}:{getattr(call, 'lineno', '?')}: a variable whose name is not a literal "
                f"cannot be checked against docs/configuration.md: {ast.unparse(call)}"
            )
        return node.value

    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            reader = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if reader in ENV_READERS:
                name = literal(node.args[0] if node.args else None, node)
                names.add(name)
                if reader == "env_secret":
                    secrets.add(name)
            elif isinstance(func, ast.Attribute) and (
                (func.attr in ("get", "pop") and _is_os_environ(func.value))
                or ast.unparse(func) == "os.getenv"
            ):
                names.add(literal(node.args[0] if node.args else None, node))
        elif (
            isinstance(node, ast.Subscript)
            and isinstance(node.ctx, ast.Load)
            and _is_os_environ(node.value)
        ):
            names.add(literal(node.slice, node))
    return names, secrets


def variables_the_code_reads() -> tuple[set[str], set[str]]:
    names: set[str] = set()
    secrets: set[str] = set()
    for path in project_modules():
        found, found_secrets = variables_read(ast.parse(path.read_text()), str(path))
        names |= found
        secrets |= found_secrets
    # env_secret("NAME") also reads NAME_FILE: the table says so once, with *secret*.
    names |= {f"{name}_FILE" for name in secrets}
    for script in SCRIPTS:
        # A variable a script takes from the caller, with a default: ${NAME:-default}.
        names |= set(re.findall(r"\$\{([A-Z][A-Z0-9_]*):-", (ROOT / script).read_text()))
    return names, secrets


# --- Reading the docs --------------------------------------------------------------------


def table_rows(text: str) -> list[list[str]]:
    """The body rows of every Markdown table in the text, as lists of cells."""
    rows = []
    lines = text.splitlines()
    for previous, line in zip(["", *lines], lines, strict=False):
        if line.startswith("|") and previous.startswith("|") and not set(line) <= set("|- "):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def section(path: Path, heading: str) -> str:
    """The text under a `## heading`, up to the next heading of that level."""
    text = path.read_text()
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"{path.relative_to(ROOT)} has no section '## {heading}'"
    return match.group(1)


def code_names(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def documented_variables() -> tuple[set[str], set[str]]:
    names: set[str] = set()
    secrets: set[str] = set()
    for row in table_rows((DOCS / "configuration.md").read_text()):
        listed = [name for name in code_names(row[0]) if re.fullmatch(r"[A-Z][A-Z0-9_]*", name)]
        assert listed, f"a configuration row names no variable: {row}"
        names.update(listed)
        if "*secret*" in row[0]:
            secrets.update(listed)
    return names | {f"{name}_FILE" for name in secrets}, secrets


# --- The checks --------------------------------------------------------------------------


def test_the_configuration_table_lists_exactly_the_variables_the_code_reads() -> None:
    documented, documented_secrets = documented_variables()
    read, secrets = variables_the_code_reads()
    assert_same(documented, read, "environment variables (docs/configuration.md)")
    assert_same(documented_secrets, secrets, "variables marked *secret* (read with env_secret)")


def test_the_variable_reader_finds_every_kind_of_read() -> None:
    """The check above is only as good as this reader: it must see each way of reading."""
    code = (
        "import os\n"
        "from inkwave.env import env_int, env_secret\n"
        "A = env_int('ALPHA', 1, minimum=0)\n"
        "B = env_secret('BRAVO')\n"
        "C = os.environ.get('CHARLIE')\n"
        "D = os.environ['DELTA']\n"
        "E = os.getenv('ECHO')\n"
        "os.environ['FOXTROT'] = 'written, not read'\n"
        "os.environ.setdefault('GOLF', 'a default for others, not read here')\n"
    )
    assert variables_read(ast.parse(code), "example") == (
        {"ALPHA", "BRAVO", "CHARLIE", "DELTA", "ECHO"},
        {"BRAVO"},
    )


def frame_type(frame: type) -> str:
    (literal,) = typing.get_args(typing.get_type_hints(frame)["type"])
    return str(literal)


def test_the_protocol_doc_names_exactly_the_frames_the_code_defines() -> None:
    rows = table_rows(section(DOCS / "protocol.md", "Frames"))
    documented = {(code_names(row[0])[0], row[1]) for row in rows}
    defined = {(frame_type(f), "client") for f in CLIENT_FRAMES}
    defined |= {(frame_type(f), "server") for f in SERVER_FRAMES}
    assert_same(documented, defined, "frame types and who sends them (docs/protocol.md, Frames)")
    for frame in (*CLIENT_FRAMES, *SERVER_FRAMES):
        (row,) = [row for row in rows if code_names(row[0]) == [frame_type(frame)]]
        fields = set(typing.get_type_hints(frame)) - {"type"}
        assert_same(code_names(row[2]), fields, f"fields of the {frame_type(frame)!r} frame")


def test_the_protocol_doc_names_exactly_the_events_the_server_sends() -> None:
    rows = table_rows(section(DOCS / "protocol.md", "Events"))
    assert_same(
        (code_names(row[0])[0] for row in rows),
        (event.value for event in RoomEvent),
        "room events (docs/protocol.md, Events)",
    )


def test_the_protocol_doc_names_exactly_the_error_and_close_codes() -> None:
    errors = table_rows(section(DOCS / "protocol.md", "Error codes"))
    assert_same(
        (code_names(row[0])[0] for row in errors),
        (code.value for code in ErrorCode),
        "error codes (docs/protocol.md)",
    )
    closes = table_rows(section(DOCS / "protocol.md", "Close codes"))
    assert_same(
        (int(row[0]) for row in closes),
        (int(code) for code in CloseCode),
        "close codes (docs/protocol.md)",
    )


def test_every_order_event_named_anywhere_in_the_docs_is_one_the_code_has() -> None:
    """`order.created` was documented for years; the code sends `order.placed`."""
    known = {event.value for event in RoomEvent} | {kind.value for kind in OrderEventKind}
    named = {
        (name, str(path.relative_to(ROOT)))
        for path in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
        for name in re.findall(r"\border\.[a-z][a-z_]*", path.read_text())
    }
    unknown = sorted(f"{name} in {where}" for name, where in named if name not in known)
    assert not unknown, f"order events the code never records or sends: {unknown}"
