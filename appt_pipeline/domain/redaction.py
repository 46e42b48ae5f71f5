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
