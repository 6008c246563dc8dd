"""Invariants of the fake server's wire helpers: event-stream framing (against botocore), chunking, Fault |."""

from __future__ import annotations

from botocore.eventstream import EventStreamBuffer
from hypothesis import given, settings
from hypothesis import strategies as st

from axonflow_llm.testing.fake_server import Fault
from axonflow_llm.testing.fake_server.bedrock import encode_event_message
from axonflow_llm.testing.fake_server.wire import split_chunks

_names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=20).filter(
    lambda s: len(s.encode()) <= 255
)
_values = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=60)


@settings(deadline=None, max_examples=60)
@given(
    messages=st.lists(
        st.tuples(st.dictionaries(_names, _values, max_size=5), st.binary(max_size=300)), min_size=1, max_size=4
    )
)
def test_event_stream_messages_decode_with_botocore(messages: list[tuple[dict[str, str], bytes]]) -> None:
    buffer = EventStreamBuffer()
    buffer.add_data(b"".join(encode_event_message(headers, payload) for headers, payload in messages))
    decoded = [(m.headers, m.payload) for m in buffer]
    assert decoded == messages


@settings(deadline=None)
@given(text=st.text(max_size=200), max_chunks=st.integers(1, 10))
def test_split_chunks_rejoin_to_the_content(text: str, max_chunks: int) -> None:
    chunks = split_chunks(text, max_chunks)
    assert "".join(chunks) == text
    assert 1 <= len(chunks) <= max_chunks


@settings(deadline=None)
@given(
    status=st.sampled_from([None, 429, 503]),
    delay=st.sampled_from([0.0, 0.1]),
    drop=st.sampled_from([None, 0, 2]),
)
def test_combining_faults_keeps_what_each_sets(status: int | None, delay: float, drop: int | None) -> None:
    left = Fault(status_code=status, headers_delay=delay)
    right = Fault(drop_after_chunks=drop)
    combined = left | right
    assert (combined.status_code, combined.headers_delay, combined.drop_after_chunks) == (status, delay, drop)
    assert Fault() | left == left
    assert left | Fault() == left
