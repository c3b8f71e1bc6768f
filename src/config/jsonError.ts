// JSON.parse on Node 20 often reports a bad token without its position ("Unexpected token '}', ... is not valid
// JSON"). A user editing config.json needs the line and column, so this scanner walks the text with the JSON
// grammar and stops at the first offset where it goes wrong. It only locates errors; parsing stays JSON.parse.

export interface JsonErrorLocation {
  line: number;
  column: number;
}

class Stop extends Error {
  constructor(readonly offset: number) {
    super("stop");
  }
}

export function locateJsonError(text: string): JsonErrorLocation | undefined {
  let i = 0;
  const fail = (): never => {
    throw new Stop(i);
  };
  const skipSpace = (): void => {
    while (i < text.length && " \t\r\n".includes(text[i]!)) i++;
  };
  const expect = (literal: string): void => {
    for (const ch of literal) {
      if (text[i] !== ch) fail();
      i++;
    }
  };
  const string = (): void => {
    expect('"');
    while (i < text.length && text[i] !== '"') {
      const code = text.charCodeAt(i);
      if (code < 0x20) fail();
      if (text[i] === "\\") {
        i++;
        if (text[i] === "u") {
          i++;
          for (let k = 0; k < 4; k++) {
            if (!/[0-9a-fA-F]/.test(text[i] ?? "")) fail();
            i++;
          }
          continue;
        }
        if (!'"\\/bfnrt'.includes(text[i] ?? "x")) fail();
      }
      i++;
    }
    expect('"');
  };
  const number = (): void => {
    const match = /^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/.exec(text.slice(i));
    if (!match || match[0] === "" || match[0] === "-") fail();
    i += match![0].length;
  };
  const value = (): void => {
    skipSpace();
    const ch = text[i];
    if (ch === "{") {
      i++;
      skipSpace();
      if (text[i] === "}") {
        i++;
        return;
      }
      for (;;) {
        skipSpace();
        string();
        skipSpace();
        expect(":");
        value();
        skipSpace();
        if (text[i] === ",") {
          i++;
          continue;
        }
        expect("}");
        return;
      }
    }
    if (ch === "[") {
      i++;
      skipSpace();
      if (text[i] === "]") {
        i++;
        return;
      }
      for (;;) {
        value();
        skipSpace();
        if (text[i] === ",") {
          i++;
          continue;
        }
        expect("]");
        return;
      }
    }
    if (ch === '"') return string();
    if (ch === "t") return expect("true");
    if (ch === "f") return expect("false");
    if (ch === "n") return expect("null");
    return number();
  };
  try {
    value();
    skipSpace();
    if (i < text.length) fail();
    return undefined;
  } catch (error) {
    if (!(error instanceof Stop)) throw error;
    return positionOf(text, error.offset);
  }
}

function positionOf(text: string, offset: number): JsonErrorLocation {
  let line = 1;
  let lineStart = 0;
  for (let k = 0; k < offset && k < text.length; k++) {
    if (text[k] === "\n") {
      line++;
      lineStart = k + 1;
    }
  }
  return { line, column: offset - lineStart + 1 };
}
