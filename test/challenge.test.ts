import { describe, expect, it } from "vitest";
import { parseScopes, parseWwwAuthenticate, preferredChallenge } from "../src/oci/transport/index.js";

describe("parseWwwAuthenticate", () => {
  it("reads a Docker Hub bearer challenge", () => {
    const challenges = parseWwwAuthenticate(
      'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:samalba/my-app:pull,push"',
    );
    expect(challenges).toEqual([
      {
        scheme: "bearer",
        params: {
          realm: "https://auth.docker.io/token",
          service: "registry.docker.io",
          scope: "repository:samalba/my-app:pull,push",
        },
      },
    ]);
  });

  it("reads unquoted values and unescapes quoted ones", () => {
    const [challenge] = parseWwwAuthenticate(
      'Bearer realm="https://auth.example.com/token",service="registry.example.com",other=fun,slashed="he\\"\\l\\lo"',
    );
    expect(challenge?.params).toEqual({
      realm: "https://auth.example.com/token",
      service: "registry.example.com",
      other: "fun",
      slashed: 'he"llo',
    });
  });

  it("keeps an empty value and goes on to the parameters after it", () => {
    const [challenge] = parseWwwAuthenticate(
      'Bearer realm="https://auth.example.io/token",empty="",service="registry.example.io",scope="repository:library/hello-world:pull,push"',
    );
    expect(challenge?.params).toEqual({
      realm: "https://auth.example.io/token",
      empty: "",
      service: "registry.example.io",
      scope: "repository:library/hello-world:pull,push",
    });
  });

  it("keeps several scopes in one scope parameter", () => {
    const [challenge] = parseWwwAuthenticate(
      'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:foo/bar:pull,push repository:foo/baz:pull repository:foo/foo:push"',
    );
    expect(parseScopes(challenge?.params.scope)).toEqual([
      "repository:foo/bar:pull,push",
      "repository:foo/baz:pull",
      "repository:foo/foo:push",
    ]);
  });

  it("reads the error parameter of a re-challenge", () => {
    const insufficient = parseWwwAuthenticate(
      'Bearer realm="http://127.0.0.1:5001/token",service="test-registry",scope="repository:ai/smollm2:pull",error="insufficient_scope"',
    );
    expect(insufficient[0]?.params).toMatchObject({ scope: "repository:ai/smollm2:pull", error: "insufficient_scope" });
    const invalid = parseWwwAuthenticate('Bearer realm="http://127.0.0.1:5001/token",service="test-registry",error="invalid_token"');
    expect(invalid[0]?.params.error).toBe("invalid_token");
  });

  it("reads a basic challenge from registry 2.8.2", () => {
    expect(parseWwwAuthenticate('Basic realm="test-basic-realm"')).toEqual([
      { scheme: "basic", params: { realm: "test-basic-realm" } },
    ]);
  });

  it("splits challenges that fetch joined into one value", () => {
    const challenges = parseWwwAuthenticate(
      'Basic realm="r1", Bearer realm="https://auth.example/token",service="svc",scope="repository:ai/x:pull"',
    );
    expect(challenges).toEqual([
      { scheme: "basic", params: { realm: "r1" } },
      {
        scheme: "bearer",
        params: { realm: "https://auth.example/token", service: "svc", scope: "repository:ai/x:pull" },
      },
    ]);
  });

  it("reads one challenge per header line from an array", () => {
    const challenges = parseWwwAuthenticate(['Basic realm="r1"', 'Bearer realm="https://auth.example/token",service="svc"']);
    expect(challenges.map((c) => c.scheme)).toEqual(["basic", "bearer"]);
    expect(challenges[1]?.params).toEqual({ realm: "https://auth.example/token", service: "svc" });
  });

  it("lower-cases schemes and keys, allows spaces around = and keeps commas inside quotes", () => {
    expect(parseWwwAuthenticate('BEARER Realm = "https://a/t" , Scope="repository:x/y:pull,push"')).toEqual([
      { scheme: "bearer", params: { realm: "https://a/t", scope: "repository:x/y:pull,push" } },
    ]);
  });

  it("skips a token68 credential and parameterless schemes without losing what follows", () => {
    const challenges = parseWwwAuthenticate('Negotiate abc123==, Basic, Bearer realm="https://a/t"');
    expect(challenges).toEqual([
      { scheme: "negotiate", params: {} },
      { scheme: "basic", params: {} },
      { scheme: "bearer", params: { realm: "https://a/t" } },
    ]);
  });

  it("returns nothing for a missing or empty header", () => {
    expect(parseWwwAuthenticate(undefined)).toEqual([]);
    expect(parseWwwAuthenticate("")).toEqual([]);
    expect(parseWwwAuthenticate([])).toEqual([]);
  });
});

describe("preferredChallenge", () => {
  it("picks bearer over basic whatever the order", () => {
    const challenges = parseWwwAuthenticate('Basic realm="r1", Bearer realm="https://auth.example/token",service="svc"');
    expect(preferredChallenge(challenges)?.scheme).toBe("bearer");
    expect(preferredChallenge(parseWwwAuthenticate(['Bearer realm="x"', 'Basic realm="y"']))?.scheme).toBe("bearer");
  });

  it("picks basic when there is no bearer, and nothing for schemes it cannot answer", () => {
    expect(preferredChallenge(parseWwwAuthenticate('Digest realm="d", Basic realm="b"'))?.params.realm).toBe("b");
    expect(preferredChallenge(parseWwwAuthenticate('Digest realm="d"'))).toBeUndefined();
  });
});

describe("parseScopes", () => {
  it("splits on whitespace and ignores a missing parameter", () => {
    expect(parseScopes("repository:a/b:pull  repository:localhost:5000/c:pull")).toEqual([
      "repository:a/b:pull",
      "repository:localhost:5000/c:pull",
    ]);
    expect(parseScopes(undefined)).toEqual([]);
    expect(parseScopes("")).toEqual([]);
  });
});
