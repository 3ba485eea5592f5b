"""Account rules: what counts as an email address and a strong enough password."""

import grpc
import pytest

from octavia_runtime.errors import ApiError
from services.auth.accounts import check_password_strength, normalize_email


def test_emails_are_trimmed_and_lower_cased():
    assert normalize_email("  Ada@Example.COM ") == "ada@example.com"


@pytest.mark.parametrize("email", ["", "ada", "ada@", "@example.com", "ada@example", "a b@example.com", "a@@example.com"])
def test_malformed_emails_are_invalid_argument(email):
    with pytest.raises(ApiError) as caught:
        normalize_email(email)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "email" in caught.value.fields


@pytest.mark.parametrize("password", ["short1", "onlyletterslong", "1234567890", "x" * 129 + "1"])
def test_weak_passwords_are_refused_with_reason(password):
    with pytest.raises(ApiError) as caught:
        check_password_strength(password)
    assert caught.value.reason == "WEAK_PASSWORD"


def test_a_reasonable_password_passes():
    check_password_strength("correct horse 9")
