// Node helpers for the reader (FORMAT.md §13.1 F1–F4): open a path without blocking and read ranges of it.
import { constants, promises as fs } from "node:fs";
import { DistillganError, MAX_FILE_BYTES, openArchive } from "./distillgan.mjs";

/** A source over a file descriptor: each read is one positioned read (pread). */
export class FileSource {
  constructor(handle, size, name) {
    this.handle = handle;
    this.size = size;
    this.name = name;
    this.bytesRead = 0;
  }
  async read(offset, n) {
    const buf = new Uint8Array(n);
    let got = 0;
    while (got < n) {
      const { bytesRead } = await this.handle.read(buf, got, n - got, offset + got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    this.bytesRead += got;
    if (got !== n) {
      throw new DistillganError("file-changed", `${this.name}: read ${got} of ${n} bytes at ${offset}; the file got shorter while it was read (FORMAT.md §6)`);
    }
    return buf;
  }
  async close() {
    await this.handle.close();
  }
}

/**
 * Open a path as FORMAT.md §13.1 says: not-found, not-regular-file (directory, FIFO, socket, device — opened with
 * O_NONBLOCK so a FIFO never blocks), io-error, file-too-large. Returns a FileSource; close() it.
 */
export async function openPath(path) {
  let handle;
  try {
    handle = await fs.open(path, constants.O_RDONLY | (constants.O_NONBLOCK ?? 0));
  } catch (e) {
    if (e.code === "ENOENT" || e.code === "ENOTDIR") throw new DistillganError("not-found", `${JSON.stringify(path)} does not exist`);
    if (e.code === "EISDIR") throw new DistillganError("not-regular-file", `${JSON.stringify(path)} is a directory; expected a regular file`);
    if (e.code === "ENXIO") throw new DistillganError("not-regular-file", `${JSON.stringify(path)} is not a regular file (device, FIFO, socket or directory)`);
    throw new DistillganError("io-error", `cannot open ${JSON.stringify(path)}: ${e.message}`);
  }
  try {
    const st = await handle.stat();
    if (st.isDirectory()) throw new DistillganError("not-regular-file", `${JSON.stringify(path)} is a directory; expected a regular file`);
    if (!st.isFile()) throw new DistillganError("not-regular-file", `${JSON.stringify(path)} is not a regular file (device, FIFO, socket or directory)`);
    if (st.size > MAX_FILE_BYTES) throw new DistillganError("file-too-large", `${JSON.stringify(path)} is ${st.size} bytes; the limit is ${MAX_FILE_BYTES} (FORMAT.md §8)`);
    return new FileSource(handle, st.size, path);
  } catch (e) {
    await handle.close();
    throw e;
  }
}

/** openArchive() of a path; the archive's source stays open until archive.source.close(). */
export async function openFile(path) {
  const src = await openPath(path);
  try {
    return await openArchive(src);
  } catch (e) {
    await src.close();
    throw e;
  }
}
