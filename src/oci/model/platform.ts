/**
 * Platform selection: which child of an image index is the model. The first child marked as a model artifact,
 * else go-containerregistry's default platform rule (first linux/amd64 child; one without platform counts).
 */
import { LlamaOciError } from "../../errors.js";
import type { Descriptor, ImageIndex, Platform } from "./manifest.js";
import { ANNOTATION_DOCKER_REFERENCE_TYPE, CNCF_MODEL_PREFIX, isModelArtifactType } from "./media-types.js";

/**
 * Picks the child of an index to pull: the first one marked as a model artifact, else go-containerregistry's default
 * platform rule (first linux/amd64 child, a child without platform counting as linux/amd64).
 */
export function selectManifestFromIndex(index: ImageIndex): Descriptor {
  if (index.manifests.length === 0) {
    throw new LlamaOciError("UNSUPPORTED_ARTIFACT", "the image index lists no manifests");
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

