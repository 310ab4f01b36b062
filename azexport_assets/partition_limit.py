"""The partition limit every partitioned export obeys, files and Delta tables alike.

Nothing here imports Dagster: the export (`export.py`) and the Delta writer (`lakehouse`) both
check the number of partitions a run writes before writing anything.
"""

from __future__ import annotations

from collections.abc import Sequence


class PartitionError(ValueError):
    """The run's partitions cannot be written: more than `max_partitions`, or values that make
    a blob name Azure refuses (too long). Found before anything is written, so no partition of
    the run is exported and the baseline stays."""


def check_partition_count(count: int, partition_by: Sequence[str], max_partitions: int) -> None:
    """At most `max_partitions` partitions in one run (Hive's dynamic-partition limit plays
    this role): a column with a value per row would make a folder and a file per row."""
    if count > max_partitions:
        columns = ", ".join(partition_by)
        raise PartitionError(
            f"partition_by [{columns}] gives {count:,} partitions in this run, more than "
            f"max_partitions ({max_partitions:,}); partition by a coarser column "
            "(e.g. a month instead of a day) or raise max_partitions. Nothing was written"
        )
