"""The ``distillgan`` command: the only module that prints.

Exit status: 0 success, 1 failure (a bad file, a failed check), 2 usage
error. Errors go to stderr as ``distillgan: error [code]: message``. Every
string that comes from a file (names, metadata, tensor names) is escaped
before it reaches the terminal.
"""

from __future__ import annotations

import argparse
import os
import json
import sys
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import __version__
from .errors import DistillganError, LibraryError

if TYPE_CHECKING:  # imported where a command needs them: `distillgan --version` and `inspect` start small
    from .catalog import RepairReport

DEFAULT_DIR = "models"
DEMO_DIR = "distillgan-demo"


def safe(text: Any) -> str:
    """Escape control, format and other non-printable characters of an untrusted string."""
    s = str(text)
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in s)


def _human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict) and value.get("$") == "float":  # a non-finite float in inspect's JSON form
        return safe(value.get("value"))
    if isinstance(value, float):
        return f"{value:.4g}"
    return safe(value)


class ProgressBar:
    """A one-line progress bar on stderr, drawn only on a terminal and only for large jobs."""

    MIN_BYTES = 64 << 20

    def __init__(self, label: str, stream: Any = None, *, force: bool = False) -> None:
        self.label = safe(label)
        self.stream = stream if stream is not None else sys.stderr
        self.force = force  # --progress: drawn whatever the stream and the size
        self.enabled = force or bool(getattr(self.stream, "isatty", lambda: False)())
        self.drawn = False
        self.last = 0.0
        self.lock = threading.Lock()

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or (total < self.MIN_BYTES and not self.force):
            return
        now = time.monotonic()
        with self.lock:
            if self.drawn and now - self.last < 0.1 and done < total:
                return
            self.last = now
            width = 30
            filled = width * done // max(total, 1)
            self.stream.write(
                f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {100 * done // max(total, 1):3d}% "
                f"{_human_bytes(done)} / {_human_bytes(total)}"
            )
            self.stream.flush()
            self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False


class _bar:  # used as `with _bar(label, args) as progress:`
    """A :class:`ProgressBar` on stderr for one step, when stderr is a terminal or ``--progress`` asks; closed at the end."""

    def __init__(self, label: str, args: argparse.Namespace) -> None:
        forced = bool(getattr(args, "progress", False))
        self.bar = ProgressBar(label, force=forced)

    def __enter__(self) -> ProgressBar:
        return self.bar

    def __exit__(self, *exc: object) -> None:
        self.bar.close()


JSON_SHAPE = """--json prints JSON Lines: one JSON object per line, whatever the number of files and on failure too.
Every object has "ok" (true or false); a failed one has "code" and "error" (the message), and the
command also exits 1. inspect and verify print one object per FILE, with "file"; list and repair print
one object for the folder, with "dir". On success: inspect adds its description ("format", "version",
"file_size", "members", "manifest", "tensors", and "sha256"/"digests" when asked), verify adds
"members" (a count) and "sha256" (null unless --sha256), list adds "models" (the index entries),
repair adds its report ("added", "removed", "invalid"...). The JSON is strict: a NaN or infinite
value is written as FORMAT.md §4.6 writes it, {"$": "float", "value": "nan", "bits": "..."}."""


def _json_line(obj: dict[str, Any]) -> None:
    """One object of the ``--json`` output (JSON_SHAPE): one line, strict JSON, ASCII."""
    print(json.dumps(obj, ensure_ascii=True, allow_nan=False), flush=True)


def _err(e: DistillganError, where: str | None = None) -> None:
    prefix = f"{safe(where)}: " if where else ""
    print(f"distillgan: error [{e.code}]: {prefix}{safe(e)}", file=sys.stderr)


# --- inspect ---------------------------------------------------------------------------


def tensor_digests(path: str, progress: Any = None) -> dict[str, dict[str, str]]:
    """SHA-256 of each stored tensor's bytes, per member (reads tensor data; no torch).

    ``progress(done, total)`` counts the tensor bytes hashed.
    """
    import hashlib

    from .archive import open_archive

    out: dict[str, dict[str, str]] = {}
    with open_archive(path) as archive:
        total = sum(t.nbytes for table in archive.tables.values() for t in table.tensors)
        done = 0
        for member, table in archive.tables.items():
            out[member] = {}
            for t in table.tensors:
                h = hashlib.sha256()
                for chunk in archive.tensor_chunks(member, t):
                    h.update(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
                out[member][t.name] = h.hexdigest()
    return out


def _describe_file(path: str, args: argparse.Namespace) -> dict[str, Any]:
    from .archive import file_sha256, inspect, verify

    # --digests reads every tensor byte anyway, so it checks CRCs and bool bytes as verify does;
    # verify returns the same description as inspect, so the file is validated once, not twice.
    if args.verify or args.digests:
        with _bar(f"verifying {path}", args) as bar:
            info = verify(path, progress=bar)
    else:
        info = inspect(path, tensors=not args.no_tensors)
    if args.digests:
        with _bar(f"tensor digests of {path}", args) as bar:
            info["digests"] = tensor_digests(path, progress=bar)
    if args.sha256:
        with _bar(f"sha256 of {path}", args) as bar:
            info["sha256"] = file_sha256(path, progress=bar)
    if args.no_tensors:
        info.pop("tensors", None)
    from .source import is_url

    if not is_url(path):  # a sidecar beside a local file (FORMAT.md §16.1); a URL's would cost a request
        from .signing import sidecar

        info["signature"] = sidecar(path)
    return info


def cmd_inspect(args: argparse.Namespace) -> int:
    failed = 0
    for i, path in enumerate(args.files):
        try:
            info = _describe_file(path, args)
        except DistillganError as e:
            failed += 1
            if args.json:
                _json_line({"file": path, "ok": False, "code": e.code, "error": str(e)})
            _err(e, path if len(args.files) > 1 else None)
            continue
        if args.json:
            _json_line({"file": path, "ok": True, **info})
        else:
            if i and len(args.files) > 1:
                print()
            print(_summary(path, info, args))
    return 1 if failed else 0


def _vocoder_line(state: Any) -> str:
    """The vocoder of inspect's summary, from the JSON form of ``vocoder_state`` (FORMAT.md §4.3, informative keys)."""
    if state is None:
        return "none"
    tm = state.get("training_metadata") if isinstance(state, dict) else None
    tm = tm if isinstance(tm, dict) else {}
    kind = state.get("type") if isinstance(state, dict) else None
    epochs = tm.get("epochs", tm.get("epoch"))
    loss = tm.get("final_loss", tm.get("loss"))
    return (f"{safe(kind) if isinstance(kind, str) and kind else '-'}, {_fmt(epochs if type(epochs) is int else None)} epochs, "
            f"final loss {_fmt(loss if isinstance(loss, (int, float, dict)) and not isinstance(loss, bool) else None)}")


def _summary(path: str, info: dict[str, Any], args: argparse.Namespace) -> str:
    m = info["manifest"]
    meta = m["metadata"]
    lines = [
        f"file        {safe(path)}",
        f"format      {safe(info['format'])} version {info['version']}",
        f"size        {info['file_size']} bytes ({_human_bytes(info['file_size'])})",
    ]
    if "sha256" in info:
        lines.append(f"sha256      {info['sha256']}")
    if args.verify or args.digests:
        lines.append("verified    every CRC-32 and BOOL byte")
    lines += [
        f"name        {safe(meta['name'])}",
        f"model id    {safe(meta['model_id'])}",
        f"saved       {safe(meta['save_date'])}   trained {safe(meta['training_date']) or '-'}",
        f"training    {meta['training_epochs']} epochs, train loss {_fmt(meta['final_train_loss'])}, "
        f"val loss {_fmt(meta['final_val_loss'])}",
        f"dataset     {safe(meta['dataset_name']) or '-'} ({meta['dataset_file_count']} files, "
        f"{_fmt(meta['dataset_total_duration_s'])} s)",
        f"tags        {', '.join(safe(t) for t in meta['tags']) or '-'}",
        f"user meta   {', '.join(f'{safe(k)}={safe(v)}' for k, v in info.get('user_metadata', {}).items()) or '-'}",
        f"latent dim  {_fmt(m['latent_dim'])}   analysis {'yes' if m['analysis'] is not None else 'no'}   "
        f"extra {'yes' if m['extra'] is not None else 'no'}",
    ]
    lines.append(f"vocoder     {_vocoder_line(m['vocoder_state'])}")
    if "signature" in info:
        sig = info["signature"]
        lines.append(f"signature   {safe(sig)} (not checked here: distillgan verify FILE --public-key KEY.pem)" if sig else "signature   none")
    lines.append("members")
    for mem in info["members"]:
        lines.append(f"  {mem['name']:<22} offset {mem['data_offset']:>12}  {mem['size']:>12} bytes  crc32 {mem['crc32']:08x}")
    if "tensors" not in info:
        counts = ", ".join(f"{safe(name)} {len(tables['aliases'])} aliases" for name, tables in m["members"].items())
        lines.append(f"tensors     not listed (--no-tensors); {counts}")
        return "\n".join(lines)
    for member, tensors in info["tensors"].items():
        aliases = m["members"][member]["aliases"]
        lines.append(f"tensors in {member} ({len(tensors)} stored, {len(aliases)} aliases)")
        for t in tensors:
            shape = "x".join(str(d) for d in t["shape"]) or "scalar"
            line = f"  {safe(t['name']):<40} {t['dtype']:<6} {shape:<18} {t['bytes']:>12} bytes"
            if "digests" in info:
                line += f"  {info['digests'][member][t['name']][:16]}"
            lines.append(line)
        for alias, target in aliases.items():
            lines.append(f"  {safe(alias):<40} = {safe(target)}")
    return "\n".join(lines)


# --- verify ------------------------------------------------------------------------------


def cmd_verify(args: argparse.Namespace) -> int:
    from .archive import verify

    signed = bool(args.signature or args.public_key or args.certificate_chain)  # FORMAT.md §16.3: also a valid signature
    if signed and not args.public_key and not args.certificate_chain:
        print("distillgan: error [usage]: --signature needs --public-key or --certificate-chain to check it with", file=sys.stderr)
        return 2
    if args.signature and len(args.files) != 1:
        print("distillgan: error [usage]: --signature names the signature of one FILE (without it, each FILE's FILE.sig)",
              file=sys.stderr)
        return 2
    if args.sha256 and len(args.files) != 1:
        print("distillgan: error [usage]: --sha256 checks one file", file=sys.stderr)
        return 2
    keys = {"signature": args.signature, "public_key": args.public_key, "certificate_chain": args.certificate_chain} if signed else {}
    failed = 0
    for path in args.files:
        try:
            with _bar(f"verifying {path}", args) as bar:
                info = verify(path, sha256=args.sha256, progress=bar, **keys)
        except DistillganError as e:
            failed += 1
            if args.json:
                _json_line({"file": path, "ok": False, "code": e.code, "error": str(e)})
            if signed:  # one `error [CODE]` line on stderr, as every other refusal of the command line
                _err(e, path)
            elif not args.json:
                print(f"FAIL  {safe(path)}: [{e.code}] {safe(e)}")
            continue
        result = {"file": path, "ok": True, "members": len(info["members"]), "sha256": info.get("sha256")}
        if signed:
            result["signature"] = info["signature"]
        if args.json:
            _json_line(result)
        else:
            extra = f", sha256 {info['sha256']}" if "sha256" in info else ""
            if signed:
                extra += f" signed by {safe(info['signature']['signer'])} in {safe(info['signature']['file'])}"
            print(f"OK    {safe(path)} ({len(info['members'])} members, every CRC-32 matches{extra})")
    return 1 if failed else 0


# --- signatures (FORMAT.md §16) -----------------------------------------------------------


def cmd_sign(args: argparse.Namespace) -> int:
    from .persistence import sign

    if bool(args.certificate_chain) != bool(args.signing_certificate):
        print("distillgan: error [usage]: --signing-certificate and --certificate-chain (its issuer's certificates) go together",
              file=sys.stderr)
        return 2
    password = args.password if args.password is not None else os.environ.get("DISTILLGAN_KEY_PASSWORD")
    target = sign(args.file, private_key=args.private_key, signature=args.signature, password=password,
                  signing_certificate=args.signing_certificate, certificate_chain=args.certificate_chain)
    how = f"certificate {safe(args.signing_certificate)}" if args.signing_certificate else f"key {safe(args.private_key)}"
    print(f"signed {safe(args.file)} with {how}: {safe(target)}")
    return 0


# --- library commands ---------------------------------------------------------------------


def _entry_json(e: Any) -> dict[str, Any]:
    """An index entry in the JSON projection of FORMAT.md §4.6: NaN and infinities as {"$": "float", ...}, strict JSON."""
    import dataclasses

    from .values import json_view

    return json_view(dataclasses.asdict(e))


def _folder(args: argparse.Namespace) -> str:
    """The models folder of a command: --dir (or the legacy positional), which must exist — never created here."""
    from pathlib import Path

    folder = getattr(args, "folder", None) or args.dir or DEFAULT_DIR
    if not Path(folder).expanduser().is_dir():
        what = "is not a folder" if Path(folder).expanduser().exists() else "does not exist"
        raise LibraryError(f"models folder {folder!r} {what} (give the folder with --dir)", code="not-found")
    return str(Path(folder).expanduser())


def _signature_states(args: argparse.Namespace, entries: list[Any]) -> dict[str, str]:
    """Per model id: `unsigned`, `signed` (a FILE.sig, not checked), or with --public-key/--certificate-chain `valid` or the code."""
    from .catalog import ModelLibrary

    library, keys, chain = ModelLibrary(args.dir), args.public_key or None, args.certificate_chain or None
    return {e.model_id: library.signature(e, public_key=keys, certificate_chain=chain) for e in entries}


def cmd_list(args: argparse.Namespace) -> int:
    from .catalog import ModelLibrary

    args.dir = _folder(args)
    library = ModelLibrary(args.dir)
    entries = library.list_all()
    signatures = _signature_states(args, entries)
    if args.json:
        models = [{**_entry_json(e), "signature": signatures[e.model_id]} for e in entries]
        _json_line({"dir": args.dir, "ok": True, "models": models})
        return 0
    if library.last_repair is not None:
        _print_repair(library.last_repair, sys.stderr)
    if not entries:
        print(f"no models in {safe(args.dir)}")
        return 0
    flagged = any(e.problem for e in entries)
    header: tuple[str, ...] = ("NAME", "ID", "SIZE", "EPOCHS", "TRAIN LOSS", "VAL LOSS", "SIGNATURE", "VOCODER")
    header += ("PROBLEM",) if flagged else ()
    rows = [header]
    for e in entries:
        voc = "none" if e.vocoder is None else f"{safe(e.vocoder.type)} ({_fmt(e.vocoder.epochs)} ep, loss {_fmt(e.vocoder.final_loss)})"
        rows.append(
            (
                safe(e.name),
                safe(e.model_id),
                _human_bytes(e.file_size_bytes),
                str(e.training_epochs),
                _fmt(e.final_train_loss),
                _fmt(e.final_val_loss),
                signatures[e.model_id],
                voc,
            ) + ((safe(e.problem) or "-",) if flagged else ())
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    from .catalog import ModelLibrary
    from .persistence import delete_model

    from pathlib import Path

    what = args.model
    p = Path(what).expanduser()
    seps = [s for s in (os.sep, os.altsep) if s]
    # a path (not a bare file name, id or name): it names its folder, unless --dir says otherwise
    as_path = (any(s in what for s in seps) or what.startswith("~")) and (p.exists() or p.suffix == ".distillgan")
    if as_path and not (getattr(args, "folder", None) or args.dir):
        args.dir = str(p.parent)
    folder = _folder(args)
    if as_path and not _same_folder(p.parent, Path(folder)):
        raise LibraryError(f"{what!r} is not in the models folder {folder!r}; leave out --dir (a path names its own folder) "
                           f"or give --dir {str(p.parent)!r}", code="not-found")
    entries = ModelLibrary(folder).list_all()
    matches = [e for e in entries if e.model_id == what]
    if not matches:  # a file: the path given, or its name inside the folder
        name = p.name if (as_path or str(p.parent) == ".") else None
        matches = [e for e in entries if name is not None and e.file_path == name]
    if not matches:
        matches = [e for e in entries if e.name == what]
    if not matches:
        print(f"distillgan: error [not-found]: no model with id, file or name {safe(what)} in {safe(folder)}", file=sys.stderr)
        return 1
    if len(matches) > 1:
        listing = "; ".join(f"{safe(e.model_id)} ({safe(e.file_path)})" for e in matches)
        print(f"distillgan: error [ambiguous]: {len(matches)} models are named {safe(what)}: {listing}; delete by id", file=sys.stderr)
        return 1
    entry = matches[0]
    if delete_model(entry.model_id, folder):
        print(f"deleted {safe(entry.name)} ({safe(entry.model_id)}, {safe(entry.file_path)})")
        return 0
    print(f"distillgan: error [not-found]: model {safe(entry.model_id)} is no longer in {safe(folder)}", file=sys.stderr)
    return 1


def _convert_inputs(given: list[str]) -> list[str]:
    """The files to convert: each FILE as given, each folder as its ``*.distillgan`` files (sorted)."""
    files: list[str] = []
    for item in given:
        if os.path.isdir(item):
            files += sorted(os.path.join(item, n) for n in os.listdir(item) if n.endswith(".distillgan") and not n.startswith("."))
        else:
            files.append(item)
    return files


def _same_folder(a: Any, b: Any) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def _output_of(args: argparse.Namespace) -> str | None:
    """OUT of ``convert IN OUT`` (or ``--output``): the second of two paths when it names a ``.distillgan`` file
    that does not exist yet and no --dir is given; else None (every path is an input, saved into --dir)."""
    if args.output is not None:
        return str(args.output)
    if len(args.files) == 2 and args.dir is None:
        out = args.files[1]
        if out.endswith(".distillgan") and not os.path.lexists(out):
            return str(out)
    return None


def cmd_convert(args: argparse.Namespace) -> int:
    from .convert import convert_file, is_archive
    from .files import convert_to_file
    from .manifest import ModelMetadata

    out = _output_of(args)
    if out is not None:
        inputs = args.files[:1] if args.output is None else args.files
        if len(inputs) != 1 or os.path.isdir(inputs[0]):
            print("usage: distillgan convert IN OUT\ndistillgan convert: error: OUT (--output) takes one input FILE",
                  file=sys.stderr)
            return 2
        meta = ModelMetadata(description=args.description or "", tags=list(args.tag or []))
        with _bar(f"converting {inputs[0]}", args) as bar:
            done_path = convert_to_file(inputs[0], out, name=args.name, metadata=meta, key=args.key,
                                        strip_prefix=args.strip_prefix, overwrite=args.force, progress=bar)
        print(f"wrote {safe(done_path)}")
        return 0
    args.dir = args.dir or DEFAULT_DIR
    files = _convert_inputs(args.files)
    empty = [f for f in args.files if os.path.isdir(f) and not _convert_inputs([f])]
    for folder in empty:  # asked to convert a folder, and there is nothing in it to convert: say so
        print(f"distillgan: error [not-found]: {safe(folder)} holds no *.distillgan file to convert", file=sys.stderr)
    if not files:
        return 1
    several = len(files) > 1 or any(os.path.isdir(f) for f in args.files)
    if several and args.name is not None:  # a usage error, as argparse reports one
        print("usage: distillgan convert FILE [FILE ...] [--dir D] ...\n"
              "distillgan convert: error: --name names one model: give it with one FILE only", file=sys.stderr)
        return 2
    failed = 0
    for file in files:
        if several and is_archive(file):  # a folder converted before, or half-way: nothing to do for this one
            print(f"skipped {safe(file)} (already a .distillgan archive)")
            continue
        meta = ModelMetadata(description=args.description or "", tags=list(args.tag or []))
        bar = ProgressBar(f"converting {file}")
        try:
            done = convert_file(file, args.dir, name=args.name, metadata=meta, key=args.key, strip_prefix=args.strip_prefix,
                                progress=bar)
        except DistillganError as e:
            if not several:
                raise
            bar.close()
            _err(e, file)
            failed += 1
            continue
        finally:
            bar.close()
        if done.backup is not None:
            print(f"converted {safe(done.path)} in place (id {safe(done.model_id)}, name {safe(done.name)}); "
                  f"the original pickle is kept as {safe(done.backup)}")
        else:
            print(f"saved {safe(done.path)} (id {safe(done.model_id)}, name {safe(done.name)})")
    return 1 if failed or empty else 0


def cmd_export(args: argparse.Namespace) -> int:
    from .convert import export_safetensors

    bar = ProgressBar(f"exporting {args.file}")
    try:
        out = export_safetensors(args.file, args.out, vocoder=args.vocoder, overwrite=args.force, progress=bar)
    finally:
        bar.close()
    print(f"wrote {safe(out)}")
    return 0


def _print_repair(report: RepairReport, stream: Any) -> None:
    if report.reason:
        print(f"index: {safe(report.reason)}", file=stream)
    for mid in report.added:
        print(f"added    {safe(mid)}", file=stream)
    for mid in report.removed:
        print(f"removed  {safe(mid)} (its file is gone, or does not hold that id)", file=stream)
    for mid in report.refreshed:
        print(f"reread   {safe(mid)} (its file was replaced in place by an update that did not finish indexing it)", file=stream)
    for name, code in report.invalid.items():
        print(f"invalid  {safe(name)} [{code}]", file=stream)
    for name in report.ignored:
        print(f"ignored  {safe(name)} (not a .distillgan archive)", file=stream)
    for name in report.legacy:
        print(f"legacy   {safe(name)} (a pickle-era model, kept as listed; `distillgan convert` makes a .distillgan of it)",
              file=stream)
    for name in report.cleaned:
        print(f"cleaned  {safe(name)} (the temporary file of an interrupted save)", file=stream)
    for mid, problem in report.flagged.items():
        print(f"flagged  {safe(mid)} ({safe(problem)}; listed and kept in the index, `distillgan repair` drops what is missing)",
              file=stream)
    for name, size in report.abandoned.items():
        print(f"abandoned {safe(name)} ({_human_bytes(size)}, left by an interrupted save; `distillgan repair` removes it)",
              file=stream)


def cmd_repair(args: argparse.Namespace) -> int:
    from .catalog import ModelLibrary

    args.dir = _folder(args)
    report = ModelLibrary(args.dir).repair_index()
    if args.json:
        import dataclasses

        fields = {f.name for f in dataclasses.fields(report) if f.name != "events"}  # events: for the log, in words
        _json_line({"dir": args.dir, "ok": True, **{k: v for k, v in dataclasses.asdict(report).items() if k in fields}})
    else:
        _print_repair(report, sys.stdout)
        print(f"index rebuilt: {len(ModelLibrary(args.dir).list_all())} models")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .demo import run_demo

    run_demo(Path(args.folder or args.dir or DEMO_DIR).expanduser())
    return 0


def cmd_view(args: argparse.Namespace) -> int:
    from .view import serve_view

    return serve_view(args.file, port=args.port, open_browser=not args.no_browser)


# --- parser --------------------------------------------------------------------------------


def _dir_option(p: argparse.ArgumentParser, default: str = f"./{DEFAULT_DIR}") -> None:
    p.add_argument("--dir", help=f"models folder (default: {default}); it must exist")
    p.add_argument("folder", nargs="?", help=argparse.SUPPRESS)  # the folder as a positional, as before --dir was everywhere


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distillgan",
        description="Inspect, verify and manage .distillgan model files (a strict zip of msgpack and safetensors; never pickle).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=JSON_SHAPE + "\n\nShell completion: eval \"$(distillgan --print-completion bash)\" in ~/.bashrc "
        "(zsh: the same with zsh, in ~/.zshrc).",
    )
    parser.add_argument("--version", action="version", version=f"distillgan {__version__}")
    parser.add_argument("--print-completion", choices=("bash", "zsh"), action=_PrintCompletion,
                        help="print a shell completion script for bash or zsh and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("inspect", help="show what model files hold (no torch; no tensor data read unless asked)",
                       description="Show format, metadata, vocoder, members and tensors of .distillgan files. Reads only "
                       "the end records, the manifest and the tensor headers — a few KiB, whatever the file size — and "
                       "never imports torch. --sha256, --verify and --digests read the data they need.")
    p.add_argument("files", nargs="+", metavar="FILE", help=".distillgan files (or URLs, with distillgan[remote])")
    p.add_argument("--json", action="store_true", help="print JSON Lines, one object per file (see `distillgan --help`)")
    p.add_argument("--no-tensors", action="store_true", help="leave out the tensor tables (large models have thousands)")
    p.add_argument("--sha256", action="store_true", help="add the SHA-256 of the whole file (reads every byte)")
    p.add_argument("--verify", action="store_true", help="also check every CRC-32 and BOOL byte, as `distillgan verify` does")
    p.add_argument("--digests", action="store_true",
                   help="add the SHA-256 of each stored tensor's bytes (reads all tensor data, so it also verifies)")
    p.add_argument("--no-hash", action="store_true", help=argparse.SUPPRESS)  # the default now; kept for old scripts
    p.add_argument("--progress", action="store_true",
                   help="draw progress on stderr for --verify, --sha256 and --digests even when stderr is not a terminal "
                   "(on a terminal it is drawn for files of 64 MiB and more)")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("verify", help="check structure and every CRC-32; exit 1 if any file fails",
                       description="Check every layer of each file and the CRC-32 of every member. One line per file.")
    p.add_argument("files", nargs="+", metavar="FILE", help=".distillgan files")
    p.add_argument("--sha256", metavar="HEX", help="also require the file's SHA-256 to equal HEX or sha256:HEX (one file only)")
    p.add_argument("--json", action="store_true", help="print JSON Lines, one object per file (see `distillgan --help`)")
    p.add_argument("--progress", action="store_true",
                   help="draw progress on stderr even when it is not a terminal (on a terminal: for files of 64 MiB and more)")
    p.add_argument("--public-key", action="append", metavar="PUB.pem",
                   help="also require a valid signature (FILE.sig) by this PEM public key (repeatable: any of them); "
                   "needs `pip install 'distillgan[signing]'` (FORMAT.md §16)")
    p.add_argument("--certificate-chain", action="append", metavar="PEM",
                   help="also require a valid signature whose certificate chains to these PEM certificates (repeatable)")
    p.add_argument("--signature", metavar="SIG", help="the signature to check (one FILE only; default FILE.sig)")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("sign", help="sign a model file (OpenSSF model signing): writes FILE.sig",
                       description="Sign FILE with a PEM ECDSA private key as `model_signing sign key` does (or, with "
                       "--signing-certificate, as `model_signing sign certificate` does): the signature, a sigstore bundle "
                       "over the file's SHA-256, goes to FILE.sig beside it (FORMAT.md §16), and `model_signing verify` or "
                       "`distillgan verify FILE --public-key PUB.pem` checks it. Needs `pip install 'distillgan[signing]'`.")
    p.add_argument("file", metavar="FILE", help="a .distillgan file")
    p.add_argument("--private-key", required=True, metavar="KEY.pem", help="PEM ECDSA private key (P-256, P-384 or P-521)")
    p.add_argument("--signature", metavar="SIG", help="where to write the signature (default: FILE.sig)")
    p.add_argument("--password", help="password of an encrypted private key (or the environment variable DISTILLGAN_KEY_PASSWORD)")
    p.add_argument("--signing-certificate", metavar="CERT.pem", help="PEM certificate of the private key: sign with a certificate")
    p.add_argument("--certificate-chain", action="append", metavar="PEM",
                   help="PEM certificates from the signing certificate's issuer up to the root, carried in the signature "
                   "(repeatable; needed with --signing-certificate)")
    p.set_defaults(func=cmd_sign)

    p = sub.add_parser("list", help="list the models of a folder",
                       description="List the models of a folder (read-only: works on folders you cannot write).")
    _dir_option(p)
    p.add_argument("--json", action="store_true",
                   help='print one JSON object {"dir", "ok", "models": [entries]} (see `distillgan --help`; strict JSON: a NaN '
                   'loss is {"$": "float", "value": "nan", "bits": ...}, never a bare NaN)')
    p.add_argument("--public-key", action="append", metavar="PUB.pem",
                   help="check each model's FILE.sig with this PEM public key (repeatable): SIGNATURE says valid or why not")
    p.add_argument("--certificate-chain", action="append", metavar="PEM", help="check each FILE.sig against these certificates")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("delete", help="delete a model file and its index entry",
                       description="Delete one model of a folder, named by its id, its file (name or path) or its name "
                       "(when no other model has that name). A path names its own folder: --dir is then not needed, "
                       "and a path outside the --dir given is refused.")
    p.add_argument("model", metavar="MODEL", help="model id, file name or path, or model name (see `distillgan list`)")
    _dir_option(p, f"the folder of MODEL when it is a path, else ./{DEFAULT_DIR}")
    p.set_defaults(func=cmd_delete)

    p = sub.add_parser(
        "convert",
        help="make a .distillgan model of a checkpoint, an old pickle .distillgan or a .safetensors file",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Read a file without running anything in it (pickles are read by distillgan's own restricted "
        "reader, never torch.load) and save its content as a .distillgan model. Nothing is dropped: what has no "
        "place of its own (optimizer and scheduler state, metrics history...) is kept as the model's `extra`.",
        epilog="""accepted files, recognised in this order:
  *.safetensors          tensors become the state dict; __metadata__ is kept (an export of
                         distillgan gives back its metadata and configs too)
  app .distillgan        the app's own torch.save files (format "distillgan_model"): weights,
                         configs, analysis, metadata with its model id and name, vocoder state
  app checkpoint         training checkpoints (model_state_dict + optimizer_state_dict/epoch):
                         weights, configs, analysis, latent_dim, epoch and losses (inf kept)
  --key K                any dict: the state dict is file[K], the rest goes to extra
  common checkpoints     the first of model_state_dict, state_dict (Lightning .ckpt),
                         generator (HiFi-GAN g_* files), model holding a dict
  bare state dict        a dict of names to tensors
A legacy .distill model stays refused ("retrain"): conversion is no way around that.

examples:
  distillgan convert model.pt model.distillgan  # one file at the path you give (no folder, no index)
  distillgan convert checkpoints/checkpoint_epoch0100.pt --name "Field recordings"
  distillgan convert old_models/piano.distillgan --dir models
  distillgan convert --dir models models        # the app's folder, in place

the app's folder, in place: a pickle .distillgan that --dir's model_library.json lists under
the model id it carries is replaced by its converted archive under the same file name and id,
the index entry updated; the original pickle is kept beside it as FILE.pickle-backup (never
deleted; remove it yourself once you are happy). A crash at any point leaves the old pickle or
the new archive listed, and the backup in place. With several files (or a folder: its
*.distillgan files), each is converted in turn, files that already are archives are skipped,
and a failure is reported and the rest go on (exit 1 if any failed).
  distillgan convert lightning.ckpt --strip-prefix model.
  distillgan convert g_02500000 --name "HiFi-GAN universal"
""",
    )
    p.add_argument("files", nargs="+", metavar="FILE",
                   help="the files to convert (.pt, .ckpt, .pth, an old pickle .distillgan, .safetensors, ...), "
                   "or folders (their *.distillgan files)")
    p.add_argument("--name", help="model name (default: the name the file carries, else the file's stem); one FILE only")
    p.add_argument("--description", help="model description")
    p.add_argument("--tag", action="append", help="a tag (repeatable)")
    p.add_argument("--key", help="the top-level key holding the state dict, when none of the usual ones does")
    p.add_argument("--strip-prefix", metavar="P", help="remove P from the start of state-dict keys (e.g. 'model.' or 'module.')")
    p.add_argument("--dir", help=f"models folder to save into (default: ./{DEFAULT_DIR}); created if needed")
    p.add_argument("-o", "--output", metavar="OUT",
                   help="write one .distillgan file at OUT instead (no folder, no index); `convert IN OUT` does the same "
                   "when OUT ends with .distillgan, does not exist yet and no --dir is given")
    p.add_argument("--force", action="store_true", help="with OUT: replace it if it exists")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser(
        "export",
        help="write a model's weights as a plain .safetensors file",
        description="Write the state dict (or, with --vocoder, the bundled vocoder's weights) as a plain safetensors "
        "file that safetensors.torch.load_model/load_file accept: tied weights stored once under the name "
        "safetensors keeps, analysis arrays left out, the manifest as JSON in __metadata__ (key distillgan.manifest). "
        "OUT is written through a temporary file beside it and appears only when complete; its folder must exist.",
    )
    p.add_argument("file", metavar="FILE", help="a .distillgan file")
    p.add_argument("out", metavar="OUT", help="the .safetensors file to write (its folder must exist)")
    p.add_argument("--vocoder", action="store_true",
                   help="export the vocoder's weights (vocoder_state's generator_state_dict, or state_dict)")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("repair", help="rebuild a folder's index from its model files",
                       description="Rebuild model_library.json from the manifests of the *.distillgan files "
                       "(no tensor data read); reports invalid and ignored files.")
    _dir_option(p)
    p.add_argument("--json", action="store_true",
                   help='print the report as one JSON object {"dir", "ok", ...} (see `distillgan --help`)')
    p.set_defaults(func=cmd_repair)

    p = sub.add_parser("demo", help="save, inspect and load a small example model",
                       description="Build a small generator and a HiFi-GAN-shaped vocoder, save them with and without "
                       "the vocoder, inspect, verify, load back, and show a legacy .distill file refused.")
    p.add_argument("--dir", help=f"folder for the demo files (default: ./{DEMO_DIR}); created if needed")
    p.add_argument("folder", nargs="?", help=argparse.SUPPRESS)  # the folder as a positional, as before --dir was everywhere
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("view", help="look inside a model in the browser (served on 127.0.0.1 for one session)",
                       description="Serve the inspector page and FILE on 127.0.0.1 under a random URL, open the browser on it "
                       "(the URL is printed when there is none), and stop on Ctrl+C. The page reads headers only.")
    p.add_argument("file", metavar="FILE", help="a model file")
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free one)")
    p.add_argument("--no-browser", action="store_true", help="only print the URL")
    p.set_defaults(func=cmd_view)
    return parser


class _PrintCompletion(argparse.Action):
    """``--print-completion SHELL``: print the script and exit, as ``--version`` does (no command needed)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: Any = None) -> None:
        print(completion_script(parser, str(values)), end="")
        parser.exit()


def completion_script(parser: argparse.ArgumentParser, shell: str) -> str:
    """A bash or zsh completion script for the commands and options of ``parser`` (files complete as files)."""
    commands: dict[str, list[str]] = {}
    top = [o for a in parser._actions for o in a.option_strings]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                commands[name] = sorted(o for a in sub._actions for o in a.option_strings if a.help != argparse.SUPPRESS)
    cases = "\n".join(f'        {name}) opts="{" ".join(opts)}" ;;' for name, opts in commands.items())
    script = f"""# distillgan completion for {shell}: eval "$(distillgan --print-completion {shell})"
_distillgan() {{
    local cur cmd opts i
    cur="${{COMP_WORDS[COMP_CWORD]}}"
    cmd=""
    for ((i = 1; i < COMP_CWORD; i++)); do
        case "${{COMP_WORDS[i]}}" in -*) ;; *) cmd="${{COMP_WORDS[i]}}"; break ;; esac
    done
    if [[ -z "$cmd" ]]; then
        if [[ "$cur" == -* ]]; then
            COMPREPLY=($(compgen -W "{" ".join(top)}" -- "$cur"))
        elif [[ "${{COMP_WORDS[COMP_CWORD-1]}}" == --print-completion ]]; then
            COMPREPLY=($(compgen -W "bash zsh" -- "$cur"))
        else
            COMPREPLY=($(compgen -W "{" ".join(commands)}" -- "$cur"))
        fi
        return 0
    fi
    case "$cmd" in
{cases}
        *) opts="" ;;
    esac
    if [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
    else
        COMPREPLY=($(compgen -f -- "$cur"))
    fi
    return 0
}}
"""
    if shell == "zsh":  # zsh runs the bash function through its bash-compatibility layer
        script += "autoload -U +X bashcompinit && bashcompinit\n"
    return script + "complete -o filenames -F _distillgan distillgan\n"


_JSON_COMMANDS = {"inspect": "file", "verify": "file", "list": "dir", "repair": "dir"}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except DistillganError as e:
        if getattr(args, "json", False) and args.command in _JSON_COMMANDS:  # --json: a failure is a line of the same shape
            key = _JSON_COMMANDS[args.command]
            where = getattr(args, "folder", None) or getattr(args, "dir", None) or DEFAULT_DIR if key == "dir" else None
            _json_line({key: where, "ok": False, "code": e.code, "error": str(e)})
        _err(e)
        return 1
    except BrokenPipeError:  # `distillgan list | head`: the reader has what it wanted; end quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush does not complain
        return 0
    except KeyboardInterrupt:
        print("distillgan: interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        print(f"distillgan: error [io-error]: {safe(e)}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
