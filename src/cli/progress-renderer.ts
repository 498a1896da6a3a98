/**
 * Shows pull and push progress on a terminal the way `docker pull` / `docker push` do: one line per layer, the block of lines redrawn in
 * place. Without a terminal it writes a few plain lines per layer and no escape codes at all.
 */
import type { ProgressEvent, ProgressListener } from "../oci/progress.js";
import { terminalSafe } from "../util/terminal.js";
import { formatDuration, formatMB, shortDigest, SpeedMeter } from "./progress-format.js";

export interface RendererOptions {
  stream: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
  /** Redraw lines in place. Default: stream.isTTY, unless TERM=dumb. */
  tty?: boolean;
  /** Print nothing at all; the caller reports warnings itself. */
  quiet?: boolean;
  /** Default: NO_COLOR set to a non-empty value (https://no-color.org). */
  noColor?: boolean;
  env?: NodeJS.ProcessEnv;
  now?: () => number;
  /** Upper bound on redraws caused by progress events; starts, retries and completions always draw. Default 10. */
  maxRedrawsPerSecond?: number;
}

export interface ProgressRenderer {
  onProgress: ProgressListener;
  /** Draws the last state and leaves the cursor below the block. Later events are ignored. */
  close(): void;
}

/** Cells between the brackets of the bar, as in the documented example line. */
export const BAR_WIDTH = 34;

export interface ProgressLineInput {
  digest: string;
  completed: number;
  size: number;
  bytesPerSecond: number;
  /** Appended as " ETA 3s" when given. */
  etaSeconds?: number;
  /** Default "Downloading"; "Pushing" for uploads. */
  verb?: string;
}

/** `1234567890ab: Downloading [====>     ] 39.0% (39.00 MB / 100.00 MB) 20.10 MB/s` */
export function formatProgressLine(input: ProgressLineInput): string {
  const fraction = input.size > 0 ? Math.min(1, Math.max(0, input.completed / input.size)) : 0;
  const percent = (fraction * 100).toFixed(1);
  const speed = `${(input.bytesPerSecond / 1e6).toFixed(2)} MB/s`;
  const eta = input.etaSeconds === undefined ? "" : ` ETA ${formatDuration(input.etaSeconds)}`;
  const sizes = `(${formatMB(Math.min(input.completed, input.size))} / ${formatMB(input.size)})`;
  return `${shortDigest(input.digest)}: ${input.verb ?? "Downloading"} ${progressBar(fraction)} ${percent}% ${sizes} ${speed}${eta}`;
}

export function progressBar(fraction: number, width: number = BAR_WIDTH): string {
  if (fraction >= 1) return `[${"=".repeat(width)}]`;
  const filled = Math.min(width - 1, Math.floor(Math.max(0, fraction) * width));
  return `[${"=".repeat(filled)}>${" ".repeat(width - filled - 1)}]`;
}

export function formatRetry(event: Extract<ProgressEvent, { type: "layer-retry" }>): string {
  const seconds = (event.delayMs / 1000).toFixed(1);
  return `Retrying in ${seconds}s (attempt ${event.attempt}/${event.maxAttempts}): ${clean(event.reason)}`;
}

export function createProgressRenderer(options: RendererOptions): ProgressRenderer {
  if (options.quiet) return { onProgress: () => {}, close: () => {} };
  const env = options.env ?? process.env;
  const tty = options.tty ?? (options.stream.isTTY === true && env.TERM !== "dumb");
  if (!tty) return createPlainRenderer(options.stream);
  const noColor = options.noColor ?? (env.NO_COLOR !== undefined && env.NO_COLOR !== "");
  return createTerminalRenderer(options, !noColor);
}

/** Control characters and escape sequences from a server or file name must not reach the terminal. */
function clean(text: string): string {
  return terminalSafe(text).trim();
}

function resolvedLine(event: Extract<ProgressEvent, { type: "resolved" | "push-resolved" }>): string {
  const files = event.files === 1 ? "1 file" : `${event.files} files`;
  const verb = event.type === "push-resolved" ? "Pushing" : "Pulling";
  return `${verb} ${clean(event.reference)} (${files}, ${formatMB(event.totalBytes)})`;
}

/** The line of a layer whose blob another download (another process, or another pull in this one) is fetching. */
export const WAITING_TEXT = "Waiting for another download";

function doneText(fromCache: boolean): string {
  return fromCache ? "Already exists" : "Download complete";
}

function pushedText(event: Extract<ProgressEvent, { type: "layer-pushed" }>): string {
  if (event.outcome === "exists") return "Layer already exists";
  if (event.outcome === "mounted") return `Mounted from ${clean(event.from ?? "another repository")}`;
  return "Pushed";
}

function createPlainRenderer(stream: RendererOptions["stream"]): ProgressRenderer {
  let closed = false;
  const line = (text: string) => stream.write(`${text}\n`);
  const onProgress: ProgressListener = (event) => {
    if (closed) return;
    switch (event.type) {
      case "resolved":
      case "push-resolved":
        line(resolvedLine(event));
        break;
      case "layer-start": {
        const short = shortDigest(event.digest);
        const name = clean(event.filename);
        line(
          event.resumeFrom > 0
            ? `${short}: Resuming download from ${formatMB(event.resumeFrom)}`
            : `${short}: Downloading ${name} (${formatMB(event.size)})`,
        );
        break;
      }
      case "layer-waiting":
        line(`${shortDigest(event.digest)}: ${WAITING_TEXT}`);
        break;
      case "layer-push-start":
        line(`${shortDigest(event.digest)}: Pushing ${clean(event.filename)} (${formatMB(event.size)})`);
        break;
      case "layer-progress":
      case "layer-push-progress":
        break;
      case "layer-retry":
        line(`${shortDigest(event.digest)}: ${formatRetry(event)}`);
        break;
      case "verifying":
        line(`${shortDigest(event.digest)}: Verifying`);
        break;
      case "layer-done":
        line(`${shortDigest(event.digest)}: ${doneText(event.fromCache)}`);
        break;
      case "layer-pushed":
        line(`${shortDigest(event.digest)}: ${pushedText(event)}`);
        break;
      case "warning":
        line(`warning: ${clean(event.message)}`);
        break;
    }
  };
  return { onProgress, close: () => void (closed = true) };
}

type LayerStatus = "waiting" | "locked" | "downloading" | "retrying" | "verifying" | "done";

interface LayerState {
  digest: string;
  size: number;
  completed: number;
  status: LayerStatus;
  /** "Downloading" or "Pushing", shown with the bar. */
  verb: string;
  doneText: string;
  retryText: string;
  meter: SpeedMeter;
}

const ESC = "\x1b[";
const GREEN = 32;
const YELLOW = 33;

function createTerminalRenderer(options: RendererOptions, color: boolean): ProgressRenderer {
  const { stream } = options;
  const now = options.now ?? Date.now;
  const intervalMs = 1000 / Math.max(0.1, options.maxRedrawsPerSecond ?? 10);
  const layers = new Map<string, LayerState>();
  /** Layers whose lines form the block at the bottom, in the order they first appeared. */
  let block: LayerState[] = [];
  /** Lines of the block on screen; the cursor sits at the start of the line below them. */
  let drawnLines = 0;
  let lastDraw = Number.NEGATIVE_INFINITY;
  let dirty = false;
  let timer: NodeJS.Timeout | undefined;
  let closed = false;

  const paint = (text: string, code: number | undefined): string => {
    const columns = stream.columns ?? 0;
    // A line wider than the terminal wraps, and cursor-up would then miss the top of the block.
    const fitted = columns > 1 && text.length > columns - 1 ? text.slice(0, columns - 1) : text;
    return color && code !== undefined ? `${ESC}${code}m${fitted}${ESC}0m` : fitted;
  };

  const layerLine = (layer: LayerState): string => {
    const short = shortDigest(layer.digest);
    switch (layer.status) {
      case "waiting":
        return paint(`${short}: Waiting`, undefined);
      case "locked":
        return paint(`${short}: ${WAITING_TEXT}`, undefined);
      case "retrying":
        return paint(`${short}: ${layer.retryText}`, YELLOW);
      case "verifying":
        return paint(`${short}: Verifying`, undefined);
      case "done":
        return paint(`${short}: ${layer.doneText}`, GREEN);
      case "downloading": {
        const at = now();
        const bytesPerSecond = layer.meter.bytesPerSecond(at);
        const remaining = layer.size - layer.completed;
        const etaSeconds = bytesPerSecond > 0 && remaining > 0 ? remaining / bytesPerSecond : undefined;
        return paint(formatProgressLine({ ...layer, bytesPerSecond, etaSeconds }), undefined);
      }
    }
  };

  /** Redraws the block, with permanent lines printed above it first. */
  const draw = (permanent: string[] = []) => {
    if (timer !== undefined) {
      clearTimeout(timer);
      timer = undefined;
    }
    dirty = false;
    lastDraw = now();
    let out = drawnLines > 0 ? `${ESC}${drawnLines}A` : "";
    for (const text of [...permanent, ...block.map(layerLine)]) out += `\r${ESC}2K${text}\n`;
    stream.write(out);
    drawnLines = block.length;
    // Finished lines at the top are final: leave them where they are, so the block does not outgrow the screen.
    let keep = 0;
    while (keep < block.length && block[keep]!.status === "done") keep++;
    if (keep > 0) {
      block = block.slice(keep);
      drawnLines -= keep;
    }
  };

  const drawSoon = () => {
    const wait = lastDraw + intervalMs - now();
    if (wait <= 0) return draw();
    dirty = true;
    if (timer === undefined) {
      timer = setTimeout(() => {
        timer = undefined;
        if (dirty && !closed) draw();
      }, wait);
      timer.unref();
    }
  };

  const layerFor = (digest: string, size: number): LayerState => {
    let layer = layers.get(digest);
    if (layer === undefined) {
      layer = { digest, size, completed: 0, status: "waiting", verb: "Downloading", doneText: "", retryText: "", meter: new SpeedMeter() };
      layers.set(digest, layer);
    }
    if (!block.includes(layer)) block.push(layer);
    return layer;
  };

  const startTransfer = (digest: string, size: number, completed: number, verb: string): LayerState => {
    const layer = layerFor(digest, size);
    layer.size = size;
    layer.completed = completed;
    layer.status = "downloading";
    layer.verb = verb;
    layer.meter = new SpeedMeter();
    layer.meter.add(0, now());
    return layer;
  };

  const advance = (digest: string, size: number, completed: number, verb: string): void => {
    const layer = layerFor(digest, size);
    const wasDownloading = layer.status === "downloading";
    if (!wasDownloading) {
      layer.meter = new SpeedMeter();
      layer.meter.add(0, now());
      layer.status = "downloading";
    } else if (completed > layer.completed) {
      layer.meter.add(completed - layer.completed, now());
    }
    layer.verb = verb;
    layer.size = size;
    layer.completed = completed;
    return wasDownloading ? drawSoon() : draw();
  };

  const finish = (digest: string, size: number, text: string): void => {
    const layer = layerFor(digest, size);
    layer.status = "done";
    layer.doneText = text;
    layer.completed = size;
    return draw();
  };

  const onProgress: ProgressListener = (event) => {
    if (closed) return;
    switch (event.type) {
      case "resolved":
      case "push-resolved":
        return draw([resolvedLine(event)]);
      case "warning":
        return draw([paint(`warning: ${clean(event.message)}`, YELLOW)]);
      case "layer-start": {
        startTransfer(event.digest, event.size, event.resumeFrom, "Downloading");
        const short = shortDigest(event.digest);
        return draw(event.resumeFrom > 0 ? [`${short}: Resuming download from ${formatMB(event.resumeFrom)}`] : []);
      }
      case "layer-waiting": {
        const layer = layerFor(event.digest, event.size);
        layer.size = event.size;
        layer.status = "locked";
        return draw();
      }
      case "layer-push-start":
        startTransfer(event.digest, event.size, 0, "Pushing");
        return draw();
      case "layer-progress":
        return advance(event.digest, event.size, event.completed, "Downloading");
      case "layer-push-progress":
        return advance(event.digest, event.size, event.completed, "Pushing");
      case "layer-retry": {
        const layer = layerFor(event.digest, 0);
        layer.status = "retrying";
        layer.retryText = formatRetry(event);
        return draw();
      }
      case "verifying": {
        const layer = layerFor(event.digest, event.size);
        layer.status = "verifying";
        return draw();
      }
      case "layer-done":
        return finish(event.digest, event.size, doneText(event.fromCache));
      case "layer-pushed":
        return finish(event.digest, event.size, pushedText(event));
    }
  };

  const close = () => {
    if (closed) return;
    if (dirty) draw();
    if (timer !== undefined) clearTimeout(timer);
    timer = undefined;
    closed = true;
  };

  return { onProgress, close };
}
