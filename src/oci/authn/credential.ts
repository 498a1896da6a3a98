/**
 * A registry credential, as the keychain resolves it or the API is given it, and how to name it in messages
 * without showing the secret.
 */
import { LlamaOciError } from "../../errors.js";

export type Credential =
  | { kind: "anonymous" }
  | { kind: "basic"; username: string; password: string; source: string }
  | { kind: "identityToken"; username?: string; identityToken: string; source: string }
  | { kind: "registryToken"; registryToken: string; source: string };

export type ExplicitCredentials = { username: string; password: string } | { identityToken: string } | { registryToken: string };

/** For messages: what kind of credential and where it came from, never the secret. */
export function describeCredential(c: Credential): string {
  switch (c.kind) {
    case "anonymous":
      return "anonymous";
    case "basic":
      return `basic (user ${c.username} from ${c.source})`;
    case "identityToken":
      return c.username ? `identity token (user ${c.username} from ${c.source})` : `identity token (from ${c.source})`;
    case "registryToken":
      return `registry token (from ${c.source})`;
  }
}

export function fromExplicit(explicit: ExplicitCredentials): Credential {
  const source = "explicit credentials";
  if ("registryToken" in explicit) {
    if (!explicit.registryToken) throw invalidExplicit("registryToken is empty");
    return { kind: "registryToken", registryToken: explicit.registryToken, source };
  }
  if ("identityToken" in explicit) {
    if (!explicit.identityToken) throw invalidExplicit("identityToken is empty");
    return { kind: "identityToken", identityToken: explicit.identityToken, source };
  }
  if (!explicit.username) throw invalidExplicit("username is empty");
  return { kind: "basic", username: explicit.username, password: explicit.password ?? "", source };
}

function invalidExplicit(what: string): LlamaOciError {
  return new LlamaOciError("INVALID_ARGUMENT", `invalid credentials: ${what}`, {
    hint: "pass { username, password }, { identityToken } or { registryToken }",
  });
}

