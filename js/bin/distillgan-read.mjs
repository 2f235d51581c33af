#!/usr/bin/env node
// The JavaScript reader as a conformance reader (FORMAT.md §10).
//
//   node js/bin/distillgan-read.mjs FILE      valid: exit 0, {"manifest": ..., "digests": ...} on stdout
//                                              invalid: exit 1, "distillgan-read: error [CODE]: message" on stderr
//   node js/bin/distillgan-read.mjs --batch   paths on stdin, one JSON answer per line on stdout
import { createInterface } from "node:readline";
import { webcrypto } from "node:crypto";
import { DistillganError, toJSON } from "../distillgan.mjs";
import { openFile } from "../node.mjs";

const subtle = globalThis.crypto?.subtle ?? webcrypto.subtle;

/** Non-printable characters of text from a file or a path, escaped (as the Python CLI shows them). */
function safe(text) {
  return String(text).replace(/[\p{C}\p{Z}]/gu, (c) => (c === " " ? c : c.codePointAt(0) > 0xffff ? `\\U${c.codePointAt(0).toString(16).padStart(8, "0")}` : c.codePointAt(0) > 0xff ? `\\u${c.codePointAt(0).toString(16).padStart(4, "0")}` : `\\x${c.codePointAt(0).toString(16).padStart(2, "0")}`));
}

async function check(path) {
  const archive = await openFile(path);
  try {
    await archive.verify();
    return { manifest: archive.projection(), digests: await archive.digests({ subtle }) };
  } finally {
    await archive.source.close();
  }
}

async function one(path) {
  try {
    const out = await check(path);
    process.stdout.write(toJSON(out) + "\n");
    return 0;
  } catch (e) {
    if (!(e instanceof DistillganError)) throw e;
    process.stderr.write(`distillgan-read: error [${e.code}]: ${safe(e.message)}\n`);
    return 1;
  }
}

async function batch() {
  const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
  for await (const path of lines) {
    let answer;
    try {
      const out = await check(path);
      answer = toJSON({ path, manifest: out.manifest, digests: out.digests });
    } catch (e) {
      if (!(e instanceof DistillganError)) throw e;
      answer = toJSON({ path, error: e.code, message: e.message });
    }
    await new Promise((resolve) => process.stdout.write(answer + "\n", resolve));
  }
  return 0;
}

const args = process.argv.slice(2);
if (args.length === 1 && args[0] === "--batch") process.exitCode = await batch();
else if (args.length === 1 && !args[0].startsWith("--")) process.exitCode = await one(args[0]);
else {
  process.stderr.write("usage: distillgan-read.mjs FILE | --batch\n");
  process.exitCode = 2;
}
