import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { Writable } from "node:stream";
import { fileURLToPath } from "node:url";
import ts from "typescript";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ProgressEvent } from "../src/oci/progress.js";
import { formatMB, shortDigest, SpeedMeter } from "../src/cli/progress-format.js";
import {
  BAR_WIDTH,
  createProgressRenderer,
  formatProgressLine,
  progressBar,
  type RendererOptions,
} from "../src/cli/progress-renderer.js";
import { hasScript, runInPty } from "./helpers/pty.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const A = "sha256:1234567890ab" + "c".repeat(52);
const B = "sha256:abcdef012345" + "d".repeat(52);
const DOC_EXAMPLE =
  "1234567890ab: Downloading [===================>              ] 39.0% (39.00 MB / 100.00 MB) 20.10 MB/s";
const LINE_RE =
  /[0-9a-f]{12}: Downloading \[(=*>? *|=+)\] \d{1,3}\.\d% \(\d+\.\d{2} MB \/ \d+\.\d{2} MB\) \d+\.\d{2} MB\/s( ETA \w+)?/;
const COLOR_RE = /\x1b\[\d*(;\d+)*m/;

/** Collects what the renderer writes, as a terminal (isTTY) or as a pipe. */
class CaptureStream extends Writable {
  text = "";
  constructor(
    readonly isTTY: boolean,
    readonly columns = 120,
  ) {
    super();
  }
  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: () => void): void {
    this.text += chunk.toString();
    callback();
  }
}

function render(
  events: (emit: (event: ProgressEvent) => void, clock: { now: number }) => void,
  options: Partial<RendererOptions> & { isTTY?: boolean; columns?: number } = {},
): string {
  const stream = new CaptureStream(options.isTTY ?? true, options.columns);
  const clock = { now: 0 };
  const renderer = createProgressRenderer({ env: {}, now: () => clock.now, ...options, stream });
  events(renderer.onProgress, clock);
  renderer.close();
  return stream.text;
}

/** The screen lines a terminal would keep: applies \r, line clears and cursor-up moves to a line buffer. */
function screen(raw: string): string[] {
  const lines: string[] = [""];
  let row = 0;
  const pattern = /\x1b\[(\d*)([A-Za-z])|\r|\n|[^\x1b\r\n]+/g;
  for (const match of raw.matchAll(pattern)) {
    const token = match[0];
    if (token === "\n") {
      row++;
      if (lines[row] === undefined) lines[row] = "";
    } else if (token === "\r") {
      continue;
    } else if (match[2] === "A") {
      row -= Number(match[1] || 1);
    } else if (match[2] === "K") {
      lines[row] = "";
    } else if (match[2] === "m") {
      continue;
    } else {
      lines[row] += token;
    }
  }
  return lines.filter((line, index) => line !== "" || index < lines.length - 1);
}

describe("progress line format", () => {
  it("formats 39 MB of 100 MB at 20.10 MB/s like the documented example, with a bar at 39%", () => {
    const line = formatProgressLine({ digest: A, completed: 39e6, size: 100e6, bytesPerSecond: 20.1e6 });
    expect(line).toBe(
      "1234567890ab: Downloading [=============>                    ] 39.0% (39.00 MB / 100.00 MB) 20.10 MB/s",
    );
    // Same layout and width as the documentation; only the fill differs, because the documented bar (19 of 34
    // cells) does not match its own 39.0%.
    expect(line.length).toBe(DOC_EXAMPLE.length);
    expect(line.replace(/\[.*\]/, "[]")).toBe(DOC_EXAMPLE.replace(/\[.*\]/, "[]"));
    expect(line).toMatch(LINE_RE);
  });

  it("appends the ETA after the speed when known", () => {
    const line = formatProgressLine({ digest: A, completed: 41e6, size: 100e6, bytesPerSecond: 18.5e6, etaSeconds: 189 });
    expect(line).toBe(
      "1234567890ab: Downloading [=============>                    ] 41.0% (41.00 MB / 100.00 MB) 18.50 MB/s ETA 3m09s",
    );
  });

  it("draws the bar proportionally inside a fixed width", () => {
    expect(progressBar(0)).toBe(`[>${" ".repeat(BAR_WIDTH - 1)}]`);
    expect(progressBar(0.5)).toBe(`[${"=".repeat(17)}>${" ".repeat(16)}]`);
    expect(progressBar(0.999)).toBe(`[${"=".repeat(BAR_WIDTH - 1)}>]`);
    expect(progressBar(1)).toBe(`[${"=".repeat(BAR_WIDTH)}]`);
    for (const fraction of [0, 0.1, 0.39, 0.77, 1]) expect(progressBar(fraction)).toHaveLength(BAR_WIDTH + 2);
  });

  it("shortens digests and formats MB as 10^6 bytes with 2 decimals", () => {
    expect(shortDigest(A)).toBe("1234567890ab");
    expect(formatMB(39e6)).toBe("39.00 MB");
    expect(formatMB(1_234_567)).toBe("1.23 MB");
    expect(formatMB(0)).toBe("0.00 MB");
  });
});

describe("SpeedMeter", () => {
  it("measures bytes per second since the transfer started", () => {
    const meter = new SpeedMeter(3000);
    meter.add(0, 0);
    meter.add(1e6, 500);
    meter.add(1e6, 1000);
    expect(meter.bytesPerSecond(1000)).toBeCloseTo(2e6, 0);
  });

  it("only counts the sliding window", () => {
    const meter = new SpeedMeter(1000);
    meter.add(0, 0);
    for (let t = 100; t <= 10_000; t += 100) meter.add(1e6, t); // 10 MB/s
    for (let t = 10_100; t <= 12_000; t += 100) meter.add(3e6, t); // then 30 MB/s
    expect(meter.bytesPerSecond(12_000) / 1e6).toBeCloseTo(30, 0);
    expect(meter.bytesPerSecond(20_000)).toBe(0);
  });

  it("reports 0 before any time has passed", () => {
    const meter = new SpeedMeter();
    expect(meter.bytesPerSecond(5)).toBe(0);
    meter.add(0, 10);
    expect(meter.bytesPerSecond(10)).toBe(0);
  });
});

describe("terminal renderer", () => {
  it("prints the resume line, then the Docker-style line with the measured speed", () => {
    const raw = render((emit, clock) => {
      emit({ type: "layer-start", digest: A, size: 100e6, filename: "model.gguf", resumeFrom: 18.9e6 });
      clock.now = 1000;
      emit({ type: "layer-progress", digest: A, size: 100e6, completed: 39e6 });
    });
    expect(screen(raw)).toEqual([
      "1234567890ab: Resuming download from 18.90 MB",
      "1234567890ab: Downloading [=============>                    ] 39.0% (39.00 MB / 100.00 MB) 20.10 MB/s ETA 4s",
    ]);
    expect(raw).toContain("\x1b[2K");
  });

  it("keeps one line per layer and redraws the block in place", () => {
    const raw = render((emit, clock) => {
      emit({ type: "resolved", reference: "ai/smollm2:135M-Q4_0", digest: A, files: 2, totalBytes: 150e6 });
      emit({ type: "layer-start", digest: A, size: 100e6, filename: "model.gguf", resumeFrom: 0 });
      emit({ type: "layer-start", digest: B, size: 50e6, filename: "mmproj.gguf", resumeFrom: 0 });
      clock.now = 1000;
      emit({ type: "layer-progress", digest: A, size: 100e6, completed: 10e6 });
      clock.now = 2000;
      emit({ type: "layer-retry", digest: B, attempt: 2, maxAttempts: 5, delayMs: 2000, reason: "connection reset" });
      emit({ type: "warning", message: "slow registry" });
      emit({ type: "verifying", digest: A, size: 100e6 });
    });
    expect(raw).toContain("\x1b[2A");
    expect(screen(raw)).toEqual([
      "Pulling ai/smollm2:135M-Q4_0 (2 files, 150.00 MB)",
      "warning: slow registry",
      "1234567890ab: Verifying",
      "abcdef012345: Retrying in 2.0s (attempt 2/5): connection reset",
    ]);
  });

  it("ends with completion lines and the cursor below the block", () => {
    const raw = render((emit, clock) => {
      emit({ type: "layer-start", digest: A, size: 100e6, filename: "model.gguf", resumeFrom: 0 });
      emit({ type: "layer-start", digest: B, size: 50e6, filename: "mmproj.gguf", resumeFrom: 0 });
      clock.now = 500;
      emit({ type: "layer-progress", digest: B, size: 50e6, completed: 25e6 });
      emit({ type: "layer-done", digest: A, size: 100e6, fromCache: false });
      emit({ type: "layer-done", digest: B, size: 50e6, fromCache: true });
    });
    expect(screen(raw)).toEqual(["1234567890ab: Download complete", "abcdef012345: Already exists"]);
    expect(raw.endsWith("\n")).toBe(true);
  });

  it("stops moving finished lines at the top of the block", () => {
    const raw = render((emit, clock) => {
      emit({ type: "layer-start", digest: A, size: 100e6, filename: "model.gguf", resumeFrom: 0 });
      emit({ type: "layer-start", digest: B, size: 50e6, filename: "mmproj.gguf", resumeFrom: 0 });
      emit({ type: "layer-done", digest: A, size: 100e6, fromCache: false });
      clock.now = 1000;
      emit({ type: "layer-progress", digest: B, size: 50e6, completed: 5e6 });
    });
    // The last redraw moved up over B's line only.
    expect(raw.match(/\x1b\[(\d+)A/g)!.at(-1)).toBe("\x1b[1A");
    const lastDraw = raw.slice(raw.lastIndexOf("\x1b[1A"));
    expect(lastDraw).toContain("abcdef012345: Downloading");
    expect(lastDraw).not.toContain("1234567890ab");
    expect(screen(raw)[0]).toBe("1234567890ab: Download complete");
  });

  it("redraws at most about 10 times a second however many progress events arrive", () => {
    const raw = render((emit, clock) => {
      emit({ type: "layer-start", digest: A, size: 100e6, filename: "model.gguf", resumeFrom: 0 });
      for (let i = 1; i <= 1000; i++) {
        clock.now = i;
        emit({ type: "layer-progress", digest: A, size: 100e6, completed: i * 100_000 });
      }
    });
    const draws = raw.split("1234567890ab: Downloading [").length - 1;
    expect(draws).toBeGreaterThanOrEqual(9);
    expect(draws).toBeLessThanOrEqual(12);
    // close() drew the last state even though the final event fell inside the throttle interval.
    expect(screen(raw)).toEqual([expect.stringContaining("100.0% (100.00 MB / 100.00 MB)")]);
  });

  it("honours maxRedrawsPerSecond", () => {
    const raw = render(
      (emit, clock) => {
        emit({ type: "layer-start", digest: A, size: 100e6, filename: "model.gguf", resumeFrom: 0 });
        for (let i = 1; i <= 1000; i++) {
          clock.now = i;
          emit({ type: "layer-progress", digest: A, size: 100e6, completed: i * 1000 });
        }
      },
      { maxRedrawsPerSecond: 2 },
    );
    expect(raw.split("Downloading [").length - 1).toBeLessThanOrEqual(4);
  });

  it("uses colour only without NO_COLOR, and keeps cursor movement either way", () => {
    const events = (emit: (event: ProgressEvent) => void) => {
      emit({ type: "layer-start", digest: A, size: 100e6, filename: "model.gguf", resumeFrom: 0 });
      emit({ type: "layer-start", digest: B, size: 50e6, filename: "mmproj.gguf", resumeFrom: 0 });
      emit({ type: "layer-retry", digest: B, attempt: 1, maxAttempts: 5, delayMs: 500, reason: "timeout" });
      emit({ type: "layer-done", digest: A, size: 100e6, fromCache: false });
    };
    const colored = render(events, { env: { TERM: "xterm" } });
    const noColor = render(events, { env: { TERM: "xterm", NO_COLOR: "1" } });
    const explicit = render(events, { env: {}, noColor: true });
    expect(colored).toMatch(COLOR_RE);
    expect(noColor).not.toMatch(COLOR_RE);
    expect(explicit).not.toMatch(COLOR_RE);
    expect(noColor).toContain("\x1b[2A");
    expect(screen(noColor)).toEqual(screen(colored));
  });

  it("cuts lines to the terminal width and strips control characters from server text", () => {
    const raw = render(
      (emit) => {
        emit({ type: "layer-start", digest: A, size: 100e6, filename: "model.gguf", resumeFrom: 0 });
        emit({ type: "layer-retry", digest: A, attempt: 1, maxAttempts: 5, delayMs: 1000, reason: "bad\x1b[31m\nthing ".repeat(20) });
      },
      { columns: 60, env: { NO_COLOR: "1" } },
    );
    const lines = screen(raw);
    expect(lines.at(-1)).toBe("1234567890ab: Retrying in 1.0s (attempt 1/5): bad thing bad");
    for (const line of lines) expect(line.length).toBeLessThanOrEqual(59);
    expect(raw).not.toMatch(/\x1b\[31m/);
  });

  it("prints nothing when quiet, warnings included", () => {
    const raw = render((emit) => {
      emit({ type: "layer-start", digest: A, size: 100e6, filename: "model.gguf", resumeFrom: 0 });
      emit({ type: "warning", message: "something" });
      emit({ type: "layer-done", digest: A, size: 100e6, fromCache: false });
    }, { quiet: true });
    expect(raw).toBe("");
  });
});

describe("plain renderer (no terminal)", () => {
  const scenario = (emit: (event: ProgressEvent) => void, clock: { now: number }) => {
    emit({ type: "resolved", reference: "ai/smollm2:135M-Q4_0", digest: A, files: 2, totalBytes: 150e6 });
    emit({ type: "layer-start", digest: A, size: 100e6, filename: "model.gguf", resumeFrom: 39e6 });
    emit({ type: "layer-start", digest: B, size: 50e6, filename: "mmproj.gguf", resumeFrom: 0 });
    for (let i = 1; i <= 500; i++) {
      clock.now = i * 10;
      emit({ type: "layer-progress", digest: A, size: 100e6, completed: 39e6 + i * 100_000 });
      emit({ type: "layer-progress", digest: B, size: 50e6, completed: i * 100_000 });
    }
    emit({ type: "layer-retry", digest: B, attempt: 2, maxAttempts: 5, delayMs: 2000, reason: "connection reset" });
    emit({ type: "warning", message: "registry is slow" });
    emit({ type: "verifying", digest: A, size: 100e6 });
    emit({ type: "layer-done", digest: A, size: 100e6, fromCache: false });
    emit({ type: "layer-done", digest: B, size: 50e6, fromCache: true });
  };
  const expected = [
    "Pulling ai/smollm2:135M-Q4_0 (2 files, 150.00 MB)",
    "1234567890ab: Resuming download from 39.00 MB",
    "abcdef012345: Downloading mmproj.gguf (50.00 MB)",
    "abcdef012345: Retrying in 2.0s (attempt 2/5): connection reset",
    "warning: registry is slow",
    "1234567890ab: Verifying",
    "1234567890ab: Download complete",
    "abcdef012345: Already exists",
    "",
  ].join("\n");

  it("writes a few plain lines, never per chunk, and no escape codes", () => {
    const raw = render(scenario, { isTTY: false, env: { TERM: "xterm" } });
    expect(raw).toBe(expected);
    expect(raw).not.toContain("\x1b");
  });

  it("is used on a terminal with TERM=dumb or when tty is false", () => {
    expect(render(scenario, { isTTY: true, env: { TERM: "dumb" } })).toBe(expected);
    expect(render(scenario, { isTTY: true, tty: false })).toBe(expected);
  });
});

describe("under a real terminal", () => {
  let modules: string;
  const fixture = join(root, "test/fixtures/render-progress.mjs");
  const baseEnv = (): NodeJS.ProcessEnv => {
    const env: NodeJS.ProcessEnv = { ...process.env, TERM: "xterm-256color", RENDER_PROGRESS_MODULES: join(modules, "cli") };
    delete env.NO_COLOR;
    delete env.FORCE_COLOR;
    return env;
  };

  beforeAll(() => {
    // The fixture runs in plain node: compile the two renderer sources (type-only imports vanish) into a temp dir.
    modules = mkdtempSync(join(tmpdir(), "llama-oci-progress-"));
    for (const name of ["cli/progress-format", "cli/progress-renderer", "util/terminal"]) {
      const source = readFileSync(join(root, "src", `${name}.ts`), "utf8");
      const { outputText } = ts.transpileModule(source, {
        compilerOptions: { module: ts.ModuleKind.ES2022, target: ts.ScriptTarget.ES2022 },
      });
      mkdirSync(dirname(join(modules, `${name}.js`)), { recursive: true });
      writeFileSync(join(modules, `${name}.js`), outputText);
    }
    writeFileSync(join(modules, "package.json"), '{"type":"module"}\n');
  });
  afterAll(() => rmSync(modules, { recursive: true, force: true }));

  it.skipIf(!hasScript())("draws Docker-style lines with cursor control when stderr is a TTY", async () => {
    const result = await runInPty([process.execPath, fixture], { env: baseEnv(), timeoutMs: 15_000 });
    expect(result.timedOut).toBe(false);
    expect(result.exitCode).toBe(0);
    const raw = result.output;
    expect(raw).toContain("END");
    expect(raw).toMatch(LINE_RE);
    const line = raw.match(LINE_RE)![0];
    expect(line.slice(line.indexOf("[") + 1, line.indexOf("]"))).toHaveLength(BAR_WIDTH);
    expect(raw).toMatch(/1234567890ab: Downloading \[=+> *\] 4\d\.\d% \(4\d\.\d{2} MB \/ 100\.00 MB\) 20\.10 MB\/s/);
    expect(raw).toContain("1234567890ab: Resuming download from 39.00 MB");
    expect(raw).toContain("\x1b[2A");
    expect(raw).toContain("\x1b[2K");
    expect(raw).toMatch(COLOR_RE);
    const screenLines = screen(raw.replace(/\r\n/g, "\n"));
    expect(screenLines.slice(-3)).toEqual([
      "1234567890ab: Download complete",
      "abcdef012345: Already exists",
      "END",
    ]);
  });

  it.skipIf(!hasScript())("has no colour codes under NO_COLOR but still redraws in place", async () => {
    const result = await runInPty([process.execPath, fixture], { env: { ...baseEnv(), NO_COLOR: "1" } });
    expect(result.exitCode).toBe(0);
    expect(result.output).toMatch(LINE_RE);
    expect(result.output).toContain("\x1b[2A");
    expect(result.output).not.toMatch(COLOR_RE);
  });

  it("writes plain lines without escape codes when stderr is a pipe", () => {
    const result = spawnSync(process.execPath, [fixture], { env: baseEnv(), encoding: "utf8", timeout: 15_000 });
    expect(result.status).toBe(0);
    expect(result.stderr).not.toContain("\x1b");
    expect(result.stderr.split("\n")).toEqual([
      "Pulling ai/smollm2:135M-Q4_0 (2 files, 150.00 MB)",
      "1234567890ab: Resuming download from 39.00 MB",
      "abcdef012345: Downloading mmproj.gguf (50.00 MB)",
      "abcdef012345: Retrying in 2.0s (attempt 2/5): connection reset",
      "warning: registry is slow",
      "abcdef012345: Resuming download from 5.00 MB",
      "1234567890ab: Verifying",
      "1234567890ab: Download complete",
      "abcdef012345: Already exists",
      "END",
      "",
    ]);
  });
});
