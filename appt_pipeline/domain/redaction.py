"""PII masking for provider error text and anything else that may be logged or stored (SPEC §7, §11).

Pure: no I/O. The rule is the original's (docs/original-system.md §13), made a little stricter:

* e-mail-like substrings → ``[redacted-email]``. The local part is RFC 5322 ``atext`` without the
  URL and quoting delimiters ``/ ? = & # '`` (letters, digits and ``!$%*+^_`{|}~.-``), so a URL or
  query string keeps its path and only the address goes; the separator is ``@`` or its URL-encoded
  form ``%40`` (``invitee_email=a%40b.com`` is masked too); the domain is one or more dot-separated
  labels of letters, digits and ``-``. An address whose local part holds one of the excluded
  characters is masked from that character on (``@`` and domain always go; a bare ``@domain`` too).
* phone-like digit runs → ``[redacted-phone]``: an optional ``+``, a digit, at least seven of
  digits / spaces / ``( ) . / -``, then a digit — and, unlike the original, at least seven digits
  in all, so short codes and counts survive. ISO-8601 dates and timestamps (``2026-03-05``,
  ``2026-03-05T15:00:00.000Z``) are kept: they are not phone numbers and error texts need them.

Masking never raises; ``None`` and non-text inputs are converted with ``str`` first.
"""

import re

EMAIL_MASK = "[redacted-email]"
PHONE_MASK = "[redacted-phone]"

_ATEXT = r"A-Za-z0-9!$%*+^_`{|}~.\-"
_EMAIL = re.compile(
    rf"[{_ATEXT}]*(?:@|%40)[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9\-]+)*",
    re.IGNORECASE,
)
#: An ISO date or timestamp (kept) or a phone-like run (masked); the date alternative comes first so a
#: timestamp is consumed whole before the phone rule could see its digits.
_ISO_OR_PHONE = re.compile(
    r"(?P<iso>\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?)(?!\d|[-./]\d)"
    r"|(?P<phone>\+?\d[\d\s().\-/]{7,}\d)"
)
_MIN_PHONE_DIGITS = 7


def _phone_or_keep(match: re.Match[str]) -> str:
    if match.group("iso") is not None:
        return match.group(0)
    text = match.group("phone")
    if sum(ch.isdigit() for ch in text) < _MIN_PHONE_DIGITS:
        return text
    return PHONE_MASK


def mask_pii(text: object) -> str:
    """Return ``text`` with e-mail addresses and phone numbers masked.

    Args:
        text: any value; ``None`` gives ``""``, other non-strings are converted with ``str``.

    Returns:
        The text with every e-mail-like substring replaced by ``[redacted-email]`` and every
        phone-like digit run by ``[redacted-phone]`` (docs/original-system.md §13; SPEC §11).
    """
    if text is None:
        return ""
    value = text if isinstance(text, str) else str(text)
    value = _EMAIL.sub(EMAIL_MASK, value)
    return _ISO_OR_PHONE.sub(_phone_or_keep, value)


#: Staging payload keys whose values are identifiers, URIs, hashes or times by construction (SPEC §7 whitelist):
#: their digit runs are not phone numbers. E-mail patterns are looked for everywhere.
_ID_KEYS = frozenset({"id", "uri", "event", "old_invitee", "new_invitee", "event_type", "email_hash", "webhookId",
                      "locationId", "calendarId", "contactId", "created_by"})


def _has_phone(text: str) -> bool:
    return any(m.group("phone") is not None and sum(ch.isdigit() for ch in m.group("phone")) >= _MIN_PHONE_DIGITS
               for m in _ISO_OR_PHONE.finditer(text))


def pii_fields(payload: object, path: str = "") -> list[str]:
    """Dotted paths of the values in a staged payload (``webhook_events.payload``, a JSON value) that look like an
    e-mail address or a phone number — the ``staging_pii`` drift check (SPEC §10, §11). Never returns values.

    E-mail patterns (the :func:`mask_pii` rule) count in every string; phone patterns in every string except the
    identifiers, URIs and hashes the whitelist keeps verbatim (their digit runs are not phone numbers) and
    ISO-8601 times. An already masked value (``[redacted-email]``) is not PII.
    """
    found: list[str] = []
    if isinstance(payload, dict):
        for key, value in payload.items():
            sub = f"{path}.{key}" if path else str(key)
            if isinstance(value, str) and key in _ID_KEYS:
                if _EMAIL.search(value):
                    found.append(sub)
            else:
                found.extend(pii_fields(value, sub))
    elif isinstance(payload, list):
        for i, value in enumerate(payload):
            found.extend(pii_fields(value, f"{path}[{i}]"))
    elif (isinstance(payload, str) and not payload.startswith(("https://", "http://")) and (
            _EMAIL.search(payload) or _has_phone(payload))) or (isinstance(payload, str) and _EMAIL.search(payload)):
        found.append(path)
    return found
