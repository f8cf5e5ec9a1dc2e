"""Finding add-ins: the ``pacsd.addins`` entry-point group and the ``addin_paths`` folders.

Discovery only names what can be loaded; code is imported when the manager loads an
add-in, so one broken package cannot stop the others from being listed. Every load of
a file-based add-in imports the file afresh, which is what makes reload pick up code
changed on disk.
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from types import ModuleType

from pacsd.addin import Addin

ENTRY_POINT_GROUP = "pacsd.addins"

_fresh = itertools.count(1)


class AddinLoadError(Exception):
    """An add-in could not be imported, instantiated or started."""


@dataclass(frozen=True, slots=True)
class AddinSource:
    """Where an add-in comes from, before it is imported."""

    name: str
    #: Human-readable origin: ``entry-point:pkg.mod:Class`` or ``path:/abs/file.py``.
    origin: str
    entry_point: EntryPoint | None = None
    path: Path | None = None

    def load_class(self, fresh: bool = False) -> type[Addin]:
        """Import the add-in class; ``fresh`` re-reads its code from disk (reload)."""
        try:
            obj = self._import(fresh)
        except AddinLoadError:
            raise
        except Exception as exc:
            raise AddinLoadError(f"cannot import {self.origin}: {exc!r}") from exc
        if not (isinstance(obj, type) and issubclass(obj, Addin)):
            raise AddinLoadError(f"{self.origin} is not a pacsd.addin.Addin subclass")
        return obj

    def _import(self, fresh: bool) -> object:
        if self.entry_point is not None:
            if fresh:
                module = sys.modules.get(self.entry_point.module)
                if module is not None:
                    importlib.reload(module)
            return self.entry_point.load()
        assert self.path is not None
        return addin_class_in(import_path(self.path), self.origin)


def import_path(path: Path) -> ModuleType:
    """Import a .py file or a package folder under a new module name every time."""
    target = path / "__init__.py" if path.is_dir() else path
    if not target.is_file():
        raise AddinLoadError(f"no add-in at {path}")
    module_name = f"pacsd_addin_{path.stem}_{next(_fresh)}"
    spec = importlib.util.spec_from_file_location(
        module_name,
        target,
        submodule_search_locations=[str(path)] if path.is_dir() else None,
    )
    if spec is None or spec.loader is None:
        raise AddinLoadError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def addin_class_in(module: ModuleType, origin: str) -> type[Addin]:
    """The module's add-in: ``ADDIN = Class`` if set, else its one Addin subclass."""
    explicit = getattr(module, "ADDIN", None)
    if explicit is not None:
        return explicit
    found = [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type)
        and issubclass(obj, Addin)
        and obj is not Addin
        and obj.__module__ == module.__name__
    ]
    if len(found) != 1:
        raise AddinLoadError(
            f"{origin} defines {len(found)} Addin subclasses; define one or set ADDIN = Class"
        )
    return found[0]


def path_source(path: Path) -> AddinSource:
    """A source for a file or package; named after the file (``example.py`` -> example)."""
    path = path.resolve()
    return AddinSource(path.stem, f"path:{path}", path=path)


def _folder_sources(folders: Iterable[Path]) -> list[AddinSource]:
    sources = []
    for folder in folders:
        if not folder.is_dir():
            continue
        for entry in sorted(folder.iterdir()):
            if entry.name.startswith(("_", ".")):
                continue
            if (entry.suffix == ".py" and entry.is_file()) or (entry / "__init__.py").is_file():
                sources.append(path_source(entry))
    return sources


def discover(addin_paths: Iterable[Path] = ()) -> dict[str, AddinSource]:
    """Every add-in installed through the entry-point group or found in ``addin_paths``.

    An entry point wins over a file of the same name.
    """
    found: dict[str, AddinSource] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, AddinSource(ep.name, f"entry-point:{ep.value}", ep))
    for source in _folder_sources(addin_paths):
        found.setdefault(source.name, source)
    return found
