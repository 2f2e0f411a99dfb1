"""`outpost audit verify` over a million audit rows; the figure to reach is at most 10 s.

The database is filled directly: `upgrade_to_head` creates the schema, then the rows are sealed with
Outpost's own chain code (`outpost.audit.chain.seal`: the MACs and canonical values the server writes)
and bulk-inserted, oldest first, with the head moved to the last one and sealed. The rows mix the
actions a busy server records (dispatches created and cancelled, keys refused, secrets read, ...) over
the last 300 days. On SQLite they go in through the sqlite3 module stored exactly as SQLAlchemy stores
them (times as `YYYY-MM-DD HH:MM:SS.ffffff`, details as `json.dumps` of the sealed detail; a test checks
that the server stores rows that way); on PostgreSQL (`--postgres ADMIN_URL`: a fresh database is made
and dropped) by COPY.

`outpost audit verify` then runs as a subprocess, as an operator runs it, `--runs` times; each run's wall
time (interpreter start and imports included) is a figure, and each must report every row verified.

    .venv/bin/python bench/audit_verify.py --rows 1000000 --runs 3
    .venv/bin/python bench/audit_verify.py --rows 1000000 --postgres postgresql://postgres@127.0.0.1/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import OUTPOST, publish, table

from outpost.audit.chain import GENESIS_HASH, KEY_PURPOSE, AuditEntry, AuditRecord, ChainKey, Origin, seal
from outpost.db.migrate import upgrade_to_head
from outpost.db.store import Store
from outpost.secrets.box import SecretBox
from outpost.secrets.master_key import encode_master_key

TARGET_S = 10.0
BATCH_ROWS = 50_000
SPAN = timedelta(days=300)
COLUMNS = (
    "seq", "created_at", "tenant_id", "actor", "action", "target", "detail", "source_ip", "prev_hash", "hash",
)  # fmt: skip
TENANTS = [f"01JBENCHTENANT{n:012d}" for n in range(20)]


def entry(rng: random.Random) -> AuditEntry:
    """One action, as often as a busy server records it."""
    tenant = rng.choice(TENANTS)
    key = Origin(
        f"key:{tenant[:-4]}KEY{rng.randrange(10)}", f"10.0.{rng.randrange(256)}.{rng.randrange(256)}"
    )
    target = f"01JBENCHTARGET{rng.randrange(10**12):012d}"
    roll = rng.random()
    if roll < 0.55:
        detail = {
            "agent": rng.choice(["claude", "codex", "shell"]), "model": "claude-sonnet-4", "tier": "balanced",
            "repo": "https://github.com/acme/service", "workspace": None, "max_cost_micro_usd": 2_000_000,
        }  # fmt: skip
        return AuditEntry("dispatch.create", tenant, key, target, detail)
    if roll < 0.75:
        return AuditEntry(
            "secret.read", tenant, Origin("worker"), "provider/anthropic/api_key", {"version": 3}
        )
    if roll < 0.85:
        return AuditEntry("dispatch.cancel", tenant, key, target, {"status": "cancelled"})
    if roll < 0.95:
        reason = rng.choice(["unknown", "wrong_secret", "revoked", "malformed"])
        return AuditEntry(
            "auth.failed", None, Origin("prefix:op_abcdefghijkl", key.source_ip), None, {"reason": reason}
        )
    return AuditEntry(
        "key.create", tenant, key, target, {"prefix": "op_abcdefghijkl", "name": "ci", "admin": False}
    )


def sealed(count: int, key: ChainKey) -> Iterator[AuditRecord]:
    rng = random.Random(7)
    start = datetime.now(UTC) - SPAN
    step = SPAN / count
    prev = GENESIS_HASH
    for seq in range(1, count + 1):
        record = seal(key, entry(rng), seq=seq, prev_hash=prev, created_at=start + step * seq)
        prev = record.hash
        yield record


def batches(records: Iterator[AuditRecord]) -> Iterator[list[AuditRecord]]:
    batch: list[AuditRecord] = []
    for record in records:
        batch.append(record)
        if len(batch) == BATCH_ROWS:
            yield batch
            batch = []
    if batch:
        yield batch


def fill_sqlite(path: Path, count: int, key: ChainKey) -> None:
    placeholders = ", ".join("?" for _ in COLUMNS)
    insert = f"INSERT INTO audit_log ({', '.join(COLUMNS)}) VALUES ({placeholders})"  # noqa: S608
    with sqlite3.connect(path) as conn:
        last = None
        for batch in batches(sealed(count, key)):
            conn.executemany(insert, [_values(record, _sqlite_time(record)) for record in batch])
            last = batch[-1]
        if last is not None:
            conn.execute(
                "UPDATE audit_head SET seq = ?, hash = ?, mac = ? WHERE id = 1",
                (last.seq, last.hash, key.head_mac(last.seq, last.hash)),
            )


def _sqlite_time(record: AuditRecord) -> str:
    """A time as SQLAlchemy stores it in SQLite."""
    return record.created_at.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def _values(record: AuditRecord, created: object) -> tuple[object, ...]:
    """A row's values in the order of COLUMNS, its detail as SQLAlchemy's JSON type writes it."""
    return (
        record.seq, created, record.tenant_id, record.actor, record.action, record.target,
        json.dumps(record.detail), record.source_ip, record.prev_hash, record.hash,
    )  # fmt: skip


def fill_postgres(url: str, count: int, key: ChainKey) -> None:
    with psycopg.connect(url) as conn, conn.cursor() as cursor:
        last = None
        with cursor.copy(f"COPY audit_log ({', '.join(COLUMNS)}) FROM STDIN") as copy:
            for record in sealed(count, key):
                copy.write_row(_values(record, record.created_at))
                last = record
        if last is not None:
            cursor.execute(
                "UPDATE audit_head SET seq = %s, hash = %s, mac = %s WHERE id = 1",
                (last.seq, last.hash, key.head_mac(last.seq, last.hash)),
            )
        cursor.execute("ANALYZE audit_log")


def migrate(url: str) -> None:
    async def run() -> None:
        store = Store(url)
        try:
            await upgrade_to_head(store)
        finally:
            await store.dispose()

    asyncio.run(run())


def time_verify(url: str, master_key: bytes, rows: int, work: Path) -> float:
    """One `outpost audit verify` run's wall time. Raises SystemExit when it does not verify every row."""
    inherited = {name: value for name, value in os.environ.items() if not name.startswith("OUTPOST_")}
    env = {
        **inherited, "OUTPOST_DATABASE_URL": url, "OUTPOST_DATA_DIR": str(work / "data"),
        "OUTPOST_SECRETS__MASTER_KEY": encode_master_key(master_key),
    }  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run([*OUTPOST, "audit", "verify"], env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0 or not done.stdout.startswith(f"audit log OK: {rows} rows"):
        raise SystemExit(f"outpost audit verify failed ({done.returncode}): {done.stdout}{done.stderr}")
    return elapsed


def measure(name: str, url: str, fill: str, rows: int, runs: int, work: Path) -> dict[str, object]:
    master_key = os.urandom(32)
    key = ChainKey(SecretBox(master_key).derive(KEY_PURPOSE))
    migrate(url)
    started = time.perf_counter()
    if fill == "sqlite":
        fill_sqlite(Path(url.split("///", 1)[1]), rows, key)
    else:
        fill_postgres(url.replace("postgresql+psycopg://", "postgresql://", 1), rows, key)
    fill_s = time.perf_counter() - started
    print(f"{name}: {rows} rows sealed and stored in {fill_s:.1f} s", flush=True)
    times = [time_verify(url, master_key, rows, work) for _ in range(runs)]
    return {
        "database": name, "rows": rows, "fill_s": round(fill_s, 1), "verify_s": [round(t, 2) for t in times],
        "best_s": round(min(times), 2), "median_s": round(statistics.median(times), 2),
        "rows_per_s": round(rows / min(times)), "target_s": TARGET_S, "met": max(times) <= TARGET_S,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--postgres", metavar="ADMIN_URL", help="Also measure on a fresh PostgreSQL database."
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="outpost-bench-audit-"))
    results = []
    try:
        url = f"sqlite+aiosqlite:///{work / 'outpost.db'}"
        results.append(measure("sqlite", url, "sqlite", args.rows, args.runs, work))
        if args.postgres:
            results.append(measure_postgres(args.postgres, args.rows, args.runs, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = [(r["database"], r["rows"], r["fill_s"], r["best_s"], r["median_s"], r["met"]) for r in results]
    text = table(
        ["database", "rows", "fill s", "verify best s", "verify median s", f"<= {TARGET_S:.0f} s"], rows
    )
    publish("audit_verify", {"results": results}, text)


def measure_postgres(admin_url: str, rows: int, runs: int, work: Path) -> dict[str, object]:
    name = f"outpost_bench_audit_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        return measure("postgresql", f"{base}/{name}", "postgres", rows, runs, work)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
