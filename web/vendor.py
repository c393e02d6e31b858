"""The front-end libraries the pages use, vendored from the npm registry into
``web/static/vendor/`` so nothing is fetched at run time and ``make run`` needs no npm.

``vendor.lock.json`` beside the files pins each package's version and the registry's sha512
integrity of its tarball, and records the sha256 of every file copied from it.

    python -m web.vendor fetch          # npm pack each pin, verify, copy (make vendor)
    python -m web.vendor check          # offline: the committed files match the lock
    python -m web.vendor pin NAME@VER   # set a pin to the registry's integrity for VER
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

VENDOR_DIR = Path(__file__).resolve().parent / "static" / "vendor"
LOCK = VENDOR_DIR / "vendor.lock.json"
NPM_TIMEOUT_S = 120


class VendorError(RuntimeError):
    """A pin that cannot be fetched or does not verify; the message says which and why."""


def load_lock(path: Path = LOCK) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def save_lock(lock: dict[str, Any], path: Path = LOCK) -> None:
    path.write_text(json.dumps(lock, indent=2, sort_keys=True) + "\n")


def sri_sha512(data: bytes) -> str:
    """Subresource-integrity form of a sha512, as npm records ``dist.integrity``."""
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _npm(*args: str, cwd: Path | None = None) -> str:
    npm = shutil.which("npm")
    if npm is None:
        raise VendorError("npm is not installed: it is needed only to fetch (make vendor); "
                          "the committed files work without it")
    done = subprocess.run([npm, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=NPM_TIMEOUT_S, check=False)
    if done.returncode != 0:
        raise VendorError(f"npm {' '.join(args)} failed: {done.stderr.strip()[-500:]}")
    return done.stdout


def registry_integrity(name: str, version: str) -> str:
    out = _npm("view", f"{name}@{version}", "dist.integrity", "--json").strip()
    value = json.loads(out) if out else None
    if not isinstance(value, str) or not value.startswith("sha512-"):
        raise VendorError(f"the registry has no sha512 integrity for {name}@{version}")
    return value


def _extract(tarball: Path, member: str) -> bytes:
    with tarfile.open(tarball, "r:gz") as tar:
        try:
            info = tar.getmember(member)
        except KeyError:
            raise VendorError(f"{tarball.name} has no {member}") from None
        handle = tar.extractfile(info) if info.isfile() else None
        if handle is None:
            raise VendorError(f"{tarball.name}: {member} is not a regular file")
        return handle.read()


def fetch_package(name: str, pin: dict[str, Any], work: Path, dest_root: Path) -> None:
    """Pack ``name@version``, check its sha512 against the pin and the registry, and copy
    the pinned files (or write the fixed texts) under ``dest_root/<dir>``."""
    version, expected = pin["version"], pin["integrity"]
    published = registry_integrity(name, version)
    if published != expected:
        raise VendorError(f"{name}@{version}: the registry says {published}, the lock {expected}")
    packed = json.loads(_npm("pack", f"{name}@{version}", "--json", cwd=work))
    tarball = work / packed[0]["filename"]
    actual = sri_sha512(tarball.read_bytes())
    if actual != expected:
        raise VendorError(f"{name}@{version}: tarball hashes to {actual}, the lock says {expected}")
    dest = dest_root / pin["dir"]
    dest.mkdir(parents=True, exist_ok=True)
    for target, spec in pin["files"].items():
        data = (_extract(tarball, spec["from"]) if "from" in spec
                else spec["text"].encode())
        (dest / target).write_bytes(data)
        spec["sha256"] = hashlib.sha256(data).hexdigest()


def fetch(lock_path: Path = LOCK) -> None:
    lock = load_lock(lock_path)
    with tempfile.TemporaryDirectory(prefix="sa-vendor-") as tmp:
        for name, pin in sorted(lock.items()):
            fetch_package(name, pin, Path(tmp), lock_path.parent)
            print(f"vendored {name}@{pin['version']} ({pin['integrity'][:20]}...)")
    save_lock(lock, lock_path)


def check(lock_path: Path = LOCK) -> list[str]:
    """Problems with the committed files: missing, or not the recorded sha256."""
    problems = []
    for name, pin in sorted(load_lock(lock_path).items()):
        for target, spec in sorted(pin["files"].items()):
            path = lock_path.parent / pin["dir"] / target
            if not path.is_file():
                problems.append(f"{name}: {path.name} is missing (run make vendor)")
            elif sha256_file(path) != spec.get("sha256"):
                problems.append(f"{name}: {pin['dir']}/{target} does not match the lock")
    return problems


def pin(spec: str, lock_path: Path = LOCK) -> None:
    name, sep, version = spec.rpartition("@")
    if not sep or not name or not version:
        raise VendorError(f"expected NAME@VERSION, got {spec!r}")
    lock = load_lock(lock_path)
    if name not in lock:
        raise VendorError(f"{name} is not vendored (known: {', '.join(sorted(lock))})")
    lock[name].update(version=version, integrity=registry_integrity(name, version))
    save_lock(lock, lock_path)
    print(f"pinned {name}@{version}: now run make vendor")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m web.vendor", description=__doc__.split(
        "\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("fetch", help="fetch every pinned package from the npm registry")
    sub.add_parser("check", help="check the committed files against the lock (offline)")
    pin_cmd = sub.add_parser("pin", help="pin NAME@VERSION to the registry's integrity")
    pin_cmd.add_argument("spec")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "fetch":
            fetch()
        elif args.cmd == "pin":
            pin(args.spec)
        else:
            problems = check()
            for problem in problems:
                print(problem, file=sys.stderr)
            if problems:
                return 1
            print("vendored files match vendor.lock.json")
    except (VendorError, OSError, subprocess.TimeoutExpired) as exc:
        print(f"vendor: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
