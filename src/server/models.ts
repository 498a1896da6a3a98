/**
 * The models a server has loaded, by reference: resolving a request's `model` (from the cache, else one pull for
 * any number of requests), loading with the server's options, leases that keep a model loaded while requests use
 * it, keep-alive expiry after the last one, and at most maxModels loaded (the least recently used idle one is
 * unloaded to make room).
 */
import { readFile, stat } from "node:fs/promises";
import { basename, resolve as resolvePath } from "node:path";
import { LlamaOciError } from "../errors.js";
import { loadModel } from "../llama/model.js";
import type { LlamaModel } from "../llama/model.js";
import type { ContextOptions, ModelOptions } from "../llama/options.js";
import { familiarReference, formatReference, parseReference } from "../oci/name/index.js";
import type { ProgressListener } from "../oci/progress.js";
import { pull, type PullOptions, type PullResult } from "../oci/pull.js";
import { Embedder } from "./embedder.js";
import { HttpError, modelNotFound, oneLine } from "./http-errors.js";
import type { ServerMetrics } from "./metrics.js";
import { formatDuration, type ResolvedServeOptions } from "./options.js";
import { createSequenceRunner, type SequenceRunner } from "./runner.js";

/** setTimeout's limit; a longer keep-alive means forever. */
const MAX_TIMER_MS = 2 ** 31 - 1;
/** A chat template file in an artifact larger than this is ignored (the GGUF's own is used). */
const MAX_TEMPLATE_BYTES = 1024 * 1024;

export type UnloadReason = "keep_alive" | "evicted" | "request" | "deleted" | "shutdown";

/** What a request's `model` names. */
export type ModelTarget =
  | { kind: "reference"; key: string; name: string; reference: string }
  | { kind: "file"; key: string; name: string; path: string };

export interface LoadedModel {
  readonly key: string;
  /** The name clients see and send: the familiar reference ("ai/smollm2:135M-Q4_0"), or a local file's name. */
  readonly name: string;
  readonly model: LlamaModel;
  /** The GGUF that was loaded. */
  readonly path: string;
  /** The pull that resolved it, for a reference. */
  readonly pull: PullResult | undefined;
  readonly runner: SequenceRunner;
  readonly embedder: Embedder;
  /** The artifact's chat template, when it has its own file (else the GGUF's is used). */
  readonly chatTemplate: string | undefined;
  readonly loadedAt: Date;
  /** When keep-alive unloads it; undefined while in use or when it stays loaded. */
  readonly expiresAt: Date | undefined;
  /** Requests using it now. */
  readonly active: number;
}

interface Entry extends LoadedModel {
  expiresAt: Date | undefined;
  active: number;
  keepAliveMs: number;
  lastUsed: number;
  timer: NodeJS.Timeout | undefined;
}

export interface Lease {
  readonly model: LoadedModel;
  /**
   * For a lease taken to generate: ends the request's announcement to the model's sequences (SequenceRunner.expect),
   * to be passed to the run as RunOptions.arriving; release() ends it too. A no-op for other leases.
   */
  readonly arriving: () => void;
  /** Ends the request's use of the model; `keepAliveMs` (Ollama's keep_alive) overrides the server's for this once. */
  release(keepAliveMs?: number): void;
}

interface PullFlight {
  promise: Promise<PullResult>;
  listeners: Set<ProgressListener>;
}

export class ModelManager {
  #options: ResolvedServeOptions;
  #metrics: ServerMetrics;
  #loaded = new Map<string, Entry>();
  #loading = new Map<string, Promise<Entry>>();
  /** Requests waiting for a model to load, per key: such a model is never evicted. */
  #demand = new Map<string, number>();
  /** Loads that have made room for themselves and are not yet in #loaded. */
  #reserved = 0;
  #roomWaiters: (() => void)[] = [];
  #pulls = new Map<string, PullFlight>();
  #unloading = new Set<Promise<void>>();
  #local = new Map<string, string>();
  #pinned = new Set<string>();
  #closing = new AbortController();

  constructor(options: ResolvedServeOptions, metrics: ServerMetrics) {
    this.#options = options;
    this.#metrics = metrics;
    for (const model of options.models) {
      if (isLocalPath(model)) this.#local.set(basename(model).replace(/\.gguf$/i, ""), resolvePath(model));
    }
  }

  /** The model requests without a `model` field use: the first preloaded one. */
  get defaultModel(): string | undefined {
    return this.#options.models[0];
  }

  /** Loaded models, most recently used first. */
  loaded(): LoadedModel[] {
    return [...this.#loaded.values()].sort((a, b) => b.lastUsed - a.lastUsed);
  }

  /** True while `name` is being loaded (or pulled for loading). */
  isLoading(key: string): boolean {
    return this.#loading.has(key);
  }

  /** What `name` (a request's model field) refers to; throws HttpError 400 for an invalid reference. */
  target(name: string | undefined, param = "model"): ModelTarget {
    const given = name === undefined || name.trim() === "" ? this.defaultModel : name;
    if (given === undefined || given.trim() === "") {
      throw new HttpError(400, `${param} is required (this server has no default model: start it with --model)`, { param, code: "missing_model" });
    }
    const local = this.#local.get(given) ?? (isLocalPath(given) ? this.#localByPath(given) : undefined);
    if (local !== undefined) return { kind: "file", key: `file:${local}`, name: basename(local).replace(/\.gguf$/i, ""), path: local };
    try {
      const ref = parseReference(given.trim());
      return { kind: "reference", key: formatReference(ref), name: familiarReference(ref), reference: given.trim() };
    } catch (error) {
      throw new HttpError(400, oneLine(error), { param, code: "invalid_model" });
    }
  }

  /**
   * Loads the model a request names (pulling it when it is not cached and the policy allows) and holds it until
   * release(). Waiting ends early, rejecting with code ABORTED, when `signal` aborts; the load itself goes on for
   * the other requests waiting for it. `use.generate`: the request will generate, and is announced to the model's
   * sequences from now until it reaches them (Lease.arriving).
   */
  async acquire(name: string | undefined, signal?: AbortSignal, use: { generate?: boolean } = {}): Promise<Lease> {
    const target = this.target(name);
    const key = target.key;
    this.#demand.set(key, (this.#demand.get(key) ?? 0) + 1);
    try {
      let entry = this.#loaded.get(key);
      if (!entry) {
        let loading = this.#loading.get(key);
        if (!loading) {
          loading = this.#load(target);
          this.#loading.set(key, loading);
          const forget = () => void (this.#loading.get(key) === loading && this.#loading.delete(key));
          loading.then(forget, forget);
        }
        entry = await abortable(loading, signal);
      }
      return this.#lease(entry, use.generate === true);
    } finally {
      const left = (this.#demand.get(key) ?? 1) - 1;
      if (left > 0) this.#demand.set(key, left);
      else this.#demand.delete(key);
    }
  }

  /** Loads every model given at start (they stay loaded). */
  async preload(): Promise<void> {
    for (const name of this.#options.models) {
      const target = this.target(name);
      this.#pinned.add(target.key);
      const lease = await this.acquire(name);
      lease.release();
    }
  }

  /**
   * Pulls `name` from its registry (an explicit pull: the registry is asked even when the model is cached). Joins
   * a pull of the same reference already running; `onProgress` gets the events from now on.
   */
  pullModel(name: string, options: { onProgress?: ProgressListener; insecure?: boolean } = {}): Promise<PullResult> {
    const target = this.target(name);
    if (target.kind === "file") throw new HttpError(400, `${name} is a local file, not a reference to pull`, { param: "model" });
    return this.#pull(target, options);
  }

  /** Unloads the model `key` names now if no request uses it, else once the last one ends. */
  async unload(key: string, reason: UnloadReason): Promise<boolean> {
    const entry = this.#loaded.get(key);
    if (!entry) return false;
    if (entry.active > 0) {
      entry.keepAliveMs = 0;
      return true;
    }
    await this.#unload(entry, reason);
    return true;
  }

  /** Options pull() gets for this server's pulls (and for reading the cache). */
  pullOptions(): PullOptions {
    const o = this.#options;
    return {
      cacheDir: o.cacheDir,
      verify: o.verify,
      insecureRegistries: o.insecureRegistries,
      registryMirrors: o.registryMirrors,
      credentials: o.credentials,
      retry: o.retry,
      stallTimeoutMs: o.stallTimeoutMs,
      verbose: o.verbose,
      env: o.env,
      onWarning: o.onWarning ?? ((message) => o.log(`warning: ${message}`)),
      onDebug: o.onDebug,
    };
  }

  /** Stops pulls, rejects waiting requests and unloads every model (running requests end with stopReason "abort"). */
  async close(): Promise<void> {
    this.#closing.abort(new Error("the server is shutting down"));
    for (const wake of this.#roomWaiters.splice(0)) wake();
    await Promise.allSettled([...this.#loading.values()]);
    await Promise.all([...this.#loaded.values()].map((entry) => this.#unload(entry, "shutdown")));
    await Promise.allSettled([...this.#unloading]);
  }

  #localByPath(path: string): string | undefined {
    const absolute = resolvePath(path);
    return [...this.#local.values()].includes(absolute) ? absolute : undefined;
  }

  #lease(entry: Entry, generate: boolean): Lease {
    const arriving = generate ? entry.runner.expect() : () => {};
    entry.active++;
    entry.lastUsed = performance.now();
    entry.expiresAt = undefined;
    if (entry.timer) clearTimeout(entry.timer);
    entry.timer = undefined;
    let released = false;
    return {
      model: entry,
      arriving,
      release: (keepAliveMs?: number) => {
        if (released) return;
        released = true;
        arriving();
        entry.active--;
        entry.lastUsed = performance.now();
        if (keepAliveMs !== undefined) entry.keepAliveMs = keepAliveMs;
        else if (entry.keepAliveMs !== 0) entry.keepAliveMs = this.#defaultKeepAlive(entry.key);
        if (entry.active === 0) this.#scheduleExpiry(entry);
        this.#wakeRoomWaiters();
      },
    };
  }

  #defaultKeepAlive(key: string): number {
    return this.#pinned.has(key) ? Infinity : this.#options.keepAliveMs;
  }

  #scheduleExpiry(entry: Entry): void {
    if (entry.timer) clearTimeout(entry.timer);
    entry.timer = undefined;
    entry.expiresAt = undefined;
    if (this.#loaded.get(entry.key) !== entry) return;
    const ms = entry.keepAliveMs;
    if (ms <= 0) {
      void this.#unload(entry, "keep_alive");
      return;
    }
    if (ms > MAX_TIMER_MS) return;
    entry.expiresAt = new Date(Date.now() + ms);
    entry.timer = setTimeout(() => {
      if (entry.active === 0 && !this.#demand.has(entry.key)) void this.#unload(entry, "keep_alive");
    }, ms);
    entry.timer.unref();
  }

  async #load(target: ModelTarget): Promise<Entry> {
    const started = performance.now();
    try {
      const resolved = await this.#resolve(target);
      await this.#reserveRoom();
      try {
        if (this.#closing.signal.aborted) throw new HttpError(503, "the server is shutting down", { code: "shutting_down" });
        const o = this.#options;
        const contextOptions: ContextOptions = {
          // The artifact's own context size (Ollama's num_ctx) when -c does not say.
          contextSize: o.contextSize ?? resolved.pull?.defaults?.contextSize,
          batchSize: o.batchSize,
          threads: o.threads,
          flashAttention: o.flashAttention,
          // Each sequence its own contextSize cells unless --kv-unified (llama-server's default and flag).
          kvUnified: o.kvUnified ?? false,
        };
        const projector = resolved.pull?.mmprojPath;
        const loadOptions: ModelOptions = {
          ...contextOptions,
          gpuLayers: o.gpuLayers,
          useMmap: o.useMmap,
          ...(o.rpcServers ? { rpcServers: o.rpcServers } : {}),
          ...(projector ? { projector } : {}),
        };
        const model = await loadModel(resolved.path, loadOptions);
        if (resolved.pull) model.pull = resolved.pull;
        const chatTemplate = await readChatTemplate(resolved.pull?.chatTemplatePath);
        // The artifact's chat template layer wins over the template embedded in the GGUF.
        if (chatTemplate !== undefined) {
          model.chatTemplate = chatTemplate;
          model.chatTemplateName = `the artifact's chat template (${resolved.pull?.chatTemplatePath ?? "?"})`;
        }
        const warn = this.#options.onWarning ?? ((message: string) => this.#options.log(`warning: ${message}`));
        model.onWarning = (message) => warn(`${target.name}: ${message}`);
        const entry: Entry = {
          key: target.key,
          name: target.name,
          model,
          path: resolved.path,
          pull: resolved.pull,
          runner: createSequenceRunner(model, { parallel: o.parallel, maxQueue: o.maxQueue, context: contextOptions }),
          embedder: new Embedder(model, contextOptions, o.maxQueue),
          chatTemplate,
          loadedAt: new Date(),
          expiresAt: undefined,
          active: 0,
          keepAliveMs: this.#defaultKeepAlive(target.key),
          lastUsed: performance.now(),
          timer: undefined,
        };
        this.#loaded.set(target.key, entry);
        this.#metrics.modelLoads.inc({ outcome: "ok" });
        const ms = performance.now() - started;
        this.#options.log(
          `loaded ${target.name} (${resolved.path}) in ${(ms / 1000).toFixed(2)} s: ${o.parallel} sequence${o.parallel === 1 ? "" : "s"} of ${entry.runner.contextSize} tokens, keep-alive ${formatDuration(entry.keepAliveMs)}`,
        );
        // Requests waiting for it take it at once; if they all went away, keep-alive applies from now.
        if (!this.#demand.has(target.key)) this.#scheduleExpiry(entry);
        return entry;
      } finally {
        this.#reserved--;
        this.#wakeRoomWaiters();
      }
    } catch (error) {
      this.#metrics.modelLoads.inc({ outcome: "error" });
      this.#options.log(`cannot load ${target.name}: ${oneLine(error)}`);
      throw error;
    }
  }

  /** The GGUF to load: a local file, a cached model, or (policy allowing) a pulled one. */
  async #resolve(target: ModelTarget): Promise<{ path: string; pull?: PullResult }> {
    if (target.kind === "file") {
      await stat(target.path).catch(() => {
        throw modelNotFound(`model file not found: ${target.path}`);
      });
      return { path: target.path };
    }
    try {
      const cached = await pull(target.reference, { ...this.pullOptions(), offline: true, signal: this.#closing.signal });
      return { path: cached.path, pull: cached };
    } catch (error) {
      if (!(error instanceof LlamaOciError && error.code === "OFFLINE")) throw error;
    }
    if (this.#options.pull === "never") {
      throw modelNotFound(`model ${target.name} is not in the cache, and this server does not pull models (--pull never)`);
    }
    if (this.#options.offline) throw modelNotFound(`model ${target.name} is not in the cache, and this server is offline`);
    const pulled = await this.#pull(target, {});
    return { path: pulled.path, pull: pulled };
  }

  #pull(target: Extract<ModelTarget, { kind: "reference" }>, options: { onProgress?: ProgressListener; insecure?: boolean }): Promise<PullResult> {
    let flight = this.#pulls.get(target.key);
    if (!flight) {
      const listeners = new Set<ProgressListener>();
      const base = this.pullOptions();
      const insecure = options.insecure ? [...(base.insecureRegistries ?? []), parseReference(target.reference).registry] : base.insecureRegistries;
      const started = performance.now();
      this.#options.log(`pulling ${target.name}`);
      const onPullProgress = this.#options.onPullProgress;
      const promise = pull(target.reference, {
        ...base,
        offline: this.#options.offline,
        insecureRegistries: insecure,
        signal: this.#closing.signal,
        onProgress: (event) => {
          onPullProgress?.(target.name, event);
          for (const listener of listeners) {
            try {
              listener(event);
            } catch {
              // a listener (a client's progress stream) must not break the pull the others wait for
            }
          }
        },
      });
      flight = { promise, listeners };
      const current = flight;
      this.#pulls.set(target.key, current);
      promise.then(
        (result) => {
          this.#metrics.pulls.inc({ outcome: "ok" });
          this.#metrics.pullBytes.inc(result.bytesTransferred);
          const seconds = ((performance.now() - started) / 1000).toFixed(2);
          this.#options.log(`pulled ${target.name} (${result.digest}, ${result.bytesTransferred} bytes transferred) in ${seconds} s`);
        },
        (error: unknown) => {
          this.#metrics.pulls.inc({ outcome: "error" });
          this.#options.log(`pull of ${target.name} failed: ${oneLine(error)}`);
        },
      );
      const forget = () => void (this.#pulls.get(target.key) === current && this.#pulls.delete(target.key));
      promise.then(forget, forget);
    }
    const { onProgress } = options;
    if (onProgress) {
      flight.listeners.add(onProgress);
      const remove = () => void flight.listeners.delete(onProgress);
      flight.promise.then(remove, remove);
    }
    return flight.promise;
  }

  /** Waits until one more model may be loaded, unloading the least recently used idle model when that makes room. */
  async #reserveRoom(): Promise<void> {
    for (;;) {
      if (this.#closing.signal.aborted) throw new HttpError(503, "the server is shutting down", { code: "shutting_down" });
      if (this.#loaded.size + this.#reserved < this.#options.maxModels) {
        this.#reserved++;
        return;
      }
      const idle = [...this.#loaded.values()].filter((e) => e.active === 0 && !this.#demand.has(e.key));
      // Models loaded with --model go last: they are only unloaded when nothing else can be.
      idle.sort((a, b) => Number(this.#pinned.has(a.key)) - Number(this.#pinned.has(b.key)) || a.lastUsed - b.lastUsed);
      const victim = idle[0];
      if (victim) {
        await this.#unload(victim, "evicted");
        continue;
      }
      await new Promise<void>((resolve) => this.#roomWaiters.push(resolve));
    }
  }

  #wakeRoomWaiters(): void {
    for (const wake of this.#roomWaiters.splice(0)) wake();
  }

  #unload(entry: Entry, reason: UnloadReason): Promise<void> {
    if (this.#loaded.get(entry.key) !== entry) return Promise.resolve();
    this.#loaded.delete(entry.key);
    if (entry.timer) clearTimeout(entry.timer);
    entry.timer = undefined;
    entry.expiresAt = undefined;
    this.#metrics.modelUnloads.inc({ reason });
    this.#options.log(`unloaded ${entry.name} (${reason.replace("_", "-")})`);
    const done = (async () => {
      await entry.runner.dispose();
      await entry.embedder.dispose();
      await entry.model.dispose();
    })();
    this.#unloading.add(done);
    const settle = () => {
      this.#unloading.delete(done);
      this.#wakeRoomWaiters();
    };
    done.then(settle, settle);
    return done;
  }
}

function isLocalPath(name: string): boolean {
  return /\.gguf$/i.test(name) && (name.startsWith("/") || name.startsWith(".") || !name.includes(":"));
}

async function readChatTemplate(path: string | undefined): Promise<string | undefined> {
  if (path === undefined) return undefined;
  try {
    const info = await stat(path);
    if (info.size > MAX_TEMPLATE_BYTES) return undefined;
    const text = await readFile(path, "utf8");
    return text.trim() === "" ? undefined : text;
  } catch {
    return undefined;
  }
}

/** `promise`, or a rejection with code ABORTED as soon as `signal` aborts (the promise itself goes on). */
function abortable<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return promise;
  if (signal.aborted) return Promise.reject(new LlamaOciError("ABORTED", "the request was aborted"));
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(new LlamaOciError("ABORTED", "the request was aborted"));
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener("abort", onAbort);
        resolve(value);
      },
      (error: Error) => {
        signal.removeEventListener("abort", onAbort);
        reject(error);
      },
    );
  });
}
