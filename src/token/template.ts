// Reading a PKCS#11 template that asks this module to make an object: each attribute is taken once, typed, and
// anything left over is refused with the spec's code, so that no template is half-honoured in silence.
import { attributeName, CKA, CKR } from "../pkcs11/constants.ts";
import { Pkcs11Error } from "../pkcs11/error.ts";
import type { Attribute } from "../protocol/codec.ts";

/** Attributes whose value the module sets itself: naming one in a template is CKR_ATTRIBUTE_READ_ONLY. */
const READ_ONLY = new Set<number>([
  CKA.LOCAL, CKA.KEY_GEN_MECHANISM, CKA.ALWAYS_SENSITIVE, CKA.NEVER_EXTRACTABLE, CKA.UNIQUE_ID, CKA.PUBLIC_KEY_INFO,
  CKA.CHECK_VALUE, CKA.ALLOWED_MECHANISMS, CKA.MODULUS, CKA.EC_POINT, CKA.VALUE_LEN,
]);

export class TemplateReader {
  private readonly values = new Map<number, Buffer>();

  constructor(
    template: readonly Attribute[],
    private readonly ulongSize: number,
    readonly what: string,
  ) {
    for (const { type, value } of template) {
      if (this.values.has(type)) throw this.invalid(type, "appears twice", CKR.TEMPLATE_INCONSISTENT);
      this.values.set(type, value);
    }
  }

  has(type: number): boolean {
    return this.values.has(type);
  }

  bytes(type: number): Buffer | undefined {
    const value = this.values.get(type);
    this.values.delete(type);
    return value;
  }

  text(type: number): string | undefined {
    const value = this.bytes(type);
    if (value === undefined) return undefined;
    const text = value.toString("utf8");
    if (!Buffer.from(text, "utf8").equals(value)) throw this.invalid(type, "is not UTF-8");
    return text;
  }

  bool(type: number): boolean | undefined {
    const value = this.bytes(type);
    if (value === undefined) return undefined;
    if (value.length !== 1) throw this.invalid(type, `is ${value.length} bytes, a CK_BBOOL is 1`);
    return value[0] !== 0;
  }

  ulong(type: number): number | undefined {
    const value = this.bytes(type);
    if (value === undefined) return undefined;
    if (value.length !== this.ulongSize) throw this.invalid(type, `is ${value.length} bytes, a CK_ULONG is ${this.ulongSize}`);
    return this.ulongSize === 8 ? Number(value.readBigUInt64LE()) : value.readUInt32LE();
  }

  /** CK_DATE (YYYYMMDD); an empty value means "no date". */
  date(type: number): Date | undefined {
    const value = this.bytes(type);
    if (value === undefined || value.length === 0) return undefined;
    const text = value.toString("latin1");
    const match = /^(\d{4})(\d{2})(\d{2})$/.exec(text);
    const date = match ? new Date(Date.UTC(Number(match[1]), Number(match[2]) - 1, Number(match[3]))) : undefined;
    if (!date || Number.isNaN(date.getTime()) || date.getUTCDate() !== Number(match![3])) throw this.invalid(type, `'${text}' is not a CK_DATE (YYYYMMDD)`);
    return date;
  }

  /** A boolean the module can honour only one way: absent, or that value. */
  require(type: number, honoured: boolean, why: string): void {
    const value = this.bool(type);
    if (value !== undefined && value !== honoured) throw this.invalid(type, `${value ? "true" : "false"} cannot be honoured: ${why}`);
  }

  /** A value that must be one of `allowed` when present. */
  expect(type: number, allowed: readonly number[], code: number = CKR.TEMPLATE_INCONSISTENT): number | undefined {
    const value = this.ulong(type);
    if (value !== undefined && !allowed.includes(value)) throw this.invalid(type, `0x${value.toString(16)} does not fit ${this.what}`, code);
    return value;
  }

  invalid(type: number, why: string, code: number = CKR.ATTRIBUTE_VALUE_INVALID): Pkcs11Error {
    return new Pkcs11Error(code, `${this.what}: ${attributeName(type)} ${why}`);
  }

  /** Ends the reading: an attribute nobody took is read-only, unknown, or not one this object can have. */
  finish(ignored: readonly number[] = []): void {
    for (const type of ignored) this.values.delete(type);
    for (const type of this.values.keys()) {
      if (READ_ONLY.has(type)) throw this.invalid(type, "is set by the token, not by a template", CKR.ATTRIBUTE_READ_ONLY);
      const known = (Object.values(CKA) as number[]).includes(type);
      throw this.invalid(type, known ? "does not apply to this object here" : "is not an attribute this module knows", known ? CKR.TEMPLATE_INCONSISTENT : CKR.ATTRIBUTE_TYPE_INVALID);
    }
  }
}
