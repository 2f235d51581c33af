"""Signatures of model files: OpenSSF model signing, kept beside the file (FORMAT.md §16).

A model ``m.distillgan`` is signed by its sidecar ``m.distillgan.sig``: a sigstore bundle (a DSSE
envelope over an in-toto statement) exactly as the ``model-signing`` package writes it for one file,
whose one resource is the SHA-256 of the whole file. Archives are written deterministically, so that
digest is the file's identity; the signature lives outside the file, which stays byte for byte what
the writer made. ``model_signing sign key m.distillgan`` and :func:`sign` make the same kind of
sidecar, and each side's verifier accepts the other's.

A check reads in this order, one line a step (FORMAT.md §16.3):

1. the sidecar: a regular file (or URL) of at most ``MAX_SIGNATURE_BYTES``     ``signature-missing``, ``signature-too-large``
2. parsed as model-signing parses it: a v0.3 bundle with a DSSE envelope        ``signature-malformed``
3. its signature, with the public keys or the certificate chain given           ``signature-invalid``, ``certificate-invalid``
4. its statement: one file's SHA-256                                            ``signature-malformed``, ``signature-mismatch``
5. that digest against the SHA-256 of the bytes themselves                      ``signature-mismatch``

The ``model-signing`` package (``pip install 'distillgan[signing]'``) is imported by these functions
only: ``import distillgan``, ``inspect`` and ``load_model`` without a key never import it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from .errors import DistillganError, ErrorCode, FileAccessError, InputError, SignatureError, from_os_error
from .source import STREAM_CHUNK, SnapshotFile, Source, file_sha256, is_url, open_source

__all__ = [
    "MAX_KEY_BYTES",
    "MAX_SIGNATURE_BYTES",
    "SIGNATURE_SUFFIX",
    "STALE_SUFFIX",
    "SignedDigest",
    "mismatch_error",
    "read_verified",
    "set_aside",
    "sidecar",
    "sign",
    "signature_path",
    "signed_sha256",
    "status",
    "verify",
]

logger = logging.getLogger("distillgan")

MAX_SIGNATURE_BYTES = 1 << 20  # FORMAT.md §8: a one-file bundle is about 1.5 KiB, 4 KiB with a certificate chain
MAX_KEY_BYTES = 1 << 20  # FORMAT.md §8: a PEM key, certificate or chain file
SIGNATURE_SUFFIX = ".sig"  # FORMAT.md §16.1: the sidecar of FILE is FILE + ".sig"
STALE_SUFFIX = ".sig.stale"  # FORMAT.md §16.1: a signature set aside when its file's bytes change
CURVES = ("secp256r1", "secp384r1", "secp521r1")  # the ECDSA curves model-signing signs and verifies with
BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"  # what model-signing writes for key and certificate signing
INSTALL = "pip install 'distillgan[signing]'"

PathArg = str | os.PathLike[str]
OneOrMore = PathArg | Sequence[PathArg]


@dataclass(frozen=True)
class SignedDigest:
    """What a valid signature vouches for: the SHA-256 of one file, and who signed it."""

    sha256: str  # lowercase hex
    signature: str  # where the bundle was read
    signer: str  # "public key PATH" or "certificate SUBJECT (chain PATH)"


# --- small helpers -----------------------------------------------------------------------------


def signature_path(path: PathArg) -> str:
    """The sidecar of ``path`` (a local path or a URL): the same name with ``.sig`` appended (FORMAT.md §16.1)."""
    return os.fspath(path) + SIGNATURE_SUFFIX


def sidecar(path: PathArg) -> str | None:
    """The sidecar of a local model file when it exists as a regular file, else None; never reads it, never needs model-signing."""
    p = signature_path(path)
    try:
        return p if stat.S_ISREG(os.stat(p).st_mode) else None
    except OSError:
        return None


def set_aside(path: PathArg) -> str | None:
    """Move ``FILE.sig`` to ``FILE.sig.stale`` (replacing an older one) because FILE's bytes are changing; the new name, or None.

    A signature is never kept beside bytes it was not made for (FORMAT.md §16.1); the old one is
    kept, not deleted, so that its owner sees what was signed before. Logged at WARNING.
    """
    p = signature_path(path)
    if sidecar(path) is None:
        return None
    stale = os.fspath(path) + STALE_SUFFIX
    try:
        os.replace(p, stale)
    except OSError as e:
        raise from_os_error(e, "set the old signature aside", p) from e
    logger.warning("%s changes, so its signature no longer matches: moved aside to %s; sign it again", os.fspath(path), stale)
    return stale


def _paths(value: OneOrMore | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        return [os.fspath(value)]
    return [os.fspath(v) for v in value]


def _library() -> SimpleNamespace:
    """model-signing and what it needs, imported on first use; missing: ``signing-unavailable`` with the command that installs it."""
    try:
        import OpenSSL  # model-signing 1.1.1 imports it for certificates without declaring it (pyopenssl)
        from cryptography import exceptions as crypto_exceptions
        from model_signing import signing
        from model_signing._signing import sign_certificate, sign_ec_key, sign_sigstore_pb
    except ImportError as e:
        raise SignatureError(
            f"signing and checking signatures need the model-signing package, which is not installed ({e}); "
            f"install it with: {INSTALL}",
            code="signing-unavailable",
        ) from e
    return SimpleNamespace(
        signing=signing, ec_key=sign_ec_key, certificate=sign_certificate, bundle=sign_sigstore_pb,
        InvalidSignature=crypto_exceptions.InvalidSignature, X509StoreContextError=OpenSSL.crypto.X509StoreContextError,
    )  # fmt: skip


def _read_small(
    path: str, *, what: str, limit: int, too_large: ErrorCode, missing: ErrorCode | None, storage_options: Mapping[str, Any] | None = None
) -> bytes:
    """A small file's bytes, read through one descriptor opened without blocking (or one URL), its size capped before reading."""
    try:
        src = open_source(path, storage_options)
    except FileAccessError as e:
        if e.code == "not-found" and missing is not None:
            raise SignatureError(f"no {what} at {path!r} (FORMAT.md §16.1)", code=missing) from e
        raise
    try:
        if src.size > limit:
            raise SignatureError(f"{what} {path!r} is {src.size} bytes; the limit is {limit} (FORMAT.md §8)", code=too_large)
        return src.read(0, src.size)
    finally:
        src.close()


class _Blob:
    """The two methods model-signing's readers call on a path (``read_bytes``, ``read_text``), over bytes already read.

    The library's readers take paths and read them whole, with no size limit, blocking on a FIFO.
    We read each file once ourselves (capped, without blocking) and hand the library those bytes,
    so the file it parses is the file we checked.
    """

    def __init__(self, data: bytes) -> None:
        self._data = data

    def read_bytes(self) -> bytes:
        return self._data

    def read_text(self, encoding: str = "utf-8") -> str:
        return self._data.decode(encoding)


def _short_text(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:200]}{'…' if len(text) > 200 else ''}"


# --- keys and certificates ---------------------------------------------------------------------


def _check_curve(key: Any, where: str) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    if not isinstance(key, (ec.EllipticCurvePublicKey, ec.EllipticCurvePrivateKey)):
        kind = type(key).__name__.lstrip("_").replace("PublicKey", "").replace("PrivateKey", "") or "another"
        raise SignatureError(
            f"{where!r} holds a {kind} key; model signing uses ECDSA keys on {', '.join(CURVES)} (FORMAT.md §16.2)", code="key-invalid"
        )
    if key.curve.name not in CURVES:
        raise SignatureError(
            f"{where!r} holds an ECDSA key on {key.curve.name}; model signing uses {', '.join(CURVES)} (FORMAT.md §16.2)", code="key-invalid"
        )


def _public_key(path: str) -> tuple[bytes, Any, str]:
    """(PEM bytes, key, key hint) of a public key file; the hint is what model-signing records in the bundle."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    data = _read_small(path, what="public key", limit=MAX_KEY_BYTES, too_large="key-invalid", missing=None)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        hint = "; it holds a private key: give the public key" if b"PRIVATE KEY-----" in data else ""
        raise SignatureError(f"{path!r} is not a PEM public key{hint} ({_short_text(e)}) (FORMAT.md §16.2)", code="key-invalid") from e
    _check_curve(key, path)
    spki = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return data, key, hashlib.sha256(spki).hexdigest()


def _private_key(path: str, password: str | bytes | None) -> Any:
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    data = _read_small(path, what="private key", limit=MAX_KEY_BYTES, too_large="key-invalid", missing=None)
    secret = password.encode("utf-8") if isinstance(password, str) else password
    try:
        key = serialization.load_pem_private_key(data, secret)
    except TypeError as e:  # cryptography: a password for a key without one, or none for an encrypted key
        need = "is encrypted: give its password" if secret is None else "is not encrypted: give no password"
        raise SignatureError(f"private key {path!r} {need} (FORMAT.md §16.2)", code="key-invalid") from e
    except (ValueError, UnsupportedAlgorithm) as e:
        why = "the password is wrong, or it is not a PEM private key" if secret is not None else "it is not a PEM private key"
        raise SignatureError(f"cannot read private key {path!r}: {why} ({_short_text(e)}) (FORMAT.md §16.2)", code="key-invalid") from e
    _check_curve(key, path)
    return key


def _certificates(paths: list[str], what: str) -> list[Any]:
    """Every PEM certificate of the files; none, or a file that is not PEM certificates: ``certificate-invalid``."""
    from cryptography import x509

    out: list[Any] = []
    for p in paths:
        data = _read_small(p, what=what, limit=MAX_KEY_BYTES, too_large="certificate-invalid", missing=None)
        try:
            out += x509.load_pem_x509_certificates(data)
        except ValueError as e:
            raise SignatureError(f"{what} {p!r} is not PEM certificates ({_short_text(e)}) (FORMAT.md §16.2)", code="certificate-invalid") from e
    return out


# --- signing -----------------------------------------------------------------------------------


def sign(
    path: PathArg,
    *,
    private_key: PathArg,
    signature: PathArg | None = None,
    password: str | bytes | None = None,
    signing_certificate: PathArg | None = None,
    certificate_chain: OneOrMore | None = None,
    check: Callable[[str], None] | None = None,
) -> str:
    """Sign a local model file with model-signing; write the sidecar (``FILE.sig`` unless ``signature``) and return its path.

    ``private_key`` is a PEM ECDSA key (P-256, P-384 or P-521), encrypted with ``password`` if
    it is. With ``signing_certificate`` (a PEM certificate of that key) and ``certificate_chain``
    (PEM files of the intermediate certificates, if any) the bundle carries the certificates, as
    ``model_signing sign certificate`` does, which needs a chain of at least one certificate; otherwise it names the key, as ``model_signing sign key``
    does. ``check(path)`` runs first (``distillgan.sign`` opens the file as an archive, structure
    only, so that nothing distillgan would refuse to read gets signed). The sidecar is written to a temporary file and renamed: a failed
    signing never leaves half a signature. Costs one SHA-256 pass over the file.
    """
    if is_url(path):
        raise InputError(f"sign a local file, not a URL ({os.fspath(path)!r}); upload the sidecar beside it", code="invalid-input")
    if certificate_chain is not None and signing_certificate is None:
        raise InputError("certificate_chain given without signing_certificate: give the certificate of the signing key too",
                         code="invalid-input")
    if signing_certificate is not None and password is not None:
        raise InputError("model-signing 1.1.1 signs with a certificate only with an unencrypted private key; decrypt it first",
                         code="invalid-input")
    lib = _library()
    path = os.fspath(path)
    if check is not None:
        check(path)  # distillgan.sign: the archive's every layer but tensor data (a pickle or a damaged file is refused)
    key_path = os.fspath(private_key)
    key = _private_key(key_path, password)
    if signing_certificate is None:
        # model-signing 1.1.1 says str but hands the password to cryptography, which takes bytes only
        secret = password.encode("utf-8") if isinstance(password, str) else password
        try:
            config = lib.signing.Config().use_elliptic_key_signer(private_key=key_path, password=secret)
        except Exception as e:  # everything was checked above; a change of the file since then
            raise SignatureError(f"model-signing cannot sign with {key_path!r} ({_short_text(e)})", code="key-invalid") from e
    else:
        cert_path = os.fspath(signing_certificate)
        certs = _certificates([cert_path], "signing certificate")
        if len(certs) != 1:
            raise SignatureError(f"signing certificate {cert_path!r} holds {len(certs)} certificates; expected 1 (FORMAT.md §16.2)",
                                 code="certificate-invalid")
        if certs[0].public_key() != key.public_key():
            raise SignatureError(f"signing certificate {cert_path!r} certifies another key than {key_path!r} (FORMAT.md §16.2)",
                                 code="certificate-invalid")
        chain = _paths(certificate_chain)
        if not _certificates(chain, "certificate chain"):
            raise InputError("signing with a certificate needs its chain: give certificate_chain, the PEM certificates from its "
                             "issuer up to the root (model-signing 1.1.1 cannot sign with an empty chain)", code="invalid-input")
        try:
            config = lib.signing.Config().use_certificate_signer(private_key=key_path, signing_certificate=cert_path,
                                                                 certificate_chain=chain)
        except Exception as e:  # everything was checked above; a change of the files since then
            raise SignatureError(f"model-signing cannot sign with {cert_path!r} ({_short_text(e)})", code="certificate-invalid") from e
    target = os.fspath(signature) if signature is not None else signature_path(path)
    folder = os.path.dirname(os.path.abspath(target))
    import tempfile

    try:
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(target) + ".", suffix=".tmp", dir=folder)
    except OSError as e:
        raise from_os_error(e, "write the signature", target) from e
    os.close(fd)
    try:
        try:
            # one SHA-256 pass over the real file (model-signing refuses a symbolic link as a model path)
            config.sign(os.path.realpath(path), tmp)
        except OSError as e:
            raise from_os_error(e, "sign", path) from e
        except Exception as e:  # the file turned into something else since it was opened: model-signing says ValueError
            raise FileAccessError(f"model-signing could not hash {path!r} ({_short_text(e)})", code="io-error") from e
        try:
            os.chmod(tmp, 0o644)  # mkstemp makes it private; a signature is meant to be read by others
            with open(tmp, "r+b") as f:  # Windows flushes only a handle open for writing
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except OSError as e:
            raise from_os_error(e, "write the signature", target) from e
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass
    logger.info("signed %s: %s", path, target)
    return target


# --- checking ----------------------------------------------------------------------------------


def _malformed(where: str, why: str) -> SignatureError:
    return SignatureError(f"signature {where!r} is {why} (FORMAT.md §16.3)", code="signature-malformed")


def _parse(lib: SimpleNamespace, data: bytes, where: str) -> Any:
    """Step 2: the bundle parsed by model-signing's own reader (any of its errors is ``signature-malformed``)."""
    try:
        parsed = lib.bundle.Signature.read(_Blob(data))
    except Exception as e:  # JSON, UTF-8, missing fields, the bundle model's validation: whatever the library's parser rejects
        raise _malformed(where, f"not a sigstore bundle that model-signing can read ({_short_text(e)})") from e
    # We look inside the bundle only to tell defects apart, never to decide validity: the library does that.
    bundle = parsed.bundle
    if bundle.media_type != BUNDLE_MEDIA_TYPE:
        raise _malformed(where, f"a bundle of media type {bundle.media_type!r}; model-signing signs with keys and certificates "
                                f"as {BUNDLE_MEDIA_TYPE!r}")
    if bundle.dsse_envelope is None or not bundle.dsse_envelope.signatures:
        raise _malformed(where, "a bundle without a DSSE envelope or without a signature in it")
    return parsed


def _by_key(lib: SimpleNamespace, parsed: Any, keys: list[str], where: str) -> tuple[Any, str]:
    """Step 3 for a bundle that names a key: the one of ``keys`` it names (by model-signing's hint) must verify it."""
    hint = parsed.bundle.verification_material.public_key.hint
    loaded = [(p, *_public_key(p)) for p in keys]
    if not loaded:
        raise SignatureError(f"signature {where!r} was made with a key (hint {hint}); give its public key (FORMAT.md §16.3)",
                             code="signature-invalid")
    # The hint tells "signed by another key" apart from "altered", and picks the key of a list; model-signing checks it again.
    chosen = [entry for entry in loaded if not hint or entry[3] == hint]
    if not chosen:
        given = ", ".join(repr(p) for p, *_ in loaded)
        raise SignatureError(f"signature {where!r} was made by another key (hint {hint}) than {given} (FORMAT.md §16.3)",
                             code="signature-invalid")
    failure: BaseException | None = None
    for p, pem, _key, _hint in chosen:
        try:
            return lib.ec_key.Verifier(_Blob(pem)).verify(parsed), f"public key {p}"
        except lib.InvalidSignature as e:
            failure = e
        except Exception as e:  # a valid signature over a statement model-signing cannot read
            raise _malformed(where, f"signed, but its statement is not model-signing's ({_short_text(e)})") from e
    raise SignatureError(f"signature {where!r} does not verify with {chosen[0][0]!r}: the bundle was altered "
                         f"or made with another key (FORMAT.md §16.3)", code="signature-invalid") from failure


def _by_certificate(lib: SimpleNamespace, parsed: Any, chain: list[str], where: str) -> tuple[Any, str]:
    """Step 3 for a bundle that carries certificates: they must chain to ``chain``, and the leaf's key must verify it."""
    from cryptography import x509

    if not chain:
        raise SignatureError(f"signature {where!r} was made with a certificate; give the certificate chain you trust "
                             f"(FORMAT.md §16.3)", code="signature-invalid")
    certs = _certificates(chain, "certificate chain")
    try:
        leaf = x509.load_der_x509_certificate(parsed.bundle.verification_material.x509_certificate_chain.certificates[0].raw_bytes)
    except ValueError as e:
        raise _malformed(where, f"a bundle whose signing certificate is not DER ({_short_text(e)})") from e
    try:
        _check_curve(leaf.public_key(), f"signing certificate {leaf.subject.rfc4514_string()}")
    except SignatureError as e:
        raise SignatureError(f"signature {where!r}: {e}", code="certificate-invalid") from e
    verifier = lib.certificate.Verifier([_Blob(b"".join(_pem(c) for c in certs))])
    who = f"certificate {leaf.subject.rfc4514_string()} (chain {', '.join(chain)})"
    try:
        return verifier.verify(parsed), who
    except lib.X509StoreContextError as e:  # expired at signing time, another CA, a broken chain
        raise SignatureError(f"signature {where!r}: its certificate {leaf.subject.rfc4514_string()!r} does not chain to "
                             f"{', '.join(chain)} ({_short_text(e)}) (FORMAT.md §16.3)", code="certificate-invalid") from e
    except lib.InvalidSignature as e:
        raise SignatureError(f"signature {where!r} does not verify with the key of its certificate: the bundle was altered "
                             f"(FORMAT.md §16.3)", code="signature-invalid") from e
    except ValueError as e:
        if "cannot be used for signing" in str(e):  # model-signing: neither digitalSignature key usage nor codeSigning
            raise SignatureError(f"signature {where!r}: certificate {leaf.subject.rfc4514_string()!r} is not for signing "
                                 f"({_short_text(e)}) (FORMAT.md §16.3)", code="certificate-invalid") from e
        raise _malformed(where, f"not verifiable as model-signing makes them ({_short_text(e)})") from e
    except Exception as e:
        raise _malformed(where, f"not verifiable as model-signing makes them ({_short_text(e)})") from e


def _pem(cert: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return bytes(cert.public_bytes(serialization.Encoding.PEM))


def _file_digest(manifest: Any, where: str) -> str:
    """Step 4: the statement must be model-signing's for one file: a single resource ``.`` with its SHA-256."""
    resources = list(manifest.resource_descriptors())
    method = manifest.serialization_type.get("method")
    if method != "files" or len(resources) != 1 or resources[0].identifier != "." or resources[0].digest.algorithm != "sha256":
        names = ", ".join(f"{r.identifier} ({r.digest.algorithm})" for r in resources[:4])
        raise SignatureError(f"signature {where!r} signs {len(resources)} item(s) by {method!r} ({names}), not one file's "
                             f"SHA-256 (FORMAT.md §16.2)", code="signature-mismatch")
    return str(resources[0].digest.digest_hex)


def signed_sha256(
    path: PathArg,
    *,
    signature: PathArg | None = None,
    public_key: OneOrMore | None = None,
    certificate_chain: OneOrMore | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> SignedDigest:
    """The SHA-256 that a valid signature of ``path`` vouches for (steps 1–4 of FORMAT.md §16.3); the file itself is not read.

    ``signature`` defaults to the sidecar ``path + ".sig"`` (URLs too). ``public_key`` is one PEM
    public key or a list (any of them may have signed); ``certificate_chain`` one or more PEM files
    of the certificates you trust, for bundles that carry a certificate.
    """
    keys, chain = _paths(public_key), _paths(certificate_chain)
    if not keys and not chain:
        raise InputError("checking a signature needs public_key or certificate_chain (FORMAT.md §16.3)", code="invalid-input")
    lib = _library()
    where = os.fspath(signature) if signature is not None else signature_path(path)
    data = _read_small(where, what="signature", limit=MAX_SIGNATURE_BYTES, too_large="signature-too-large", missing="signature-missing",
                       storage_options=storage_options if signature is None or is_url(os.fspath(signature)) else None)
    parsed = _parse(lib, data, where)
    material = parsed.bundle.verification_material
    if material.public_key is not None:
        manifest, signer = _by_key(lib, parsed, keys, where)
    elif material.x509_certificate_chain is not None and material.x509_certificate_chain.certificates:
        manifest, signer = _by_certificate(lib, parsed, chain, where)
    else:
        raise _malformed(where, "a bundle with neither a key hint nor a certificate chain (model-signing's key and certificate methods)")
    return SignedDigest(_file_digest(manifest, where), where, signer)


def mismatch_error(path: str, signed: SignedDigest, actual: str) -> SignatureError:
    return SignatureError(
        f"{path!r} has SHA-256 {actual}, but its signature {signed.signature!r} (valid, by {signed.signer}) is for {signed.sha256}: "
        f"the file was changed, or the signature belongs to another file (FORMAT.md §16.3)",
        code="signature-mismatch",
    )


def verify(
    path: PathArg,
    *,
    signature: PathArg | None = None,
    public_key: OneOrMore | None = None,
    certificate_chain: OneOrMore | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> SignedDigest:
    """Check that ``path`` (a local file or URL) is what a trusted key signed: every step of FORMAT.md §16.3.

    Returns the :class:`SignedDigest`; raises :class:`~distillgan.SignatureError` (codes
    ``signature-missing``, ``signature-too-large``, ``signature-malformed``, ``signature-invalid``,
    ``signature-mismatch``, ``key-invalid``, ``certificate-invalid``, ``signing-unavailable``).
    Costs one SHA-256 pass over the file; the archive itself is not checked (``distillgan.verify``
    with the same arguments checks both in that one pass).
    """
    signed = signed_sha256(path, signature=signature, public_key=public_key, certificate_chain=certificate_chain,
                           storage_options=storage_options)
    actual = file_sha256(path, storage_options)
    if actual != signed.sha256:
        raise mismatch_error(os.fspath(path), signed, actual)
    return signed


def _read_hashing(src: Source) -> tuple[Any, str]:
    """(the whole file in memory of its own, SHA-256 of exactly those bytes): a local file read through its one
    descriptor, hashing each chunk on a second thread while the next is read; a URL downloaded once."""
    h = hashlib.sha256()
    if not src.mappable:  # remote: concurrent range requests straight into one buffer
        data, _crc = src.download(0, src.size)
        h.update(memoryview(data))
        return data, h.hexdigest()
    from concurrent.futures import ThreadPoolExecutor

    data = bytearray(src.size)
    view = memoryview(data)
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = None
        for start in range(0, src.size, STREAM_CHUNK):
            chunk = view[start : start + STREAM_CHUNK]
            src.read_into(start, chunk)
            if pending is not None:
                pending.result()
            pending = pool.submit(h.update, chunk)  # hashlib releases the GIL: hashing overlaps the next read
        if pending is not None:
            pending.result()
    return data, h.hexdigest()


def read_verified(
    path: PathArg,
    *,
    signature: PathArg | None = None,
    public_key: OneOrMore | None = None,
    certificate_chain: OneOrMore | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> tuple[SnapshotFile, SignedDigest]:
    """The file's bytes, read once and checked against a trusted signature before anything parses them (FORMAT.md §16.3).

    The signature is checked first (an unsigned or untrusted model costs no read of its data);
    then the whole file is read into memory of its own and hashed. What is returned is the only
    copy any later step reads, so the bytes used are the bytes whose digest was signed.
    """
    signed = signed_sha256(path, signature=signature, public_key=public_key, certificate_chain=certificate_chain,
                           storage_options=storage_options)
    src = open_source(path, storage_options)
    try:
        data, actual = _read_hashing(src)
    finally:
        src.close()
    if actual != signed.sha256:
        raise mismatch_error(os.fspath(path), signed, actual)
    return SnapshotFile(path, data), signed


def status(path: PathArg, *, public_key: OneOrMore | None = None, certificate_chain: OneOrMore | None = None) -> str:
    """One word for listings: ``unsigned`` (no sidecar), ``signed`` (a sidecar, not checked: no key given),
    ``valid``, or the error code that checking this file's signature gave. Unusable keys or chain files
    (the caller's, not the file's) raise instead."""
    if sidecar(path) is None:
        return "unsigned"
    if public_key is None and certificate_chain is None:
        return "signed"
    _library()
    for p in _paths(public_key):
        _public_key(p)
    _certificates(_paths(certificate_chain), "certificate chain")
    try:
        verify(path, public_key=public_key, certificate_chain=certificate_chain)
    except DistillganError as e:
        return e.code
    return "valid"
