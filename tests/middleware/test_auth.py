"""AuthMiddleware: fresh credentials on every attempt, and one refresh-and-resend on a 401."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from axonflow_llm.middleware.auth import AuthMiddleware
from axonflow_llm.middleware.retry import RetryMiddleware
from axonflow_llm.middleware.retry_config import RetryConfig
from axonflow_llm.pipeline.context import CallContext, ProviderInfo
from axonflow_llm.pipeline.errors import AuthenticationError, ServerError
from axonflow_llm.pipeline.models import CompletionRequest, CompletionResponse
from axonflow_llm.providers.auth import APIKeyAuth, BearerTokenAuth, TokenRefreshError
from axonflow_llm.testing import FakeClock, ScriptedHandler, response

REQUEST = CompletionRequest(prompt="hi")


def ctx(auth: Any = None) -> CallContext:
    return CallContext(ProviderInfo(name="acme", type="custom", auth=auth))


def unauthorized(status: int = 401) -> AuthenticationError:
    return AuthenticationError("invalid token", status_code=status, provider="acme")


class Source:
    def __init__(self, clock: FakeClock, lifetime: float = 100.0, same: bool = False) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.same = same
        self.calls = 0

    async def __call__(self) -> tuple[str, float]:
        self.calls += 1
        await self.clock.sleep(0.01)
        return ("token-1" if self.same else f"token-{self.calls}"), self.lifetime


class Leaf(ScriptedHandler):
    """A scripted leaf that, like a provider's, applies ``ctx.auth`` to its HTTP request on each call."""

    def __init__(self, *script: Any) -> None:
        super().__init__(*script)
        self.sent: list[str] = []

    async def __call__(self, request: CompletionRequest, ctx: CallContext) -> Any:
        http = httpx.Request("POST", "https://x.test/")
        ctx.auth.apply(http)
        self.sent.append(http.headers["authorization"])
        return await super().__call__(request, ctx)


def test_auth_must_have_apply() -> None:
    with pytest.raises(TypeError, match=r"apply\(request\).*NoAuth\(\)"):
        AuthMiddleware(ScriptedHandler(), auth="sk-raw-key")
    with pytest.raises(TypeError, match="clock must be a Clock"):
        AuthMiddleware(ScriptedHandler(), auth=APIKeyAuth("k"), clock=object())  # type: ignore[arg-type]


def test_repr_never_shows_the_key() -> None:
    assert repr(AuthMiddleware(ScriptedHandler(), auth=APIKeyAuth("sk-secret-1234567890"))) == (
        "AuthMiddleware(auth=APIKeyAuth(header='Authorization', api_key='***'))"
    )


async def test_every_attempt_gets_the_auth_in_ctx() -> None:
    auth = APIKeyAuth("sk-abc")
    handler = ScriptedHandler(ServerError("x", status_code=503))
    chain = RetryMiddleware(AuthMiddleware(handler, auth=auth), config=RetryConfig(jitter=0), clock=FakeClock())
    c = ctx(auth=None)
    reply = await chain(REQUEST, c)
    assert isinstance(reply, CompletionResponse)
    assert [call.auth for call in handler.calls] == [auth, auth]
    assert c.auth is auth


async def test_a_plain_object_with_apply_is_accepted() -> None:
    class Custom:
        def apply(self, request: Any) -> None:
            request.headers["Authorization"] = "Custom x"

    custom = Custom()
    handler = ScriptedHandler()
    await AuthMiddleware(handler, auth=custom)(REQUEST, ctx())
    assert handler.calls[0].auth is custom


async def test_a_refreshable_token_is_prepared_on_every_attempt_and_refreshed_before_expiry() -> None:
    clock = FakeClock()
    source = Source(clock, lifetime=100.0)
    auth = BearerTokenAuth(source, clock=clock)
    handler = Leaf()
    mw = AuthMiddleware(handler, auth=auth, clock=clock)
    await mw(REQUEST, ctx())
    await clock.sleep(80)
    await mw(REQUEST, ctx())
    await clock.sleep(10)  # 90.01 s after the token was issued: inside the 10 s margin
    await mw(REQUEST, ctx())
    assert source.calls == 2
    assert handler.sent == ["Bearer token-1", "Bearer token-1", "Bearer token-2"]


async def test_concurrent_calls_share_one_refresh() -> None:
    clock = FakeClock()
    source = Source(clock)
    handler = Leaf()
    mw = AuthMiddleware(handler, auth=BearerTokenAuth(source, clock=clock))
    await asyncio.gather(*(mw(REQUEST, ctx()) for _ in range(25)))
    assert source.calls == 1
    assert handler.sent == ["Bearer token-1"] * 25


async def test_a_401_forces_one_refresh_and_one_resend_with_the_new_token() -> None:
    clock = FakeClock()
    source = Source(clock)
    handler = Leaf(unauthorized(), response("ok"))
    mw = AuthMiddleware(handler, auth=BearerTokenAuth(source, clock=clock), clock=clock)
    reply = await mw(REQUEST, ctx())
    assert isinstance(reply, CompletionResponse) and reply.content == "ok"
    assert handler.sent == ["Bearer token-1", "Bearer token-2"]


async def test_a_second_401_is_raised_not_retried_again() -> None:
    clock = FakeClock()
    source = Source(clock)
    handler = ScriptedHandler(unauthorized(), unauthorized())
    mw = AuthMiddleware(handler, auth=BearerTokenAuth(source, clock=clock))
    with pytest.raises(AuthenticationError):
        await mw(REQUEST, ctx())
    assert handler.call_count == 2
    assert source.calls == 2


async def test_a_401_is_raised_as_is_when_the_refresh_gives_the_same_token() -> None:
    clock = FakeClock()
    source = Source(clock, same=True)
    failure = unauthorized()
    handler = ScriptedHandler(failure)
    mw = AuthMiddleware(handler, auth=BearerTokenAuth(source, clock=clock))
    with pytest.raises(AuthenticationError) as info:
        await mw(REQUEST, ctx())
    assert info.value is failure
    assert handler.call_count == 1


@pytest.mark.parametrize("status", [403])
async def test_a_403_is_not_a_reason_to_refresh(status: int) -> None:
    clock = FakeClock()
    source = Source(clock)
    handler = ScriptedHandler(unauthorized(status))
    with pytest.raises(AuthenticationError):
        await AuthMiddleware(handler, auth=BearerTokenAuth(source, clock=clock))(REQUEST, ctx())
    assert source.calls == 1


async def test_refresh_on_401_can_be_turned_off_and_static_keys_never_resend() -> None:
    clock = FakeClock()
    source = Source(clock)
    handler = ScriptedHandler(unauthorized())
    mw = AuthMiddleware(handler, auth=BearerTokenAuth(source, clock=clock), refresh_on_401=False)
    with pytest.raises(AuthenticationError):
        await mw(REQUEST, ctx())
    assert source.calls == 1
    static = ScriptedHandler(unauthorized())
    with pytest.raises(AuthenticationError):
        await AuthMiddleware(static, auth=APIKeyAuth("sk-abc"))(REQUEST, ctx())
    assert static.call_count == 1


async def test_a_failed_refresh_stops_the_attempt_before_the_provider_is_called() -> None:
    clock = FakeClock()

    async def broken() -> tuple[str, float]:
        raise OSError("connection refused")

    handler = ScriptedHandler()
    with pytest.raises(TokenRefreshError) as info:
        await AuthMiddleware(handler, auth=BearerTokenAuth(broken, clock=clock))(REQUEST, ctx())
    assert info.value.retryable
    assert handler.call_count == 0
