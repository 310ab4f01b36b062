"""Prepare a DAGSTER_HOME before anything runs in it.

Dagster creates its SQLite storage (tables `runs`, `event_logs`, ...) the first time an
instance opens a folder. Several processes opening a fresh folder at the same moment (CLI
runs, a webserver and a daemon) race on that schema set-up and some of them fail. Creating
the storage once, before starting any of them, avoids it: that is what `prepare_dagster_home`
does (the same as `dagster instance migrate`).
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import dagster as dg

# No telemetry (the demo must not phone home), a run queue read every second, no capture of
# raw step output, and one run per activation (a waiting run shows as queued in the UI). No
# pool limit: in Dagster 1.13 a step waiting for a pool slot can miss the slot's release for
# good (it checks for a free slot, the holder frees it, then the step queues itself unassigned)
# and its run then spins a core forever; the warehouse's file lock already lets one writer in
# at a time (docs/operating.md).
DEFAULT_DAGSTER_YAML = """\
telemetry:
  enabled: false
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    # A queued run starts within about a second (Dagster's default polls every 5 s).
    dequeue_interval_seconds: 1
    dequeue_use_threads: true
    dequeue_num_workers: 4
# A run whose worker died is failed and retried (same logical time, same blobs), see
# docs/operating.md; runs that do not start or stop within 3 minutes are failed. A run whose
# code server died with it (dagster dev killed) is failed by the run watchdog sensor.
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  cancel_timeout_seconds: 180
  max_resume_run_attempts: 0
  poll_interval_seconds: 30
run_retries:
  enabled: true
  max_retries: 2
  retry_on_asset_or_op_failure: false
concurrency:
  runs:
    tag_concurrency_limits:
      - key: azexport/activation
        value:
          applyLimitPerUniqueValue: true
        limit: 1
# Every message of a step is in the event log; raw stdout/stderr is not captured, which spares
# each run four helper processes (two `tail`, two Python watchers: about 0.3 s per run on two
# cores). docs/operating.md, "Step output", shows how to capture it.
compute_logs:
  module: dagster.core.storage.noop_compute_log_manager
  class: NoOpComputeLogManager
"""

# Every run's events in one SQLite database (Dagster's ConsolidatedSqliteEventLogStorage),
# not one new database per run: Dagster's default creates each run's file on its first event
# and stamps it with Alembic after reading its 89 migration scripts, about 0.2 s of every run
# on two cores (docs/operating.md, "What a run costs besides its data"). Runs and schedules
# keep Dagster's default SQLite files.
EVENT_LOG_YAML = """\
event_log_storage:
  module: dagster.core.storage.event_log
  class: ConsolidatedSqliteEventLogStorage
  config:
    base_dir: {base_dir}
"""


def event_log_dir(home: Path) -> Path:
    """Where the instance the project writes keeps every run's events (event_log.db)."""
    return home / "history" / "events"


def dagster_yaml(home: Path) -> str:
    """The dagster.yaml the project writes for a SQLite instance in `home` (an absolute path,
    as Dagster reads `base_dir` as given)."""
    base_dir = json.dumps(str(event_log_dir(home.resolve())))  # a JSON string is YAML
    return DEFAULT_DAGSTER_YAML + EVENT_LOG_YAML.format(base_dir=base_dir)


def prepare_dagster_home(home: Path) -> Path:
    """Create `home` with a dagster.yaml (kept if present) and its storage schema, once."""
    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(dagster_yaml(home))
    # upgrade() is idempotent: it creates missing tables and applies pending migrations.
    # It prints progress lines and bars of no interest here.
    with (
        dg.DagsterInstance.from_config(str(home)) as instance,
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        instance.upgrade()
    return home
