"""Where a provider token may be sent (README "Provider hosts"; docs/operations.md, ``APPT_PROVIDER_HOST_ALLOWLIST``).

A provider base URL (``ghl_api_base_url`` / ``calendly_api_base_url``) is allowed when it is

* the provider's own host over https on the default port — ``services.leadconnectorhq.com``,
  ``api.calendly.com`` — or
* ``http(s)://host:port`` whose ``host:port`` is in the operator's allow-list (``host:*`` allows every
  port of that host; meant for loopback simulators whose ports are chosen at start).

Link-local addresses (169.254.0.0/16, fe80::/10) and cloud-metadata names and addresses are refused even
when listed. The URL may carry a path but no user info, query or fragment. Pure functions: the caller
reads the allow-list from the environment (``appt_pipeline.settings.provider_host_allowlist``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

#: The providers' own API hosts (https, default port).
PROVIDER_HOSTS: frozenset[str] = frozenset({"services.leadconnectorhq.com", "api.calendly.com"})

#: Cloud-metadata names and addresses (GCP, AWS IPv6, Alibaba, Azure/AWS/GCP 169.254.169.254 is link-local).
METADATA_HOSTS: frozenset[str] = frozenset({
    "metadata.google.internal", "metadata.goog", "metadata", "instance-data", "instance-data.ec2.internal",
    "100.100.100.200", "fd00:ec2::254", "169.254.169.254", "169.254.170.2",
})

_LINK_LOCAL = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))


class ProviderHostError(ValueError):
    """A base URL a provider token must never be sent to; the message names the rule."""


@dataclass(frozen=True)
class HostAllowlist:
    """Parsed ``APPT_PROVIDER_HOST_ALLOWLIST``: ``(host, port)`` pairs; ``port`` ``None`` means any port."""

    entries: frozenset[tuple[str, int | None]] = frozenset()

    def allows(self, host: str, port: int) -> bool:
        return (host, port) in self.entries or (host, None) in self.entries


def parse_allowlist(text: str | None) -> HostAllowlist:
    """Parse a comma-separated list of ``host:port`` (or ``host:*``; IPv6 as ``[::1]:8080``).

    Raises:
        ProviderHostError: an entry without a port or with a port that is not 1–65535.
    """
    entries: set[tuple[str, int | None]] = set()
    for raw in (text or "").split(","):
        item = raw.strip()
        if not item:
            continue
        host, sep, port_text = item.rpartition(":")
        if not sep or not host:
            raise ProviderHostError(f"APPT_PROVIDER_HOST_ALLOWLIST entry {item!r} must be host:port")
        host = host.strip("[]").lower()
        if port_text == "*":
            entries.add((host, None))
            continue
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ProviderHostError(f"APPT_PROVIDER_HOST_ALLOWLIST entry {item!r}: port must be 1-65535 or *")
        entries.add((host, int(port_text)))
    return HostAllowlist(frozenset(entries))


def _is_metadata_or_link_local(host: str) -> bool:
    if host in METADATA_HOSTS:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_link_local or any(address in net for net in _LINK_LOCAL) or str(address) in METADATA_HOSTS


def check_provider_url(
    url: str, allowlist: HostAllowlist, *, what: str = "provider base URL", request: bool = False
) -> None:
    """Raise unless a provider token may be sent to ``url`` (rules in the module docstring); ``request``:
    ``url`` is a request URL (may carry a query), not a stored base URL.

    Raises:
        ProviderHostError: the message names the URL's host and the rule that refused it (never a token).
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ProviderHostError(f"{what} {url!r} is not a valid URL") from None
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        raise ProviderHostError(f"{what} {url!r} must be an http(s) URL with a host")
    if parts.username is not None or parts.password is not None or (not request and (parts.query or parts.fragment)):
        raise ProviderHostError(f"{what} {url!r} must not carry user info, a query or a fragment")
    if _is_metadata_or_link_local(host):
        raise ProviderHostError(
            f"{what} host {host!r} is link-local or a cloud-metadata address: never allowed, even when listed"
        )
    effective_port = port if port is not None else (443 if parts.scheme == "https" else 80)
    if host in PROVIDER_HOSTS and parts.scheme == "https" and effective_port == 443:
        return
    if allowlist.allows(host, effective_port):
        return
    raise ProviderHostError(
        f"{what} {host}:{effective_port} is not allowed: provider tokens go only to "
        f"https://{' or https://'.join(sorted(PROVIDER_HOSTS))} or a host:port listed in APPT_PROVIDER_HOST_ALLOWLIST"
    )


def allowlist_of(entries: Iterable[str]) -> HostAllowlist:
    """A :class:`HostAllowlist` of ``host:port`` strings (convenience for code that starts simulators)."""
    return parse_allowlist(",".join(entries))
