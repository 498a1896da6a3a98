/**
 * The small pieces every way of showing transfer progress needs: short digests, MB and duration formatting, and a
 * sliding-window speed meter.
 */

/** The 12 hex characters Docker shows for a layer: "sha256:1234567890ab…" → "1234567890ab". */
export function shortDigest(digest: string): string {
  const colon = digest.indexOf(":");
  return digest.slice(colon + 1, colon + 1 + 12);
}

/** Megabytes as in the progress line: MB = 1,000,000 bytes, 2 decimals ("39.00 MB"). */
export function formatMB(bytes: number): string {
  return `${(bytes / 1e6).toFixed(2)} MB`;
}

/** Remaining time for an ETA: "45s", "3m05s", "2h07m". */
export function formatDuration(seconds: number): string {
  const total = Math.max(0, Math.ceil(seconds));
  if (total < 60) return `${total}s`;
  const minutes = Math.floor(total / 60);
  if (minutes < 60) return `${minutes}m${String(total % 60).padStart(2, "0")}s`;
  const hours = Math.floor(minutes / 60);
  return `${hours}h${String(minutes % 60).padStart(2, "0")}m`;
}

/**
 * Transfer speed over the last windowMs. Each add() counts bytes that arrived since the previous add(); the first
 * call only marks when the measurement began (its bytes have no known time span), so call add(0) when a transfer
 * starts.
 */
export class SpeedMeter {
  private readonly windowMs: number;
  private readonly samples: { start: number; time: number; bytes: number }[] = [];
  private origin: number | undefined;

  constructor(windowMs = 3000) {
    if (!(windowMs > 0)) throw new RangeError("windowMs must be positive");
    this.windowMs = windowMs;
  }

  add(bytes: number, now: number = Date.now()): void {
    if (this.origin === undefined) {
      this.origin = now;
      return;
    }
    if (bytes <= 0) return;
    // Chunks closer together than a twentieth of the window share one sample, so a fast stream of small chunks
    // keeps the list short.
    const last = this.samples[this.samples.length - 1];
    if (last !== undefined && now - last.start < this.windowMs / 20) {
      last.bytes += bytes;
      last.time = now;
    } else {
      this.samples.push({ start: now, time: now, bytes });
    }
    this.prune(now);
  }

  bytesPerSecond(now: number = Date.now()): number {
    if (this.origin === undefined) return 0;
    this.prune(now);
    const windowStart = now - this.windowMs;
    const from = Math.max(this.origin, windowStart);
    const spanMs = now - from;
    if (spanMs <= 0) return 0;
    let bytes = 0;
    for (const sample of this.samples) bytes += sample.bytes;
    return (bytes * 1000) / spanMs;
  }

  private prune(now: number): void {
    const windowStart = now - this.windowMs;
    let drop = 0;
    while (drop < this.samples.length && this.samples[drop]!.time <= windowStart) drop++;
    if (drop > 0) this.samples.splice(0, drop);
  }
}
