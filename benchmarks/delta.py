"""Benchmark: cost of a delta (compute_change_set) against a bare DuckDB hash join, same run.

Builds a source of N rows x 12 columns, commits a first (full) run, then changes 1% of the
rows, inserts 0.1% and deletes 0.1%, and times side by side (alternating, best and median
of `--repeat`):

- delta:         compute_change_set (exact IS DISTINCT FROM comparison, change set stored)
- ref_keys:      FULL OUTER JOIN on the key of (key, hash(exported columns)) of both tables,
                 materialising the changed keys and their kind
- ref_rows:      the same join carrying every exported column, materialising the changed rows
                 with their values (the same output the delta stores)
- ref_fetch:     the narrow ref_keys join, then the changed rows fetched from both tables by
                 key: what a hash-based (not exact) delta would cost for the same output

Run: .venv/bin/python benchmarks/delta.py --rows 1000000 [--memory-limit 1GB]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path

import duckdb

from azexport_assets.delta import DeltaSpec, commit_baseline, compute_change_set
from azexport_assets.delta.spec import state_table

EXPORTED = (
    "id", "email", "first_name", "last_name", "city", "country", "birth_date",
    "signup_at", "lifetime_value", "score", "is_vip",
)  # fmt: skip
HIDDEN = "updated_at"  # in the source, not exported: must never cause an update

SOURCE_SQL = """
SELECT i AS id,
       'user' || i || '@example.com' AS email,
       'first_' || (i % 5000) AS first_name,
       'last_' || (i % 20011) AS last_name,
       'city_' || (i % 997) AS city,
       ['NO', 'IT', 'PE', 'DE', 'FR', NULL][(i % 6) + 1] AS country,
       DATE '1950-01-01' + (i % 20000)::INTEGER AS birth_date,
       TIMESTAMP '2020-01-01' + to_microseconds(i * 1000003) AS signup_at,
       ((i * 37) % 1000000 / 100)::DECIMAL(12, 2) AS lifetime_value,
       (i % 1013) / 7.0 AS score,
       i % 11 = 0 AS is_vip,
       TIMESTAMP '2024-01-01' AS updated_at
FROM range({start}, {stop}) AS r(i)
"""


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def build(con: duckdb.DuckDBPyConnection, rows: int) -> None:
    """The source table `models.customers`: ids 0..rows-1."""
    con.execute("CREATE SCHEMA models")
    con.execute(f"CREATE TABLE models.customers AS {SOURCE_SQL.format(start=0, stop=rows)}")


def mutate(con: duckdb.DuckDBPyConnection, rows: int) -> dict[str, int]:
    """1% exported updates, 1% non-exported updates, 0.1% deletes, 0.1% inserts."""
    table = "models.customers"
    updated = con.execute(
        f"UPDATE {table} SET city = city || '*', {HIDDEN} = TIMESTAMP '2025-01-01' "
        "WHERE id % 100 = 7"
    ).fetchone()[0]
    touched_hidden = con.execute(
        f"UPDATE {table} SET {HIDDEN} = TIMESTAMP '2025-01-01' WHERE id % 100 = 8"
    ).fetchone()[0]
    removed = con.execute(f"DELETE FROM {table} WHERE id % 1000 = 9").fetchone()[0]
    added = con.execute(
        f"INSERT INTO {table} {SOURCE_SQL.format(start=rows, stop=rows + rows // 1000)}"
    ).fetchone()[0]
    return {"added": added, "updated": updated, "removed": removed, "hidden": touched_hidden}


def reference_sql(baseline: str, with_rows: bool) -> str:
    cols = [c for c in EXPORTED if c != "id"]
    digest = f"hash({', '.join(cols)})"
    kind = (
        "CASE WHEN b.id IS NULL THEN 'added' WHEN c.id IS NULL THEN 'removed' "
        "ELSE 'updated' END AS kind"
    )
    if with_rows:
        values = ", ".join(f"CASE WHEN c.id IS NULL THEN b.{x} ELSE c.{x} END AS {x}" for x in cols)
        source = f"(SELECT {', '.join(EXPORTED)}, {digest} AS h FROM models.customers)"
        base = f"(SELECT *, {digest} AS h FROM {baseline})"
        select = f"{kind}, coalesce(c.id, b.id) AS id, {values}"
    else:
        source = f"(SELECT id, {digest} AS h FROM models.customers)"
        base = f"(SELECT id, {digest} AS h FROM {baseline})"
        select = f"{kind}, coalesce(c.id, b.id) AS id"
    return (
        f"CREATE OR REPLACE TABLE bench_ref AS SELECT {select} FROM {source} AS c "
        f"FULL OUTER JOIN {base} AS b ON c.id = b.id WHERE c.h IS DISTINCT FROM b.h"
    )


def fetch_reference_sql(baseline: str) -> str:
    """Narrow join for the changed keys, then their rows: a hash-based delta's full cost."""
    cols = [c for c in EXPORTED if c != "id"]
    digest = f"hash({', '.join(cols)})"
    return (
        "CREATE OR REPLACE TABLE bench_ref AS "
        "WITH changed AS MATERIALIZED ("
        "SELECT coalesce(c.id, b.id) AS id, CASE WHEN b.id IS NULL THEN 'added' "
        "WHEN c.id IS NULL THEN 'removed' ELSE 'updated' END AS kind "
        f"FROM (SELECT id, {digest} AS h FROM models.customers) AS c "
        f"FULL OUTER JOIN (SELECT id, {digest} AS h FROM {baseline}) AS b ON c.id = b.id "
        "WHERE c.h IS DISTINCT FROM b.h) "
        f"SELECT ch.kind, s.{', s.'.join(EXPORTED)} FROM changed AS ch "
        "JOIN models.customers AS s ON s.id = ch.id WHERE ch.kind <> 'removed' "
        f"UNION ALL SELECT ch.kind, b.{', b.'.join(EXPORTED)} FROM changed AS ch "
        f"JOIN {baseline} AS b ON b.id = ch.id WHERE ch.kind = 'removed'"
    )


def run(
    rows: int = 1_000_000,
    repeat: int = 3,
    memory_limit: str | None = None,
    workdir: str | None = None,
) -> dict:
    """Build, mutate and time; returns the measurements (seconds) and ratios."""
    with tempfile.TemporaryDirectory(dir=workdir, prefix="bench-delta-") as tmp:
        con = duckdb.connect(str(Path(tmp) / "w.duckdb"))
        if memory_limit:
            con.execute(f"SET memory_limit = '{memory_limit}'")
            con.execute(f"SET temp_directory = '{Path(tmp) / 'spill'}'")
        result: dict = {"rows": rows, "memory_limit": memory_limit}
        result["build_s"] = _timed(lambda: build(con, rows))
        spec = DeltaSpec(
            activation="bench",
            source_table="models.customers",
            primary_key=("id",),
            columns=tuple((c, c.replace("_", " ").title()) for c in EXPORTED),
            run_type="full_then_delta",
            sync_mode="difference",
        )
        result["first_run_s"] = _timed(lambda: compute_change_set(con, spec, "first"))
        result["first_commit_s"] = _timed(lambda: commit_baseline(con, "bench", "first"))
        expected = mutate(con, rows)
        con.execute("CHECKPOINT")  # both tables on disk, as between two scheduled runs
        baseline = (
            "(SELECT "
            + ", ".join(f"c{i} AS {c}" for i, c in enumerate(EXPORTED))
            + f" FROM {state_table('baseline', 'bench')})"
        )
        # Wall time and process CPU time (all DuckDB threads): on a shared machine CPU time
        # is the steadier measure of work; both are reported.
        names = ("delta", "ref_keys", "ref_rows", "ref_fetch")
        wall: dict[str, list[float]] = {name: [] for name in names}
        cpu: dict[str, list[float]] = {name: [] for name in names}
        change = None
        for n in range(repeat):
            for name in names if n % 2 == 0 else names[::-1]:  # alternate the order
                start, start_cpu = time.perf_counter(), time.process_time()
                if name == "delta":
                    change = compute_change_set(con, spec, f"delta-{n}")
                elif name == "ref_fetch":
                    con.execute(fetch_reference_sql(baseline))
                else:
                    con.execute(reference_sql(baseline, with_rows=name == "ref_rows"))
                wall[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
        reference_changes = con.execute("SELECT count(*) FROM bench_ref").fetchone()[0]
        reference_kinds = dict(
            con.execute("SELECT kind, count(*) FROM bench_ref GROUP BY kind").fetchall()
        )
        result["commit_s"] = _timed(lambda: commit_baseline(con, "bench", change.delta_id))
        con.close()
    assert change is not None
    assert (change.added, change.updated, change.removed) == (
        expected["added"],
        expected["updated"],
        expected["removed"],
    ), (change, expected)
    assert reference_changes == change.added + change.updated + change.removed
    assert reference_kinds.get("removed", 0) == change.removed, reference_kinds
    for name in wall:
        result[f"{name}_wall_best_s"] = min(wall[name])
        result[f"{name}_wall_median_s"] = statistics.median(wall[name])
        result[f"{name}_cpu_median_s"] = statistics.median(cpu[name])
    for ref in ("ref_keys", "ref_rows", "ref_fetch"):
        for measure in ("wall_best", "wall_median", "cpu_median"):
            result[f"ratio_{measure}_vs_{ref}"] = (
                result[f"delta_{measure}_s"] / result[f"{ref}_{measure}_s"]
            )
    result["changes"] = {
        "added": change.added,
        "updated": change.updated,
        "removed": change.removed,
    }
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--memory-limit", default=None, help="e.g. 1GB: DuckDB must spill")
    parser.add_argument("--workdir", default=None, help="where the temp warehouse goes")
    args = parser.parse_args()
    result = run(args.rows, args.repeat, args.memory_limit, args.workdir)
    print(json.dumps(result, indent=2, default=str))
    print(f"\n{args.rows:,} rows, memory_limit={args.memory_limit or 'default'} (target <= 1.5x)")
    print(f"{'':10} {'wall best':>10} {'wall median':>12} {'cpu median':>11}")
    for name in ("delta", "ref_keys", "ref_rows", "ref_fetch"):
        best, median = result[f"{name}_wall_best_s"], result[f"{name}_wall_median_s"]
        print(f"{name:10} {best:>9.2f}s {median:>11.2f}s {result[f'{name}_cpu_median_s']:>10.2f}s")
    for ref in ("ref_keys", "ref_rows", "ref_fetch"):
        ratios = [result[f"ratio_{m}_vs_{ref}"] for m in ("wall_best", "wall_median", "cpu_median")]
        print(f"{'/' + ref:10} {ratios[0]:>9.2f}x {ratios[1]:>11.2f}x {ratios[2]:>10.2f}x")


if __name__ == "__main__":
    main()
