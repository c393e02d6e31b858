"""Rule kinds: the versioned interface (``api``), the built-in params models (``builtin``)
and the registry that also finds plug-ins (``registry``). See docs/RULES.md."""

from proto.rulekinds.api import (
    API_VERSION,
    Evaluator,
    Params,
    Ref,
    RuleKind,
    RuleKindError,
    check_kind,
)
from proto.rulekinds.builtin import BUILTIN_PARAMS
from proto.rulekinds.registry import ENTRY_POINT_GROUP, Registry

REGISTRY = Registry(BUILTIN_PARAMS)
"""The process's registry: built-in kinds, and plug-ins loaded on first use."""

__all__ = [
    "API_VERSION",
    "BUILTIN_PARAMS",
    "ENTRY_POINT_GROUP",
    "REGISTRY",
    "Evaluator",
    "Params",
    "Ref",
    "Registry",
    "RuleKind",
    "RuleKindError",
    "check_kind",
]
