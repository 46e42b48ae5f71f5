"""Webhook signatures of both providers: verification (the intake service) and signing (the simulators).

Pure: no I/O; keys and bodies in, a verdict out. All checks run on the raw request bytes, before any
JSON parsing (SPEC §7).

* Calendly — header ``Calendly-Webhook-Signature: t=<unix seconds>,v1=<hex>``; the signature is
  HMAC-SHA256(signing key, ``t + "." + raw_body``) in hex, compared in constant time; a ``t`` more
  than 180 s away from now (either direction) is rejected; no other variant is accepted (the
  original's extra candidates and base64 forms are not, docs/original-system.md §6.2). Source:
  docs/providers.md §2.6 (developer.calendly.com, webhook signatures).
* GHL — ``X-GHL-Signature``: base64 Ed25519 signature over the raw body, verified with the
  configured public key; the legacy ``x-wh-signature`` (base64 RSASSA-PKCS1-v1_5 + SHA-256) only
  when a legacy RSA public key is configured for the workspace. Replay window on the body's
  ``timestamp`` (:func:`ghl_replay_verdict`, after parsing): 5 min, extended to 24 h for a ``webhookId``
  never seen (GHL retries a 429 about 10 min later with the original timestamp); a seen ``webhookId`` is a
  duplicate whatever its age (rules §7). Source: docs/providers.md §1.5 (GHL-WH-AUTH, GHL-SDK
  ``webhook-manager.ts``).
"""

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

#: Calendly's tolerance for ``t`` (seconds; docs/providers.md §2.6, SPEC §7).
CALENDLY_TOLERANCE_S = 180
#: GHL's replay window on the body's ``timestamp`` (seconds; SPEC §7, GHL-WH-AUTH §3); also the tolerance for a
#: ``timestamp`` ahead of our clock.
GHL_REPLAY_WINDOW_S = 300
#: The extended window for a ``webhookId`` never seen (seconds; SPEC §7 revised: GHL's 429 retries keep the
#: original ``timestamp``).
GHL_RETRY_WINDOW_S = 24 * 3600
#: How long dedupe keys of ``webhook_events`` are kept at least (seconds; SPEC §7: 30 days). Longer than
#: :data:`GHL_RETRY_WINDOW_S`, so a delivery old enough to have lost its key is refused as stale.
DEDUPE_RETENTION_S = 30 * 24 * 3600

CALENDLY_SIGNATURE_HEADER = "Calendly-Webhook-Signature"
GHL_SIGNATURE_HEADER = "X-GHL-Signature"
GHL_LEGACY_SIGNATURE_HEADER = "x-wh-signature"


class SignatureError(ValueError):
    """A delivery that fails authentication (HTTP 401). ``reason`` is a short code safe to log and return:
    ``no_key``, ``missing_signature``, ``malformed_signature``, ``bad_signature``, ``stale_timestamp``,
    ``legacy_signature_disabled``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# ------------------------------------------------------------------------------------------- Calendly


def calendly_signature(signing_key: str, body: bytes, t: int) -> str:
    """The ``Calendly-Webhook-Signature`` header value for ``body`` signed at unix time ``t`` (seconds)."""
    digest = hmac.new(signing_key.encode(), str(t).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def _parse_calendly_header(header: str) -> tuple[int, str]:
    parts: dict[str, str] = {}
    for item in header.split(","):
        name, sep, value = item.strip().partition("=")
        if not sep:
            raise SignatureError("malformed_signature")
        parts.setdefault(name.strip(), value.strip())
    t_raw, v1 = parts.get("t"), parts.get("v1")
    if not t_raw or not v1 or not t_raw.isdigit() or len(t_raw) > 12:
        raise SignatureError("malformed_signature")
    return int(t_raw), v1


def verify_calendly(header: str | None, body: bytes, signing_key: str | None, *, now: float,
                    tolerance_s: int = CALENDLY_TOLERANCE_S) -> int:
    """Check a Calendly delivery; return its signing time ``t`` (unix seconds).

    Args:
        header: the ``Calendly-Webhook-Signature`` value (``None`` when absent).
        body: the raw request body, byte-exact.
        signing_key: the workspace's webhook signing key (``None`` when not configured).
        now: the current unix time (seconds).

    Raises:
        SignatureError: no key configured, header missing or malformed, signature mismatch, or
            ``|now - t| > tolerance_s`` (checked after the signature, so a forged ``t`` never passes).
    """
    if not signing_key:
        raise SignatureError("no_key")
    if not header:
        raise SignatureError("missing_signature")
    t, v1 = _parse_calendly_header(header)
    expected = hmac.new(signing_key.encode(), str(t).encode() + b"." + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, v1.lower()):
        raise SignatureError("bad_signature")
    if abs(now - t) > tolerance_s:
        raise SignatureError("stale_timestamp")
    return t


# ------------------------------------------------------------------------------------------------ GHL


@dataclass(frozen=True)
class GhlKeys:
    """The public keys a workspace accepts GHL deliveries with: Ed25519 (``X-GHL-Signature``) and, only when
    configured, the legacy RSA key (``x-wh-signature``)."""

    ed25519: Ed25519PublicKey | None
    legacy_rsa: RSAPublicKey | None = None

    @cached_property
    def ed25519_verifier(self) -> VerifyKey | None:
        """The Ed25519 key for libsodium (PyNaCl): it verifies in ~70 µs where OpenSSL through
        ``cryptography`` takes ~170 µs on this machine — half the intake's CPU for a GHL delivery."""
        if self.ed25519 is None:
            return None
        raw = self.ed25519.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return VerifyKey(raw)


def load_public_key(text: str) -> Ed25519PublicKey | RSAPublicKey:
    """A public key from PEM (``-----BEGIN PUBLIC KEY-----``) or base64 SubjectPublicKeyInfo DER (the form
    GHL prints, e.g. ``MCowBQYDK2VwAyEA…``).

    Raises:
        ValueError: not a PEM/DER public key, or neither Ed25519 nor RSA.
    """
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode())
        else:
            key = serialization.load_der_public_key(base64.b64decode("".join(text.split()), validate=True))
    except (ValueError, TypeError, binascii.Error) as exc:
        raise ValueError("not a PEM or base64 DER public key") from exc
    if not isinstance(key, Ed25519PublicKey | RSAPublicKey):
        raise ValueError(f"unsupported public key type {type(key).__name__}")
    return key


def public_key_text(key: Ed25519PublicKey | RSAPublicKey) -> str:
    """``key`` as base64 SubjectPublicKeyInfo DER (one line; what ``secrets set`` stores)."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


def ghl_ed25519_signature(private_key: Ed25519PrivateKey, body: bytes) -> str:
    """The ``X-GHL-Signature`` value: base64 Ed25519 signature of ``body``."""
    return base64.b64encode(private_key.sign(body)).decode()


def ghl_rsa_signature(private_key: RSAPrivateKey, body: bytes) -> str:
    """The legacy ``x-wh-signature`` value: base64 RSASSA-PKCS1-v1_5 SHA-256 signature of ``body``."""
    return base64.b64encode(private_key.sign(body, padding.PKCS1v15(), hashes.SHA256())).decode()


def _b64(value: str) -> bytes:
    try:
        return base64.b64decode(value.strip(), validate=True)
    except (ValueError, binascii.Error) as exc:
        raise SignatureError("malformed_signature") from exc


def verify_ghl(body: bytes, *, signature: str | None, legacy_signature: str | None, keys: GhlKeys) -> str:
    """Check a GHL delivery's signature on the raw ``body``; return the scheme used (``ed25519``/``rsa``).

    ``X-GHL-Signature`` wins when present; ``x-wh-signature`` is tried only without it, and only when
    ``keys.legacy_rsa`` is configured.

    Raises:
        SignatureError: no key, no signature, undecodable base64, or a signature that does not verify.
    """
    if signature:
        verifier = keys.ed25519_verifier
        if verifier is None:
            raise SignatureError("no_key")
        raw_signature = _b64(signature)
        try:
            verifier.verify(body, raw_signature)
        except (BadSignatureError, ValueError, TypeError) as exc:  # ValueError: not 64 bytes
            raise SignatureError("bad_signature") from exc
        return "ed25519"
    if legacy_signature:
        if keys.legacy_rsa is None:
            raise SignatureError("legacy_signature_disabled")
        try:
            keys.legacy_rsa.verify(_b64(legacy_signature), body, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature as exc:
            raise SignatureError("bad_signature") from exc
        return "rsa"
    if keys.ed25519 is None and keys.legacy_rsa is None:
        raise SignatureError("no_key")
    raise SignatureError("missing_signature")


#: :func:`ghl_replay_verdict` answers: within 5 min; within 24 h (accepted: the dedupe key makes it at most
#: once); older (accepted only as a duplicate of a stored ``webhookId``).
GHL_FRESH = "fresh"
GHL_RETRY = "retry"
GHL_EXPIRED = "expired"


def ghl_replay_verdict(timestamp: datetime, *, now: datetime, window_s: int = GHL_REPLAY_WINDOW_S,
                       retry_window_s: int = GHL_RETRY_WINDOW_S) -> str:
    """Where a GHL delivery's body ``timestamp`` (UTC) falls in the replay window (SPEC §7 revised).

    Returns :data:`GHL_FRESH` (at most ``window_s`` seconds old), :data:`GHL_RETRY` (at most
    ``retry_window_s`` seconds old: a provider retry; applied unless its ``webhookId`` is already stored,
    which the dedupe key decides) or :data:`GHL_EXPIRED` (older: the caller answers it as a duplicate when
    its ``webhookId`` is stored, else refuses it with ``stale_timestamp``).

    Raises:
        SignatureError: ``stale_timestamp`` when ``timestamp`` is more than ``window_s`` seconds ahead of
            ``now`` (a clock cannot be that far off; GHL never sends future timestamps).
    """
    age = (now - timestamp).total_seconds()
    if age < -window_s:
        raise SignatureError("stale_timestamp")
    if age <= window_s:
        return GHL_FRESH
    if age <= retry_window_s:
        return GHL_RETRY
    return GHL_EXPIRED


def check_ghl_timestamp(timestamp: datetime, *, now: datetime, seen: bool = False) -> None:
    """Refuse a GHL delivery outside the replay window of :func:`ghl_replay_verdict`: a ``timestamp`` more than
    5 min ahead, or more than 24 h old unless its ``webhookId`` was ``seen`` (stored) before.

    Raises:
        SignatureError: ``stale_timestamp``.
    """
    if ghl_replay_verdict(timestamp, now=now) == GHL_EXPIRED and not seen:
        raise SignatureError("stale_timestamp")


#: Shortest Calendly webhook signing key accepted when stored (Calendly issues 43-character base64url keys).
MIN_SIGNING_KEY_CHARS = 16


def validate_secret(name: str, value: str) -> None:
    """Refuse a webhook key that could never verify a delivery, before it is stored (docs/rules.md §7).

    ``ghl_webhook_public_key`` must be an Ed25519 public key and ``ghl_webhook_legacy_public_key`` an RSA
    one (PEM or base64 SubjectPublicKeyInfo, see :func:`load_public_key`); ``calendly_webhook_signing_key``
    must be one word of at least :data:`MIN_SIGNING_KEY_CHARS` printable ASCII characters. Provider tokens
    are opaque and only checked for being one printable word. The value never appears in the message.

    Raises:
        ValueError: what is wrong with the value.
    """
    text = value.strip()
    if name in ("ghl_webhook_public_key", "ghl_webhook_legacy_public_key"):
        expected = Ed25519PublicKey if name == "ghl_webhook_public_key" else RSAPublicKey
        try:
            key = load_public_key(text)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc} (expected PEM '-----BEGIN PUBLIC KEY-----' or base64 DER)") from None
        if not isinstance(key, expected):
            kind = "Ed25519" if expected is Ed25519PublicKey else "RSA"
            raise ValueError(f"{name}: an {type(key).__name__.removeprefix('_')} key, expected an {kind} public key")
        return
    if not text or any(c.isspace() for c in text) or not text.isascii() or not text.isprintable():
        raise ValueError(f"{name}: expected one word of printable ASCII characters (no spaces or line breaks)")
    if name == "calendly_webhook_signing_key" and len(text) < MIN_SIGNING_KEY_CHARS:
        raise ValueError(f"{name}: too short ({len(text)} characters) for a Calendly signing key "
                         f"(at least {MIN_SIGNING_KEY_CHARS})")
