// Session.serial: a call with nothing ahead of it runs at once and, when it needs nothing remote, answers without a
// promise; a call that arrives while an earlier one of the same session waits runs after it, in arrival order.
import test from "ava";
import { Session } from "../../src/session/session.ts";
import type { Token } from "../../src/token/token.ts";

const session = (): Session => new Session(1, {} as Token, false);

function deferred(): { promise: Promise<string>; resolve: (value: string) => void; reject: (error: Error) => void } {
  let resolve!: (value: string) => void;
  let reject!: (error: Error) => void;
  const promise = new Promise<string>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

test("an idle session runs a local call at once and returns its value, not a promise", (t) => {
  const s = session();
  const result = s.serial(() => 42);
  t.is(result, 42);
});

test("a local call that throws throws at once and leaves the session idle", (t) => {
  const s = session();
  t.throws(() => s.serial(() => {
    throw new Error("CKR_OPERATION_ACTIVE");
  }), { message: "CKR_OPERATION_ACTIVE" });
  t.is(s.serial(() => "next"), "next");
});

test("calls behind a waiting call run after it, in arrival order, and the session is idle again afterwards", async (t) => {
  const s = session();
  const order: string[] = [];
  const vault = deferred();
  const first = s.serial(() => vault.promise.then((v) => void order.push(v)));
  t.true(first instanceof Promise);
  const second = s.serial(() => void order.push("update"));
  const third = s.serial(() => void order.push("final"));
  t.true(second instanceof Promise, "a local call queued behind a waiting one must wait too");
  t.true(third instanceof Promise);
  t.deepEqual(order, [], "nothing may overtake the waiting call");
  vault.resolve("init");
  await Promise.all([first, second, third]);
  t.deepEqual(order, ["init", "update", "final"]);
  t.is(s.serial(() => "idle"), "idle");
});

test("a failed waiting call does not block the calls behind it", async (t) => {
  const s = session();
  const vault = deferred();
  const failing = s.serial(() => vault.promise);
  const after = s.serial(() => "after");
  vault.reject(new Error("vault down"));
  await t.throwsAsync(failing as Promise<string>, { message: "vault down" });
  t.is(await after, "after");
  t.is(s.serial(() => "idle"), "idle");
});
