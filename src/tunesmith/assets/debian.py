"""Files from Debian packages, without root: the installed copy if there is one, else `apt-get download`.

`apt-get download` needs no root (it only writes the .deb into the current folder), and a .deb
is an `ar` archive whose data.tar.{xz,gz,bz2} holds the package's files at their installed
paths, which the standard library reads; `dpkg-deb --fsys-tarfile` is the fallback for a
compression it cannot (zstd before Python 3.14). What a build makes from those files lands in
the cache through fetch.py's pattern: a temporary folder beside the entry, manifest.json written
last, one rename, so an interrupted build never leaves an entry that looks complete.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Callable

from ..errors import TunesmithError
from .fetch import cache_dir, sha256

# Where installed packages keep their files; the tests point it at a folder of their own, so a
# package installed on the test machine cannot stand in for the fake one
INSTALLED_ROOT = Path("/")

AR_MAGIC = b"!<arch>\n"
AR_HEADER_SIZE = 60
TAR_MODES = {"data.tar.xz": "r:xz", "data.tar.gz": "r:gz", "data.tar.bz2": "r:bz2", "data.tar": "r:"}
if sys.version_info >= (3, 14):
    TAR_MODES["data.tar.zst"] = "r:zst"


def fix_hint(package: str, target: Path) -> str:
    return f"install it with `sudo apt-get install {package}`, or copy the folder {target} from a machine where it was built"


def download_deb(package: str, version: str, dest: Path, hint: str = "") -> Path:
    """`apt-get download package=version` into dest (no root needed); returns the .deb."""
    hint = hint or f"install it with `sudo apt-get install {package}`"
    dest.mkdir(parents=True, exist_ok=True)
    try:
        proc = subprocess.run(["apt-get", "download", f"{package}={version}"], cwd=dest, capture_output=True, text=True, timeout=900)
    except FileNotFoundError:
        raise TunesmithError(f"The Debian package {package}={version} is not installed and apt-get is not available to download it; {hint}.") from None
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TunesmithError(f"Could not download the Debian package {package}={version} with apt-get ({exc}); check the network, or {hint}.") from None
    debs = sorted(dest.glob("*.deb"))
    if proc.returncode != 0 or not debs:
        lines = [line.strip() for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("E:")]  # apt's own error lines say what went wrong
        reason = (errors or lines or ["apt-get wrote no .deb"])[0].rstrip(".")
        raise TunesmithError(f"Could not download the Debian package {package}={version} with apt-get ({reason}); check the network and "
                             f"`apt-cache policy {package}`, or {hint}.")
    return debs[0]


def ar_members(deb: Path) -> dict[str, tuple[int, int]]:
    """{member name: (offset, size)} of an ar archive, the container format of a .deb."""
    total = deb.stat().st_size
    members = {}
    with open(deb, "rb") as fh:
        if fh.read(len(AR_MAGIC)) != AR_MAGIC:
            raise TunesmithError(f"{deb} is not a Debian package (it does not start with an ar header); delete it and fetch it again.")
        while True:
            header = fh.read(AR_HEADER_SIZE)
            if not header:
                break
            size_field = header[48:58].decode("ascii", errors="replace").strip()
            if len(header) < AR_HEADER_SIZE or header[58:60] != b"`\n" or not size_field.isdigit():
                raise TunesmithError(f"{deb} is damaged (a bad ar member header at byte {fh.tell() - len(header)}); delete it and fetch it again.")
            name = header[:16].decode("ascii", errors="replace").strip().rstrip("/")  # GNU ar ends names with '/'
            size, offset = int(size_field), fh.tell()
            if offset + size > total:
                raise TunesmithError(f"{deb} is truncated (its member {name} runs past the end of the file); delete it and fetch it again.")
            members[name] = (offset, size)
            fh.seek(size + size % 2, os.SEEK_CUR)  # members are padded to an even length
    return members


def extract_deb(deb: Path, dest: Path, prefixes: tuple[str, ...]) -> None:
    """Write the .deb's regular files under `prefixes` (installed paths, 'usr/share/...') into dest at the same paths."""
    members = ar_members(deb)
    data = next((name for name in members if name.startswith("data.tar")), None)
    if data is None:
        raise TunesmithError(f"{deb} holds no data.tar member, so it is not a Debian binary package; delete it and fetch it again.")
    if data in TAR_MODES:
        offset, size = members[data]
        with open(deb, "rb") as fh:
            fh.seek(offset)
            packed = fh.read(size)
        with tarfile.open(fileobj=io.BytesIO(packed), mode=TAR_MODES[data]) as tf:
            copy_members(tf, dest, prefixes)
    else:
        extract_with_dpkg_deb(deb, dest, prefixes, data)


def extract_with_dpkg_deb(deb: Path, dest: Path, prefixes: tuple[str, ...], data: str) -> None:
    """dpkg-deb decompresses what Python cannot and streams the plain tar, which is read here as usual."""
    try:
        proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError:
        raise TunesmithError(f"{deb} keeps its files in {data}, which this Python cannot decompress and dpkg-deb is not available to; "
                             f"install the package with `sudo apt-get install {deb.name.split('_')[0]}`.") from None
    # on an error Popen's exit closes the pipe first, so dpkg-deb stops instead of blocking on it
    with proc:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tf:
            copy_members(tf, dest, prefixes)
        proc.stdout.read()  # the tar's end padding: drained so dpkg-deb exits
        errors = proc.stderr.read().decode(errors="replace").strip().splitlines()
        status = proc.wait()
    if status != 0:
        raise TunesmithError(f"dpkg-deb could not read {deb} ({(errors or [f'exit status {status}'])[-1]}); delete it and fetch it again.")


def copy_members(tf: tarfile.TarFile, dest: Path, prefixes: tuple[str, ...]) -> None:
    # Members are read in archive order, which is what a streamed tar ('r|') allows
    for member in tf:
        name = member.name[2:] if member.name.startswith("./") else member.name
        if not member.isfile() or not name.startswith(prefixes):
            continue
        if name.startswith("/") or ".." in Path(name).parts:
            raise TunesmithError(f"The package file {member.name} points outside the package; refusing to unpack it.")
        out = dest / name
        out.parent.mkdir(parents=True, exist_ok=True)
        with tf.extractfile(member) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst)


def installed_version(package: str) -> str | None:
    try:
        proc = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else None


def tree_digest(folder: Path) -> tuple[str, int]:
    """One sha256 over every file's path and sha256 (70,000 images would swamp a per-file list), and the file count."""
    digest, count = hashlib.sha256(), 0
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "manifest.json"):
        digest.update(f"{path.relative_to(folder).as_posix()}\0{sha256(path)}\n".encode())
        count += 1
    return digest.hexdigest(), count


def read_manifest(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return None


def fetch_deb_into_cache(name: str, package: str, version: str, installed: str, build: Callable[[Path, Path], None],
                         build_version: int = 1) -> Path:
    """cache_dir()/name, made once by build(root, folder) from the files of Debian package==version.

    `root` holds the package's files at their installed paths (root/'usr/share/...'): the system
    root when the folder `installed` (e.g. 'usr/share/datasets/fashion-mnist') is there, else the
    downloaded .deb unpacked into a temporary folder. The entry is rebuilt when the pinned version
    or build_version (bump it when the build's output changes) differ from its manifest.
    """
    target = cache_dir() / name
    key = {"version": version, "build_version": build_version}
    manifest = read_manifest(target)
    if manifest is not None and all(manifest.get(k) == v for k, v in key.items()):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    installed = installed.strip("/")
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}-") as tmp:
        tmp = Path(tmp)
        record = {"name": name, "source": f"debian:{package}={version}", "package": package, **key}
        if (INSTALLED_ROOT / installed).is_dir():
            root = INSTALLED_ROOT
            record |= {"from": str(INSTALLED_ROOT / installed), "package_version": installed_version(package)}
        else:
            deb = download_deb(package, version, tmp / "download", hint=fix_hint(package, target))
            root = tmp / "root"
            extract_deb(deb, root, (installed + "/",))
            if not (root / installed).is_dir():
                raise TunesmithError(f"The Debian package {deb.name} has no folder /{installed}, so it is not the package this "
                                     f"dataset is built from; {fix_hint(package, target)}.")
            record |= {"from": "apt-get download", "package_version": version, "deb": deb.name, "deb_sha256": sha256(deb)}
        work = tmp / target.name
        work.mkdir()
        build(root, work)
        tree, count = tree_digest(work)
        record |= {"files": {p.name: sha256(p) for p in sorted(work.iterdir()) if p.is_file()}, "file_count": count, "tree_sha256": tree}
        (work / "manifest.json").write_text(json.dumps(record, indent=2))
        done = read_manifest(target)
        if done is not None and all(done.get(k) == v for k, v in key.items()):
            return target  # another process finished the same build first
        if target.exists():
            shutil.rmtree(target)
        os.replace(work, target)
    return target
