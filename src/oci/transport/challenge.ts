/**
 * WWW-Authenticate parsing (RFC 7235). One header value may hold several comma-joined challenges (fetch joins
 * repeated headers with ", "), and a response may carry several header lines. Parameter values keep empty
 * strings and parsing continues after them, as containerd does; ggcr stops there and would lose `service`.
 */

export interface Challenge {
  /** Lower-case scheme, e.g. "bearer" or "basic". */
  scheme: string;
  /** Parameters with lower-case keys; values unquoted and unescaped. */
  params: Record<string, string>;
}

// RFC 7230 tchar.
const TCHAR = /[!#$%&'*+\-.^_`|~0-9A-Za-z]/;
// RFC 7235 token68: a credential blob such as `Negotiate abc==`, standing alone after the scheme.
const TOKEN68 = /^[A-Za-z0-9\-._~+/]+=*/;

export function parseWwwAuthenticate(values: string | string[] | undefined): Challenge[] {
  if (values === undefined) return [];
  const lines = Array.isArray(values) ? values : [values];
  return lines.flatMap((line) => parseHeaderValue(line));
}

/** Bearer over Basic; other schemes are not something this client can answer. */
export function preferredChallenge(challenges: Challenge[]): Challenge | undefined {
  return challenges.find((c) => c.scheme === "bearer") ?? challenges.find((c) => c.scheme === "basic");
}

class Lexer {
  pos = 0;
  constructor(readonly text: string) {}

  get done(): boolean {
    return this.pos >= this.text.length;
  }

  peek(): string {
    return this.text[this.pos] ?? "";
  }

  skipSpace(): void {
    while (this.peek() === " " || this.peek() === "\t") this.pos++;
  }

  skipSpaceAndCommas(): void {
    while (this.peek() === " " || this.peek() === "\t" || this.peek() === ",") this.pos++;
  }

  token(): string {
    const start = this.pos;
    while (!this.done && TCHAR.test(this.peek())) this.pos++;
    return this.text.slice(start, this.pos);
  }

  /** After the opening quote: up to the closing quote, with `\x` read as `x`. An unclosed string runs to the end. */
  quoted(): string {
    let value = "";
    while (!this.done) {
      const ch = this.text[this.pos++]!;
      if (ch === '"') return value;
      if (ch === "\\" && !this.done) {
        value += this.text[this.pos++];
      } else {
        value += ch;
      }
    }
    return value;
  }

  /** An unquoted value; lenient (realms are sometimes sent unquoted), so it runs to the next comma or space. */
  bareValue(): string {
    const start = this.pos;
    while (!this.done && !/[,\s]/.test(this.peek())) this.pos++;
    return this.text.slice(start, this.pos);
  }

  skipToComma(): void {
    while (!this.done && this.peek() !== ",") this.pos++;
  }
}

function parseHeaderValue(text: string): Challenge[] {
  const lexer = new Lexer(text);
  const challenges: Challenge[] = [];
  while (true) {
    lexer.skipSpaceAndCommas();
    if (lexer.done) break;
    const scheme = lexer.token();
    if (scheme === "") {
      // Not a token where a scheme should be: skip this list element.
      lexer.pos++;
      lexer.skipToComma();
      continue;
    }
    const challenge: Challenge = { scheme: scheme.toLowerCase(), params: {} };
    challenges.push(challenge);
    lexer.skipSpace();
    skipToken68(lexer);
    parseParams(lexer, challenge.params);
  }
  return challenges;
}

function skipToken68(lexer: Lexer): void {
  const match = TOKEN68.exec(lexer.text.slice(lexer.pos));
  if (!match) return;
  const after = new Lexer(lexer.text);
  after.pos = lexer.pos + match[0].length;
  after.skipSpace();
  // `key=value` is a parameter, not a token68; a token68 is followed only by the end or a comma.
  if (after.done || after.peek() === ",") lexer.pos = after.pos;
}

/** Reads `key=value` pairs until the end or the start of the next challenge (a token not followed by `=`). */
function parseParams(lexer: Lexer, params: Record<string, string>): void {
  while (true) {
    const elementStart = lexer.pos;
    lexer.skipSpaceAndCommas();
    if (lexer.done) return;
    const key = lexer.token();
    if (key === "") {
      lexer.pos++;
      lexer.skipToComma();
      continue;
    }
    lexer.skipSpace();
    if (lexer.peek() !== "=") {
      lexer.pos = elementStart;
      return;
    }
    lexer.pos++;
    lexer.skipSpace();
    if (lexer.peek() === '"') {
      lexer.pos++;
      params[key.toLowerCase()] = lexer.quoted();
    } else {
      params[key.toLowerCase()] = lexer.bareValue();
    }
  }
}
