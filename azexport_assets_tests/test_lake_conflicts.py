"""Real commit conflicts on DuckLake, from processes writing the same table at once, and what
reaches the user when the lake cannot be opened (no secrets)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from azexport_assets.warehouse import LakeWarehouse, open_warehouse
from azexport_assets.warehouse.lake import LakeConnectError
from azexport_assets_tests.lake_kit import PostgresServer, postgres, use_lake  # noqa: F401

pytestmark = pytest.mark.lake

REPLACE_SHARED = textwrap.dedent(
    """
    import json, sys
    import duckdb
    from azexport_assets.warehouse import open_warehouse, retry_on_conflict

    k, rounds, retry = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "retry"
    warehouse = open_warehouse()
    conflicts, failed = [], 0
    for r in range(rounds):
        with warehouse.connect(holder=f"writer {k}") as con:
            sql = f"CREATE OR REPLACE TABLE models.shared AS SELECT {k} AS writer, {r} AS round"
            try:
                if retry:
                    retry_on_conflict(
                        lambda: con.execute(sql), on_retry=lambda n, e: conflicts.append(n)
                    )
                else:
                    con.execute(sql)
            except duckdb.TransactionException:
                failed += 1
    print(json.dumps({"conflicts": len(conflicts), "failed": failed}))
    """
)


@pytest.fixture
def lake(postgres: PostgresServer, monkeypatch, tmp_path) -> LakeWarehouse:  # noqa: F811
    use_lake(monkeypatch, postgres, str(tmp_path / "lake-data"), postgres.create_database())
    warehouse = open_warehouse()
    assert isinstance(warehouse, LakeWarehouse)
    warehouse.init()
    return warehouse


def writers(retry: bool, processes: int = 3, rounds: int = 15) -> list[dict]:
    children = [
        subprocess.Popen(
            [sys.executable, "-c", REPLACE_SHARED, str(k), str(rounds), "retry" if retry else "-"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(processes)
    ]
    results = []
    for child in children:
        out, err = child.communicate(timeout=300)
        assert child.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def test_writers_of_one_table_conflict_and_the_retry_absorbs_it(lake: LakeWarehouse):
    without = writers(retry=False)
    with_retry = writers(retry=True)
    # Without the retry some commits fail; with it none does, although conflicts happened.
    print("without retry:", without, "with retry:", with_retry)
    assert sum(r["failed"] for r in without) > 0
    assert sum(r["failed"] for r in with_retry) == 0
    assert sum(r["conflicts"] for r in with_retry) > 0
    with lake.connect() as con:
        # Every writer's last commit is its round 14, whoever came last.
        assert con.execute("SELECT round FROM models.shared").fetchall() == [(14,)]


def test_a_refused_login_names_the_lake_but_not_the_password(
    postgres: PostgresServer,  # noqa: F811
    monkeypatch,
    tmp_path,
):
    use_lake(monkeypatch, postgres, str(tmp_path / "lake-data"), postgres.create_database())
    warehouse = open_warehouse(
        f"ducklake:postgres:{postgres.conninfo('postgres')} password=not-the-password"
    )
    with pytest.raises(LakeConnectError) as caught:
        warehouse.init()
    message = str(caught.value)
    assert "not-the-password" not in message
    assert "password=***" in message and f"port={postgres.port}" in message
