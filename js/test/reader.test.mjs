// The JavaScript reader's API (node --test js/test/). The conformance vectors are run by tests/test_js.py.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { execFileSync } from "node:child_process";
import { mkdtempSync, openSync, closeSync, ftruncateSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import {
  BlobSource, BytesSource, DistillganError, Sha256, V1_MESSAGE, crc32, decodeMsgpack, openArchive, project, sha256Hex, tensorValues, toJSON,
} from "../distillgan.mjs";
import { openFile, openPath } from "../node.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const vectors = join(here, "..", "..", "spec", "vectors");
const vector = (rel) => readFileSync(join(vectors, rel));
const index = JSON.parse(readFileSync(join(vectors, "index.json"), "utf8"));

async function code(promise) {
  try {
    await promise;
  } catch (e) {
    assert.ok(e instanceof DistillganError, `not a DistillganError: ${e}`);
    return e.code;
  }
  return "accepted";
}

test("opens from an ArrayBuffer, a Uint8Array, a Blob and a path, with the same manifest", async () => {
  const bytes = vector("valid/with-vocoder.distillgan");
  const a = await openArchive(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
  const b = await openArchive(new Uint8Array(bytes));
  const c = await openArchive(new Blob([bytes]));
  const d = await openFile(join(vectors, "valid/with-vocoder.distillgan"));
  await d.source.close();
  const expected = index.vectors.find((v) => v.id === "valid/with-vocoder").expected.manifest;
  for (const archive of [a, b, c, d]) {
    assert.deepEqual(JSON.parse(toJSON(archive.projection())), expected);
    assert.deepEqual(archive.members.map((m) => m.name), ["manifest.msgpack", "model.safetensors", "vocoder.safetensors"]);
  }
  assert.equal(a.manifest.get("vocoder_state").get("type"), "hifigan");
  assert.equal(a.manifest.get("latent_dim"), 8n); // ints are BigInt: no precision lost
});

test("digests are the SHA-256 of each stored tensor, as the index says", async () => {
  for (const v of index.vectors.filter((x) => x.valid)) {
    const archive = await openArchive(vector(v.file));
    assert.deepEqual(await archive.digests(), v.expected.digests, v.id);
    assert.deepEqual(await archive.digests({ subtle: null }), v.expected.digests, `${v.id} (JavaScript SHA-256)`);
  }
});

test("opening reads only the headers, a few kilobytes whatever the file's size", async (t) => {
  const big = process.env.DISTILLGAN_BIG_MODEL; // a model with a large tensor, made by tests/test_js.py
  if (!big) {
    t.skip("set DISTILLGAN_BIG_MODEL to a large .distillgan file (tests/test_js.py does)");
    return;
  }
  const src = await openPath(big);
  const archive = await openArchive(src);
  assert.ok(src.size > 32 << 20);
  assert.ok(src.bytesRead < 64 << 10, `read ${src.bytesRead} of ${src.size} bytes`);
  await src.close();
  let sliced = 0;
  const blob = new Blob([readFileSync(big)]);
  const spy = { size: blob.size, name: "spy", read: async (o, n) => { sliced += n; return new Uint8Array(await blob.slice(o, o + n).arrayBuffer()); } };
  await openArchive(spy);
  assert.ok(sliced < 64 << 10, `sliced ${sliced} bytes`);
  assert.ok(archive.tables["model.safetensors"].tensors.length >= 1);
});

test("invalid files fail with the code of the first check (FORMAT.md §13), legacy ones with the v1 message", async () => {
  for (const v of index.vectors.filter((x) => !x.valid && !x.needs).slice(0, 120)) {
    assert.equal(await code(openArchive(vector(v.file))), v.expected.code, v.id);
  }
  try {
    await openArchive(vector("invalid/legacy-distill-v1-zip.distillgan"));
    assert.fail("accepted");
  } catch (e) {
    assert.equal(e.code, "legacy-distill-v1");
    assert.equal(e.message, V1_MESSAGE);
  }
});

test("verify checks every CRC-32 with progress, then bool bytes", async () => {
  const archive = await openArchive(vector("valid/all-dtypes.distillgan"));
  const seen = [];
  await archive.verify({ onProgress: (done, total) => seen.push([done, total]) });
  assert.ok(seen.length >= 1 && seen.at(-1)[0] === seen.at(-1)[1]);
  assert.equal(await code((await openArchive(vector("invalid/crc-model-data.distillgan"))).verify()), "crc-mismatch");
  assert.equal(await code((await openArchive(vector("invalid/st-bool-value.distillgan"))).verify()), "st-bool");
  const bytes = vector("valid/minimal.distillgan");
  const digest = createHash("sha256").update(bytes).digest("hex");
  assert.equal(await (await openArchive(bytes)).verify({ sha256: digest }), true);
  assert.equal(await code((await openArchive(bytes)).verify({ sha256: "0".repeat(64) })), "sha256-mismatch");
});

test("CRC-32 and SHA-256 match zlib's and node's", async () => {
  const data = new Uint8Array(100_003).map((_, i) => (i * 31 + 7) & 0xff);
  assert.equal(crc32(new TextEncoder().encode("123456789")), 0xcbf43926);
  const py = execFileSync("python3", ["-c", "import sys, zlib; print(zlib.crc32(sys.stdin.buffer.read()))"], { input: data });
  assert.equal(crc32(data), Number(String(py).trim()));
  assert.equal(crc32(data.subarray(50_000), crc32(data.subarray(0, 50_000))), crc32(data));
  const want = createHash("sha256").update(data).digest("hex");
  assert.equal(new Sha256().update(data.subarray(0, 77)).update(data.subarray(77)).hex(), want);
  assert.equal(await sha256Hex(data), want);
  assert.equal(await sha256Hex(data, null), want);
  assert.equal(new Sha256().hex(), createHash("sha256").digest("hex"));
});

test("the JSON projection keeps every bit: u64, -0.0, NaN payloads of float32, bytes, int keys", () => {
  const mp = Uint8Array.from([0x85, 0xa1, 0x61, 0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xa1, 0x7a, 0xcb, 0x80, 0, 0, 0, 0, 0, 0, 0,
    0xa1, 0x6e, 0xca, 0x7f, 0x80, 0, 1, 0xa1, 0x62, 0xc4, 2, 0xff, 0, 0xa1, 0x6d, 0x81, 0x01, 0xc0]);
  const text = toJSON(project(decodeMsgpack(mp)));
  assert.equal(text, '{"a":18446744073709551615,"z":-0.0,"n":{"$":"float","value":"nan","bits":"7ff8000020000000"},' +
    '"b":{"$":"bytes","base64":"/wA="},"m":{"$":"map","items":[[1,null]]}}');
});

test("a FIFO, a directory and a missing path are refused without blocking (FORMAT.md §13.1)", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "dg-js-"));
  try {
    execFileSync("mkfifo", [join(dir, "fifo")]);
  } catch {
    t.skip("no mkfifo");
    return;
  }
  assert.equal(await code(openPath(join(dir, "fifo"))), "not-regular-file");
  assert.equal(await code(openPath(dir)), "not-regular-file");
  assert.equal(await code(openPath(join(dir, "missing"))), "not-found");
});

test("a file that gets shorter while it is read is file-changed, never a crash", async () => {
  const dir = mkdtempSync(join(tmpdir(), "dg-js-"));
  const path = join(dir, "m.distillgan");
  writeFileSync(path, vector("valid/minimal.distillgan"));
  const src = await openPath(path);
  const fd = openSync(path, "r+");
  ftruncateSync(fd, 100);
  closeSync(fd);
  assert.equal(await code(openArchive(src)), "file-changed");
  await src.close();
  const blob = new BlobSource(new Blob([vector("valid/minimal.distillgan")]));
  blob.size += 10; // a Blob that claims more than it has
  assert.equal(await code(openArchive(blob)), "file-changed");
});

test("tensor values for a histogram: fp16 and bf16 decoded", async () => {
  const f16 = Uint8Array.from([0x00, 0x3c, 0x00, 0xc0, 0x00, 0x7c, 0x01, 0x00]); // 1, -2, inf, smallest subnormal
  assert.deepEqual(Array.from(tensorValues("F16", f16)), [1, -2, Infinity, 2 ** -24]);
  const bf16 = Uint8Array.from([0x80, 0x3f, 0x00, 0xc0]); // 1, -2
  assert.deepEqual(Array.from(tensorValues("BF16", bf16)), [1, -2]);
  const archive = await openArchive(vector("valid/all-dtypes.distillgan"));
  const t = archive.tables["model.safetensors"].tensors.find((x) => x.dtype === "BF16");
  assert.deepEqual(Array.from(tensorValues("BF16", await archive.tensorBytes("model.safetensors", t))), [-1, -0.5, 0, 0.5, 1]);
});
