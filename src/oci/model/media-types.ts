/** Media types and annotation keys of OCI/Docker manifests and of the model artifacts llama-oci reads. */

// Manifests and indexes.
export const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
export const OCI_INDEX = "application/vnd.oci.image.index.v1+json";
export const DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json";
export const DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json";
export const DOCKER_MANIFEST_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json";
export const DOCKER_MANIFEST_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws";

export const MANIFEST_TYPES: readonly string[] = [OCI_MANIFEST, DOCKER_MANIFEST];
export const INDEX_TYPES: readonly string[] = [OCI_INDEX, DOCKER_MANIFEST_LIST];
export const SCHEMA1_TYPES: readonly string[] = [DOCKER_MANIFEST_SCHEMA1, DOCKER_MANIFEST_SCHEMA1_SIGNED];

/**
 * The Accept header for manifest requests. All four types are needed: registry 2.8.2 answers 404 for an OCI manifest
 * or index whose type is not accepted, and rewrites a Docker schema2 manifest to schema1 when schema2 is missing.
 */
export const MANIFEST_ACCEPT = [OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST].join(", ");

// Docker model artifacts (docker/model-runner pkg/distribution/types/config.go).
export const DOCKER_MODEL_CONFIG_V01 = "application/vnd.docker.ai.model.config.v0.1+json";
export const DOCKER_MODEL_CONFIG_V02 = "application/vnd.docker.ai.model.config.v0.2+json";
/** Pre-release config type (model-distribution before 2025-03). */
export const DOCKER_MODEL_CONFIG_PRE_RELEASE = "application/vnd.docker.ai.model.config.v1+json";
export const DOCKER_GGUF = "application/vnd.docker.ai.gguf.v3";
/** Pre-release GGUF layer type, paired with DOCKER_MODEL_CONFIG_PRE_RELEASE. */
export const DOCKER_GGUF_PRE_RELEASE = "application/vnd.docker.ai.model.file.v1+gguf";
export const DOCKER_MMPROJ = "application/vnd.docker.ai.mmproj";
/** The mmproj spelling of the docker/model-spec draft; readers accept both. */
export const DOCKER_GGUF_MMPROJ = "application/vnd.docker.ai.gguf.v3.mmproj";
/** LoRA adapter type of the docker/model-spec draft: a GGUF file that is not part of the model weights. */
export const DOCKER_GGUF_LORA = "application/vnd.docker.ai.gguf.v3.lora";
export const DOCKER_LICENSE = "application/vnd.docker.ai.license";
export const DOCKER_CHAT_TEMPLATE = "application/vnd.docker.ai.chat.template.jinja";
/** Any other file of a v0.2 artifact (tokenizer, config); its path is in the filepath annotation. */
export const DOCKER_MODEL_FILE = "application/vnd.docker.ai.model.file";
export const DOCKER_SAFETENSORS = "application/vnd.docker.ai.safetensors";
export const DOCKER_DDUF = "application/vnd.docker.ai.dduf";
export const DOCKER_VLLM_CONFIG_TAR = "application/vnd.docker.ai.vllm.config.tar";
export const DOCKER_DIR_TAR = "application/vnd.docker.ai.dir.tar";

export const DOCKER_MODEL_CONFIG_TYPES: readonly string[] = [
  DOCKER_MODEL_CONFIG_V01,
  DOCKER_MODEL_CONFIG_V02,
  DOCKER_MODEL_CONFIG_PRE_RELEASE,
];
export const MMPROJ_TYPES: readonly string[] = [DOCKER_MMPROJ, DOCKER_GGUF_MMPROJ];

// CNCF ModelPack (modelpack/model-spec specs-go/v1/mediatype.go).
export const CNCF_MODEL_MANIFEST = "application/vnd.cncf.model.manifest.v1+json";
export const CNCF_MODEL_CONFIG = "application/vnd.cncf.model.config.v1+json";
export const CNCF_WEIGHT_RAW = "application/vnd.cncf.model.weight.v1.raw";
export const CNCF_WEIGHT_TAR = "application/vnd.cncf.model.weight.v1.tar";
export const CNCF_WEIGHT_CONFIG_RAW = "application/vnd.cncf.model.weight.config.v1.raw";
export const CNCF_DOC_RAW = "application/vnd.cncf.model.doc.v1.raw";
export const CNCF_CODE_RAW = "application/vnd.cncf.model.code.v1.raw";
export const CNCF_DATASET_RAW = "application/vnd.cncf.model.dataset.v1.raw";
/** Written by older Docker Model Runner versions; not in the ModelPack spec, still read for compatibility. */
export const CNCF_WEIGHT_GGUF = "application/vnd.cncf.model.weight.v1.gguf";
export const CNCF_WEIGHT_SAFETENSORS = "application/vnd.cncf.model.weight.v1.safetensors";
export const CNCF_MODEL_PREFIX = "application/vnd.cncf.model.";
export const CNCF_WEIGHT_PREFIX = "application/vnd.cncf.model.weight.v1.";

/** Ollama's layer types (server/images.go, types/model): its library and Hugging Face's registry API use them. */
export const OLLAMA_MODEL = "application/vnd.ollama.image.model";
export const OLLAMA_PROJECTOR = "application/vnd.ollama.image.projector";
export const OLLAMA_LICENSE = "application/vnd.ollama.image.license";
export const OLLAMA_PARAMS = "application/vnd.ollama.image.params";
export const OLLAMA_SYSTEM = "application/vnd.ollama.image.system";
export const OLLAMA_TEMPLATE = "application/vnd.ollama.image.template";
export const OLLAMA_PREFIX = "application/vnd.ollama.image.";
/** The config of an Ollama manifest: a Docker image config holding Ollama's ConfigV2 fields. */
export const DOCKER_IMAGE_CONFIG = "application/vnd.docker.container.image.v1+json";

// Annotation keys.
export const ANNOTATION_FILEPATH = "org.cncf.model.filepath";
export const ANNOTATION_FILE_METADATA = "org.cncf.model.file.metadata+json";
export const ANNOTATION_TITLE = "org.opencontainers.image.title";
/** Set by buildx on attestation manifests inside an index. */
export const ANNOTATION_DOCKER_REFERENCE_TYPE = "vnd.docker.reference.type";

/** The type without parameters (`; charset=utf-8`), trimmed and lowercased, as the distribution spec asks. */
export function baseMediaType(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  const base = value.split(";", 1)[0]!.trim().toLowerCase();
  return base === "" ? undefined : base;
}

/** Whether a manifest's artifactType or config media type names a model artifact. */
export function isModelArtifactType(type: string | undefined): boolean {
  if (type === undefined) return false;
  return type === CNCF_MODEL_MANIFEST || type === CNCF_MODEL_CONFIG || DOCKER_MODEL_CONFIG_TYPES.includes(type);
}
