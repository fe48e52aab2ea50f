"""Numbers read from text that came from outside: headers, query strings, path parameters.

``int()`` is lenient in ways a wire format must not be: it takes any Unicode digit
(``int("٣")`` is 3, while ``"²".isdigit()`` is true and ``int("²")`` raises), underscores
(``"1_000"``), surrounding whitespace and a sign. Everything that turns outside text into a
number goes through here, and accepts only ASCII digits.
"""

from __future__ import annotations

import re

__all__ = ["MAX_DIGITS", "parse_integer", "parse_non_negative_int", "parse_number"]

MAX_DIGITS = 18
"""Digits accepted: every such number fits in a signed 64-bit integer."""

_NON_NEGATIVE = re.compile(rf"[0-9]{{1,{MAX_DIGITS}}}")
_INTEGER = re.compile(rf"-?[0-9]{{1,{MAX_DIGITS}}}")
_NUMBER = re.compile(r"-?[0-9]{1,300}(\.[0-9]{1,300})?([eE][-+]?[0-9]{1,3})?")


def parse_non_negative_int(text: str | None) -> int | None:
    """``text`` as a number of ASCII digits, or ``None`` when it is anything else."""
    if text is None or not _NON_NEGATIVE.fullmatch(text):
        return None
    return int(text)


def parse_integer(text: str | None) -> int | None:
    """``text`` as an integer of ASCII digits with an optional ``-``, else ``None``."""
    if text is None or not _INTEGER.fullmatch(text):
        return None
    return int(text)


def parse_number(text: str | None) -> float | None:
    """``text`` as a finite decimal number written in ASCII, else ``None``."""
    if text is None or not _NUMBER.fullmatch(text):
        return None
    number = float(text)
    return number if abs(number) != float("inf") else None
