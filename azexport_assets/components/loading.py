"""The whole project from Dagster's component tree, validated once per code-location load.

Dagster reads and templates every `defs.yaml` (one YAML reader for the code location, the
tests and the scripts). Names are global and references cross folders, so the checks that
need every file (duplicates, references, SQL bound in DuckDB) run on the set of loaded
AzureExport components, once: the first component to build its definitions validates the
project and hands the result to all the others of the same tree.
"""

from __future__ import annotations

import contextlib
import hashlib
import sys
import types
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
import pydantic
import yaml
from dagster._utils.warnings import BetaWarning, PreviewWarning

from azexport_assets.components.fast_yaml import use_libyaml_for_dagster_components
from azexport_assets.components.file_errors import not_utf8, unloadable_file
from azexport_assets.config import OBJECT_KINDS, ConfigError
from azexport_assets.introspect import ProjectShape, describe_project
from azexport_assets.project import DeclaredFile, Project, build_project

if TYPE_CHECKING:
    from azexport_assets.components.azure_export import AzureExport


@dataclass(frozen=True)
class ValidatedProject:
    """Every AzureExport of one component tree, merged and checked (SQL bound in DuckDB)."""

    project: Project
    shape: ProjectShape


def merge_components(components: Sequence[AzureExport], project_root: Path) -> Project:
    """Merge the loaded components' objects; ConfigError on clashes or dangling references."""
    files: list[DeclaredFile] = []
    for component in components:
        declared = component.declared_file()
        if declared is None:
            if any(getattr(component, kind) for kind in OBJECT_KINDS):
                raise ConfigError(
                    "an AzureExport built in Python has no defs.yaml to name in messages and "
                    "to build from: declare its objects in a defs.yaml under the defs folder"
                )
            continue  # `attributes:` left empty: nothing to merge
        if any(f.path == declared.path for f in files):
            # Each component builds the objects of its own file: one document per file.
            raise ConfigError(
                f"{_shown(str(declared.path), project_root)}: holds more than one AzureExport "
                "document; declare all objects of a folder in one document"
            )
        files.append(declared)
    files.sort(key=lambda f: str(f.path))  # stable messages: the first file in path order wins
    return build_project(files, project_root)


# The project each project root's last load validated (load_cache.py compares its sources).
_last_validated: dict[Path, Project] = {}


def validate_components(components: Sequence[AzureExport], project_root: Path) -> ValidatedProject:
    project = merge_components(components, project_root)
    validated = ValidatedProject(project=project, shape=describe_project(project))
    _last_validated[project_root.resolve()] = project
    return validated


def last_validated(project_root: Path) -> Project | None:
    """The project the last load under `project_root` validated in this process, if any."""
    return _last_validated.get(project_root.resolve())


def component_tree(defs_root: Path, project_root: Path) -> dg.ComponentTree:
    """Dagster's component tree over any defs folder (the project's, or a test's temp one)."""
    use_libyaml_for_dagster_components()  # the same reading, a tenth of the time
    defs_root = defs_root.resolve()
    # The folder becomes a package so that Python files in it (if any) import as in a project.
    name = "azexport_defs_" + hashlib.sha1(str(defs_root).encode()).hexdigest()[:12]
    module = sys.modules.get(name)
    if module is None:
        module = types.ModuleType(name)
        module.__path__ = [str(defs_root)]
        module.__file__ = None
        sys.modules[name] = module
    return dg.ComponentTree.from_module(defs_module=module, project_root=project_root)


def tree_definitions(tree: dg.ComponentTree, with_catalog: bool) -> dg.Definitions:
    """The definitions of every component under the tree's defs folder; `with_catalog` adds
    Dagster's catalog of the installed component types (repository metadata the UI's
    component pages read from a code server). The catalog is a JSON schema of every installed
    component type, 0.1-0.2 s per process, so only a load that serves the code location
    builds it (`load_cache.serves_code_location`)."""
    if with_catalog:
        return tree.build_defs()  # the root: the defs folder plus the catalog
    return tree.build_defs(tree.defs_module_path)


def azure_exports(tree: dg.ComponentTree) -> list[AzureExport]:
    """Every AzureExport component of the tree (loading them if not loaded yet)."""
    from azexport_assets.components.azure_export import AzureExport

    return tree.get_all_components(of_type=AzureExport)


def load_project_from_folder(defs_root: Path, project_root: Path) -> Project:
    """Every AzureExport defs.yaml under defs_root, loaded by Dagster and merged."""
    with config_errors_first(project_root, defs_root):
        components = azure_exports(component_tree(defs_root, project_root))
        return merge_components(components, project_root)


def definitions_from_folder(defs_root: Path, project_root: Path) -> dg.Definitions:
    """What the code location builds from defs_root: each component's own definitions (kept
    for the process while nothing they were built from changes, see load_cache.py)."""
    from azexport_assets.components.load_cache import cached_definitions

    def build(with_catalog: bool) -> dg.Definitions:
        with config_errors_first(project_root, defs_root):
            return tree_definitions(component_tree(defs_root, project_root), with_catalog)

    return cached_definitions(defs_root, build, lambda: last_validated(project_root))


def _shown(file: str, project_root: Path | None) -> str:
    path = Path(file)
    if project_root is not None and path.is_absolute():
        with contextlib.suppress(ValueError):
            return str(path.relative_to(project_root.resolve()))
    return file


def _chain(error: BaseException) -> Iterator[BaseException]:
    """`error`, then its causes and contexts, each once."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        yield current
        seen.add(id(current))
        current = current.__cause__ or current.__context__


def as_config_error(error: BaseException, project_root: Path | None = None) -> ConfigError | None:
    """The user's problem behind Dagster's wrappers (component tree errors), as one
    ConfigError: ours, a YAML syntax error, or Dagster's own check of a defs.yaml's layout."""
    for current in _chain(error):
        if isinstance(current, ConfigError):
            return current
        if isinstance(current, yaml.MarkedYAMLError) and current.problem_mark is not None:
            mark = current.problem_mark
            where = f"{_shown(mark.name, project_root)}:{mark.line + 1}:{mark.column + 1}"
            context = f" ({current.context})" if current.context else ""
            return ConfigError(f"{where}: not valid YAML: {current.problem}{context}")
        if isinstance(current, pydantic.ValidationError):
            lines = []
            for err in current.errors():
                # Dagster's located errors read 'attributes.x at /path/defs.yaml:12'.
                path, _, position = ".".join(str(p) for p in err["loc"]).rpartition(" at ")
                if not path and ".yaml:" in position:  # a whole document, e.g. an empty one
                    lines.append(
                        f"{_shown(position, project_root)}: this YAML document is not a component "
                        f"({err['msg']}): a document needs `type:` and `attributes:`; remove an "
                        "empty one (a stray `---`)"
                    )
                    continue
                where = _shown(position, project_root) if path else "defs.yaml"
                lines.append(f"{where}: field '{path or position}': {err['msg']}")
            return ConfigError("\n".join(lines))
    return None


@contextlib.contextmanager
def config_errors_first(
    project_root: Path | None = None, defs_root: Path | None = None
) -> Iterator[None]:
    """Re-raise a configuration error on its own, so its one line (file:line, object, field)
    is the first thing users read instead of the last line under Dagster's load tracebacks.

    While loading, Dagster's notices about its own beta and preview APIs, which its component
    loader uses for every defs.yaml, are not shown: they name Dagster internals users cannot
    act on, and repeat in every run's output (dozens of lines). Other warnings pass."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=BetaWarning, module=r"dagster(\.|$)")
            warnings.filterwarnings("ignore", category=PreviewWarning, module=r"dagster(\.|$)")
            yield
    except ConfigError:
        raise
    except Exception as error:

        def shown(path: Path) -> str:
            return _shown(str(path), project_root)

        undecodable = next((e for e in _chain(error) if isinstance(e, UnicodeDecodeError)), None)
        if undecodable is not None and defs_root is not None:
            raise ConfigError(not_utf8(undecodable, defs_root, shown)) from None
        found = as_config_error(error, project_root)
        if found is None and defs_root is not None:
            # Dagster names no file for an empty one or a type it cannot import: find it.
            found = unloadable_file(defs_root, shown)
        if found is None:
            raise
        raise ConfigError(str(found)) from None
