// Attribute storage and C_GetAttributeValue's rules, written once for every object class. Values are stored
// already encoded the way the host lays them out (CK_ULONG in the host's size), so that reading is a copy and
// C_FindObjects is a byte comparison.
import { CK_UNAVAILABLE_INFORMATION, CKR } from "../pkcs11/constants.ts";

type Entry = { sensitive: false; value: Buffer } | { sensitive: true };

export interface AttributeRequest {
  type: number;
  /** pValue was non-NULL. */
  present: boolean;
  capacity: number;
}

export interface AttributeAnswer {
  /** What ulValueLen becomes: the length, or CK_UNAVAILABLE_INFORMATION. */
  length: number;
  /** Bytes to copy into pValue. */
  value?: Buffer;
}

const TRUE = Buffer.from([1]);
const FALSE = Buffer.from([0]);
const EMPTY = Buffer.alloc(0);

/** CK_DATE is "YYYYMMDD"; an unknown date is an empty value, as the spec allows. */
export function encodeDate(date: Date | undefined): Buffer {
  if (!date || Number.isNaN(date.getTime())) return EMPTY;
  const text = `${date.getUTCFullYear().toString().padStart(4, "0")}${(date.getUTCMonth() + 1).toString().padStart(2, "0")}${date.getUTCDate().toString().padStart(2, "0")}`;
  return Buffer.from(text, "ascii");
}

export function encodeUlong(value: number, ulongSize: number): Buffer {
  const out = Buffer.alloc(ulongSize);
  if (ulongSize === 8) out.writeBigUInt64LE(value === CK_UNAVAILABLE_INFORMATION ? 0xffffffffffffffffn : BigInt(value));
  else out.writeUInt32LE(value === CK_UNAVAILABLE_INFORMATION ? 0xffffffff : value >>> 0);
  return out;
}

export class AttributeSet {
  private readonly entries = new Map<number, Entry>();

  constructor(readonly ulongSize: number) {}

  bytes(type: number, value: Buffer): this {
    this.entries.set(type, { sensitive: false, value });
    return this;
  }

  bool(type: number, value: boolean): this {
    return this.bytes(type, value ? TRUE : FALSE);
  }

  ulong(type: number, value: number): this {
    return this.bytes(type, encodeUlong(value, this.ulongSize));
  }

  ulongs(type: number, values: readonly number[]): this {
    return this.bytes(type, Buffer.concat(values.map((value) => encodeUlong(value, this.ulongSize))));
  }

  text(type: number, value: string): this {
    return this.bytes(type, Buffer.from(value, "utf8"));
  }

  date(type: number, value: Date | undefined): this {
    return this.bytes(type, encodeDate(value));
  }

  empty(type: number): this {
    return this.bytes(type, EMPTY);
  }

  /** An attribute the object has but never reveals (CKR_ATTRIBUTE_SENSITIVE). */
  sensitive(type: number): this {
    this.entries.set(type, { sensitive: true });
    return this;
  }

  has(type: number): boolean {
    return this.entries.has(type);
  }

  /** The revealed value, or undefined when absent or sensitive. */
  get(type: number): Buffer | undefined {
    const entry = this.entries.get(type);
    return entry && !entry.sensitive ? entry.value : undefined;
  }

  /** Total bytes of the revealed values: a stable answer for C_GetObjectSize. */
  size(): number {
    let total = 0;
    for (const entry of this.entries.values()) if (!entry.sensitive) total += entry.value.length;
    return total;
  }

  /**
   * C_GetAttributeValue (PKCS#11 v2.40 §5.7): every attribute is answered; when several errors apply, the rv is
   * the first of ATTRIBUTE_SENSITIVE, ATTRIBUTE_TYPE_INVALID, BUFFER_TOO_SMALL that occurred (the spec lets the
   * module return any of them).
   */
  read(requests: readonly AttributeRequest[]): { rv: number; answers: AttributeAnswer[] } {
    let sensitive = false;
    let invalid = false;
    let tooSmall = false;
    const answers = requests.map((request): AttributeAnswer => {
      const entry = this.entries.get(request.type);
      if (!entry) {
        invalid = true;
        return { length: CK_UNAVAILABLE_INFORMATION };
      }
      if (entry.sensitive) {
        sensitive = true;
        return { length: CK_UNAVAILABLE_INFORMATION };
      }
      if (!request.present) return { length: entry.value.length };
      if (request.capacity === CK_UNAVAILABLE_INFORMATION || request.capacity < entry.value.length) {
        tooSmall = true;
        return { length: CK_UNAVAILABLE_INFORMATION };
      }
      return { length: entry.value.length, value: entry.value };
    });
    const rv = sensitive ? CKR.ATTRIBUTE_SENSITIVE : invalid ? CKR.ATTRIBUTE_TYPE_INVALID : tooSmall ? CKR.BUFFER_TOO_SMALL : CKR.OK;
    return { rv, answers };
  }

  /**
   * Matching against what is known so far (a vault token's objects before their key is read): false when a
   * known attribute differs, undefined when the template names one that is not known yet, true otherwise.
   */
  decide(template: readonly { type: number; value: Buffer }[]): boolean | undefined {
    let unknown = false;
    for (const { type, value } of template) {
      const entry = this.entries.get(type);
      if (!entry) {
        unknown = true;
        continue;
      }
      if (entry.sensitive || !entry.value.equals(value)) return false;
    }
    return unknown ? undefined : true;
  }

  /** C_FindObjects matching: every template attribute must be present, revealed, and byte-equal. */
  matches(template: readonly { type: number; value: Buffer }[]): boolean {
    return template.every(({ type, value }) => {
      const stored = this.get(type);
      return stored !== undefined && stored.equals(value);
    });
  }
}
