// A shaped link for the pull benchmark, in a process of its own (so that its CPU is not charged to any tool): the
// tests' fault proxy (test/helpers/fault-proxy.ts, compiled here with TypeScript's transpiler) in front of a
// registry, with a per-connection rate cap, an aggregate cap, a delay before every response and optionally one
// straggler connection. Prints one JSON line { url, host } when it listens; stops when stdin closes. A line "stats"
// on stdin answers { bytes, seconds } of the blob requests since the last one, and resets the shape (the straggler).
//
//   node bench/pull/shaped-link.mjs <upstream-url> '<shape JSON>' <work-dir>
//
// The shape is the proxy's LinkShape; its straggler may say { nth, bytesPerSecond, pathIncludes } (the nth
// connection carrying a GET whose path contains pathIncludes).
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const [upstream, shapeJson, work] = process.argv.slice(2);
if (!upstream || !shapeJson || !work) {
  console.error("usage: shaped-link.mjs <upstream-url> '<shape JSON>' <work-dir>");
  process.exit(2);
}

const ts = createRequire(import.meta.url)("typescript");
const out = join(work, `shaped-link-${process.pid}`);
mkdirSync(out, { recursive: true });
writeFileSync(join(out, "package.json"), '{ "type": "module" }\n');
for (const name of ["fault-proxy", "ports"]) {
  const source = readFileSync(join(root, "test", "helpers", `${name}.ts`), "utf8");
  const compiled = ts.transpileModule(source, { compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 } });
  writeFileSync(join(out, `${name}.js`), compiled.outputText);
}
const { startFaultProxy } = await import(pathToFileURL(join(out, "fault-proxy.js")).href);

const shape = JSON.parse(shapeJson);
if (shape.straggler?.pathIncludes !== undefined) {
  const part = shape.straggler.pathIncludes;
  shape.straggler = { ...shape.straggler, match: (req) => req.method === "GET" && req.path.includes(part) };
}
const proxy = await startFaultProxy(upstream, { shape });
console.log(JSON.stringify({ url: proxy.url, host: proxy.host }));
const input = createInterface({ input: process.stdin });
input.on("line", (line) => {
  if (line.trim() !== "stats") return;
  const blobs = proxy.requests.filter((r) => r.method === "GET" && r.path.includes("/blobs/") && r.bytes > 100_000);
  const first = Math.min(...blobs.map((r) => r.at));
  const last = Math.max(...blobs.map((r) => r.endAt ?? Date.now()));
  const bytes = blobs.reduce((sum, r) => sum + r.bytes, 0);
  console.log(JSON.stringify({ bytes, seconds: blobs.length > 0 ? (last - first) / 1000 : 0 }));
  proxy.resetStats();
  // Each run gets the whole shape afresh: connections count from 1 again, so every run has its straggler.
  proxy.setShape(shape);
});
input.on("close", () => void proxy.stop().then(() => process.exit(0)));
process.on("SIGTERM", () => void proxy.stop().then(() => process.exit(0)));
