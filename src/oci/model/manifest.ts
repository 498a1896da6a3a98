/**
 * Manifests and image indexes: their types, and parsing a body as the distribution spec says (Content-Type and
 * body must agree), keeping only validated fields.
 */
import { LlamaOciError } from "../../errors.js";
import { isObject } from "../../util/objects.js";
import { parseDigest } from "../name/index.js";
import {
  INDEX_TYPES,
  MANIFEST_TYPES,
  OCI_INDEX,
  OCI_MANIFEST,
  SCHEMA1_TYPES,
  baseMediaType,
} from "./media-types.js";

export interface Platform {
  os?: string;
  architecture?: string;
  variant?: string;
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  artifactType?: string;
  platform?: Platform;
  urls?: string[];
}

export interface ImageManifest {
  schemaVersion: number;
  mediaType?: string;
  artifactType?: string;
  config: Descriptor;
  layers: Descriptor[];
  annotations?: Record<string, string>;
  subject?: Descriptor;
}

export interface ImageIndex {
  schemaVersion: number;
  mediaType?: string;
  manifests: Descriptor[];
  annotations?: Record<string, string>;
}

export type ParsedManifest =
  | { kind: "manifest"; manifest: ImageManifest; mediaType: string }
  | { kind: "index"; index: ImageIndex; mediaType: string };

/** Registries must accept manifests of at least 4 MiB; twice that leaves room and still bounds memory. */
export const MAX_MANIFEST_BYTES = 8 * 1024 * 1024;

const SCHEMA1_HINT = "Docker schema 1 manifests are obsolete; push the model again with a current client (OCI or Docker schema 2).";

/**
 * Parses a manifest or index body as the distribution spec says: Content-Type parameters are ignored, a mediaType in
 * the body must agree with the Content-Type, and the kind falls back to the body's shape when neither names it.
 * The result holds only the fields llama-oci knows, each validated.
 */
export function parseManifest(body: Buffer, contentType: string | undefined): ParsedManifest {
  if (body.length > MAX_MANIFEST_BYTES) {
    throw new LlamaOciError(
      "REGISTRY",
      `the manifest is ${body.length} bytes, more than the ${MAX_MANIFEST_BYTES} bytes llama-oci accepts`,
    );
  }
  let json: unknown;
  try {
    json = JSON.parse(body.toString("utf8"));
  } catch {
    const type = baseMediaType(contentType);
    throw new LlamaOciError("REGISTRY", `the registry returned a manifest that is not valid JSON${type ? ` (Content-Type ${type})` : ""}`, {
      hint: "A proxy or captive portal may have answered instead of the registry.",
    });
  }
  if (!isObject(json)) throw invalid("the manifest is not a JSON object");

  const headerType = baseMediaType(contentType);
  const bodyType = optionalString(json, "mediaType", "manifest");
  if (
    (headerType !== undefined && SCHEMA1_TYPES.includes(headerType)) ||
    (bodyType !== undefined && SCHEMA1_TYPES.includes(bodyType)) ||
    json.schemaVersion === 1
  ) {
    throw new LlamaOciError("UNSUPPORTED_ARTIFACT", "the manifest is a Docker schema 1 manifest, which llama-oci does not read", {
      hint: SCHEMA1_HINT,
    });
  }
  if (bodyType !== undefined && !isKnownType(bodyType)) {
    throw new LlamaOciError("UNSUPPORTED_ARTIFACT", `unsupported manifest media type ${bodyType}`, {
      hint: `llama-oci reads ${[...MANIFEST_TYPES, ...INDEX_TYPES].join(", ")}.`,
    });
  }
  if (bodyType !== undefined && headerType !== undefined && isKnownType(headerType) && headerType !== bodyType) {
    throw invalid(`the manifest says its mediaType is ${bodyType} but the registry sent Content-Type ${headerType}`);
  }

  const mediaType = bodyType ?? (headerType !== undefined && isKnownType(headerType) ? headerType : inferType(json));
  if (json.schemaVersion !== 2) {
    throw invalid(`the manifest has schemaVersion ${JSON.stringify(json.schemaVersion) ?? "missing"}; expected 2`);
  }
  if (INDEX_TYPES.includes(mediaType)) {
    return { kind: "index", index: parseIndexFields(json, bodyType), mediaType };
  }
  return { kind: "manifest", manifest: parseManifestFields(json, bodyType), mediaType };
}

function isKnownType(type: string): boolean {
  return MANIFEST_TYPES.includes(type) || INDEX_TYPES.includes(type);
}

function inferType(json: Record<string, unknown>): string {
  if (Array.isArray(json.manifests)) return OCI_INDEX;
  if (Array.isArray(json.layers) || json.config !== undefined) return OCI_MANIFEST;
  if (Array.isArray(json.fsLayers)) {
    throw new LlamaOciError("UNSUPPORTED_ARTIFACT", "the manifest is a Docker schema 1 manifest, which llama-oci does not read", {
      hint: SCHEMA1_HINT,
    });
  }
  throw new LlamaOciError("UNSUPPORTED_ARTIFACT", "the registry returned a document that is neither an image manifest nor an image index");
}

function parseIndexFields(json: Record<string, unknown>, mediaType: string | undefined): ImageIndex {
  if (!Array.isArray(json.manifests)) {
    throw invalid(`the image index has no "manifests" list${Array.isArray(json.layers) ? " (it looks like an image manifest)" : ""}`);
  }
  const index: ImageIndex = {
    schemaVersion: 2,
    manifests: json.manifests.map((child, i) => parseDescriptor(child, `manifests[${i}]`)),
  };
  if (mediaType !== undefined) index.mediaType = mediaType;
  const annotations = parseAnnotations(json.annotations, "annotations");
  if (annotations) index.annotations = annotations;
  return index;
}

function parseManifestFields(json: Record<string, unknown>, mediaType: string | undefined): ImageManifest {
  if (json.config === undefined) {
    throw invalid(`the image manifest has no config${Array.isArray(json.manifests) ? " (it looks like an image index)" : ""}`);
  }
  if (!Array.isArray(json.layers)) throw invalid('the image manifest has no "layers" list');
  const manifest: ImageManifest = {
    schemaVersion: 2,
    config: parseDescriptor(json.config, "config"),
    layers: json.layers.map((layer, i) => parseDescriptor(layer, `layers[${i}]`)),
  };
  if (mediaType !== undefined) manifest.mediaType = mediaType;
  const artifactType = optionalString(json, "artifactType", "manifest");
  if (artifactType !== undefined) manifest.artifactType = artifactType;
  const annotations = parseAnnotations(json.annotations, "annotations");
  if (annotations) manifest.annotations = annotations;
  if (json.subject !== undefined) manifest.subject = parseDescriptor(json.subject, "subject");
  return manifest;
}

function parseDescriptor(value: unknown, where: string): Descriptor {
  if (!isObject(value)) throw invalid(`${where} is not a descriptor object`);
  const mediaType = value.mediaType;
  if (typeof mediaType !== "string" || mediaType === "") throw invalid(`${where} has no mediaType`);
  if (typeof value.digest !== "string") throw invalid(`${where} has no digest`);
  try {
    parseDigest(value.digest);
  } catch (error) {
    throw invalid(`${where}: ${(error as Error).message}`);
  }
  const size = value.size;
  if (typeof size !== "number" || !Number.isSafeInteger(size) || size < 0) {
    throw invalid(`${where} has size ${JSON.stringify(size) ?? "missing"}; expected a non-negative integer`);
  }
  const descriptor: Descriptor = { mediaType, digest: value.digest, size };
  const annotations = parseAnnotations(value.annotations, `${where}.annotations`);
  if (annotations) descriptor.annotations = annotations;
  const artifactType = optionalString(value, "artifactType", where);
  if (artifactType !== undefined) descriptor.artifactType = artifactType;
  if (value.platform !== undefined) descriptor.platform = parsePlatform(value.platform, `${where}.platform`);
  if (value.urls !== undefined) {
    if (!Array.isArray(value.urls) || !value.urls.every((url) => typeof url === "string")) {
      throw invalid(`${where}.urls is not a list of strings`);
    }
    descriptor.urls = [...value.urls];
  }
  return descriptor;
}

function parsePlatform(value: unknown, where: string): Platform {
  if (!isObject(value)) throw invalid(`${where} is not an object`);
  const platform: Platform = {};
  for (const key of ["os", "architecture", "variant"] as const) {
    const field = optionalString(value, key, where);
    if (field !== undefined) platform[key] = field;
  }
  return platform;
}

function parseAnnotations(value: unknown, where: string): Record<string, string> | undefined {
  if (value === undefined || value === null) return undefined;
  if (!isObject(value)) throw invalid(`${where} is not an object`);
  const annotations: Record<string, string> = {};
  for (const [key, entry] of Object.entries(value)) {
    if (typeof entry !== "string") throw invalid(`${where}[${JSON.stringify(key)}] is not a string`);
    annotations[key] = entry;
  }
  return annotations;
}

function optionalString(object: Record<string, unknown>, key: string, where: string): string | undefined {
  const value = object[key];
  if (value === undefined) return undefined;
  if (typeof value !== "string") throw invalid(`${where}.${key} is not a string`);
  return value;
}

function invalid(message: string): LlamaOciError {
  return new LlamaOciError("UNSUPPORTED_ARTIFACT", `invalid manifest: ${message}`);
}
