"""Which records are Enum members: the standard library's Enums, and the shape of a member's pickle."""

from __future__ import annotations

import sys

# The top-level names of the standard library's modules (and Python 2's, which protocols 0-2 may
# spell): a class of theirs called with one value is never taken for an Enum member, except the
# standard library's own Enums below. Never imported: only the names are compared.
STDLIB_MODULES = frozenset(sys.stdlib_module_names) | {"__builtin__", "copy_reg", "_codecs"}
STDLIB_ENUMS = frozenset({
    "http.HTTPStatus", "http.HTTPMethod", "signal.Signals", "signal.Handlers", "signal.Sigmasks",
    "socket.AddressFamily", "socket.SocketKind", "socket.MsgFlag", "socket.AddressInfo", "inspect._ParameterKind",
    "uuid.SafeUUID", "ssl.TLSVersion", "ssl.VerifyMode", "ssl.VerifyFlags", "ssl.Options", "ssl.AlertDescription",
    "ssl._SSLMethod", "re.RegexFlag", "pstats.SortKey", "plistlib.PlistFormat",
})  # fmt: skip
_ENUM_SCALARS = (type(None), bool, int, float, str)


def is_enum_value(value: object) -> bool:
    """A value an Enum member can have and be read back as: a scalar, or a tuple of such values (at most 8 deep).

    Shared tuples are looked at once (a tuple of the same tuple, 8 times over, is 8 checks, not 8**8).
    """
    seen: set[int] = set()
    todo: list[tuple[object, int]] = [(value, 0)]
    while todo:
        item, depth = todo.pop()
        if type(item) in _ENUM_SCALARS:
            continue
        if type(item) is not tuple or depth >= 8:
            return False
        if id(item) not in seen:
            seen.add(id(item))
            todo.extend((v, depth + 1) for v in item)
    return True
