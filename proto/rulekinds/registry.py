"""Which rule kinds exist: the built-ins, plus plug-ins found through the ``stormalert.rules``
entry-point group. Loaded by ``proto``, so the CLI and web validate a plug-in kind's params
without importing the engine.

A plug-in distribution declares, in its pyproject.toml::

    [project.entry-points."stormalert.rules"]
    gap_up = "my_pkg.gap:KIND"          # the entry point's name is the kind's name

where ``KIND`` is a ``proto.rulekinds.RuleKind``. Plug-ins load once per process, on first
use. A plug-in that fails to import or does not honour the interface is rejected with one
log line and the process carries on without it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from pydantic import BaseModel

from proto.rulekinds.api import RuleKind, RuleKindError, check_kind

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "stormalert.rules"


def _origin(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    where = f" from {dist.name} {dist.version}" if dist is not None else ""
    return f"{ep.name} = {ep.value}{where}"


class Registry:
    """Kind name -> params model, and for plug-ins the whole RuleKind."""

    def __init__(self, builtin: Mapping[str, type[BaseModel]],
                 group: str = ENTRY_POINT_GROUP) -> None:
        self.builtin = dict(builtin)
        self.group = group
        self.rejected: dict[str, str] = {}  # entry point name -> why it was not loaded
        self._plugins: dict[str, RuleKind[Any]] | None = None
        self._loading: dict[str, RuleKind[Any]] | None = None  # while load_plugins runs
        self._loader = 0  # the thread running load_plugins
        self._lock = threading.RLock()

    @property
    def plugins(self) -> Mapping[str, RuleKind[Any]]:
        """Plug-in kinds by name, loaded on first use. A plug-in that looks kinds up while it
        is being imported sees those loaded before it."""
        loading = self._loading
        if loading is not None and self._loader == threading.get_ident():
            return loading
        plugins = self._plugins
        if plugins is None:
            with self._lock:
                if self._plugins is None:
                    self.load_plugins()
                plugins = self._plugins
                assert plugins is not None
        return plugins

    def params_model(self, kind: str) -> type[BaseModel] | None:
        model = self.builtin.get(kind)
        if model is not None:
            return model
        plugin = self.plugins.get(kind)
        return plugin.params if plugin is not None else None

    def names(self) -> list[str]:
        return sorted({*self.builtin, *self.plugins})

    def load_plugins(self) -> None:
        """(Re)read the entry-point group; each plug-in is loaded or rejected with one line."""
        with self._lock:
            plugins: dict[str, RuleKind[Any]] = {}
            rejected: dict[str, str] = {}
            self._loading, self._loader = plugins, threading.get_ident()
            try:
                for ep in entry_points(group=self.group):
                    try:
                        kind = self._admit(ep, plugins)
                    except RuleKindError as exc:
                        reason = str(exc)
                    except (Exception, SystemExit) as exc:  # a broken import must not stop us
                        reason = f"import failed: {type(exc).__name__}: {exc}"
                    else:
                        plugins[kind.name] = kind
                        log.info("rule plug-in %s loaded", _origin(ep))
                        continue
                    rejected[ep.name] = reason
                    log.error("rule plug-in %s rejected: %s", _origin(ep), reason)
            finally:
                self._loading = None
            self._plugins, self.rejected = plugins, rejected

    def _admit(self, ep: EntryPoint, taken: Mapping[str, RuleKind[Any]]) -> RuleKind[Any]:
        if ep.name in self.builtin:
            raise RuleKindError(f"{ep.name!r} is a built-in kind")
        if ep.name in taken:
            raise RuleKindError(f"another plug-in already provides {ep.name!r}")
        return check_kind(ep.load(), expected_name=ep.name)
