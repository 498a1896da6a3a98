// Compiles src/ twice: ES modules into dist/esm and CommonJS into dist/cjs, so that both
// `import { pull } from "llama-oci"` and `require("llama-oci")` work, each with its own .d.ts files.
import { execFileSync } from "node:child_process";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");

rmSync(join(root, "dist"), { recursive: true, force: true });
for (const [config, format] of [["tsconfig.json", "module"], ["tsconfig.cjs.json", "commonjs"]]) {
  execFileSync(process.execPath, [tsc, "-p", join(root, config)], { cwd: root, stdio: "inherit" });
  const outDir = join(root, "dist", format === "module" ? "esm" : "cjs");
  mkdirSync(outDir, { recursive: true });
  writeFileSync(join(outDir, "package.json"), JSON.stringify({ type: format }) + "\n");
}
// src/llama/module-dir.ts reads __dirname, which ES modules lack: give the ESM build its import.meta.url twin.
writeFileSync(
  join(root, "dist", "esm", "llama", "module-dir.js"),
  'import { dirname } from "node:path";\nimport { fileURLToPath } from "node:url";\n\n' +
    "export const moduleDir = dirname(fileURLToPath(import.meta.url));\n",
);
rmSync(join(root, "dist", "esm", "llama", "module-dir.js.map"), { force: true });
