/**
 * `oci:<dir>[:<tag>]`, as skopeo and containers/image name an OCI image layout: the folder, and the name
 * (org.opencontainers.image.ref.name) of one manifest in its index.json.
 */
import { resolve } from "node:path";
import { LlamaOciError } from "../../errors.js";

export const LAYOUT_PREFIX = "oci:";
export const REF_NAME = "org.opencontainers.image.ref.name";
/** containerd's annotation for the full reference an image was saved from; llama-oci writes and reads it too. */
export const IMAGE_NAME = "io.containerd.image.name";

export interface LayoutLocation {
  /** Absolute path of the folder. */
  dir: string;
  /** The manifest's ref.name; undefined: the only manifest in the layout. */
  tag?: string;
}

const TAG = /^[\w][\w.-]{0,127}$/;

export function isLayoutReference(input: string): boolean {
  return typeof input === "string" && input.startsWith(LAYOUT_PREFIX);
}

/** Splits `oci:<dir>[:<tag>]`; the tag is what follows the last ':' when that is a tag and not part of a path. */
export function parseLayoutLocation(input: string): LayoutLocation {
  const rest = input.slice(LAYOUT_PREFIX.length);
  if (rest === "") {
    throw new LlamaOciError("INVALID_REFERENCE", `invalid OCI layout ${JSON.stringify(input)}: no folder given`, {
      hint: "use oci:<folder>[:<tag>], e.g. oci:/mnt/usb/models:smollm2",
    });
  }
  const colon = rest.lastIndexOf(":");
  const candidate = colon > 0 ? rest.slice(colon + 1) : undefined;
  // "C:\models" on Windows: a one-letter part before the colon is a drive, not a folder.
  if (candidate !== undefined && TAG.test(candidate) && !(colon === 1 && /^[A-Za-z]$/.test(rest[0]!))) {
    return { dir: resolve(rest.slice(0, colon)), tag: candidate };
  }
  return { dir: resolve(rest) };
}
