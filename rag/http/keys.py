"""API keys for `rag serve`: who may read which indexes and who may change them.

The keys file is JSON; it stores only the SHA-256 of each key, so a copy of the file lets
nobody in:

    {"keys": [{"name": "alice", "sha256": "<64 hex digits>", "indexes": ["handbook"], "write": true},
              {"name": "bot", "sha256": "...", "indexes": ["*"]}]}

`python -m rag.http.keys add FILE --index handbook [--write] [--name alice]` makes a new random
key, adds its hash to FILE and prints the key once."""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import secrets
import sys
from dataclasses import dataclass, field
from pathlib import Path

from rag.core.errors import RagError


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Key:
    """One key's rights (never the key itself)."""
    name: str
    sha256: str
    indexes: tuple[str, ...] = ()
    write: bool = False

    def can_read(self, index: str) -> bool:
        return "*" in self.indexes or index in self.indexes

    def can_write(self, index: str) -> bool:
        return self.write and self.can_read(index)


@dataclass
class Keys:
    keys: list[Key] = field(default_factory=list)

    @classmethod
    def load(cls, path: str | Path) -> "Keys":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise RagError(f"no keys file at {path}; make one with `python -m rag.http.keys add {path} --index NAME`") from None
        except (OSError, ValueError) as e:
            raise RagError(f"cannot read the keys file {path}: {e}") from None
        entries = data.get("keys") if isinstance(data, dict) else None
        if not isinstance(entries, list):
            raise RagError(f"{path}: expected {{\"keys\": [...]}} (see docs/api.md)")
        keys = []
        for n, e in enumerate(entries, 1):
            sha = e.get("sha256", "") if isinstance(e, dict) else ""
            indexes = e.get("indexes", []) if isinstance(e, dict) else None
            if not (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha.lower())):
                raise RagError(f"{path}: key {n} needs \"sha256\": the 64 hex digits of the key's SHA-256")
            if not (isinstance(indexes, list) and all(isinstance(i, str) for i in indexes)):
                raise RagError(f"{path}: key {n} needs \"indexes\": a list of index names (or [\"*\"])")
            keys.append(Key(str(e.get("name") or f"key{n}"), sha.lower(), tuple(indexes), bool(e.get("write", False))))
        return cls(keys)

    def find(self, presented: str | None) -> Key | None:
        """The key matching `presented`, compared in constant time against every entry."""
        if not presented:
            return None
        wanted = digest(presented)
        found = None
        for k in self.keys:  # no early exit: the time does not tell which entry matched
            if hmac.compare_digest(k.sha256, wanted):
                found = k
        return found


def add(path: str | Path, indexes: list[str], write: bool = False, name: str | None = None) -> str:
    """Append a new random key to the keys file (created if missing); returns the key."""
    path = Path(path)
    data = json.loads(path.read_text()) if path.exists() else {"keys": []}
    key = "rag-" + secrets.token_urlsafe(24)
    data["keys"].append({"name": name or f"key{len(data['keys']) + 1}", "sha256": digest(key),
                         "indexes": indexes, "write": write})
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return key


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rag.http.keys", description="Manage rag serve's keys file.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("add", help="make a new key; prints it once, stores only its hash")
    p.add_argument("file")
    p.add_argument("--index", action="append", required=True, help="an index it may read (repeat; * for all)")
    p.add_argument("--write", action="store_true", help="may upload and remove documents")
    p.add_argument("--name", help="a label for logs and the file")
    args = parser.parse_args(argv)
    print(add(args.file, args.index, args.write, args.name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
