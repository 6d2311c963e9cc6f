"""Read from the source: every table has one store module that writes it, and `store/` is the
only package that knows SQL (ARCHITECTURE.md, "Tables and their one owner").

The writes looked for are the ones idlehook's store spells: Core `insert`/`update`/`delete` on a
table's `__table__` (or `sa.update(Model)`), a model built for an ORM insert, and SQL text.
"""

import ast
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STORE = ROOT / "store"

OWNERS = {
    "deliveries": {"ingest.py"},
    # ingest.py inserts each new delivery's `_route` run in the commit that stores it.
    "handler_runs": {"runs.py", "ingest.py"},
    "tracked_sessions": {"sessions.py"},
    "launches": {"launches.py"},
    "environment_checks": {"launches.py"},
    "rate_slots": {"rate_slots.py"},
    "reaper_actions": {"reaper_actions.py"},
    "reconcile_cursors": {"watch.py"},
    "tool_calls": {"tool_calls.py"},
    "approvals": {"approvals.py"},
    "follow_ups": {"followups.py"},
    "unrecognised_deliveries": {"unrecognised.py"},
    "signing_keys": {"signing_keys.py"},
    "webhook_rejections": {"rejections.py"},
}
DELETER = "retention.py"  # deletes old, finished rows of any table
_SQL_WRITE = re.compile(r"\b(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+(\w+)", re.IGNORECASE)
_WRITES = {"insert", "update", "delete"}


def _tables() -> dict[str, str]:
    """Model class name -> table name, from store/models.py."""
    found: dict[str, str] = {}
    for node in ast.parse((STORE / "models.py").read_text()).body:
        if not isinstance(node, ast.ClassDef):
            continue
        for item in node.body:
            if (
                isinstance(item, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "__tablename__" for t in item.targets)
                and isinstance(item.value, ast.Constant)
            ):
                found[node.name] = str(item.value.value)
    return found


def _aliases(tree: ast.AST, tables: dict[str, str]) -> dict[str, str]:
    """Names bound to `Model.__table__` in a module -> table name."""
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        if (
            isinstance(value, ast.Attribute)
            and value.attr == "__table__"
            and isinstance(value.value, ast.Name)
            and value.value.id in tables
        ):
            for target in targets:
                if isinstance(target, ast.Name):
                    aliases[target.id] = tables[value.value.id]
    return aliases


def _written(tree: ast.AST, tables: dict[str, str]) -> Iterator[str]:
    aliases = _aliases(tree, tables)
    named = {**aliases, **tables}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield from (m.group(1) for m in _SQL_WRITE.finditer(node.value))
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id in tables:
            yield tables[func.id]  # a model built to be added
        if not isinstance(func, ast.Attribute) or func.attr not in _WRITES:
            continue
        if isinstance(func.value, ast.Name) and func.value.id in aliases:
            yield aliases[func.value.id]  # table.update()
        first = node.args[0] if node.args else None
        if isinstance(first, ast.Name) and first.id in named:
            yield named[first.id]  # sa.update(Model), dialect.insert(table)


def test_every_table_is_written_by_its_one_owner() -> None:
    tables = _tables()
    assert set(OWNERS) == set(tables.values()), "a table was added: name its owner"
    strays: list[str] = []
    for path in sorted(STORE.glob("*.py")):
        if path.name in ("models.py", DELETER):
            continue
        for table in set(_written(ast.parse(path.read_text()), tables)):
            if table in OWNERS and path.name not in OWNERS[table]:
                strays.append(f"store/{path.name} writes {table}")
    assert strays == []


def test_the_tracked_sessions_writer_is_found() -> None:
    """The search itself works: it finds the owner's own writes."""
    tree = ast.parse((STORE / "sessions.py").read_text())
    assert "tracked_sessions" in set(_written(tree, _tables()))


# Outside store/, these may be imported: the engine's type (passed through) and the errors
# (a caller decides whether the store was down).
_ALLOWED = {"sqlalchemy.engine": {"Engine"}, "sqlalchemy.exc": None}


def _sql_uses(path: Path) -> Iterator[str]:
    tree = ast.parse(path.read_text())
    aliases: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if top not in ("sqlalchemy", "sqlmodel"):
                    continue
                if alias.name == "sqlalchemy.exc" and alias.asname is None:
                    continue
                if alias.name == "sqlalchemy" and alias.asname:
                    aliases.add(alias.asname)  # judged by what it is used for, below
                    continue
                yield f"{path.relative_to(ROOT)}: import {alias.name}"
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] not in ("sqlalchemy", "sqlmodel"):
                continue
            allowed = _ALLOWED.get(node.module, set())
            for alias in node.names:
                if allowed is not None and alias.name not in allowed:
                    yield f"{path.relative_to(ROOT)}: from {node.module} import {alias.name}"
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
            and node.attr not in ("exc", "Engine")
        ):
            yield f"{path.relative_to(ROOT)}:{node.lineno}: {node.value.id}.{node.attr}"


def test_only_store_knows_sql() -> None:
    found: list[str] = []
    for package in ("idlehook", "receiver", "console", "handlers", "sessions"):
        for path in sorted((ROOT / package).rglob("*.py")):
            found.extend(_sql_uses(path))
    assert found == []
