"""Builders for archives used by the archive tests: well-formed ones in every format, and the
hostile ones dicomdrop must refuse (traversal, links, devices, bombs, encryption, damage).

Everything is built in a caller-given folder with the standard library, py7zr and inflate64,
so no command-line tool is needed. A small raw zip writer covers what ``zipfile`` cannot write:
deflate64 members, ZipCrypto encryption, CP437 and backslash names.
"""

from __future__ import annotations

import io
import os
import stat
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import inflate64
import py7zr
from factories import file_bytes

# --- content ------------------------------------------------------------------------------------


def dicom_bytes(instance: int = 1, pixels: int = 64) -> bytes:
    """A small CT instance of its own patient (PatientID per ``instance``), with ``pixels`` x
    ``pixels`` pixel data: ``factories.file_bytes``, the one DICOM factory."""
    return file_bytes(instance, instance=instance, modality="CT", pixels=pixels)


def study_files(count: int = 3) -> dict[str, bytes]:
    """A little two-series study as ``{relative path: bytes}``."""
    return {
        f"PAT1/series{1 + n % 2}/IM{n:04d}.dcm": dicom_bytes(instance=n + 1) for n in range(count)
    }


def write_tree(folder: Path, files: Mapping[str, bytes]) -> Path:
    """Write ``files`` under ``folder`` (created) and return it."""
    for name, data in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def read_tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` as ``{relative posix path: bytes}``."""
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


# --- well-formed archives -----------------------------------------------------------------------


def make_zip(
    path: Path, files: Mapping[str, bytes], compression: int = zipfile.ZIP_DEFLATED
) -> Path:
    """A zip of ``files`` with ``zipfile`` (stored, deflate, bzip2 or lzma)."""
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


SEVEN_ZIP_FILTERS: dict[str, list[dict[str, int]]] = {
    "lzma2": [{"id": py7zr.FILTER_LZMA2, "preset": 6}],
    "lzma": [{"id": py7zr.FILTER_LZMA}],
    "ppmd": [{"id": py7zr.FILTER_PPMD}],
    "bzip2": [{"id": py7zr.FILTER_BZIP2}],
    "deflate": [{"id": py7zr.FILTER_DEFLATE}],
}


def make_7z(
    path: Path,
    files: Mapping[str, bytes],
    method: str = "lzma2",
    password: str | None = None,
    header_encryption: bool = False,
) -> Path:
    """A solid 7z of ``files`` with py7zr (all members in one compressed folder)."""
    filters = SEVEN_ZIP_FILTERS[method]
    if password is not None:
        filters = [*filters, {"id": py7zr.FILTER_CRYPTO_AES256_SHA256}]
    with py7zr.SevenZipFile(
        path, "w", filters=filters, password=password, header_encryption=header_encryption
    ) as archive:
        for name, data in files.items():
            archive.writestr(data, name)
    return path


TAR_MODES = {"tar": "w", "tar.gz": "w:gz", "tar.bz2": "w:bz2", "tar.xz": "w:xz"}


def make_tar(path: Path, files: Mapping[str, bytes], fmt: str = "tar") -> Path:
    """A tar (plain, gz, bz2 or xz) of ``files``."""
    with tarfile.open(path, TAR_MODES[fmt]) as archive:  # type: ignore[call-overload]
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


# --- raw zip writer -----------------------------------------------------------------------------


@dataclass
class RawMember:
    """One member for :func:`make_raw_zip`: name bytes, content, and header details."""

    name: bytes
    data: bytes
    method: int = zipfile.ZIP_STORED
    flags: int = 0
    external_attr: int = 0
    password: bytes | None = None


def _zipcrypto_encrypt(data: bytes, password: bytes, check_byte: int) -> bytes:
    keys = [0x12345678, 0x23456789, 0x34567890]

    def crc(value: int, byte: int) -> int:
        return zlib.crc32(bytes([byte]), value ^ 0xFFFFFFFF) ^ 0xFFFFFFFF

    def update(byte: int) -> None:
        keys[0] = crc(keys[0], byte)
        keys[1] = (keys[1] + (keys[0] & 0xFF)) * 134775813 + 1 & 0xFFFFFFFF
        keys[2] = crc(keys[2], keys[1] >> 24)

    for byte in password:
        update(byte)
    out = bytearray()
    for byte in bytes(11) + bytes([check_byte]) + data:
        temp = (keys[2] | 2) & 0xFFFF
        out.append(byte ^ ((temp * (temp ^ 1)) >> 8) & 0xFF)
        update(byte)
    return bytes(out)


def make_raw_zip(path: Path, members: list[RawMember]) -> Path:
    """A zip written byte by byte, for members ``zipfile`` cannot produce."""
    body = bytearray()
    central = bytearray()
    for member in members:
        crc = zlib.crc32(member.data)
        if member.method == zipfile.ZIP_DEFLATED:
            compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
            payload = compressor.compress(member.data) + compressor.flush()
        elif member.method == 9:
            deflater = inflate64.Deflater()
            payload = deflater.deflate(member.data) + deflater.flush()
        else:
            payload = member.data
        flags = member.flags
        if member.password is not None:
            flags |= 0x1
            payload = _zipcrypto_encrypt(payload, member.password, crc >> 24)
        offset = len(body)
        fields = (20, flags, member.method, 0, 0x21, crc, len(payload), len(member.data))
        body += struct.pack("<4s5HIII2H", b"PK\x03\x04", *fields, len(member.name), 0)
        body += member.name + payload
        central += struct.pack(
            "<4s6HIII5HII",
            b"PK\x01\x02",
            0x314,
            *fields,
            len(member.name),
            0,
            0,
            0,
            0,
            member.external_attr,
            offset,
        )
        central += member.name
    end = struct.pack(
        "<4s4HIIH", b"PK\x05\x06", 0, 0, len(members), len(members), len(central), len(body), 0
    )
    path.write_bytes(bytes(body + central + end))
    return path


# --- hostile archives ---------------------------------------------------------------------------

PAYLOAD = b"harmless payload\n"


def traversal_zip(folder: Path) -> Path:
    """A zip whose second member climbs out of the destination with '..'."""
    return make_zip(folder / "traversal.zip", {"ok.txt": PAYLOAD, "a/../../evil.txt": PAYLOAD})


def backslash_traversal_zip(folder: Path) -> Path:
    """A zip climbing out with Windows separators ('..\\..\\evil.txt')."""
    return make_raw_zip(
        folder / "backslash_traversal.zip", [RawMember(b"..\\..\\evil.txt", PAYLOAD)]
    )


def absolute_zip(folder: Path) -> Path:
    """A zip with an absolute member path."""
    return make_raw_zip(folder / "absolute.zip", [RawMember(b"/tmp/evil.txt", PAYLOAD)])


def drive_letter_zip(folder: Path) -> Path:
    """A zip with a Windows drive-letter path."""
    return make_raw_zip(folder / "drive.zip", [RawMember(b"C:\\evil.txt", PAYLOAD)])


def symlink_zip(folder: Path) -> Path:
    """A zip holding a Unix symbolic link to /etc/passwd."""
    link = RawMember(b"link", b"/etc/passwd", external_attr=(stat.S_IFLNK | 0o777) << 16)
    return make_raw_zip(folder / "symlink.zip", [RawMember(b"ok.txt", PAYLOAD), link])


def device_zip(folder: Path) -> Path:
    """A zip entry claiming to be a character device."""
    device = RawMember(b"dev", b"", external_attr=(stat.S_IFCHR | 0o666) << 16)
    return make_raw_zip(folder / "device.zip", [device])


def _tar_with(path: Path, special: tarfile.TarInfo, fmt: str = "w") -> Path:
    with tarfile.open(path, fmt) as archive:  # type: ignore[call-overload]
        ok = tarfile.TarInfo("ok.txt")
        ok.size = len(PAYLOAD)
        archive.addfile(ok, io.BytesIO(PAYLOAD))
        if special.isreg():
            archive.addfile(special, io.BytesIO(PAYLOAD))
        else:
            archive.addfile(special)
    return path


def symlink_tar(folder: Path) -> Path:
    """A tar holding a symbolic link pointing outside."""
    info = tarfile.TarInfo("link")
    info.type = tarfile.SYMTYPE
    info.linkname = "../../outside"
    return _tar_with(folder / "symlink.tar", info)


def hardlink_tar(folder: Path) -> Path:
    """A tar holding a hard link to a file outside."""
    info = tarfile.TarInfo("hard")
    info.type = tarfile.LNKTYPE
    info.linkname = "/etc/passwd"
    return _tar_with(folder / "hardlink.tar.gz", info, "w:gz")


def device_tar(folder: Path) -> Path:
    """A tar holding a character device (/dev/null's numbers)."""
    info = tarfile.TarInfo("null")
    info.type = tarfile.CHRTYPE
    info.devmajor, info.devminor = 1, 3
    return _tar_with(folder / "device.tar", info)


def fifo_tar(folder: Path) -> Path:
    """A tar holding a fifo."""
    info = tarfile.TarInfo("pipe")
    info.type = tarfile.FIFOTYPE
    return _tar_with(folder / "fifo.tar.xz", info, "w:xz")


def traversal_tar(folder: Path) -> Path:
    """A tar whose member climbs out with '..'."""
    info = tarfile.TarInfo("../evil.txt")
    info.size = len(PAYLOAD)
    return _tar_with(folder / "traversal.tar.bz2", info, "w:bz2")


def absolute_tar(folder: Path) -> Path:
    """A tar with an absolute member path."""
    info = tarfile.TarInfo("/tmp/evil.txt")
    info.size = len(PAYLOAD)
    return _tar_with(folder / "absolute.tar", info)


def symlink_7z(folder: Path) -> Path:
    """A 7z holding a symbolic link (made from a real link on disk)."""
    source = folder / "symlink-source"
    source.mkdir()
    (source / "ok.txt").write_bytes(PAYLOAD)
    os.symlink("/etc/passwd", source / "link")
    path = folder / "symlink.7z"
    with py7zr.SevenZipFile(path, "w") as archive:
        archive.write(source / "ok.txt", "ok.txt")
        archive.write(source / "link", "link")
    return path


def traversal_7z(folder: Path) -> Path:
    """A 7z whose member name climbs out with '..'."""
    path = folder / "traversal.7z"
    with py7zr.SevenZipFile(path, "w") as archive:
        archive.writestr(PAYLOAD, "ok.txt")
        # The public writestr() refuses such names; hostile archives come from other tools.
        archive._writestr(PAYLOAD, "../evil.txt")
    return path


def encrypted_zip(folder: Path) -> Path:
    """A ZipCrypto password-protected zip (password 'secret')."""
    member = RawMember(b"IM0001.dcm", dicom_bytes(), zipfile.ZIP_DEFLATED, password=b"secret")
    return make_raw_zip(folder / "encrypted.zip", [member])


def encrypted_7z(folder: Path) -> Path:
    """An AES-256 password-protected 7z with readable names."""
    return make_7z(folder / "encrypted.7z", study_files(2), password="secret")


def encrypted_header_7z(folder: Path) -> Path:
    """An AES-256 7z whose header (member names) is encrypted too."""
    return make_7z(
        folder / "encrypted_header.7z", study_files(2), password="secret", header_encryption=True
    )


def truncated(path: Path, keep: float = 0.6) -> Path:
    """Cut ``path`` to ``keep`` of its length, in place."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def truncated_zip(folder: Path) -> Path:
    """A zip cut short (its central directory is gone)."""
    return truncated(make_zip(folder / "truncated.zip", study_files(3)))


def truncated_7z(folder: Path) -> Path:
    """A 7z cut short."""
    return truncated(make_7z(folder / "truncated.7z", study_files(3)))


def truncated_tar_gz(folder: Path) -> Path:
    """A .tar.gz cut short."""
    return truncated(make_tar(folder / "truncated.tar.gz", study_files(3), "tar.gz"))


def corrupt_zip(folder: Path) -> Path:
    """A zip whose member data was altered (bad CRC)."""
    path = make_zip(folder / "corrupt.zip", {"a.bin": b"A" * 4000}, zipfile.ZIP_STORED)
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def bomb_zip(folder: Path, size: int = 64 * 1024**2, name: str = "bomb.zip") -> Path:
    """A single-member zip of ``size`` zero bytes (ratio about 1000:1), streamed to disk."""
    path = folder / name
    chunk = bytes(1024**2)
    with (
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive,
        archive.open("zeros.bin", "w", force_zip64=True) as out,
    ):
        for _ in range(size // len(chunk)):
            out.write(chunk)
    return path


def lying_bomb_zip(folder: Path, size: int = 32 * 1024**2) -> Path:
    """A bomb whose headers declare a 10-byte member: only the bytes actually written count."""
    payload = bytes(size)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    compressed = compressor.compress(payload) + compressor.flush()
    crc = zlib.crc32(payload)
    name = b"zeros.bin"
    fields = (20, 0, zipfile.ZIP_DEFLATED, 0, 0x21, crc, len(compressed), 10)
    body = struct.pack("<4s5HIII2H", b"PK\x03\x04", *fields, len(name), 0) + name + compressed
    central = struct.pack(
        "<4s6HIII5HII", b"PK\x01\x02", 0x314, *fields, len(name), 0, 0, 0, 0, 0, 0
    )
    central += name
    end = struct.pack("<4s4HIIH", b"PK\x05\x06", 0, 0, 1, 1, len(central), len(body), 0)
    path = folder / "lying.zip"
    path.write_bytes(body + central + end)
    return path


def nested_bomb_zip(folder: Path, inner: int = 4, size: int = 16 * 1024**2) -> Path:
    """A zip of ``inner`` zips each holding ``size`` zeros: small levels, large total."""
    work = folder / "nested-bomb-parts"
    work.mkdir()
    one = bomb_zip(work, size, "layer.zip").read_bytes()
    return make_zip(
        folder / "nested_bomb.zip", {f"part{n}.zip": one for n in range(inner)}, zipfile.ZIP_STORED
    )


def nested_zip(folder: Path, depth: int, files: Mapping[str, bytes] | None = None) -> Path:
    """``depth`` zips inside each other (depth 1: a plain zip), innermost holding ``files``."""
    content = dict(files or {"IM0001.dcm": dicom_bytes()})
    path = folder / "level1.zip"
    for level in range(depth, 0, -1):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, data in content.items():
                archive.writestr(name, data)
        content = {f"level{level}.zip": buffer.getvalue()}
    path.write_bytes(content["level1.zip"])
    return path


def many_entries_zip(folder: Path, count: int) -> Path:
    """A zip with ``count`` tiny members."""
    return make_zip(folder / "many.zip", {f"f{n:05d}.txt": b"x" for n in range(count)})


def wrong_extension_zip(folder: Path) -> Path:
    """A zip named like a DICOM file."""
    return make_zip(folder / "scan.dcm", study_files(2))


def seven_zip_named_zip(folder: Path) -> Path:
    """A 7z archive carrying a .zip extension."""
    return make_7z(folder / "archive.zip", study_files(2))


def cp437_zip(folder: Path) -> Path:
    """A zip with CP437-encoded names and no UTF-8 flag (old Windows tools)."""
    members = [
        RawMember("Ärzte/Überweisung.dcm".encode("cp437"), dicom_bytes(1)),
        RawMember("Ärzte/ñ.dcm".encode("cp437"), dicom_bytes(2)),
    ]
    return make_raw_zip(folder / "cp437.zip", members)


def utf8_flagged_zip(folder: Path) -> Path:
    """A zip with UTF-8 names and the UTF-8 flag set."""
    member = RawMember("Müller/Ψ séance.dcm".encode(), dicom_bytes(), flags=0x800)
    return make_raw_zip(folder / "utf8.zip", [member])


def backslash_zip(folder: Path) -> Path:
    """A zip whose names use Windows backslashes as separators."""
    members = [
        RawMember(b"STUDY\\SERIES1\\IM0001.dcm", dicom_bytes(1)),
        RawMember(b"STUDY\\SERIES2\\IM0002.dcm", dicom_bytes(2)),
    ]
    return make_raw_zip(folder / "backslash.zip", members)


def macos_zip(folder: Path) -> Path:
    """A zip as made by macOS Finder: __MACOSX/ resource forks, ._ files and .DS_Store."""
    return make_zip(
        folder / "macos.zip",
        {
            "PAT1/IM0001.dcm": dicom_bytes(1),
            "PAT1/.DS_Store": b"\x00\x00\x00\x01Bud1",
            "PAT1/._IM0001.dcm": b"\x00\x05\x16\x07resource",
            "__MACOSX/PAT1/._IM0001.dcm": b"\x00\x05\x16\x07resource",
            "__MACOSX/._PAT1": b"\x00\x05\x16\x07resource",
        },
    )


def deflate64_zip(folder: Path, files: Mapping[str, bytes]) -> Path:
    """A zip whose members use deflate64 (method 9), as Windows Explorer writes large zips."""
    members = [RawMember(name.encode(), data, method=9) for name, data in files.items()]
    return make_raw_zip(folder / "deflate64.zip", members)


def duplicate_zip(folder: Path) -> Path:
    """A zip holding the same path twice."""
    members = [RawMember(b"a.txt", b"first"), RawMember(b"a.txt", b"second")]
    return make_raw_zip(folder / "duplicate.zip", members)
