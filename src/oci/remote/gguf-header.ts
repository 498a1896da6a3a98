/**
 * Reads only the header of a GGUF blob in a registry, with HTTP Range requests: first a small range, then ranges
 * that double what is held until the header (tokenizer arrays included) parses. A registry that ignores Range
 * (answers 200 with the whole blob) is read from that one response only as far as needed, then the connection is
 * dropped: the blob is never downloaded whole.
 */
import { abortError, isAbort, LlamaOciError } from "../../errors.js";
import type { Logger } from "../../log.js";
import { parseGgufHeader } from "../../gguf/reader.js";
import type { GgufHeader } from "../../gguf/types.js";
import { describeNetworkError, headerValue, type HttpResponse, type RegistryTransport } from "../transport/index.js";
import { contentRangeStart, openBlob } from "./blobs.js";

export const INITIAL_HEADER_RANGE = 256 * 1024;
/** Real headers are a few MiB at most (a 256k-token vocabulary); a larger one is refused rather than fetched. */
export const MAX_REMOTE_HEADER_BYTES = 256 * 1024 * 1024;

export interface RemoteGgufRequest {
  client: RegistryTransport;
  repository: string;
  digest: string;
  /** Blob size from the manifest. */
  size: number;
  logger: Logger;
  signal?: AbortSignal;
  /** Keep at most this many items of each metadata array (see GgufReadOptions.maxArrayLength). */
  maxArrayLength?: number;
  /** First range to ask for; default 256 KiB. */
  initialBytes?: number;
  /** Give up when the header is longer than this; default 256 MiB. */
  maxHeaderBytes?: number;
}

export interface RemoteGgufHeader extends GgufHeader {
  /** Blob bytes received over the network. */
  bytesRead: number;
  /** HTTP requests made for the blob. */
  requests: number;
  fileSize: number;
}

export async function readRemoteGgufHeader(request: RemoteGgufRequest): Promise<RemoteGgufHeader> {
  const { size, digest } = request;
  const limit = Math.min(size, request.maxHeaderBytes ?? MAX_REMOTE_HEADER_BYTES);
  const source = `blob ${digest}`;
  const prefix = new BlobPrefix(request);
  try {
    let want = Math.min(limit, Math.max(1, request.initialBytes ?? INITIAL_HEADER_RANGE));
    for (;;) {
      await prefix.extendTo(want);
      try {
        const header = parseGgufHeader(prefix.held, { source, maxArrayLength: request.maxArrayLength });
        request.logger.debug(`${source}: GGUF header parsed from ${prefix.held.length} of ${size} bytes in ${prefix.requests} request(s)`);
        return { ...header, bytesRead: prefix.bytesRead, requests: prefix.requests, fileSize: size };
      } catch (error) {
        if (!isTruncation(error, source) || prefix.held.length >= size) throw error;
        if (prefix.held.length >= limit) {
          throw new LlamaOciError("UNSUPPORTED_ARTIFACT", `the GGUF header of ${source} is longer than ${limit} bytes; not read any further`, {
            hint: "pull the model and inspect it from the cache instead",
          });
        }
      }
      want = Math.min(limit, prefix.held.length * 2);
    }
  } finally {
    prefix.close();
  }
}

/** The first bytes of a blob, extended on demand. */
class BlobPrefix {
  held: Buffer = Buffer.alloc(0);
  bytesRead = 0;
  requests = 0;
  /** A 200 response (the registry ignored Range) that is read further instead of asking again. */
  private whole?: { response: HttpResponse; chunks: AsyncIterator<Buffer> };

  constructor(private readonly request: RemoteGgufRequest) {}

  /** Makes `held` at least `end` bytes long (exactly, when ranges are honoured). */
  async extendTo(end: number): Promise<void> {
    const start = this.held.length;
    if (start >= end) return;
    const added = this.whole ? await this.readWhole(end) : await this.fetchRange(start, end);
    this.held = start === 0 ? added : Buffer.concat([this.held, added]);
    if (this.held.length < end) {
      throw new LlamaOciError(
        "NETWORK",
        `${this.request.client.registry} ended blob ${this.request.digest} at byte ${this.held.length}; the manifest says it has ${this.request.size}`,
      );
    }
  }

  close(): void {
    this.whole?.response.body.destroy();
    this.whole = undefined;
  }

  private async fetchRange(start: number, end: number): Promise<Buffer> {
    const { client, repository, digest, signal, logger } = this.request;
    const what = `the GGUF header of blob ${digest}`;
    this.requests++;
    const response = await openBlob(client, repository, digest, { headers: { range: `bytes=${start}-${end - 1}` }, signal, what });
    if (response.status === 206) {
      const served = contentRangeStart(headerValue(response.headers, "content-range"));
      if (served !== start) {
        response.body.destroy();
        throw new LlamaOciError("REGISTRY", `${client.registry} answered a request for bytes ${start}-${end - 1} of ${digest} with another range`);
      }
      const chunks: Buffer[] = [];
      const iterator = (response.body as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
      try {
        await this.collect(iterator, chunks, end - start, 0);
      } finally {
        response.body.destroy();
      }
      return Buffer.concat(chunks);
    }
    if (response.status === 200) {
      logger.debug(`${digest}: the registry ignored the Range header; reading its answer only as far as the header goes`);
      this.whole = { response, chunks: (response.body as AsyncIterable<Buffer>)[Symbol.asyncIterator]() };
      const chunks: Buffer[] = [];
      // The whole blob starts at byte 0: skip what is already held.
      await this.collect(this.whole.chunks, chunks, end - start, start);
      return Buffer.concat(chunks);
    }
    throw await client.error(response, what);
  }

  private async readWhole(end: number): Promise<Buffer> {
    const chunks: Buffer[] = [];
    await this.collect(this.whole!.chunks, chunks, end - this.held.length, 0);
    return Buffer.concat(chunks);
  }

  /**
   * Pulls chunks until `wanted` bytes (after skipping `skip`) are in `out`, or the body ends. A chunk that runs past
   * `wanted` is kept whole: those bytes have arrived anyway and the next round needs them.
   */
  private async collect(iterator: AsyncIterator<Buffer>, out: Buffer[], wanted: number, skip: number): Promise<void> {
    let got = 0;
    let skipped = 0;
    try {
      while (got < wanted) {
        const next = await iterator.next();
        if (next.done) return;
        const chunk = next.value;
        this.bytesRead += chunk.length;
        const from = Math.min(chunk.length, skip - skipped);
        skipped += from;
        const part = chunk.subarray(from);
        out.push(part);
        got += part.length;
      }
    } catch (error) {
      if (this.request.signal?.aborted || isAbort(error)) throw abortError(this.request.signal);
      throw new LlamaOciError("NETWORK", `the connection broke while reading blob ${this.request.digest}: ${describeNetworkError(error)}`, {
        cause: error,
      });
    }
  }
}

/** parseGgufHeader's error for a buffer that ends inside the header (as opposed to a header that is wrong). */
function isTruncation(error: unknown, source: string): boolean {
  return error instanceof LlamaOciError && error.message.startsWith(`truncated GGUF header in ${source}`);
}
