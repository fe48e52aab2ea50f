"""Wrong security settings are a ConfigError naming the setting (and the path), never the secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from micro import ConfigError, Micro, Settings
from micro.bus.nats_client import ConnectOptions
from micro.testing.secure_nats import Certificates, Operator


def _options(**values: object) -> ConnectOptions:
    return ConnectOptions.from_settings(Settings(**values))  # type: ignore[arg-type]


def test_a_missing_tls_file_names_the_setting_and_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "ca.pem"
    with pytest.raises(ConfigError) as caught:
        _options(nats_tls_ca=missing)
    assert "MICRO_NATS_TLS_CA" in caught.value.message
    assert str(missing) in caught.value.message
    assert caught.value.details == {"setting": "nats_tls_ca", "path": str(missing)}


def test_a_tls_key_that_does_not_match_its_certificate_names_the_settings(
    certificates: Certificates,
) -> None:
    with pytest.raises(ConfigError) as caught:
        _options(nats_tls_cert=certificates.client_cert, nats_tls_key=certificates.server_key)
    assert "MICRO_NATS_TLS_CERT/MICRO_NATS_TLS_KEY" in caught.value.message


def test_a_certificate_without_its_key_is_refused(certificates: Certificates) -> None:
    with pytest.raises(ConfigError) as caught:
        _options(nats_tls_cert=certificates.client_cert)
    assert "MICRO_NATS_TLS_KEY" in caught.value.message


def test_a_malformed_creds_file_names_the_setting_and_the_path(tmp_path: Path) -> None:
    creds = tmp_path / "app.creds"
    creds.write_text("-----BEGIN NATS USER JWT-----\nnot-a-jwt\n------END NATS USER JWT------\n")
    with pytest.raises(ConfigError) as caught:
        _options(nats_creds=creds)
    assert "MICRO_NATS_CREDS" in caught.value.message
    assert str(creds) in caught.value.message


def test_a_creds_file_whose_seed_is_not_a_seed_is_refused_without_quoting_it(
    tmp_path: Path,
) -> None:
    user = Operator().user("app", tmp_path)
    broken = tmp_path / "broken.creds"
    broken.write_text(user.creds.read_text().replace(user.seed, "SUNOTASEED" + "A" * 48))
    with pytest.raises(ConfigError) as caught:
        _options(nats_creds=broken)
    assert "does not hold an NKey seed" in caught.value.message
    assert "SUNOTASEED" not in caught.value.message


def test_a_seed_file_that_holds_no_seed_names_the_setting(tmp_path: Path) -> None:
    seed = tmp_path / "user.nk"
    seed.write_text("hello, I am not a seed\n")
    with pytest.raises(ConfigError) as caught:
        _options(nats_nkey_seed=seed)
    assert "MICRO_NATS_NKEY_SEED" in caught.value.message
    assert caught.value.details == {"setting": "nats_nkey_seed", "path": str(seed)}
    assert "hello" not in caught.value.message


def test_a_user_without_a_password_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        _options(nats_user="app")
    assert "MICRO_NATS_PASSWORD" in caught.value.message


async def test_a_service_with_a_missing_creds_file_fails_to_open_with_that_error(
    tmp_path: Path,
) -> None:
    micro = Micro(nats_url="nats://127.0.0.1:1", embedded=False, nats_creds=tmp_path / "x.creds")
    with pytest.raises(ConfigError) as caught:
        await micro.open()
    assert caught.value.details["setting"] == "nats_creds"


def test_secrets_are_secret_strings() -> None:
    settings = Settings(nats_user="app", nats_password="pw-123456789", nats_token="tok-123456789")
    assert "pw-123456789" not in repr(settings)
    assert "tok-123456789" not in repr(settings)
