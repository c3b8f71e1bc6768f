// Raw HTTP(S) requests to the emulator, for what the SDK hides: exact status codes, headers and bodies.
import { request as httpRequest } from "node:http";
import { request as httpsRequest } from "node:https";

export interface RawResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  json: any;
}

export function raw(
  url: string,
  options: { method?: string; headers?: Record<string, string>; body?: string | object; ca?: string } = {},
): Promise<RawResponse> {
  const body = options.body === undefined ? undefined : typeof options.body === "string" ? options.body : JSON.stringify(options.body);
  const headers: Record<string, string> = { ...options.headers };
  if (body !== undefined && !headers["content-type"]) headers["content-type"] = "application/json";
  const target = new URL(url);
  const send = target.protocol === "https:" ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const req = send(
      target,
      { method: options.method ?? "GET", headers, ca: options.ca, agent: false, timeout: 20_000 },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          let json: unknown;
          try {
            json = text ? JSON.parse(text) : undefined;
          } catch {
            json = undefined;
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
        });
        res.on("error", reject);
      },
    );
    req.on("timeout", () => req.destroy(new Error("request timed out")));
    req.on("error", reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

/** A token from the emulator's managed-identity endpoint. */
export async function managedIdentityToken(emulator: { identityEndpoint: string; identityHeader: string }, resource = "https://vault.azure.net"): Promise<string> {
  const res = await raw(`${emulator.identityEndpoint}?api-version=2019-08-01&resource=${encodeURIComponent(resource)}`, {
    headers: { "X-IDENTITY-HEADER": emulator.identityHeader },
  });
  if (res.status !== 200) throw new Error(`identity endpoint answered ${res.status}: ${res.text}`);
  return res.json.access_token as string;
}

/** A data-plane client of one emulator: requests at the 2025-07-01 api-version with a bearer token. */
export function dataPlane(emulator: { url: string; caPem: string }, token: () => string) {
  return {
    call(method: string, path: string, body?: object): Promise<RawResponse> {
      const separator = path.includes("?") ? "&" : "?";
      return raw(`${emulator.url}${path}${separator}api-version=2025-07-01`, { method, ca: emulator.caPem, headers: { authorization: `Bearer ${token()}` }, body });
    },
    /** Every item of a listing, following nextLink (at most 20 pages). */
    async listAll(path: string): Promise<Array<Record<string, any>>> {
      const items = [];
      let next: string | null = `${emulator.url}${path}?api-version=2025-07-01`;
      for (let pages = 0; next && pages < 20; pages++) {
        const res: RawResponse = await raw(next, { ca: emulator.caPem, headers: { authorization: `Bearer ${token()}` } });
        if (res.status !== 200) throw new Error(`listing answered ${res.status}: ${res.text}`);
        items.push(...res.json.value);
        next = res.json.nextLink;
      }
      return items;
    },
  };
}
