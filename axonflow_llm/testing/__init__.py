"""Test kit: a virtual-time clock, a scripted handler, and (with the providers) a fault-injecting server."""

from .fake_clock import FakeClock
from .scripted import RecordedCall, ScriptedHandler, ScriptedStream, delay, response, stream

__all__ = [
    "FakeClock",
    "RecordedCall",
    "ScriptedHandler",
    "ScriptedStream",
    "delay",
    "response",
    "stream",
]
