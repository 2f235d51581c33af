"""Durable publishing in a model folder: a temporary file fsynced, then a free name or a replacement.

Saving is atomic and durable: the file is written under a temporary name in the target folder
(locks.py), fsynced, and published under a name no other save can take (:func:`publish_new`);
then the folder's index is updated. Replacing a published file (a new vocoder, an in-place
conversion) renames the new file over it under the folder's lock, with the replacement marker of
FORMAT.md §15.2 item 4 between the rename and the index update (:func:`publish_over`).
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .archive import ArchivePlan, Progress, plan_archive, write_archive
from .catalog import MODEL_FILE_EXTENSION, ModelLibrary, entry_from_manifest
from .content import ModelContent
from .errors import InputError, LibraryError, os_errors
from .fsio import fsync_dir
from .locks import create_temporary, discard_temporary, release_temporary
from .signing import set_aside, signature_path
from .source import is_url

logger = logging.getLogger("distillgan")
MAX_STEM_CHARS = 100
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}


def sanitize_filename(name: str) -> str:
    """The file stem ``save_model`` gives a model named ``name``, as the app names its files (``distillgan.sanitize_filename``).

    Every character but ``[a-zA-Z0-9_-]`` becomes ``_``, runs of ``_`` become one, leading and
    trailing ``_`` go, the rest is lowercased and cut to ``MAX_STEM_CHARS`` (100); an empty result
    is ``"untitled"`` and a name Windows reserves (``con``, ``com1``...) gets ``_model`` appended.
    ``save_model`` then writes ``<stem>.distillgan``, or ``<stem>_1.distillgan``, ``_2``... when taken.
    """
    stem = re.sub(r"[^a-zA-Z0-9_\-]", "_", name)
    stem = re.sub(r"_+", "_", stem).strip("_").lower()[:MAX_STEM_CHARS].strip("_")
    if not stem:
        stem = "untitled"
    if stem in _WINDOWS_RESERVED:
        stem += "_model"
    return stem


def unlink_quietly(path: str) -> None:
    """Remove ``path``; nothing if it is already gone."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _numbered(models_dir: Path, stem: str, counter: int) -> Path:
    suffix = "" if counter == 0 else f"_{counter}"
    return models_dir / f"{stem[: MAX_STEM_CHARS - len(suffix)]}{suffix}{MODEL_FILE_EXTENSION}"


def _free_counter(models_dir: Path, stem: str) -> int:
    """Where to start looking for a free ``<stem>[_N]`` name: the first free one if names are taken from 0 up.

    Doubling then bisection: ~2 log2(n) ``lstat`` calls for n models of one name, where trying
    each name in turn cost n. With holes (deleted models) it may skip a free lower number; the
    no-clobber link that follows is what decides.
    """
    if not os.path.lexists(_numbered(models_dir, stem, 0)):
        return 0
    taken, free = 0, 1
    while os.path.lexists(_numbered(models_dir, stem, free)):
        taken, free = free, free * 2
    while free - taken > 1:
        mid = (taken + free) // 2
        if os.path.lexists(_numbered(models_dir, stem, mid)):
            taken = mid
        else:
            free = mid
    return free


def write_temporary(plan: ArchivePlan, folder: Path, stem: str, progress: Progress | None) -> tuple[str, int]:
    """Write ``plan`` to a fresh hidden temporary file in ``folder``, fsynced; return its path and size.

    The file (``.<stem>.<pid>.<random>.distillgan-tmp``, mode 0644) stays open and locked until
    it is published or ``discard_temporary``, so that a repair knows its writer is alive (locks.py).
    """
    fd, tmp = create_temporary(folder, stem)
    try:
        with os.fdopen(fd, "wb", buffering=0, closefd=False) as f:
            size = write_archive(f, plan, progress=progress)
            os.fsync(f.fileno())
    except BaseException:
        discard_temporary(tmp)
        raise
    return tmp, size


def publish_new(tmp: str, models_dir: Path, stem: str) -> Path:
    """Give the finished temporary file its final name, ``<stem>[_N].distillgan``, without ever replacing another file.

    The caller holds the folder lock: the temporary file is released (closed, unlocked: Windows
    cannot rename or unlink an open file) and no repair can take it for abandoned meanwhile.
    """
    release_temporary(tmp)
    for counter in itertools.count(_free_counter(models_dir, stem)):
        final = _numbered(models_dir, stem, counter)
        try:
            os.link(tmp, final)  # atomic and no-clobber: fails if the name is taken
        except FileExistsError:
            continue
        except (OSError, NotImplementedError, AttributeError):
            if os.name == "nt":  # no hard links here; rename never replaces on Windows
                try:
                    os.rename(tmp, final)
                    return final
                except FileExistsError:
                    continue
            try:  # no hard links on this file system: reserve the name, then replace
                os.close(os.open(final, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                continue
            os.replace(tmp, final)
            return final
        os.unlink(tmp)
        return final
    raise AssertionError("unreachable")


def replace_file(tmp: str, path: Path) -> None:
    """Rename ``tmp`` over ``path``; on Windows, retry briefly while another handle has it open."""
    for attempt in range(50):
        try:
            os.replace(tmp, path)
            return
        except PermissionError as e:
            if os.name != "nt" or attempt == 49:
                raise LibraryError(
                    f"cannot replace {str(path)!r}: {e.strerror} (is it loaded? load_model(copy=True) keeps no handle on the file)",
                    code="file-in-use",
                ) from e
            time.sleep(0.02)


def place_file(tmp: str, target: Path, *, overwrite: bool, exists: Callable[[], BaseException]) -> None:
    """Give the finished file ``tmp`` the name ``target`` (a file written beside it, outside any model folder).

    With ``overwrite`` it replaces whatever is there (:func:`replace_file`); otherwise the name is
    taken only if free, atomically (a hard link fails if another process took it meanwhile), and
    ``exists()`` is raised when it is not. Where there are no hard links (FAT, some network
    shares) a rename stands in, which never replaces on Windows.
    """
    if overwrite:
        replace_file(tmp, target)
        return
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise exists() from None
    except OSError:
        if os.path.lexists(target):
            raise exists() from None
        os.replace(tmp, target)


def publish_over(library: ModelLibrary, tmp: str, path: Path, entry: Any, before_index: Callable[[], None] | None = None) -> None:
    """Rename the finished temporary file ``tmp`` over the published ``path``, then index ``entry``; the caller holds the lock.

    A kill between the rename and the index leaves the replacement marker (FORMAT.md §15.2 item 4),
    so the next reader indexes the file again; a failed rename leaves the old file and its entry
    as they were, and no marker. The index update only warns if it fails (the marker then stays).
    ``before_index`` runs between the two (the crash tests stop there).
    """
    release_temporary(tmp)  # Windows cannot rename an open file
    stale = set_aside(path)  # its signature is for the old bytes: FILE.sig -> FILE.sig.stale, logged (FORMAT.md §16.1)
    marker = library.mark_replacing(path.name)
    try:
        replace_file(tmp, path)
    except BaseException:
        unlink_quietly(marker)
        if stale is not None:  # the old bytes stay, and so does their signature
            os.replace(stale, signature_path(path))
        raise
    fsync_dir(path.parent)
    if before_index is not None:
        before_index()
    if library.record(library.indexed(), entry, durable=True):
        unlink_quietly(marker)


def model_folder(models_dir: str | os.PathLike[str]) -> Path:
    """``models_dir`` as the folder to save into (``~`` expanded); InputError for a URL or a file name."""
    text = os.fspath(models_dir)
    if is_url(text):
        raise InputError(
            f"models_dir {text!r} is a URL; save_model writes into a local folder (distillgan reads URLs, it does not write them)",
            code="invalid-input",
        )
    if text.lower().endswith(MODEL_FILE_EXTENSION):
        raise InputError(
            f"models_dir {text!r} looks like a file name; save_model takes a folder and names the file after the model. "
            "To write one file at a path of your choosing use distillgan.save_file(model, path, ...)",
            code="invalid-input",
        )
    return Path(os.path.expanduser(text))


def save_content(content: ModelContent, models_dir: str | os.PathLike[str], owner: Any, progress: Progress | None) -> Path:
    """Save ``content`` as a new model in ``models_dir``, named after it, and index it; OS failures as DistillganErrors.

    ``content.stamp(owner)`` fills in ``model_id``, ``save_date`` and the analysis fields first
    (also on the caller's ``owner``).
    """
    with os_errors("save a model", models_dir):
        path = _save_content(content, models_dir, owner, progress)
    logger.info("saved %s", path)
    return path


def _save_content(content: ModelContent, models_dir: str | os.PathLike[str], owner: Any, progress: Progress | None) -> Path:
    folder = model_folder(models_dir)
    content.stamp(owner)
    meta = content.metadata
    folder.mkdir(parents=True, exist_ok=True)
    library = ModelLibrary(folder)
    library.check_id_free(meta["model_id"])  # fail before writing; checked again under the lock
    stem = sanitize_filename(meta["name"])
    # refuses unstorable values before any file is created
    plan = plan_archive(content.manifest(), user_metadata=content.user_metadata)
    tmp, size = write_temporary(plan, folder, stem, progress)
    try:
        with library.locked():
            base = library.prepare_add(meta["model_id"])
            final = publish_new(tmp, folder, stem)
            fsync_dir(folder)
            # Published: from here on nothing raises. The entry comes from the manifest, which was
            # round-tripped through the reader before writing; the index write is not fsynced
            # (the file is, and the entry can be derived from it again: catalog.py).
            library.record(base, entry_from_manifest(plan.raw, final.name, size), durable=False)
    except BaseException:
        discard_temporary(tmp)  # nothing if it was published
        raise
    return final
