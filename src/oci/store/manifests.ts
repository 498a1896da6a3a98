/** Raw manifest and index bytes, exactly as the registry sent them (or as package built them), by digest. */
import { readFile, rm } from "node:fs/promises";
import { isDigest } from "../name/index.js";
import { atomicWrite, listDir } from "./atomic-write.js";
import { ALGORITHMS, type StoreLayout } from "./layout.js";

export class ManifestStore {
  constructor(private readonly layout: StoreLayout) {}

  path(digest: string): string {
    return this.layout.manifest(digest);
  }

  async write(digest: string, body: Buffer): Promise<void> {
    await atomicWrite(this.path(digest), body);
  }

  async read(digest: string): Promise<Buffer | undefined> {
    return readFile(this.path(digest)).catch(() => undefined);
  }

  async remove(digest: string): Promise<void> {
    await rm(this.path(digest), { force: true });
  }

  /** Digests of every stored manifest and index. */
  async list(): Promise<string[]> {
    const digests: string[] = [];
    for (const algorithm of ALGORITHMS) {
      for (const file of await listDir(this.layout.manifestsDir(algorithm))) {
        const digest = `${algorithm}:${file.name}`;
        if (file.isFile() && isDigest(digest)) digests.push(digest);
      }
    }
    return digests;
  }
}
