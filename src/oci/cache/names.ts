/**
 * Names in the cache, as a user gives them to rm, tag and inspect: a tag, repository@digest or a model ID, and
 * what each stands for; and how to show a cached record's name.
 */
import { LlamaOciError } from "../../errors.js";
import { familiarReference, formatReference, parseReference, type Reference } from "../name/index.js";
import type { RefEntry, Store } from "../store/index.js";
import { cachedModelDigest, readModelSafely } from "./reachable.js";

export function modelId(digest: string): string {
  return digest.slice(digest.indexOf(":") + 1, digest.indexOf(":") + 13);
}

/** The reference a record stands for, from where it sits in refs/ (undefined for a name that does not parse). */
export function entryReference(entry: RefEntry): Reference | undefined {
  const suffix = entry.tag !== undefined ? `:${entry.tag}` : `@${entry.digest ?? ""}`;
  try {
    return parseReference(`${entry.registry}/${entry.repository}${suffix}`);
  } catch {
    return undefined;
  }
}

/** What a name given to rm or tag stands for in the cache. */
export type LocalTarget =
  /** A tag: exactly one record. */
  | { kind: "tag"; ref: Reference; entry: RefEntry }
  /** repository@digest: every record of that repository pointing at this content. */
  | { kind: "digest"; ref: Reference; manifestDigest: string; entries: RefEntry[] }
  /** A model ID (12 to 64 hex digits, or sha256:<hex>): every record pointing at that model. */
  | { kind: "id"; manifestDigest: string; entries: RefEntry[] };

const ID_PATTERN = /^(?:sha256:)?([0-9a-f]{12,64})$/;

/**
 * Finds what `input` names in the cache. A name is tried as a reference first (parseReference: "smollm2" is
 * docker.io/ai/smollm2:latest); hex of 12 or more digits that is not a cached tag is a model ID, as in docker rmi.
 */
export async function resolveLocal(store: Store, input: string): Promise<LocalTarget> {
  const entries = await store.refs.list();
  const idMatch = ID_PATTERN.exec(input);
  let ref: Reference | undefined;
  try {
    ref = parseReference(input);
  } catch (error) {
    if (!idMatch) throw error;
  }
  if (ref?.tag !== undefined) {
    const entry = entries.find((e) => e.tag === ref.tag && e.registry === ref.registry && e.repository === ref.repository);
    if (entry) return { kind: "tag", ref, entry };
  } else if (ref?.digest !== undefined) {
    const digest = ref.digest;
    const inRepository = entries.filter(
      (e) => e.registry === ref.registry && e.repository === ref.repository && (e.record.digest === digest || e.record.manifestDigest === digest),
    );
    const manifestDigest = inRepository[0]?.record.manifestDigest ?? (await cachedModelOf(store, digest));
    if (manifestDigest !== undefined) return { kind: "digest", ref, manifestDigest, entries: inRepository };
  }
  if (idMatch) {
    const manifestDigest = await findModelById(store, entries, idMatch[1]!);
    if (manifestDigest) {
      return { kind: "id", manifestDigest, entries: entries.filter((e) => e.record.manifestDigest === manifestDigest) };
    }
  }
  throw new LlamaOciError("NOT_FOUND", `${describeInput(input)} is not in the cache (${store.root})`, {
    hint: "run 'llama-oci ls' to see the cached models",
  });
}

/** The cached model a manifest or index digest stands for (an index's chosen child, as pull picks it). */
async function cachedModelOf(store: Store, digest: string): Promise<string | undefined> {
  if (await readModelSafely(store, digest)) return digest;
  const manifestDigest = await cachedModelDigest(store, digest);
  return manifestDigest !== undefined && (await readModelSafely(store, manifestDigest)) ? manifestDigest : undefined;
}

async function findModelById(store: Store, entries: RefEntry[], prefix: string): Promise<string | undefined> {
  const candidates = new Set(entries.map((e) => e.record.manifestDigest));
  for (const model of await store.models.list()) {
    if (model.record) candidates.add(model.manifestDigest);
  }
  const matches = [...candidates].filter((digest) => digest.slice(digest.indexOf(":") + 1).startsWith(prefix));
  if (matches.length > 1) {
    throw new LlamaOciError("INVALID_ARGUMENT", `model ID ${prefix} is ambiguous: it matches ${matches.length} models`, {
      hint: "give more digits of the ID",
    });
  }
  return matches[0];
}

/** The name as typed, with what it expands to when that differs: "smollm2 (docker.io/ai/smollm2:latest)". */
export function describeInput(input: string): string {
  try {
    const canonical = formatReference(parseReference(input));
    return canonical === input ? input : `${input} (${canonical})`;
  } catch {
    return input;
  }
}

/** The familiar name of a record, for messages like "Untagged: ...". */
export function entryName(entry: RefEntry): string {
  const ref = entryReference(entry);
  if (ref) return familiarReference(ref);
  return `${entry.registry}/${entry.repository}${entry.tag !== undefined ? `:${entry.tag}` : `@${entry.digest ?? ""}`}`;
}
