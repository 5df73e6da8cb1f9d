"""Which URLs a webhook may POST to, and the address each attempt connects to.

A target is refused (422 when registering; a failed attempt when delivering) if:
- its scheme is not http or https, or it carries a user name or password;
- its host resolves to no address, or to any address that is not public (private, loopback,
  link-local, shared, multicast, reserved or unspecified) — unless
  COMM_WEBHOOK_ALLOW_PRIVATE=true, for local use and tests.

Against DNS rebinding (a name that resolves to a public address when checked and to a
private one when used), each attempt resolves the host itself, checks every address, and
connects to the checked address: the request goes to that IP, with the original `Host`
header and, for https, the original name for SNI and certificate checks.
"""

import asyncio
import ipaddress
import re
import socket
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

import httpx

URL_MAX_LEN = 2048
# A host name: dot-separated labels of letters, digits and hyphens (after IDNA encoding).
HOST_NAME = re.compile(r"(?=.{1,253}\.?$)[A-Za-z0-9-]{1,63}(\.[A-Za-z0-9-]{1,63})*\.?")


class TargetRefused(ValueError):
    """The URL may not be a webhook's target; the message says why."""


def check_url(url: str) -> SplitResult:
    """The URL's parts if its form is allowed (no DNS); else TargetRefused."""
    try:
        parts = urlsplit(url)
        port = parts.port
        httpx.URL(url)  # what the attempts will send to: httpx must take it too
    except (ValueError, httpx.InvalidURL) as exc:
        raise TargetRefused(f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise TargetRefused("the URL must start with http:// or https://")
    if parts.username is not None or parts.password is not None:
        raise TargetRefused("the URL may not carry a user name or password")
    if not parts.hostname:
        raise TargetRefused("the URL has no host")
    if ip_literal(parts.hostname) is None and not HOST_NAME.fullmatch(_ascii(parts.hostname)):
        raise TargetRefused(f"{parts.hostname!r} is not a host name")
    if port == 0:
        raise TargetRefused("the URL's port must be 1-65535")
    return parts


def _ascii(host: str) -> str:
    try:
        return host.encode("idna").decode()
    except UnicodeError:
        return ""


def ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether an address is on the public internet (an IPv4-mapped IPv6 one as its IPv4)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


@dataclass(frozen=True, slots=True)
class Target:
    """Where an attempt connects: `url` (with the checked IP as its host unless private
    targets are allowed), the `Host` header and the name for TLS (SNI, certificate)."""

    url: str
    host_header: str | None = None
    sni_hostname: str | None = None


async def resolve(url: str, *, allow_private: bool) -> Target:
    """The target to connect to for `url`, resolved on the event loop (no blocking call);
    TargetRefused if it is not allowed."""
    parts = check_url(url)
    host = parts.hostname or ""
    if allow_private:
        return Target(url)
    literal_address = ip_literal(host)
    if literal_address is not None:
        if not is_public(literal_address):
            raise TargetRefused(
                f"{host} is a private, loopback or link-local address; set "
                "COMM_WEBHOOK_ALLOW_PRIVATE=true to allow that"
            )
        return Target(url)  # nothing to resolve, nothing to rebind
    port = parts.port or (443 if parts.scheme == "https" else 80)
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise TargetRefused(f"the host {host!r} does not resolve: {exc}") from None
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
    if not addresses:
        raise TargetRefused(f"the host {host!r} does not resolve")
    refused = sorted({str(a) for a in addresses if not is_public(a)})
    if refused:
        raise TargetRefused(
            f"the host {host!r} resolves to a private, loopback or link-local address "
            f"({', '.join(refused)}); set COMM_WEBHOOK_ALLOW_PRIVATE=true to allow that"
        )
    address = addresses[0]
    literal = f"[{address}]" if address.version == 6 else str(address)
    netloc = f"{literal}:{parts.port}" if parts.port else literal
    pinned = parts._replace(netloc=netloc).geturl()
    name = _ascii(host)
    host_header = f"{name}:{parts.port}" if parts.port else name
    return Target(pinned, host_header=host_header, sni_hostname=name)
