"""Auth primitives: exact headers and query, secrets never shown, httpx.Auth use, refreshable bearer tokens."""

from __future__ import annotations

import asyncio
import base64
import copy
from typing import Any

import httpx
import pytest

from axonflow_llm.pipeline.errors import APIConnectionError, AuthenticationError
from axonflow_llm.providers.auth import (
    APIKeyAuth,
    Auth,
    BasicAuth,
    BearerTokenAuth,
    ChainedAuth,
    NoAuth,
    TokenRefreshError,
)
from axonflow_llm.testing import FakeClock

KEY = "sk-test-0123456789abcdef"
URL = "https://api.example.com/v1/chat?stream=true"


def applied(auth: Auth, url: str = URL) -> httpx.Request:
    request = httpx.Request("POST", url, headers={"Content-Type": "application/json"})
    auth.apply(request)
    return request


class Source:
    """A token source: hands out token-1, token-2, ... each with ``lifetime``; counts the calls."""

    def __init__(self, clock: FakeClock, lifetime: float = 100.0, latency: float = 0.0) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.latency = latency
        self.calls = 0
        self.fail: BaseException | None = None
        self.result: Any = None

    async def __call__(self) -> tuple[str, float]:
        self.calls += 1
        if self.latency:
            await self.clock.sleep(self.latency)
        if self.fail is not None:
            raise self.fail
        if self.result is not None:
            return self.result  # type: ignore[no-any-return]
        return f"token-{self.calls}", self.lifetime


# -- headers and query, exactly -----------------------------------------------------------------------


def test_api_key_auth_sends_a_bearer_authorization_header_by_default() -> None:
    request = applied(APIKeyAuth(KEY))
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert str(request.url) == URL


def test_api_key_auth_with_header_sends_the_raw_key_there_and_no_authorization() -> None:
    request = applied(APIKeyAuth(KEY, header="X-API-Key"))
    assert request.headers["x-api-key"] == KEY
    assert "authorization" not in request.headers


def test_api_key_auth_with_query_param_adds_it_to_the_query_and_sends_no_header() -> None:
    request = applied(APIKeyAuth(KEY, query_param="key"))
    assert request.url.params["key"] == KEY
    assert request.url.params["stream"] == "true"
    assert request.url.path == "/v1/chat"
    assert "authorization" not in request.headers


def test_api_key_query_param_replaces_a_value_already_there() -> None:
    request = applied(APIKeyAuth(KEY, query_param="key"), "https://x.test/a?key=old")
    assert request.url.params.get_list("key") == [KEY]


def test_basic_auth_encodes_username_and_password() -> None:
    request = applied(BasicAuth("alice", "pässword:x"))
    expected = base64.b64encode("alice:pässword:x".encode()).decode()
    assert request.headers["Authorization"] == f"Basic {expected}"


def test_bearer_token_auth_sends_the_token() -> None:
    assert applied(BearerTokenAuth("tok-abc")).headers["Authorization"] == "Bearer tok-abc"


def test_no_auth_sends_nothing() -> None:
    request = applied(NoAuth())
    assert "authorization" not in request.headers
    assert str(request.url) == URL


def test_chained_auth_applies_each_in_order_and_the_later_wins_on_the_same_header() -> None:
    request = applied(ChainedAuth(APIKeyAuth(KEY), APIKeyAuth("org-123", header="OpenAI-Organization")))
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert request.headers["OpenAI-Organization"] == "org-123"
    overridden = applied(ChainedAuth(APIKeyAuth(KEY), BearerTokenAuth("later")))
    assert overridden.headers.get_list("Authorization") == ["Bearer later"]


# -- bad input ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("empty", ["", "   ", None])
def test_an_empty_key_is_a_value_error_naming_the_fix(empty: Any) -> None:
    with pytest.raises(ValueError, match="API key is empty; set MY_API_KEY"):
        APIKeyAuth(empty, env_var="MY_API_KEY")
    with pytest.raises(ValueError, match="API key is empty; pass the API key"):
        APIKeyAuth(empty)
    with pytest.raises(ValueError, match="token is empty"):
        BearerTokenAuth(empty)


def test_a_key_with_a_trailing_newline_is_refused_without_echoing_it() -> None:
    with pytest.raises(ValueError, match="strip it") as info:
        APIKeyAuth(KEY + "\n")
    assert KEY not in str(info.value)


def test_other_bad_arguments_are_clear_errors() -> None:
    with pytest.raises(TypeError, match="must be a str"):
        APIKeyAuth(12345)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not both"):
        APIKeyAuth(KEY, header="X-API-Key", query_param="key")
    with pytest.raises(ValueError, match="valid HTTP header name"):
        APIKeyAuth(KEY, header="X API Key")
    with pytest.raises(ValueError, match="query_param must be"):
        APIKeyAuth(KEY, query_param="")
    with pytest.raises(ValueError, match="must not contain ':'"):
        BasicAuth("a:b", "pw")
    with pytest.raises(ValueError, match="username must be"):
        BasicAuth("", "pw")
    with pytest.raises(TypeError, match="password must be a str"):
        BasicAuth("alice", None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one auth"):
        ChainedAuth()
    with pytest.raises(TypeError, match="ChainedAuth takes Auth objects"):
        ChainedAuth(APIKeyAuth(KEY), "Bearer x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="refresh_margin applies only to a token source"):
        BearerTokenAuth("tok", refresh_margin=5)
    with pytest.raises(ValueError, match="refresh_margin must be"):
        BearerTokenAuth(Source(FakeClock()), refresh_margin=-1)


# -- secrets never shown ------------------------------------------------------------------------------


def test_repr_and_str_never_show_a_secret() -> None:
    clock = FakeClock()
    auths: list[Auth] = [
        APIKeyAuth(KEY),
        APIKeyAuth(KEY, header="X-API-Key"),
        APIKeyAuth(KEY, query_param="key"),
        BasicAuth("alice", "hunter2-secret"),
        BearerTokenAuth("tok-very-secret"),
        BearerTokenAuth(Source(clock)),
        NoAuth(),
    ]
    auths.append(ChainedAuth(*auths))
    for auth in auths:
        for shown in (repr(auth), str(auth), f"{auth}", repr([auth])):
            for secret in (KEY, "hunter2", "tok-very-secret", base64.b64encode(b"alice:hunter2-secret").decode()):
                assert secret not in shown
    assert repr(auths[0]) == "APIKeyAuth(header='Authorization', api_key='***')"
    assert repr(auths[2]) == "APIKeyAuth(query_param='key', api_key='***')"
    assert repr(auths[3]) == "BasicAuth(username='alice', password='***')"
    assert repr(auths[4]) == "BearerTokenAuth(token='***')"
    assert repr(auths[-1]).startswith("ChainedAuth(APIKeyAuth(header='Authorization', api_key='***'), ")


async def test_a_refreshed_token_is_not_shown_by_repr() -> None:
    auth = BearerTokenAuth(Source(FakeClock()), clock=FakeClock())
    await auth.prepare()
    assert "token-1" not in repr(auth)
    assert "token-1" not in repr(copy.copy(auth))


# -- as an httpx.Auth ---------------------------------------------------------------------------------


def echo_transport(seen: list[httpx.Request]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True})

    return httpx.MockTransport(handle)


async def test_each_auth_works_as_an_httpx_auth_on_an_async_client() -> None:
    seen: list[httpx.Request] = []
    async with httpx.AsyncClient(transport=echo_transport(seen)) as client:
        await client.post(URL, auth=APIKeyAuth(KEY))
        await client.post(URL, auth=APIKeyAuth(KEY, header="x-goog-api-key"))
        await client.post(URL, auth=APIKeyAuth(KEY, query_param="key"))
        await client.post(URL, auth=BasicAuth("alice", "pw"))
        await client.post(URL, auth=NoAuth())
    assert seen[0].headers["authorization"] == f"Bearer {KEY}"
    assert seen[1].headers["x-goog-api-key"] == KEY and "authorization" not in seen[1].headers
    assert seen[2].url.params["key"] == KEY
    assert seen[3].headers["authorization"] == "Basic " + base64.b64encode(b"alice:pw").decode()
    assert "authorization" not in seen[4].headers


def test_an_auth_works_on_a_sync_client_too() -> None:
    seen: list[httpx.Request] = []
    with httpx.Client(transport=echo_transport(seen), auth=APIKeyAuth(KEY)) as client:
        client.get("https://api.example.com/models")
    assert seen[0].headers["authorization"] == f"Bearer {KEY}"


async def test_a_refreshable_token_prepares_itself_inside_an_async_client() -> None:
    clock = FakeClock()
    source = Source(clock)
    seen: list[httpx.Request] = []
    async with httpx.AsyncClient(transport=echo_transport(seen), auth=BearerTokenAuth(source, clock=clock)) as client:
        await client.get(URL)
        await client.get(URL)
    assert [r.headers["authorization"] for r in seen] == ["Bearer token-1", "Bearer token-1"]
    assert source.calls == 1


# -- refreshable bearer tokens ------------------------------------------------------------------------


def test_apply_before_the_first_prepare_is_a_clear_error() -> None:
    auth = BearerTokenAuth(Source(FakeClock()))
    assert auth.needs_prepare
    with pytest.raises(RuntimeError, match=r"await auth.prepare\(\) before apply\(\)"):
        applied(auth)


async def test_the_token_is_fetched_on_first_use_and_again_shortly_before_it_expires() -> None:
    clock = FakeClock(auto_advance=False)
    source = Source(clock, lifetime=100.0)  # default margin: min(60 s, 10 %) = 10 s
    auth = BearerTokenAuth(source, clock=clock)
    await auth.prepare()
    assert applied(auth).headers["Authorization"] == "Bearer token-1"
    await clock.advance(89.9)
    await auth.prepare()
    assert source.calls == 1
    await clock.advance(0.1)
    await auth.prepare()
    assert source.calls == 2
    assert applied(auth).headers["Authorization"] == "Bearer token-2"
    assert auth.generation == 2


async def test_the_default_margin_is_at_most_sixty_seconds() -> None:
    clock = FakeClock(auto_advance=False)
    source = Source(clock, lifetime=3600.0)
    auth = BearerTokenAuth(source, clock=clock)
    await auth.prepare()
    await clock.advance(3539.9)
    await auth.prepare()
    assert source.calls == 1
    await clock.advance(0.1)
    await auth.prepare()
    assert source.calls == 2


async def test_an_explicit_margin_is_used_but_never_beyond_half_the_lifetime() -> None:
    clock = FakeClock(auto_advance=False)
    source = Source(clock, lifetime=100.0)
    auth = BearerTokenAuth(source, refresh_margin=30, clock=clock)
    await auth.prepare(0.0)
    await auth.prepare(69.9)
    assert source.calls == 1
    await auth.prepare(70.0)
    assert source.calls == 2
    short = Source(clock, lifetime=10.0)
    clamped = BearerTokenAuth(short, refresh_margin=60, clock=clock)
    await clamped.prepare(0.0)
    await clamped.prepare(4.9)
    assert short.calls == 1  # a 60 s margin on a 10 s token would refresh on every call
    await clamped.prepare(5.0)
    assert short.calls == 2


async def test_concurrent_refreshes_are_coalesced_into_one_call() -> None:
    clock = FakeClock()
    source = Source(clock, latency=1.0)
    auth = BearerTokenAuth(source, clock=clock)
    await asyncio.gather(*(auth.prepare() for _ in range(20)))
    assert source.calls == 1
    assert applied(auth).headers["Authorization"] == "Bearer token-1"


async def test_a_cancelled_caller_does_not_cancel_the_shared_refresh() -> None:
    clock = FakeClock(auto_advance=False)
    source = Source(clock, latency=1.0)
    auth = BearerTokenAuth(source, clock=clock)
    first = asyncio.create_task(auth.prepare())
    second = asyncio.create_task(auth.prepare())
    await clock.advance(0.5)
    first.cancel()
    await clock.advance(0.5)
    await second
    assert first.cancelled()
    assert source.calls == 1
    assert applied(auth).headers["Authorization"] == "Bearer token-1"


async def test_a_failed_refresh_raises_token_refresh_error_chained_without_the_token_and_is_retried() -> None:
    clock = FakeClock(auto_advance=False)
    source = Source(clock, lifetime=100.0)
    auth = BearerTokenAuth(source, clock=clock)
    await auth.prepare()
    await clock.advance(95)
    source.fail = ConnectionError("token endpoint down; last token was token-1")
    with pytest.raises(TokenRefreshError) as info:
        await auth.prepare()
    assert isinstance(info.value.__cause__, ConnectionError)
    assert "token-1" not in str(info.value)
    assert "ConnectionError" in str(info.value)
    assert info.value.retryable  # a dropped connection to the token endpoint
    source.fail = None
    await auth.prepare()
    assert applied(auth).headers["Authorization"] == "Bearer token-3"


def test_token_refresh_error_is_retryable_only_when_its_cause_is() -> None:
    def chained(cause: BaseException) -> TokenRefreshError:
        err = TokenRefreshError("x")
        err.__cause__ = cause
        return err

    assert chained(APIConnectionError("down")).retryable
    assert chained(httpx.ConnectError("down")).retryable
    assert not chained(AuthenticationError("bad client secret", status_code=401)).retryable
    assert not chained(KeyError("oops")).retryable


@pytest.mark.parametrize(
    ("result", "message"),
    [
        ("just-a-token", "must return \\(token, lifetime_seconds\\), got str"),
        (("tok", 1, 2), "got tuple"),
        (("", 100), "an empty token"),
        (("two words", 100), "printable ASCII"),
        ((None, 100), "an empty token"),
        (("tok", 0), "lifetime must be"),
        (("tok", float("nan")), "lifetime must be"),
        (("tok", "100"), "lifetime must be"),
    ],
)
async def test_a_malformed_token_source_result_is_a_clear_error(result: Any, message: str) -> None:
    source = Source(FakeClock())
    source.result = result
    auth = BearerTokenAuth(source, clock=FakeClock())
    with pytest.raises(TokenRefreshError, match=message) as info:
        await auth.prepare()
    if isinstance(result, tuple) and isinstance(result[0], str) and result[0]:
        assert result[0] not in str(info.value).replace("token", "")


async def test_refresh_skips_the_fetch_when_the_failed_credential_was_already_replaced() -> None:
    clock = FakeClock()
    source = Source(clock)
    auth = BearerTokenAuth(source, clock=clock)
    await auth.prepare()
    stale = auth.generation
    assert await auth.refresh(stale=stale)  # forced: token-2
    assert source.calls == 2
    assert await auth.refresh(stale=stale)  # already replaced since ``stale``: no fetch
    assert source.calls == 2


async def test_refresh_reports_no_change_when_the_source_returns_the_same_token() -> None:
    clock = FakeClock()
    source = Source(clock)
    source.result = ("same-token", 100.0)
    auth = BearerTokenAuth(source, clock=clock)
    await auth.prepare()
    assert not await auth.refresh(stale=auth.generation)
    assert source.calls == 2


async def test_static_credentials_need_no_prepare_and_never_refresh() -> None:
    for auth in (APIKeyAuth(KEY), BasicAuth("a", "b"), BearerTokenAuth("t"), NoAuth(), ChainedAuth(NoAuth())):
        assert not auth.needs_prepare
        await auth.prepare()
        assert not await auth.refresh()
        assert auth.generation == 0


async def test_a_chain_with_a_refreshable_member_prepares_and_refreshes_it() -> None:
    clock = FakeClock()
    source = Source(clock)
    chain = ChainedAuth(APIKeyAuth("org-1", header="X-Org"), BearerTokenAuth(source, clock=clock))
    assert chain.needs_prepare
    await chain.prepare()
    request = applied(chain)
    assert request.headers["Authorization"] == "Bearer token-1"
    assert request.headers["X-Org"] == "org-1"
    assert await chain.refresh(stale=chain.generation)
    assert applied(chain).headers["Authorization"] == "Bearer token-2"
