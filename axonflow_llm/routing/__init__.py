"""Routing: one provider in front of several, with strategies, failover, cooldowns and health checks."""

from .failover import failover_reason
from .routed_stream import RoutedStream
from .router import Router
from .strategies import (
    STRATEGIES,
    LowestCostStrategy,
    Member,
    PriorityStrategy,
    RoundRobinStrategy,
    RoutingStrategy,
    WeightedStrategy,
)

__all__ = [
    "STRATEGIES",
    "LowestCostStrategy",
    "Member",
    "PriorityStrategy",
    "RoundRobinStrategy",
    "RoutedStream",
    "Router",
    "RoutingStrategy",
    "WeightedStrategy",
    "failover_reason",
]
