import pytest

from micro._numbers import parse_integer, parse_non_negative_int, parse_number


@pytest.mark.parametrize("text", ["0", "7", "000123", "9" * 18])
def test_ascii_digits_are_numbers(text: str) -> None:
    assert parse_non_negative_int(text) == int(text)
    assert parse_integer(text) == int(text)
    assert parse_integer("-" + text) == -int(text)


@pytest.mark.parametrize(
    "text", [None, "", "²", "٣", "1_000", " 1", "1 ", "+1", "-1", "1.0", "0x1", "9" * 19]
)
def test_anything_else_is_not_a_non_negative_int(text: str | None) -> None:
    assert parse_non_negative_int(text) is None


@pytest.mark.parametrize("text", ["²", "٣", "1_0", "--1", "- 1", "1e3"])
def test_an_integer_is_ascii_digits_with_an_optional_minus(text: str) -> None:
    assert parse_integer(text) is None


@pytest.mark.parametrize(("text", "value"), [("1.5", 1.5), ("-2", -2.0), ("1e3", 1000.0)])
def test_decimal_numbers_parse(text: str, value: float) -> None:
    assert parse_number(text) == value


@pytest.mark.parametrize("text", ["nan", "inf", "-Infinity", "1e999", "٣.5", "1_0.5", " 1"])
def test_no_nan_infinity_or_unicode_digits(text: str) -> None:
    assert parse_number(text) is None
