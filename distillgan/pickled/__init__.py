"""Reading pickle-era files without running them: the restricted reader behind the converter.

:func:`read_pickled` reads the three kinds of file the pickle era left behind and returns the
object tree the file holds:

1. torch zip checkpoints (``torch.save`` since torch 1.6): ``<prefix>/data.pkl`` plus one
   stored member ``<prefix>/data/<key>`` per storage, ``byteorder``, ``version``;
2. legacy torch streams (torch < 1.6, e.g. the official HiFi-GAN ``g_*`` checkpoints): five
   pickles in a row (magic number, protocol version, sys_info, the data, the storage keys)
   followed by the raw storages, each an int64 element count and its bytes;
3. plain pickles of protocol 0 to 5 (the app's old pickle files); tensors pickled with
   ``pickle.dump`` carry their storages as nested legacy streams (``torch.storage._load_from_bytes``).

How it stays inert. Each pickle is first walked opcode by opcode (:func:`.vm.scan_pickle`, pure
Python, nothing built) to find where it ends and to refuse what the C unpickler would turn into
work out of proportion to the file: memo indices far beyond the number of memo writes, text
integers of thousands of digits, lengths past the end, ``EXT1/2/4`` opcodes (their lookup goes
through ``copyreg._extension_cache``, a process-wide cache that can hold real objects and is
consulted *before* ``find_class``). Then the C unpickler runs with ``find_class`` overridden:
every ``GLOBAL``/``STACK_GLOBAL``/``INST``/``OBJ`` lookup lands in :data:`ALLOWED_GLOBALS`, a
dict keyed by exact ``(module, name)`` pairs whose values are constructors written here (each a
class whose ``__new__`` vets its arguments and returns plain data or a record), torch dtypes, or
storage-type markers. Every other global becomes an inert stand-in class, a subclass of
:class:`PickledObject` made on the fly, which records the call arguments, the ``BUILD`` state and
any ``APPEND``/``SETITEM``/``ADDITEMS`` instead of doing anything. No module named by the file is
imported and no attribute of a real module is looked up by a name from the file. Every class a
pickle can reach has a metaclass that refuses ``setattr``, so ``BUILD``'s slot state cannot
rewire it; records refuse ``BUILD``. While unpickling no torch or numpy function runs at all:
tensors and arrays are records (:class:`.records.TensorRecord`, :class:`.records.NdArray`); once the whole file
is read and every bound checked, one pass (:class:`.materialise.Materialiser`) turns the records into real
tensors and arrays. Storage bytes are read from the file into ``bytearray``s that this module
allocates; tensors *view* those buffers (one copy from the file, no mapping of the file, one
storage per key: tensors that shared a storage when saved still share one).

The package: :mod:`.allowlist` (the table above, the security boundary, one short file),
:mod:`.constructors` (what each allowlisted name does with its arguments), :mod:`.vm` (the opcode
walk and the unpickler), :mod:`.torchzip` (the strict zip parser), :mod:`.streams` and
:mod:`.storages` (legacy streams, storage bytes), :mod:`.containers` and :mod:`.keys` (dicts and
sets, keys checked before hashing), :mod:`.materialise` (records to tensors), :mod:`.plain` (the
value tree).

The rules that bound a conversion (FORMAT.md §7.1):

- **One budget per conversion, sized by the input** (:class:`~.common.Budget`): with *S* the
  file's bytes (a deflated ``data.pkl`` counts with its stored bytes), work — opcodes run, objects
  built, keys checked, tree nodes — at most ``8 S + 2**20`` steps; bytes materialised — storages,
  inflated members, copies the conversion makes — at most ``2 S + 64 MiB``. Over it:
  ``convert-limit`` naming the limit, never an out-of-memory or a signal.
- **Shared values are read once and stay shared**: one nested ``_load_from_bytes`` stream per
  bytes object, one storage per key, one conversion per object in :func:`to_plain_tree` (a shared
  bytearray, byteswapped array or conj/neg view is copied once and tied wherever it occurs).
- **Nothing CPython does recursively in C sees file-controlled depth**: the VM rewrites
  ``EMPTY_DICT``/``DICT``/``EMPTY_SET``/``FROZENSET`` to builders, so every key and set item is
  checked — hashable, tuples at most ``max_depth`` deep — before it is hashed, and at most
  ``max_key_collisions`` keys of one container may share a hash value (no hash flooding). The
  opcode walk also keeps how deep each value on the stack and in the memo is built and refuses,
  at the opcode that builds it, a value nested deeper than ``4 * max_depth + 16`` levels
  (:attr:`PickleLimits.max_build_depth`): a tuple a million deep costs 273 opcodes, not a million.
- **One reading of a zip**: :mod:`.torchzip` parses it itself; :mod:`zipfile` is not used.

Conversion rule (:func:`to_plain_tree`), the value tree the writer stores:

- ``dict``/``OrderedDict``/``defaultdict`` -> ``dict`` with the same keys in the same order;
  keys must be ``str`` or 64-bit ``int`` (an Enum-like stand-in key becomes its value, once: a
  member whose value is a member is no key, as ``save_model`` refuses it); other
  keys are an error naming the path. Attributes set on an ``OrderedDict`` (torch's ``_metadata``
  version table) are not part of the value tree. The keys ``"__class__"`` and ``"__global__"``
  are reserved for the two encodings below.
- ``list`` -> ``list``; ``tuple`` (and ``torch.Size``) -> ``tuple``.
- ``None``, ``bool``, ``float`` (NaN and infinities kept), ``str`` (valid Unicode), ``bytes``
  (``bytearray`` -> ``bytes``), ``int`` in ``[-2**63, 2**64)``.
- torch tensors and ``nn.Parameter`` as read (views of the buffers above, conj/neg bits
  resolved); numpy arrays as read (never of object dtype), in this host's byte order; numpy
  scalars -> their Python value.
- ``torch.device`` and ``pathlib`` paths -> ``str``.
- an Enum-like stand-in -> its value, converted by these rules (``(1, "x")`` stays that tuple; an
  Enum-like stand-in in it becomes its own value), which is what ``save_model`` stores for the
  live member (a member's ``.value``, converted again). Enum-like means called the way
  ``Enum.__reduce_ex__`` pickles a member, ``Class(value)`` and nothing else (no state, no
  items), where ``value`` is None/bool/int/float/str, an Enum-like stand-in, or a tuple of such
  values, at most 8 levels of tuples and members deep (a deeper chain stays records; each object
  is classified once per conversion, the work charged to the budget), and the
  callee is a class named outside the standard library whose last name part starts with an
  upper-case letter (as every Enum class is), or one of the standard library's own Enums
  (:data:`STDLIB_ENUMS`: ``http.HTTPStatus``, ``signal.Signals``, ``re.RegexFlag``, ...). So a
  function called so (``os.system("...")``) stays a record of the call, and so do the standard
  library's value classes that reduce with one argument — ``decimal.Decimal("1.5")``,
  ``ipaddress.IPv4Address(16909060)``, ``datetime.date(b"...")`` — as do those that reduce with
  several (``fractions.Fraction(3, 4)``, ``datetime.timedelta(1, 2, 0)``) or through ``NEWOBJ``
  and state (``uuid.UUID``: ``{"__class__": "uuid.UUID", "__state__": {"int": ...}}``); what they
  reduce to is the same for pickle protocols 2 and 4/5. A class of a third-party module called with
  one such value is taken for an Enum member: the heuristic cannot tell it from one.
- any other stand-in instance -> ``{"__class__": "module.qualname", "__args__": [...],
  "__kwargs__": {...}, "__state__": ..., "__items__": [...], "__dictitems__": {...}}``, each of the
  last five present only when the pickle supplied it; ``complex`` -> ``{"__class__":
  "builtins.complex", "__args__": [re, im]}``; ``set``/``frozenset`` -> ``{"__class__":
  "builtins.set", "__args__": [sorted items]}``; a numpy dtype -> ``{"__class__": "numpy.dtype",
  "__args__": ["<f8"]}``.
- a class nested in another (``Outer.Inner``; pickle protocols 0-3 name it ``getattr(Outer, "Inner")``,
  the only form in which ``getattr`` is read) is a record named ``module.Outer.Inner`` like any other.
- a class or function named by the file, used as a value (a stand-in class, an allowlisted
  constructor, a torch dtype) -> ``{"__global__": "module.qualname"}``.
- anything else (a bare storage, a cycle) is an error naming the path.

Errors are :class:`~distillgan.errors.InputError` with one of four codes, or
:class:`~distillgan.errors.FileAccessError` for the path (``not-found``, ``not-regular-file``,
``file-too-large``, ``io-error``):

- ``convert-unreadable``: damaged, truncated or unsupported content (quantized or sparse tensors,
  TorchScript archives, a storage whose size disagrees with its member, ...);
- ``convert-unsafe``: the pickle uses an allowlisted name outside the form its legitimate writer
  emits (``_codecs.encode`` with another codec, ``_rebuild_from_type_v2`` with a function that is
  not a tensor rebuilder, object-dtype arrays, EXT opcodes, ``BUILD`` on a record, ...);
- ``convert-limit``: a bound of the conversion's budget (:class:`PickleLimits`) would be exceeded;
- ``convert-value``: :func:`to_plain_tree` meets a value the tree cannot hold;
- ``numpy-unavailable``: the file holds numpy arrays and numpy is not installed.
"""

from .allowlist import ALLOWED_GLOBALS
from .common import DEFAULT_LIMITS, PickleLimits
from .enums import STDLIB_ENUMS
from .plain import to_plain_tree
from .reader import read_pickled, read_plain_tree
from .records import PickledObject

__all__ = [
    "ALLOWED_GLOBALS",
    "DEFAULT_LIMITS",
    "STDLIB_ENUMS",
    "PickleLimits",
    "PickledObject",
    "read_pickled",
    "read_plain_tree",
    "to_plain_tree",
]
