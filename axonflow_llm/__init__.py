"""axonflow-llm: call LLM providers reliably through a middleware pipeline."""

from .pipeline import *  # noqa: F403
from .pipeline import __all__ as _pipeline_all

__version__ = "0.1.0"

__all__ = [*_pipeline_all, "__version__"]
