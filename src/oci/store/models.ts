/**
 * Model records (what a model manifest resolved to: its files, digests and sizes, when verified) and model folders
 * (the files laid out under the names llama.cpp expects, as links to the blobs).
 */
import { randomBytes } from "node:crypto";
import { copyFile, link, rename, rm, stat, symlink } from "node:fs/promises";
import { dirname, join, relative } from "node:path";
import { LlamaOciError } from "../../errors.js";
import { isDigest } from "../name/index.js";
import { listDir, readJson, writeJson } from "./atomic-write.js";
import { fsyncDir, fsyncFile, mkdirDurable } from "./durable.js";
import type { StoreLayout } from "./layout.js";

export interface StoredFile {
  kind: string;
  mediaType: string;
  digest: string;
  size: number;
  /** Relative path inside the model folder. */
  filename: string;
}

export interface ModelRecord {
  manifestDigest: string;
  format: string;
  configDigest: string;
  files: StoredFile[];
  verifiedAt: string;
}

/** What models/ holds for one manifest digest: its record, its folder, or (after a crash) only one of them. */
export interface ModelEntry {
  manifestDigest: string;
  record?: ModelRecord;
  hasDir: boolean;
}

export class ModelStore {
  constructor(private readonly layout: StoreLayout) {}

  dir(manifestDigest: string): string {
    return this.layout.modelDir(manifestDigest);
  }

  recordPath(manifestDigest: string): string {
    return this.layout.modelRecord(manifestDigest);
  }

  async read(manifestDigest: string): Promise<ModelRecord | undefined> {
    return readJson<ModelRecord>(this.recordPath(manifestDigest));
  }

  async write(record: ModelRecord): Promise<void> {
    await writeJson(this.recordPath(record.manifestDigest), record);
  }

  /** Deletes a model's record and its folder of links (the blobs stay). */
  async remove(manifestDigest: string): Promise<void> {
    await rm(this.recordPath(manifestDigest), { force: true });
    await rm(this.dir(manifestDigest), { recursive: true, force: true });
  }

  /** Every model record and model folder under models/, paired by manifest digest. */
  async list(): Promise<ModelEntry[]> {
    const byHex = new Map<string, ModelEntry>();
    const entryFor = (hex: string): ModelEntry | undefined => {
      const known = byHex.get(hex);
      if (known) return known;
      const manifestDigest = digestForHex(hex);
      if (!manifestDigest) return undefined;
      const created: ModelEntry = { manifestDigest, hasDir: false };
      byHex.set(hex, created);
      return created;
    };
    for (const entry of await listDir(this.layout.modelsDir())) {
      if (entry.isDirectory()) {
        const model = entryFor(entry.name);
        if (model) model.hasDir = true;
      } else if (entry.isFile() && entry.name.endsWith(".json")) {
        const model = entryFor(entry.name.slice(0, -".json".length));
        if (model) model.record = await this.read(model.manifestDigest);
      }
    }
    return [...byHex.values()];
  }

  /**
   * Lays the model's files out under models/<hex>/ with the names llama.cpp expects (shards side by side),
   * as hard links to the blobs (no second copy), or symbolic links, or copies where links are impossible. Every
   * folder that got a new name is fsynced before this returns (and a copy before it is named), so that the model
   * record written next never describes a folder a power cut could take back.
   */
  async link(manifestDigest: string, files: StoredFile[]): Promise<string> {
    const dir = this.dir(manifestDigest);
    const changed = new Set<string>();
    for (const file of files) {
      const target = join(dir, ...file.filename.split("/"));
      if (relative(dir, target).startsWith("..")) {
        throw new LlamaOciError("UNSUPPORTED_ARTIFACT", `file path ${JSON.stringify(file.filename)} escapes the model folder`);
      }
      await mkdirDurable(dirname(target));
      if (await placeLink(this.layout.blob(file.digest), target)) changed.add(dirname(target));
    }
    for (const folder of changed) await fsyncDir(folder);
    return dir;
  }
}

/** Places target as a link to source (or a copy); false when it already was one. */
async function placeLink(source: string, target: string): Promise<boolean> {
  const [from, to] = await Promise.all([stat(source), stat(target).catch(() => undefined)]);
  if (to && to.ino === from.ino && to.dev === from.dev) return false;
  const temp = `${target}.${randomBytes(4).toString("hex")}.link`;
  try {
    await link(source, temp);
  } catch {
    try {
      await symlink(source, temp);
    } catch {
      await copyFile(source, temp);
      await fsyncFile(temp);
    }
  }
  await rename(temp, target);
  // rename(2) does nothing when temp and target are already links to the same file (another process placed
  // target meanwhile), leaving temp behind.
  await rm(temp, { force: true });
  return true;
}

/** models/ names folders by hex alone; the length tells the algorithm. */
function digestForHex(hex: string): string | undefined {
  const digest = `${hex.length === 128 ? "sha512" : "sha256"}:${hex}`;
  return isDigest(digest) ? digest : undefined;
}
