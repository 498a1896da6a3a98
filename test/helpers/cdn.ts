/**
 * A fake CDN: a static server over a registry's storage root that answers the paths the `redirect` middleware
 * points at (/docker/registry/v2/blobs/sha256/<2hex>/<hex>/data, query ignored like a signed URL's), with Range
 * support. Like S3 presigned URLs, it rejects requests that carry Authorization (400), and it records every request
 * so tests can assert that `authorization` never arrives and `range` does.
 */
import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import { createServer } from "node:http";
import { join } from "node:path";
import { closeServer, listenLocal } from "./ports.js";

export interface CdnRequest {
  method: string;
  path: string;
  headers: Record<string, string | string[] | undefined>;
}

export interface Cdn {
  url: string;
  requests: CdnRequest[];
  stop(): Promise<void>;
}

const BLOB_PATH = /^\/docker\/registry\/v2\/blobs\/sha256\/([0-9a-f]{2})\/([0-9a-f]{64})\/data$/;

export async function startCdn(rootDir: string, options: { rejectAuthorization?: boolean } = {}): Promise<Cdn> {
  const rejectAuthorization = options.rejectAuthorization ?? true;
  const requests: CdnRequest[] = [];
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://127.0.0.1");
    requests.push({ method: req.method ?? "", path: url.pathname, headers: { ...(req.headers) } });
    void (async () => {
      if (req.method !== "GET" && req.method !== "HEAD") return end(405, "method not allowed");
      if (rejectAuthorization && req.headers.authorization !== undefined) {
        return end(400, "InvalidArgument: Only one auth mechanism allowed");
      }
      const match = BLOB_PATH.exec(url.pathname);
      if (!match || !match[2]!.startsWith(match[1]!)) return end(404, "not found");
      const file = join(rootDir, url.pathname);
      const size = await stat(file).then((s) => (s.isFile() ? s.size : -1), () => -1);
      if (size < 0) return end(404, "not found");

      const range = parseRange(req.headers.range, size);
      const headers: Record<string, string | number> = {
        "content-type": "application/octet-stream",
        "accept-ranges": "bytes",
        etag: `"sha256:${match[2]!}"`,
      };
      if (range === "unsatisfiable") {
        res.writeHead(416, { "content-range": `bytes */${size}`, "content-length": 0 });
        return res.end();
      }
      const [start, endByte] = range ?? [0, size - 1];
      headers["content-length"] = size === 0 ? 0 : endByte - start + 1;
      if (range) headers["content-range"] = `bytes ${start}-${endByte}/${size}`;
      res.writeHead(range ? 206 : 200, headers);
      if (req.method === "HEAD" || size === 0) return res.end();
      const stream = createReadStream(file, { start, end: endByte });
      stream.on("error", () => res.destroy());
      res.on("close", () => stream.destroy());
      stream.pipe(res);
    })().catch(() => res.destroy());

    function end(status: number, message: string): void {
      res.writeHead(status, { "content-type": "text/plain", "content-length": Buffer.byteLength(message) });
      res.end(req.method === "HEAD" ? undefined : message);
    }
  });
  const port = await listenLocal(server);
  return { url: `http://127.0.0.1:${port}`, requests, stop: () => closeServer(server) };
}

/** One `bytes=` range (RFC 9110): undefined = serve everything, a pair = inclusive bounds. */
function parseRange(header: string | undefined, size: number): [number, number] | "unsatisfiable" | undefined {
  if (header === undefined) return undefined;
  const match = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!match || (match[1] === "" && match[2] === "")) return undefined;
  if (match[1] === "") {
    const suffix = Number(match[2]);
    if (suffix === 0 || size === 0) return "unsatisfiable";
    return [Math.max(0, size - suffix), size - 1];
  }
  const start = Number(match[1]);
  const end = match[2] === "" ? size - 1 : Math.min(Number(match[2]), size - 1);
  if (start >= size || end < start) return "unsatisfiable";
  return [start, end];
}
