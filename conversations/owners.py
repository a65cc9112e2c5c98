"""Who owns a conversation: anonymous browser tokens signed with a server secret, or ``--auth`` user names.

An anonymous visitor gets ``"<owner_id>.<signature>"`` (kept in a cookie or local storage by the UI); only the
server, which holds ``data_dir/secret.key``, can make a signature that ``verify`` accepts, so nobody can claim an
owner id they were not given. Logged-in users map to a fixed owner id derived from their user name.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import tempfile
from pathlib import Path

SECRET_NAME = "secret.key"
SECRET_BYTES = 32
SIGNATURE_HEX = 32
TOKEN_MAX = 128
_TOKEN = re.compile(r"(anon-[0-9a-f]{24})\.([0-9a-f]{32})")
_SLUG_UNSAFE = re.compile(r"[^a-z0-9]+")


def _create_exclusive(path: Path, data: bytes) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _write_secret(path: Path) -> None:
    """Create the secret file with mode 0600 in one step; if another process got there first, keep theirs."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)  # mkstemp creates the file with mode 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(SECRET_BYTES))
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # fails if the file exists: never replaces a secret already in use
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links: an exclusive create instead
            _create_exclusive(path, Path(tmp).read_bytes())
    finally:
        Path(tmp).unlink(missing_ok=True)


def load_secret(data_dir: Path) -> bytes:
    """The server secret from ``data_dir/secret.key``, created on first use."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / SECRET_NAME
    if not path.exists():
        _write_secret(path)
    secret = path.read_bytes()
    if len(secret) != SECRET_BYTES:
        raise RuntimeError(
            f"{path} is damaged ({len(secret)} bytes instead of {SECRET_BYTES}); delete it to make a new one "
            "(visitors without an account then lose access to their conversations)."
        )
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)
    return secret


def user_owner(username: str) -> str:
    """The owner id of an ``--auth`` user: deterministic, and safe whatever characters the name has."""
    if not isinstance(username, str):
        raise TypeError("the user name must be text")
    raw = username.encode("utf-8", "surrogatepass")
    slug = _SLUG_UNSAFE.sub("-", username.lower()).strip("-")[:20].strip("-")
    digest = hashlib.sha256(b"user:" + raw).hexdigest()[:24]
    return f"user-{slug}-{digest}" if slug else f"user-{digest}"


class OwnerTokens:
    def __init__(self, data_dir: Path):
        self._secret = load_secret(data_dir)

    def _sign(self, owner_id: str) -> str:
        mac = hmac.new(self._secret, b"owner:" + owner_id.encode("ascii"), hashlib.sha256)
        return mac.hexdigest()[:SIGNATURE_HEX]

    def new_token(self) -> str:
        """A new anonymous owner, as a signed token ``"anon-<24 hex>.<signature>"``."""
        owner_id = "anon-" + secrets.token_hex(12)
        return f"{owner_id}.{self._sign(owner_id)}"

    def verify(self, token) -> str | None:
        """The owner id of a well-formed token signed with this server's secret; None for anything else."""
        if not isinstance(token, str) or len(token) > TOKEN_MAX:
            return None
        match = _TOKEN.fullmatch(token)
        if match is None:
            return None
        owner_id, signature = match.groups()
        return owner_id if hmac.compare_digest(signature, self._sign(owner_id)) else None

    def user_owner(self, username: str) -> str:
        return user_owner(username)


class Owners:
    """Who is asking: the logged-in user, or the anonymous owner a browser or session holds; always recorded."""

    def __init__(self, tokens: OwnerTokens, store):
        self.tokens = tokens
        self.store = store

    def current(self, owner_state, username: str | None = None) -> str:
        """The caller's owner id: the logged-in user, else this session's anonymous owner, else a new one."""
        if username:
            owner = self.tokens.user_owner(username)
        elif isinstance(owner_state, str) and owner_state.startswith("anon-"):
            owner = owner_state
        else:
            owner = self.tokens.verify(self.tokens.new_token())
        self.store.ensure_owner(owner)
        return owner

    def restore(self, token, username: str | None = None) -> tuple[str, str | None]:
        """Owner and (new) browser token from the value kept in the browser; anything invalid starts afresh."""
        if username:
            return self.current(None, username), None
        owner = self.tokens.verify(token) if isinstance(token, str) else None
        if owner is None:
            token = self.tokens.new_token()
            owner = self.tokens.verify(token)
        self.store.ensure_owner(owner)
        return owner, token
