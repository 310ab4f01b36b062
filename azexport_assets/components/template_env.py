"""`{{ env.X }}` in a field other than SQL: an unset variable is an error, not "None".

Dagster's own `env.X` is None when X is unset, so `file_name: "{{ env.PREFIX }}/people"`
wrote to `None/people.csv`, and `container: "{{ env.CONTAINER }}"` failed with "Input should
be a valid string", naming no variable. Templates are rendered here with an `env` whose unset
variables are falsy placeholders: `{{ env.X or 'default' }}`, `{{ env.X | default('d') }}`
and `{% if env.X %}` work as before, and `{{ env('X', none) }}` still gives an explicit None;
a placeholder used as a value fails the template, and the caller names the variable.
"""

from __future__ import annotations

import os
from typing import Any

import jinja2
from dagster.components.resolved.scopes import EnvScope


class UnsetVariableError(Exception):
    """A template used the value of an environment variable that is not set."""

    def __init__(self, path: tuple[str | int, ...], names: list[str]) -> None:
        self.path = path
        self.names = names
        name = names[0]
        super().__init__(
            f"reads environment variable {name}, which is not set; set it (or put it in .env), "
            f"or give a default: {{{{ env('{name}', 'value') }}}}"
        )


class _UnsetVariable(jinja2.Undefined):
    """`env.X` for an unset X: falsy and a valid `default` input, but not a value."""

    __slots__ = ()

    def __str__(self) -> str:
        self._fail_with_undefined_error()
        return ""  # not reached


class StrictEnv(EnvScope):
    """Dagster's `env` scope, with unset variables as `_UnsetVariable` placeholders; the names
    of those read are kept in `unset`, for the message when the template then fails."""

    def __init__(self) -> None:
        self.unset: list[str] = []

    def __getattr__(self, key: str) -> Any:
        if key.startswith("jinja"):  # jinja probes its scope objects: not variables
            raise AttributeError(key)
        value = os.environ.get(key)
        if value is None:
            self.unset.append(key)
            return _UnsetVariable(hint=f"environment variable {key} is not set")
        return value
