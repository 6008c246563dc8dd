"""Provider factories by type, and the registry of named providers built from configurations."""

from .factories import (
    FactoryTable,
    ProviderFactory,
    ProviderPlan,
    create_provider,
    get_factory,
    list_factories,
    register_factory,
    unregister_factory,
)
from .registry import ProviderDisabledError, Registry, UnknownProviderError

__all__ = [
    "FactoryTable",
    "ProviderDisabledError",
    "ProviderFactory",
    "ProviderPlan",
    "Registry",
    "UnknownProviderError",
    "create_provider",
    "get_factory",
    "list_factories",
    "register_factory",
    "unregister_factory",
]
