#!/usr/bin/env python3
"""Line coverage of the reader modules over a fuzzing corpus (stdlib only).

    python fuzz/corpus_coverage.py fuzz/corpus spec/vectors/valid spec/vectors/invalid [--missing]

Runs every file through the harness's entry points (inspect, verify, tensors)
under ``sys.settrace`` and prints, per reader module, the executable lines
reached. ``--missing`` lists the line numbers never reached.
"""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

import distillgan
from distillgan import DistillganError

MODULES = ("source.py", "container.py", "legacy.py", "manifest.py", "tensors.py", "archive.py")
PACKAGE = Path(distillgan.__file__).resolve().parent


def function_lines(path: Path) -> dict[str, set[int]]:
    """Executable lines of each function and method body (module-level code runs at import, not per input)."""
    out: dict[str, set[int]] = {}
    module = compile(path.read_text(encoding="utf-8"), str(path), "exec")
    todo = [c for c in module.co_consts if isinstance(c, types.CodeType)]
    while todo:
        code = todo.pop()
        lines = {line for _, _, line in code.co_lines() if line is not None and line != code.co_firstlineno}
        if code.co_name.startswith("<") and code.co_name != "<lambda>" and not code.co_name.endswith("comp>"):
            todo.extend(c for c in code.co_consts if isinstance(c, types.CodeType))  # a class body: look inside
            continue
        out.setdefault(code.co_qualname, set()).update(lines)
        todo.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path)
    parser.add_argument("--missing", action="store_true", help="list the lines never reached")
    args = parser.parse_args()
    watched = {str(PACKAGE / m): m for m in MODULES}
    hits: dict[str, set[int]] = {m: set() for m in MODULES}

    def tracer(frame: types.FrameType, event: str, arg: object) -> object:
        name = watched.get(frame.f_code.co_filename)
        if name is None:
            return None
        hits[name].add(frame.f_lineno)

        def local(frame: types.FrameType, event: str, arg: object) -> object:
            if event == "line":
                hits[name].add(frame.f_lineno)
            return local

        return local

    files = sorted(p for d in args.dirs for p in d.iterdir() if p.is_file())
    import torch  # noqa: F401  imported before tracing starts

    for path in files:
        sys.settrace(tracer)
        try:
            for entry in (distillgan.inspect, distillgan.verify):
                try:
                    entry(path)
                except DistillganError:
                    pass
            try:
                with distillgan.open_archive(path) as archive:
                    for member in archive.manifest["members"]:
                        archive.tensors(member)
            except DistillganError:
                pass
        except Exception as e:  # noqa: BLE001 - a crash: report it, keep measuring
            print(f"crash on {path}: {type(e).__name__}: {e}", file=sys.stderr)
        finally:
            sys.settrace(None)
    totals = [0, 0, 0, 0]
    print(f"{len(files)} inputs; lines of function bodies reached (all functions | functions entered at least once)")
    for m in MODULES:
        funcs = function_lines(PACKAGE / m)
        every = set().union(*funcs.values()) if funcs else set()
        entered = set().union(*(lines for lines in funcs.values() if lines & hits[m])) if funcs else set()
        hit = hits[m] & every
        totals = [totals[0] + len(hit), totals[1] + len(every), totals[2] + len(hit & entered), totals[3] + len(entered)]
        print(f"{m:<14} {len(hit):>4}/{len(every):<4} {100 * len(hit) / max(1, len(every)):5.1f}%  |  "
              f"{len(hit & entered):>4}/{len(entered):<4} {100 * len(hit & entered) / max(1, len(entered)):5.1f}%")
        if args.missing:
            print("  missing in entered functions:", " ".join(str(n) for n in sorted(entered - hit)))
    print(f"{'total':<14} {totals[0]:>4}/{totals[1]:<4} {100 * totals[0] / max(1, totals[1]):5.1f}%  |  "
          f"{totals[2]:>4}/{totals[3]:<4} {100 * totals[2] / max(1, totals[3]):5.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
