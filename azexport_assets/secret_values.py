"""Secrets kept out of a step's failure, whatever raised it.

Each place that talks to a database or a storage account translates its own errors without
the secrets it used. This is the last line behind them: a step's error (and the errors it
was raised from) is checked for the values of every `{env: VAR}` the project names and for
inline passwords, keys and signatures; if one is found, the step fails with the same text,
those values replaced by `***`, and without the original chain (whose messages and
tracebacks would otherwise be stored in the run's event log).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import BaseModel

from azexport_assets.config import SecretRef
from azexport_assets.warehouse.settings import without_secrets

if TYPE_CHECKING:
    from azexport_assets.project import Project

# Shorter values (a port, "true") would blank out ordinary words of a message.
_SHORTEST_SECRET = 6


# `{env: VAR}` fields that name where or who, not a secret: their values (an account's URL,
# a tenant id) are shown in messages on purpose.
_NOT_SECRET = frozenset(
    {
        "account_url",
        "tenant_id",
        "client_id",
        "certificate_path",
        "authority_host",
        "pgp_public_key",
    }
)


def _secret_refs(value: Any) -> Iterator[str]:
    """The variable names of the SecretRef fields of a configuration object, at any depth."""
    if isinstance(value, SecretRef):
        yield value.env
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            if name not in _NOT_SECRET:
                yield from _secret_refs(getattr(value, name))
    elif isinstance(value, dict):
        for item in value.values():
            yield from _secret_refs(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _secret_refs(item)


def project_secret_values(project: Project) -> list[str]:
    """The current values of the variables the project's `{env: VAR}` fields name, longest
    first (so a secret that contains another is replaced whole)."""
    names: set[str] = set()
    for objects in (project.sources, project.destinations, project.activations):
        for config in objects.values():
            names.update(_secret_refs(config))
    values = {os.environ.get(n, "") for n in names}
    return sorted((v for v in values if len(v) >= _SHORTEST_SECRET), key=len, reverse=True)


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )


def _text(error: BaseException) -> str:
    if isinstance(error, dg.Failure):
        return error.description or ""
    return str(error)


@contextmanager
def secrets_kept_out(project: Project) -> Iterator[None]:
    """Run a step's body; an error that quotes a secret is raised again without it."""
    try:
        yield
    except Exception as error:
        secrets = project_secret_values(project)
        chain = list(_chain(error))
        if all(without_secrets(_text(e), secrets) == _text(e) for e in chain):
            raise
        text = without_secrets(_text(error), secrets)
        if not isinstance(error, dg.Failure):
            text = f"{type(error).__name__}: {text}"
        raise dg.Failure(
            description=text,
            allow_retries=error.allow_retries if isinstance(error, dg.Failure) else True,
        ) from None
