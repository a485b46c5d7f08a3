"""The record of what is done: which inputs the output holds, and with what content.

An input is identified by its name, size and modification time, or with ``--hash`` by its name,
size and the SHA-256 of its bytes instead of the time (for collections copied with new times, or
edited in place within one time tick). The record is not a separate file: it is read back from the output's complete chunks
(:mod:`ferlab.collection.store`), whose rows carry these columns, so that the output and the
record of it can never disagree. In memory it is one small integer per name.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

HASH_BLOCK = 1 << 20
NEW, DONE, CHANGED = "new", "done", "changed"


@dataclass(frozen=True, slots=True)
class Identity:
    """What an input's content is known by: ``size`` in bytes, ``mtime_ns``, and ``sha256``
    (hex) when ``--hash`` is on, else None."""

    size: int
    mtime_ns: int
    sha256: str | None = None

    def key(self) -> int:
        """A compact fingerprint (48 bits) of what the content is known by: size and hash when
        there is a hash (a copy with new times is the same input), else size and time."""
        known = (self.size, self.sha256) if self.sha256 is not None else (self.size, self.mtime_ns)
        return hash(known) & 0xFFFF_FFFF_FFFF


def sha256_of(path: str) -> str:
    """The SHA-256 (hex) of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


class Ledger:
    """Which inputs are done, each with its identity's fingerprint and the chunk holding its rows.

    One int per name (the fingerprint in the low 48 bits, the chunk number above), so that a
    million inputs take about 150 bytes each, most of it the names themselves.
    """

    def __init__(self) -> None:
        self._done: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._done)

    def record(self, name: str, identity: Identity, chunk: int) -> None:
        """``name`` with ``identity`` is done; its rows are in chunk number ``chunk``."""
        self._done[name] = (chunk << 48) | identity.key()

    def status(self, name: str, identity: Identity) -> str:
        """:data:`NEW` (never done), :data:`DONE` (done with this content) or :data:`CHANGED`."""
        packed = self._done.get(name)
        if packed is None:
            return NEW
        return DONE if packed & 0xFFFF_FFFF_FFFF == identity.key() else CHANGED

    def chunk_of(self, name: str) -> int | None:
        """The chunk number holding ``name``'s rows, if it is done."""
        packed = self._done.get(name)
        return None if packed is None else packed >> 48
