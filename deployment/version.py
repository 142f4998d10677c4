"""A bundle's version: the sha256 of its content, the name every answer and every stored correction uses.

    from deployment.version import bundle_version
    bundle_version("models/books/bundle")   # -> 64 hex digits

The hash covers every file of the bundle folder (recursively, hidden files such as `.x.partial-<pid>`
leftovers excluded), in the order of their relative POSIX paths, each as its path, its size and its bytes, so
a renamed, edited, added or removed file changes it and copying the folder elsewhere does not. Standard library
only: the Hugging Face Space imports it too.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK = 1 << 20


def bundle_files(bundle_dir: str | Path) -> list[Path]:
    """The files that make the bundle, in the hash's order (hidden names at any depth left out)."""
    root = Path(bundle_dir)
    files = [p for p in root.rglob("*")
             if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def bundle_version(bundle_dir: str | Path) -> str:
    """sha256 (hex) over the bundle's files: for each, its relative path, NUL, its size, NUL, its bytes."""
    root = Path(bundle_dir)
    digest = hashlib.sha256()
    for path in bundle_files(root):
        digest.update(path.relative_to(root).as_posix().encode("utf-8") + b"\0")
        digest.update(str(path.stat().st_size).encode("ascii") + b"\0")
        with open(path, "rb") as fh:
            while chunk := fh.read(CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def short_version(version: str | None) -> str:
    """The first 12 hex digits, for pages ("unversioned" when there is none)."""
    return version[:12] if version else "unversioned"
