// A reader of .distillgan files (spec/FORMAT.md), independent of the Python one.
//
// An ES module without dependencies, for browsers and Node >= 18. It performs every check of FORMAT.md
// §3–§7 and §13, in the spec's order, reading only the byte ranges it needs: the end records, the
// central directory, the local headers, the manifest and the safetensors headers — a 2 GiB model opens
// by reading a few kilobytes. Tensor data is read only by verify(), digests() and tensorBytes().
//
//   import { openArchive } from "./distillgan.mjs";
//   const archive = await openArchive(file);          // File, Blob, ArrayBuffer, Uint8Array or a source
//   archive.manifest                                 // decoded msgpack (ints as BigInt, maps as Map)
//   toJSON(archive.projection())                      // the JSON projection of FORMAT.md §4.6
//   await archive.verify({ onProgress })             // every CRC-32, then bool bytes (§13.9)
//
// Every failure is a DistillganError with a stable `code` (FORMAT.md §9).

export const V1_MESSAGE = "This model was saved in v1 format which is no longer supported. Please retrain your model.";
export const MAX_FILE_BYTES = 2 ** 40;
export const MIN_ARCHIVE_BYTES = 174;
export const MAX_MEMBERS = 16;
export const MAX_CENTRAL_DIRECTORY_BYTES = 64 << 10;
export const MAX_MANIFEST_BYTES = 64 * 2 ** 20;
export const MAX_DEPTH = 64;
export const MAX_HEADER_BYTES = 100_000_000;
export const MAX_HEADER_DEPTH = 3;
export const MAX_TENSORS = 2 ** 20;
export const MAX_NAME_BYTES = 1024;
export const MAX_RANK = 32;
export const MAX_PICKLE_SCAN_BYTES = 16 << 20;
export const MAX_PICKLE_OPS = 200_000;
export const MAX_PICKLES = 8;
export const MAX_CD_SCAN_BYTES = 16 << 20;
const MAX_DIM = (1n << 63n) - 1n;
const U64_MAX = (1n << 64n) - 1n;
const U32_MAX = 0xffffffff;
const U16_MAX = 0xffff;
const ALIGNMENT = 64;
const PAD_ID = 0x6764;
const EXTERNAL_ATTR = 0x81a40000;
const MEMBER_ORDER = ["manifest.msgpack", "model.safetensors", "vocoder.safetensors"];
const MANIFEST = MEMBER_ORDER[0];
const CHUNK = 8 << 20;

export const DTYPES = {
  F64: 8, F32: 4, F16: 2, BF16: 2, F8_E4M3: 1, F8_E5M2: 1, F8_E4M3FNUZ: 1, F8_E5M2FNUZ: 1,
  C64: 8, I64: 8, I32: 4, I16: 2, I8: 1, U64: 8, U32: 4, U16: 2, U8: 1, BOOL: 1,
};
const NUMPY_DTYPES = new Set(["F64", "F32", "F16", "C64", "I64", "I32", "I16", "I8", "U64", "U32", "U16", "U8", "BOOL"]);
const FLOAT_DTYPES = new Set(["F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2", "F8_E4M3FNUZ", "F8_E5M2FNUZ", "C64"]);
const VALUE_SLOTS = ["analysis", "extra", "spectrogram_config", "state_dict", "training_config", "vocoder_state"];
const TOP_KEYS = ["format", "version", "latent_dim", "members", "metadata", ...VALUE_SLOTS];
const MEMBER_KEYS = ["aliases", "size"];
const METADATA_SCHEMA = [
  ["model_id", "str", false], ["name", "str", false], ["description", "str", false], ["dataset_name", "str", false],
  ["dataset_file_count", "uint", false], ["dataset_total_duration_s", "float", false], ["training_date", "str", false],
  ["save_date", "str", false], ["training_epochs", "uint", false], ["final_train_loss", "loss", true],
  ["final_val_loss", "loss", true], ["tags", "strlist", false], ["has_analysis", "bool", false],
  ["n_active_components", "uint", false],
];
const TAGS = {
  tuple: [["items"], []], map: [["items"], []], tensor: [["name"], ["requires_grad"]],
  parameter: [["name", "requires_grad"], []], ndarray: [["name"], []], tensors: [["prefix", "keys"], []],
};

// --- errors ---------------------------------------------------------------------------------------

export class DistillganError extends Error {
  constructor(code, message) {
    super(message);
    this.name = "DistillganError";
    this.code = code;
  }
}

function fail(code, message) {
  return new DistillganError(code, message);
}

// --- values -------------------------------------------------------------------------------------

/** A NaN read from the file, with its IEEE 754 binary64 bits (16 hex digits, big-endian). */
export class NaNValue {
  constructor(bits) {
    this.bits = bits;
  }
}

const isInt = (v) => typeof v === "bigint";
const isFloat = (v) => typeof v === "number" || v instanceof NaNValue;
const isStr = (v) => typeof v === "string";
const isMap = (v) => v instanceof Map;
const isList = (v) => Array.isArray(v);
const isBin = (v) => v instanceof Uint8Array;

function kindOf(v) {
  if (v === null) return "nil";
  if (typeof v === "boolean") return "bool";
  if (isInt(v)) return "int";
  if (isFloat(v)) return "float";
  if (isStr(v)) return "str";
  if (isBin(v)) return "bin";
  if (isList(v)) return "array";
  if (isMap(v)) return "map";
  return typeof v;
}

const hex = (n, width) => n.toString(16).padStart(width, "0");
const show = (v) => (isStr(v) ? JSON.stringify(v) : isInt(v) ? v.toString() : kindOf(v));

// --- text ---------------------------------------------------------------------------------------

const UTF8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const ENCODER = new TextEncoder();

function utf8(bytes) {
  try {
    return UTF8.decode(bytes);
  } catch {
    return null;
  }
}

function bytesEqual(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

const ascii = (s) => ENCODER.encode(s);

// --- sources: only the ranges asked for are read ----------------------------------------------------

/** A source over bytes in memory. */
export class BytesSource {
  constructor(bytes, name = "bytes") {
    this.bytes = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
    this.size = this.bytes.length;
    this.name = name;
    this.bytesRead = 0;
  }
  async read(offset, n) {
    this.bytesRead += n;
    return this.bytes.subarray(offset, offset + n);
  }
}

/** A source over a Blob or File: each read is one Blob.slice, so a large file is never loaded whole. */
export class BlobSource {
  constructor(blob, name) {
    this.blob = blob;
    this.size = blob.size;
    this.name = name ?? blob.name ?? "blob";
    this.bytesRead = 0;
  }
  async read(offset, n) {
    const buf = new Uint8Array(await this.blob.slice(offset, offset + n).arrayBuffer());
    this.bytesRead += buf.length;
    if (buf.length !== n) throw fail("file-changed", `${this.name}: read ${buf.length} of ${n} bytes at ${offset}; the file got shorter while it was read (FORMAT.md §6)`);
    return buf;
  }
}

export function toSource(input, name) {
  if (input && typeof input.read === "function" && typeof input.size === "number") return input;
  if (typeof Blob !== "undefined" && input instanceof Blob) return new BlobSource(input, name);
  if (input instanceof ArrayBuffer || ArrayBuffer.isView(input)) {
    const bytes = input instanceof ArrayBuffer ? new Uint8Array(input) : new Uint8Array(input.buffer, input.byteOffset, input.byteLength);
    return new BytesSource(bytes, name);
  }
  throw fail("invalid-input", "expected a File, Blob, ArrayBuffer, Uint8Array or a source with size and read(offset, n)");
}

async function peek(src, offset, n) {
  n = Math.max(0, Math.min(n, src.size - offset));
  return offset >= 0 && n ? src.read(offset, n) : new Uint8Array(0);
}

const dv = (b) => new DataView(b.buffer, b.byteOffset, b.byteLength);
const u16 = (b, o) => b[o] | (b[o + 1] << 8);
const u32 = (b, o) => (b[o] | (b[o + 1] << 8) | (b[o + 2] << 16)) + b[o + 3] * 0x1000000;
const u64 = (b, o) => BigInt(u32(b, o)) + (BigInt(u32(b, o + 4)) << 32n);
const big = (n) => BigInt(n);

// --- §7 legacy and pickle detection ---------------------------------------------------------------

// opcode byte -> argument kind (FORMAT.md §7's table; "*" marks the string opcodes, "u" UTF-8 text)
const OPCODES = new Map(Object.entries({
  0x28: "", 0x29: "", 0x2e: "STOP", 0x30: "", 0x31: "", 0x32: "", 0x42: "n4*", 0x43: "n1*", 0x46: "nl", 0x47: "8", 0x49: "nl",
  0x4a: "4", 0x4b: "1", 0x4c: "nl", 0x4d: "2", 0x4e: "", 0x50: "nl", 0x51: "", 0x52: "", 0x53: "S*", 0x54: "s4*", 0x55: "n1*",
  0x56: "V*", 0x58: "n4u*", 0x5d: "", 0x61: "", 0x62: "", 0x63: "nl2", 0x64: "", 0x65: "", 0x67: "nl", 0x68: "1", 0x69: "nl2",
  0x6a: "4", 0x6c: "", 0x6f: "", 0x70: "nl", 0x71: "1", 0x72: "4", 0x73: "", 0x74: "", 0x75: "", 0x7d: "", 0x80: "1", 0x81: "",
  0x82: "1", 0x83: "2", 0x84: "4", 0x85: "", 0x86: "", 0x87: "", 0x88: "", 0x89: "", 0x8a: "n1", 0x8b: "s4", 0x8c: "n1u*",
  0x8d: "n8u*", 0x8e: "n8*", 0x8f: "", 0x90: "", 0x91: "", 0x92: "", 0x93: "", 0x94: "", 0x95: "8", 0x96: "n8", 0x97: "", 0x98: "",
}).map(([k, v]) => [Number(k), v]));
const MARKER = ascii("distill_model");
const TORCH_LEGACY_MAGIC = [0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
const TORCH_MEMBER = /^[^/]+\/(data\.pkl|version|\.data\/version|byteorder|data\/[0-9]+|\.format_version|\.storage_alignment)$/;
const PICKLE_MESSAGE = (what) =>
  `${what}: distillgan never unpickles files, because loading a pickle can run arbitrary code. Convert it once with ` +
  "`distillgan convert FILE` (it reads the file without running anything in it), or re-save the model with " +
  "distillgan.save_model from the program that trained it.";

class Malformed extends Error {}

const SIMPLE_ESCAPES = { 0x5c: 0x5c, 0x27: 0x27, 0x22: 0x22, 0x61: 7, 0x62: 8, 0x66: 12, 0x6e: 10, 0x72: 13, 0x74: 9, 0x76: 11 };
const isHex = (c) => (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66);

function stringEscapes(body) {
  const out = [];
  let i = 0;
  while (i < body.length) {
    const c = body[i];
    if (c !== 0x5c) {
      out.push(c);
      i++;
      continue;
    }
    if (i + 1 >= body.length) throw new Malformed("a backslash at the end of a STRING");
    const e = body[i + 1];
    if (e in SIMPLE_ESCAPES) {
      out.push(SIMPLE_ESCAPES[e]);
      i += 2;
    } else if (e === 0x0a) {
      i += 2;
    } else if (e >= 0x30 && e <= 0x37) {
      let j = i + 1;
      let v = 0;
      while (j < body.length && j < i + 4 && body[j] >= 0x30 && body[j] <= 0x37) v = v * 8 + (body[j++] - 0x30);
      out.push(v & 0xff);
      i = j;
    } else if (e === 0x78) {
      const a = body[i + 2], b = body[i + 3];
      if (a === undefined || b === undefined || !isHex(a) || !isHex(b)) throw new Malformed("\\x without two hex digits");
      out.push(parseInt(String.fromCharCode(a, b), 16));
      i += 4;
    } else {
      out.push(c, e);
      i += 2;
    }
  }
  return Uint8Array.from(out);
}

function rawUnicodeEscape(line) {
  let out = "";
  let i = 0;
  while (i < line.length) {
    const c = line[i];
    if (c === 0x5c && i + 1 < line.length && (line[i + 1] === 0x75 || line[i + 1] === 0x55)) {
      let run = 1;
      while (i - run >= 0 && line[i - run] === 0x5c) run++;
      if (run % 2 === 1) {
        const width = line[i + 1] === 0x75 ? 4 : 8;
        const digits = line.subarray(i + 2, i + 2 + width);
        if (digits.length !== width || !digits.every(isHex)) throw new Malformed("a truncated \\u escape");
        const code = parseInt(String.fromCharCode(...digits), 16);
        if (code > 0x10ffff) throw new Malformed("a \\U escape beyond U+10FFFF");
        out += String.fromCodePoint(code);
        i += 2 + width;
        continue;
      }
    }
    out += String.fromCharCode(c);
    i++;
  }
  return out;
}

/** UTF-8 where encoded surrogates (ED A0 80 – ED BF BF) are allowed, as Python's "surrogatepass". */
function utf8SurrogatePass(b) {
  let i = 0;
  while (i < b.length) {
    const c = b[i];
    if (c < 0x80) { i++; continue; }
    let n, min;
    if (c >= 0xc2 && c <= 0xdf) { n = 1; min = 0x80; }
    else if (c >= 0xe0 && c <= 0xef) { n = 2; min = 0x800; }
    else if (c >= 0xf0 && c <= 0xf4) { n = 3; min = 0x10000; }
    else return false;
    let cp = c & (0x3f >> n);
    for (let k = 1; k <= n; k++) {
      const d = b[i + k];
      if (d === undefined || (d & 0xc0) !== 0x80) return false;
      cp = (cp << 6) | (d & 0x3f);
    }
    if (cp < min || cp > 0x10ffff) return false;
    i += n + 1;
  }
  return true;
}

function lineEnd(data, pos) {
  const end = data.indexOf(0x0a, pos);
  if (end < 0) throw new Malformed("a line argument without LF");
  return end + 1;
}

/** Walk up to MAX_PICKLES pickles in a row looking for a string opcode whose argument is "distill_model". */
export function pickleHoldsV1Marker(data) {
  data = data.subarray(0, MAX_PICKLE_SCAN_BYTES);
  try {
    return findMarker(data);
  } catch (e) {
    if (e instanceof Malformed) return false;
    throw e;
  }
}

function findMarker(data) {
  const n = data.length;
  let pos = 0;
  let budget = MAX_PICKLE_OPS;
  for (let p = 0; p < MAX_PICKLES; p++) {
    for (;;) {
      if (pos >= n) throw new Malformed("the data ends inside a pickle");
      if (--budget < 0) return false;
      const kind = OPCODES.get(data[pos]);
      if (kind === undefined) throw new Malformed("unknown opcode");
      pos++;
      let arg = null;
      if (kind === "" || kind === "STOP") {
        // no argument
      } else if (kind === "1" || kind === "2" || kind === "4" || kind === "8") {
        pos += Number(kind);
        if (pos > n) throw new Malformed("a truncated argument");
      } else if (kind === "nl") {
        pos = lineEnd(data, pos);
      } else if (kind === "nl2") {
        pos = lineEnd(data, lineEnd(data, pos));
      } else if (kind === "S*") {
        const end = lineEnd(data, pos);
        const line = data.subarray(pos, end - 1);
        if (line.length < 2 || (line[0] !== 0x27 && line[0] !== 0x22) || line[line.length - 1] !== line[0]) throw new Malformed("STRING quotes");
        arg = stringEscapes(line.subarray(1, line.length - 1));
        pos = end;
      } else if (kind === "V*") {
        const end = lineEnd(data, pos);
        arg = rawUnicodeEscape(data.subarray(pos, end - 1));
        pos = end;
      } else {
        const width = { n1: 1, n4: 4, s4: 4, n8: 8 }[kind.slice(0, 2)];
        if (pos + width > n) throw new Malformed("a truncated length");
        let size;
        if (width === 1) size = data[pos];
        else if (width === 4) size = kind[0] === "s" ? dv(data).getInt32(pos, true) : u32(data, pos);
        else size = Number(u64(data, pos) > big(n) ? big(n) + 1n : u64(data, pos));
        if (size < 0) throw new Malformed("a negative length");
        pos += width;
        if (pos + size > n) throw new Malformed("a truncated argument");
        arg = data.subarray(pos, pos + size);
        pos += size;
        if (kind.includes("u") && !utf8SurrogatePass(arg)) throw new Malformed("not UTF-8");
      }
      if (kind.endsWith("*") && (typeof arg === "string" ? arg === "distill_model" : bytesEqual(arg, MARKER))) return true;
      if (kind === "STOP") break;
    }
    if (pos >= n) return false;
  }
  return false;
}

async function torchZipPickle(src) {
  const size = src.size;
  const tailStart = Math.max(0, size - (0xffff + 22));
  const tail = await peek(src, tailStart, size - tailStart);
  let eocd = -1;
  for (let i = tail.length - 4; i >= 0; i--) {
    if (tail[i] === 0x50 && tail[i + 1] === 0x4b && tail[i + 2] === 5 && tail[i + 3] === 6) { eocd = i; break; }
  }
  if (eocd < 0 || tailStart + eocd + 22 > size) return [false, null];
  eocd += tailStart;
  const rec = await peek(src, eocd + 12, 8);
  if (rec.length < 8) return [false, null];
  let cdSize = u32(rec, 0), cdOff = u32(rec, 4);
  if ((cdSize === U32_MAX || cdOff === U32_MAX) && eocd >= 20) {
    const loc = await peek(src, eocd - 20, 20);
    if (loc.length === 20 && loc[0] === 0x50 && loc[1] === 0x4b && loc[2] === 6 && loc[3] === 7) {
      const r = u64(loc, 8);
      if (r + 56n <= big(size)) {
        const z = await peek(src, Number(r), 56);
        if (z[0] === 0x50 && z[1] === 0x4b && z[2] === 6 && z[3] === 6) {
          cdSize = Number(u64(z, 40) > big(size) ? big(size) + 1n : u64(z, 40));
          cdOff = Number(u64(z, 48) > big(size) ? big(size) + 1n : u64(z, 48));
        }
      }
    }
  }
  if (cdSize > MAX_CD_SCAN_BYTES || cdOff + cdSize > size) return [false, null];
  const cd = await peek(src, cdOff, cdSize);
  let isTorch = false, pkl = null;
  let pos = 0;
  const end = cd.length;
  while (pos + 46 <= end && cd[pos] === 0x50 && cd[pos + 1] === 0x4b && cd[pos + 2] === 1 && cd[pos + 3] === 2) {
    const method = u16(cd, pos + 10);
    let csize = u32(cd, pos + 20);
    const usize = u32(cd, pos + 24);
    const nlen = u16(cd, pos + 28), xlen = u16(cd, pos + 30), klen = u16(cd, pos + 32);
    let lho = u32(cd, pos + 42);
    const name = cd.subarray(pos + 46, pos + 46 + nlen);
    const extra = cd.subarray(pos + 46 + nlen, pos + 46 + nlen + xlen);
    let lhoBig = big(lho), csizeBig = big(csize);
    if (extra.length >= 4 && extra[0] === 1 && extra[1] === 0) {
      const values = [];
      for (let k = 0; k < Math.min(3, Math.floor((extra.length - 4) / 8)); k++) values.push(u64(extra, 4 + 8 * k));
      if (usize === U32_MAX && values.length) values.shift();
      if (csize === U32_MAX && values.length) csizeBig = values.shift();
      if (lho === U32_MAX && values.length) lhoBig = values.shift();
    }
    const text = String.fromCharCode(...name);
    if (TORCH_MEMBER.test(text)) {
      isTorch = true;
      if (/^[^/]+\/data\.pkl$/.test(text) && method === 0 && pkl === null && lhoBig + 30n <= big(size)) {
        lho = Number(lhoBig);
        const lh = await peek(src, lho + 26, 4);
        if (lh.length < 4) return [false, null];
        const start = lho + 30 + u16(lh, 0) + u16(lh, 2);
        const want = csizeBig < big(MAX_PICKLE_SCAN_BYTES) ? Number(csizeBig) : MAX_PICKLE_SCAN_BYTES;
        pkl = await peek(src, start, want);
      }
    }
    pos += 46 + nlen + xlen + klen;
  }
  return [isTorch, pkl];
}

async function checkNotLegacy(src) {
  const head = await peek(src, 0, 16);
  if (head.length >= 2 && head[0] === 0x80 && head[1] >= 2 && head[1] <= 5) {
    if (pickleHoldsV1Marker(await peek(src, 0, MAX_PICKLE_SCAN_BYTES))) throw fail("legacy-distill-v1", V1_MESSAGE);
    const stream = TORCH_LEGACY_MAGIC.every((b, i) => head[i] === b);
    throw fail("pickle", PICKLE_MESSAGE(stream ? "This file is a legacy torch.save stream" : "This file is a pickle"));
  }
  if (head.length >= 4 && head[0] === 0x50 && head[1] === 0x4b && head[2] === 3 && head[3] === 4 &&
      !bytesEqual(await peek(src, 30, 16), ascii(MANIFEST))) {
    let isTorch = false, pkl = null;
    [isTorch, pkl] = await torchZipPickle(src);
    if (isTorch) {
      if (pkl !== null && pickleHoldsV1Marker(pkl)) throw fail("legacy-distill-v1", V1_MESSAGE);
      throw fail("pickle", PICKLE_MESSAGE("This file is a torch.save checkpoint (a zip holding a pickle)"));
    }
  }
}

// --- §3 the container ---------------------------------------------------------------------------

const MEMBER_NAME = /^[a-z0-9._-]{1,64}$/;

function zip64Extra(data, want, where) {
  if (data.length < 4) throw fail("zip-extra-field", `${where}: extra field of ${data.length} bytes is too short`);
  const id = u16(data, 0), len = u16(data, 2);
  if (id !== 1 || len !== 8 * want.length || data.length < 4 + len) {
    throw fail("zip64", `${where}: expected a zip64 extra field (0x0001) holding ${want.join(", ")}; found id 0x${hex(id, 4)} of ${len} bytes (FORMAT.md §3.3)`);
  }
  const out = {};
  want.forEach((k, i) => { out[k] = u64(data, 4 + 8 * i); });
  return out;
}

async function readContainer(src) {
  const size = src.size;
  const head = await peek(src, 0, 4);
  if (!(head.length === 4 && head[0] === 0x50 && head[1] === 0x4b && head[2] === 3 && head[3] === 4)) {
    if (size >= 10) {
      const h = await src.read(0, 9);
      if (h[8] === 0x7b && u64(h, 0) + 8n <= big(size)) {
        throw fail("safetensors-file", `${src.name} is a plain safetensors file, not a .distillgan archive; make a model of it with \`distillgan convert FILE\` (FORMAT.md §7)`);
      }
    }
    throw fail("not-zip", `first bytes are ${Array.from(head, (b) => hex(b, 2)).join(" ") || "none"}; expected a local file header 'PK\\x03\\x04' at offset 0 (FORMAT.md §3.1)`);
  }
  if (size < MIN_ARCHIVE_BYTES) throw fail("truncated", `file is ${size} bytes; a valid archive has at least ${MIN_ARCHIVE_BYTES}`);
  const eocdPos = size - 22;
  const e = await src.read(eocdPos, 22);
  if (!(e[0] === 0x50 && e[1] === 0x4b && e[2] === 5 && e[3] === 6)) {
    throw fail("zip-eocd", "no end of central directory record in the last 22 bytes: the file is truncated, has trailing bytes, or has an archive comment (FORMAT.md §3.5)");
  }
  const disk = u16(e, 4), cdDisk = u16(e, 6), nDisk = u16(e, 8);
  let nTotal = u16(e, 10), cdSize = u32(e, 12), cdOff = u32(e, 16);
  const commentLen = u16(e, 20);
  if (commentLen !== 0) throw fail("zip-comment", `archive comment of ${commentLen} bytes; comments are not allowed (FORMAT.md §3.5)`);
  if (disk !== 0 || cdDisk !== 0) throw fail("zip-eocd", `end record names disk ${disk}/${cdDisk}; expected 0/0 (FORMAT.md §3.5)`);
  if (nDisk !== nTotal) throw fail("zip-eocd", `end record counts ${nDisk} entries on this disk but ${nTotal} in total`);
  let cdEnd = eocdPos;
  if (cdSize === U32_MAX || cdOff === U32_MAX || nTotal === U16_MAX) {
    if (eocdPos < 76) throw fail("zip64", "end record asks for zip64 but there is no room for its records");
    const locPos = eocdPos - 20;
    const loc = await src.read(locPos, 20);
    const recPos = locPos - 56;
    if (!(loc[0] === 0x50 && loc[1] === 0x4b && loc[2] === 6 && loc[3] === 7) || u32(loc, 4) !== 0 || u32(loc, 16) !== 1) {
      throw fail("zip64", "zip64 end of central directory locator missing or malformed (FORMAT.md §3.5)");
    }
    if (u64(loc, 8) !== big(recPos)) throw fail("zip64", `zip64 locator points at offset ${u64(loc, 8)}; the zip64 end record must immediately precede it at ${recPos}`);
    const r = await src.read(recPos, 56);
    if (!(r[0] === 0x50 && r[1] === 0x4b && r[2] === 6 && r[3] === 6) || u64(r, 4) !== 44n || u32(r, 16) !== 0 || u32(r, 20) !== 0) {
      throw fail("zip64", "zip64 end of central directory record malformed (FORMAT.md §3.5)");
    }
    const rnDisk = u64(r, 24), rnTotal = u64(r, 32), rcdSize = u64(r, 40), rcdOff = u64(r, 48);
    if (rnDisk !== rnTotal) throw fail("zip64", "zip64 end record entry counts disagree");
    for (const [label, short, wide, limit] of [["entry count", nTotal, rnTotal, U16_MAX], ["directory size", cdSize, rcdSize, U32_MAX], ["directory offset", cdOff, rcdOff, U32_MAX]]) {
      const want = wide < big(limit) ? wide : big(limit);
      if (big(short) !== want) throw fail("zip64", `end record ${label} is ${short}; with the zip64 value ${wide} it must be ${want}`);
    }
    if (rnTotal > 1000n || rcdSize > big(size) || rcdOff > big(size)) {
      // values this large fail the checks below; keep them exact as BigInt comparisons there
      nTotal = rnTotal > 1000n ? 1001 : Number(rnTotal);
      cdSize = rcdSize > big(size) ? size + 1 : Number(rcdSize);
      cdOff = rcdOff > big(size) ? size + 1 : Number(rcdOff);
    } else {
      nTotal = Number(rnTotal); cdSize = Number(rcdSize); cdOff = Number(rcdOff);
    }
    cdEnd = recPos;
  }
  if (!(nTotal >= 2 && nTotal <= MAX_MEMBERS)) throw fail("zip-entry-count", `archive has ${nTotal} entries; expected 2 or 3 (FORMAT.md §3.1)`);
  if (cdOff + cdSize !== cdEnd || cdOff > cdEnd) throw fail("zip-layout", `central directory at ${cdOff} of ${cdSize} bytes does not end where the end records start (${cdEnd})`);
  if (cdSize > MAX_CENTRAL_DIRECTORY_BYTES) throw fail("zip-layout", `central directory of ${cdSize} bytes; the limit is ${MAX_CENTRAL_DIRECTORY_BYTES} (FORMAT.md §8)`);

  const cd = await src.read(cdOff, cdSize);
  const entries = [];
  let pos = 0;
  for (let index = 0; index < nTotal; index++) {
    if (pos + 46 > cdSize) throw fail("zip-layout", `central directory entry ${index} runs past the directory`);
    if (!(cd[pos] === 0x50 && cd[pos + 1] === 0x4b && cd[pos + 2] === 1 && cd[pos + 3] === 2)) throw fail("zip-layout", `central directory entry ${index} has a bad signature; expected 'PK\\x01\\x02'`);
    const madeBy = u16(cd, pos + 4), need = u16(cd, pos + 6), flags = u16(cd, pos + 8), method = u16(cd, pos + 10);
    const mtime = u16(cd, pos + 12), mdate = u16(cd, pos + 14), crc = u32(cd, pos + 16);
    let csize = big(u32(cd, pos + 20)), usize = big(u32(cd, pos + 24));
    const nlen = u16(cd, pos + 28), xlen = u16(cd, pos + 30), klen = u16(cd, pos + 32);
    const diskStart = u16(cd, pos + 34), iattr = u16(cd, pos + 36), xattr = u32(cd, pos + 38);
    let lho = big(u32(cd, pos + 42));
    const varEnd = pos + 46 + nlen + xlen + klen;
    if (varEnd > cdSize) throw fail("zip-layout", `central directory entry ${index} runs past the directory`);
    const rawName = cd.subarray(pos + 46, pos + 46 + nlen);
    const extra = cd.subarray(pos + 46 + nlen, pos + 46 + nlen + xlen);
    const nameText = String.fromCharCode(...rawName);
    if (index === 0 && nameText !== MANIFEST) throw fail("zip-member-name", `member 0 is named ${JSON.stringify(nameText)}; expected ${JSON.stringify(MANIFEST)} (FORMAT.md §3.1)`);
    if (!MEMBER_NAME.test(nameText) || nameText === "." || nameText === ".." || entries.some((x) => x.name === nameText)) {
      throw fail("zip-member-name", `member ${index} is named ${JSON.stringify(nameText)}; names are distinct, of [a-z0-9._-] and not '.' or '..' (FORMAT.md §3.1)`);
    }
    const where = `central directory entry ${JSON.stringify(nameText)}`;
    if (klen !== 0) throw fail("zip-comment", `${where}: file comment of ${klen} bytes; not allowed`);
    if (diskStart !== 0 || iattr !== 0) throw fail("zip-attributes", `${where}: disk ${diskStart}, internal attributes ${iattr}; expected 0 and 0`);
    if (madeBy >> 8 !== 3 || xattr !== EXTERNAL_ATTR) throw fail("zip-attributes", `${where}: version made by 0x${hex(madeBy, 4)}, external attributes 0x${hex(xattr, 8)}; expected host 3 (Unix) and 0x81a40000 (FORMAT.md §3.2)`);
    if (flags & ~0x0800) throw fail("zip-flags", `${where}: general purpose flags 0x${hex(flags, 4)}; only bit 11 may be set (FORMAT.md §3.2)`);
    if (method !== 0) throw fail("zip-method", `${where}: compression method ${method}; expected 0 (STORED) (FORMAT.md §3.2)`);
    const want = [["usize", usize], ["csize", csize], ["offset", lho]].filter(([, v]) => v === big(U32_MAX)).map(([k]) => k);
    const z = want.length ? zip64Extra(extra, want, where) : {};
    if (!want.length && xlen !== 0) throw fail("zip-extra-field", `${where}: unexpected extra field of ${xlen} bytes (FORMAT.md §3.3)`);
    if (want.length && 4 + 8 * want.length !== xlen) throw fail("zip-extra-field", `${where}: extra field holds more than the zip64 record`);
    if ("usize" in z) usize = z.usize;
    if ("csize" in z) csize = z.csize;
    if ("offset" in z) lho = z.offset;
    if (("usize" in z) !== ("csize" in z)) throw fail("zip64", `${where}: zip64 must carry both sizes`);
    for (const key of ["usize", "offset"]) {
      if (key in z && z[key] < big(U32_MAX)) throw fail("zip64", `${where}: zip64 ${key} ${z[key]} fits in 32 bits; zip64 only when needed (FORMAT.md §3.3)`);
    }
    if (csize !== usize) throw fail("zip-method", `${where}: compressed size ${csize} differs from size ${usize} for a STORED member`);
    const uses64 = Object.keys(z).length > 0 || usize >= big(U32_MAX);
    if (need !== (uses64 ? 45 : 20)) throw fail("zip-version", `${where}: version needed ${need}; expected ${uses64 ? 45 : 20}`);
    entries.push({ name: nameText, need, flags, mtime, mdate, crc, usize, lho });
    pos = varEnd;
  }
  if (pos !== cdSize) throw fail("zip-layout", `central directory has ${cdSize - pos} bytes after its last entry`);

  const members = [];
  let expectOff = 0n;
  const cdOffB = big(cdOff);
  for (let index = 0; index < entries.length; index++) {
    const { name, need, flags, mtime, mdate, crc, usize, lho } = entries[index];
    const where = `local header of ${JSON.stringify(name)}`;
    if (lho !== expectOff) throw fail("zip-layout", `${where} is at offset ${lho}; expected ${expectOff} (members are contiguous from offset 0, FORMAT.md §3.1)`);
    if (lho + 30n > cdOffB) throw fail("zip-layout", `${where} runs into the central directory`);
    const at = Number(lho);
    const l = await src.read(at, 30);
    if (!(l[0] === 0x50 && l[1] === 0x4b && l[2] === 3 && l[3] === 4)) throw fail("zip-layout", `${where}: bad signature; expected 'PK\\x03\\x04'`);
    const lnlen = u16(l, 26), lxlen = u16(l, 28);
    const dataOffset = at + 30 + lnlen + lxlen;
    if (dataOffset > cdOff) throw fail("zip-layout", `${where} runs into the central directory`);
    const variable = await src.read(at + 30, lnlen + lxlen);
    if (!bytesEqual(variable.subarray(0, lnlen), ascii(name))) throw fail("zip-header-mismatch", `local header name differs from central directory name ${JSON.stringify(name)}`);
    const mism = [["version needed", u16(l, 4), need], ["flags", u16(l, 6), flags], ["method", u16(l, 8), 0], ["time", u16(l, 10), mtime], ["date", u16(l, 12), mdate], ["crc-32", u32(l, 14), crc]]
      .filter(([, a, b]) => a !== b).map(([k]) => k);
    if (mism.length) throw fail("zip-header-mismatch", `${where} differs from the central directory in ${mism.join(", ")}`);
    let rest = variable.subarray(lnlen);
    const lcsize = u32(l, 18), lusize = u32(l, 22);
    if (usize >= big(U32_MAX)) {
      if (lcsize !== U32_MAX || lusize !== U32_MAX) throw fail("zip64", `${where}: sizes must be 0xFFFFFFFF with a zip64 extra field`);
      const z = zip64Extra(rest.subarray(0, 20), ["usize", "csize"], where);
      if (z.usize !== usize || z.csize !== usize) throw fail("zip-header-mismatch", `${where}: zip64 sizes differ from the central directory`);
      rest = rest.subarray(20);
    } else if (big(lcsize) !== usize || big(lusize) !== usize) {
      throw fail("zip-header-mismatch", `${where}: sizes ${lcsize}/${lusize} differ from the central directory's ${usize}`);
    }
    if (index === 0) {
      if (lxlen !== 0) throw fail("zip-extra-field", `${where}: the manifest's local header has an extra field; none is allowed (FORMAT.md §3.4)`);
    } else {
      const pad = ((-(dataOffset - rest.length + 4)) % ALIGNMENT + ALIGNMENT) % ALIGNMENT;
      if (rest.length < 4 || u16(rest, 0) !== PAD_ID || u16(rest, 2) !== rest.length - 4 || rest.length - 4 !== pad || rest.subarray(4).some((b) => b !== 0)) {
        throw fail("zip-alignment", `${where}: expected a padding extra field 0x6764 of ${pad} zero bytes so that data starts at a multiple of ${ALIGNMENT} (FORMAT.md §3.4)`);
      }
    }
    const dataEnd = big(dataOffset) + usize;
    if (dataEnd > cdOffB) throw fail("zip-layout", `member ${JSON.stringify(name)} of ${usize} bytes runs past the start of the central directory`);
    members.push({ name, headerOffset: at, dataOffset, size: Number(usize), crc32: crc });
    expectOff = dataEnd;
  }
  if (expectOff !== cdOffB) throw fail("zip-layout", `${cdOffB - expectOff} bytes between the last member and the central directory`);
  return members;
}

// --- §4.2 msgpack, in byte order -------------------------------------------------------------------

function mpDefect(code, pos, what) {
  return fail(code, `${what} at byte ${pos} (FORMAT.md §4.2)`);
}

/** Decode one msgpack item under the rules B1–B8 of FORMAT.md §4.2: the first defect in byte order decides. */
export function decodeMsgpack(data) {
  const n = data.length;
  const view = dv(data);
  let pos = 0;
  // stack of open containers: {kind, left (items), value, key, isKeyNext, seen}
  const stack = [];
  let result;
  let done = false;
  const push = (value) => {
    if (!stack.length) { result = value; done = true; return; }
    const top = stack[stack.length - 1];
    if (top.kind === "array") top.value.push(value);
    else if (top.expectKey) { top.key = value; top.expectKey = false; return; }
    else { top.value.set(top.key, value); top.expectKey = true; }
  };
  for (;;) {
    // close finished containers
    while (stack.length && stack[stack.length - 1].left === 0) {
      const top = stack.pop();
      push(top.value);
      if (done) break;
    }
    if (done) break;
    let isKey = false;
    if (stack.length) {
      const top = stack[stack.length - 1];
      isKey = top.kind === "map" && top.expectKey;
      top.left--;
    }
    if (stack.length > MAX_DEPTH) throw mpDefect("manifest-depth", pos, `a value nested deeper than ${MAX_DEPTH} levels (the manifest map is level 0; FORMAT.md §8)`);
    if (pos >= n) throw mpDefect("manifest-msgpack", pos, "the manifest ends inside a msgpack value (truncated)");
    const b = data[pos];
    let kind, field = 0, fixed = 0;
    if (b <= 0x7f || b >= 0xe0) kind = "int";
    else if (b <= 0x8f) { kind = "map"; fixed = b & 0x0f; }
    else if (b <= 0x9f) { kind = "array"; fixed = b & 0x0f; }
    else if (b <= 0xbf) { kind = "str"; fixed = b & 0x1f; }
    else {
      [kind, field, fixed] = {
        0xc0: ["nil", 0, 0], 0xc1: ["never", 0, 0], 0xc2: ["bool", 0, 0], 0xc3: ["bool", 0, 0],
        0xc4: ["bin", 1, -1], 0xc5: ["bin", 2, -1], 0xc6: ["bin", 4, -1], 0xc7: ["ext", 1, -1], 0xc8: ["ext", 2, -1], 0xc9: ["ext", 4, -1],
        0xca: ["float", 4, 0], 0xcb: ["float", 8, 0], 0xcc: ["int", 1, 0], 0xcd: ["int", 2, 0], 0xce: ["int", 4, 0], 0xcf: ["int", 8, 0],
        0xd0: ["int", 1, 0], 0xd1: ["int", 2, 0], 0xd2: ["int", 4, 0], 0xd3: ["int", 8, 0],
        0xd4: ["ext", 1, 1], 0xd5: ["ext", 1, 2], 0xd6: ["ext", 1, 4], 0xd7: ["ext", 1, 8], 0xd8: ["ext", 1, 16],
        0xd9: ["str", 1, -1], 0xda: ["str", 2, -1], 0xdb: ["str", 4, -1], 0xdc: ["array", 2, -1], 0xdd: ["array", 4, -1],
        0xde: ["map", 2, -1], 0xdf: ["map", 4, -1],
      }[b];
    }
    if (kind === "never") throw mpDefect("manifest-msgpack", pos, "byte 0xC1, which msgpack never uses");
    if (kind === "ext") throw mpDefect("manifest-ext-type", pos, "a msgpack ext type");
    if (isKey && kind !== "str" && kind !== "int") throw mpDefect("manifest-type", pos, `a map key of msgpack type ${kind}; keys must be str or int`);
    if (pos + 1 + field > n) throw mpDefect("manifest-msgpack", pos, "the manifest ends inside a msgpack value (truncated)");
    let len = 0;
    if (field === 1) len = data[pos + 1];
    else if (field === 2) len = view.getUint16(pos + 1);
    else if (field === 4) len = view.getUint32(pos + 1);
    let start = pos + 1 + field;
    let size = 0, count = 0;
    if (kind === "array" || kind === "map") count = fixed >= 0 && field === 0 ? fixed : len;
    else if (kind === "str" || kind === "bin") size = fixed < 0 ? len : fixed;
    else if (kind === "int" || kind === "float") { size = field; start = pos + 1; }
    if (start + size > n) throw mpDefect("manifest-msgpack", pos, "a length that runs past the end of the manifest (truncated)");
    let value;
    if (kind === "str") {
      value = utf8(data.subarray(start, start + size));
      if (value === null) throw mpDefect("manifest-msgpack", pos, "a str that is not valid UTF-8");
    } else if (kind === "bin") {
      value = data.slice(start, start + size);
    } else if (kind === "int") {
      if (field === 0) value = big(b <= 0x7f ? b : b - 0x100);
      else if (b === 0xcc) value = big(data[pos + 1]);
      else if (b === 0xcd) value = big(view.getUint16(pos + 1));
      else if (b === 0xce) value = big(view.getUint32(pos + 1));
      else if (b === 0xcf) value = view.getBigUint64(pos + 1);
      else if (b === 0xd0) value = big(view.getInt8(pos + 1));
      else if (b === 0xd1) value = big(view.getInt16(pos + 1));
      else if (b === 0xd2) value = big(view.getInt32(pos + 1));
      else value = view.getBigInt64(pos + 1);
    } else if (kind === "float") {
      value = b === 0xca ? float32(view.getUint32(pos + 1)) : float64(view.getUint32(pos + 1), view.getUint32(pos + 5));
    } else if (kind === "nil") value = null;
    else if (kind === "bool") value = b === 0xc3;
    if (isKey) {
      const top = stack[stack.length - 1];
      if (top.value.has(value)) throw mpDefect("manifest-duplicate-key", pos, `duplicate map key ${show(value)} (msgpack decoders keep the last)`);
    }
    pos = start + size;
    if (kind === "array" || kind === "map") {
      const container = kind === "map" ? { kind, left: count * 2, value: new Map(), expectKey: true } : { kind, left: count, value: [] };
      if (count === 0) push(container.value);
      else stack.push(container);
      if (done) break;
      continue;
    }
    push(value);
    if (done) break;
  }
  if (pos !== n) throw mpDefect("manifest-msgpack", pos, `${n - pos} bytes after the manifest's msgpack value`);
  return result;
}

function float64(hi, lo) {
  const buf = new DataView(new ArrayBuffer(8));
  buf.setUint32(0, hi);
  buf.setUint32(4, lo);
  const v = buf.getFloat64(0);
  return Number.isNaN(v) ? new NaNValue(hex(hi >>> 0, 8) + hex(lo >>> 0, 8)) : v;
}

/** A float32 widened as IEEE 754 converts binary32 to binary64: exact, a NaN quieted with its payload kept (FORMAT.md §4.6). */
function float32(bits) {
  const exp = (bits >>> 23) & 0xff, mant = bits & 0x7fffff;
  if (exp === 0xff && mant !== 0) {
    const hi = ((bits & 0x80000000) | 0x7ff00000 | 0x80000 | (mant >>> 3)) >>> 0;
    return new NaNValue(hex(hi, 8) + hex(((mant & 7) << 29) >>> 0, 8));
  }
  const buf = new DataView(new ArrayBuffer(4));
  buf.setUint32(0, bits);
  return buf.getFloat32(0);
}

// --- §4.3–§4.4 schema and value trees ----------------------------------------------------------------

function manifestError(code, message) {
  return fail(code, message);
}

function renderPath(path) {
  let out = "$";
  for (const seg of path) {
    if (isStr(seg)) out += /^[A-Za-z_][A-Za-z0-9_]*$/.test(seg) ? `.${seg}` : `[${JSON.stringify(seg)}]`;
    else out += `[${seg}]`;
  }
  return out;
}

function checkKeys(obj, where, required) {
  for (const k of obj.keys()) if (!isStr(k)) throw manifestError("manifest-type", `${where}: key ${show(k)} is an int; keys here must be str (FORMAT.md §4.3)`);
  for (const k of required) if (!obj.has(k)) throw manifestError("manifest-missing-key", `${where}: missing key ${JSON.stringify(k)} (FORMAT.md §4.3)`);
  for (const k of obj.keys()) if (!required.includes(k)) throw manifestError("manifest-unknown-key", `${where}: unknown key ${JSON.stringify(k)}; a v1 reader refuses keys outside the schema (FORMAT.md §4.5)`);
}

function checkField(value, kind, nullable, where) {
  if (value === null && nullable) return;
  let ok;
  if (kind === "str") ok = isStr(value);
  else if (kind === "uint") ok = isInt(value) && value >= 0n;
  else if (kind === "float") {
    if (typeof value === "number" && !Number.isFinite(value)) throw manifestError("manifest-value", `${where}: not a finite number (FORMAT.md §4.3)`);
    if (value instanceof NaNValue) throw manifestError("manifest-value", `${where}: NaN is not a finite number (FORMAT.md §4.3)`);
    ok = isInt(value) || typeof value === "number";
  } else if (kind === "loss") ok = isInt(value) || isFloat(value);
  else if (kind === "bool") ok = typeof value === "boolean";
  else if (kind === "strlist") ok = isList(value) && value.every(isStr);
  else if (kind === "map") ok = isMap(value);
  if (!ok) throw manifestError("manifest-type", `expected ${kind}${nullable ? " or nil" : ""}, got ${kindOf(value)} at ${where} (FORMAT.md §4.3)`);
}

/** A placeholder, decoded: restore tensor `name` of `member` as a `kind` object. */
export class Ref {
  constructor(kind, member, name, requiresGrad) {
    this.kind = kind;
    this.member = member;
    this.name = name;
    this.requiresGrad = requiresGrad;
  }
}

/** A tuple of a value tree (the "tuple" tag). */
export class Tuple {
  constructor(items) {
    this.items = items;
  }
}

function tagError(path, message, code = "manifest-tag") {
  return fail(code, `${renderPath(path)}: ${message} (FORMAT.md §4.4)`);
}

class ValueDecoder {
  constructor() {
    this.refs = [];
  }
  decode(raw, path, member) {
    if (isList(raw)) return raw.map((x, i) => this.decode(x, [...path, i], member));
    if (!isMap(raw)) return raw;
    if (raw.has("$")) return this.tagged(raw, path, member);
    const out = new Map();
    for (const [k, x] of raw) out.set(k, this.decode(x, [...path, k], member));
    return out;
  }
  tagged(raw, path, member) {
    const tag = raw.get("$");
    if (!isStr(tag) || !Object.hasOwn(TAGS, tag)) throw tagError(path, `tag ${show(tag)} is not one of ${Object.keys(TAGS).join(", ")}`);
    const [required, optional] = TAGS[tag];
    const allowed = new Set(["$", ...required, ...optional]);
    for (const k of required) if (!raw.has(k)) throw tagError(path, `a ${JSON.stringify(tag)} tagged map has no ${JSON.stringify(k)}`);
    for (const k of raw.keys()) if (!allowed.has(k)) throw tagError(path, `a ${JSON.stringify(tag)} tagged map has the key ${show(k)}`);
    if (tag === "tuple" || tag === "map") {
      const items = raw.get("items");
      if (!isList(items)) throw tagError(path, `'items' of a ${JSON.stringify(tag)} tagged map must be an array`);
      if (tag === "tuple") return new Tuple(items.map((x, i) => this.decode(x, [...path, i], member)));
      const out = new Map();
      for (const pair of items) {
        if (!isList(pair) || pair.length !== 2 || !(isStr(pair[0]) || isInt(pair[0]))) throw tagError(path, "each item of a 'map' tagged map must be a [key, value] array with a str or int key");
        const [k, x] = pair;
        if (out.has(k)) throw tagError(path, `duplicate key ${show(k)} in a 'map' tagged map`, "manifest-duplicate-key");
        out.set(k, this.decode(x, [...path, k], member));
      }
      return out;
    }
    if (tag === "tensors") {
      const prefix = raw.get("prefix"), keys = raw.get("keys");
      if (!isStr(prefix) || !isList(keys) || !keys.every(isStr)) throw tagError(path, "a 'tensors' tagged map needs a str 'prefix' and an array of str 'keys'");
      const out = new Map();
      for (const k of keys) {
        if (out.has(k)) throw tagError(path, `duplicate key ${JSON.stringify(k)} in a 'tensors' tagged map`, "manifest-duplicate-key");
        const ref = new Ref("tensor", member, prefix + k, false);
        out.set(k, ref);
        this.refs.push([ref, [...path, k]]);
      }
      return out;
    }
    const name = raw.get("name");
    if (!isStr(name)) throw tagError(path, `'name' of a ${JSON.stringify(tag)} placeholder must be a str`);
    const grad = raw.has("requires_grad") ? raw.get("requires_grad") : false;
    if (typeof grad !== "boolean") throw tagError(path, `'requires_grad' of a ${JSON.stringify(tag)} placeholder must be a bool`);
    const ref = new Ref(tag, member, name, grad);
    this.refs.push([ref, path]);
    return ref;
  }
}

function validateManifest(m) {
  if (!m.has("format")) throw manifestError("manifest-format", "manifest has no 'format' key (FORMAT.md §4.1)");
  const fmt = m.get("format");
  if (fmt !== "distillgan_model") throw manifestError("manifest-format", `format is ${show(fmt)}; expected "distillgan_model" (FORMAT.md §4.1)`);
  const version = m.has("version") ? m.get("version") : null;
  if (!isInt(version)) throw manifestError("manifest-version", `expected int, got ${kindOf(version)} at $.version (FORMAT.md §4.1)`);
  if (version > 1n) throw fail("version-newer", `Model version ${version} is newer than supported version 1. Update the software.`);
  if (version < 1n) throw manifestError("manifest-version", `version ${version} is not a valid format version (FORMAT.md §4.1)`);
  const keys = [...m.keys()];
  if (keys[0] !== "format" || keys[1] !== "version") throw manifestError("manifest-format", "'format' and 'version' must be the first two keys (FORMAT.md §4.1)");
  checkKeys(m, "$", TOP_KEYS);
  checkField(m.get("latent_dim"), "uint", true, "$.latent_dim");
  const meta = m.get("metadata");
  checkField(meta, "map", false, "$.metadata");
  checkKeys(meta, "$.metadata", METADATA_SCHEMA.map(([k]) => k));
  for (const [name, kind, nullable] of METADATA_SCHEMA) checkField(meta.get(name), kind, nullable, `$.metadata.${name}`);
  const members = m.get("members");
  checkField(members, "map", false, "$.members");
  for (const [name, info] of members) {
    if (!isStr(name)) throw manifestError("manifest-type", `$.members: key ${show(name)} is an int; keys here must be str (FORMAT.md §4.3)`);
    const where = `$.members.${name}`;
    checkField(info, "map", false, where);
    checkKeys(info, where, MEMBER_KEYS);
    checkField(info.get("size"), "uint", false, `${where}.size`);
    checkField(info.get("aliases"), "map", false, `${where}.aliases`);
    for (const [alias, target] of info.get("aliases")) {
      if (!isStr(alias)) throw manifestError("manifest-type", `${where}.aliases: expected str keys, got ${kindOf(alias)}`);
      if (!isStr(target)) throw manifestError("manifest-type", `${where}.aliases.${alias}: expected str, got ${kindOf(target)}`);
    }
  }
  const decoder = new ValueDecoder();
  const values = {};
  for (const slot of VALUE_SLOTS) values[slot] = decoder.decode(m.get(slot), [slot], slot === "vocoder_state" ? "vocoder.safetensors" : "model.safetensors");
  for (const slot of ["spectrogram_config", "training_config", "state_dict"]) {
    if (!isMap(values[slot])) throw manifestError("manifest-type", `expected map, got ${kindOf(m.get(slot))} at $.${slot} (FORMAT.md §4.3)`);
  }
  for (const slot of ["analysis", "vocoder_state"]) {
    if (values[slot] !== null && !isMap(values[slot])) throw manifestError("manifest-type", `expected map or nil, got ${kindOf(m.get(slot))} at $.${slot} (FORMAT.md §4.3)`);
  }
  const expected = m.get("vocoder_state") !== null ? ["model.safetensors", "vocoder.safetensors"] : ["model.safetensors"];
  const declared = [...members.keys()].sort();
  if (declared.join("\0") !== expected.join("\0")) {
    throw manifestError("manifest-mismatch", `$.members lists ${JSON.stringify(declared)}; expected ${JSON.stringify(expected)} (the vocoder member is present exactly when vocoder_state is not nil) (FORMAT.md §4.3)`);
  }
  return { values, refs: decoder.refs };
}

function checkV1Members(m, members) {
  const names = members.map((x) => x.name);
  if (names.length > 3) throw fail("zip-entry-count", `archive has ${names.length} members; v1 has 2 or 3 (FORMAT.md §3.1)`);
  if (names.some((x, i) => x !== MEMBER_ORDER[i])) throw fail("zip-member-name", `members are ${JSON.stringify(names)}; expected ${JSON.stringify(MEMBER_ORDER.slice(0, names.length))} in that order (FORMAT.md §3.1)`);
  const declared = [...m.get("members").keys()].sort();
  if (names.slice(1).sort().join("\0") !== declared.join("\0")) throw fail("manifest-mismatch", `the archive holds ${JSON.stringify(names.slice(1))} but the manifest declares ${JSON.stringify(declared)} (FORMAT.md §6)`);
}

// --- §5 safetensors headers: a strict JSON reader ----------------------------------------------------

class JsonNumber {
  constructor(text) {
    this.text = text;
  }
}

class JsonSyntax extends Error {}

const NUMBER = /-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/y;

/** Parse RFC 8259 JSON text with the §5.1 H6 limits; objects as arrays of [key, value] (duplicates kept). */
function parseJson(text) {
  let i = 0;
  const n = text.length;
  const ws = () => { while (i < n) { const c = text.charCodeAt(i); if (c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d) i++; else break; } };
  const err = (what) => new JsonSyntax(`${what} at character ${i}`);
  const value = (depth) => {
    ws();
    if (i >= n) throw err("unexpected end");
    const c = text[i];
    if (c === "{" || c === "[") {
      if (depth + 1 > MAX_HEADER_DEPTH) throw err(`nested deeper than ${MAX_HEADER_DEPTH} levels (FORMAT.md §8)`);
      i++;
      const close = c === "{" ? "}" : "]";
      const out = c === "{" ? { object: [] } : { array: [] };
      ws();
      if (text[i] === close) { i++; return out; }
      for (;;) {
        if (c === "{") {
          ws();
          if (text[i] !== '"') throw err("expected a string key");
          const k = string();
          ws();
          if (text[i] !== ":") throw err("expected ':'");
          i++;
          out.object.push([k, value(depth + 1)]);
        } else out.array.push(value(depth + 1));
        ws();
        if (text[i] === ",") { i++; continue; }
        if (text[i] === close) { i++; return out; }
        throw err("expected ',' or a closing bracket");
      }
    }
    if (c === '"') return string();
    if (text.startsWith("true", i)) { i += 4; return true; }
    if (text.startsWith("false", i)) { i += 5; return false; }
    if (text.startsWith("null", i)) { i += 4; return null; }
    NUMBER.lastIndex = i;
    const m = NUMBER.exec(text);
    if (!m) throw err("not a JSON value");
    i += m[0].length;
    return new JsonNumber(m[0]);
  };
  const string = () => {
    i++;
    let out = "";
    let run = i;
    for (;;) {
      if (i >= n) throw err("unterminated string");
      const c = text.charCodeAt(i);
      if (c === 0x22) { out += text.slice(run, i); i++; break; }
      if (c < 0x20) throw err("a control character in a string");
      if (c === 0x5c) {
        out += text.slice(run, i);
        const e = text[i + 1];
        const simple = { '"': '"', "\\": "\\", "/": "/", b: "\b", f: "\f", n: "\n", r: "\r", t: "\t" }[e];
        if (simple !== undefined) { out += simple; i += 2; }
        else if (e === "u") {
          const h = text.slice(i + 2, i + 6);
          if (!/^[0-9a-fA-F]{4}$/.test(h)) throw err("a bad \\u escape");
          out += String.fromCharCode(parseInt(h, 16));
          i += 6;
        } else throw err("a bad escape");
        run = i;
        continue;
      }
      i++;
    }
    if (!wellFormed(out)) throw err("a lone surrogate escape");
    return out;
  };
  const v = value(0);
  ws();
  if (i !== n) throw err("bytes after the JSON value");
  return v;
}

function wellFormed(s) {
  if (typeof s.isWellFormed === "function") return s.isWellFormed();
  return !/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(s);
}

function hasDuplicate(v) {
  if (v && v.object) {
    const seen = new Set();
    for (const [k, x] of v.object) {
      if (seen.has(k)) return k;
      seen.add(k);
    }
    for (const [, x] of v.object) { const d = hasDuplicate(x); if (d !== undefined) return d; }
  } else if (v && v.array) {
    for (const x of v.array) { const d = hasDuplicate(x); if (d !== undefined) return d; }
  }
  return undefined;
}

const uintToken = (v, max) => v instanceof JsonNumber && /^(0|[1-9][0-9]*)$/.test(v.text) && (v.text.length <= 21 ? BigInt(v.text) <= max : false);
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;

function checkName(name, where, code = "st-name") {
  const bytes = ENCODER.encode(name).length;
  if (bytes < 1 || bytes > MAX_NAME_BYTES) throw fail(code, `${where}: tensor name of ${bytes} bytes; expected 1..${MAX_NAME_BYTES} (FORMAT.md §5.4)`);
  if (CONTROL.test(name)) throw fail(code, `${where}: tensor name ${JSON.stringify(name)} contains control characters (FORMAT.md §5.4)`);
  if (name === "__metadata__") throw fail(code, `${where}: "__metadata__" is reserved by safetensors`);
}

/** Rules H1–H12 of FORMAT.md §5.1 for the member of `size` bytes at `offset`. */
async function parseHeader(src, offset, size, where) {
  if (size < 8) throw fail("st-header-size", `${where}: member of ${size} bytes cannot hold a safetensors header (FORMAT.md §5.1)`);
  const n = u64(await src.read(offset, 8), 0);
  if (n > big(MAX_HEADER_BYTES)) throw fail("st-header-size", `${where}: header length ${n}; the limit is ${MAX_HEADER_BYTES} (FORMAT.md §8)`);
  if (8n + n > big(size)) throw fail("st-header-size", `${where}: header length ${n} runs past the member's ${size} bytes (FORMAT.md §5.1)`);
  const raw = await src.read(offset + 8, Number(n));
  const dataSize = big(size) - 8n - n;
  const bad = (why) => fail("st-header-json", `${where}: header is not valid JSON: ${why} (FORMAT.md §5.1)`);
  if (raw[0] !== 0x7b) throw bad("it does not start with '{'");
  const text = utf8(raw);
  if (text === null) throw bad("not UTF-8");
  let header;
  try {
    header = parseJson(text);
  } catch (e) {
    if (e instanceof JsonSyntax) throw bad(e.message);
    throw e;
  }
  const dup = hasDuplicate(header);
  if (dup !== undefined) throw fail("st-duplicate-key", `${where}: duplicate key ${JSON.stringify(dup)} in the header (FORMAT.md §5.1)`);
  let metadata = null;
  const entries = [];
  for (const [k, v] of header.object) {
    if (k === "__metadata__") metadata = v;
    else entries.push([k, v]);
  }
  if (metadata !== null && !(metadata.object && metadata.object.every(([, v]) => isStr(v)))) throw fail("st-metadata", `${where}: __metadata__ must be an object mapping str to str (FORMAT.md §5.1)`);
  if (entries.length > MAX_TENSORS) throw fail("st-header-size", `${where}: ${entries.length} tensors; the limit is ${MAX_TENSORS} (FORMAT.md §8)`);
  const tensors = [];
  for (const [name, spec] of entries) {
    checkName(name, where);
    const fields = spec && spec.object ? new Map(spec.object) : null;
    if (!fields || spec.object.length !== 3 || !["dtype", "shape", "data_offsets"].every((k) => fields.has(k))) {
      throw fail("st-header-json", `${where}: tensor ${JSON.stringify(name)}: expected an object with exactly dtype, shape, data_offsets (FORMAT.md §5.1)`);
    }
    const dtype = fields.get("dtype"), shape = fields.get("shape"), offsets = fields.get("data_offsets");
    if (!isStr(dtype) || !Object.hasOwn(DTYPES, dtype)) throw fail("st-dtype", `${where}: tensor ${JSON.stringify(name)}: dtype ${isStr(dtype) ? JSON.stringify(dtype) : "of another type"} is not one of ${Object.keys(DTYPES).join(", ")} (FORMAT.md §5.3)`);
    if (!(shape && shape.array && shape.array.length <= MAX_RANK && shape.array.every((d) => uintToken(d, MAX_DIM)))) throw fail("st-shape", `${where}: tensor ${JSON.stringify(name)}: shape must be an array of at most ${MAX_RANK} uints in 0..2^63-1 (FORMAT.md §5.1)`);
    if (!(offsets && offsets.array && offsets.array.length === 2 && offsets.array.every((d) => uintToken(d, U64_MAX)))) throw fail("st-offsets", `${where}: tensor ${JSON.stringify(name)}: data_offsets must be [begin, end], two uints (FORMAT.md §5.1)`);
    const dims = shape.array.map((d) => BigInt(d.text));
    const [begin, end] = offsets.array.map((d) => BigInt(d.text));
    if (begin > end) throw fail("st-offsets", `${where}: tensor ${JSON.stringify(name)}: data_offsets begin ${begin} > end ${end} (FORMAT.md §5.1)`);
    let elements = 1n;
    for (const d of dims) {
      elements *= d === 0n ? 1n : d;
      if (elements > MAX_DIM) throw fail("st-shape", `${where}: tensor ${JSON.stringify(name)}: more than 2^63-1 elements (zero dimensions counted as 1; FORMAT.md §5.1)`);
    }
    const count = dims.reduce((a, d) => a * d, 1n);
    if (count * big(DTYPES[dtype]) !== end - begin) throw fail("st-shape", `${where}: tensor ${JSON.stringify(name)}: shape [${dims.join(", ")}] of ${dtype} needs ${count * big(DTYPES[dtype])} bytes; data_offsets give ${end - begin} (FORMAT.md §5.1)`);
    tensors.push({ name, dtype, shape: dims.map(Number), begin, end, nbytes: Number(end - begin), elements: count });
  }
  const sorted = [...tensors].sort((a, b) => (a.begin < b.begin ? -1 : a.begin > b.begin ? 1 : a.end < b.end ? -1 : a.end > b.end ? 1 : 0));
  let pos = 0n;
  for (const t of sorted) {
    if (t.begin !== pos) throw fail("st-offsets", `${where}: tensor ${JSON.stringify(t.name)} starts at ${t.begin}; expected ${pos} (offsets are contiguous from 0, no gaps or overlaps; FORMAT.md §5.1)`);
    pos = t.end;
  }
  if (pos !== dataSize) throw fail("st-offsets", `${where}: tensors cover ${pos} bytes; the data section holds ${dataSize} (FORMAT.md §5.1)`);
  const dataStart = offset + 8 + Number(n);
  for (const t of sorted) { t.offset = dataStart + Number(t.begin); t.begin = Number(t.begin); t.end = Number(t.end); }
  const meta = metadata === null ? null : Object.fromEntries(metadata.object);
  return { tensors: sorted, dataStart, metadata: meta, headerBytes: Number(n) };
}

// --- §6 cross-checks ------------------------------------------------------------------------------

function numpyExtent(info) {
  let prod = big(DTYPES[info.dtype]);
  for (const d of info.shape) prod *= d === 0 ? 1n : big(d);
  return prod;
}

function crossCheck(m, parsed, members, tables) {
  const declared = m.get("members");
  const infos = {};
  for (const [name, table] of Object.entries(tables)) infos[name] = new Map(table.tensors.map((t) => [t.name, t]));
  for (const mem of members.slice(1)) {
    const info = declared.get(mem.name);
    if (info.get("size") !== big(mem.size)) throw fail("manifest-mismatch", `$.members.${mem.name}.size is ${info.get("size")}; the member holds ${mem.size} bytes (FORMAT.md §6)`);
    const stored = infos[mem.name];
    for (const [alias, target] of info.get("aliases")) {
      checkName(alias, `$.members.${mem.name}.aliases`);
      if (stored.has(alias) || !stored.has(target)) throw fail("manifest-mismatch", `$.members.${mem.name}.aliases: ${JSON.stringify(alias)} -> ${JSON.stringify(target)} must name a new tensor and a stored one (FORMAT.md §5.5)`);
    }
  }
  const claimed = {}, kinds = {}, aliases = {};
  for (const name of Object.keys(tables)) { claimed[name] = new Map(); kinds[name] = new Map(); aliases[name] = declared.get(name).get("aliases"); }
  for (const [ref, path] of parsed.refs) {
    const names = claimed[ref.member];
    if (names.has(ref.name)) throw fail("manifest-mismatch", `${renderPath(path)} and ${renderPath(names.get(ref.name))} both name tensor ${JSON.stringify(ref.name)} of ${ref.member}; each tensor and alias is named by one placeholder (FORMAT.md §6)`);
    names.set(ref.name, path);
    const target = aliases[ref.member].has(ref.name) ? aliases[ref.member].get(ref.name) : ref.name;
    const info = infos[ref.member].get(target);
    if (info === undefined) throw fail("manifest-mismatch", `${renderPath(path)} names tensor ${JSON.stringify(ref.name)}, which ${ref.member} does not hold (FORMAT.md §6)`);
    if (ref.kind === "ndarray" && !NUMPY_DTYPES.has(info.dtype)) throw fail("manifest-mismatch", `${renderPath(path)}: tensor ${JSON.stringify(ref.name)} is ${info.dtype}, which has no numpy dtype (FORMAT.md §4.4)`);
    if (ref.kind === "ndarray" && numpyExtent(info) > MAX_DIM) throw fail("manifest-mismatch", `${renderPath(path)}: tensor ${JSON.stringify(ref.name)} cannot be a numpy array: its dimensions, zeros counted as 1, times its element size exceed 2**63 - 1 bytes (FORMAT.md §4.4)`);
    if (ref.requiresGrad && !FLOAT_DTYPES.has(info.dtype)) throw fail("manifest-mismatch", `${renderPath(path)}: tensor ${JSON.stringify(ref.name)} is ${info.dtype}; only floating point and complex tensors can require gradients (FORMAT.md §4.4)`);
    const kind = `${ref.kind}/${ref.requiresGrad}`;
    const seen = kinds[ref.member].get(target);
    if (seen === undefined) kinds[ref.member].set(target, kind);
    else if (seen !== kind) throw fail("manifest-mismatch", `${renderPath(path)}: tensor ${JSON.stringify(target)} of ${ref.member} is named by placeholders of different kinds (FORMAT.md §5.5)`);
  }
  for (const mem of members.slice(1)) {
    for (const name of [...infos[mem.name].keys(), ...aliases[mem.name].keys()]) {
      if (!claimed[mem.name].has(name)) throw fail("manifest-mismatch", `tensor ${JSON.stringify(name)} of ${mem.name} is named by no placeholder of the manifest (FORMAT.md §6)`);
    }
  }
}

// --- opening ------------------------------------------------------------------------------------------

/**
 * Open and check a .distillgan file: every rule of FORMAT.md §3–§7 in the order of §13.1–§13.8.
 * Reads the end records, central directory, local headers, manifest and safetensors headers — never tensor data.
 * `input`: a File, Blob, ArrayBuffer, typed array, or a source {size, name, read(offset, n) -> Promise<Uint8Array>}.
 */
export async function openArchive(input, { name } = {}) {
  const src = toSource(input, name);
  if (src.size > MAX_FILE_BYTES) throw fail("file-too-large", `${src.name} is ${src.size} bytes; the limit is ${MAX_FILE_BYTES} (FORMAT.md §8)`);
  await checkNotLegacy(src);
  const members = await readContainer(src);
  const m0 = members[0];
  if (m0.size > MAX_MANIFEST_BYTES) throw fail("manifest-too-large", `manifest member is ${m0.size} bytes; the limit is ${MAX_MANIFEST_BYTES} (FORMAT.md §8)`);
  const raw = await src.read(m0.dataOffset, m0.size);
  const crc = crc32(raw);
  if (crc !== m0.crc32) throw fail("crc-mismatch", `${MANIFEST}: CRC-32 is ${hex(crc, 8)}; the directory says ${hex(m0.crc32, 8)} (FORMAT.md §6)`);
  const manifest = decodeMsgpack(raw);
  if (!isMap(manifest)) throw fail("manifest-not-map", `manifest is a ${kindOf(manifest)}; expected a map (FORMAT.md §4.2)`);
  const parsed = validateManifest(manifest);
  checkV1Members(manifest, members);
  const tables = {};
  for (const mem of members.slice(1)) tables[mem.name] = await parseHeader(src, mem.dataOffset, mem.size, mem.name);
  crossCheck(manifest, parsed, members, tables);
  return new Archive(src, members, manifest, parsed.values, tables);
}

export class Archive {
  constructor(src, members, manifest, values, tables) {
    this.source = src;
    this.size = src.size;
    this.members = members;
    this.manifest = manifest;
    this.values = values;
    this.tables = tables;
  }
  /** The manifest in the JSON projection of FORMAT.md §4.6 (a plain value for toJSON). */
  projection() {
    return project(this.manifest);
  }
  /** The bytes of one stored tensor. */
  async tensorBytes(member, tensor) {
    const t = typeof tensor === "string" ? this.tables[member].tensors.find((x) => x.name === tensor) : tensor;
    return this.source.read(t.offset, t.nbytes);
  }
  /** §13.9: the CRC-32 of each tensor member in archive order, then every BOOL byte. `onProgress(done, total)`. */
  async verify({ onProgress, signal, sha256 } = {}) {
    const tensorMembers = this.members.slice(1);
    const total = tensorMembers.reduce((a, m) => a + m.size, 0);
    let done = 0;
    for (const m of tensorMembers) {
      let crc = 0;
      for (let off = 0; off < m.size; off += CHUNK) {
        if (signal?.aborted) throw fail("aborted", "verification stopped");
        const chunk = await this.source.read(m.dataOffset + off, Math.min(CHUNK, m.size - off));
        crc = crc32(chunk, crc);
        done += chunk.length;
        onProgress?.(done, total);
      }
      if (crc !== m.crc32) throw fail("crc-mismatch", `${m.name}: CRC-32 is ${hex(crc, 8)}; the directory says ${hex(m.crc32, 8)} (FORMAT.md §6)`);
    }
    onProgress?.(total, total);
    if (sha256 !== undefined) {
      const h = new Sha256();
      for (let off = 0; off < this.size; off += CHUNK) h.update(await this.source.read(off, Math.min(CHUNK, this.size - off)));
      const digest = h.hex();
      if (digest !== sha256.trim().toLowerCase()) throw fail("sha256-mismatch", `SHA-256 of the file is ${digest}; expected ${sha256}`);
    }
    for (const m of tensorMembers) {
      for (const t of this.tables[m.name].tensors) {
        if (t.dtype !== "BOOL") continue;
        for (let off = 0; off < t.nbytes; off += CHUNK) {
          const chunk = await this.source.read(t.offset + off, Math.min(CHUNK, t.nbytes - off));
          if (chunk.some((b) => b > 1)) throw fail("st-bool", `${m.name}: tensor ${JSON.stringify(t.name)} holds bool bytes other than 0 and 1 (FORMAT.md §5.3)`);
        }
      }
    }
    return true;
  }
  /** {member: {stored tensor name: SHA-256 hex of its bytes}} (FORMAT.md §10). */
  async digests({ subtle } = {}) {
    const out = {};
    for (const m of this.members.slice(1)) {
      const d = {};
      for (const t of [...this.tables[m.name].tensors].sort((a, b) => (a.name < b.name ? -1 : 1))) d[t.name] = await sha256Hex(await this.tensorBytes(m.name, t), subtle);
      out[m.name] = d;
    }
    return out;
  }
}

// --- §4.6 JSON projection and a JSON writer that keeps every bit ---------------------------------------

const FLOAT_TAG = (value, bits) => ({ $: "float", value, bits });

/** The loss-free JSON projection of decoded msgpack (FORMAT.md §4.6), as plain values for toJSON. */
export function project(v) {
  if (v instanceof NaNValue) return new Map([["$", "float"], ["value", "nan"], ["bits", v.bits]]);
  if (typeof v === "number" && !Number.isFinite(v)) return new Map(Object.entries(FLOAT_TAG(v > 0 ? "inf" : "-inf", v > 0 ? "7ff0000000000000" : "fff0000000000000")));
  if (isBin(v)) return new Map([["$", "bytes"], ["base64", base64(v)]]);
  if (isList(v)) return v.map(project);
  if (isMap(v)) {
    if ([...v.keys()].every(isStr)) return new Map([...v].map(([k, x]) => [k, project(x)]));
    return new Map([["$", "map"], ["items", [...v].map(([k, x]) => [k, project(x)])]]);
  }
  return v;
}

function base64(bytes) {
  const abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  let out = "";
  for (let i = 0; i < bytes.length; i += 3) {
    const a = bytes[i], b = bytes[i + 1], c = bytes[i + 2];
    out += abc[a >> 2] + abc[((a & 3) << 4) | ((b ?? 0) >> 4)] + (b === undefined ? "=" : abc[((b & 15) << 2) | ((c ?? 0) >> 6)]) + (c === undefined ? "=" : abc[c & 63]);
  }
  return out;
}

/** JSON text of a value: Maps as objects in their order, BigInt with all digits, -0.0 with its sign. */
export function toJSON(v) {
  if (v === null || v === undefined) return "null";
  if (typeof v === "boolean") return v ? "true" : "false";
  if (typeof v === "bigint") return v.toString();
  if (typeof v === "number") {
    if (!Number.isFinite(v)) throw new TypeError("non-finite number: project() it first");
    if (Object.is(v, -0)) return "-0.0";
    return String(v);
  }
  if (typeof v === "string") return JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map(toJSON).join(",")}]`;
  const entries = v instanceof Map ? [...v] : Object.entries(v);
  return `{${entries.map(([k, x]) => `${JSON.stringify(String(k))}:${toJSON(x)}`).join(",")}}`;
}

// --- CRC-32 (slicing by 8) and SHA-256 ----------------------------------------------------------------

const CRC_TABLES = (() => {
  const t = new Uint32Array(8 * 256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[i] = c;
  }
  for (let i = 0; i < 256; i++) for (let s = 1; s < 8; s++) t[s * 256 + i] = (t[(s - 1) * 256 + i] >>> 8) ^ t[t[(s - 1) * 256 + i] & 0xff];
  return t;
})();

/** The zip CRC-32 (reflected 0xEDB88320), continuing from `crc`. */
export function crc32(bytes, crc = 0) {
  const t = CRC_TABLES;
  let c = ~crc >>> 0;
  let i = 0;
  const n = bytes.length;
  for (; i + 8 <= n; i += 8) {
    const a = (c ^ (bytes[i] | (bytes[i + 1] << 8) | (bytes[i + 2] << 16) | (bytes[i + 3] << 24))) >>> 0;
    c = t[7 * 256 + (a & 0xff)] ^ t[6 * 256 + ((a >>> 8) & 0xff)] ^ t[5 * 256 + ((a >>> 16) & 0xff)] ^ t[4 * 256 + (a >>> 24)] ^
      t[3 * 256 + bytes[i + 4]] ^ t[2 * 256 + bytes[i + 5]] ^ t[256 + bytes[i + 6]] ^ t[bytes[i + 7]];
  }
  for (; i < n; i++) c = t[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}

const K256 = new Uint32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3,
  0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
  0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
  0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);

/** SHA-256 in JavaScript, incremental: update(bytes) as often as needed, then hex(). */
export class Sha256 {
  constructor() {
    this.h = new Uint32Array([0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]);
    this.buf = new Uint8Array(64);
    this.fill = 0;
    this.length = 0;
    this.w = new Uint32Array(64);
  }
  block(b, o) {
    const w = this.w, h = this.h;
    for (let i = 0; i < 16; i++) w[i] = (b[o + 4 * i] << 24) | (b[o + 4 * i + 1] << 16) | (b[o + 4 * i + 2] << 8) | b[o + 4 * i + 3];
    for (let i = 16; i < 64; i++) {
      const x = w[i - 15], y = w[i - 2];
      const s0 = ((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3);
      const s1 = ((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10);
      w[i] = (w[i - 16] + s0 + w[i - 7] + s1) | 0;
    }
    let a = h[0], bb = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (let i = 0; i < 64; i++) {
      const S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
      const t1 = (hh + S1 + ((e & f) ^ (~e & g)) + K256[i] + w[i]) | 0;
      const S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
      const t2 = (S0 + ((a & bb) ^ (a & c) ^ (bb & c))) | 0;
      hh = g; g = f; f = e; e = (d + t1) | 0; d = c; c = bb; bb = a; a = (t1 + t2) | 0;
    }
    h[0] += a; h[1] += bb; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
  }
  update(bytes) {
    let i = 0;
    this.length += bytes.length;
    if (this.fill) {
      const take = Math.min(64 - this.fill, bytes.length);
      this.buf.set(bytes.subarray(0, take), this.fill);
      this.fill += take;
      i = take;
      if (this.fill < 64) return this;
      this.block(this.buf, 0);
      this.fill = 0;
    }
    for (; i + 64 <= bytes.length; i += 64) this.block(bytes, i);
    this.buf.set(bytes.subarray(i), 0);
    this.fill = bytes.length - i;
    return this;
  }
  hex() {
    const bits = this.length * 8;
    const tail = new Uint8Array(((this.fill + 9 + 63) >> 6) << 6);
    tail.set(this.buf.subarray(0, this.fill));
    tail[this.fill] = 0x80;
    const v = dv(tail);
    v.setUint32(tail.length - 8, Math.floor(bits / 2 ** 32));
    v.setUint32(tail.length - 4, bits >>> 0);
    for (let o = 0; o < tail.length; o += 64) this.block(tail, o);
    return Array.from(this.h, (x) => hex(x >>> 0, 8)).join("");
  }
}

/** SHA-256 of bytes: crypto.subtle where present (or the `subtle` given), else the JavaScript one. */
export async function sha256Hex(bytes, subtle = globalThis.crypto?.subtle) {
  if (subtle) {
    const digest = new Uint8Array(await subtle.digest("SHA-256", bytes));
    return Array.from(digest, (b) => hex(b, 2)).join("");
  }
  return new Sha256().update(bytes).hex();
}

// --- tensor values for display (histograms) -----------------------------------------------------------

function halfToFloat(h) {
  const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, f = h & 0x3ff;
  if (e === 0) return s * f * 2 ** -24;
  if (e === 31) return f ? NaN : s * Infinity;
  return s * (1 + f / 1024) * 2 ** (e - 15);
}

/** The values of a tensor's bytes as float64 numbers (complex: real parts), for display. */
export function tensorValues(dtype, bytes) {
  const v = dv(bytes);
  const size = DTYPES[dtype];
  const n = Math.floor(bytes.length / (dtype === "C64" ? 8 : size));
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const o = i * (dtype === "C64" ? 8 : size);
    switch (dtype) {
      case "F64": out[i] = v.getFloat64(o, true); break;
      case "F32": case "C64": out[i] = v.getFloat32(o, true); break;
      case "F16": out[i] = halfToFloat(v.getUint16(o, true)); break;
      case "BF16": { const b = new DataView(new ArrayBuffer(4)); b.setUint32(0, v.getUint16(o, true) << 16); out[i] = b.getFloat32(0); break; }
      case "I64": out[i] = Number(v.getBigInt64(o, true)); break;
      case "U64": out[i] = Number(v.getBigUint64(o, true)); break;
      case "I32": out[i] = v.getInt32(o, true); break;
      case "U32": out[i] = v.getUint32(o, true); break;
      case "I16": out[i] = v.getInt16(o, true); break;
      case "U16": out[i] = v.getUint16(o, true); break;
      case "I8": out[i] = v.getInt8(o); break;
      case "U8": case "BOOL": out[i] = v.getUint8(o); break;
      default: out[i] = fp8(dtype, v.getUint8(o));
    }
  }
  return out;
}

function fp8(dtype, b) {
  const [ebits, bias, fnuz] = { F8_E4M3: [4, 7, false], F8_E5M2: [5, 15, false], F8_E4M3FNUZ: [4, 8, true], F8_E5M2FNUZ: [5, 16, true] }[dtype];
  const mbits = 7 - ebits;
  if (fnuz && b === 0x80) return NaN;
  const s = b & 0x80 ? -1 : 1, e = (b >> mbits) & ((1 << ebits) - 1), m = b & ((1 << mbits) - 1);
  if (!fnuz && dtype === "F8_E5M2" && e === 31) return m ? NaN : s * Infinity;
  if (!fnuz && dtype === "F8_E4M3" && e === 15 && m === 7) return NaN;
  if (e === 0) return s * m * 2 ** (1 - bias - mbits);
  return s * (1 + m / (1 << mbits)) * 2 ** (e - bias);
}
