/**
 * An HTTP reverse proxy in front of a registry or CDN for fault injection: it counts response body bytes sent to
 * the client (total and per path), records requests, and applies queued faults (cut the connection, flip a byte,
 * answer an error status, stall, or rewrite the Range the upstream sees, so it ignores it or answers another
 * offset). It forwards with the upstream's Host, so the registry builds upstream URLs, and
 * rewrites Location headers that point at the upstream origin to point at the proxy.
 * It can also shape the link (LinkShape): a rate cap per client connection and one for all of them together (token
 * buckets), a delay before every response, and one "straggler" connection held to a much lower rate; and play a CDN
 * whose signed URLs expire (signRedirects on the proxy in front of the registry, expiringUrls on the one in front of
 * the CDN). Traffic only to and from 127.0.0.1.
 */
import type { Socket } from "node:net";
import { Agent, createServer, request as httpRequest, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from "node:http";
import { closeServer, listenLocal } from "./ports.js";

export interface ProxiedRequest {
  method: string;
  /** Path and query as the client sent them. */
  path: string;
  range?: string;
  /** The Range sent upstream when a fault rewrote it ("" when it was dropped). */
  forwardedRange?: string;
  /** Status the client got (upstream's or an injected one); unset while in flight. */
  status?: number;
  at: number;
  /** When the response was over (sent whole, cut, or the client went away); unset while in flight. */
  endAt?: number;
  /** Which client connection carried it (1, 2, … in the order they first sent a request). */
  connection: number;
  /** Response body bytes sent for it. */
  bytes: number;
}

export interface FaultRequestInfo {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
}

interface FaultCommon {
  /** Which requests the fault applies to. Body faults also require a GET answered 200 or 206. Default: any. */
  match?: (req: FaultRequestInfo) => boolean;
  /** How many requests it applies to before it is used up; default 1. */
  times?: number;
}

export type Fault = FaultCommon &
  (
    | { kind: "cut-after"; bytes: number }
    | { kind: "corrupt"; offset: number }
    | { kind: "status"; status: number; retryAfter?: string; times: number; body?: string; contentType?: string }
    | { kind: "stall"; afterBytes: number; ms: number }
    /** Drops Range and If-Range upstream, so the upstream answers 200 with the whole body. Range requests only. */
    | { kind: "ignore-range" }
    /**
     * Moves the start of a `bytes=N-M` Range by `by` bytes upstream, so the upstream answers a 206 at another offset
     * (or a 416 when the start passes the end). Range requests only.
     */
    | { kind: "shift-range"; by: number }
  );

/** A shaped link between the client and the upstream (response bodies only; requests are small). */
export interface LinkShape {
  /** Each client connection's response bodies at most this many bytes per second. */
  perConnectionBytesPerSecond?: number;
  /** All response bodies together at most this many bytes per second. */
  aggregateBytesPerSecond?: number;
  /** Added before every response is sent (a long link's round trip). */
  latencyMs?: number;
  /**
   * One connection far slower than the others: the `nth` client connection (from 1) that carries a request `match`
   * accepts (default: any GET answered with a body) is held to `bytesPerSecond` instead of the per-connection rate.
   */
  straggler?: { nth: number; bytesPerSecond: number; match?: (req: FaultRequestInfo) => boolean };
}

export interface FaultProxyOptions {
  shape?: LinkShape;
  /** Append `expires=<epoch ms>` (now + ttlMs) to every Location header relayed: signed URLs that expire. */
  signRedirects?: { ttlMs: number };
  /** Answer 403 (as S3 does) to a request whose `expires` query parameter is missing or in the past. */
  expiringUrls?: boolean;
}

export interface FaultProxy {
  url: string;
  host: string;
  requests: ProxiedRequest[];
  /** Response body bytes sent to clients in total. */
  readonly bytesSent: number;
  /** Response body bytes sent to clients per URL pathname (query ignored). */
  bytesByPath: Map<string, number>;
  addFault(fault: Fault): void;
  /** Faults not yet used up. */
  readonly pendingFaults: readonly Fault[];
  clearFaults(): void;
  /** Forgets recorded requests and byte counts. */
  resetStats(): void;
  /** Changes the link's shape from now on (undefined: unshaped); connections count from 1 again for the straggler. */
  setShape(shape: LinkShape | undefined): void;
  /** Requests answered 403 because their signed URL had expired. */
  readonly expiredRequests: number;
  stop(): Promise<void>;
}

/**
 * A token bucket as a virtual clock: sending `bytes` moves the clock on by bytes/rate; the sender waits for the clock
 * less a burst allowance (which also makes up for timers firing late).
 */
class Pace {
  private clock = 0;
  private readonly burstMs: number;

  constructor(private readonly bytesPerSecond: number) {
    this.burstMs = Math.max(20, (64 * 1024 * 1000) / bytesPerSecond);
  }

  /** How long to wait before sending `bytes`. */
  reserve(bytes: number, now: number): number {
    this.clock = Math.max(this.clock, now - this.burstMs) + (bytes * 1000) / this.bytesPerSecond;
    return Math.max(0, this.clock - now - this.burstMs);
  }
}

const SHAPED_PIECE_BYTES = 64 * 1024;

const HOP_BY_HOP = ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer"];

export async function startFaultProxy(targetUrl: string, options: FaultProxyOptions = {}): Promise<FaultProxy> {
  const upstream = new URL(targetUrl);
  const agent = new Agent({ keepAlive: true });
  const faults: { fault: Fault; left: number }[] = [];
  const requests: ProxiedRequest[] = [];
  const bytesByPath = new Map<string, number>();
  let bytesSent = 0;
  let proxyOrigin = "";
  let expiredRequests = 0;

  // Shaping: one pace for all, one per client connection (the straggler's own), numbered in order of first use.
  let shape: LinkShape | undefined;
  let aggregatePace: Pace | undefined;
  const connectionIds = new WeakMap<Socket, number>();
  let nextConnectionId = 1;
  let connectionPaces = new WeakMap<Socket, Pace | null>();
  let stragglerCandidates = 0;
  let stragglerChecked = new WeakSet<Socket>();
  const setShape = (next: LinkShape | undefined) => {
    shape = next;
    aggregatePace = next?.aggregateBytesPerSecond ? new Pace(next.aggregateBytesPerSecond) : undefined;
    connectionPaces = new WeakMap();
    stragglerChecked = new WeakSet();
    stragglerCandidates = 0;
  };
  setShape(options.shape);
  const connectionOf = (socket: Socket): number => {
    let id = connectionIds.get(socket);
    if (id === undefined) connectionIds.set(socket, (id = nextConnectionId++));
    return id;
  };
  /** The pace of a connection for a response to `info`; null: not shaped per connection. */
  const paceOf = (socket: Socket, info: FaultRequestInfo, status: number): Pace | null => {
    const straggler = shape?.straggler;
    if (straggler && !stragglerChecked.has(socket)) {
      const candidate = straggler.match ? straggler.match(info) : info.method === "GET" && (status === 200 || status === 206);
      if (candidate) {
        stragglerChecked.add(socket);
        if (++stragglerCandidates === straggler.nth) connectionPaces.set(socket, new Pace(straggler.bytesPerSecond));
      }
    }
    let pace = connectionPaces.get(socket);
    if (pace === undefined) {
      pace = shape?.perConnectionBytesPerSecond ? new Pace(shape.perConnectionBytesPerSecond) : null;
      connectionPaces.set(socket, pace);
    }
    return pace;
  };

  const takeFault = (info: FaultRequestInfo, body: { status: number } | undefined): Fault | undefined => {
    const index = faults.findIndex(({ fault }) => {
      const isBodyFault = fault.kind === "cut-after" || fault.kind === "corrupt" || fault.kind === "stall";
      if (isBodyFault !== (body !== undefined)) return false;
      if (body && (info.method !== "GET" || (body.status !== 200 && body.status !== 206))) return false;
      if ((fault.kind === "ignore-range" || fault.kind === "shift-range") && typeof info.headers.range !== "string") return false;
      return fault.match ? fault.match(info) : true;
    });
    if (index < 0) return undefined;
    const entry = faults[index]!;
    if (--entry.left <= 0) faults.splice(index, 1);
    return entry.fault;
  };

  const count = (pathname: string, n: number) => {
    bytesSent += n;
    bytesByPath.set(pathname, (bytesByPath.get(pathname) ?? 0) + n);
  };

  const server = createServer((req, res) => {
    const path = req.url ?? "/";
    const url = new URL(path, "http://x");
    const pathname = url.pathname;
    const record: ProxiedRequest = { method: req.method ?? "", path, at: Date.now(), connection: connectionOf(req.socket), bytes: 0 };
    if (typeof req.headers.range === "string") record.range = req.headers.range;
    requests.push(record);
    res.on("close", () => (record.endAt = Date.now()));
    const info: FaultRequestInfo = { method: record.method, path, headers: req.headers };

    if (options.expiringUrls) {
      const expires = Number(url.searchParams.get("expires") ?? Number.NaN);
      if (!(expires > Date.now())) {
        expiredRequests++;
        record.status = 403;
        const body = Buffer.from('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>');
        res.writeHead(403, { "content-type": "application/xml", "content-length": body.length });
        res.end(req.method === "HEAD" ? undefined : body);
        return;
      }
    }

    const injected = takeFault(info, undefined);
    if (injected?.kind === "status") {
      record.status = injected.status;
      const code = injected.status === 429 ? "TOOMANYREQUESTS" : injected.status === 503 ? "UNAVAILABLE" : "UNKNOWN";
      const body = Buffer.from(injected.body ?? JSON.stringify({ errors: [{ code, message: "injected fault", detail: null }] }));
      const headers: Record<string, string | number> = { "content-type": injected.contentType ?? "application/json", "content-length": body.length };
      if (injected.retryAfter !== undefined) headers["retry-after"] = injected.retryAfter;
      res.writeHead(injected.status, headers);
      res.end(req.method === "HEAD" ? undefined : body);
      return;
    }

    const headers: IncomingHttpHeaders = { ...req.headers, host: upstream.host };
    for (const name of HOP_BY_HOP) if (name !== "transfer-encoding") delete headers[name];
    if (injected?.kind === "ignore-range") {
      delete headers.range;
      delete headers["if-range"];
      record.forwardedRange = "";
    } else if (injected?.kind === "shift-range") {
      headers.range = shiftRange(String(req.headers.range), injected.by);
      record.forwardedRange = headers.range;
    }
    const upReq = httpRequest({
      agent,
      host: upstream.hostname,
      port: upstream.port,
      method: req.method,
      path,
      headers,
    });
    res.on("close", () => {
      if (!res.writableFinished) upReq.destroy();
    });
    upReq.on("error", () => {
      if (!res.headersSent) {
        record.status = 502;
        res.writeHead(502, { "content-type": "text/plain" });
        res.end("fault proxy: upstream unreachable");
      } else {
        res.destroy();
      }
    });
    upReq.on("response", (upRes) => {
      record.status = upRes.statusCode ?? 502;
      const fault = takeFault(info, { status: record.status });
      const pace = shape ? paceOf(req.socket, info, record.status) : null;
      const sent = (n: number) => {
        record.bytes += n;
        count(pathname, n);
      };
      void relay(upRes, res, fault, sent, pace).catch(() => res.destroy());
    });
    req.pipe(upReq);
  });

  async function relay(
    upRes: IncomingMessage,
    res: ServerResponse,
    fault: Fault | undefined,
    sent: (n: number) => void,
    pace: Pace | null,
  ): Promise<void> {
    const headers: IncomingHttpHeaders = { ...upRes.headers };
    for (const name of HOP_BY_HOP) delete headers[name];
    if (typeof headers.location === "string") headers.location = rewriteLocation(headers.location);
    if (typeof headers.location === "string" && options.signRedirects) headers.location = sign(headers.location, options.signRedirects.ttlMs);
    if (shape?.latencyMs) await sleep(shape.latencyMs);
    if (res.destroyed) {
      upRes.destroy();
      return;
    }
    res.writeHead(upRes.statusCode ?? 502, headers);

    let offset = 0;
    let stalled = false;
    const send = async (data: Buffer) => {
      if (res.destroyed) throw new Error("client went away");
      if (data.length === 0) return;
      sent(data.length);
      offset += data.length;
      if (!res.write(data)) await waitDrain(res);
    };
    const shaped = async (data: Buffer) => {
      const aggregate = aggregatePace;
      if (!pace && !aggregate) return send(data);
      for (let at = 0; at < data.length; at += SHAPED_PIECE_BYTES) {
        const piece = data.subarray(at, at + SHAPED_PIECE_BYTES);
        const now = performance.now();
        const wait = Math.max(pace?.reserve(piece.length, now) ?? 0, aggregate?.reserve(piece.length, now) ?? 0);
        if (wait > 0) await sleep(wait);
        await send(piece);
      }
    };
    const write = (data: Buffer) => shaped(data);
    for await (const chunk of upRes as AsyncIterable<Buffer>) {
      let data = chunk;
      if (fault?.kind === "corrupt" && fault.offset >= offset && fault.offset < offset + data.length) {
        data = Buffer.from(data);
        data[fault.offset - offset]! ^= 0xff;
      }
      if (fault?.kind === "stall" && !stalled && offset + data.length > fault.afterBytes) {
        stalled = true;
        const head = Math.max(0, fault.afterBytes - offset);
        await write(data.subarray(0, head));
        await new Promise((resolve) => setTimeout(resolve, fault.ms));
        data = data.subarray(head);
      }
      if (fault?.kind === "cut-after" && offset + data.length >= fault.bytes) {
        await write(data.subarray(0, Math.max(0, fault.bytes - offset)));
        res.flushHeaders();
        // end() flushes what was written, then closes: the client sees a body shorter than Content-Length.
        res.socket?.end();
        upRes.destroy();
        return;
      }
      await write(data);
    }
    if (fault?.kind === "cut-after") {
      // The body was shorter than the cut point; still cut, so the fault is observable.
      res.flushHeaders();
      res.socket?.end();
      return;
    }
    res.end();
  }

  function rewriteLocation(location: string): string {
    let target: URL;
    try {
      target = new URL(location, upstream);
    } catch {
      return location;
    }
    if (!/^[a-z][a-z0-9+.-]*:/i.test(location) || target.origin !== upstream.origin) return location;
    return `${proxyOrigin}${target.pathname}${target.search}${target.hash}`;
  }

  const port = await listenLocal(server);
  proxyOrigin = `http://127.0.0.1:${port}`;
  return {
    url: proxyOrigin,
    host: `127.0.0.1:${port}`,
    requests,
    get bytesSent() {
      return bytesSent;
    },
    bytesByPath,
    addFault: (fault) => void faults.push({ fault, left: fault.times ?? 1 }),
    setShape,
    get expiredRequests() {
      return expiredRequests;
    },
    get pendingFaults() {
      return faults.map((entry) => entry.fault);
    },
    clearFaults: () => void faults.splice(0),
    resetStats() {
      requests.splice(0);
      bytesByPath.clear();
      bytesSent = 0;
      expiredRequests = 0;
    },
    async stop() {
      await closeServer(server);
      agent.destroy();
    },
  };
}

/** A URL with `expires=<now + ttlMs>` added to its query. */
function sign(location: string, ttlMs: number): string {
  try {
    const url = new URL(location);
    url.searchParams.set("expires", String(Date.now() + ttlMs));
    return url.href;
  } catch {
    return location;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** `bytes=N-M` (or `bytes=N-`) with N moved by `by`; other forms are returned unchanged. */
function shiftRange(range: string, by: number): string {
  const match = /^bytes=(\d+)-(\d*)$/.exec(range.trim());
  if (!match) return range;
  return `bytes=${Number(match[1]) + by}-${match[2]!}`;
}

function waitDrain(res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    if (res.destroyed) return resolve();
    const done = () => {
      res.off("drain", done);
      res.off("close", done);
      resolve();
    };
    res.on("drain", done);
    res.on("close", done);
  });
}
