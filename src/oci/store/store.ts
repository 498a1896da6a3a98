/**
 * The cache, opened: its layout (layout.ts) and one object per kind of content, blobs, manifests, model records
 * and folders, refs, plus the per-blob lock that every writer and deleter of a blob takes.
 */
import { dirname } from "node:path";
import { BlobStore } from "./blobs.js";
import { mkdirDurable } from "./durable.js";
import { isNoSpace, noSpaceError } from "./free-space.js";
import { StoreLayout } from "./layout.js";
import { acquireLock, type Lock, type LockOptions } from "./lock.js";
import { ManifestStore } from "./manifests.js";
import { ModelStore } from "./models.js";
import { RefStore } from "./refs.js";

export class Store {
  /** <cacheDir>/oci */
  readonly root: string;
  readonly layout: StoreLayout;
  readonly blobs: BlobStore;
  readonly manifests: ManifestStore;
  readonly models: ModelStore;
  readonly refs: RefStore;

  constructor(cacheDir: string) {
    this.layout = new StoreLayout(cacheDir);
    this.root = this.layout.root;
    this.blobs = new BlobStore(this.layout);
    this.manifests = new ManifestStore(this.layout);
    this.models = new ModelStore(this.layout);
    this.refs = new RefStore(this.layout);
  }

  /** The lock of one blob, shared by its download, import and deletion; waits while another process holds it. */
  async lockBlob(digest: string, options?: LockOptions): Promise<Lock> {
    const path = this.layout.lock(digest);
    try {
      await mkdirDurable(dirname(path));
      return await acquireLock(path, options);
    } catch (error) {
      if (isNoSpace(error)) throw await noSpaceError(this.root, { writing: path, cause: error });
      throw error;
    }
  }

  /** The blob's lock if nobody live holds it (an abandoned lock is taken over), else undefined; never waits. */
  async tryLockBlob(digest: string): Promise<Lock | undefined> {
    const busy = new AbortController();
    try {
      return await this.lockBlob(digest, { signal: busy.signal, onWait: () => busy.abort() });
    } catch (error) {
      if (busy.signal.aborted) return undefined;
      throw error;
    }
  }

  /** Runs action under the blob's lock if nobody live holds it (as tryLockBlob); false when it was busy. */
  async underBlobLock(digest: string, action: () => Promise<void>): Promise<boolean> {
    const lock = await this.tryLockBlob(digest);
    if (!lock) return false;
    try {
      await action();
      return true;
    } finally {
      await lock.release();
    }
  }
}
