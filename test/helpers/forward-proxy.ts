/**
 * A real HTTP forward proxy, as HTTP_PROXY / HTTPS_PROXY point at: CONNECT tunnels (for https, and for http when
 * the client tunnels everything) and absolute-URI requests (`GET http://host/path`). It records what it proxied.
 */
import { createServer, request as httpRequest, type IncomingHttpHeaders } from "node:http";
import { connect, type Socket } from "node:net";
import { closeServer, listenLocal } from "./ports.js";

export interface ForwardedRequest {
  /** "CONNECT" for a tunnel, else the method of an absolute-URI request. */
  method: string;
  /** host:port for CONNECT, the absolute URL otherwise. */
  target: string;
  at: number;
}

export interface ForwardProxy {
  /** http://127.0.0.1:PORT, the value for HTTP_PROXY / HTTPS_PROXY. */
  url: string;
  requests: ForwardedRequest[];
  stop(): Promise<void>;
}

const HOP_BY_HOP = ["connection", "keep-alive", "proxy-connection", "proxy-authorization", "te", "trailer", "upgrade"];

export interface ForwardProxyOptions {
  /**
   * Host names the proxy resolves itself (name -> address, or name:port -> address:port), as a proxy in front of a
   * private network does: the client never resolves them, so a test can use a registry name that is not loopback.
   */
  resolve?: Record<string, string>;
}

export async function startForwardProxy(options: ForwardProxyOptions = {}): Promise<ForwardProxy> {
  const resolveHost = (host: string) => options.resolve?.[host.toLowerCase()] ?? host;
  /** host:port as the proxy connects to it, after `resolve`. */
  const resolveTarget = (host: string, port: number): { host: string; port: number } => {
    const mapped = options.resolve?.[`${host.toLowerCase()}:${port}`];
    if (mapped !== undefined) {
      const colon = mapped.lastIndexOf(":");
      return { host: mapped.slice(0, colon), port: Number(mapped.slice(colon + 1)) };
    }
    return { host: resolveHost(host), port };
  };
  const requests: ForwardedRequest[] = [];
  const sockets = new Set<Socket>();
  const track = (socket: Socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
  };

  const server = createServer((req, res) => {
    const target = req.url ?? "";
    let url: URL;
    try {
      url = new URL(target);
      if (url.protocol !== "http:") throw new Error("not http");
    } catch {
      res.writeHead(400, { "content-type": "text/plain" });
      res.end("forward proxy: expected an absolute http:// URI\n");
      return;
    }
    requests.push({ method: req.method ?? "", target, at: Date.now() });
    const headers: IncomingHttpHeaders = { ...req.headers, host: url.host };
    for (const name of HOP_BY_HOP) delete headers[name];
    const to = resolveTarget(url.hostname, Number(url.port || 80));
    const upstream = httpRequest({ host: to.host, port: to.port, method: req.method, path: `${url.pathname}${url.search}`, headers });
    upstream.on("response", (upRes) => {
      const out: IncomingHttpHeaders = { ...upRes.headers };
      for (const name of HOP_BY_HOP) delete out[name];
      res.writeHead(upRes.statusCode ?? 502, out);
      upRes.pipe(res);
    });
    upstream.on("error", () => {
      if (!res.headersSent) res.writeHead(502, { "content-type": "text/plain" });
      res.end();
    });
    res.on("close", () => upstream.destroy());
    req.pipe(upstream);
  });

  server.on("connect", (req, client: Socket, head: Buffer) => {
    track(client);
    const target = req.url ?? "";
    requests.push({ method: "CONNECT", target, at: Date.now() });
    const colon = target.lastIndexOf(":");
    const host = target.slice(0, colon).replace(/^\[|\]$/g, "");
    const port = Number(target.slice(colon + 1));
    const to = resolveTarget(host, port);
    const upstream = connect(to.port, to.host);
    track(upstream);
    let established = false;
    upstream.once("connect", () => {
      established = true;
      client.write("HTTP/1.1 200 Connection Established\r\n\r\n");
      if (head.length > 0) upstream.write(head);
      upstream.pipe(client);
      client.pipe(upstream);
    });
    const fail = () => {
      if (!established && !client.destroyed) client.end("HTTP/1.1 502 Bad Gateway\r\n\r\n");
      else client.destroy();
      upstream.destroy();
    };
    upstream.on("error", fail);
    client.on("error", fail);
    upstream.on("close", () => {
      if (established) client.destroy();
    });
    client.on("close", () => upstream.destroy());
  });

  const port = await listenLocal(server);
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    async stop() {
      for (const socket of sockets) socket.destroy();
      await closeServer(server);
    },
  };
}
