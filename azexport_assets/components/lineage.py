"""What an object depends on: upstream models, and the sources a step must attach.

A model materialized as a view is read through: whoever reads it (a segment, another model, an
activation's delta and export) needs the sources it reads attached on its connection.
"""

from __future__ import annotations

from azexport_assets.config import SourceConfig
from azexport_assets.introspect import ProjectShape
from azexport_assets.project import Project


def upstream_models(project: Project, shape: ProjectShape, model: str) -> list[str]:
    """The model and every model it reads, transitively."""
    seen: list[str] = []
    pending = [model]
    while pending:
        current = pending.pop()
        if current not in seen:
            seen.append(current)
            pending += list(shape.deps[current].models)
    return seen


def is_view(project: Project, model: str) -> bool:
    return project.models[model].materialized == "view"


def sources_to_attach(
    project: Project, shape: ProjectShape, reads: list[str], own: list[str] = ()
) -> dict[str, SourceConfig]:
    """The sources a step must attach: `own` (what its SQL names itself) plus those of every
    view model it reads through (`reads`: models read directly), transitively."""
    names = list(own)
    pending = [m for m in reads if is_view(project, m)]
    seen: set[str] = set()
    while pending:
        model = pending.pop()
        if model in seen:
            continue
        seen.add(model)
        names += [source for source, _ in shape.deps[model].source_tables]
        pending += [m for m in shape.deps[model].models if is_view(project, m)]
    return {name: project.sources[name] for name in dict.fromkeys(names)}
