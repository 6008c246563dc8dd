"""An ordered, inspectable list of middleware for one provider, built once into a chain of handlers."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeAlias

from .middleware import FunctionMiddleware, Handler, HookFunction

__all__ = ["Layer", "Pipeline", "hook"]

#: A middleware class, or any callable ``factory(next_handler, **options) -> Handler``.
MiddlewareFactory: TypeAlias = Callable[..., Handler]
#: How a pipeline method names a layer already in it: by its class/factory or by its name.
LayerRef: TypeAlias = "str | MiddlewareFactory"


class Layer:
    """A middleware *specification*: the class and its options, not yet wrapped around anything.

    ``Layer(RetryMiddleware, config=RetryConfig(max_retries=5))``. Configuration is apart from behaviour:
    a pipeline holds layers and builds them into handlers once. ``name`` defaults to the class name and is
    how ``insert_before``/``replace``/``remove`` can refer to it.
    """

    __slots__ = ("factory", "name", "options")

    def __init__(self, factory: MiddlewareFactory, /, *, name: str | None = None, **options: Any) -> None:
        if not callable(factory):
            raise TypeError(
                f"Layer needs a middleware class (or factory taking next_handler), got {factory!r}"
            )
        self.factory = factory
        self.options = options
        self.name: str = name or str(getattr(factory, "__name__", type(factory).__name__))

    def build(self, next_handler: Handler) -> Handler:
        """Wrap ``next_handler``; the middleware's ``__init__`` validates the options here."""
        return self.factory(next_handler, **self.options)

    def matches(self, ref: LayerRef) -> bool:
        if isinstance(ref, str):
            return self.name == ref
        return self.factory is ref

    def __repr__(self) -> str:
        # Option *names* only: values may hold credentials.
        if self.factory is FunctionMiddleware:
            return f"hook({self.name})"
        opts = ", ".join(self.options)
        label = self.name if self.name == getattr(self.factory, "__name__", None) else (
            f"{self.name}={getattr(self.factory, '__name__', '?')}"
        )
        return f"{label}({opts})" if opts else label


def hook(func: HookFunction, /, *, name: str | None = None) -> Layer:
    """Make a plain ``async func(request, ctx, call_next) -> Reply`` into a layer, for quick user hooks::

        async def tag(request, ctx, call_next):
            ctx.state["tenant"] = request.metadata.get("tenant")
            return await call_next(request, ctx)

        pipeline.append(hook(tag))
    """
    if not inspect.iscoroutinefunction(func) and not inspect.iscoroutinefunction(
        getattr(func, "__call__", None)  # noqa: B004 - an object with an async __call__ is fine too
    ):
        raise TypeError(
            f"hook() needs an async function taking (request, ctx, call_next), got {func!r}"
        )
    return Layer(FunctionMiddleware, name=name or getattr(func, "__name__", "hook"), func=func)


class Pipeline:
    """An ordered list of :class:`Layer`\\ s, outermost (nearest the caller) first.

    Build it once into a chain with :meth:`build`; no list is walked per call. The editing methods return
    the pipeline, so they chain::

        pipeline = (Pipeline([Layer(LoggingMiddleware), Layer(RetryMiddleware)])
                    .insert_after(RetryMiddleware, Layer(CircuitBreakerMiddleware))
                    .append(hook(my_hook)))
        handler = pipeline.build(leaf)   # logging -> retry -> breaker -> my_hook -> leaf
    """

    __slots__ = ("_layers",)

    def __init__(self, layers: Iterable[Layer | MiddlewareFactory] = ()) -> None:
        self._layers: list[Layer] = [self._as_layer(x) for x in layers]

    @staticmethod
    def _as_layer(x: Layer | MiddlewareFactory) -> Layer:
        if isinstance(x, Layer):
            return x
        return Layer(x)

    # -- inspection ------------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Layer]:
        return iter(tuple(self._layers))

    def __len__(self) -> int:
        return len(self._layers)

    def __getitem__(self, index: int) -> Layer:
        return self._layers[index]

    def __contains__(self, ref: object) -> bool:
        if not (isinstance(ref, str) or callable(ref)):
            return False
        return any(layer.matches(ref) for layer in self._layers)

    def names(self) -> list[str]:
        """The layer names, outermost first."""
        return [layer.name for layer in self._layers]

    def index(self, ref: LayerRef) -> int:
        """Position of the first layer matching ``ref`` (a class, factory or name)."""
        for i, layer in enumerate(self._layers):
            if layer.matches(ref):
                return i
        have = ", ".join(self.names()) or "nothing"
        wanted = ref if isinstance(ref, str) else getattr(ref, "__name__", repr(ref))
        raise LookupError(f"no middleware {wanted!r} in this pipeline; it has: {have}")

    def copy(self) -> Pipeline:
        return Pipeline(self._layers)

    # -- editing ---------------------------------------------------------------------------------------

    def append(self, layer: Layer | MiddlewareFactory) -> Pipeline:
        """Add innermost, next to the provider call."""
        self._layers.append(self._as_layer(layer))
        return self

    def prepend(self, layer: Layer | MiddlewareFactory) -> Pipeline:
        """Add outermost, nearest the caller."""
        self._layers.insert(0, self._as_layer(layer))
        return self

    def insert(self, index: int, layer: Layer | MiddlewareFactory) -> Pipeline:
        """Insert at a position (0 is outermost)."""
        self._layers.insert(index, self._as_layer(layer))
        return self

    def insert_before(self, ref: LayerRef, layer: Layer | MiddlewareFactory) -> Pipeline:
        """Insert just outside (nearer the caller than) the layer named by ``ref``."""
        self._layers.insert(self.index(ref), self._as_layer(layer))
        return self

    def insert_after(self, ref: LayerRef, layer: Layer | MiddlewareFactory) -> Pipeline:
        """Insert just inside (nearer the provider than) the layer named by ``ref``."""
        self._layers.insert(self.index(ref) + 1, self._as_layer(layer))
        return self

    def replace(self, ref: LayerRef, layer: Layer | MiddlewareFactory) -> Pipeline:
        self._layers[self.index(ref)] = self._as_layer(layer)
        return self

    def remove(self, ref: LayerRef) -> Pipeline:
        del self._layers[self.index(ref)]
        return self

    # -- building --------------------------------------------------------------------------------------

    def build(self, leaf: Handler) -> Handler:
        """Wrap ``leaf`` in every layer, innermost first, and return the outermost handler."""
        if not callable(leaf):
            raise TypeError(f"Pipeline.build needs the leaf handler, got {leaf!r}")
        handler = leaf
        for layer in reversed(self._layers):
            handler = layer.build(handler)
        return handler

    def describe(self) -> str:
        """The onion from outside in, one layer a line."""
        lines = ["caller"]
        lines += [f"  -> {layer!r}" for layer in self._layers]
        lines.append("  -> provider")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return "Pipeline([" + ", ".join(repr(layer) for layer in self._layers) + "])"
