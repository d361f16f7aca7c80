"""Upload safety: one malicious archive per attack, each refused with the entry named; nothing written outside."""

from __future__ import annotations

import stat
import struct
import zipfile
from pathlib import Path

import pytest

from core.data.safezip import UnsafeArchiveError, ZipLimits, inspect_zip, safe_extract


def _zip(path: Path, entries: list[tuple[str | zipfile.ZipInfo, bytes]], compression: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return path


def _unix_entry(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = mode << 16
    return info


def _refused(archive: Path, target: Path, entry: str | None, words: str, limits: ZipLimits | None = None) -> None:
    before = sorted(p.name for p in target.parent.iterdir())
    with pytest.raises(UnsafeArchiveError) as err:
        safe_extract(archive, target, limits)
    assert err.value.entry == entry
    assert words in err.value.problem
    assert str(archive) in str(err.value) and (entry is None or repr(entry) in str(err.value))
    assert not target.exists()  # created by us, removed again
    assert sorted(p.name for p in target.parent.iterdir()) == before


def test_safe_archive_extracts(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "ok.zip", [("data/images/a.txt", b"hello"), ("data/labels/", b""), ("./b.txt", b"x")])
    out = safe_extract(archive, tmp_path / "out")
    assert (out / "data" / "images" / "a.txt").read_bytes() == b"hello"
    assert (out / "b.txt").read_bytes() == b"x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.zip", "out"]


def test_parent_traversal(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "a.zip", [("good.txt", b"x"), ("data/../../evil.txt", b"x")])
    _refused(archive, tmp_path / "out", "data/../../evil.txt", "path traversal")


def test_absolute_path(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "a.zip", [(zipfile.ZipInfo("/tmp/evil.txt"), b"x")])
    _refused(archive, tmp_path / "out", "/tmp/evil.txt", "absolute path")


def test_drive_letter(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "a.zip", [(zipfile.ZipInfo("C:/Windows/evil.txt"), b"x")])
    _refused(archive, tmp_path / "out", "C:/Windows/evil.txt", "drive letter")


def test_backslash_traversal(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "a.zip", [(zipfile.ZipInfo("..\\..\\evil.txt"), b"x")])
    _refused(archive, tmp_path / "out", "..\\..\\evil.txt", "backslash")


def test_symlink_entry(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "a.zip", [(_unix_entry("link", stat.S_IFLNK | 0o777), b"/etc/passwd")])
    _refused(archive, tmp_path / "out", "link", "symbolic link")


def test_hardlink_or_special_file_entry(tmp_path: Path) -> None:
    """Zip has no hard-link type; tools that archive them use non-regular modes (here a character device)."""
    archive = _zip(tmp_path / "a.zip", [(_unix_entry("dev", stat.S_IFCHR | 0o644), b"")])
    _refused(archive, tmp_path / "out", "dev", "special file")


def test_compression_ratio_bomb(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "a.zip", [("zeros.bin", bytes(4 * 1024**2))], compression=zipfile.ZIP_DEFLATED)
    _refused(archive, tmp_path / "out", "zeros.bin", "compression ratio")


def test_total_uncompressed_size(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "a.zip", [(f"f{i}.bin", bytes(400)) for i in range(3)])
    limits = ZipLimits(max_total_bytes=1000)
    _refused(archive, tmp_path / "out", "f2.bin", "total uncompressed size", limits)


def test_single_file_size(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "a.zip", [("big.bin", bytes(2000))])
    _refused(archive, tmp_path / "out", "big.bin", "bytes uncompressed", ZipLimits(max_file_bytes=1000))


def test_too_many_files(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "a.zip", [(f"f{i}.txt", b"x") for i in range(6)])
    _refused(archive, tmp_path / "out", None, "6 entries, more than the limit of 5", ZipLimits(max_files=5))


def test_duplicate_names_overwrite_trick(tmp_path: Path) -> None:
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("labels/a.txt", b"0 0.5 0.5 0.1 0.1")
        with pytest.warns(UserWarning, match="Duplicate name"):
            zf.writestr("labels/a.txt", b"evil")
    _refused(archive, tmp_path / "out", "labels/a.txt", "duplicate")


def test_names_equal_but_for_case(tmp_path: Path) -> None:
    """On case-insensitive file systems the second entry would overwrite the first."""
    archive = _zip(tmp_path / "a.zip", [("labels/a.txt", b"ok"), ("labels/A.txt", b"evil")])
    _refused(archive, tmp_path / "out", "labels/A.txt", "duplicate")


def test_header_lying_about_size(tmp_path: Path) -> None:
    """Local and central headers claim 10 bytes for a 100-byte stored entry: refused, partial file removed."""
    archive = _zip(tmp_path / "a.zip", [("liar.bin", bytes(range(100)))])
    raw = bytearray(archive.read_bytes())
    local = raw.find(b"PK\x03\x04")
    struct.pack_into("<I", raw, local + 22, 10)  # uncompressed size in the local header
    central = raw.find(b"PK\x01\x02")
    struct.pack_into("<I", raw, central + 24, 10)  # uncompressed size in the central directory
    archive.write_bytes(bytes(raw))
    _refused(archive, tmp_path / "out", "liar.bin", "corrupt")


def test_existing_symlink_in_target_cannot_redirect_writes(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "target"
    target.mkdir()
    (target / "images").symlink_to(outside, target_is_directory=True)
    archive = _zip(tmp_path / "a.zip", [("images/evil.txt", b"x")])
    with pytest.raises(UnsafeArchiveError, match="resolves outside the target folder") as err:
        safe_extract(archive, target)
    assert err.value.entry == "images/evil.txt"
    assert list(outside.iterdir()) == []


def test_not_a_zip(tmp_path: Path) -> None:
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"PK but not really")
    with pytest.raises(UnsafeArchiveError, match="not a readable zip file"):
        inspect_zip(bad)
