"""The policy server's metrics, rendered in Prometheus' text exposition format (version 0.0.4).

No client library: three small instrument types and :class:`ServerMetrics`, the
fixed set the server keeps. Every update happens on the server's event loop
thread, so the instruments need no locks.
"""

import math
from collections.abc import Sequence

import attrs

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

ERROR_KINDS = ("bad_message", "input", "too_big", "internal", "unauthorized")
"""Why a request or handshake was refused; one ``openpi_errors_total`` series each.

``bad_message``: not a msgpack map (garbage, a text frame, another type);
``input``: the policy refused the observation; ``too_big``: over ``max_message_bytes``;
``internal``: the policy raised something else (code 1011); ``unauthorized``: a
handshake without the right API key.
"""


def _format(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(int(value)) if float(value).is_integer() else repr(float(value))


def _header(name: str, help_text: str, kind: str) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]


@attrs.define
class Counter:
    """A monotonically increasing count, optionally split by one label."""

    name: str
    help: str
    label: str | None = None
    values: dict[str, float] = attrs.field(factory=dict)

    def inc(self, label_value: str = "", amount: float = 1.0) -> None:
        self.values[label_value] = self.values.get(label_value, 0.0) + amount

    def render(self) -> list[str]:
        lines = _header(self.name, self.help, "counter")
        if self.label is None:
            lines.append(f"{self.name} {_format(self.values.get('', 0.0))}")
        else:
            lines += [f'{self.name}{{{self.label}="{key}"}} {_format(v)}' for key, v in sorted(self.values.items())]
        return lines


@attrs.define
class Gauge:
    """A value that goes up and down."""

    name: str
    help: str
    value: float = 0.0

    def add(self, amount: float) -> None:
        self.value += amount

    def render(self) -> list[str]:
        return [*_header(self.name, self.help, "gauge"), f"{self.name} {_format(self.value)}"]


@attrs.define
class Histogram:
    """Counts of observations at or below each upper bound, plus their sum and count."""

    name: str
    help: str
    bounds: Sequence[float]
    counts: list[int] = attrs.field()
    sum: float = 0.0
    count: int = 0

    @counts.default
    def _zero_counts(self) -> list[int]:
        return [0] * len(self.bounds)

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
        self.sum += value
        self.count += 1

    def render(self) -> list[str]:
        lines = _header(self.name, self.help, "histogram")
        for bound, count in zip(self.bounds, self.counts, strict=True):
            lines.append(f'{self.name}_bucket{{le="{_format(bound)}"}} {count}')
        lines.append(f'{self.name}_bucket{{le="+Inf"}} {self.count}')
        lines.append(f"{self.name}_sum {_format(self.sum)}")
        lines.append(f"{self.name}_count {self.count}")
        return lines


@attrs.define
class ServerMetrics:
    """Everything ``GET /metrics`` reports."""

    requests: Counter = attrs.field(factory=lambda: Counter("openpi_requests_total", "Observations received."))
    errors: Counter = attrs.field(
        factory=lambda: Counter(
            "openpi_errors_total",
            "Requests and handshakes refused, by kind.",
            label="kind",
            values=dict.fromkeys(ERROR_KINDS, 0.0),
        )
    )
    batch_size: Histogram = attrs.field(
        factory=lambda: Histogram(
            "openpi_batch_size", "Observations per policy.run call.", (1, 2, 4, 8, 16, 32, 64, 128)
        )
    )
    latency: Histogram = attrs.field(
        factory=lambda: Histogram(
            "openpi_request_latency_seconds",
            "From an observation's arrival to its answer being sent.",
            (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
        )
    )
    in_flight: Gauge = attrs.field(
        factory=lambda: Gauge("openpi_requests_in_flight", "Observations received and not yet answered.")
    )
    connections: Gauge = attrs.field(factory=lambda: Gauge("openpi_connections", "Open websocket connections."))

    def render(self) -> str:
        """The text exposition of every instrument, newline-terminated."""
        instruments = (self.requests, self.errors, self.batch_size, self.latency, self.in_flight, self.connections)
        return "\n".join(line for instrument in instruments for line in instrument.render()) + "\n"
