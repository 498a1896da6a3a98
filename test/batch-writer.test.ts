// The batching file writer behind blob downloads, on real files: what reaches the disk, in how many writes, how
// soon a lone chunk lands when no more data comes (a stalled connection), and what a failing disk looks like.
import { randomBytes } from "node:crypto";
import { open, readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, expect, test } from "vitest";
import { BatchWriter } from "../src/oci/store/index.js";
import { makeTempDir, removeDir } from "./helpers/tmp.js";

let dir: string;
let count = 0;

beforeAll(async () => {
  dir = await makeTempDir("llama-oci-writer");
});

afterAll(async () => {
  await removeDir(dir);
});

const sizeOf = async (path: string) => (await stat(path)).size;

test("64 KiB chunks are appended in order, one write per megabyte", async () => {
  const path = join(dir, `batch-${++count}`);
  const file = await open(path, "a");
  const writes: number[] = [];
  const writer = new BatchWriter(file.fd, { batchBytes: 1 << 20, onWritten: (total) => writes.push(total) });
  const chunks = Array.from({ length: 161 }, () => randomBytes(64 * 1024)); // 10 MiB + 64 KiB
  for (const chunk of chunks) writer.push(chunk);
  expect(writer.pending).toBe(64 * 1024);
  expect(writer.flush()).toBe(true);
  await file.close();

  expect((await readFile(path)).equals(Buffer.concat(chunks))).toBe(true);
  expect(writer.written).toBe((10 << 20) + 64 * 1024);
  expect(writes).toEqual([...Array.from({ length: 10 }, (_, i) => (i + 1) << 20), (10 << 20) + 64 * 1024]);
});

test("a chunk with nothing after it reaches the disk within the delay, without a flush", async () => {
  const path = join(dir, `lone-${++count}`);
  const file = await open(path, "a");
  const writer = new BatchWriter(file.fd, { batchBytes: 1 << 20, maxDelayMs: 10 });
  try {
    writer.push(Buffer.from("GGUF and a few more bytes"));
    expect(await sizeOf(path)).toBe(0);
    const deadline = Date.now() + 2_000;
    while ((await sizeOf(path)) < 25 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5));
    expect(await sizeOf(path)).toBe(25);
    expect(writer.pending).toBe(0);
    expect(writer.written).toBe(25);
  } finally {
    writer.flush();
    await file.close();
  }
});

test("flush puts every pushed byte on disk at once and leaves no timer to write later", async () => {
  const path = join(dir, `flush-${++count}`);
  const file = await open(path, "a");
  const writer = new BatchWriter(file.fd, { batchBytes: 4 << 20, maxDelayMs: 20 });
  const data = randomBytes(3 * 1024 * 1024 + 17);
  for (let offset = 0; offset < data.length; offset += 65_536) writer.push(data.subarray(offset, offset + 65_536));
  expect(await sizeOf(path)).toBe(0);
  expect(writer.flush()).toBe(true);
  expect(await sizeOf(path)).toBe(data.length);
  await file.close(); // a write after this point would fail and be reported through onError
  await new Promise((resolve) => setTimeout(resolve, 60));
  expect(writer.failed).toBe(false);
  expect((await readFile(path)).equals(data)).toBe(true);
});

test("a failing write is reported once, drops later chunks, and flush says the bytes are not on disk", async () => {
  const path = join(dir, `readonly-${++count}`);
  await (await open(path, "w")).close();
  const file = await open(path, "r"); // writes fail with EBADF
  const errors: unknown[] = [];
  const writer = new BatchWriter(file.fd, { batchBytes: 4, onError: (error) => errors.push(error) });
  writer.push(Buffer.from("lost"));
  expect(writer.failed).toBe(true);
  expect(writer.error).toMatchObject({ code: "EBADF" });
  writer.push(Buffer.from("ignored"));
  expect(writer.pending).toBe(0);
  expect(writer.flush()).toBe(false);
  expect(errors).toHaveLength(1);
  await file.close();
  expect(await sizeOf(path)).toBe(0);
});
