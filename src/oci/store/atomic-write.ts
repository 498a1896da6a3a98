/**
 * Writing cache files so that a reader never sees half of one, and a power cut leaves the old file or the new one:
 * a temporary name, fsynced, renamed into place, then the folder fsynced (durable.ts).
 */
import { randomBytes } from "node:crypto";
import type { Dirent } from "node:fs";
import { open, readdir, readFile, rename, rm } from "node:fs/promises";
import { dirname } from "node:path";
import { LlamaOciError } from "../../errors.js";
import { fsyncDir, mkdirDurable } from "./durable.js";
import { isNoSpace, noSpaceError } from "./free-space.js";

export async function atomicWrite(path: string, data: string | Buffer): Promise<void> {
  const dir = dirname(path);
  const temp = `${path}.${process.pid}.${randomBytes(4).toString("hex")}.new`;
  try {
    await mkdirDurable(dir);
    const handle = await open(temp, "wx");
    try {
      await handle.writeFile(data);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temp, path);
    await fsyncDir(dir);
  } catch (error) {
    await rm(temp, { force: true });
    if (isNoSpace(error)) throw await noSpaceError(dir, { writing: path, cause: error });
    throw new LlamaOciError("CACHE", `cannot write ${path}: ${(error as Error).message}`, {
      hint: "check free disk space and permissions of the cache directory (--cache-dir / LLAMA_CACHE)",
      cause: error,
    });
  }
}

export async function writeJson(path: string, value: unknown): Promise<void> {
  await atomicWrite(path, JSON.stringify(value, null, 2) + "\n");
}

/** A JSON file's content, or undefined when it is missing or unreadable. */
export async function readJson<T>(path: string): Promise<T | undefined> {
  try {
    return JSON.parse(await readFile(path, "utf8")) as T;
  } catch {
    return undefined;
  }
}

/** A folder's entries; none when it does not exist. */
export async function listDir(dir: string): Promise<Dirent[]> {
  return readdir(dir, { withFileTypes: true }).catch(() => []);
}
