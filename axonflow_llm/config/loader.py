"""Load the YAML configuration file into typed, validated provider configurations; dump it back, masked."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec
import yaml

from ..pipeline.errors import ConfigError, redact
from ..pipeline.models import ProviderConfig, ProviderType
from .pipeline_options import pipeline_options
from .schema import (
    CREDENTIAL_KEYS,
    MIDDLEWARE_KEYS,
    PROVIDER_SETTINGS,
    ConnectionSettings,
    LLMConfig,
    MiddlewareSettings,
    ModelPriceSettings,
    ProviderEntry,
    Secret,
    convert,
    split_validation_error,
    to_builtins,
)
from .yaml_tree import YamlTree, compose

__all__ = ["dump_config", "infer_type", "load_config", "parse_config"]

_TOP_LEVEL = ("version", "llm_providers")
_VERSIONS = ("1", "1.0")
_TYPE_WORDS: dict[str, ProviderType] = {t.value: t for t in ProviderType if t is not ProviderType.AZURE_OPENAI}
_TYPE_WORDS["azure"] = ProviderType.AZURE_OPENAI
_SECRET_NAME = re.compile(r"(^|[_\-])(key|secret|token|password|authorization|credentials?)($|[_\-])", re.I)


def load_config(path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None) -> LLMConfig:
    """Read, expand and validate a configuration file (the seed's ``axonflow.yaml`` format).

    ``env`` replaces ``os.environ`` for ``${VAR}`` expansion. Raises :class:`ConfigError` with the file,
    the line and the path of the first problem (``axonflow.yaml:14: llm_providers.x.weight: ...``);
    nothing is built when it raises.
    """
    source = os.fspath(path)
    try:
        text = Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the configuration file {source}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{source}: the configuration file is not UTF-8 text") from None
    return parse_config(text, source=source, env=env)


def parse_config(
    text: str, *, source: str = "<string>", env: Mapping[str, str] | None = None
) -> LLMConfig:
    """:func:`load_config` for YAML text already in hand; ``source`` names it in error messages."""
    environ: Mapping[str, str] = os.environ if env is None else env
    loader, root = compose(text, source)
    try:
        return _Parser(YamlTree(loader, source, environ)).parse(root)
    finally:
        loader.dispose()


def infer_type(name: str) -> ProviderType | None:
    """The provider type named by one of the underscore- (or dash-) separated words of ``name``.

    ``ollama_local`` is Ollama, ``my_custom_provider`` custom, ``azure_openai_eu`` (any word ``azure``)
    Azure OpenAI. ``None`` when no word names a type, or words name two different types.
    """
    words = re.split(r"[_\-\s.]+", name.lower())
    found = {_TYPE_WORDS[w] for w in words if w in _TYPE_WORDS}
    if ProviderType.AZURE_OPENAI in found:
        found.discard(ProviderType.OPENAI)
    return found.pop() if len(found) == 1 else None


class _Parser:
    __slots__ = ("tree",)

    def __init__(self, tree: YamlTree) -> None:
        self.tree = tree

    def fail(self, path: str, message: str) -> ConfigError:
        return ConfigError(f"{self.tree.where(path)}: {message}")

    def parse(self, root: yaml.Node | None) -> LLMConfig:
        tree = self.tree
        if root is None:
            raise ConfigError(f"{tree.source}: the configuration is empty; it needs `llm_providers:`")
        top = dict(tree.pairs(root, ""))
        for key in top:
            if key not in _TOP_LEVEL and not key.startswith("x-"):
                raise self.fail(key, f"unknown top-level key {key!r}; allowed: {', '.join(_TOP_LEVEL)} "
                                     "(and x-... keys for your own anchors, which are ignored)")
        version = "1.0"
        if "version" in top:
            raw = tree.value(top["version"], "version")
            version = str(raw)
            if version not in _VERSIONS:
                raise self.fail("version", f"version {version!r} is not supported; write version: \"1.0\"")
        if "llm_providers" not in top:
            raise ConfigError(f"{tree.source}: no `llm_providers:` section; add one mapping each provider's "
                              "name to its settings")
        node = top["llm_providers"]
        providers: dict[str, ProviderConfig] = {}
        locations: dict[str, str] = {}
        if not (isinstance(node, yaml.ScalarNode) and node.value == ""):
            for name, entry_node in tree.pairs(node, "llm_providers"):
                providers[name] = self.provider(name, entry_node)
                locations[name] = tree.where(f"llm_providers.{name}")
        return LLMConfig(version=version, providers=providers, source=tree.source, locations=locations)

    def provider(self, name: str, node: yaml.Node) -> ProviderConfig:
        tree = self.tree
        path = f"llm_providers.{name}"
        if not name.strip():
            raise self.fail(path, "a provider name must not be empty")
        if isinstance(node, yaml.ScalarNode) and node.value == "":
            node = yaml.MappingNode("tag:yaml.org,2002:map", [], node.start_mark, node.end_mark)
        pairs = dict(tree.pairs(node, path))
        enabled = True
        if "enabled" in pairs:
            raw = tree.value(pairs["enabled"], f"{path}.enabled")
            try:
                enabled = msgspec.convert(raw, bool, strict=False)
            except msgspec.ValidationError:
                raise self.fail(f"{path}.enabled", "expected true or false") from None
        # A disabled provider need not have its variables set: such values are left out.
        raw_entry = tree.value(node, path, lenient=not enabled)
        prices_raw = raw_entry.pop("pricing", None)
        entry = self.convert(raw_entry, ProviderEntry, path)
        pricing = self.pricing(prices_raw, f"{path}.pricing")
        ptype = self.provider_type(name, entry.type, path)
        config = self.provider_config(name, ptype, entry, pricing, path)
        if enabled:
            settings = MiddlewareSettings.of(config)
            # The middleware's own checks (cross-field ones), now rather than when building.
            pipeline_options(settings, where=lambda section: tree.where(f"{path}.{section}"))
        return config

    def convert(self, raw: Any, tp: type[Any], path: str) -> Any:
        try:
            return convert(raw, tp)
        except msgspec.ValidationError as exc:
            message, sub = split_validation_error(exc)
            full = f"{path}.{sub}" if sub else path
            unknown = re.match(r"Object contains unknown field `(.*)`", message)
            if unknown:
                field = unknown.group(1)
                allowed = ", ".join(_allowed_fields(tp, sub))
                raise self.fail(f"{full}.{field}", f"unknown field {field!r}; allowed here: {allowed}") from None
            first = re.match(r"(\w+) ", message)
            if first and first.group(1) in _allowed_fields(tp, sub):  # a __post_init__ check on one field
                full = f"{full}.{first.group(1)}"
            message = message.replace("`object`", "a mapping").replace("`array`", "a list")
            message = re.sub(r"`([^`]*) \| null`", r"`\1` (or nothing)", message)
            raise self.fail(full, message) from None

    def pricing(self, raw: Any, path: str) -> dict[str, ModelPriceSettings]:
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            raise self.fail(path, "expected a mapping of model name to {input_per_1m, output_per_1m}")
        return {str(model): self.convert(p, ModelPriceSettings, f"{path}.{model}") for model, p in raw.items()}

    def provider_type(self, name: str, declared: str | None, path: str) -> ProviderType:
        allowed = ", ".join(t.value for t in ProviderType)
        if declared is not None:
            try:
                return ProviderType(declared.strip().lower())
            except ValueError:
                raise self.fail(f"{path}.type", f"{declared!r} is not a provider type; use one of: {allowed}") from None
        inferred = infer_type(name)
        if inferred is None:
            raise self.fail(path, f"cannot tell the provider type from the name {name!r}; add `type:` "
                                  f"(one of: {allowed})")
        return inferred

    def provider_config(
        self,
        name: str,
        ptype: ProviderType,
        entry: ProviderEntry,
        pricing: dict[str, ModelPriceSettings],
        path: str,
    ) -> ProviderConfig:
        common = {k: v for k, v in entry.config.items() if k in ConnectionSettings.__struct_fields__}
        conn: ConnectionSettings = self.convert(common, ConnectionSettings, f"{path}.config")
        settings: dict[str, Any] = {}
        known = PROVIDER_SETTINGS.get(ptype)
        for key, value in entry.config.items():
            if key in ConnectionSettings.__struct_fields__:
                continue
            if key in MIDDLEWARE_KEYS or key in CREDENTIAL_KEYS:
                where = "credentials" if key in CREDENTIAL_KEYS else key
                raise self.fail(f"{path}.config.{key}", f"{key!r} does not belong in config; write it under "
                                                        f"`{where}:` at the provider's level")
            if known is not None and key not in known:
                allowed = ", ".join([*ConnectionSettings.__struct_fields__, *known])
                raise self.fail(f"{path}.config.{key}", f"unknown field {key!r} for provider type {ptype.value!r}; "
                                                        f"allowed here: {allowed}")
            settings[key] = value
        creds = entry.credentials
        for key in CREDENTIAL_KEYS[1:]:
            value = getattr(creds, key)
            if value is not None:
                settings[key] = Secret(value)
        for key in MIDDLEWARE_KEYS:
            value = pricing if key == "pricing" else getattr(entry, key)
            if value is not None and value != {}:
                settings[key] = value
        config = ProviderConfig(
            name=name,
            type=ptype,
            api_key=creds.api_key,
            endpoint=conn.endpoint,
            model=conn.model,
            region=conn.region,
            enabled=entry.enabled,
            priority=entry.priority,
            weight=entry.weight,
            max_tokens=conn.max_tokens,
            timeout=float(conn.timeout) if conn.timeout is not None else None,
            display_name=entry.display_name,
            settings=settings,
        )
        try:
            config.validate()
        except ValueError as exc:
            message = str(exc)
            field = re.match(r"ProviderConfig\.(\w+)", message)
            where = _CONFIG_PATHS.get(field.group(1), field.group(1)) if field else ""
            raise self.fail(f"{path}.{where}" if where else path, redact(message)) from None
        return config


_CONFIG_PATHS = {
    "endpoint": "config.endpoint",
    "model": "config.model",
    "max_tokens": "config.max_tokens",
    "timeout": "config.timeout",
    "region": "config.region",
}


def _allowed_fields(tp: type[Any], path: str) -> list[str]:
    """The field names of the Struct at ``path`` inside ``tp`` (for "allowed here:" in messages)."""
    info: Any = msgspec.inspect.type_info(tp)
    for part in (p for p in re.split(r"\.|\[[^\]]*\]", path) if p):
        info = _struct_of(info)
        if info is None:
            return []
        match = [f for f in info.fields if f.name == part]
        if not match:
            return []
        info = match[0].type
    info = _struct_of(info)
    return [f.name for f in info.fields] if info is not None else []


def _struct_of(info: Any) -> Any:
    if isinstance(info, msgspec.inspect.StructType):
        return info
    if isinstance(info, msgspec.inspect.UnionType):
        for t in info.types:
            if isinstance(t, msgspec.inspect.StructType):
                return t
    return None


def dump_config(config: LLMConfig) -> str:
    """The resolved configuration as YAML, in the file's format, with every credential shown as ``***``.

    Variables are expanded, inferred types written out and durations in seconds. Secrets are masked, so
    the output documents a configuration; it cannot be loaded back to the same credentials.
    """
    providers: dict[str, Any] = {}
    for name, pc in config.providers.items():
        providers[name] = _dump_provider(pc)
    return yaml.safe_dump(
        {"version": config.version, "llm_providers": providers}, sort_keys=False, allow_unicode=True
    )


def _dump_provider(pc: ProviderConfig) -> dict[str, Any]:
    out: dict[str, Any] = {"type": str(pc.type), "enabled": pc.enabled}
    if pc.display_name is not None:
        out["display_name"] = pc.display_name
    conn: dict[str, Any] = {}
    for key in ("model", "endpoint", "max_tokens", "timeout", "region"):
        value = getattr(pc, key)
        if value is not None:
            conn[key] = value
    credentials: dict[str, Any] = {}
    if pc.api_key:
        credentials["api_key"] = "***"
    for key, value in pc.settings.items():
        if key in MIDDLEWARE_KEYS:
            continue
        if key in CREDENTIAL_KEYS or isinstance(value, Secret):
            credentials[key] = "***"
        else:
            conn[key] = _masked(key, _plain(value))
    if conn:
        out["config"] = conn
    if credentials:
        out["credentials"] = credentials
    out["priority"] = pc.priority
    out["weight"] = pc.weight
    middleware = MiddlewareSettings.of(pc)
    for key in MIDDLEWARE_KEYS:
        value = getattr(middleware, key)
        if value is None or value == {}:
            continue
        out[key] = _drop_none(to_builtins(value))
    return out


def _plain(value: Any) -> Any:
    try:
        return to_builtins(value)
    except TypeError:
        return repr(value)


def _masked(key: str, value: Any) -> Any:
    """``***`` for a value whose name looks like a credential (``x-api-key``, ``token``), recursively."""
    if _SECRET_NAME.search(key):
        return "***"
    if isinstance(value, dict):
        return {k: _masked(str(k), v) for k, v in value.items()}
    return value


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    return value
