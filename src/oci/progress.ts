/**
 * Typed progress events emitted while pulling or pushing a model. How they are shown is the caller's: the CLI
 * draws them with src/cli/progress-renderer.ts.
 */
export type ProgressEvent =
  | { type: "resolved"; reference: string; digest: string; files: number; totalBytes: number }
  /** Another process (or another pull in this one) is downloading this blob; this pull waits for it to finish. */
  | { type: "layer-waiting"; digest: string; size: number; filename: string }
  /** resumeFrom > 0 means a partial download of resumeFrom bytes is being continued. */
  | { type: "layer-start"; digest: string; size: number; filename: string; resumeFrom: number }
  /** completed counts every byte of the layer on disk, including the resumed part. */
  | { type: "layer-progress"; digest: string; size: number; completed: number }
  | { type: "layer-retry"; digest: string; attempt: number; maxAttempts: number; delayMs: number; reason: string }
  | { type: "layer-done"; digest: string; size: number; fromCache: boolean }
  | { type: "verifying"; digest: string; size: number }
  | { type: "warning"; message: string }
  /** Push: the model about to be uploaded: manifest digest, and its files and their bytes (as for pulls, no config). */
  | { type: "push-resolved"; reference: string; digest: string; files: number; totalBytes: number }
  /** Push: the upload of a blob the registry does not have begins. */
  | { type: "layer-push-start"; digest: string; size: number; filename: string }
  | { type: "layer-push-progress"; digest: string; size: number; completed: number }
  /** Push: the registry has the blob, uploaded now, found there (HEAD), or mounted from another repository. */
  | { type: "layer-pushed"; digest: string; size: number; outcome: PushOutcome; from?: string };

export type PushOutcome = "pushed" | "exists" | "mounted";

export type ProgressListener = (event: ProgressEvent) => void;
