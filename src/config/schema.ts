// Checks a parsed config.json against config/config.schema.json (compiled in validator.ts) and turns the
// first violation into a field path a user can find in their file, e.g. `slots[1].key_name`.
import type { ErrorObject } from "ajv";
import { configValidator } from "./validator.ts";

export interface ShapeProblem {
  field: string;
  message: string;
}

export function validateConfigShape(document: unknown): ShapeProblem | undefined {
  const validate = configValidator();
  if (validate(document)) return undefined;
  const error = validate.errors?.[0];
  if (!error) return { field: "(top level)", message: "does not match the config schema" };
  return describe(error, document);
}

function describe(error: ErrorObject, document: unknown): ShapeProblem {
  const base = pointerToField(error.instancePath);
  const join = (child: string): string => (base === "(top level)" ? child : `${base}.${child}`);
  switch (error.keyword) {
    case "required":
      if (error.schemaPath.includes("anyOf")) return { field: join("key_name"), message: "is required: set key_name for one key's slot, or vault_url for a vault token of every key" };
      return { field: join(String(error.params.missingProperty)), message: "is required" };
    case "not":
      return { field: join("certificate_path"), message: "set either certificate or certificate_path, not both" };
    case "type":
      return { field: base, message: `must be ${article(String(error.params.type))}, not ${describeValue(valueAt(document, error.instancePath))}` };
    case "pattern":
      return { field: base, message: patternMessage(base, valueAt(document, error.instancePath)) };
    case "minLength":
      return { field: base, message: "must not be empty" };
    default:
      return { field: base, message: error.message ?? "does not match the config schema" };
  }
}

function patternMessage(field: string, value: unknown): string {
  const shown = JSON.stringify(value);
  if (field.endsWith("vault_url")) return `${shown} must be an https URL, e.g. https://my-vault.vault.azure.net/`;
  if (field.endsWith("key_name")) return `${shown} is not a Key Vault key name (1-127 letters, digits and dashes)`;
  if (field.endsWith("key_version")) return `${shown} is not a key version (letters and digits, as in the key id)`;
  return `${shown} has the wrong format`;
}

/** JSON pointer `/slots/1/key_name` → `slots[1].key_name`. */
export function pointerToField(pointer: string): string {
  if (pointer === "") return "(top level)";
  let out = "";
  for (const raw of pointer.split("/").slice(1)) {
    const part = raw.replace(/~1/g, "/").replace(/~0/g, "~");
    out += /^\d+$/.test(part) ? `[${part}]` : out === "" ? part : `.${part}`;
  }
  return out;
}

function valueAt(document: unknown, pointer: string): unknown {
  let current: unknown = document;
  for (const raw of pointer.split("/").slice(1)) {
    const part = raw.replace(/~1/g, "/").replace(/~0/g, "~");
    if (current === null || typeof current !== "object") return undefined;
    current = (current as Record<string, unknown>)[part];
  }
  return current;
}

function describeValue(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  return article(typeof value);
}

function article(type: string): string {
  return /^[aeiou]/.test(type) ? `an ${type}` : `a ${type}`;
}
