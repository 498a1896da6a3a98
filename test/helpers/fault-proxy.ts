/**
 * An HTTP reverse proxy in front of a registry or CDN for fault injection: it counts response body bytes sent to
 * the client (total and per path), records requests, and applies queued faults (cut the connection, flip a byte,
 * answer an error status, stall, or rewrite the Range the upstream sees, so it ignores it or answers another
 * offset). It forwards with the upstream's Host, so the registry builds upstream URLs, and
 * rewrites Location headers that point at the upstream origin to point at the proxy.
 */
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
  stop(): Promise<void>;
}

const HOP_BY_HOP = ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer"];

export async function startFaultProxy(targetUrl: string): Promise<FaultProxy> {
  const upstream = new URL(targetUrl);
  const agent = new Agent({ keepAlive: true });
  const faults: { fault: Fault; left: number }[] = [];
  const requests: ProxiedRequest[] = [];
  const bytesByPath = new Map<string, number>();
  let bytesSent = 0;
  let proxyOrigin = "";

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
    const pathname = new URL(path, "http://x").pathname;
    const record: ProxiedRequest = { method: req.method ?? "", path, at: Date.now() };
    if (typeof req.headers.range === "string") record.range = req.headers.range;
    requests.push(record);
    const info: FaultRequestInfo = { method: record.method, path, headers: req.headers };

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
      void relay(upRes, res, fault, (n) => count(pathname, n)).catch(() => res.destroy());
    });
    req.pipe(upReq);
  });

  async function relay(upRes: IncomingMessage, res: ServerResponse, fault: Fault | undefined, sent: (n: number) => void): Promise<void> {
    const headers: IncomingHttpHeaders = { ...upRes.headers };
    for (const name of HOP_BY_HOP) delete headers[name];
    if (typeof headers.location === "string") headers.location = rewriteLocation(headers.location);
    res.writeHead(upRes.statusCode ?? 502, headers);

    let offset = 0;
    let stalled = false;
    const write = async (data: Buffer) => {
      if (res.destroyed) throw new Error("client went away");
      if (data.length === 0) return;
      sent(data.length);
      offset += data.length;
      if (!res.write(data)) await waitDrain(res);
    };
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
    get pendingFaults() {
      return faults.map((entry) => entry.fault);
    },
    clearFaults: () => void faults.splice(0),
    resetStats() {
      requests.splice(0);
      bytesByPath.clear();
      bytesSent = 0;
    },
    async stop() {
      await closeServer(server);
      agent.destroy();
    },
  };
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
