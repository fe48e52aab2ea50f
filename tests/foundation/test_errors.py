import builtins

import pytest

from micro import errors


def test_errors_mix_in_the_builtin_they_mean() -> None:
    assert issubclass(errors.TimeoutError, builtins.TimeoutError)
    assert issubclass(errors.ValidationError, ValueError)
    assert issubclass(errors.ConfigError, ValueError)
    assert issubclass(errors.ServiceNotFoundError, LookupError)
    assert issubclass(errors.UnavailableError, ConnectionError)


@pytest.mark.parametrize(
    "cls",
    [errors.ValidationError, errors.RuleViolation, errors.ConcurrencyError, errors.TimeoutError],
)
def test_a_registered_error_survives_the_wire(cls: type[errors.MicroError]) -> None:
    original = cls("it broke", details={"field": "x"}, service="bank", trace_id="abc", hops=2)
    rebuilt = errors.MicroError.from_wire(original.to_wire(), status=original.status)
    assert type(rebuilt) is cls
    assert rebuilt.message == "it broke"
    assert rebuilt.details == {"field": "x"}
    assert (rebuilt.service, rebuilt.trace_id, rebuilt.hops) == ("bank", "abc", 2)
    assert rebuilt.retryable == original.retryable


def test_an_unknown_code_becomes_a_remote_error_keeping_the_code() -> None:
    body = {"error": {"code": "martian", "message": "no", "retryable": True}}
    rebuilt = errors.MicroError.from_wire(body, status=418)
    assert isinstance(rebuilt, errors.RemoteError)
    assert rebuilt.remote_code == "martian"
    assert rebuilt.remote_status == 418
    assert rebuilt.retryable is True


def test_a_malformed_error_body_still_becomes_an_error() -> None:
    assert isinstance(errors.MicroError.from_wire("garbage"), errors.RemoteError)
