/**
 * Content digests, "<algorithm>:<hex>": the one validator (references, manifests and the cache all use it) and
 * the digest of bytes in memory. Hashing files is store/hashing.ts's.
 */
import { createHash } from "node:crypto";
import { LlamaOciError } from "../../errors.js";

export type DigestAlgorithm = "sha256" | "sha512";

/** Hex length per supported algorithm (the OCI image-spec's registered ones). */
const HEX_LENGTH: Readonly<Record<DigestAlgorithm, number>> = { sha256: 64, sha512: 128 };
/** The distribution reference grammar's digest: an algorithm identifier, ":", hex. */
const ALGORITHM = /^[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*$/;
const HEX = /^[0-9a-fA-F]+$/;
const LOWER_HEX = /^[0-9a-f]+$/;

export type DigestCheck = { algorithm: DigestAlgorithm; hex: string } | { problem: string };

/**
 * The grammar, then go-digest's checks: a supported algorithm, the exact length, lowercase hex. A digest is also a
 * file name in the cache, so anything looser is refused. Returns what is wrong as a phrase for the caller's message.
 */
export function checkDigest(digest: string): DigestCheck {
  const colon = digest.indexOf(":");
  const algorithm = colon === -1 ? "" : digest.slice(0, colon);
  const hex = colon === -1 ? "" : digest.slice(colon + 1);
  if (!ALGORITHM.test(algorithm) || !HEX.test(hex)) {
    return { problem: 'invalid checksum digest format (expected "sha256:<64 hex digits>")' };
  }
  if (algorithm !== "sha256" && algorithm !== "sha512") {
    return { problem: `unsupported digest algorithm ${JSON.stringify(algorithm)} (use sha256 or sha512)` };
  }
  const length = HEX_LENGTH[algorithm];
  if (hex.length !== length) {
    return { problem: `invalid checksum digest length (${algorithm} takes ${length} hex characters, got ${hex.length})` };
  }
  if (!LOWER_HEX.test(hex)) return { problem: "invalid checksum digest format (hex must be lowercase)" };
  return { algorithm, hex };
}

/** Splits and validates "<algorithm>:<hex>"; throws INVALID_ARGUMENT saying what is wrong. */
export function parseDigest(digest: string): { algorithm: DigestAlgorithm; hex: string } {
  const checked = typeof digest === "string" ? checkDigest(digest) : { problem: 'expected a string like "sha256:<64 hex digits>"' };
  if ("problem" in checked) throw new LlamaOciError("INVALID_ARGUMENT", `invalid digest ${describe(digest)}: ${checked.problem}`);
  return checked;
}

export function isDigest(digest: string): boolean {
  return !("problem" in checkDigest(digest));
}

/** The hex part of a valid digest. */
export function digestHex(digest: string): string {
  return parseDigest(digest).hex;
}

/** The digest of bytes in memory, with the algorithm of `like` (a digest) or sha256. */
export function digestOf(data: Buffer | Uint8Array, algorithm: DigestAlgorithm = "sha256"): string {
  return `${algorithm}:${createHash(algorithm).update(data).digest("hex")}`;
}

export function sha256Digest(data: Buffer | Uint8Array): string {
  return digestOf(data, "sha256");
}

/** A digest quoted for a message, shortened so that a huge bogus value cannot flood the output. */
function describe(value: unknown): string {
  if (typeof value !== "string") return typeof value;
  const shown = value.length > 80 ? `${value.slice(0, 80)}…` : value;
  return JSON.stringify(shown);
}
