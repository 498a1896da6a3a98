/**
 * GET /metrics: Prometheus metrics through prom-client, in a registry of this server's own (never the global
 * default one), so two servers in one process, or an app that embeds one, keep their numbers apart.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";

/** What the gauges read when scraped: each loaded model's sequences and queue. */
export interface RunnerStats {
  model: string;
  parallel: number;
  busy: number;
  queued: number;
}

export class ServerMetrics {
  readonly registry = new Registry();
  readonly httpRequests: Counter<"route" | "method" | "status">;
  readonly httpSeconds: Histogram<"route">;
  readonly promptTokens: Counter<"model">;
  readonly cachedPromptTokens: Counter<"model">;
  readonly generatedTokens: Counter<"model">;
  readonly promptSeconds: Counter<"model">;
  readonly generationSeconds: Counter<"model">;
  readonly timeToFirstToken: Histogram<"model">;
  readonly completions: Counter<"model" | "finish_reason">;
  readonly rejected: Counter<"reason">;
  readonly modelLoads: Counter<"outcome">;
  readonly modelUnloads: Counter<"reason">;
  readonly pulls: Counter<"outcome">;
  readonly pullBytes: Counter;

  constructor(stats: () => RunnerStats[]) {
    const registers = [this.registry];
    // prom-client measures the event loop's lag with a timer of this period (10 ms by default): 100 wake-ups a
    // second of the JS thread, which cost an idle server about 1% of a core, and a busy one a core's slice now and then
    // in the middle of a decode. Once a second is plenty for a lag that is scraped every few seconds.
    collectDefaultMetrics({ register: this.registry, eventLoopMonitoringPrecision: 1000 });
    this.httpRequests = new Counter({
      name: "llama_oci_http_requests_total",
      help: "HTTP requests answered, by route, method and status",
      labelNames: ["route", "method", "status"],
      registers,
    });
    this.httpSeconds = new Histogram({
      name: "llama_oci_http_request_duration_seconds",
      help: "Time from a request's arrival to the end of its response",
      labelNames: ["route"],
      buckets: [0.005, 0.025, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
      registers,
    });
    this.promptTokens = new Counter({ name: "llama_oci_prompt_tokens_total", help: "Prompt tokens of completed requests, cached ones included", labelNames: ["model"], registers });
    this.cachedPromptTokens = new Counter({
      name: "llama_oci_prompt_tokens_cached_total",
      help: "Prompt tokens reused from a sequence's KV cache instead of being evaluated",
      labelNames: ["model"],
      registers,
    });
    this.generatedTokens = new Counter({ name: "llama_oci_generated_tokens_total", help: "Tokens generated", labelNames: ["model"], registers });
    this.promptSeconds = new Counter({ name: "llama_oci_prompt_seconds_total", help: "Time spent evaluating prompts", labelNames: ["model"], registers });
    this.generationSeconds = new Counter({ name: "llama_oci_generation_seconds_total", help: "Time spent generating tokens", labelNames: ["model"], registers });
    this.timeToFirstToken = new Histogram({
      name: "llama_oci_time_to_first_token_seconds",
      help: "Time from a generation request's arrival to its first generated text, queueing included",
      labelNames: ["model"],
      buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    });
    this.completions = new Counter({
      name: "llama_oci_completions_total",
      help: "Generations finished, by why they stopped (stop, length, abort)",
      labelNames: ["model", "finish_reason"],
      registers,
    });
    this.rejected = new Counter({ name: "llama_oci_requests_rejected_total", help: "Requests refused with 503 (queue_full)", labelNames: ["reason"], registers });
    this.modelLoads = new Counter({ name: "llama_oci_model_loads_total", help: "Model loads, by outcome", labelNames: ["outcome"], registers });
    this.modelUnloads = new Counter({
      name: "llama_oci_model_unloads_total",
      help: "Model unloads, by reason (keep_alive, evicted, request, deleted, shutdown)",
      labelNames: ["reason"],
      registers,
    });
    this.pulls = new Counter({ name: "llama_oci_pulls_total", help: "Pulls from registries, by outcome", labelNames: ["outcome"], registers });
    this.pullBytes = new Counter({ name: "llama_oci_pull_bytes_total", help: "Blob bytes downloaded by pulls", registers });

    new Gauge({
      name: "llama_oci_sequences_busy",
      help: "Sequences generating now, per loaded model",
      labelNames: ["model"],
      registers,
      collect() {
        this.reset();
        for (const s of stats()) this.set({ model: s.model }, s.busy);
      },
    });
    new Gauge({
      name: "llama_oci_sequences",
      help: "Sequences (--parallel) per loaded model",
      labelNames: ["model"],
      registers,
      collect() {
        this.reset();
        for (const s of stats()) this.set({ model: s.model }, s.parallel);
      },
    });
    new Gauge({
      name: "llama_oci_queue_length",
      help: "Requests waiting for a sequence, per loaded model",
      labelNames: ["model"],
      registers,
      collect() {
        this.reset();
        for (const s of stats()) this.set({ model: s.model }, s.queued);
      },
    });
    new Gauge({
      name: "llama_oci_models_loaded",
      help: "Models loaded now",
      registers,
      collect() {
        this.set(stats().length);
      },
    });
  }
}
