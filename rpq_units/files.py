"""Writing and hashing files: the one home of the package's file acts.

Every output is written under a temporary name beside it (``<name>.tmp``) and renamed over the
final name only when it is complete (:func:`os.replace`), so an interrupted or failed run never
leaves a truncated file and an earlier output stays as it was. :func:`atomic_path` is that rule
for any writer (``np.savez``, ``torch.save``, ``soundfile.write``, ``shutil.copyfile``);
:func:`write_bytes_atomic` and :func:`write_text_atomic` are the common cases. An OSError that
names no file (a failing ``write`` on a full disk) is re-raised naming the output
(:func:`named_os_error`), so the one-line error says which file could not be written.

Reads and writes only through the standard library; the quantizers (``rpq_units.quant``) do no
file I/O and do not import it.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TMP_SUFFIX = ".tmp"


def tmp_path(path: str | os.PathLike, suffix: str = TMP_SUFFIX) -> Path:
    """The temporary name of ``path`` while it is written: ``<name><suffix>`` beside it."""
    path = Path(path)
    return path.with_name(path.name + suffix)


def named_os_error(e: OSError, path: str | os.PathLike) -> OSError:
    """``e`` naming ``path`` when it names no file (a failing ``write`` on a full disk does
    not), so the one-line error says which output could not be written."""
    if e.filename is not None or e.errno is None:
        return e
    return OSError(e.errno, e.strerror or str(e), str(path))


def discard(fh: Any, tmp: str | os.PathLike) -> None:
    """Close ``fh`` (if any) and remove the temporary file ``tmp``, ignoring errors (a close on
    a full disk fails again while flushing)."""
    if fh is not None:
        try:
            fh.close()
        except OSError:
            pass
    try:
        Path(tmp).unlink(missing_ok=True)
    except OSError:
        pass


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = TMP_SUFFIX) -> Iterator[Path]:
    """The temporary name of ``path`` (:func:`tmp_path`) for the block to write; renamed over
    ``path`` when the block ends without an exception. On failure the temporary file is
    removed, an earlier ``path`` is left as it was and an OSError names ``path``.

    ``suffix`` keeps an ending a writer needs (``".tmp.wav"`` for ``soundfile``, ``".tmp.npz"``
    for ``np.savez``) or sets writers of one path apart (``f".tmp{os.getpid()}"``)."""
    path = Path(path)
    tmp = tmp_path(path, suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        discard(None, tmp)
        named = named_os_error(e, path)
        if named is e:
            raise
        raise named from e
    except BaseException:
        discard(None, tmp)
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes, suffix: str = TMP_SUFFIX) -> None:
    """Write ``data`` to ``path`` under its temporary name, then rename (:func:`atomic_path`;
    ``suffix`` as there)."""
    with atomic_path(path, suffix) as tmp:
        fh = open(tmp, "wb")
        try:
            fh.write(data)
        except BaseException:
            discard(fh, tmp)
            raise
        fh.close()


def write_text_atomic(path: str | os.PathLike, text: str, suffix: str = TMP_SUFFIX) -> None:
    """Write ``text`` (UTF-8) to ``path`` under its temporary name, then rename."""
    write_bytes_atomic(path, text.encode("utf-8"), suffix)


def writer_suffix() -> str:
    """A temporary-name suffix of this writer alone (``.<random>.tmp``), for a file that several
    processes, on one host or several, may write at the same moment: with one shared temporary
    name a writer's rename finds the file already renamed by another, and fails."""
    return f".{uuid.uuid4().hex[:12]}{TMP_SUFFIX}"


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
