"""``.npz`` archives read with their declared sizes checked before anything is allocated.

``numpy.load`` trusts a file: an 8.5 KB archive whose member declares shape (2**40, 4) made it
ask for 32 TiB (numpy's MemoryError), and a 3 MB archive of compressed zeros was inflated to
3.8 GB before its content was found wrong. :class:`NpzReader` reads the same archives
(``numpy.savez`` / ``savez_compressed``, no pickle) and refuses, with :class:`NpzError`, before
decompressing or allocating:

- a member whose declared uncompressed size (the zip directory) exceeds what is left of the
  archive's budget: :data:`MAX_EXPANSION` times the archive's own size plus
  :data:`EXPANSION_SLACK_BYTES`, for all the members read together (``numpy.savez`` stores
  members uncompressed, so its files use at most their own size);
- a member whose ``.npy`` header declares a shape and dtype whose bytes differ from the bytes
  the member holds, or a dtype holding Python objects.

Decompression is streamed and stops at the declared size (``zipfile`` reads no further and
checks the CRC), so a directory that understates a member costs no more than it declares.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np

#: Bytes the members read from an archive may expand to, per byte of the archive.
MAX_EXPANSION = 100
#: Bytes every archive may expand to on top of that (small compressed members, such as an
#: origin of zeros).
EXPANSION_SLACK_BYTES = 1 << 20


class NpzError(ValueError):
    """An archive member that cannot be read safely (the message says which and why)."""


def _size(nbytes):
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if nbytes < 1024 or unit == "PiB":
            return f"{nbytes:,.0f} {unit}" if unit == "bytes" else f"{nbytes:,.1f} {unit}"
        nbytes /= 1024
    return ""  # pragma: no cover


class NpzReader:
    """The ``.npy`` members of a zip archive held in memory, read one at a time, checked.

    ``reader.files`` lists the member names without ``.npy`` (as ``numpy.load`` does);
    ``reader[name]`` is the member's array (a writable copy). Use as a context manager.
    Raises :class:`NpzError` for a member that breaks a rule above, and
    ``zipfile.BadZipFile``, ``EOFError`` or ``ValueError`` for a damaged archive.
    """

    def __init__(self, content):
        self.zip = zipfile.ZipFile(io.BytesIO(content))
        self.members = {
            (info.filename[:-4] if info.filename.endswith(".npy") else info.filename): info
            for info in self.zip.infolist()
        }
        self.files = list(self.members)
        self.budget = MAX_EXPANSION * len(content) + EXPANSION_SLACK_BYTES

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.zip.close()

    def __contains__(self, name):
        return name in self.members

    def __getitem__(self, name):
        info = self.members[name]
        if info.file_size > self.budget:
            raise NpzError(
                f"the member {name!r} declares {_size(info.file_size)} uncompressed "
                f"({_size(info.compress_size)} stored), more than this archive may expand to "
                f"({_size(self.budget)} left of {MAX_EXPANSION} times its size); it was not "
                "decompressed"
            )
        self.budget -= info.file_size
        fmt = np.lib.format
        with self.zip.open(info) as stream:
            version = fmt.read_magic(stream)
            read_header = (
                fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            )
            shape, fortran_order, dtype = read_header(stream)
            if dtype.hasobject:
                raise NpzError(
                    f"the member {name!r} holds Python objects (dtype {dtype}), which are "
                    "never read (no pickle)"
                )
            header_bytes = stream.tell()
            count = 1
            for n in shape:
                count *= int(n)
            declared = count * dtype.itemsize
            held = info.file_size - header_bytes
            if declared != held:
                raise NpzError(
                    f"the member {name!r} declares shape {tuple(shape)} of {dtype} "
                    f"({_size(declared)}) but holds {_size(max(held, 0))}"
                )
            data = stream.read(declared)
        if declared == 0:
            return np.zeros(shape, dtype=dtype)
        if len(data) != declared:
            raise EOFError(f"the member {name!r} ends after {len(data)} of {declared} bytes")
        array = np.frombuffer(data, dtype=dtype, count=count)
        return array.reshape(shape, order="F" if fortran_order else "C").copy()
