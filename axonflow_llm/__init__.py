"""axonflow-llm: call LLM providers reliably through a middleware pipeline.

Everything public is importable from here. The layout says where it lives: ``pipeline`` (the core
contract), ``middleware`` (one concern per module), ``providers`` (the leaves), ``registry``, ``config``,
``routing``, and ``testing`` (fake clock, scripted handler, fake server; not imported here).
"""

from .config import LLMConfig, MissingVariable, Secret, dump_config, load_config, parse_config
from .middleware import *  # noqa: F403
from .middleware import __all__ as _middleware_all
from .pipeline import *  # noqa: F403
from .pipeline import __all__ as _pipeline_all
from .providers import *  # noqa: F403
from .providers import __all__ as _providers_all
from .registry import (
    ProviderDisabledError,
    Registry,
    UnknownProviderError,
    create_provider,
    get_factory,
    list_factories,
    register_factory,
    unregister_factory,
)
from .routing import Member, RoutedStream, Router, RoutingStrategy

__version__ = "0.1.0"

__all__ = [
    *_pipeline_all,
    *_middleware_all,
    *_providers_all,
    "LLMConfig",
    "Member",
    "MissingVariable",
    "ProviderDisabledError",
    "Registry",
    "RoutedStream",
    "Router",
    "RoutingStrategy",
    "Secret",
    "UnknownProviderError",
    "__version__",
    "create_provider",
    "dump_config",
    "get_factory",
    "list_factories",
    "load_config",
    "parse_config",
    "register_factory",
    "unregister_factory",
]
