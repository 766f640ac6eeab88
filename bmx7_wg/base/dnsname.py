"""The DNS name rule: which mesh node names and which names' domain can go into a hosts file."""

from __future__ import annotations

import re

_LABEL_RE = re.compile(r"\A[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")


def dns_label(name: str) -> str | None:
    """`name` lower-cased if it is then a DNS label (RFC 1123 host name label), else None.

    ASCII only: `str.lower` maps some non-ASCII letters onto ASCII ones (the Kelvin
    sign onto "k"), so a name that only looks like another is never taken for it."""
    if not name.isascii():
        return None
    lowered = name.lower()
    return lowered if _LABEL_RE.match(lowered) else None


def domain_problem(domain: str) -> str | None:
    """Why `domain` cannot be the names' domain (lower-case labels joined by dots), or None."""
    if not domain:
        return "is empty"
    if len(domain) > 190:  # leaves room for a 63-character label: 253 in all
        return "is longer than 190 characters"
    if domain != domain.lower():
        return "must be written in lower case (host names are compared case-insensitively)"
    bad = next((label for label in domain.split(".") if dns_label(label) != label), None)
    if bad is not None:
        return (
            f"has {bad!a}, which is not a DNS label "
            "(1-63 characters of a-z, 0-9 and '-', not at either end)"
        )
    return None
