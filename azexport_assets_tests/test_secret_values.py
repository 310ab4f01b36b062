"""A step's error that quotes a secret is stored without it (the last line behind each
module's own translation): real DuckDB errors, raised in real Dagster runs."""

from __future__ import annotations

import dagster as dg
import duckdb
import pytest

from azexport_assets.project import Project, load_project
from azexport_assets.secret_values import project_secret_values, secrets_kept_out
from azexport_assets_tests.project_kit import ProjectKit

BODY = """\
models:
  people: {sql: "SELECT 1 AS id", primary_key: id}
activations:
  people_out: {source: people, destination: lake, file_name: people.csv}
"""


def _project(kit: ProjectKit) -> Project:
    kit.write_defs(BODY)
    return load_project(kit.root / "defs", kit.root)


def _failing_run(project: Project, statement: str) -> dg.ExecuteInProcessResult:
    @dg.asset
    def reads_a_file() -> None:
        with secrets_kept_out(project):
            try:
                duckdb.connect().execute(statement)
            except duckdb.Error as error:
                raise RuntimeError("while reading the file") from error

    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([reads_a_file], instance=instance, raise_on_error=False)
    assert not result.success
    return result


def _stored_text(result: dg.ExecuteInProcessResult) -> str:
    """Everything the run's event log holds, as stored."""
    return "\n".join(dg.serialize_value(event) for event in result.all_events)


def test_an_error_quoting_a_secret_is_stored_without_it(project: ProjectKit) -> None:
    loaded = _project(project)
    secret = project_secret_values(loaded)
    assert len(secret) == 1 and "sig=" in secret[0]  # the destination's SAS token
    # DuckDB quotes the pattern it could not read in its error.
    result = _failing_run(loaded, f"SELECT * FROM read_csv('/nowhere/{secret[0]}.csv')")
    failure = result.get_step_failure_events()[0].step_failure_data
    assert failure.error is not None
    assert "RuntimeError: while reading the file" in failure.error.message
    stored = _stored_text(result)
    assert secret[0] not in stored
    assert "sig=" not in stored.replace("sig=***", "")  # no signature, whole or in part
    assert failure.error.cause is None  # the chain, which quoted it, is not kept


def test_an_error_without_secrets_is_left_as_raised(project: ProjectKit) -> None:
    loaded = _project(project)
    result = _failing_run(loaded, "SELECT * FROM read_csv('/nowhere/plain.csv')")
    failure = result.get_step_failure_events()[0].step_failure_data
    assert failure.error is not None
    raised = failure.error.cause  # Dagster wraps what the step raised
    assert raised is not None and raised.cls_name == "RuntimeError"
    assert raised.cause is not None and "/nowhere/plain.csv" in raised.cause.message


@pytest.mark.parametrize(
    "text",
    [
        "host=db user=app password=s3cr3t-value dbname=crm",
        "postgresql://app:s3cr3t-value@db/crm",
    ],
)
def test_inline_passwords_are_replaced(project: ProjectKit, text: str) -> None:
    loaded = _project(project)
    result = _failing_run(loaded, f"SELECT * FROM read_csv('{text}')")
    assert "s3cr3t-value" not in _stored_text(result)
