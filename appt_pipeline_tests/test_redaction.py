"""PII masking (SPEC §11; docs/original-system.md §13): e-mails and phone-like digit runs."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appt_pipeline.domain.redaction import EMAIL_MASK, PHONE_MASK, mask_pii


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("GHL API error: 400 - jane.doe@example.com exists", f"GHL API error: 400 - {EMAIL_MASK} exists"),
        ("two: a@b.co and first.last+tag@sub.example.org.", f"two: {EMAIL_MASK} and {EMAIL_MASK}."),
        ("UPPER@EXAMPLE.COM", EMAIL_MASK),
        ("query invitee_email=lead%40example.com&count=100", f"query invitee_email={EMAIL_MASK}&count=100"),
        ("GET http://127.0.0.1:8000/contacts/search/duplicate?locationId=l1&email=ann@example.com",
         f"GET http://127.0.0.1:8000/contacts/search/duplicate?locationId=l1&email={EMAIL_MASK}"),
        ("'quoted@example.com'", f"'{EMAIL_MASK}'"),
        ("call +1 (555) 123-4567 today", f"call {PHONE_MASK} today"),
        ("+44 20 7946 0958", PHONE_MASK),
        ("tel 555.123.4567", f"tel {PHONE_MASK}"),
        ("+15551234567", PHONE_MASK),
        ("mixed a@b.com / +1 555 123 4567", f"mixed {EMAIL_MASK} / {PHONE_MASK}"),
    ],
)
def test_masks_emails_and_phones(text: str, expected: str) -> None:
    assert mask_pii(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "The access token is invalid",
        "slot 2026-03-05T15:00:00.000Z is no longer available",
        "startTime 2026-01-06T09:00:00-07:00 on 2026-01-06",
        "429 after 3 attempts, 12 leads, 500 / 60 s",
        "https://api.calendly.com/scheduled_events/GBGBDCAADAEDCRZ2/invitees",
        "room 12-34",
        "on 2026-03-05. Then 2026-03-06, 2026-03-07-ish",
        "",
    ],
)
def test_keeps_text_without_pii(text: str) -> None:
    assert mask_pii(text) == text


def test_none_and_non_strings() -> None:
    assert mask_pii(None) == ""
    assert mask_pii(42) == "42"
    masked = mask_pii({"e": "x@y.io"})
    assert "x@y.io" not in masked and EMAIL_MASK in masked


def test_idempotent() -> None:
    once = mask_pii("a@b.com +1 555 123 4567")
    assert mask_pii(once) == once


@settings(max_examples=300, deadline=None)
@given(prefix=st.text(max_size=30), email=st.emails(), suffix=st.text(max_size=30))
def test_no_generated_email_survives(prefix: str, email: str, suffix: str) -> None:
    masked = mask_pii(prefix + email + suffix)
    assert email not in masked
    assert email.lower() not in masked.lower()


@settings(max_examples=200, deadline=None)
@given(email=st.emails())
def test_email_alone_is_fully_masked(email: str) -> None:
    for text in (email, email.replace("@", "%40")):
        masked = mask_pii(text)
        assert masked.endswith(EMAIL_MASK) and "@" not in masked and "%40" not in masked
        if not any(c in email.split("@")[0] for c in "/?=&#'"):
            assert masked == EMAIL_MASK


@settings(max_examples=200, deadline=None)
@given(
    plus=st.booleans(),
    groups=st.lists(st.text("0123456789", min_size=2, max_size=4), min_size=3, max_size=5),
    sep=st.sampled_from([" ", "-", ".", ""]),
)
def test_no_generated_phone_survives(plus: bool, groups: list[str], sep: str) -> None:
    phone = ("+" if plus else "") + sep.join(groups)
    digits = sum(c.isdigit() for c in phone)
    masked = mask_pii(f"call {phone} now")
    if digits >= 9:
        assert phone not in masked
        assert PHONE_MASK in masked
