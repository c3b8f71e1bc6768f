// The compiled form of config/config.schema.json. Under tsx (tests, tools) ajv compiles the schema on first use.
// In the helper bundle, scripts/bundle.mjs replaces this module with ajv's standalone code generated from the same
// schema at build time: compiling at C_Initialize cost ~50 ms of a ~250 ms cold start, and the bundle then carries
// no schema compiler at all. Both paths use AJV_OPTIONS, so they produce the same errors.
import { Ajv, type ValidateFunction } from "ajv";
import schema from "../../config/config.schema.json" with { type: "json" };

/** Also read by scripts/bundle.mjs (as text) when it generates the standalone validator. */
export const AJV_OPTIONS = { allErrors: false, strict: false };

let validator: ValidateFunction | undefined;

export function configValidator(): ValidateFunction {
  validator ??= new Ajv(AJV_OPTIONS).compile(schema);
  return validator;
}
