// Types of `agentbox.js`, for plugins written in TypeScript: compile them
// to an ES module with `tsc` (or any bundler), then build that module with
// componentize-js. See docs/guests/javascript.md.

/** How a message turn ends; return one from `onMessage`, or nothing. */
export type Outcome = { tag: 'continue' } | { tag: 'end' } | { tag: 'hand-off'; val: string };
export declare const CONTINUE: Outcome;
export declare const END: Outcome;
export declare function handOff(plugin: string): Outcome;

/** Fails the turn with its message; the host commits nothing. */
export declare class Fail extends Error {}

/** The host refused a session or KV operation; `kind` is the WIT error case. */
export declare class HostError extends Error {
  readonly kind: 'invalid' | 'quota-exceeded' | 'denied' | 'conflict' | 'unavailable';
  readonly detail: string | undefined;
}

/** A registry call returned no result; `kind` is the WIT `call-error` case. */
export declare class CallError extends Error {
  readonly kind: 'not-found' | 'denied' | 'invalid-arguments' | 'precondition' | 'failed' | 'limit' | 'unavailable';
  /** The host's text; for `invalid-arguments` one `{pointer, message}` per
   * violation, for `precondition` the state keys not set. */
  readonly detail: string | { pointer: string; message: string }[] | string[];
}

/** Any value JSON can hold. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** Sends the parts, joined by spaces, to the caller at once. */
export declare function say(...parts: unknown[]): void;

export declare const session: {
  id(): string;
  userId(): string | undefined;
  turn(): number;
  initialVariables(): { [name: string]: Json };
  initialVariable<T extends Json>(name: string, fallback?: T): T | undefined;
  history(last?: number): { role: 'system' | 'user' | 'assistant' | 'tool'; content: string }[];
  note(text: string): void;
  prune(keepLast: number, summary?: string): void;
  get<T extends Json>(key: string, fallback?: T): T | undefined;
  set(key: string, value: Json): void;
  delete(key: string): void;
  keys(prefix?: string): string[];
};

export interface Bucket {
  get<T extends Json>(key: string, fallback?: T): T | undefined;
  getBytes(key: string): Uint8Array | undefined;
  set(key: string, value: Json, ttlMs?: number): void;
  setBytes(key: string, bytes: Uint8Array, ttlMs?: number): void;
  delete(key: string): void;
  exists(key: string): boolean;
  increment(key: string, delta?: number): number;
  compareAndSwap(key: string, expected: Json | undefined, value: Json, ttlMs?: number): boolean;
  keys(prefix?: string): Generator<string>;
}

export declare const kv: { open(name: string): Bucket };

export declare const registry: {
  list(prefix?: string): { name: string; description: string; parameters: Json }[];
  call<T extends Json>(name: string, args?: { [name: string]: Json }): T;
};

/** A request got no response; `kind` is the `wasi:http` error code. */
export declare class HttpError extends Error {
  readonly kind: string;
  readonly detail?: string;
}

/** One server-sent event. */
export declare class Event {
  readonly event?: string;
  readonly data: string;
}

type Headers = [string, string][] | { [name: string]: string };

/** A response whose status and headers arrived; its body is read as it comes. */
export interface HttpResponse {
  readonly status: number;
  readonly headers: [string, string][];
  header(name: string, fallback?: string): string | undefined;
  chunks(): Generator<Uint8Array>;
  bytes(): Uint8Array;
  text(): string;
  json<T extends Json>(): T;
  events(): Generator<Event>;
  close(): void;
}

export declare const http: {
  request(method: string, url: string, options?: { headers?: Headers; body?: string | Uint8Array }): HttpResponse;
  get(url: string, headers?: Headers): HttpResponse;
  postJson(url: string, value: Json, headers?: Headers): HttpResponse;
};

/** A JSON Schema built by `s`; `.optional()` lets an argument or field be
 * left out or `null`, which means the same. */
export interface Schema {
  readonly schema: { [keyword: string]: Json };
  readonly isOptional: boolean;
  describe(text: string): Schema;
  optional(): Schema;
}

type Keywords = { [keyword: string]: Json };

export declare const s: {
  string(options?: Keywords): Schema;
  integer(options?: Keywords): Schema;
  number(options?: Keywords): Schema;
  boolean(options?: Keywords): Schema;
  enum(values: Json[]): Schema;
  array(items: Schema | Keywords, options?: Keywords): Schema;
  object(properties: { [name: string]: Schema }): Schema;
};

export interface ToolOptions {
  requires?: string[];
  cacheTtlMs?: number;
  cacheScope?: 'session' | 'user' | 'global';
  resultSchema?: Schema | Keywords;
}

export interface Tool<A extends Agent> {
  description: string;
  parameters: Keywords;
  run: (this: A, args: any) => Json;
  options: ToolOptions;
}

/** A tool: `run` is called with the agent as `this` and the arguments. */
export declare function tool<A extends Agent>(
  description: string,
  parameters: { [name: string]: Schema } | Keywords,
  run: (this: A, args: any) => Json,
  options?: ToolOptions,
): Tool<A>;

/** An agent whose own fields are its session state. */
export declare class Agent {
  static NAME: string;
  static VERSION: string;
  static DESCRIPTION: string;
  static STATE_VERSION: number;
  static stateSchema?: { [field: string]: Schema } | Keywords;
  static tools: { [name: string]: Tool<any> };
  static migrate(fromStateVersion: number, state: Json): Json;
  onStart(): void;
  onMessage(text: string): Outcome | void;
  onEnd(reason: 'caller' | 'agent' | 'expired' | 'shutdown'): void;
}

/** The object to export as `agent`: `export const agent = exportAgent(MyAgent);` */
export declare function exportAgent(agentClass: typeof Agent): unknown;
