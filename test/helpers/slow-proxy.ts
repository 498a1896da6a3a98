/**
 * An HTTP reverse proxy in front of a registry that can hold a blob download still in the middle: once a response
 * body whose path matches has sent `afterBytes` bytes, the rest waits until release(). The download is then in
 * progress for as long as a test needs (its lock held, its partial file on disk), without timing guesses. It also
 * records requests (method, path, Range) and can throttle every body to a rate.
 */
import { Agent, createServer, request as httpRequest, type IncomingHttpHeaders, type ServerResponse } from "node:http";
import { closeServer, listenLocal } from "./ports.js";

export interface SlowProxyOptions {
  /** Throttle every response body to about this many bytes per second (default: no throttle). */
  bytesPerSecond?: number;
}

export interface SlowRequest {
  method: string;
  path: string;
  range?: string;
  status?: number;
}

export interface SlowProxy {
  url: string;
  host: string;
  requests: SlowRequest[];
  /** Holds the next GET body whose path contains `pathPart` after `afterBytes` bytes, until release(). */
  hold(pathPart: string, afterBytes: number): void;
  /** Resolves once a held body has sent its bytes and is waiting. */
  held(): Promise<void>;
  /** Lets a held body (and any later one) continue. */
  release(): void;
  stop(): Promise<void>;
}

const HOP_BY_HOP = ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer"];

export async function startSlowProxy(targetUrl: string, options: SlowProxyOptions = {}): Promise<SlowProxy> {
  const upstream = new URL(targetUrl);
  const agent = new Agent({ keepAlive: true });
  const requests: SlowRequest[] = [];
  let pending: { pathPart: string; afterBytes: number } | undefined;
  let releaseHeld: (() => void) | undefined;
  let released = Promise.resolve();
  let onHeld: (() => void) | undefined;
  let heldNow = false;

  const server = createServer((req, res) => {
    const path = req.url ?? "/";
    const record: SlowRequest = { method: req.method ?? "", path };
    if (typeof req.headers.range === "string") record.range = req.headers.range;
    requests.push(record);
    const headers: IncomingHttpHeaders = { ...req.headers, host: upstream.host };
    for (const name of HOP_BY_HOP) if (name !== "transfer-encoding") delete headers[name];
    const upReq = httpRequest({ agent, host: upstream.hostname, port: upstream.port, method: req.method, path, headers });
    res.on("close", () => {
      if (!res.writableFinished) upReq.destroy();
    });
    upReq.on("error", () => {
      if (res.headersSent) return void res.destroy();
      res.writeHead(502, { "content-type": "text/plain" });
      res.end("slow proxy: upstream unreachable");
    });
    upReq.on("response", (upRes) => {
      record.status = upRes.statusCode ?? 502;
      const out: IncomingHttpHeaders = { ...upRes.headers };
      for (const name of HOP_BY_HOP) delete out[name];
      res.writeHead(record.status, out);
      let hold: number | undefined;
      if (pending && req.method === "GET" && path.includes(pending.pathPart) && (record.status === 200 || record.status === 206)) {
        hold = pending.afterBytes;
        pending = undefined;
      }
      void relay(upRes, res, hold).catch(() => res.destroy());
    });
    req.pipe(upReq);
  });

  async function relay(body: AsyncIterable<Buffer>, res: ServerResponse, holdAt: number | undefined): Promise<void> {
    let sent = 0;
    const started = Date.now();
    const write = async (data: Buffer) => {
      if (data.length === 0) return;
      if (res.destroyed) throw new Error("client went away");
      sent += data.length;
      if (!res.write(data)) await drained(res);
      if (options.bytesPerSecond !== undefined) {
        const due = started + (sent / options.bytesPerSecond) * 1000;
        const wait = due - Date.now();
        if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
      }
    };
    for await (const chunk of body) {
      let data = chunk;
      if (holdAt !== undefined && sent + data.length >= holdAt) {
        const head = holdAt - sent;
        await write(data.subarray(0, head));
        data = data.subarray(head);
        holdAt = undefined;
        heldNow = true;
        onHeld?.();
        await released;
      }
      await write(data);
    }
    res.end();
  }

  const port = await listenLocal(server);
  return {
    url: `http://127.0.0.1:${port}`,
    host: `127.0.0.1:${port}`,
    requests,
    hold(pathPart, afterBytes) {
      pending = { pathPart, afterBytes };
      heldNow = false;
      released = new Promise<void>((resolve) => (releaseHeld = resolve));
    },
    held() {
      if (heldNow) return Promise.resolve();
      return new Promise<void>((resolve) => (onHeld = resolve));
    },
    release() {
      releaseHeld?.();
      released = Promise.resolve();
    },
    async stop() {
      releaseHeld?.();
      await closeServer(server);
      agent.destroy();
    },
  };
}

function drained(res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      res.off("drain", done);
      res.off("close", done);
      resolve();
    };
    res.on("drain", done);
    res.on("close", done);
  });
}
