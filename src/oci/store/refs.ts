/**
 * Refs: which manifest a tag (or a pull by digest) resolved to, per registry and repository. They are the roots
 * of what the cache keeps; everything they do not reach may be pruned.
 */
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { listDir, readJson, writeJson } from "./atomic-write.js";
import { ALGORITHMS, type StoreLayout } from "./layout.js";

export interface TagRecord {
  reference: string;
  /** What the tag pointed to: a manifest or an index. */
  digest: string;
  mediaType: string;
  /** The model manifest (the index's chosen child, or digest itself). */
  manifestDigest: string;
  resolvedAt: string;
}

/** A tag record or a pull-by-digest record, with where it sits. */
export interface RefEntry {
  registry: string;
  repository: string;
  /** Set for a tag record. */
  tag?: string;
  /** Set for a pull-by-digest record. */
  digest?: string;
  record: TagRecord;
}

export class RefStore {
  constructor(private readonly layout: StoreLayout) {}

  async readTag(registry: string, repository: string, tag: string): Promise<TagRecord | undefined> {
    return readJson<TagRecord>(this.layout.tag(registry, repository, tag));
  }

  async writeTag(registry: string, repository: string, tag: string, record: TagRecord): Promise<void> {
    await writeJson(this.layout.tag(registry, repository, tag), record);
  }

  async removeTag(registry: string, repository: string, tag: string): Promise<void> {
    await rm(this.layout.tag(registry, repository, tag), { force: true });
  }

  /** Records that a model was pulled by digest, so that it counts as in use like a tagged one. */
  async writeDigest(registry: string, repository: string, digest: string, record: TagRecord): Promise<void> {
    await writeJson(this.layout.digestRef(registry, repository, digest), record);
  }

  async removeDigest(registry: string, repository: string, digest: string): Promise<void> {
    await rm(this.layout.digestRef(registry, repository, digest), { force: true });
  }

  /** Every tag and pull-by-digest record in the cache. Unreadable records are skipped. */
  async list(): Promise<RefEntry[]> {
    const refsDir = this.layout.refsDir();
    const entries: RefEntry[] = [];
    for (const registryDir of await listDir(refsDir)) {
      if (!registryDir.isDirectory()) continue;
      const registry = safeDecode(registryDir.name);
      if (registry === undefined) continue;
      await collect(join(refsDir, registryDir.name), registry, [], entries);
    }
    return entries;
  }
}

async function collect(dir: string, registry: string, path: string[], out: RefEntry[]): Promise<void> {
  for (const entry of await listDir(dir)) {
    if (!entry.isDirectory()) continue;
    const full = join(dir, entry.name);
    const repository = path.join("/");
    if (entry.name === "@tags" && path.length > 0) {
      for (const file of await listDir(full)) {
        if (!file.isFile() || !file.name.endsWith(".json")) continue;
        const record = await readJson<TagRecord>(join(full, file.name));
        if (record) out.push({ registry, repository, tag: file.name.slice(0, -".json".length), record });
      }
    } else if (entry.name === "@digests" && path.length > 0) {
      for (const algorithm of ALGORITHMS) {
        for (const file of await listDir(join(full, algorithm))) {
          if (!file.isFile() || !file.name.endsWith(".json")) continue;
          const record = await readJson<TagRecord>(join(full, algorithm, file.name));
          if (record) out.push({ registry, repository, digest: `${algorithm}:${file.name.slice(0, -".json".length)}`, record });
        }
      }
    } else if (!entry.name.startsWith("@")) {
      await collect(full, registry, [...path, entry.name], out);
    }
  }
}

function safeDecode(name: string): string | undefined {
  try {
    return decodeURIComponent(name);
  } catch {
    return undefined;
  }
}
