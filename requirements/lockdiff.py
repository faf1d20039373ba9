"""Small helper for the lock files in this folder (standard library only; used by the Makefile).

    python requirements/lockdiff.py check LOCK...        # the running interpreter has exactly these versions
    python requirements/lockdiff.py diff OLD NEW          # what changed between two locks (sets of locks: a,b)
    python requirements/lockdiff.py pins LOCK [--except NAME...]   # name==version lines, as constraints

A lock is a pip requirements file with one ``name==version`` pin per package (hash lines aside), as
``uv pip compile --generate-hashes`` writes it.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_locks(paths: list[str]) -> dict[str, tuple[str, str]]:
    """{normalized name: (name as written, version)} over all the given lock files."""
    pins: dict[str, tuple[str, str]] = {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line in f:
                m = PIN.match(line)
                if m:
                    pins[normalize(m[1])] = (m[1], m[2])
    return pins


def check(paths: list[str]) -> int:
    """Exit 1 and list them when an installed version differs from the lock, or a package is missing."""
    bad = []
    for key, (name, version) in sorted(read_locks(paths).items()):
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            bad.append(f"  {name}: locked {version}, not installed")
            continue
        if installed != version:
            bad.append(f"  {name}: locked {version}, installed {installed}")
    if bad:
        print(f"installed versions differ from {', '.join(paths)}:", *bad, sep="\n", file=sys.stderr)
        return 1
    print(f"installed versions match {', '.join(paths)} ({len(read_locks(paths))} packages)")
    return 0


def diff(old: list[str], new: list[str]) -> int:
    a, b = read_locks(old), read_locks(new)
    changed = [(b[k][0], a[k][1], b[k][1]) for k in sorted(a.keys() & b.keys()) if a[k][1] != b[k][1]]
    added = [b[k] for k in sorted(b.keys() - a.keys())]
    removed = [a[k] for k in sorted(a.keys() - b.keys())]
    if not (changed or added or removed):
        print("no version changes: the lock already has the newest allowed versions")
        return 0
    print(f"{len(changed)} upgraded/changed, {len(added)} added, {len(removed)} removed:")
    for name, was, now in changed:
        print(f"  {name:32} {was:>16} -> {now}")
    for name, now in added:
        print(f"  {name:32} {'(new)':>16} -> {now}")
    for name, was in removed:
        print(f"  {name:32} {was:>16} -> (removed)")
    return 0


def pins(paths: list[str], skip: set[str]) -> int:
    for key, (name, version) in sorted(read_locks(paths).items()):
        if key not in skip:
            print(f"{name}=={version}")
    return 0


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "check":
        return check(argv[1:])
    if len(argv) == 3 and argv[0] == "diff":
        return diff(argv[1].split(","), argv[2].split(","))
    if len(argv) >= 2 and argv[0] == "pins":
        files, skip = argv[1:], set()
        if "--except" in files:
            i = files.index("--except")
            files, skip = files[:i], {normalize(n) for n in files[i + 1 :]}
        return pins(files, skip)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
