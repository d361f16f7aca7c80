"""Safe extraction of uploaded ``.zip`` archives (used by ``core.data.load`` and by the UIs' upload handlers).

Every entry is checked before anything is written: path traversal (``..``, absolute paths, drive letters, backslash
separators, NUL bytes), symbolic links and other non-regular files (hard links, devices, FIFOs), duplicate names,
encrypted entries, too many entries, too large a total or per-file size, and compression ratios typical of zip bombs.
While writing, the bytes actually produced are counted too, so a header that lies about sizes cannot get past the
limits. Nothing is ever written outside the target folder.
"""

from __future__ import annotations

import shutil
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

_CHUNK = 1 << 20


@dataclass(frozen=True)
class ZipLimits:
    """Limits for one archive. Sizes are in bytes; ratios are uncompressed / compressed."""

    max_files: int = 100_000
    max_total_bytes: int = 20 * 1024**3
    max_file_bytes: int = 2 * 1024**3
    max_ratio: float = 200.0
    ratio_min_bytes: int = 1024**2  # small files may compress very well (e.g. blank label files); ignore their ratio


class UnsafeArchiveError(ValueError):
    """An archive (or one of its entries) was refused; ``entry`` names it and ``problem`` says why."""

    def __init__(self, archive: Path | str, entry: str | None, problem: str) -> None:
        self.archive = str(archive)
        self.entry = entry
        self.problem = problem
        where = f"entry {entry!r}" if entry is not None else "archive"
        super().__init__(f"{archive}: {where}: {problem}")


def _safe_relative(name: str) -> PurePosixPath | str:
    """The entry name as a relative path, or the reason it is unsafe."""
    if "\x00" in name:
        return "NUL byte in the name"
    if "\\" in name:
        return "backslash in the name (a Windows path separator can hide '..' or an absolute path)"
    if name.startswith("/"):
        return "absolute path"
    if len(name) >= 2 and name[1] == ":":
        return "drive letter (absolute Windows path)"
    parts = PurePosixPath(name).parts
    if any(part == ".." for part in parts):
        return "path traversal ('..' component)"
    if any(":" in part for part in parts):
        return "':' in a path component (drive letter or alternate data stream)"
    clean = PurePosixPath(*[p for p in parts if p not in ("", ".")]) if parts else PurePosixPath()
    if not clean.parts:
        return "empty name"
    return clean


def _file_type_problem(info: zipfile.ZipInfo) -> str | None:
    mode = info.external_attr >> 16
    if info.create_system == 3 and mode:  # Unix: the high 16 bits hold st_mode
        kind = stat.S_IFMT(mode)
        if kind == stat.S_IFLNK:
            return "symbolic link"
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            return f"special file (mode {oct(kind)}: hard link, device or FIFO)"
    if info.flag_bits & 0x1:
        return "encrypted entry"
    return None


def inspect_zip(archive: Path, limits: ZipLimits | None = None) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """Check every entry of ``archive`` against ``limits``; return (entry, safe relative path) pairs.

    Raises:
        UnsafeArchiveError: naming the first entry that breaks a rule, and the rule.
    """
    limits = limits or ZipLimits()
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UnsafeArchiveError(archive, None, f"not a readable zip file ({exc})") from exc
    with zf:
        infos = zf.infolist()
    if len(infos) > limits.max_files:
        raise UnsafeArchiveError(archive, None, f"{len(infos)} entries, more than the limit of {limits.max_files}")
    total = 0
    seen: dict[str, str] = {}
    out: list[tuple[zipfile.ZipInfo, PurePosixPath]] = []
    for info in infos:
        rel = _safe_relative(info.filename)
        if isinstance(rel, str):
            raise UnsafeArchiveError(archive, info.filename, rel)
        problem = _file_type_problem(info)
        if problem:
            raise UnsafeArchiveError(archive, info.filename, problem)
        folded = rel.as_posix().lower()
        if folded in seen and not info.is_dir():
            raise UnsafeArchiveError(
                archive, info.filename, f"duplicate of entry {seen[folded]!r} (would overwrite it)"
            )
        seen[folded] = info.filename
        if info.file_size > limits.max_file_bytes:
            raise UnsafeArchiveError(
                archive, info.filename, f"{info.file_size} bytes uncompressed, more than {limits.max_file_bytes}"
            )
        total += info.file_size
        if total > limits.max_total_bytes:
            raise UnsafeArchiveError(
                archive, info.filename, f"total uncompressed size passes the limit of {limits.max_total_bytes} bytes"
            )
        if info.file_size >= limits.ratio_min_bytes:
            ratio = info.file_size / max(info.compress_size, 1)
            if ratio > limits.max_ratio:
                raise UnsafeArchiveError(
                    archive,
                    info.filename,
                    f"compression ratio {ratio:.0f}:1 above {limits.max_ratio:.0f}:1 (zip bomb?)",
                )
        out.append((info, rel))
    return out


def safe_extract(archive: Path, target: Path, limits: ZipLimits | None = None) -> Path:
    """Extract ``archive`` into ``target`` after checking it; returns ``target``.

    ``target`` is created if needed. On any refusal nothing is left behind in a ``target`` we created (and in an
    existing one, only files written before a mid-stream size violation are removed again).

    Raises:
        UnsafeArchiveError: the archive breaks a rule (the message names the entry and the problem).
    """
    limits = limits or ZipLimits()
    entries = inspect_zip(archive, limits)
    created = not target.exists()
    target.mkdir(parents=True, exist_ok=True)
    base = target.resolve()
    written: list[Path] = []
    total = 0
    current: str | None = None
    try:
        with zipfile.ZipFile(archive) as zf:
            for info, rel in entries:
                current = info.filename
                dest = (base / rel).resolve()
                if base != dest and base not in dest.parents:
                    raise UnsafeArchiveError(archive, info.filename, "resolves outside the target folder")
                if info.is_dir():
                    dest.mkdir(parents=True, exist_ok=True)
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                if dest.is_symlink() or dest.exists():
                    raise UnsafeArchiveError(archive, info.filename, "a file of that name already exists in the target")
                size = 0
                with zf.open(info) as src, open(dest, "xb") as dst:
                    written.append(dest)
                    while chunk := src.read(_CHUNK):
                        size += len(chunk)
                        total += len(chunk)
                        if size > max(info.file_size, 0) or size > limits.max_file_bytes:
                            raise UnsafeArchiveError(archive, info.filename, "more data than its header declares")
                        if total > limits.max_total_bytes:
                            raise UnsafeArchiveError(archive, info.filename, "total extracted size passes the limit")
                        dst.write(chunk)
    except (UnsafeArchiveError, zipfile.BadZipFile, OSError, EOFError) as exc:
        for f in written:
            f.unlink(missing_ok=True)
        if created:
            shutil.rmtree(target, ignore_errors=True)
        if isinstance(exc, UnsafeArchiveError):
            raise
        raise UnsafeArchiveError(archive, current, f"corrupt data ({exc})") from exc
    return target
