/**
 * Where the parts of one blob come from. The first request goes to the registry; when it redirects to another origin
 * (a CDN, a signed URL), that URL is kept and the other parts go straight there (no Authorization: it is another
 * origin), saving the registry round trip per part. When the kept URL stops working with 401 or 403 (a signed URL that
 * expired), expire() forgets it and the next request asks the registry again for a fresh one.
 */
import { headerValue, type HttpHeaders, type HttpResponse } from "../transport/index.js";
import { openBlob } from "../remote/index.js";
import type { BlobRequest } from "./request.js";

export interface SourceResponse {
  response: HttpResponse;
  /** The kept redirect target answered (not the registry): a 401/403 means the URL expired. */
  viaLocation?: string;
}

export class BlobSource {
  private location?: string;

  constructor(private readonly request: BlobRequest) {}

  async open(headers: HttpHeaders, signal: AbortSignal): Promise<SourceResponse> {
    const { client, repository, digest } = this.request;
    const timeouts = {
      bodyTimeoutMs: this.request.stallTimeoutMs ?? 30_000,
      headersTimeoutMs: this.request.stallTimeoutMs ?? 30_000,
      // The download's own loop retries, resuming each part where it stopped.
      retry: false,
    };
    const kept = this.location;
    if (kept !== undefined) return { response: await client.http.send(kept, { headers, signal, ...timeouts }), viaLocation: kept };

    const response = await openBlob(client, repository, digest, { headers, signal, ...timeouts, followRedirects: false });
    const location = response.status >= 300 && response.status < 400 ? headerValue(response.headers, "location") : undefined;
    if (location === undefined) return { response };
    await response.body.dump().catch(() => {});
    const registryOrigin = client.baseUrl ?? "";
    const target = new URL(location, registryOrigin || undefined);
    if (target.origin === new URL(registryOrigin).origin) {
      // Back to the registry itself: let the transport follow it, with Authorization.
      return { response: await openBlob(client, repository, digest, { headers, signal, ...timeouts }) };
    }
    this.location = target.href;
    return { response: await client.http.send(target.href, { headers, signal, ...timeouts }), viaLocation: target.href };
  }

  /** The kept URL no longer works: ask the registry again (unless another part already did). */
  expire(location: string): void {
    if (this.location === location) this.location = undefined;
  }
}
