import pytest
from hypothesis import given
from hypothesis import strategies as st

from micro.bus.subjects import check_name, command_subject, decode_name, encode_name


@given(st.text(min_size=1, max_size=60))
def test_name_encoding_is_reversible(name: str) -> None:
    assert decode_name(encode_name(name)) == name


@given(st.text(min_size=1, max_size=30), st.text(min_size=1, max_size=30))
def test_different_names_get_different_tokens(first: str, second: str) -> None:
    if first != second:
        assert encode_name(first) != encode_name(second)


@given(st.text(min_size=1, max_size=60))
def test_a_token_is_one_valid_subject_token(name: str) -> None:
    token = encode_name(name)
    assert token
    assert not any(char in token for char in ". *>\t\r\n")


def test_common_names_stay_readable() -> None:
    assert command_subject("micro", "multiply two numbers") == "micro.cmd.multiply_two_numbers"


@pytest.mark.parametrize(
    ("name", "reason"),
    [("", "empty"), ("   ", "empty"), ("x" * 201, "limit is 200"), ("a\nb", "control character")],
)
def test_invalid_command_names_are_refused_with_the_reason(name: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        check_name(name)
