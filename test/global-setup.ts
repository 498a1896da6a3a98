/**
 * The CLI tests run bin/llama-oci.js, which loads the built dist/. Build once before the run when dist/ is missing
 * or older than any file in src/, so the tests never exercise stale code.
 */
import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const BUILT = ["dist/esm/cli/main.js", "dist/esm/index.js", "dist/cjs/index.js"].map((p) => join(root, p));

function newestMtime(dir: string): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    newest = Math.max(newest, entry.isDirectory() ? newestMtime(path) : statSync(path).mtimeMs);
  }
  return newest;
}

export function distIsStale(): boolean {
  if (!BUILT.every((path) => existsSync(path))) return true;
  const built = Math.min(...BUILT.map((path) => statSync(path).mtimeMs));
  return built < newestMtime(join(root, "src"));
}

export default function setup(): void {
  if (!distIsStale()) return;
  execFileSync(process.execPath, [join(root, "scripts", "build-ts.mjs")], { cwd: root, stdio: "inherit" });
}
