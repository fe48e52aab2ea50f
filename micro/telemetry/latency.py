"""A latency histogram cheap enough to record every request, for ``$SRV.STATS``.

Buckets are log-linear: each power of two is cut in four, so a percentile read back is
within 12.5% of the true value, whatever the scale (a microsecond or a minute). Recording
is a few integer operations and one list increment: no allocation, no lock (one event loop
writes it).
"""

from __future__ import annotations

__all__ = ["LatencyHistogram"]

_SUB_BITS = 2
_SUB = 1 << _SUB_BITS
_BUCKETS = 64 * _SUB + _SUB


class LatencyHistogram:
    """Counts of durations in nanoseconds, in log-linear buckets."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * _BUCKETS
        self.total = 0

    def record(self, nanoseconds: int) -> None:
        bits = nanoseconds.bit_length()
        if bits > _SUB_BITS + 1:
            # the top bit is implied by ``bits``; the next two pick the quarter
            index = (bits << _SUB_BITS) | ((nanoseconds >> (bits - _SUB_BITS - 1)) & (_SUB - 1))
        else:
            index = nanoseconds if nanoseconds > 0 else 0
        self.counts[index] += 1
        self.total += 1

    def percentile(self, fraction: float) -> int:
        """The duration (ns) below which ``fraction`` of the recorded ones lie; 0 when empty."""
        if not self.total:
            return 0
        rank = max(1, round(fraction * self.total))
        seen = 0
        for index, count in enumerate(self.counts):
            seen += count
            if seen >= rank:
                return _middle(index)
        return _middle(len(self.counts) - 1)  # pragma: no cover - rank <= total

    def summary(self) -> dict[str, float]:
        """p50, p90 and p99 in milliseconds, as ``$SRV.STATS`` endpoint data shows them."""
        return {
            "p50_ms": round(self.percentile(0.50) / 1e6, 3),
            "p90_ms": round(self.percentile(0.90) / 1e6, 3),
            "p99_ms": round(self.percentile(0.99) / 1e6, 3),
        }


def _middle(index: int) -> int:
    bits, quarter = index >> _SUB_BITS, index & (_SUB - 1)
    if bits <= _SUB_BITS + 1:
        return index
    width = 1 << (bits - _SUB_BITS - 1)
    low = (_SUB | quarter) * width
    return low + width // 2
