"""Lineage hashes recorded in each registry version: model files, params, data, git state."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any


def hash_paths(paths: list[str | Path]) -> str | None:
    """sha256 over file names and contents (directories walked in sorted order); None if none exist."""
    digest = hashlib.sha256()
    found = False
    for root in paths:
        root = Path(root)
        if not root.exists():
            continue
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            found = True
            rel = path.name if root.is_file() else path.relative_to(root).as_posix()
            digest.update(rel.encode() + b"\0")
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest() if found else None


def hash_params(params: Any) -> str:
    """sha256 of the canonical JSON of a params mapping."""
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()


def git_state(cwd: str | Path = ".") -> tuple[str | None, bool | None]:
    """(HEAD commit, working tree dirty?) or (None, None) outside a git checkout."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=cwd,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        )
    except (OSError, subprocess.CalledProcessError):
        return None, None
    return commit, dirty
