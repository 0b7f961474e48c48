"""The catalogue: every flow and mapping of the folders given, ready to write as pages.

A folder given is a flows folder (flow files directly inside), a folder with
a ``flows/`` folder, or a folder whose subfolders hold ``flows/`` folders
(``examples/`` finds ``examples/*/flows``). Each flows folder is loaded like
``lobflows validate`` loads it, every problem named with file and line, but
without reading the environment: the catalogue needs a connection's type,
never its address, so it can be built where no connection is configured.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from lobflows import errors
from lobflows.docs import integration_map as maps
from lobflows.spec import loader, mappings, models

FLOWS_FOLDER = "flows"
T = TypeVar("T")


@dataclass(frozen=True)
class Folder:
    """One flows folder: where it is, its short name, and what it holds."""

    path: Path
    label: str  # short name, e.g. onboarding for examples/onboarding/flows
    shown: str  # the path as pages show it, relative, e.g. examples/onboarding/flows
    project: loader.Project


@dataclass(frozen=True)
class FlowEntry:
    """A flow of the catalogue and the name of its page (without .md)."""

    folder: Folder
    loaded: loader.LoadedFlow
    page: str

    @property
    def spec(self) -> models.Flow:
        return self.loaded.spec

    @property
    def name(self) -> str:
        return self.loaded.name

    @property
    def file_name(self) -> str:
        return Path(self.loaded.path).name


@dataclass(frozen=True)
class MappingEntry:
    """A named mapping of the catalogue and the name of its page (without .md)."""

    folder: Folder
    loaded: mappings.LoadedMapping
    page: str

    @property
    def spec(self) -> mappings.MappingSpec:
        return self.loaded.spec

    @property
    def name(self) -> str:
        return self.loaded.name

    @property
    def file_name(self) -> str:
        return Path(self.loaded.path).name


@dataclass(frozen=True)
class Catalogue:
    """Every folder, flow and mapping to document, in a stable order."""

    folders: tuple[Folder, ...]
    flows: tuple[FlowEntry, ...]
    mappings: tuple[MappingEntry, ...]

    def flow(self, folder: Folder, name: str) -> FlowEntry | None:
        """The flow of that name in that folder, e.g. the target of a subflow step."""
        return next(
            (e for e in self.flows if e.folder is folder and e.name == name), None
        )

    def mapping(self, folder: Folder, name: str) -> MappingEntry | None:
        return next(
            (e for e in self.mappings if e.folder is folder and e.name == name), None
        )

    def mapping_users(self, entry: MappingEntry) -> list[tuple[FlowEntry, str]]:
        """The flows, with the step, whose transform steps use a mapping."""
        users = []
        for flow in self.flows:
            if flow.folder is not entry.folder:
                continue
            for step in models.walk_steps(flow.spec.steps):
                if (
                    isinstance(step, models.TransformStep)
                    and step.transform.mapping == entry.name
                ):
                    users.append((flow, step.id or "transform"))
        return users

    def mapping_parents(self, entry: MappingEntry) -> list[MappingEntry]:
        """The mappings that apply this one to each element of a list (`each`)."""
        return [
            other
            for other in self.mappings
            if other.folder is entry.folder
            and entry.name in mappings.nested_names(other.spec)
        ]

    def integration_map(self) -> maps.IntegrationMap:
        return maps.integration_map(
            (entry.spec, entry.folder.project.connections) for entry in self.flows
        )


def find_flow_folders(path: Path) -> list[Path]:
    """The flows folders a folder given on the command line stands for.

    Raises DefinitionError when there is none, saying what was looked for.
    """
    if not path.is_dir():
        raise errors.DefinitionError(f"{path} is not a folder")
    if loader.flow_files([path]):
        return [path]
    nested = path / FLOWS_FOLDER
    if nested.is_dir() and loader.flow_files([nested]):
        return [nested]
    found = sorted(
        child / FLOWS_FOLDER
        for child in path.iterdir()
        if (child / FLOWS_FOLDER).is_dir() and loader.flow_files([child / FLOWS_FOLDER])
    )
    if not found:
        raise errors.DefinitionError(
            f"no flows in {path}: expected flow files (*.yaml) in it, a flows/ "
            "folder, or subfolders holding flows/ folders (like examples/*/flows)"
        )
    return found


def load_folder(path: Path, *, given: Path | None = None) -> Folder:
    """Load one flows folder; FlowFileError lists every problem in it."""
    problems: list[errors.Problem] = []
    flows = _load_flows(path, problems)
    connections = _declared_connections(path / loader.CONNECTIONS_FILE, problems)
    roles = _attempt(lambda: loader.load_roles(path / loader.ROLES_FILE), problems)
    named = _attempt(lambda: loader.load_mappings(path), problems)
    if problems:
        raise errors.FlowFileError(str(path), problems)

    project = loader.Project(
        flows=flows,
        connections=connections,
        roles=roles or {},
        mappings=named or {},
    )
    return Folder(
        path=path,
        label=_label(path),
        shown=shown_path(path, given or path),
        project=project,
    )


def assemble(folders: Iterable[Folder]) -> Catalogue:
    """The catalogue of loaded folders: page names unique across folders."""
    folders = _unique_labels(list(folders))
    flow_names = [n for f in folders for n in f.project.flows]
    mapping_names = [n for f in folders for n in f.project.mappings]
    flows = tuple(
        FlowEntry(folder, loaded, _page(folder, name, flow_names))
        for folder in folders
        for name, loaded in sorted(folder.project.flows.items())
    )
    named = tuple(
        MappingEntry(folder, loaded, _page(folder, name, mapping_names))
        for folder in folders
        for name, loaded in sorted(folder.project.mappings.items())
    )
    return Catalogue(folders=tuple(folders), flows=flows, mappings=named)


def shown_path(path: Path, given: Path) -> str:
    """A path as pages show it: relative to here, else to the folder given."""
    resolved = path.resolve()
    for base in (Path.cwd().resolve(), given.resolve().parent):
        try:
            return resolved.relative_to(base).as_posix() or "."
        except ValueError:
            continue
    return path.name


def _load_flows(
    path: Path, problems: list[errors.Problem]
) -> dict[str, loader.LoadedFlow]:
    flows: dict[str, loader.LoadedFlow] = {}
    for file in loader.flow_files([path]):
        try:
            loaded = loader.load_flow_file(file)
        except errors.FlowFileError as exc:
            problems.extend(exc.problems)
            continue
        if loaded.name in flows:
            first = flows[loaded.name].path
            problems.append(
                errors.Problem(
                    path=str(file),
                    line=1,
                    field="flow",
                    message=f"flow {loaded.name!r} is also defined in {first}",
                )
            )
            continue
        flows[loaded.name] = loaded
    return flows


def _declared_connections(
    path: Path, problems: list[errors.Problem]
) -> dict[str, dict[str, Any]]:
    """Each connection's declared settings, ``${VAR}`` references left unread."""
    if not path.exists():
        return {}
    try:
        document, _ = loader.parse_yaml(path.read_text(encoding="utf-8"), str(path))
    except errors.FlowFileError as exc:
        problems.extend(exc.problems)
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(
            errors.Problem(
                path=str(path), line=None, field="", message=f"cannot read: {exc}"
            )
        )
        return {}
    declared = document.get("connections") if isinstance(document, dict) else None
    if not isinstance(declared, dict):
        problems.append(
            errors.Problem(
                path=str(path),
                line=1,
                field="connections",
                message="expected a mapping of connection name to settings",
            )
        )
        return {}
    return {
        str(name): settings if isinstance(settings, dict) else {}
        for name, settings in declared.items()
    }


def _attempt(load: Callable[[], T], problems: list[errors.Problem]) -> T | None:
    try:
        return load()
    except errors.FlowFileError as exc:
        problems.extend(exc.problems)
        return None


def _label(path: Path) -> str:
    resolved = path.resolve()
    if resolved.name == FLOWS_FOLDER and resolved.parent.name:
        return resolved.parent.name
    return resolved.name or "flows"


def _unique_labels(folders: list[Folder]) -> list[Folder]:
    seen: dict[str, int] = {}
    unique = []
    for folder in folders:
        count = seen.get(folder.label, 0) + 1
        seen[folder.label] = count
        if count > 1:
            folder = Folder(
                path=folder.path,
                label=f"{folder.label}-{count}",
                shown=folder.shown,
                project=folder.project,
            )
        unique.append(folder)
    return unique


def _page(folder: Folder, name: str, all_names: list[str]) -> str:
    """The page name: the flow's or mapping's name, with its folder when shared."""
    if all_names.count(name) == 1:
        return name
    return f"{re.sub(r'[^A-Za-z0-9_-]+', '-', folder.label)}--{name}"
