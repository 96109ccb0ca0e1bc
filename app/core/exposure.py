"""Whether the service may start as configured: never an open write API on a public address.

Writes (and model administration) are guarded by LOOKALIKE_API_KEY. Without it, every route is open to
whoever reaches the port, which is fine on a loopback address (a laptop, a test) and never elsewhere,
unless the operator says so with LOOKALIKE_ALLOW_UNAUTHENTICATED=true (a trusted network, a proxy that
authenticates).
"""

from __future__ import annotations

import ipaddress
import logging

from app.core.settings import Settings, SettingsError

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


def is_loopback(host: str) -> bool:
    """True for a loopback address or name; False for anything else (0.0.0.0, ::, a public name or address)."""
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a host name that is not localhost: it may resolve to anything


def refusal(settings: Settings) -> str | None:
    """The one line that stops start-up, or None when the service may start as configured."""
    if settings.api_key is not None or settings.allow_unauthenticated or is_loopback(settings.host):
        return None
    return (
        f"refusing to serve on {settings.host} without LOOKALIKE_API_KEY: anyone who reaches the port could "
        "delete items and retire models. Set LOOKALIKE_API_KEY (e.g. `openssl rand -hex 32`), listen on "
        "127.0.0.1 (LOOKALIKE_HOST), or set LOOKALIKE_ALLOW_UNAUTHENTICATED=true on a trusted network"
    )


def open_warning(settings: Settings) -> str | None:
    """The warning logged at start when the write API is open on purpose (ALLOW_UNAUTHENTICATED, no key)."""
    if settings.api_key is None and settings.allow_unauthenticated:
        return (
            f"LOOKALIKE_ALLOW_UNAUTHENTICATED=true and no LOOKALIKE_API_KEY: writes and model administration "
            f"on {settings.host}:{settings.port} are open to anyone who reaches the port"
        )
    return None


def check(settings: Settings) -> None:
    """Raise SettingsError (one line, exit 2 from `python -m app`) when start-up must be refused; log the
    warning when the API is open on purpose."""
    refused = refusal(settings)
    if refused is not None:
        raise SettingsError(refused)
    warning = open_warning(settings)
    if warning is not None:
        logging.getLogger("lookalike").warning(warning)
