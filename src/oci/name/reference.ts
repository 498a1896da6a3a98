/**
 * Image references: the distribution/reference grammar with Docker's normalization (ParseNormalizedNamed followed
 * by ParseDockerRef), except that a one-component Docker Hub name gets the "ai/" namespace where Docker would give
 * it "library/", as docker/model-runner does. Explicit "library/x" is left as written. Two registries have rules
 * of their own (name/host.ts): Hugging Face's names keep their capitals (`hf.co/Qwen/Qwen3-0.6B-GGUF:Q8_0`), and
 * the Ollama library's one-component names get "library/" as Ollama gives them.
 */
import { LlamaOciError } from "../../errors.js";
import { checkDigest } from "./digest.js";
import { DOCKER_HUB, DOCKER_HUB_API_HOST, registryName, registryRules } from "./host.js";

export { DOCKER_HUB, DOCKER_HUB_API_HOST } from "./host.js";
export const DEFAULT_NAMESPACE = "ai";
export const DEFAULT_TAG = "latest";

export interface Reference {
  /** "docker.io" for Docker Hub, otherwise host[:port] in its canonical form (lowercase; see name/host.ts). */
  registry: string;
  /** The path without the registry, e.g. "ai/smollm2" or "team/model". */
  repository: string;
  /** "latest" when neither tag nor digest was given; absent when a digest was given. */
  tag?: string;
  /** "sha256:<64 hex>" or "sha512:<128 hex>". */
  digest?: string;
  /** host[:port] to send requests to. */
  apiHost: string;
}

const HINT = "use the form [registry/]repository[:tag|@sha256:digest], e.g. ai/smollm2:135M-Q4_0";
const MAX_REPOSITORY_LENGTH = 255;
const MAX_TAG_LENGTH = 128;
const SHOWN_INPUT_LENGTH = 300;

const IMAGE_ID = /^[a-f0-9]{64}$/;
const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^\w[\w.-]*$/;

export function parseReference(input: string): Reference {
  if (typeof input !== "string") throw invalid(String(input), "reference must be a string");
  if (input === "") throw invalid(input, "repository name must not be empty");
  if (/\s/.test(input)) throw invalid(input, "reference must not contain whitespace");
  if (IMAGE_ID.test(input)) {
    throw invalid(input, "repository name cannot be a 64-character hexadecimal string (that is an image ID)");
  }

  const { registry, remainder } = splitRegistry(input);
  // With the registry (and so any port) cut off, the first "@" starts the digest and the first ":" the tag.
  const at = remainder.indexOf("@");
  const nameAndTag = at === -1 ? remainder : remainder.slice(0, at);
  const digest = at === -1 ? undefined : remainder.slice(at + 1);
  const colon = nameAndTag.indexOf(":");
  const path = colon === -1 ? nameAndTag : nameAndTag.slice(0, colon);
  const tag = colon === -1 ? undefined : nameAndTag.slice(colon + 1);

  const rules = registryRules(registry);
  checkPath(input, path, rules.keepsCase);
  const repository = rules.defaultNamespace !== undefined && !path.includes("/") ? `${rules.defaultNamespace}/${path}` : path;
  if (repository.length > MAX_REPOSITORY_LENGTH) {
    throw invalid(input, `repository name too long (max ${MAX_REPOSITORY_LENGTH} characters)`);
  }
  if (tag !== undefined) checkTag(input, tag);
  if (digest !== undefined) checkDigestPart(input, digest);

  const apiHost = registry === DOCKER_HUB ? DOCKER_HUB_API_HOST : registry;
  // As ParseDockerRef: a digest pins the content, so a tag next to it is dropped.
  return digest !== undefined
    ? { registry, repository, digest, apiHost }
    : { registry, repository, tag: tag ?? DEFAULT_TAG, apiHost };
}

/** The canonical form, e.g. "docker.io/ai/smollm2:135M-Q4_0" or "ghcr.io/o/m@sha256:...". */
export function formatReference(ref: Reference): string {
  return `${ref.registry}/${ref.repository}${suffix(ref)}`;
}

/** The form to show a user: "docker.io/" removed where the result still parses back to the same reference. */
export function familiarReference(ref: Reference): string {
  const name = ref.registry === DOCKER_HUB && readsAsHubPath(ref.repository) ? ref.repository : `${ref.registry}/${ref.repository}`;
  return `${name}${suffix(ref)}`;
}

function suffix(ref: Reference): string {
  if (ref.digest !== undefined) return `@${ref.digest}`;
  return ref.tag !== undefined ? `:${ref.tag}` : "";
}

/** True when `repository` without a registry would be read as this Docker Hub path (and not get "ai/" added). */
function readsAsHubPath(repository: string): boolean {
  const slash = repository.indexOf("/");
  if (slash === -1) return false;
  const first = repository.slice(0, slash);
  return !looksLikeRegistry(first);
}

function looksLikeRegistry(component: string): boolean {
  return component === "localhost" || /[.:]/.test(component) || component !== component.toLowerCase();
}

/** Docker's splitDockerDomain; the registry in its canonical form, Hub aliases folded into "docker.io". */
function splitRegistry(input: string): { registry: string; remainder: string } {
  const slash = input.indexOf("/");
  if (slash === -1) return { registry: DOCKER_HUB, remainder: input };
  const first = input.slice(0, slash);
  if (!looksLikeRegistry(first)) return { registry: DOCKER_HUB, remainder: input };
  const registry = registryName(first);
  if (registry === undefined) throw invalid(input, `invalid registry host ${JSON.stringify(first)}`);
  return { registry, remainder: input.slice(slash + 1) };
}

/** The path grammar; `keepsCase` for the registries whose names have capitals (Hugging Face's). */
function checkPath(input: string, path: string, keepsCase: boolean): void {
  if (path === "") throw invalid(input, "repository name must not be empty");
  if (!keepsCase && path !== path.toLowerCase()) throw invalid(input, "repository name must be lowercase");
  for (const component of path.split("/")) {
    if (component === "") throw invalid(input, "repository name has an empty path component");
    if (!PATH_COMPONENT.test(keepsCase ? component.toLowerCase() : component)) {
      throw invalid(
        input,
        `invalid path component ${JSON.stringify(component)} (lowercase letters and digits, separated by ".", "_", "__" or "-")`,
      );
    }
  }
}

function checkTag(input: string, tag: string): void {
  if (tag === "") throw invalid(input, "tag must not be empty");
  if (tag.length > MAX_TAG_LENGTH) throw invalid(input, `tag too long (max ${MAX_TAG_LENGTH} characters)`);
  if (!TAG.test(tag)) {
    throw invalid(input, `invalid tag ${JSON.stringify(tag)} (letters, digits, "_", "." and "-", not starting with "." or "-")`);
  }
}

function checkDigestPart(input: string, digest: string): void {
  const checked = checkDigest(digest);
  if ("problem" in checked) throw invalid(input, checked.problem);
}

function invalid(input: string, problem: string): LlamaOciError {
  const shown = input.length > SHOWN_INPUT_LENGTH ? `${input.slice(0, SHOWN_INPUT_LENGTH)}...` : input;
  return new LlamaOciError("INVALID_REFERENCE", `invalid reference ${JSON.stringify(shown)}: ${problem}`, { hint: HINT });
}
