"""Outbound URLs: resolve the host first and refuse the addresses a URL must never reach.

    check_url("https://judge.example.com/v1", what="judge")   # the resolved addresses, or UnsafeURLError
    client = guarded_client(timeout=30)                       # httpx.Client that re-checks every request

Link-local and cloud metadata addresses (169.254.0.0/16, fe80::/10, fd00:ec2::254, ...), the
unspecified address, multicast and reserved ranges are refused always. Loopback (127.0.0.0/8, ::1)
and private ranges (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7) are refused unless
`TUNELOOP_ALLOW_URLS` allows them: a comma list of `loopback`, `private`, CIDR blocks
(`10.1.0.0/16`) and host names (`judge.internal`, matched exactly, still never link-local).
The host of `OPENAI_BASE_URL` counts as configured: the operator put it there.

Every address a name resolves to must pass (a name with one public and one private address is
refused). `guarded_client` re-checks each request, redirects included, before it is sent. A name
that resolves differently between the check and the connection (DNS rebinding) is not caught.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit

from tuneloop.errors import ValidationError

ALLOW_ENV = "TUNELOOP_ALLOW_URLS"

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_NEVER = [ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "240.0.0.0/4", "255.255.255.255/32",
    "192.0.0.0/24",                                   # IETF protocol assignments (incl. 192.0.0.192 metadata)
    "100.100.100.200/32",                             # Alibaba Cloud metadata
    "::/128", "fe80::/10", "ff00::/8", "fd00:ec2::254/128", "64:ff9b::/96", "2001:db8::/32")]
_LOOPBACK = [ipaddress.ip_network(n) for n in ("127.0.0.0/8", "::1/128")]
_PRIVATE = [ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "198.18.0.0/15", "fc00::/7")]


class UnsafeURLError(ValidationError):
    """A URL that points where tuneloop does not send requests."""

    code = "unsafe_url"


def _resolve(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to (tests replace this with a stub resolver)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({info[4][0] for info in infos})


resolver: Callable[[str, int], list[str]] = _resolve


def _allowances() -> tuple[set[str], list[ipaddress.IPv4Network | ipaddress.IPv6Network], set[str]]:
    words, nets, hosts = set(), [], set()
    for item in (os.environ.get(ALLOW_ENV) or "").split(","):
        item = item.strip().lower()
        if not item:
            continue
        if item in ("loopback", "private"):
            words.add(item)
            continue
        try:
            nets.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            hosts.add(item)
    base = os.environ.get("OPENAI_BASE_URL")
    if base:
        host = urlsplit(base).hostname
        if host:
            hosts.add(host.lower())
    return words, nets, hosts


def _in(addr: Address, nets: Iterable) -> bool:
    return any(addr.version == n.version and addr in n for n in nets)


def address_problem(addr: Address, host: str) -> str | None:
    """Why `addr` (what `host` resolved to) is refused, or None."""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if _in(addr, _NEVER):
        return "a link-local, metadata or reserved address"
    words, nets, hosts = _allowances()
    if _in(addr, nets) or host.lower() in hosts:
        return None
    if _in(addr, _LOOPBACK) and "loopback" not in words:
        return "a loopback address"
    if _in(addr, _PRIVATE) and "private" not in words:
        return "a private-network address"
    return None


def check_url(url: str, *, what: str = "URL", schemes: tuple[str, ...] = ("http", "https")) -> list[str]:
    """Resolve `url`'s host and return its addresses, or raise UnsafeURLError saying why not.
    Sends nothing."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise UnsafeURLError(f"The {what} {url!r} is not a valid URL: {e}.") from None
    if parts.scheme.lower() not in schemes:
        raise UnsafeURLError(f"The {what} {url!r} must use {' or '.join(schemes)}, not {parts.scheme or 'no scheme'}.")
    host = parts.hostname
    if not host:
        raise UnsafeURLError(f"The {what} {url!r} names no host.")
    if parts.username or parts.password:
        raise UnsafeURLError(f"The {what} {url!r} carries credentials in the URL.",
                             hint="Pass credentials through the environment (e.g. TUNELOOP_REWARD_HTTP_TOKEN), "
                                  "never inside a URL.")
    port = port or (443 if parts.scheme.lower() == "https" else 80)
    literal = True
    try:
        addresses = [str(ipaddress.ip_address(host))]
    except ValueError:
        literal = False
        try:
            addresses = resolver(host, port)
        except (OSError, UnicodeError) as e:
            raise UnsafeURLError(f"The {what} {url!r}: host {host} does not resolve ({e}).",
                                 hint="Check the host name, or that this machine's DNS reaches it.") from None
    if not addresses:
        raise UnsafeURLError(f"The {what} {url!r}: host {host} resolves to no address.")
    for a in addresses:
        problem = address_problem(ipaddress.ip_address(a.split("%", 1)[0]), host)
        if problem:
            local = "link-local" not in problem
            where = f"{host} is {problem}" if literal else f"{host} resolves to {a}, {problem}"
            raise UnsafeURLError(
                f"Refusing the {what} {url!r}: {where}.",
                hint=(f"If this endpoint is yours, allow it with {ALLOW_ENV}=loopback (or private, a CIDR such as "
                      f"10.0.0.0/8, or the host name {host}).") if local else
                     "Requests to link-local and cloud metadata addresses are never sent.",
                param="url")
    return addresses


def guarded_client(**kwargs: Any):
    """An httpx.Client whose every request (each redirect too) passes `check_url` first."""
    import httpx

    def check(request: httpx.Request) -> None:
        check_url(str(request.url), what="request URL")

    hooks = dict(kwargs.pop("event_hooks", None) or {})
    hooks["request"] = [check, *hooks.get("request", [])]
    return httpx.Client(event_hooks=hooks, **kwargs)
