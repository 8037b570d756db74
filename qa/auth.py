"""Who may use the chat, and who may change its documents: a users file for `qa serve --auth`.

One user a line, tab-separated: name, role, and a salted password hash

    张三	editor	pbkdf2_sha256$600000$<salt hex>$<hash hex>

Roles: `reader` may ask questions; `editor` may also upload and remove documents. Passwords are
never stored, only PBKDF2-SHA256 hashes with a random salt; a check takes the same time whether
the name exists or not. The file is written atomically, readable by its owner only
(`qa users add NAME --role editor --auth FILE`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from qa.cache import write_atomic
from qa.errors import QAError

Role = Literal["reader", "editor"]
ROLES: tuple[Role, ...] = ("reader", "editor")
ITERATIONS = 600_000  # OWASP's figure for PBKDF2-SHA256 (2023): ~0.3 s a login on this CPU
MIN_PASSWORD = 8
_NAME = re.compile(r"[^\s:]{1,64}")


class AuthError(QAError):
    """The users file is missing or malformed, or a user or password is not acceptable."""


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: Role
    hashed: str  # pbkdf2_sha256$iterations$salt$hash


def hash_password(password: str, *, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    """`pbkdf2_sha256$iterations$salt$hash` of `password` (a new random salt unless given)."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    return f"pbkdf2_sha256${iterations}${salt.hex()}${digest.hex()}"


def _matches(password: str, hashed: str) -> bool:
    try:
        scheme, iterations, salt, digest = hashed.split("$")
        if scheme != "pbkdf2_sha256":
            return False
        again = hash_password(password, salt=bytes.fromhex(salt), iterations=int(iterations))
    except ValueError:
        return False
    return hmac.compare_digest(again.rsplit("$", 1)[1], digest)


class Users:
    """The users of one server, read from its users file."""

    def __init__(self, users: dict[str, User]) -> None:
        self._users = users
        self._dummy = ""  # what an unknown name is checked against, made on first use

    @classmethod
    def load(cls, path: str | Path) -> Users:
        """Read a users file (raises AuthError naming the line and the fix)."""
        file = Path(path)
        users = _read(file)
        if not users:
            raise AuthError(
                f"The users file {file} holds no user. Add one: qa users add NAME --role editor --auth {file}"
            )
        return cls(users)

    def __len__(self) -> int:
        return len(self._users)

    def check(self, name: str, password: str) -> bool:
        """Whether `password` is `name`'s (as long for an unknown name: no timing tells names apart)."""
        user = self._users.get(name)
        if user is None and not self._dummy:
            self._dummy = hash_password(secrets.token_hex(8))
        ok = _matches(password, user.hashed if user else self._dummy)
        return ok and user is not None

    def role(self, name: str | None) -> Role | None:
        user = self._users.get(name or "")
        return user.role if user else None

    def save(self, path: str | Path) -> None:
        """Write the users file atomically, readable and writable by its owner only."""
        lines = ["# qa users: NAME<TAB>reader|editor<TAB>password hash (qa users add)"]
        lines += [f"{u.name}\t{u.role}\t{u.hashed}" for u in self._users.values()]
        write_atomic(Path(path), ("\n".join(lines) + "\n").encode("utf-8"), mode=0o600)


def _read(file: Path) -> dict[str, User]:
    """The users of a users file, by name (raises AuthError naming the line and the fix)."""
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise AuthError(
            f"The users file {file} cannot be read ({exc}). Create it with: qa users add NAME --role editor "
            f"--auth {file}"
        ) from exc
    users: dict[str, User] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) != 3 or parts[1] not in ROLES or not parts[2].startswith("pbkdf2_sha256$"):
            raise AuthError(
                f"{file}, line {number}: expected NAME<TAB>reader|editor<TAB>pbkdf2_sha256$…; "
                f"write users with: qa users add NAME --role editor --auth {file}"
            )
        users[parts[0]] = User(parts[0], parts[1], parts[2])  # type: ignore[arg-type]
    return users


def add_user(path: str | Path, name: str, password: str, role: Role = "reader") -> None:
    """Add a user to the users file (created if missing), or give an existing one a new
    password and role (raises AuthError for an unusable name, role or password)."""
    if not _NAME.fullmatch(name):
        raise AuthError(f"A user name is 1 to 64 characters without spaces or ':', not {name!r}.")
    if role not in ROLES:
        raise AuthError(f"A role is reader or editor, not {role!r}.")
    if len(password) < MIN_PASSWORD:
        raise AuthError(f"A password has at least {MIN_PASSWORD} characters.")
    file = Path(path)
    existing = _read(file) if file.exists() else {}
    Users({**existing, name: User(name, role, hash_password(password))}).save(file)
