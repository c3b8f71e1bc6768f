// Object handles. They depend only on what the objects are, never on the order of calls, so that a replacement
// helper (after a crash, or libp11 after fork) hands out the same numbers for the same objects:
// - per-key slots: slot*16 + kind, small numbers (objects.ts objectHandle);
// - vault tokens: 16 handles per key from a hash of the slot and the key's name, in [0x10000000, 0x7ffffff0);
//   a collision moves the later name (in sort order) to the next free place, so the set of names decides;
// - session objects: from 0x80000000 up, in order of creation (they die with the helper anyway).
// Everything stays below 2^32: CK_ULONG may be 32 bits.
import { createHash } from "node:crypto";

const VAULT_FIRST = 0x10000000;
const VAULT_PLACES = Math.floor((0x7ffffff0 - VAULT_FIRST) / 16);
export const SESSION_OBJECT_FIRST = 0x80000000;
export const SESSION_OBJECT_LAST = 0xfffffffe;
export const HANDLES_PER_KEY = 16;

export const isSessionObjectHandle = (handle: number): boolean => handle >= SESSION_OBJECT_FIRST && handle <= SESSION_OBJECT_LAST;

/** Assigns each name its first handle (a multiple of 16 from VAULT_FIRST); `names` in their sort order. */
export class VaultHandles {
  private readonly taken = new Map<number, string>();
  private readonly byName = new Map<string, number>();

  constructor(private readonly slotIndex: number) {}

  base(name: string): number {
    const key = name.toLowerCase();
    const known = this.byName.get(key);
    if (known !== undefined) return known;
    const digest = createHash("sha256").update(`${this.slotIndex}\0${key}`).digest();
    let place = digest.readUInt32BE(0) % VAULT_PLACES;
    while (this.taken.has(place)) place = (place + 1) % VAULT_PLACES;
    this.taken.set(place, key);
    const base = VAULT_FIRST + place * HANDLES_PER_KEY;
    this.byName.set(key, base);
    return base;
  }

  /** The base of the key a handle belongs to. */
  static baseOf(handle: number): number {
    return handle - ((handle - VAULT_FIRST) % HANDLES_PER_KEY);
  }
}
