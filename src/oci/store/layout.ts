/**
 * The on-disk layout of the cache, under <cacheDir>/oci/:
 *   blobs/sha256/<hex>            verified blobs (layers and configs), each stored once whatever uses it
 *   blobs/sha256/<hex>.tmp        a partial download, next to <hex>.digest holding the digest it must reach
 *   blobs/sha256/<hex>.parts      which byte ranges of a partial downloaded over several connections are on disk
 *   blobs/sha256/<hex>.lock       held while one process downloads that blob
 *   manifests/sha256/<hex>        raw manifest and index bytes, as the registry sent them
 *   models/<hex>.json             what a model manifest resolved to: its files, digests, sizes, when verified
 *   models/<hex>/<filename>       the model's files as llama.cpp expects them, hard links to the blobs
 *   refs/<registry>/<repository>/@tags/<tag>.json   which manifest a tag resolved to, for offline pulls
 *   refs/<registry>/<repository>/@digests/<algorithm>/<hex>.json   the same for a pull by digest
 * What a tag record names (and what its model record lists) is in use; everything else may be pruned.
 * Every path is built here and nowhere else.
 */
import { join } from "node:path";
import { digestHex, parseDigest, type DigestAlgorithm } from "../name/index.js";

export const ALGORITHMS: readonly DigestAlgorithm[] = ["sha256", "sha512"];

export class StoreLayout {
  /** <cacheDir>/oci */
  readonly root: string;

  constructor(cacheDir: string) {
    this.root = join(cacheDir, "oci");
  }

  blobsDir(algorithm: DigestAlgorithm): string {
    return join(this.root, "blobs", algorithm);
  }
  blob(digest: string): string {
    const { algorithm, hex } = parseDigest(digest);
    return join(this.blobsDir(algorithm), hex);
  }
  partial(digest: string): string {
    return `${this.blob(digest)}.tmp`;
  }
  partialDigest(digest: string): string {
    return `${this.blob(digest)}.digest`;
  }
  /** The per-part state of a partial written at several offsets at once (see partial-state.ts). */
  partialState(digest: string): string {
    return `${this.blob(digest)}.parts`;
  }
  lock(digest: string): string {
    return `${this.blob(digest)}.lock`;
  }

  manifestsDir(algorithm: DigestAlgorithm): string {
    return join(this.root, "manifests", algorithm);
  }
  manifest(digest: string): string {
    const { algorithm, hex } = parseDigest(digest);
    return join(this.manifestsDir(algorithm), hex);
  }

  modelsDir(): string {
    return join(this.root, "models");
  }
  modelDir(manifestDigest: string): string {
    return join(this.modelsDir(), digestHex(manifestDigest));
  }
  modelRecord(manifestDigest: string): string {
    return `${this.modelDir(manifestDigest)}.json`;
  }

  refsDir(): string {
    return join(this.root, "refs");
  }
  repositoryRefs(registry: string, repository: string): string {
    return join(this.refsDir(), encodeURIComponent(registry), ...repository.split("/"));
  }
  tag(registry: string, repository: string, tag: string): string {
    return join(this.repositoryRefs(registry, repository), "@tags", `${tag}.json`);
  }
  digestRef(registry: string, repository: string, digest: string): string {
    const { algorithm, hex } = parseDigest(digest);
    return join(this.repositoryRefs(registry, repository), "@digests", algorithm, `${hex}.json`);
  }
}
