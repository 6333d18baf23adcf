"""Numbered SQL migrations, applied in order and recorded in `schema_migrations`.

A file `NNNN_name.sql` holds one or more statements separated by `;` at a line
end. `${db}` stands for the configured database (a validated identifier).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from weftline.storage.clickhouse import ClickHouse

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
NAME_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


def load_migrations(folder: Path = MIGRATIONS_DIR) -> list[Migration]:
    found: list[Migration] = []
    for path in sorted(folder.iterdir()):
        m = NAME_RE.match(path.name)
        if not m:
            continue
        text = "\n".join(
            line for line in path.read_text().splitlines() if not line.lstrip().startswith("--")
        )
        statements = tuple(s.strip() for s in re.split(r";\s*$", text, flags=re.M) if s.strip())
        found.append(Migration(int(m.group(1)), m.group(2), statements))
    versions = [m.version for m in found]
    if len(versions) != len(set(versions)):
        raise RuntimeError(f"duplicate migration numbers in {folder}")
    return found


def apply_statement(ch: ClickHouse, stmt: str) -> None:
    """Run one DDL statement; on a ClickHouse cluster (`ch.cluster` set), its ON CLUSTER
    form with replicated local tables and a Distributed table (storage/cluster_ddl.py)."""
    cluster = getattr(ch, "cluster", None)
    if not cluster:
        ch.command(stmt)
        return
    from weftline.storage.cluster_ddl import cluster_statements

    for s in cluster_statements(stmt, cluster):
        ch.command(s)


def applied_versions(ch: ClickHouse) -> set[int]:
    apply_statement(
        ch,
        f"CREATE TABLE IF NOT EXISTS {ch.database}.schema_migrations "
        "(version UInt32, name String, applied_at DateTime DEFAULT now()) "
        "ENGINE = ReplacingMergeTree ORDER BY version",
    )
    rows = ch.query(f"SELECT version FROM {ch.database}.schema_migrations FINAL")
    return {int(r["version"]) for r in rows}


def migrate(ch: ClickHouse, progress: Callable[[str], None] = lambda _: None) -> list[int]:
    """Apply every migration not yet recorded; returns the versions applied now."""
    done = applied_versions(ch)
    applied: list[int] = []
    for mig in load_migrations():
        if mig.version in done:
            continue
        progress(f"applying migration {mig.version:04d}_{mig.name}")
        for stmt in mig.statements:
            apply_statement(ch, stmt.replace("${db}", ch.database))
        ch.insert("schema_migrations", [{"version": mig.version, "name": mig.name}])
        applied.append(mig.version)
    return applied
