/**
 * A real Docker token server (distribution token.md / oauth.md) whose JWTs registry 2.8.2 verifies: ES256 over a
 * P-256 key with a self-signed certificate made by `openssl`, header `kid` = the libtrust fingerprint of the key.
 * It records every request so tests can assert GET vs POST flows, scopes and credentials.
 */
import { execFile } from "node:child_process";
import { createHash, createPrivateKey, createPublicKey, randomBytes, sign, type KeyObject } from "node:crypto";
import { readFile } from "node:fs/promises";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { join } from "node:path";
import { promisify } from "node:util";
import { closeServer, listenLocal } from "./ports.js";
import { makeTempDir, removeDir } from "./tmp.js";

const run = promisify(execFile);

export interface RecordedTokenRequest {
  method: "GET" | "POST";
  path: string;
  query: Record<string, string | string[]>;
  authorization?: string;
  form?: Record<string, string>;
  at: number;
}

export interface AccessEntry {
  type: string;
  name: string;
  actions: string[];
}

export interface TokenServerOptions {
  /** false: POST /token answers 404, like token servers without OAuth2 support. */
  oauthPost: boolean;
  /** expires_in of issued tokens, and their JWT lifetime, in seconds. */
  expiresIn: number;
  /** Which token field(s) the GET response carries. */
  responseField: "both" | "token" | "access_token";
}

export interface TokenServer {
  url: string;
  realm: string;
  service: string;
  issuer: string;
  certPath: string;
  /** libtrust fingerprint of the signing key, used as the JWT `kid`. */
  kid: string;
  requests: RecordedTokenRequest[];
  setUser(username: string, password: string): void;
  /** An identity (refresh) token: accepted by POST grant_type=refresh_token and as the password of Basic auth. */
  setIdentityToken(token: string, username: string): void;
  /** ACL: what `username` (null = anonymous, which every user also gets) may do on `repository` ("*" = any). */
  grant(username: string | null, repository: string, actions: string[]): void;
  options: TokenServerOptions;
  mintToken(username: string | null, access: AccessEntry[], ttlSeconds?: number): string;
  stop(): Promise<void>;
}

type Identity = { ok: true; user: string | null } | { ok: false };

export async function startTokenServer(opts: Partial<TokenServerOptions> = {}): Promise<TokenServer> {
  const dir = await makeTempDir("llama-oci-token");
  const keyPath = join(dir, "token.key");
  const certPath = join(dir, "token.crt");
  try {
    await run("openssl", ["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", keyPath]);
    await run("openssl", ["req", "-new", "-x509", "-key", keyPath, "-out", certPath, "-days", "30", "-subj", "/CN=test-token-issuer"]);
  } catch (error) {
    await removeDir(dir);
    throw error;
  }
  const key = createPrivateKey(await readFile(keyPath));
  const kid = libtrustKeyId(key);

  const options: TokenServerOptions = { oauthPost: true, expiresIn: 300, responseField: "both", ...opts };
  const users = new Map<string, string>();
  const identityTokens = new Map<string, string>();
  const acl = new Map<string | null, Map<string, Set<string>>>();
  const requests: RecordedTokenRequest[] = [];
  const service = "test-registry";
  const issuer = "test-issuer";

  const mintToken = (username: string | null, access: AccessEntry[], ttlSeconds = options.expiresIn): string => {
    const now = Math.floor(Date.now() / 1000);
    const exp = now + ttlSeconds;
    const header = { typ: "JWT", alg: "ES256", kid };
    const claims = {
      iss: issuer,
      sub: username ?? "",
      aud: service, // 2.8.2 fails to unmarshal an array here
      exp,
      nbf: Math.min(now, exp),
      iat: Math.min(now, exp),
      jti: randomBytes(12).toString("hex"),
      access,
    };
    const signingInput = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
    const signature = sign("sha256", Buffer.from(signingInput), { key, dsaEncoding: "ieee-p1363" });
    return `${signingInput}.${b64url(signature)}`;
  };

  const allowed = (user: string | null, type: string, name: string, requested: string[]): string[] => {
    const sets: (Set<string> | undefined)[] = [];
    for (const who of user === null ? [null] : [user, null]) {
      const repos = acl.get(who);
      if (!repos) continue;
      sets.push(repos.get("*"));
      if (type === "repository") sets.push(repos.get(name));
    }
    const granted = new Set<string>();
    for (const set of sets) for (const action of set ?? []) granted.add(action);
    return requested.filter((action) => granted.has("*") || granted.has(action));
  };

  const accessFor = (user: string | null, scopes: string[]): AccessEntry[] =>
    scopes.flatMap((scope) => {
      const parsed = parseScope(scope);
      return parsed ? [{ ...parsed, actions: allowed(user, parsed.type, parsed.name, parsed.actions) }] : [];
    });

  const authenticate = (authorization: string | undefined): Identity => {
    if (authorization === undefined) return { ok: true, user: null };
    const match = /^basic\s+(\S+)$/i.exec(authorization);
    if (!match) return { ok: false };
    const decoded = Buffer.from(match[1]!, "base64").toString("utf8");
    const colon = decoded.indexOf(":");
    if (colon < 0) return { ok: false };
    const username = decoded.slice(0, colon);
    const password = decoded.slice(colon + 1);
    if (users.has(username) && users.get(username) === password) return { ok: true, user: username };
    const tokenUser = identityTokens.get(password);
    if (tokenUser !== undefined && (username === "<token>" || username === tokenUser)) return { ok: true, user: tokenUser };
    return { ok: false };
  };

  const handleGet = (req: IncomingMessage, res: ServerResponse, url: URL): void => {
    const identity = authenticate(req.headers.authorization);
    if (!identity.ok) return unauthorized(res);
    const scopes = url.searchParams.getAll("scope").flatMap(splitScopes);
    const token = mintToken(identity.user, accessFor(identity.user, scopes));
    const body: Record<string, unknown> = { expires_in: options.expiresIn, issued_at: new Date().toISOString() };
    if (options.responseField !== "access_token") body.token = token;
    if (options.responseField !== "token") body.access_token = token;
    if (url.searchParams.get("offline_token") === "true" && identity.user !== null) {
      body.refresh_token = newRefreshToken(identity.user);
    }
    sendJson(res, 200, body);
  };

  const handlePost = (res: ServerResponse, form: Record<string, string>): void => {
    if (!options.oauthPost) return sendJson(res, 404, { errors: [{ code: "NOT_FOUND", message: "not found" }] });
    let user: string;
    if (form.grant_type === "refresh_token") {
      const tokenUser = identityTokens.get(form.refresh_token ?? "");
      if (tokenUser === undefined) return sendJson(res, 401, { error: "invalid_grant", error_description: "unknown refresh token" });
      user = tokenUser;
    } else if (form.grant_type === "password") {
      const username = form.username ?? "";
      if (!users.has(username) || users.get(username) !== form.password) {
        return sendJson(res, 401, { error: "invalid_grant", error_description: "incorrect username or password" });
      }
      user = username;
    } else {
      return sendJson(res, 400, { error: "unsupported_grant_type" });
    }
    const access = accessFor(user, splitScopes(form.scope ?? ""));
    const body: Record<string, unknown> = {
      access_token: mintToken(user, access),
      expires_in: options.expiresIn,
      issued_at: new Date().toISOString(),
      scope: access.filter((entry) => entry.actions.length > 0).map((e) => `${e.type}:${e.name}:${e.actions.join(",")}`).join(" "),
    };
    if (form.grant_type === "password" && form.access_type === "offline") body.refresh_token = newRefreshToken(user);
    sendJson(res, 200, body);
  };

  const newRefreshToken = (user: string): string => {
    const token = `refresh-${randomBytes(16).toString("hex")}`;
    identityTokens.set(token, user);
    return token;
  };

  const server = createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://127.0.0.1");
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => {
      const method = req.method === "POST" ? "POST" : "GET";
      const record: RecordedTokenRequest = { method, path: url.pathname, query: queryRecord(url), at: Date.now() };
      if (req.headers.authorization !== undefined) record.authorization = req.headers.authorization;
      if (req.method === "POST") record.form = Object.fromEntries(new URLSearchParams(Buffer.concat(chunks).toString("utf8")));
      requests.push(record);
      if (url.pathname !== "/token" || (req.method !== "GET" && req.method !== "POST")) {
        return sendJson(res, 404, { errors: [{ code: "NOT_FOUND", message: "not found" }] });
      }
      if (req.method === "GET") handleGet(req, res, url);
      else handlePost(res, record.form ?? {});
    });
  });
  const port = await listenLocal(server);
  const url = `http://127.0.0.1:${port}`;

  return {
    url,
    realm: `${url}/token`,
    service,
    issuer,
    certPath,
    kid,
    requests,
    options,
    setUser: (username, password) => void users.set(username, password),
    setIdentityToken: (token, username) => void identityTokens.set(token, username),
    grant(username, repository, actions) {
      let repos = acl.get(username);
      if (!repos) acl.set(username, (repos = new Map<string, Set<string>>()));
      let set = repos.get(repository);
      if (!set) repos.set(repository, (set = new Set()));
      for (const action of actions) set.add(action);
    },
    mintToken,
    async stop() {
      await closeServer(server);
      await removeDir(dir);
    },
  };
}

/** libtrust key ID: base32 of the first 240 bits of sha256(DER SubjectPublicKeyInfo), in 12 groups of 4. */
export function libtrustKeyId(key: KeyObject): string {
  const publicKey = key.type === "private" ? createPublicKey(key) : key;
  const der = publicKey.export({ type: "spki", format: "der" });
  const encoded = base32(createHash("sha256").update(der).digest().subarray(0, 30));
  return encoded.match(/.{4}/g)!.join(":");
}

function base32(data: Buffer): string {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let bits = 0;
  let value = 0;
  let out = "";
  for (const byte of data) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += alphabet[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += alphabet[(value << (5 - bits)) & 31];
  return out;
}

function b64url(data: string | Buffer): string {
  return Buffer.from(data).toString("base64url");
}

function splitScopes(value: string): string[] {
  return value.split(/\s+/).filter((scope) => scope.length > 0);
}

/** type:name:actions, where the name may itself hold one ':' (host:port), so split at the first and last ':'. */
function parseScope(scope: string): AccessEntry | undefined {
  const first = scope.indexOf(":");
  const last = scope.lastIndexOf(":");
  if (first < 0 || last === first) return undefined;
  return {
    type: scope.slice(0, first),
    name: scope.slice(first + 1, last),
    actions: scope.slice(last + 1).split(",").filter((action) => action.length > 0),
  };
}

function queryRecord(url: URL): Record<string, string | string[]> {
  const query: Record<string, string | string[]> = {};
  for (const key of new Set(url.searchParams.keys())) {
    const values = url.searchParams.getAll(key);
    query[key] = values.length === 1 ? values[0]! : values;
  }
  return query;
}

function unauthorized(res: ServerResponse): void {
  sendJson(res, 401, {
    errors: [{ code: "UNAUTHORIZED", message: "incorrect username or password" }],
    details: "incorrect username or password",
  });
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const data = Buffer.from(JSON.stringify(body));
  res.writeHead(status, { "content-type": "application/json", "content-length": data.length });
  res.end(data);
}
