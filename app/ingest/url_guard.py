"""Which image URLs and network addresses the fetcher may use (the SSRF policy). Pure functions, no I/O.

Two layers: `check_url` refuses a URL by its shape (scheme, credentials, odd numeric host spellings)
before anything is resolved; `address_allowed` judges every address a host resolves to, and
app/ingest/fetch.py connects only to an address that passed it. The second layer is the one that matters:
whatever spelling or parser trick a URL uses, the socket only ever goes to a checked public address.
"""

from __future__ import annotations

import ipaddress
import re

import httpx

from app.core.errors import UrlNotAllowed

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# Not a setting: an image URL past this is not one a marketplace hands out (common browser and CDN limit).
MAX_URL_LENGTH = 2048
SCHEMES = ("http", "https")

# Ranges that Python's `is_global` (3.11) still calls global, or that embed an IPv4 address whose
# own verdict must decide. Each is refused outright or unwrapped below.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # well-known NAT64 prefix: last 32 bits are IPv4
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")  # local-use NAT64 (RFC 8215)
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # deprecated ::a.b.c.d form
_TEREDO = ipaddress.IPv6Network("2001::/32")
_SHARED_V4 = ipaddress.IPv4Network("100.64.0.0/10")  # carrier-grade NAT; cloud metadata lives here too

# A host made only of digits, hex and dots is an IP address in some spelling (decimal 2130706433,
# octal 0177.0.0.1, hex 0x7f.1, short 127.1). Only the canonical dotted quad is accepted.
_NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]*))*\.?$", re.IGNORECASE)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_allowed(ip: IPAddress) -> bool:
    """True only for a public unicast address (IPv6 forms that carry an IPv4 address are judged by it)."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return False
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            return address_allowed(embedded)
        if ip in _IPV4_COMPATIBLE or ip in _TEREDO or ip in _NAT64_LOCAL:
            return False
    elif ip in _SHARED_V4:
        return False
    return ip.is_global and not (
        ip.is_multicast
        or ip.is_private
        or ip.is_reserved
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_unspecified
        or (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local)
    )


def parse_ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def is_localhost_name(host: str) -> bool:
    """`localhost`, `localhost.` and any `*.localhost` name, in any case (RFC 6761 section 6.3)."""
    name = host.lower().rstrip(".")
    return name == "localhost" or name.endswith(".localhost")


def check_url(url: str) -> httpx.URL:
    """Parse an image URL the way the HTTP client will, refusing what is not allowed by its shape alone."""
    if len(url) > MAX_URL_LENGTH:
        raise UrlNotAllowed(f"the image URL is longer than {MAX_URL_LENGTH} characters")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise UrlNotAllowed(f"the image URL cannot be parsed: {exc}") from None
    if parsed.scheme not in SCHEMES:
        raise UrlNotAllowed(f"only http and https image URLs are allowed, got {parsed.scheme or 'none'!r}")
    host = parsed.host
    if not host:
        raise UrlNotAllowed("the image URL has no host")
    if parsed.userinfo:
        # Credentials in an image URL are never needed and are the classic `good.com@evil` disguise.
        raise UrlNotAllowed("image URLs must not carry a user name or password")
    if is_localhost_name(host):
        # RFC 6761: these names always mean this machine. Refused by name, before any lookup and
        # whatever FETCH_ALLOW_PRIVATE says (that flag is for address literals such as 127.0.0.1).
        raise UrlNotAllowed(f"the image host {host!r} names this machine")
    if "%" in host or "\\" in host:
        raise UrlNotAllowed(f"the image host {host!r} is not a plain host name")
    if _NUMERIC_HOST.match(host) and (parse_ip(host) is None or str(parse_ip(host)) != host):
        raise UrlNotAllowed(f"the image host {host!r} is an IP address in a non-canonical spelling")
    return parsed
