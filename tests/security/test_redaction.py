"""Connection secrets never reach a log line: passwords in URLs, seeds, JWTs, private keys."""

from __future__ import annotations

from pathlib import Path

from micro.log import REDACTED, redact_text
from micro.testing.secure_nats import Operator, make_certificates


def test_user_info_in_a_url_is_redacted() -> None:
    text = redact_text("cannot reach nats://bank:hunter2-long@10.0.0.1:4222 now")
    assert "hunter2-long" not in text
    assert f"nats://{REDACTED}@10.0.0.1:4222" in text


def test_seeds_jwts_and_whole_creds_files_are_redacted(tmp_path: Path) -> None:
    user = Operator().user("app", tmp_path)
    for text in (f"seed {user.seed} here", f"jwt={user.jwt}", user.creds.read_text()):
        redacted = redact_text(text)
        assert user.seed not in redacted
        assert user.jwt not in redacted


def test_pem_private_keys_are_redacted(tmp_path: Path) -> None:
    certificates = make_certificates(tmp_path)
    key = certificates.client_key.read_text()
    redacted = redact_text(f"loaded {key} and more")
    assert "PRIVATE KEY" not in redacted
    assert key.splitlines()[1] not in redacted
    assert redacted.endswith(" and more")
