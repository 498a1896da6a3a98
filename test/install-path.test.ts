// The install scripts must know they run as the main module wherever the package lies: from a folder whose path a
// file:// URL escapes (a space, "%", "#"), through a symbolic link, and not when imported. And a native build that
// cannot succeed exits non-zero with its reason (npm install then fails), never 0 without an addon.
// The scripts are copied, with package.json, into such a folder and run with --check-main (prints and exits).
import { spawnSync } from "node:child_process";
import { copyFile, mkdir, symlink } from "node:fs/promises";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { ROOT_DIR } from "./helpers/cli.js";
import { makeTempDir, removeDir } from "./helpers/tmp.js";

const SCRIPTS = ["build-native.mjs", "fetch-llama-cpp.mjs", "native-config.mjs", "main-module.mjs"];
const FOLDERS = ["with space", "per%41cent", "hash#1", "all of %20 #them"];

let workDir: string;

beforeAll(async () => {
  workDir = await makeTempDir("llama-oci-install-path");
  for (const folder of FOLDERS) {
    const root = join(workDir, folder, "node_modules", "llama-oci");
    await mkdir(join(root, "scripts"), { recursive: true });
    await copyFile(join(ROOT_DIR, "package.json"), join(root, "package.json"));
    for (const script of SCRIPTS) await copyFile(join(ROOT_DIR, "scripts", script), join(root, "scripts", script));
  }
});

afterAll(async () => {
  await removeDir(workDir);
});

const packageIn = (folder: string) => join(workDir, folder, "node_modules", "llama-oci");

function runNode(args: string[], env: NodeJS.ProcessEnv = {}, cwd?: string) {
  const clean = { ...process.env, LLAMA_OCI_SKIP_NATIVE_BUILD: "", LLAMA_CPP_DIR: "", ...env };
  return spawnSync(process.execPath, args, { cwd, env: clean, encoding: "utf8", timeout: 30_000 });
}

describe.each(FOLDERS)("from %j", (folder) => {
  test.each(["build-native.mjs", "fetch-llama-cpp.mjs"])("%s runs as the main module", (script) => {
    const root = packageIn(folder);
    // As npm runs the install script: `node scripts/<script>` from the package folder, and by absolute path.
    for (const [args, cwd] of [[[join("scripts", script)], root], [[join(root, "scripts", script)], workDir]] as const) {
      const run = runNode([...args, "--check-main"], {}, cwd);
      expect(run.status, run.stderr).toBe(0);
      expect(run.stdout.trim()).toBe(`${script}: main module`);
    }
  });

  test("a native build that cannot succeed exits 1 with its reason", () => {
    const missing = join(workDir, folder, "no llama.cpp");
    const build = runNode([join(packageIn(folder), "scripts", "build-native.mjs")], { LLAMA_CPP_DIR: missing });
    expect(build.status, build.stderr).toBe(1);
    expect(build.stderr).toMatch(/^llama-oci: error: (LLAMA_CPP_DIR=.* does not look like a llama\.cpp checkout|cmake is needed)/m);
    if (!build.stderr.includes("cmake is needed")) expect(build.stderr).toContain(`LLAMA_CPP_DIR=${missing} does not look like a llama.cpp checkout`);

    const fetch = runNode([join(packageIn(folder), "scripts", "fetch-llama-cpp.mjs")], { LLAMA_CPP_DIR: missing });
    expect(fetch.status, fetch.stderr).toBe(1);
    expect(fetch.stderr).toContain(`error: LLAMA_CPP_DIR=${missing} does not look like a llama.cpp checkout`);
  });
});

test("through a symbolic link, as the main module; imported, not", async () => {
  const link = join(workDir, "linked scripts");
  await symlink(join(packageIn("with space"), "scripts"), link);
  const run = runNode([join(link, "build-native.mjs"), "--check-main"]);
  expect(run.status, run.stderr).toBe(0);
  expect(run.stdout.trim()).toBe("build-native.mjs: main module");

  const url = pathToFileURL(join(packageIn("all of %20 #them"), "scripts", "build-native.mjs")).href;
  const imported = runNode(["--input-type=module", "-e", `await import(${JSON.stringify(url)}); console.log("imported");`, "--", "--check-main"]);
  expect(imported.status, imported.stderr).toBe(0);
  expect(imported.stdout.trim()).toBe("imported");
});
