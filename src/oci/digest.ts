import { createHash } from "node:crypto";
import { LlamaOciError } from "../errors.js";

export type DigestAlgorithm = "sha256" | "sha512";

const HEX_LENGTH: Record<DigestAlgorithm, number> = { sha256: 64, sha512: 128 };

/**
 * Splits and validates "<algorithm>:<hex>". Only the two registered OCI algorithms are accepted, with lowercase hex
 * of exactly the algorithm's length: a digest is also a file name in the cache, so anything looser is refused.
 */
export function parseDigest(digest: string): { algorithm: DigestAlgorithm; hex: string } {
  if (typeof digest !== "string") {
    throw new LlamaOciError("INVALID_ARGUMENT", `invalid digest ${describe(digest)}: expected a string like "sha256:<64 hex digits>"`);
  }
  const colon = digest.indexOf(":");
  const algorithm = colon < 0 ? "" : digest.slice(0, colon);
  const hex = colon < 0 ? "" : digest.slice(colon + 1);
  if (algorithm !== "sha256" && algorithm !== "sha512") {
    throw new LlamaOciError(
      "INVALID_ARGUMENT",
      `invalid digest ${describe(digest)}: the algorithm must be sha256 or sha512, as in "sha256:<64 hex digits>"`,
    );
  }
  const length = HEX_LENGTH[algorithm];
  if (hex.length !== length || !/^[0-9a-f]+$/.test(hex)) {
    throw new LlamaOciError(
      "INVALID_ARGUMENT",
      `invalid digest ${describe(digest)}: a ${algorithm} digest needs exactly ${length} lowercase hex digits`,
    );
  }
  return { algorithm, hex };
}

export function sha256Digest(data: Buffer | Uint8Array): string {
  return `sha256:${createHash("sha256").update(data).digest("hex")}`;
}

/** The hex part of a valid digest. */
export function digestHex(digest: string): string {
  return parseDigest(digest).hex;
}

/** A digest quoted for a message, shortened so that a huge bogus value cannot flood the output. */
function describe(value: unknown): string {
  if (typeof value !== "string") return typeof value;
  const shown = value.length > 80 ? `${value.slice(0, 80)}…` : value;
  return JSON.stringify(shown);
}
