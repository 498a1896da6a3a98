// Hostile clients against a real `llama-oci serve` process, on 127.0.0.1 only, bounded in count and time: malformed
// and truncated bodies, wrong types, huge numbers, oversized bodies, slow-loris headers and bodies, schemas built to
// blow up the grammar converter, and streams dropped mid-way. Each must get its 4xx (or a closed connection) and the
// server must keep serving, with no sequence left busy.
import { connect, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { startRegistry, type RegistryHandle } from "./helpers/registry.js";
import { metricValue, pushTinyModel, serveEnv, startServe, type PushedModel, type ServeProcess } from "./helpers/serve.js";
import { makeTempDir, removeDir } from "./helpers/tmp.js";

let registry: RegistryHandle;
let workDir: string;
let tiny: PushedModel;
let server: ServeProcess;
let port: number;

const REQUEST_TIMEOUT_MS = 1500;

beforeAll(async () => {
  workDir = await makeTempDir("llama-oci-serve-hostile");
  registry = await startRegistry();
  tiny = await pushTinyModel(registry, workDir, "ai/tiny-hostile", 41);
  server = await startServe(
    ["--model", tiny.reference, "--parallel", "2", "--max-queue", "4", "--body-limit", "65536", "--request-timeout", String(REQUEST_TIMEOUT_MS), "-c", "4096"],
    serveEnv(workDir),
    { waitReady: true },
  );
  port = Number(new URL(server.url).port);
});

afterAll(async () => {
  await server?.stop();
  await registry?.stop();
  if (workDir) await removeDir(workDir);
});

async function post(path: string, body: string | Buffer, headers: Record<string, string> = {}): Promise<{ status: number; json: unknown; text: string }> {
  const response = await fetch(`${server.url}${path}`, {
    method: "POST",
    body: typeof body === "string" ? body : new Uint8Array(body),
    headers: { "content-type": "application/json", ...headers },
  });
  const text = await response.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: response.status, json, text };
}

/** Opens a raw connection, writes `chunks` with `gapMs` between them, and resolves with what came back once it closed. */
function raw(chunks: (string | Buffer)[], options: { gapMs?: number; endAfter?: boolean; timeoutMs?: number } = {}): Promise<{ response: string; closedAfterMs: number }> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const socket: Socket = connect(port, "127.0.0.1");
    let response = "";
    let stopped = false;
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`the server kept the connection open for ${options.timeoutMs ?? 10_000} ms; got: ${response.slice(0, 200)}`));
    }, options.timeoutMs ?? 10_000);
    socket.on("data", (data) => (response += data.toString("latin1")));
    socket.on("error", () => {});
    socket.on("close", () => {
      stopped = true;
      clearTimeout(timer);
      resolve({ response, closedAfterMs: Date.now() - started });
    });
    const send = async () => {
      for (const chunk of chunks) {
        if (stopped) return;
        socket.write(chunk);
        if (options.gapMs) await new Promise((r) => setTimeout(r, options.gapMs));
      }
      if (options.endAfter) socket.end();
    };
    socket.on("connect", () => void send());
  });
}

const CHAT = "/v1/chat/completions";
const message = (content: unknown) => JSON.stringify({ messages: [{ role: "user", content }], max_tokens: 2 });

describe("bad bodies get 400 with the field named, in the API's own error shape", () => {
  test("malformed JSON, wrong types, unknown values and huge numbers", async () => {
    const cases: [path: string, body: string, status: number, pattern: RegExp][] = [
      [CHAT, "{", 400, /not valid JSON/],
      [CHAT, '{"messages": [}', 400, /not valid JSON/],
      [CHAT, "null", 400, /request body must be an object/],
      [CHAT, '"text"', 400, /request body must be an object/],
      [CHAT, "[]", 400, /request body must be an object/],
      [CHAT, "{}", 400, /messages is required/],
      [CHAT, '{"messages": {}}', 400, /messages must be an array/],
      [CHAT, '{"messages": []}', 400, /messages must have at least 1 item/],
      [CHAT, message(42), 400, /messages\[0\]\.content must be a string/],
      [CHAT, message([{ type: "input_video", input_video: { data: "" } }]), 400, /content parts of type "input_video" are not supported/],
      [CHAT, message([{ type: "input_audio", input_audio: { data: "", format: "wav" } }]), 400, /messages\[0\]\.content\[0\]\.input_audio\.data is empty/],
      [CHAT, message([{ type: "input_audio", input_audio: { data: "AAAA", format: "ogg" } }]), 400, /messages\[0\]\.content\[0\]\.input_audio\.format must be one of "wav", "mp3"/],
      [CHAT, message([{ type: "input_audio", input_audio: "AAAA" }]), 400, /messages\[0\]\.content\[0\]\.input_audio must be an object/],
      [CHAT, message([{ type: "image_url", image_url: { url: "data:," } }]), 400, /messages\[0\]\.content\[0\]\.image_url: only base64 data URLs are supported/],
      [CHAT, JSON.stringify({ messages: [{ role: "boss", content: "x" }] }), 400, /messages\[0\]\.role must be one of/],
      [CHAT, JSON.stringify({ messages: [{ role: "user", content: "x" }], temperature: "hot" }), 400, /temperature must be a number or null/],
      [CHAT, JSON.stringify({ messages: [{ role: "user", content: "x" }], max_tokens: "10" }), 400, /max_tokens must be an integer or null/],
      [CHAT, JSON.stringify({ messages: [{ role: "user", content: "x" }], max_tokens: 1.5 }), 400, /max_tokens must be an integer/],
      [CHAT, '{"messages": [{"role": "user", "content": "x"}], "max_tokens": 1e400}', 400, /max_tokens must be/],
      [CHAT, '{"messages": [{"role": "user", "content": "x"}], "temperature": 1e400}', 400, /temperature must be a finite number/],
      [CHAT, JSON.stringify({ messages: [{ role: "user", content: "x" }], max_tokens: 2 ** 40 }), 400, /max_tokens must be <= 2147483647/],
      [CHAT, JSON.stringify({ messages: [{ role: "user", content: "x" }], seed: 1e30 }), 400, /seed must be <=/],
      [CHAT, JSON.stringify({ messages: [{ role: "user", content: "x" }], top_p: 7 }), 400, /top_p must be <= 1/],
      [CHAT, JSON.stringify({ messages: [{ role: "user", content: "x" }], stop: 5 }), 400, /stop must be a string, an array of strings or null/],
      [CHAT, JSON.stringify({ messages: [{ role: "user", content: "x" }], stop: Array(100).fill("x") }), 400, /stop must be a string, an array of strings or null/],
      [CHAT, JSON.stringify({ messages: [{ role: "user", content: "x" }], n: 3 }), 400, /only n=1/],
      [CHAT, JSON.stringify({ messages: [{ role: "user", content: "x" }], stream: "yes" }), 400, /stream must be a boolean or null/],
      [CHAT, JSON.stringify({ messages: [{ role: "user", content: "x" }], response_format: { type: "xml" } }), 400, /response_format\.type must be one of/],
      [CHAT, JSON.stringify({ messages: [{ role: "user", content: "x" }], model: "NOT A REF!" }), 400, /invalid reference/],
      [CHAT, JSON.stringify({ messages: [{ role: "user", content: "x" }], model: "/etc/passwd.gguf" }), 400, /invalid reference/],
      [CHAT, JSON.stringify({ messages: [{ role: "user", content: "x" }], model: "x".repeat(5000) }), 400, /model must be at most 2048 characters/],
      ["/v1/completions", JSON.stringify({ prompt: [999_999_999] }), 400, /prompt\[0\] is 999999999, not a token of this model/],
      ["/v1/completions", JSON.stringify({ prompt: [-1] }), 400, /prompt must be a string, an array of one string, or an array of token IDs/],
      ["/v1/embeddings", JSON.stringify({ input: 5 }), 400, /input must be a string/],
      ["/v1/embeddings", JSON.stringify({ input: "x", dimensions: 3 }), 400, /dimensions/],
    ];
    for (const [path, body, status, pattern] of cases) {
      const response = await post(path, body);
      expect(response.status, `${path} ${body.slice(0, 80)}: ${response.text}`).toBe(status);
      const error = (response.json as { error?: { message?: string; type?: string } }).error;
      expect(error?.type, response.text).toBe("invalid_request_error");
      expect(error?.message, `${body.slice(0, 80)}`).toMatch(pattern);
    }
  });

  test("on /api the error is Ollama's { error }", async () => {
    const cases: [path: string, body: string, pattern: RegExp][] = [
      ["/api/chat", "{", /not valid JSON/],
      ["/api/chat", JSON.stringify({ messages: [{ role: "user", content: 1 }] }), /messages\[0\]\.content must be a string or null/],
      ["/api/chat", JSON.stringify({ messages: [], options: { num_predict: "lots" } }), /options\.num_predict must be an integer or null/],
      ["/api/generate", JSON.stringify({ prompt: "x", format: "yaml" }), /format must be "json" or a JSON schema/],
      ["/api/generate", JSON.stringify({ prompt: "x", context: [1, 2, 99_999_999] }), /context\[2\] is 99999999, not a token/],
      ["/api/generate", JSON.stringify({ prompt: "x", keep_alive: { forever: true } }), /keep_alive must be a duration/],
      ["/api/embed", JSON.stringify({ input: [1, 2] }), /input must be a string or an array of strings/],
      ["/api/pull", JSON.stringify({}), /model is required/],
    ];
    for (const [path, body, pattern] of cases) {
      const response = await post(path, body);
      expect(response.status, `${path} ${body}: ${response.text}`).toBe(400);
      expect(Object.keys(response.json as object)).toEqual(["error"]);
      expect((response.json as { error: string }).error).toMatch(pattern);
    }
  });

  test("JSON schemas that would blow up the grammar converter are refused", async () => {
    let deep: object = { type: "string" };
    for (let i = 0; i < 200; i++) deep = { type: "array", items: deep };
    const schemas: [schema: object, pattern: RegExp][] = [
      [deep, /nested more than 32 levels deep/],
      [{ type: "array", items: { type: "string" }, minItems: 1_000_000_000 }, /minItems above 1000/],
      [{ type: "string", pattern: "^a{0,99999999}$" }, /pattern repeating more than 1000 times/],
      [{ $ref: "#" }, /Unsupported ref/],
      [{ anyOf: [] }, /does not give a usable grammar|JSON schema/],
    ];
    for (const [schema, pattern] of schemas) {
      const body = JSON.stringify({ messages: [{ role: "user", content: "x" }], max_tokens: 2, response_format: { type: "json_schema", json_schema: { name: "s", schema } } });
      const response = await post(CHAT, body);
      expect(response.status, response.text).toBe(400);
      expect((response.json as { error: { message: string } }).error.message).toMatch(pattern);
    }
  });

  test("__proto__ keys and a deeply nested unknown field do nothing", async () => {
    const proto = await post(CHAT, '{"__proto__": {"polluted": true}, "messages": [{"role": "user", "content": "x"}], "max_tokens": 1}');
    expect(proto.status, proto.text).toBe(200);
    const nested = await post(CHAT, `{"extra": ${"[".repeat(20_000)}${"]".repeat(20_000)}, "messages": [{"role": "user", "content": "x"}], "max_tokens": 1}`);
    expect(nested.status, nested.text).toBe(200);
    const invalidUtf8 = await post(CHAT, Buffer.concat([Buffer.from('{"messages": [{"role": "user", "content": "'), Buffer.from([0xff, 0xfe, 0xc3]), Buffer.from('"}], "max_tokens": 1}')]));
    expect(invalidUtf8.status, invalidUtf8.text).toBe(200);
    const surrogate = await post(CHAT, '{"messages": [{"role": "user", "content": "\\ud800\\u0000"}], "max_tokens": 1}');
    expect(surrogate.status, surrogate.text).toBe(200);
  });
});

describe("size and time limits", () => {
  test("a body over --body-limit is 413, with content-length or chunked", async () => {
    const big = message("x".repeat(70_000));
    expect((await post(CHAT, big)).status).toBe(413);
    const chunked = await raw([
      `POST ${CHAT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n`,
      ...Array.from({ length: 20 }, () => `1000\r\n${"x".repeat(0x1000)}\r\n`),
      "0\r\n\r\n",
    ]);
    expect(chunked.response).toMatch(/^HTTP\/1\.1 413/);
  });

  test("slow-loris: headers or a body that trickle in are cut off after --request-timeout", async () => {
    const headers = await raw(
      Array.from({ length: 100 }, (_, i) => (i === 0 ? `POST ${CHAT} HTTP/1.1\r\nHost: x\r\n` : "X-Slow: y\r\n")),
      { gapMs: 200, timeoutMs: REQUEST_TIMEOUT_MS + 8_000 },
    );
    expect(headers.closedAfterMs).toBeLessThan(REQUEST_TIMEOUT_MS + 6_000);
    const body = await raw(
      [`POST ${CHAT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n`, ...Array.from({ length: 100 }, () => " ")],
      { gapMs: 200, timeoutMs: REQUEST_TIMEOUT_MS + 8_000 },
    );
    expect(body.closedAfterMs).toBeLessThan(REQUEST_TIMEOUT_MS + 6_000);
    expect(body.response).toMatch(/^HTTP\/1\.1 408|^$/);
  });

  test("truncated bodies, garbage request lines and oversized headers get an answer or a close, never a hang", async () => {
    const truncated = await raw([`POST ${CHAT} HTTP/1.1\r\nHost: x\r\nContent-Length: 200\r\n\r\n{"messages": [`], { endAfter: true });
    expect(truncated.closedAfterMs).toBeLessThan(REQUEST_TIMEOUT_MS + 6_000);
    const garbage = await raw(["GARBAGE / NOTHTTP\r\n\r\n"]);
    expect(garbage.response).toMatch(/^HTTP\/1\.1 400/);
    const hugeHeader = await raw([`GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(20_000)}\r\n\r\n`]);
    expect(hugeHeader.response).toMatch(/^HTTP\/1\.1 431/);
    const badLength = await raw([`POST ${CHAT} HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n`]);
    expect(badLength.response).toMatch(/^HTTP\/1\.1 400/);
  });
});

describe("dropped connections", () => {
  test("streams and requests dropped mid-way, and waiting ones dropped, leave every sequence free", async () => {
    const body = JSON.stringify({ messages: [{ role: "user", content: "Hello there" }], max_tokens: 100_000, temperature: 0, stream: true });
    // Streams dropped after their first bytes.
    for (let i = 0; i < 8; i++) {
      const controller = new AbortController();
      const response = await fetch(`${server.url}${CHAT}`, { method: "POST", body, signal: controller.signal });
      const reader = response.body!.getReader();
      await reader.read();
      controller.abort();
    }
    // Requests dropped right after they were sent, streaming and not, on both APIs.
    const sends = Array.from({ length: 12 }, (_, i) =>
      raw(
        [
          i % 2 === 0
            ? `POST ${CHAT} HTTP/1.1\r\nHost: x\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`
            : `POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Length: 60\r\n\r\n${JSON.stringify({ prompt: "Hello", options: { num_predict: 100000 } }).padEnd(60)}`,
        ],
        { endAfter: false, timeoutMs: 300 },
      ).catch(() => undefined),
    );
    await Promise.all(sends);
    // More than --parallel + --max-queue at once: some 503, the rest dropped while running or waiting.
    const controllers = Array.from({ length: 10 }, () => new AbortController());
    const nonStreaming = body.replace('"stream":true', '"stream":false');
    const pending = controllers.map((controller) =>
      fetch(`${server.url}${CHAT}`, { method: "POST", body: nonStreaming, signal: controller.signal }).then(
        (r) => r.status,
        () => 0,
      ),
    );
    setTimeout(() => controllers.forEach((controller) => controller.abort()), 500);
    const statuses = await Promise.all(pending);
    expect(statuses.filter((s) => s === 503).length).toBeGreaterThanOrEqual(4);

    const deadline = Date.now() + 10_000;
    let text = "";
    for (;;) {
      text = await (await fetch(`${server.url}/metrics`)).text();
      if (metricValue(text, "llama_oci_sequences_busy") === 0 && metricValue(text, "llama_oci_queue_length") === 0) break;
      if (Date.now() > deadline) throw new Error(`sequences still busy:\n${text}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(metricValue(text, "llama_oci_completions_total", { finish_reason: "abort" })).toBeGreaterThanOrEqual(8);
  });

  test("after all of it the server answers as before", async () => {
    expect((await fetch(`${server.url}/health`)).status).toBe(200);
    const answer = await post(CHAT, JSON.stringify({ messages: [{ role: "user", content: "Hello there" }], max_tokens: 4, temperature: 0 }));
    expect(answer.status, answer.text).toBe(200);
    expect((answer.json as { choices: { finish_reason: string }[] }).choices[0]!.finish_reason).toBe("length");
    expect(server.process.child.exitCode).toBeNull();
    expect(server.logs()).not.toMatch(/uncaught|unhandled|FATAL|Segmentation/i);
  });
});
