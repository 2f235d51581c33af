"""Signatures (FORMAT.md §16): distillgan and OpenSSF's `model_signing` accept each other's, and refuse the same forgeries.

Every check runs the real thing: keys and a CA made here with `cryptography`, the `model_signing`
command in a subprocess, `distillgan` in a subprocess for anything that prints.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

import distillgan
from distillgan import ModelMetadata, SignatureError, save_model, signing

BIN = Path(sys.executable).parent
DISTILLGAN = BIN / ("distillgan.exe" if os.name == "nt" else "distillgan")
MODEL_SIGNING = BIN / ("model_signing.exe" if os.name == "nt" else "model_signing")


def run(*args: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(DISTILLGAN), *map(str, args)], capture_output=True, text=True, timeout=120, check=False)


def ms(*args: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(MODEL_SIGNING), *map(str, args)], capture_output=True, text=True, timeout=120, check=False)


def one_error(r: subprocess.CompletedProcess[str], code: str) -> None:
    """Exit 1 with exactly one `error [CODE]` line on stderr, and no traceback."""
    lines = [line for line in r.stderr.splitlines() if "error [" in line]
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert len(lines) == 1 and f"error [{code}]" in lines[0], r.stderr
    assert "Traceback" not in r.stderr + r.stdout


# --- keys, certificates and models, made once -------------------------------------------------------


def _write_private(path: Path, key: Any, password: bytes | None = None) -> Path:
    enc = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc))
    return path


def _write_public(path: Path, key: Any) -> Path:
    path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(cn: str, key: Any, issuer: tuple[x509.Certificate, Any] | None, *, ca: bool, start: dt.datetime, end: dt.datetime,
          signing: bool = True) -> x509.Certificate:
    issuer_name, issuer_key = (issuer[0].subject, issuer[1]) if issuer else (_name(cn), key)
    b = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(issuer_name).public_key(key.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    usage = {"content_commitment": False, "key_encipherment": False, "data_encipherment": False, "key_agreement": False,
             "encipher_only": False, "decipher_only": False}
    if ca:
        b = b.add_extension(x509.KeyUsage(digital_signature=False, key_cert_sign=True, crl_sign=True, **usage), critical=True)
    else:
        b = b.add_extension(x509.KeyUsage(digital_signature=signing, key_cert_sign=False, crl_sign=False,
                                          **{**usage, "key_agreement": not signing}), critical=True)
    if issuer:
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _pem(path: Path, *certs: x509.Certificate) -> Path:
    path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs))
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("pki")
    now = dt.datetime.now(dt.timezone.utc)
    year = dt.timedelta(days=365)
    k = {name: ec.generate_private_key(ec.SECP256R1()) for name in ("key", "other", "ca", "leaf", "ca2", "old_ca", "old_leaf", "plain")}
    k["p384"] = ec.generate_private_key(ec.SECP384R1())
    out = {
        "key": _write_private(d / "key.pem", k["key"]), "pub": _write_public(d / "pub.pem", k["key"]),
        "other": _write_private(d / "other.pem", k["other"]), "other_pub": _write_public(d / "other_pub.pem", k["other"]),
        "enc": _write_private(d / "enc.pem", k["p384"], b"s3cret"), "enc_pub": _write_public(d / "enc_pub.pem", k["p384"]),
        "rsa_pub": _write_public(d / "rsa_pub.pem", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        "ed_pub": _write_public(d / "ed_pub.pem", ed25519.Ed25519PrivateKey.generate()),
        "p224_pub": _write_public(d / "p224_pub.pem", ec.generate_private_key(ec.SECP224R1())),
    }
    ca = _cert("distillgan test CA", k["ca"], None, ca=True, start=now - year, end=now + year)
    leaf = _cert("model publisher", k["leaf"], (ca, k["ca"]), ca=False, start=now - year / 2, end=now + year / 2)
    ca2 = _cert("another CA", k["ca2"], None, ca=True, start=now - year, end=now + year)
    # a CA that had expired before it issued the leaf: model-signing checks the chain at the leaf's notBefore
    old_ca = _cert("expired CA", k["old_ca"], None, ca=True, start=now - 10 * year, end=now - 9 * year)
    old_leaf = _cert("late publisher", k["old_leaf"], (old_ca, k["old_ca"]), ca=False, start=now - 2 * year, end=now + year)
    plain = _cert("not a signer", k["plain"], (ca, k["ca"]), ca=False, start=now - year / 2, end=now + year / 2, signing=False)
    out.update({
        "ca": _pem(d / "ca.pem", ca), "ca2": _pem(d / "ca2.pem", ca2), "old_ca": _pem(d / "old_ca.pem", old_ca),
        "leaf_key": _write_private(d / "leaf_key.pem", k["leaf"]), "leaf": _pem(d / "leaf.pem", leaf),
        "old_leaf_key": _write_private(d / "old_leaf_key.pem", k["old_leaf"]), "old_leaf": _pem(d / "old_leaf.pem", old_leaf),
        "plain_key": _write_private(d / "plain_key.pem", k["plain"]), "plain": _pem(d / "plain.pem", plain),
    })  # fmt: skip
    return out


def _model(folder: Path, name: str, seed: int) -> Path:
    g = torch.Generator().manual_seed(seed)
    return save_model({"w": torch.randn(64, 8, generator=g)}, {"n_mels": 80}, {}, ModelMetadata(name=name, model_id=name), folder)


@pytest.fixture
def models(tmp_path: Path) -> tuple[Path, Path]:
    return _model(tmp_path, "alpha", 1), _model(tmp_path, "beta", 2)


def flip_byte(path: Path, offset: int = -100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


# --- interoperability, both ways ------------------------------------------------------------------


def test_a_distillgan_signature_verifies_with_model_signing(pki: dict[str, Path], models: tuple[Path, Path]) -> None:
    model, _ = models
    r = run("sign", model, "--private-key", pki["key"])
    assert r.returncode == 0, r.stderr
    sig = Path(str(model) + ".sig")
    assert sig.is_file()
    r = ms("verify", "key", model, "--public_key", pki["pub"], "--signature", sig)
    assert r.returncode == 0, r.stderr
    assert run("verify", model, "--public-key", pki["pub"]).returncode == 0


def test_a_model_signing_signature_verifies_with_distillgan(pki: dict[str, Path], models: tuple[Path, Path]) -> None:
    model, _ = models
    sig = Path(str(model) + ".sig")
    r = ms("sign", "key", model, "--private_key", pki["key"], "--signature", sig)
    assert r.returncode == 0, r.stderr
    r = run("verify", model, "--public-key", pki["pub"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("OK") and "signed by public key" in r.stdout
    signed = distillgan.verify(model, public_key=[pki["other_pub"], pki["pub"]])  # any key of a list
    assert signed["signature"]["signer"] == f"public key {pki['pub']}"
    assert signing.verify(model, public_key=pki["pub"]).sha256 == distillgan.file_sha256(model)


def test_an_encrypted_p384_key_signs_and_model_signing_verifies(pki: dict[str, Path], models: tuple[Path, Path]) -> None:
    model, _ = models
    distillgan.sign(model, private_key=pki["enc"], password="s3cret")
    assert ms("verify", "key", model, "--public_key", pki["enc_pub"], "--signature", f"{model}.sig").returncode == 0
    with pytest.raises(SignatureError) as e:
        distillgan.sign(model, private_key=pki["enc"], password="wrong")
    assert e.value.code == "key-invalid" and "password" in str(e.value)
    with pytest.raises(SignatureError) as e:
        distillgan.sign(model, private_key=pki["enc"])
    assert e.value.code == "key-invalid" and "encrypted" in str(e.value)


def test_certificate_signatures_verify_both_ways(pki: dict[str, Path], models: tuple[Path, Path]) -> None:
    ours, theirs = models
    r = run("sign", ours, "--private-key", pki["leaf_key"], "--signing-certificate", pki["leaf"], "--certificate-chain", pki["ca"])
    assert r.returncode == 0, r.stderr
    r = ms("verify", "certificate", ours, "--certificate_chain", pki["ca"], "--signature", f"{ours}.sig")
    assert r.returncode == 0, r.stderr
    r = ms("sign", "certificate", theirs, "--private_key", pki["leaf_key"], "--signing_certificate", pki["leaf"],
           "--certificate_chain", pki["ca"], "--signature", f"{theirs}.sig")
    assert r.returncode == 0, r.stderr
    r = run("verify", theirs, "--certificate-chain", pki["ca"])
    assert r.returncode == 0, r.stderr
    assert "CN=model publisher" in r.stdout
    # the chain checks trust: another CA is refused by both
    one_error(run("verify", theirs, "--certificate-chain", pki["ca2"]), "certificate-invalid")
    assert ms("verify", "certificate", theirs, "--certificate_chain", pki["ca2"], "--signature", f"{theirs}.sig").returncode == 1


# --- forgeries refused by both ----------------------------------------------------------------------


@pytest.mark.parametrize("forgery", ["another key", "flipped byte", "swapped signature"])
def test_forgeries_are_refused_by_both(pki: dict[str, Path], models: tuple[Path, Path], forgery: str) -> None:
    model, other = models
    distillgan.sign(model, private_key=pki["key"])
    distillgan.sign(other, private_key=pki["key"])
    key, code = pki["pub"], "signature-mismatch"
    if forgery == "another key":
        distillgan.sign(model, private_key=pki["other"])  # a valid signature, by a key the verifier does not trust
        code = "signature-invalid"
    elif forgery == "flipped byte":
        flip_byte(model)
    else:
        shutil.copyfile(f"{other}.sig", f"{model}.sig")  # a valid signature of another file
    one_error(run("verify", model, "--public-key", key), code)
    with pytest.raises(SignatureError) as e:
        signing.verify(model, public_key=key)
    assert e.value.code == code
    assert ms("verify", "key", model, "--public_key", key, "--signature", f"{model}.sig").returncode == 1


def test_a_flipped_byte_in_a_certificate_signed_file_is_refused_by_both(pki: dict[str, Path], models: tuple[Path, Path]) -> None:
    model, _ = models
    distillgan.sign(model, private_key=pki["leaf_key"], signing_certificate=pki["leaf"], certificate_chain=pki["ca"])
    flip_byte(model, 200)
    one_error(run("verify", model, "--certificate-chain", pki["ca"]), "signature-mismatch")
    assert ms("verify", "certificate", model, "--certificate_chain", pki["ca"], "--signature", f"{model}.sig").returncode == 1


def test_an_altered_bundle_is_refused_by_both(pki: dict[str, Path], models: tuple[Path, Path]) -> None:
    """The payload edited to another digest, the key hint kept: the DSSE signature no longer verifies."""
    import base64

    model, _ = models
    distillgan.sign(model, private_key=pki["key"])
    sig = Path(f"{model}.sig")
    bundle = json.loads(sig.read_text())
    payload = base64.b64decode(bundle["dsseEnvelope"]["payload"]).replace(b'"digest": "', b'"digest": "0', 1)
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(payload).decode()
    sig.write_text(json.dumps(bundle))
    one_error(run("verify", model, "--public-key", pki["pub"]), "signature-invalid")
    assert ms("verify", "key", model, "--public_key", pki["pub"], "--signature", sig).returncode == 1


# --- bad input: coded errors, never tracebacks ------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("no sidecar", "signature-missing"),
        ("empty", "signature-malformed"),
        ("not json", "signature-malformed"),
        ("truncated", "signature-malformed"),
        ("json list", "signature-malformed"),
        ("another media type", "signature-malformed"),
        ("no envelope signature", "signature-malformed"),
        ("huge", "signature-too-large"),
        ("directory", "not-regular-file"),
    ],
)
def test_a_bad_sidecar_is_a_coded_error(pki: dict[str, Path], models: tuple[Path, Path], case: str, code: str) -> None:
    model, _ = models
    distillgan.sign(model, private_key=pki["key"])
    sig = Path(f"{model}.sig")
    good = sig.read_bytes()
    bundle = json.loads(good)
    if case == "no sidecar":
        sig.unlink()
    elif case == "empty":
        sig.write_bytes(b"")
    elif case == "not json":
        sig.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    elif case == "truncated":
        sig.write_bytes(good[: len(good) // 2])
    elif case == "json list":
        sig.write_text("[1, 2, 3]")
    elif case == "another media type":
        sig.write_text(json.dumps({**bundle, "mediaType": "application/vnd.dev.sigstore.bundle.v0.1+json"}))
    elif case == "no envelope signature":
        sig.write_text(json.dumps({**bundle, "dsseEnvelope": {**bundle["dsseEnvelope"], "signatures": []}}))
    elif case == "huge":
        with open(sig, "r+b") as f:
            f.truncate(signing.MAX_SIGNATURE_BYTES + 1)  # sparse: the size alone refuses it, nothing is read
    elif case == "directory":
        sig.unlink()
        sig.mkdir()
    one_error(run("verify", model, "--public-key", pki["pub"]), code)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
def test_a_fifo_as_signature_or_key_never_blocks(pki: dict[str, Path], models: tuple[Path, Path], tmp_path: Path) -> None:
    model, _ = models
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    distillgan.sign(model, private_key=pki["key"])
    one_error(run("verify", model, "--public-key", pki["pub"], "--signature", fifo), "not-regular-file")
    one_error(run("verify", model, "--public-key", fifo), "not-regular-file")
    one_error(run("sign", model, "--private-key", fifo), "not-regular-file")


@pytest.mark.parametrize(
    ("key", "code", "says"),
    [
        ("rsa_pub", "key-invalid", "RSA"),
        ("ed_pub", "key-invalid", "Ed25519"),
        ("p224_pub", "key-invalid", "secp224r1"),
        ("key", "key-invalid", "private key"),  # the private key where the public one goes
        ("ca", "key-invalid", "not a PEM public key"),  # a certificate is not a key
    ],
)
def test_a_key_of_the_wrong_type_is_key_invalid(pki: dict[str, Path], models: tuple[Path, Path], key: str, code: str, says: str) -> None:
    model, _ = models
    distillgan.sign(model, private_key=pki["key"])
    r = run("verify", model, "--public-key", pki[key])
    one_error(r, code)
    assert says in r.stderr


def test_signing_with_a_public_key_or_the_wrong_certificate_is_refused(pki: dict[str, Path], models: tuple[Path, Path]) -> None:
    model, _ = models
    one_error(run("sign", model, "--private-key", pki["pub"]), "key-invalid")
    one_error(run("sign", model, "--private-key", pki["key"], "--signing-certificate", pki["leaf"], "--certificate-chain", pki["ca"]),
              "certificate-invalid")
    one_error(run("sign", model, "--private-key", pki["leaf_key"], "--signing-certificate", pki["key"], "--certificate-chain", pki["ca"]),
              "certificate-invalid")
    assert run("sign", model, "--private-key", pki["leaf_key"], "--signing-certificate", pki["leaf"]).returncode == 2  # no chain
    assert not Path(f"{model}.sig").exists()  # nothing half-written


def test_certificate_chains_that_do_not_hold_are_certificate_invalid(pki: dict[str, Path], models: tuple[Path, Path]) -> None:
    model, other = models
    # a CA that had expired before it issued the signing certificate
    distillgan.sign(model, private_key=pki["old_leaf_key"], signing_certificate=pki["old_leaf"], certificate_chain=pki["old_ca"])
    r = run("verify", model, "--certificate-chain", pki["old_ca"])
    one_error(r, "certificate-invalid")
    assert "expired" in r.stderr
    assert ms("verify", "certificate", model, "--certificate_chain", pki["old_ca"], "--signature", f"{model}.sig").returncode == 1
    # a certificate that may not sign (key agreement only)
    distillgan.sign(other, private_key=pki["plain_key"], signing_certificate=pki["plain"], certificate_chain=pki["ca"])
    one_error(run("verify", other, "--certificate-chain", pki["ca"]), "certificate-invalid")
    assert ms("verify", "certificate", other, "--certificate_chain", pki["ca"], "--signature", f"{other}.sig").returncode == 1
    # a key signature checked with only a chain, a certificate signature with only a key
    distillgan.sign(model, private_key=pki["key"])
    one_error(run("verify", model, "--certificate-chain", pki["ca"]), "signature-invalid")
    distillgan.sign(other, private_key=pki["leaf_key"], signing_certificate=pki["leaf"], certificate_chain=pki["ca"])
    one_error(run("verify", other, "--public-key", pki["pub"]), "signature-invalid")
    # a chain file that is not certificates
    one_error(run("verify", other, "--certificate-chain", pki["pub"]), "certificate-invalid")


def test_a_signature_of_a_folder_is_not_one_of_the_file(pki: dict[str, Path], tmp_path: Path) -> None:
    """model_signing signs folders too: a valid signature over a folder holding the file is not the file's."""
    folder = tmp_path / "m"
    model = _model(folder, "gamma", 3)
    sig = tmp_path / "folder.sig"
    assert ms("sign", "key", folder, "--private_key", pki["key"], "--signature", sig).returncode == 0
    one_error(run("verify", model, "--public-key", pki["pub"], "--signature", sig), "signature-mismatch")


def test_usage_errors(pki: dict[str, Path], models: tuple[Path, Path]) -> None:
    model, other = models
    assert run("verify", model, "--signature", f"{model}.sig").returncode == 2  # nothing to check it with
    assert run("verify", model, other, "--signature", f"{model}.sig", "--public-key", pki["pub"]).returncode == 2
    assert run("sign", model).returncode == 2  # --private-key is required
    r = run("sign", "--help")
    assert r.returncode == 0 and r.stdout.startswith("usage: distillgan sign")


def test_verify_without_signature_options_is_unchanged(models: tuple[Path, Path]) -> None:
    model, _ = models
    r = run("verify", model)
    assert r.returncode == 0 and r.stdout.startswith("OK") and "signed" not in r.stdout


def test_signing_refuses_what_distillgan_refuses_to_read(pki: dict[str, Path], tmp_path: Path) -> None:
    legacy = tmp_path / "old.distillgan"
    torch.save({"format": "distillgan_model", "model_state_dict": {}}, legacy)
    one_error(run("sign", legacy, "--private-key", pki["key"]), "pickle")
    assert not Path(f"{legacy}.sig").exists()


# --- model-signing is imported only when a signature is made or checked -----------------------------


def test_model_signing_is_imported_only_for_signatures(pki: dict[str, Path], models: tuple[Path, Path]) -> None:
    model, _ = models
    distillgan.sign(model, private_key=pki["key"])
    code = f"""
import sys
import distillgan
assert "model_signing" not in sys.modules, "import distillgan"
distillgan.inspect({str(model)!r})
distillgan.verify({str(model)!r})
distillgan.load_model({str(model)!r})
list(distillgan.ModelLibrary({str(model.parent)!r}).list_all())
assert "model_signing" not in sys.modules, "inspect, verify, load_model, list"
distillgan.verify({str(model)!r}, public_key={str(pki['pub'])!r})
assert "model_signing" in sys.modules
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    r = run("inspect", model)  # and the CLI's inspect and list, in their own process
    assert r.returncode == 0 and f"signature   {model}.sig" in r.stdout


def test_without_the_extra_a_coded_error_says_what_to_install(pki: dict[str, Path], models: tuple[Path, Path]) -> None:
    model, _ = models
    code = f"""
import sys
sys.modules["model_signing"] = None  # as if `distillgan[signing]` were not installed
import distillgan
try:
    distillgan.verify({str(model)!r}, public_key={str(pki['pub'])!r})
except distillgan.SignatureError as e:
    print(e.code, e)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("signing-unavailable") and "pip install 'distillgan[signing]'" in r.stdout


# --- the signature vectors (spec/vectors/signatures, FORMAT.md §16) ----------------------------------

SIGNATURE_VECTORS = Path(__file__).resolve().parent.parent / "spec" / "vectors" / "signatures"


def _signature_vectors() -> list[dict[str, Any]]:
    index = json.loads((SIGNATURE_VECTORS / "index.json").read_text(encoding="ascii"))
    assert index["format"] == "distillgan-signature-vectors"
    return list(index["vectors"])


@pytest.mark.parametrize("vector", _signature_vectors(), ids=lambda v: v["id"])
def test_signature_vectors_get_their_verdict_from_both(vector: dict[str, Any]) -> None:
    import hashlib

    paths = {k: SIGNATURE_VECTORS / vector[k] for k in ("file", "signature", "public_key")}
    for p in paths.values():
        assert hashlib.sha256(p.read_bytes()).hexdigest() == vector["sha256"][p.name], p.name
    r = run("verify", paths["file"], "--signature", paths["signature"], "--public-key", paths["public_key"])
    theirs = ms("verify", "key", paths["file"], "--public_key", paths["public_key"], "--signature", paths["signature"])
    if vector["expected"].get("valid"):
        assert r.returncode == 0, r.stderr
        assert theirs.returncode == 0, theirs.stderr
    else:
        one_error(r, vector["expected"]["code"])
        assert theirs.returncode == 1


def test_the_kept_signature_vectors_are_checked_by_the_generator(tmp_path: Path) -> None:
    """generate.py cannot remake randomised ECDSA sidecars: it copies the kept ones, checks each verdict, and --check compares."""
    gen = SIGNATURE_VECTORS.parent / "generate.py"
    r = subprocess.run([sys.executable, str(gen), "--check"], capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    kept = SIGNATURE_VECTORS / "signed.distillgan.sig"
    assert b"-----BEGIN" in (SIGNATURE_VECTORS / "signer.key.pem").read_bytes()  # published test keys, deterministic
    # a kept sidecar that no longer fits its file is reported, not silently remade
    out = tmp_path / "out"
    shutil.copytree(SIGNATURE_VECTORS.parent / "signatures", out / "signatures")
    code = f"""
import sys
sys.path.insert(0, {str(gen.parent)!r})
import generate
from pathlib import Path
generate.HERE = Path({str(out)!r})
(generate.HERE / "signatures" / "signed.distillgan.sig").write_bytes((generate.HERE / "signatures" / "other-file.sig").read_bytes())
print(generate.build_signatures(Path({str(tmp_path / 'fresh')!r})))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stderr
    assert "signature-mismatch" in r.stdout and "signed.distillgan.sig" in r.stdout
    assert kept.read_bytes() != (out / "signatures" / "signed.distillgan.sig").read_bytes()


# --- load_model(public_key=...) ---------------------------------------------------------------------


def test_load_model_with_a_key_loads_a_signed_model_and_refuses_unsigned_or_altered(
    pki: dict[str, Path], models: tuple[Path, Path], assert_same_tree: Any
) -> None:
    model, other = models
    plain = distillgan.load_model(model, copy=True)
    with pytest.raises(SignatureError) as e:
        distillgan.load_model(model, public_key=pki["pub"])
    assert e.value.code == "signature-missing"
    distillgan.sign(model, private_key=pki["key"])
    loaded = distillgan.load_model(model, public_key=[pki["other_pub"], pki["pub"]])
    assert_same_tree(loaded.state_dict, plain.state_dict)
    assert loaded.metadata == plain.metadata
    # the tensors own their memory: the file can go, and writing them never reaches it
    before = model.read_bytes()
    loaded.state_dict["w"].add_(1.0)
    assert model.read_bytes() == before
    for key, code in ((pki["other_pub"], "signature-invalid"), (pki["rsa_pub"], "key-invalid")):
        with pytest.raises(SignatureError) as e:
            distillgan.load_model(model, public_key=key)
        assert e.value.code == code
    shutil.copyfile(f"{model}.sig", f"{other}.sig")  # another file's signature
    with pytest.raises(SignatureError) as e:
        distillgan.load_model(other, public_key=pki["pub"])
    assert e.value.code == "signature-mismatch"
    flip_byte(model, 200)  # inside the manifest: without a key, a CRC error; with one, "not what was signed" first
    with pytest.raises(SignatureError) as e:
        distillgan.load_model(model, public_key=pki["pub"])
    assert e.value.code == "signature-mismatch"


def test_load_model_with_a_certificate_chain(pki: dict[str, Path], models: tuple[Path, Path]) -> None:
    model, _ = models
    distillgan.sign(model, private_key=pki["leaf_key"], signing_certificate=pki["leaf"], certificate_chain=pki["ca"])
    assert distillgan.load_model(model, certificate_chain=pki["ca"]).metadata.name == "alpha"
    with pytest.raises(SignatureError) as e:
        distillgan.load_model(model, certificate_chain=pki["ca2"])
    assert e.value.code == "certificate-invalid"


def test_a_signed_load_hashes_the_bytes_it_parses(pki: dict[str, Path], models: tuple[Path, Path]) -> None:
    """The file is read once; what is parsed is that copy, so a file swapped after the check cannot be what loads."""
    model, other = models
    distillgan.sign(model, private_key=pki["key"])
    snapshot, signed = signing.read_verified(model, public_key=pki["pub"])
    assert signed.sha256 == distillgan.file_sha256(model)
    shutil.copyfile(other, model)  # swapped on disk after the check
    archive = distillgan.open_archive(model, source=snapshot)
    assert archive.manifest["metadata"]["name"] == "alpha"  # the checked bytes, not the file now on disk
    assert distillgan.inspect(model)["manifest"]["metadata"]["name"] == "beta"


def test_load_model_over_http_fetches_the_sidecar(pki: dict[str, Path], models: tuple[Path, Path]) -> None:
    from remote_server import Server

    model, other = models
    distillgan.sign(model, private_key=pki["key"])
    server = Server()
    try:
        url = server.add("/m.distillgan", model.read_bytes())
        with pytest.raises(SignatureError) as e:
            distillgan.load_model(url, public_key=pki["pub"])
        assert e.value.code == "signature-missing"
        server.add("/m.distillgan.sig", Path(f"{model}.sig").read_bytes())
        assert distillgan.load_model(url, public_key=pki["pub"]).metadata.name == "alpha"
        assert distillgan.verify(url, public_key=pki["pub"])["signature"]["file"] == url + ".sig"
        server.add("/m.distillgan", other.read_bytes())  # the model replaced, its old sidecar kept
        with pytest.raises(SignatureError) as e:
            distillgan.load_model(url, public_key=pki["pub"])
        assert e.value.code == "signature-mismatch"
    finally:
        server.close()


# --- the folder keeps signatures straight -------------------------------------------------------------


def test_delete_model_removes_the_sidecars(pki: dict[str, Path], models: tuple[Path, Path]) -> None:
    model, other = models
    distillgan.sign(model, private_key=pki["key"])
    Path(f"{model}.sig.stale").write_bytes(b"old")
    distillgan.sign(other, private_key=pki["key"])
    assert distillgan.delete_model("alpha", model.parent)
    assert not model.exists() and not Path(f"{model}.sig").exists() and not Path(f"{model}.sig.stale").exists()
    assert Path(f"{other}.sig").exists()  # another model's signature stays
    assert distillgan.ModelLibrary(model.parent).repair_index().ignored == []  # a sidecar is not a stray file


def test_update_vocoder_sets_the_old_signature_aside(pki: dict[str, Path], models: tuple[Path, Path],
                                                     caplog: pytest.LogCaptureFixture) -> None:
    model, _ = models
    distillgan.sign(model, private_key=pki["key"])
    old_sig = Path(f"{model}.sig").read_bytes()
    with caplog.at_level("WARNING", logger="distillgan"):
        distillgan.update_vocoder(model, {"type": "hifigan", "state_dict": {"w": torch.ones(3)}})
    assert not Path(f"{model}.sig").exists()
    assert Path(f"{model}.sig.stale").read_bytes() == old_sig
    assert any("sig.stale" in r.getMessage() and "sign it again" in r.getMessage() for r in caplog.records)
    with pytest.raises(SignatureError) as e:
        distillgan.load_model(model, public_key=pki["pub"])
    assert e.value.code == "signature-missing"
    distillgan.sign(model, private_key=pki["key"])
    assert distillgan.load_model(model, public_key=pki["pub"]).vocoder_state["type"] == "hifigan"


def test_in_place_conversion_sets_the_old_signature_aside_and_says_so(pki: dict[str, Path], tmp_path: Path) -> None:
    import appshapes as app

    folder = tmp_path / "models"
    pickle_file = app.app_save_model(app.seed_distillgan_dict(name="Piano"), folder)
    # model_signing signs any file, a pickle included; the converted archive is other bytes
    assert ms("sign", "key", pickle_file, "--private_key", pki["key"], "--signature", f"{pickle_file}.sig").returncode == 0
    r = run("convert", "--dir", folder, folder)
    assert r.returncode == 0, r.stderr
    assert "sig.stale" in r.stderr and "sign it again" in r.stderr
    assert not Path(f"{pickle_file}.sig").exists() and Path(f"{pickle_file}.sig.stale").is_file()


def test_list_shows_sidecars_and_with_a_key_whether_they_verify(pki: dict[str, Path], tmp_path: Path) -> None:
    a, b, _ = _model(tmp_path, "alpha", 1), _model(tmp_path, "beta", 2), _model(tmp_path, "gamma", 3)
    distillgan.sign(a, private_key=pki["key"])
    distillgan.sign(b, private_key=pki["other"])
    lib = distillgan.ModelLibrary(tmp_path)
    assert {e.model_id: lib.signature(e) for e in lib.list_all()} == {"alpha": "signed", "beta": "signed", "gamma": "unsigned"}
    r = run("list", "--dir", tmp_path)
    assert r.returncode == 0 and "SIGNATURE" in r.stdout.splitlines()[0]
    r = run("list", "--json", "--dir", tmp_path, "--public-key", pki["pub"])
    assert r.returncode == 0, r.stderr
    states = {e["model_id"]: e["signature"] for e in json.loads(r.stdout)}
    assert states == {"alpha": "valid", "beta": "signature-invalid", "gamma": "unsigned"}
    one_error(run("list", "--dir", tmp_path, "--public-key", pki["rsa_pub"]), "key-invalid")  # the caller's key, not a file's fault


@pytest.mark.skipif(shutil.which("openssl") is None, reason="the README makes its keys with openssl")
def test_the_readme_signing_commands_and_python_run(tmp_path: Path) -> None:
    import re

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Signing", 1)[1].split("\n## ", 1)[0]
    (commands,) = re.findall(r"```sh\n(.+?)\n```", section, flags=re.DOTALL)
    (python,) = re.findall(r"```python\n(.+?)\n```", section, flags=re.DOTALL)
    _model(tmp_path / "models", "piano", 4)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    for line in commands.splitlines():
        r = subprocess.run(line.split("#")[0], shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)
        assert r.returncode == 0, (line, r.stdout, r.stderr)
    r = subprocess.run([sys.executable, "-W", "error", "-c", python], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr[-3000:]


def test_the_signing_bench_script_runs(tmp_path: Path) -> None:
    """bench/signing.py at tiny sizes, one repetition: every row it reports is there (no timing asserted)."""
    script = Path(__file__).resolve().parent.parent / "bench" / "signing.py"
    r = subprocess.run([sys.executable, str(script), "--size", "2M", "--load-size", "1M", "--reps", "1", "--tmp", str(tmp_path), "--json"],
                       capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert {row["contender"] for row in rows} >= {"hashlib.sha256 (file)", "distillgan.sign", "signing.verify",
                                                  "load_model(copy=True)", "load_model(public_key=)"}
    assert all(row["median_s"] > 0 for row in rows)
    assert list(tmp_path.iterdir()) == []  # its temporary folder is gone


def test_the_size_limits_are_a_boundary_pair(pki: dict[str, Path], models: tuple[Path, Path], tmp_path: Path) -> None:
    """FORMAT.md §8: a sidecar (a key file) of exactly the limit is read; one byte more is refused unread."""
    model, _ = models
    distillgan.sign(model, private_key=pki["key"])
    sig = Path(f"{model}.sig")
    good = sig.read_bytes()
    pub = tmp_path / "padded.pem"
    for extra, ok in ((0, True), (1, False)):
        sig.write_bytes(good + b" " * (signing.MAX_SIGNATURE_BYTES - len(good) + extra))  # JSON allows trailing blanks
        pub.write_bytes(pki["pub"].read_bytes() + b"\n" * (signing.MAX_KEY_BYTES - pki["pub"].stat().st_size + extra))
        if ok:
            signing.verify(model, public_key=pki["pub"])
            sig.write_bytes(good)
            signing.verify(model, public_key=pub)
        else:
            with pytest.raises(SignatureError) as e:
                signing.verify(model, public_key=pki["pub"])
            assert e.value.code == "signature-too-large"
            sig.write_bytes(good)
            with pytest.raises(SignatureError) as e:
                signing.verify(model, public_key=pub)
            assert e.value.code == "key-invalid" and str(signing.MAX_KEY_BYTES) in str(e.value)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_signed_load_onto_cuda_gives_the_same_bits(pki: dict[str, Path], models: tuple[Path, Path]) -> None:
    model, _ = models
    distillgan.sign(model, private_key=pki["key"])
    on_cpu = distillgan.load_model(model, copy=True)
    on_gpu = distillgan.load_model(model, device="cuda", public_key=pki["pub"])
    for name, t in on_cpu.state_dict.items():
        assert on_gpu.state_dict[name].device.type == "cuda"
        assert torch.equal(on_gpu.state_dict[name].cpu().view(torch.uint8), t.view(torch.uint8)), name
