"""YAML configuration: load, expand ``${VAR}``, validate into ``ProviderConfig``\\ s, dump back masked."""

from .expand import MissingVariable, expand_env
from .loader import dump_config, infer_type, load_config, parse_config
from .pipeline_options import build_pipeline, pipeline_options
from .schema import (
    CircuitBreakerSettings,
    ConnectionSettings,
    CredentialSettings,
    LLMConfig,
    MiddlewareSettings,
    ModelPriceSettings,
    ProviderEntry,
    RateLimitSettings,
    RetrySettings,
    Secret,
    TimeoutSettings,
    parse_duration,
)

__all__ = [
    "CircuitBreakerSettings",
    "ConnectionSettings",
    "CredentialSettings",
    "LLMConfig",
    "MiddlewareSettings",
    "MissingVariable",
    "ModelPriceSettings",
    "ProviderEntry",
    "RateLimitSettings",
    "RetrySettings",
    "Secret",
    "TimeoutSettings",
    "build_pipeline",
    "dump_config",
    "expand_env",
    "infer_type",
    "load_config",
    "parse_config",
    "parse_duration",
    "pipeline_options",
]
