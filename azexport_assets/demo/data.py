"""Deterministic demo source data: a CRM DuckDB file and Parquet order files.

`customers` (~100k rows) has the values that break naive exporters: names with commas,
quotes and accents, NULLs, DECIMALs, DATEs, TIMESTAMPs. Same seed, same bytes, every time.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

CUSTOMERS_SQL = """
CREATE OR REPLACE TABLE customers AS
WITH ids AS (SELECT range AS i FROM range(1, {rows} + 1))
SELECT
    i AS customer_id,
    (['Anna', 'José', 'Zoë', 'Ömer', 'Li', 'Chloé', 'Mary-Jane', 'François', 'Ángel', 'Björk'])
        [1 + h(i, 'first') % 10] AS first_name,
    (['Smith', 'O''Brien', 'García, Jr.', 'Müller', '"The Rock" Johnson', 'Nguyễn', 'Dubois',
      'Kowalski', 'Søren', 'Lee'])[1 + h(i, 'last') % 10] AS last_name,
    'user' || i || '@example.' || (['com', 'fr', 'de', 'io'])[1 + h(i, 'tld') % 4] AS email,
    CASE WHEN h(i, 'phone') % 7 = 0 THEN NULL
         ELSE '+33 6 ' || lpad(CAST(h(i, 'p') % 100000000 AS VARCHAR), 8, '0') END
        AS phone_number,
    CAST(18 + h(i, 'age') % 70 AS INTEGER) AS age,
    h(i, 'active') % 5 <> 0 AS is_active,
    CAST((h(i, 'ltv') % 500000) / 100.0 AS DECIMAL(12, 2)) AS lifetime_value,
    DATE '2015-01-01' + CAST(h(i, 'signup') % 3650 AS INTEGER) AS signup_date,
    TIMESTAMP '2024-01-01 00:00:00'
        + to_microseconds(CAST(h(i, 'seen') * 31536 AS BIGINT)) AS last_seen_at,
    (['FR', 'DE', 'US', 'GB', 'ES', 'IT', 'JP', 'BR'])[1 + h(i, 'country') % 8] AS country,
    CASE WHEN i % 1000 = 0 THEN 'likes "quotes",
and new lines' ELSE NULL END AS notes
FROM ids
"""

ORDERS_SQL = """
COPY (
    SELECT
        range AS order_id,
        1 + h(range, 'customer') % {rows} AS customer_id,
        CAST((h(range, 'amount') % 50000) / 100.0 AS DECIMAL(10, 2)) AS amount,
        TIMESTAMP '2024-01-01' + to_microseconds(CAST(h(range, 'at') * 31536 AS BIGINT))
            AS ordered_at
    FROM range(1, {orders} + 1)
) TO '{path}' (FORMAT parquet, COMPRESSION zstd)
"""


def generate(folder: Path, rows: int = 100_000) -> dict[str, Path]:
    """Write crm.duckdb (table customers) and orders/orders.parquet under folder."""
    folder.mkdir(parents=True, exist_ok=True)
    crm = folder / "crm.duckdb"
    orders = folder / "orders" / "orders.parquet"
    orders.parent.mkdir(exist_ok=True)
    con = duckdb.connect(str(crm))
    try:
        # hash() is UBIGINT; a signed, bounded hash keeps the arithmetic simple.
        con.execute(
            "CREATE OR REPLACE TEMP MACRO h(x, s) AS CAST(hash(x, s) % 1000000007 AS BIGINT)"
        )
        con.execute(CUSTOMERS_SQL.format(rows=rows))
        con.execute(ORDERS_SQL.format(rows=rows, orders=rows * 3, path=orders))
    finally:
        con.close()
    return {"crm": crm, "orders": orders}


def simulate_changes(folder: Path, round_number: int) -> dict[str, int]:
    """A day in the CRM: some customers leave, some others change e-mail, some sign up.
    Deterministic per round, so every `make demo` after the first has deltas to export.

    The three sets of customers are disjoint (departures among the customers there before this
    round, then e-mail changes among those who stayed, then the sign-ups), so the counts are
    what a delta of all customers against the previous round exports: `deleted` removed,
    `updated` updated, `inserted` added. (A sign-up that also left the same day would be in no
    export at all, and an e-mail change of a departed customer would be a removal only.)"""
    con = duckdb.connect(str(folder / "crm.duckdb"))
    try:
        start = con.execute("SELECT max(customer_id) FROM customers").fetchall()[0][0]
        r = round_number
        deleted = con.execute(
            f"DELETE FROM customers WHERE customer_id % 1000 = {(r * 7) % 1000}"
        ).fetchall()[0][0]
        updated = con.execute(
            f"UPDATE customers SET email = 'moved{r}.' || email WHERE customer_id % 200 = {r % 200}"
        ).fetchall()[0][0]
        inserted = con.execute(
            f"""INSERT INTO customers
            SELECT {start} + i, 'New', 'Customer ' || i, 'new{r}_' || i || '@example.com', NULL,
                   30, true, 0, current_date, current_localtimestamp(), 'FR', NULL
            FROM range(1, 101) AS t(i)"""
        ).fetchall()[0][0]
    finally:
        con.close()
    return {"updated": updated, "inserted": inserted, "deleted": deleted}


def describe_changes(changes: dict[str, int]) -> str:
    return (
        f"{changes['updated']:,} customers changed e-mail, {changes['inserted']:,} signed up, "
        f"{changes['deleted']:,} left (three separate sets of customers)"
    )
