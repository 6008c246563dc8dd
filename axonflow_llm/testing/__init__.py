"""Test kit: a virtual-time clock, a scripted handler, and (with the providers) a fault-injecting server."""

from .fake_clock import FakeClock
from .fake_server import Endpoint, FakeLLMServer, Fault, RecordedRequest, WireFormat, fake_llm_server
from .scripted import RecordedCall, ScriptedHandler, ScriptedStream, delay, response, stream

__all__ = [
    "Endpoint",
    "FakeClock",
    "FakeLLMServer",
    "Fault",
    "RecordedRequest",
    "WireFormat",
    "fake_llm_server",
    "RecordedCall",
    "ScriptedHandler",
    "ScriptedStream",
    "delay",
    "response",
    "stream",
]
