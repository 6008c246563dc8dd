"""AWS Signature Version 4 for httpx requests, through botocore (the ``axonflow-llm[bedrock]`` extra)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx

from ..pipeline.errors import ConfigError, redact
from .auth import Auth

__all__ = ["BOTOCORE_MISSING", "BotocoreMissingError", "SigV4Auth", "import_botocore"]

BOTOCORE_MISSING = (
    "AWS Bedrock needs botocore, which is not installed; install it with: pip install 'axonflow-llm[bedrock]'"
)


class BotocoreMissingError(ConfigError, ImportError):
    """botocore (the ``axonflow-llm[bedrock]`` extra) is not installed. A :class:`ConfigError`, so the
    registry reports it as a configuration that cannot work, and an ``ImportError``, as Python code
    expects of a missing package."""

#: The headers signed besides ``host`` and the ``x-amz-*`` ones botocore adds; all are fixed when the
#: request is built, so the signature covers exactly what is sent.
_SIGNED = ("content-type",)
_SET_BY_SIGNER = ("authorization", "x-amz-date", "x-amz-security-token")


def import_botocore(owner: str | None = None) -> Any:
    """Import botocore, or raise :class:`BotocoreMissingError` saying which extra to install (``owner``,
    the provider's name, starts the message)."""
    try:
        import botocore.auth
        import botocore.awsrequest
        import botocore.credentials
        import botocore.eventstream
        import botocore.session
    except ImportError as exc:
        raise BotocoreMissingError(f"{owner}: {BOTOCORE_MISSING}" if owner else BOTOCORE_MISSING) from exc
    return botocore


class SigV4Auth(Auth):
    """Signs each request with AWS SigV4 (``botocore.auth.SigV4Auth``) over the exact bytes sent.

    Credentials come from, in order: ``credentials`` (a botocore ``Credentials``), else the explicit
    ``access_key_id``/``secret_access_key``/``session_token``, else botocore's standard chain on a
    ``botocore.session.Session(profile=profile)``: environment, shared credentials and config files, SSO,
    container and instance metadata. The chain may touch the network, so it is resolved on first use in a
    worker thread by :meth:`prepare` (which the provider awaits before every attempt), and temporary
    credentials are refreshed there, off the event loop, before they expire.

    :meth:`apply` signs one attempt: a fresh ``X-Amz-Date`` and signature each time, since signatures
    expire after five minutes. ``repr()`` shows the region and service, never a key.

    It sits in the ``auth`` slot of the provider: the auth middleware hands it to the leaf per attempt.
    """

    __slots__ = ("_botocore", "_credentials", "_lock", "_profile", "_region", "_service", "_session")

    def __init__(
        self,
        *,
        region: str,
        service: str = "bedrock",
        credentials: Any = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        profile: str | None = None,
        session: Any = None,
    ) -> None:
        if not isinstance(region, str) or not region:
            raise ValueError("SigV4Auth needs a region, e.g. region='us-east-1'")
        self._botocore = import_botocore()
        self._region = region
        self._service = service
        self._profile = profile
        self._session = session
        self._lock = threading.Lock()
        if credentials is None and (access_key_id or secret_access_key):
            if not (access_key_id and secret_access_key):
                raise ValueError("explicit AWS credentials need both aws_access_key_id and aws_secret_access_key")
            credentials = self._botocore.credentials.Credentials(
                access_key_id, secret_access_key, session_token, method="explicit"
            )
        self._credentials = credentials

    @property
    def needs_prepare(self) -> bool:
        """True unless fixed credentials were given: the chain must be resolved, and may expire."""
        creds = self._credentials
        return creds is None or getattr(creds, "refresh_needed", None) is not None

    @property
    def region(self) -> str:
        return self._region

    @property
    def service(self) -> str:
        return self._service

    def __repr__(self) -> str:
        return f"SigV4Auth(region={self._region!r}, service={self._service!r})"

    # -- credentials -----------------------------------------------------------------------------------

    def _resolve(self) -> Any:
        """Run botocore's credential chain (blocking: files, maybe the network)."""
        try:
            session = self._session or self._botocore.session.Session(profile=self._profile)
            credentials = session.get_credentials()
        except Exception as exc:  # botocore raises many kinds (ProfileNotFound, SSO token errors ...)
            raise ConfigError(
                f"could not load AWS credentials ({type(exc).__name__}: {redact(str(exc))}); check the "
                "profile and the AWS configuration"
            ) from exc
        if credentials is None:
            raise ConfigError(
                "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, configure a "
                "profile (settings profile= or AWS_PROFILE), run on an instance/container with a role, or "
                "pass settings aws_access_key_id and aws_secret_access_key"
            )
        return credentials

    def _needs_refresh(self) -> bool:
        creds = self._credentials
        if creds is None:
            return True
        refresh_needed = getattr(creds, "refresh_needed", None)
        return bool(refresh_needed()) if refresh_needed is not None else False

    async def prepare(self, now: float | None = None) -> None:
        """Resolve the credentials (first use) or refresh expiring ones, in a worker thread. ``now`` is
        ignored: botocore times expiry on the wall clock, against the credentials' expiry time."""
        if self._needs_refresh():
            await asyncio.to_thread(self._prepare_blocking)

    def _prepare_blocking(self) -> None:
        with self._lock:
            if self._credentials is None:
                self._credentials = self._resolve()
            if self._needs_refresh():
                self._credentials.get_frozen_credentials()  # refreshes temporary credentials

    def frozen_credentials(self) -> Any:
        """The current ``ReadOnlyCredentials`` (resolving the chain here, blocking, if never prepared)."""
        if self._credentials is None:
            with self._lock:
                if self._credentials is None:
                    self._credentials = self._resolve()
        return self._credentials.get_frozen_credentials()

    def scrub(self, text: str) -> str:
        """``text`` with this auth's secret access key and session token replaced by ``***``."""
        creds = self._credentials
        if creds is None or not text:
            return text
        return redact(text, [v for v in (getattr(creds, "secret_key", None), getattr(creds, "token", None)) if v])

    # -- signing -----------------------------------------------------------------------------------------

    def apply(self, request: httpx.Request) -> None:
        """Sign ``request`` in place: ``Authorization``, ``X-Amz-Date`` and (temporary credentials)
        ``X-Amz-Security-Token``. The body must already be bytes (it is, for a built JSON request)."""
        creds = self.frozen_credentials()
        headers = {"host": request.headers["host"]}
        for name in _SIGNED:
            value = request.headers.get(name)
            if value is not None:
                headers[name] = value
        try:
            body = request.content
        except httpx.RequestNotRead:
            body = request.read()  # an in-memory body not yet marked as read (a bodiless GET, say)
        aws = self._botocore.awsrequest.AWSRequest(
            method=request.method, url=str(request.url), data=body, headers=headers
        )
        self._botocore.auth.SigV4Auth(creds, self._service, self._region).add_auth(aws)
        for name in _SET_BY_SIGNER:
            value = aws.headers.get(name)
            if value is not None:
                request.headers[name] = value
            elif name in request.headers:
                del request.headers[name]
