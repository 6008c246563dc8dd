"""The leaves of the onion: the built-in providers, the HTTP base they share, auth, and custom providers."""

from .anthropic import AnthropicProvider
from .auth import APIKeyAuth, Auth, BasicAuth, BearerTokenAuth, ChainedAuth, NoAuth
from .azure_openai import AzureOpenAIProvider
from .bedrock import BedrockProvider
from .builder import ProviderBuilder
from .custom import CustomProvider
from .gemini import GeminiProvider
from .http_provider import HTTPProvider
from .ollama import OllamaProvider
from .openai import OpenAIProvider
from .transport import default_http_client

__all__ = [
    "APIKeyAuth",
    "AnthropicProvider",
    "Auth",
    "AzureOpenAIProvider",
    "BasicAuth",
    "BearerTokenAuth",
    "BedrockProvider",
    "ChainedAuth",
    "CustomProvider",
    "GeminiProvider",
    "HTTPProvider",
    "NoAuth",
    "OllamaProvider",
    "OpenAIProvider",
    "ProviderBuilder",
    "default_http_client",
]
