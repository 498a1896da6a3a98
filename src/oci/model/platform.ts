/**
 * Platform selection: which child of an image index is the model. The first child marked as a model artifact,
 * else go-containerregistry's default platform rule (first linux/amd64 child; one without platform counts).
 */
import { LlamaOciError } from "../../errors.js";
import type { Descriptor, ImageIndex, Platform } from "./manifest.js";
import { ANNOTATION_DOCKER_REFERENCE_TYPE, CNCF_MODEL_PREFIX, isModelArtifactType } from "./media-types.js";

/** "os/arch[/variant]" (as `docker --platform` takes it), checked. */
export function parsePlatform(text: string, source = "platform"): Platform {
  const parts = text.trim().split("/");
  if (parts.length < 2 || parts.length > 3 || parts.some((part) => !/^[a-z0-9][a-z0-9._-]*$/i.test(part))) {
    throw new LlamaOciError("INVALID_ARGUMENT", `invalid ${source} ${JSON.stringify(text)}: expected os/arch or os/arch/variant`, {
      hint: "e.g. linux/amd64 or linux/arm64/v8",
    });
  }
  const [os, architecture, variant] = parts.map((part) => part.toLowerCase()) as [string, string, string | undefined];
  return variant === undefined ? { os, architecture } : { os, architecture, variant };
}

/**
 * Picks the child of an index to pull. Without `wanted`: the first one marked as a model artifact, else
 * go-containerregistry's default platform rule (first linux/amd64 child, a child without platform counting as
 * linux/amd64). With `wanted` (--platform, DOCKER_DEFAULT_PLATFORM): the first child of that platform (a variant
 * given must match; a child without platform counts as linux/amd64), model artifacts first.
 */
export function selectManifestFromIndex(index: ImageIndex, wanted?: Platform): Descriptor {
  if (index.manifests.length === 0) {
    throw new LlamaOciError("UNSUPPORTED_ARTIFACT", "the image index lists no manifests");
  }
  if (wanted !== undefined) {
    const matching = index.manifests.filter((child) => matches(child.platform, wanted));
    const chosen = matching.find(isModelDescriptor) ?? matching[0];
    if (chosen) return chosen;
    const platforms = [...new Set(index.manifests.map((child) => platformName(child.platform)))];
    throw new LlamaOciError(
      "UNSUPPORTED_ARTIFACT",
      `the image index has no manifest for platform ${platformName(wanted)} (it holds: ${platforms.join(", ")})`,
      { hint: "choose one of those with --platform, or pull a manifest by digest (name@sha256:...)" },
    );
  }
  const model = index.manifests.find(isModelDescriptor);
  if (model) return model;
  const candidates = index.manifests.filter((child) => child.annotations?.[ANNOTATION_DOCKER_REFERENCE_TYPE] === undefined);
  const amd64 = candidates.find(
    (child) => child.platform === undefined || (child.platform.os === "linux" && child.platform.architecture === "amd64"),
  );
  if (amd64) return amd64;
  const platforms = [...new Set(index.manifests.map((child) => platformName(child.platform)))];
  throw new LlamaOciError(
    "UNSUPPORTED_ARTIFACT",
    `the image index holds no model manifest and no linux/amd64 manifest (platforms: ${platforms.join(", ")})`,
    { hint: "Pull the manifest you want by digest (name@sha256:...)." },
  );
}

function matches(platform: Platform | undefined, wanted: Platform): boolean {
  const os = platform?.os ?? (platform === undefined ? "linux" : undefined);
  const architecture = platform?.architecture ?? (platform === undefined ? "amd64" : undefined);
  if (os?.toLowerCase() !== wanted.os || architecture?.toLowerCase() !== wanted.architecture) return false;
  return wanted.variant === undefined || platform?.variant?.toLowerCase() === wanted.variant;
}

function isModelDescriptor(child: Descriptor): boolean {
  const type = child.artifactType;
  if (type !== undefined && (isModelArtifactType(type) || type.startsWith("application/vnd.docker.ai.") || type.startsWith(CNCF_MODEL_PREFIX))) {
    return true;
  }
  return Object.keys(child.annotations ?? {}).some((key) => key.startsWith("org.cncf.model."));
}

function platformName(platform: Platform | undefined): string {
  if (platform === undefined) return "none";
  const parts = [platform.os ?? "?", platform.architecture ?? "?"];
  if (platform.variant) parts.push(platform.variant);
  return parts.join("/");
}

