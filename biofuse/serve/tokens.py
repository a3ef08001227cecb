"""Analyst API tokens: who holds them, in which role, and only their sha256 kept.

An entry is `NAME[:ROLE]=TOKEN`, `NAME[:ROLE]=sha256:HEX` (the token's digest, so that a
config file need not hold the token itself) or a bare `TOKEN`; ROLE is `analyst` (the
default) or `admin` (may also read the audit log). Tokens come from a tokens file, the
environment or biofuse.toml, never from the command line (`ps` shows every argument).
No message here ever contains a token.

Imports nothing of the web stack: `biofuse.config` hashes entries as it loads them.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from biofuse.errors import ConfigError

ROLES = ("analyst", "admin")
MIN_TOKEN_CHARS = 16
_HASHED = re.compile(r"^sha256:[0-9a-f]{64}$")
_NAME = re.compile(r"^[\w.@-]{1,64}$")


@dataclass(frozen=True)
class Principal:
    name: str  # what the audit log records
    role: str  # analyst | admin


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def new_token() -> str:
    """A fresh random token (256 bits, URL-safe, no `=`)."""
    return secrets.token_urlsafe(32)


def _split(entry: str, where: str) -> tuple[str, str, str]:
    """(name, role, token) of one entry; `where` names it in errors (never the token)."""
    head, sep, token = entry.partition("=")
    if not sep:
        head, token = "", entry
    name, _, role = head.strip().partition(":")
    name, role, token = name.strip(), role.strip() or "analyst", token.strip()
    label = f"API token {name} ({where})" if name else f"API token {where}"
    if name and not _NAME.match(name):
        raise ConfigError(f"API token {where}: a name is letters, digits, '.', '@', '_' or '-'")
    if role not in ROLES:
        raise ConfigError(f"{label}: unknown role {role[:20]!r}; use analyst or admin")
    if not token:
        raise ConfigError(f"{label}: empty token; use NAME[:ROLE]=TOKEN")
    if not _HASHED.match(token) and len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(
            f"{label}: too short ({len(token)} characters, at least {MIN_TOKEN_CHARS}); "
            "`biofuse serve --new-token NAME` makes one"
        )
    return name, role, token


def hash_entry(entry: str, where: str = "entry") -> str:
    """`NAME:ROLE=sha256:HEX` for any entry form: what settings keep instead of the token."""
    name, role, token = _split(entry, where)
    hexdigest = token.removeprefix("sha256:") if _HASHED.match(token) else digest(token)
    return f"{name or 'token-' + hexdigest[:8]}:{role}=sha256:{hexdigest}"


def parse_tokens(entries: list[str]) -> dict[str, Principal]:
    """sha256 of a token -> who holds it; a bare token is audited as its short digest."""
    out: dict[str, Principal] = {}
    for n, entry in enumerate(entries, 1):
        name, role, token = _split(hash_entry(entry, f"entry {n}"), f"entry {n}")
        out[token.removeprefix("sha256:")] = Principal(name, role)
    return out


def read_tokens_file(path: Path) -> list[str]:
    """Entries of a tokens file: one `NAME[:ROLE]=TOKEN` a line, `#` comments, blank lines.

    Refused when others may read it (chmod 600 or 640): the tokens are in plain text there.
    """
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"tokens file {path} is not a regular file")
        if info.st_mode & stat.S_IROTH:
            raise ConfigError(
                f"tokens file {path} is readable by every user; chmod o-rwx {path} (e.g. 600)"
            )
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read tokens file {path}: {exc.strerror}") from exc
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(hash_entry(line, f"on line {number} of {path}"))
    return out
