"""`{{ env.X }}` in model SQL and segment filters: which variables may end up in a query.

SQL text does not stay private: it runs in DuckDB, its results are stored in the warehouse
and exported in every row (`'{{ env.TOKEN }}' AS c`), and the model's SQL is its description
in the Dagster UI. So SQL and filters are rendered apart from the rest of a `defs.yaml`:

- only variables named `AZEXPORT_SQL_*` may be read: putting a value into SQL is a decision
  made where the variable is named, and no credential of the machine can slip in by a typo;
- never a variable that a destination or a webhook of the same file reads as a secret (and a
  secret may not be named `AZEXPORT_SQL_*`, see `config.SecretRef`);
- with Jinja's sandbox, so `env.__class__...` cannot reach `os.environ` another way.

Everything else in the file is rendered by Dagster as usual.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from azexport_assets.config import SQL_VARIABLE_PREFIX

# The fields whose text DuckDB runs: (object kind, field).
SQL_FIELDS = (("models", "sql"), ("segments", "filter"))

_MISSING = object()
# Attributes Jinja's sandbox looks up on anything it calls (`env('X')`): not variables.
_JINJA_PROBES = frozenset({"unsafe_callable", "alters_data"})


class SqlTemplateError(ValueError):
    """A template in SQL that may not be rendered; the message says what and why."""


class _SqlEnv:
    """The `env` of SQL templates: `env.X` and `env('X', default)`, allowed names only."""

    def __init__(self, secrets: Mapping[str, str]) -> None:
        self._secrets = dict(secrets)

    def __call__(self, key: str, default: Any = _MISSING) -> str:
        return self._read(str(key), default)

    def __getattr__(self, key: str) -> str:
        if key.startswith(("_", "jinja")) or key in _JINJA_PROBES:  # nothing private
            raise AttributeError(key)
        return self._read(key, _MISSING)

    def _read(self, key: str, default: Any) -> str:
        if key in self._secrets:
            raise SqlTemplateError(
                f"reads environment variable {key}, which {self._secrets[key]} reads as a "
                "secret; a value in SQL reaches the warehouse, exported rows and the UI"
            )
        if not key.startswith(SQL_VARIABLE_PREFIX):
            raise SqlTemplateError(
                f"reads environment variable {key}; SQL and filters may only read variables "
                f"named {SQL_VARIABLE_PREFIX}* (a value in SQL reaches the warehouse, exported "
                f"rows and the UI, so no other variable of the machine may slip in): name it "
                f"{SQL_VARIABLE_PREFIX}{key}"
            )
        value = os.environ.get(key)
        if value is None:
            if default is _MISSING:
                raise SqlTemplateError(
                    f"reads environment variable {key}, which is not set; set it, or give a "
                    f"default: {{{{ env('{key}', 'value') }}}}"
                )
            return str(default)
        return value


def secret_in_templates(
    raw: Any, secrets: Mapping[str, str], path: tuple[str | int, ...] = ()
) -> tuple[tuple[str | int, ...], str] | None:
    """The first (path, message) of a template outside SQL that names one of the file's
    secrets (rendered by Dagster, it would copy the value into the configuration, the UI or a
    blob name); None when there is none. Secrets stay `{env: VAR}`, read at run time."""
    if isinstance(raw, Mapping):
        items: Iterable[tuple[str | int, Any]] = raw.items()
    elif isinstance(raw, list | tuple):
        items = enumerate(raw)
    else:
        if isinstance(raw, str) and "{" in raw:
            for name, reader in secrets.items():
                if re.search(rf"\b{re.escape(name)}\b", raw):
                    return path, (
                        f"the template reads environment variable {name}, which {reader} "
                        "reads as a secret: name secrets with {env: VAR} only, never in a "
                        "template (its value would be copied into the configuration and the UI)"
                    )
        return None
    for key, value in items:
        found = secret_in_templates(value, secrets, (*path, key))
        if found is not None:
            return found
    return None


_ENVIRONMENT = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)


def render_sql(text: str, secrets: Mapping[str, str]) -> str:
    """`text` with its templates rendered under the rules above.

    `secrets` maps each secret variable name to what reads it ("destination 'crm'"), for
    the message. Raises SqlTemplateError."""
    if "{{" not in text and "{%" not in text and "{#" not in text:
        return text  # no template: nothing to render, and no Jinja parse of plain SQL
    try:
        return _ENVIRONMENT.from_string(text).render(env=_SqlEnv(secrets))
    except SqlTemplateError:
        raise
    except jinja2.TemplateError as error:
        raise SqlTemplateError(f"has a template that cannot be rendered: {error}") from None


def secret_variables(raw: Mapping[str, Any]) -> dict[str, str]:
    """The variables a file's (unrendered) attributes read as secrets, with who reads them:
    every `{env: VAR}` of a destination or of a source in Azure, and every activation's
    `webhook_url_env` and `encryption.pgp_public_key`."""
    found: dict[str, str] = {}
    for name, destination in _mapping(raw.get("destinations")).items():
        principal = _mapping(_mapping(destination).get("service_principal"))
        for ref in _env_refs([*_mapping(destination).values(), *principal.values()]):
            found.setdefault(ref, f"destination '{name}'")
    for name, source in _mapping(raw.get("sources")).items():
        for ref in _env_refs(_mapping(source).values()):
            found.setdefault(ref, f"source '{name}'")
    for name, activation in _mapping(raw.get("activations")).items():
        webhook = _mapping(_mapping(activation).get("warnings")).get("webhook_url_env")
        if isinstance(webhook, str):
            found.setdefault(webhook, f"activation '{name}' (webhook_url_env)")
        encryption = _mapping(_mapping(activation).get("encryption"))
        for ref in _env_refs([encryption.get("pgp_public_key")]):
            found.setdefault(ref, f"activation '{name}' (encryption.pgp_public_key)")
    return found


def _env_refs(values: Iterable[Any]) -> list[str]:
    return [
        v["env"]
        for v in values
        if isinstance(v, Mapping) and set(v) == {"env"} and isinstance(v["env"], str)
    ]


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
