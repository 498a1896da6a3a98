/**
 * Streamed responses written straight to the socket: Server-Sent Events for OpenAI (each `data: ...\n\n` written
 * as it comes, Nagle off, no compression, no proxy buffering) and NDJSON for Ollama; and the signal that tells a
 * handler its client has gone.
 */
import type { FastifyReply, FastifyRequest } from "fastify";

/** Aborts when the client's connection closes before the response was completely sent. */
export function clientGone(request: FastifyRequest, reply: FastifyReply): AbortSignal {
  const controller = new AbortController();
  const res = reply.raw;
  const onClose = () => {
    if (!res.writableFinished) controller.abort(new Error("the client closed the connection"));
  };
  res.once("close", onClose);
  request.raw.once("error", () => controller.abort(new Error("the client's connection failed")));
  return controller.signal;
}

export class EventStream {
  readonly kind: "sse" | "ndjson";
  #reply: FastifyReply;
  #started = false;
  #onEnd: ((status: number) => void) | undefined;

  constructor(reply: FastifyReply, kind: "sse" | "ndjson", onEnd?: (status: number) => void) {
    this.#reply = reply;
    this.kind = kind;
    this.#onEnd = onEnd;
  }

  get started(): boolean {
    return this.#started;
  }

  /** Sends the 200 status and headers (once), taking over the response from fastify. */
  start(): void {
    if (this.#started) return;
    this.#started = true;
    const reply = this.#reply;
    reply.hijack();
    const res = reply.raw;
    res.on("error", () => {});
    res.once("close", () => this.#onEnd?.(200));
    res.socket?.setNoDelay(true);
    const headers: Record<string, string | string[]> = {};
    for (const [name, value] of Object.entries(reply.getHeaders())) {
      if (value !== undefined) headers[name] = Array.isArray(value) ? value : String(value);
    }
    res.writeHead(200, {
      ...headers,
      "content-type": this.kind === "sse" ? "text/event-stream; charset=utf-8" : "application/x-ndjson",
      "cache-control": "no-cache",
      "x-accel-buffering": "no",
    });
    res.flushHeaders();
  }

  /** Writes one event (an object as JSON). Nothing happens once the client is gone. */
  send(value: unknown): void {
    this.start();
    const res = this.#reply.raw;
    if (res.destroyed || res.writableEnded) return;
    const json = JSON.stringify(value);
    res.write(this.kind === "sse" ? `data: ${json}\n\n` : `${json}\n`);
  }

  /** The client went away: close what is left of the response without writing more. */
  abandon(): void {
    if (!this.#started) this.#reply.hijack();
    this.#reply.raw.destroy();
  }

  /** Ends the stream (SSE with `data: [DONE]`). */
  end(): void {
    this.start();
    const res = this.#reply.raw;
    if (res.destroyed || res.writableEnded) return;
    res.end(this.kind === "sse" ? "data: [DONE]\n\n" : undefined);
  }
}
