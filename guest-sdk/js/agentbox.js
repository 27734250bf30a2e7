// Write agentbox plugins in JavaScript.
//
// A thin layer over the `agentbox:plugin` world as componentize-js binds it:
// an `Agent` base class whose own fields live in session state, `tool()`
// with a small JSON Schema builder (`s`), and helpers for `say`, the
// session, KV, the tool registry and outbound HTTP (`http`, blocking, with
// bodies read as they come). See docs/guests/javascript.md.
//
//     import { Agent, exportAgent, say } from 'agentbox';
//
//     class Counter extends Agent {
//       static NAME = 'counter';
//       static VERSION = '1.0.0';
//       count = 0;
//       onMessage(text) {
//         this.count += 1;
//         say(`${this.count} messages so far`);
//       }
//     }
//
//     export const agent = exportAgent(Counter);

import * as wit from 'agentbox:plugin/session@0.2.0';
import * as witKv from 'agentbox:plugin/kv@0.2.0';
import * as witRegistry from 'agentbox:plugin/registry@0.2.0';
import { say as witSay } from 'agentbox:plugin/output@0.2.0';
import * as witHttp from 'wasi:http/types@0.2.12';
import { handle as witSend } from 'wasi:http/outgoing-handler@0.2.12';

/** Throw it from a hook or tool to fail the turn with its message; the host
 * commits nothing. Any other exception fails the turn too, as
 * `Type: message`, and its stack goes to stderr, which the host attaches to
 * the error as `guest_output` where the operator allows it (`agentbox run`
 * always does). */
export class Fail extends Error {}

/** The host refused a session or KV operation: `kind` is `invalid`,
 * `quota-exceeded`, `denied`, `conflict` or `unavailable`, and `detail` the
 * host's text (undefined for `conflict`). */
export class HostError extends Error {
  constructor(kind, detail) {
    super(detail === undefined ? kind : `${kind}: ${detail}`);
    this.kind = kind;
    this.detail = detail;
  }
}

/** A registry call did not return a result: `kind` is `not-found`,
 * `denied`, `invalid-arguments`, `precondition`, `failed`, `limit` or
 * `unavailable`. `detail` is the host's text, except for
 * `invalid-arguments`, an array of `{pointer, message}`, one per violation,
 * and `precondition`, the array of state keys not set. */
export class CallError extends Error {
  constructor(kind, detail) {
    super(`${kind}: ${detail}`);
    this.kind = kind;
    if (kind === 'invalid-arguments') detail = JSON.parse(detail);
    else if (kind === 'precondition') detail = detail.split(', ');
    this.detail = detail;
  }
}

/** Calls an import whose WIT result carries an error, throwing it as
 * `Refusal` (`HostError` unless told); the binding throws a
 * `ComponentError` whose `payload` is `{tag, val}`. */
function host(call, Refusal = HostError) {
  try {
    return call();
  } catch (err) {
    if (err && err.payload && typeof err.payload.tag === 'string') {
      throw new Refusal(err.payload.tag, err.payload.val);
    }
    throw err;
  }
}

/** `onMessage` returns it (or nothing) to keep the conversation open. */
export const CONTINUE = { tag: 'continue' };
/** `onMessage` returns it to end the conversation. */
export const END = { tag: 'end' };
/** `onMessage` returns it to hand the conversation to `plugin`. */
export const handOff = (plugin) => ({ tag: 'hand-off', val: plugin });

/** Sends the parts, joined by spaces, to the caller at once. */
export function say(...parts) {
  witSay(parts.map(String).join(' '));
}

/** The calling session. Values are JSON-decoded; the turn is a number. */
export const session = {
  id: () => wit.id(),
  userId: () => wit.userId(),
  turn: () => Number(wit.turn()),
  initialVariables: () => JSON.parse(wit.initialVariables()),
  initialVariable: (name, fallback) => session.initialVariables()[name] ?? fallback,
  /** The committed history, oldest first: `[{role, content}]`. */
  history: (last) => wit.history(last),
  note: (text) => host(() => wit.note(text)),
  prune: (keepLast, summary) => host(() => wit.prune(keepLast, summary)),
  get(key, fallback) {
    const value = wit.get(key);
    return value === undefined ? fallback : JSON.parse(value);
  },
  set: (key, value) => host(() => wit.set(key, JSON.stringify(value))),
  delete: (key) => wit.delete(key),
  keys: (prefix = '') => wit.keys(prefix),
};

const ttl = (ms) => (ms === undefined ? undefined : BigInt(ms));
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A KV bucket: values are JSON unless read or written as bytes. */
class Bucket {
  constructor(bucket) {
    this.bucket = bucket;
  }
  get(key, fallback) {
    const raw = this.getBytes(key);
    return raw === undefined ? fallback : JSON.parse(decoder.decode(raw));
  }
  getBytes(key) {
    return host(() => this.bucket.get(key));
  }
  /** Stores `value` as JSON; with `ttlMs` it expires that much later. */
  set(key, value, ttlMs) {
    this.setBytes(key, encoder.encode(JSON.stringify(value)), ttlMs);
  }
  setBytes(key, bytes, ttlMs) {
    host(() => this.bucket.set(key, bytes, ttl(ttlMs)));
  }
  delete(key) {
    host(() => this.bucket.delete(key));
  }
  exists(key) {
    return host(() => this.bucket.exists(key));
  }
  increment(key, delta = 1) {
    return Number(host(() => this.bucket.increment(key, BigInt(delta))));
  }
  /** Stores JSON `value` only if the current value is JSON `expected`
   * (`undefined`: only if absent); returns whether it stored. */
  compareAndSwap(key, expected, value, ttlMs) {
    const old = expected === undefined ? undefined : encoder.encode(JSON.stringify(expected));
    return host(() =>
      this.bucket.compareAndSwap(key, old, encoder.encode(JSON.stringify(value)), ttl(ttlMs)),
    );
  }
  /** Every key starting with `prefix`, page after page. */
  *keys(prefix = '') {
    let cursor;
    do {
      const page = host(() => this.bucket.listKeys(prefix, cursor));
      yield* page.keys;
      cursor = page.cursor;
    } while (cursor !== undefined);
  }
}

/** Persistent key-value storage that outlives sessions. */
export const kv = {
  /** `user`, `global`, or a bucket the operator grants. */
  open: (name) => new Bucket(host(() => witKv.open(name))),
};

/** The tools this plugin may call. */
export const registry = {
  list: (prefix = '') =>
    witRegistry.list(prefix).map((info) => ({
      name: info.name,
      description: info.description,
      parameters: JSON.parse(info.parameters),
    })),
  /** Calls `plugin/tool` or `mcp:server/tool`; returns its decoded result
   * or throws a `CallError`. */
  call: (name, args = {}) =>
    JSON.parse(host(() => witRegistry.call(name, JSON.stringify(args)), CallError)),
};

// --- Outbound HTTP -------------------------------------------------------------

/** A request got no response: `kind` is the `wasi:http` error code, such as
 * `HTTP-request-denied` (the policy does not allow the origin),
 * `destination-IP-prohibited` or `connection-timeout`. */
export class HttpError extends Error {
  constructor(kind, message) {
    super(message === undefined ? kind : `${kind}: ${message}`);
    this.kind = kind;
    this.detail = message;
  }
}

const headerOf = (headers, name, fallback) =>
  headers.find(([key]) => key.toLowerCase() === name.toLowerCase())?.[1] ?? fallback;

/** One server-sent event: `event`, its `event:` field (or undefined), and
 * `data`, its `data:` lines joined by line breaks. */
export class Event {
  constructor(event, data) {
    this.event = event;
    this.data = data;
  }
}

/** A response whose status and headers arrived; its body is read as it
 * comes: `chunks()` yields its bytes as they arrive, `events()` its
 * server-sent events, `bytes()`, `text()` and `json()` the rest whole.
 * `close()` it when done (reading the whole body does). */
class HttpResponse {
  #response;
  #body;
  #stream;

  constructor(response) {
    this.#response = response;
    this.status = response.status();
    const fields = response.headers();
    this.headers = fields.entries().map(([name, value]) => [name, decoder.decode(value)]);
    fields[Symbol.dispose]?.();
    this.#body = response.consume();
    this.#stream = this.#body.stream();
  }

  /** The first value of the header `name`, any case. */
  header(name, fallback) {
    return headerOf(this.headers, name, fallback);
  }

  /** The body's bytes as they arrive, each a `Uint8Array`. */
  *chunks() {
    while (this.#stream !== undefined) {
      let chunk;
      try {
        chunk = this.#stream.blockingRead(65536n);
      } catch (err) {
        this.close();
        if (err?.payload?.tag === 'closed') return;
        throw new HttpError('HTTP-response-incomplete');
      }
      yield chunk;
    }
  }

  /** The rest of the body. */
  bytes() {
    const chunks = [...this.chunks()];
    const whole = new Uint8Array(chunks.reduce((sum, chunk) => sum + chunk.length, 0));
    let at = 0;
    for (const chunk of chunks) {
      whole.set(chunk, at);
      at += chunk.length;
    }
    return whole;
  }

  text() {
    return decoder.decode(this.bytes());
  }

  json() {
    return JSON.parse(this.text());
  }

  /** The body as server-sent events (`text/event-stream`), each yielded as
   * soon as its blank line arrives. */
  *events() {
    let buffer = new Uint8Array(0);
    let event;
    let data = [];
    const take = (raw) => {
      const line = decoder.decode(raw).replace(/\r$/, '');
      if (line === '') {
        if (event === undefined && data.length === 0) return undefined;
        const done = new Event(event, data.join('\n'));
        event = undefined;
        data = [];
        return done;
      }
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
      if (field === 'data') data.push(value);
      else if (field === 'event') event = value;
      return undefined;
    };
    for (const chunk of this.chunks()) {
      const joined = new Uint8Array(buffer.length + chunk.length);
      joined.set(buffer);
      joined.set(chunk, buffer.length);
      buffer = joined;
      let end;
      while ((end = buffer.indexOf(10)) >= 0) {
        const done = take(buffer.subarray(0, end));
        buffer = buffer.slice(end + 1);
        if (done) yield done;
      }
    }
    // A last event without its blank line.
    for (const raw of [buffer, new Uint8Array(0)]) {
      const done = take(raw);
      if (done) yield done;
    }
  }

  /** Closes the body and the response. */
  close() {
    if (this.#stream === undefined) return;
    this.#stream[Symbol.dispose]?.();
    this.#stream = undefined;
    witHttp.IncomingBody.finish(this.#body)[Symbol.dispose]?.();
    this.#response[Symbol.dispose]?.();
  }
}

/** Outbound HTTP through `wasi:http`, blocking until the status and
 * headers arrive. The operator's policy decides which origins a plugin
 * reaches (none by default); the host bounds every wait by the turn's
 * deadline. A 4xx or 5xx is a response; no response throws `HttpError`. */
export const http = {
  /** Sends `method url` with `headers` (pairs or an object) and `body` (a
   * string or bytes); the `HttpResponse`, whose body is read as it comes. */
  request(method, url, { headers = [], body } = {}) {
    let parts;
    try {
      parts = new URL(url);
    } catch {
      throw new HttpError('HTTP-request-URI-invalid', url);
    }
    if ((parts.protocol !== 'http:' && parts.protocol !== 'https:') || parts.host === '') {
      throw new HttpError('HTTP-request-URI-invalid', url);
    }
    const pairs = Array.isArray(headers) ? [...headers] : Object.entries(headers);
    const data = typeof body === 'string' ? encoder.encode(body) : (body ?? new Uint8Array(0));
    // A body of known size is declared, as mainstream clients do: a server
    // that reads by content-length alone would see none.
    const verb = method.toUpperCase();
    const declares = data.length > 0 || ['POST', 'PUT', 'PATCH'].includes(verb);
    if (declares && !pairs.some(([name]) => name.toLowerCase() === 'content-length')) {
      pairs.push(['content-length', String(data.length)]);
    }
    const fields = witHttp.Fields.fromList(pairs.map(([name, value]) => [name.toLowerCase(), encoder.encode(String(value))]));
    const request = new witHttp.OutgoingRequest(fields);
    const known = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE', 'PATCH'];
    request.setMethod(known.includes(verb) ? { tag: verb.toLowerCase() } : { tag: 'other', val: method });
    request.setScheme({ tag: parts.protocol === 'https:' ? 'HTTPS' : 'HTTP' });
    request.setAuthority(parts.host);
    request.setPathWithQuery(`${parts.pathname}${parts.search}`);
    const sending = request.body();
    let future;
    try {
      future = witSend(request, undefined);
    } catch (err) {
      throw new HttpError(err?.payload?.tag ?? 'internal-error');
    }
    const stream = sending.write();
    for (let at = 0; at < data.length; at += 4096) {
      stream.blockingWriteAndFlush(data.subarray(at, at + 4096));
    }
    stream[Symbol.dispose]?.();
    witHttp.OutgoingBody.finish(sending, undefined);
    let answer;
    while ((answer = future.get()) === undefined) {
      const ready = future.subscribe();
      ready.block();
      ready[Symbol.dispose]?.();
    }
    future[Symbol.dispose]?.();
    if (answer.tag === 'err' || answer.val.tag === 'err') {
      throw new HttpError(answer.tag === 'err' ? 'internal-error' : answer.val.val.tag);
    }
    return new HttpResponse(answer.val.val);
  },
  get: (url, headers = []) => http.request('GET', url, { headers }),
  /** POSTs `value` as JSON. */
  postJson: (url, value, headers = []) =>
    http.request('POST', url, {
      headers: [...(Array.isArray(headers) ? headers : Object.entries(headers)), ['content-type', 'application/json']],
      body: JSON.stringify(value),
    }),
};

// --- JSON Schema --------------------------------------------------------------

class Schema {
  constructor(schema, optional = false) {
    this.schema = schema;
    this.isOptional = optional;
  }
  /** The same schema with a description. */
  describe(text) {
    return new Schema({ ...this.schema, description: text }, this.isOptional);
  }
  /** May be left out of an object or be `null`, which means the same. */
  optional() {
    return new Schema(this.schema, true);
  }
}

/** `schema` accepting `null` as well: `null` joins its `type` and its
 * `enum`, or, with neither, the schema becomes `anyOf` it and `null`. */
function nullable(schema) {
  if (Object.keys(schema).length === 0) return schema;
  if (schema.type === undefined && schema.enum === undefined) {
    return { anyOf: [schema, { type: 'null' }] };
  }
  const kinds = schema.type === undefined ? undefined : [schema.type].flat();
  return {
    ...schema,
    ...(kinds && { type: kinds.includes('null') ? kinds : [...kinds, 'null'] }),
    ...(schema.enum && { enum: schema.enum.includes(null) ? schema.enum : [...schema.enum, null] }),
  };
}

/** A field's schema in an object: an optional one may be `null`. */
const fieldSchema = (value) => (value.isOptional ? nullable(value.schema) : schemaOf(value));

const kind = (type) => (options = {}) => new Schema({ type, ...options });

/** A small JSON Schema builder: `s.string({maxLength: 200})`,
 * `s.enum(['a', 'b']).describe('…')`, `s.array(s.integer()).optional()`. */
export const s = {
  string: kind('string'),
  integer: kind('integer'),
  number: kind('number'),
  boolean: kind('boolean'),
  enum: (values) => new Schema({ enum: values }),
  array: (items, options = {}) => new Schema({ type: 'array', items: schemaOf(items), ...options }),
  object: (properties) => new Schema(objectSchema(properties)),
};

const schemaOf = (value) => (value instanceof Schema ? value.schema : value);

function objectSchema(properties) {
  const required = Object.keys(properties).filter((name) => !properties[name].isOptional);
  const props = Object.fromEntries(
    Object.entries(properties).map(([name, value]) => [name, fieldSchema(value)]),
  );
  return { type: 'object', properties: props, required, additionalProperties: false };
}

/** A tool: its description, its parameters (a JSON Schema object, or an
 * object of `s` builders, one per argument), and the function that runs it
 * on the agent (`this`) with the arguments object. Options: `requires`,
 * `cacheTtlMs`, `cacheScope` (`session`, `user`, `global`), `resultSchema`. */
export function tool(description, parameters, run, options = {}) {
  const schema =
    parameters && parameters.type === 'object' && !(parameters instanceof Schema)
      ? parameters
      : objectSchema(parameters ?? {});
  return { description, parameters: schema, run, options };
}

// --- Agents -------------------------------------------------------------------

/** An agent whose own fields are its session state.
 *
 * Declare fields with defaults (`turns = 0;`). Before each turn they are
 * read from session state (a field not stored keeps its default); after a
 * hook returns, each field that changed is written back, and a field set
 * to `null` or `undefined` is deleted. A hook that throws changes nothing.
 *
 * Static members: `NAME`, `VERSION`, `DESCRIPTION`, `STATE_VERSION`,
 * `stateSchema` (an object of `s` builders or a JSON Schema) and `tools`
 * (an object of `tool(...)`s, by name). */
export class Agent {
  static VERSION = '0.0.0';
  static DESCRIPTION = '';
  static STATE_VERSION = 1;
  static tools = {};
  onStart() {}
  onMessage(text) {}
  onEnd(reason) {}
  static migrate(fromStateVersion, state) {
    return state;
  }
}

/** Runs `work`; an exception fails the turn: a `Fail` with its message,
 * any other as `Type: message`, with its stack on stderr. (The binding
 * takes a thrown string as the WIT error.) */
function guarded(work) {
  try {
    return work();
  } catch (err) {
    if (err instanceof Fail) throw err.message;
    if (typeof err === 'string') throw err;
    console.error(err && err.stack ? `${err}\n${err.stack}` : String(err));
    throw String(err);
  }
}

/** `value` as JSON text; a value that is not JSON fails the call, saying
 * what returned it. */
function json(value, what) {
  let text;
  try {
    text = JSON.stringify(value);
  } catch (err) {
    throw `${what} returned a value that is not JSON: ${err}`;
  }
  if (text === undefined) throw `${what} returned a value that is not JSON: ${typeof value}`;
  return text;
}

function stateSchemaOf(Class) {
  const schema = Class.stateSchema;
  if (schema === undefined || schema === null) return undefined;
  if (schema.type === 'object' && !(schema instanceof Schema)) return schema;
  const properties = Object.fromEntries(
    Object.entries(schema).map(([name, field]) => [name, fieldSchema(field)]),
  );
  return { type: 'object', properties };
}

/** The `agent` interface componentize-js exports, serving the agent class
 * `Class`: `export const agent = exportAgent(MyAgent);`. */
export function exportAgent(Class) {
  if (!(Class.prototype instanceof Agent)) {
    throw new TypeError('exportAgent() takes a subclass of Agent');
  }
  const turn = (hook) =>
    guarded(() => {
      const texts = Object.fromEntries(wit.keys('').map((key) => [key, wit.get(key)]));
      const stored = Object.fromEntries(Object.entries(texts).map(([key, text]) => [key, JSON.parse(text)]));
      const agent = new Class();
      for (const name of Object.keys(agent)) {
        // Parsed again for the agent, so a field changed in place still
        // differs from what is stored.
        if (name in texts) agent[name] = JSON.parse(texts[name]);
      }
      const result = hook(agent);
      for (const [name, value] of Object.entries(agent)) {
        if (value === null || value === undefined) {
          if (name in stored) wit.delete(name);
        } else if (!(name in stored) || JSON.stringify(stored[name]) !== JSON.stringify(value)) {
          try {
            wit.set(name, JSON.stringify(value));
          } catch (err) {
            throw new Fail(`cannot save field \`${name}\`: ${err.payload?.tag}: ${err.payload?.val}`);
          }
        }
      }
      return result;
    });
  return {
    describe() {
      const schema = stateSchemaOf(Class);
      return {
        name: Class.NAME,
        version: Class.VERSION,
        description: Class.DESCRIPTION,
        stateVersion: Class.STATE_VERSION,
        stateSchema: schema === undefined ? undefined : JSON.stringify(schema),
        tools: Object.entries(Class.tools).map(([name, found]) => ({
          name,
          description: found.description,
          parameters: JSON.stringify(found.parameters),
          resultSchema:
            found.options.resultSchema === undefined
              ? undefined
              : JSON.stringify(schemaOf(found.options.resultSchema)),
          requires: found.options.requires ?? [],
          cacheTtlMs: ttl(found.options.cacheTtlMs),
          cacheScope: found.options.cacheScope ?? 'session',
        })),
      };
    },
    onStart() {
      turn((agent) => agent.onStart());
    },
    onMessage(text) {
      return turn((agent) => agent.onMessage(text)) ?? CONTINUE;
    },
    callTool(name, args) {
      const found = Class.tools[name];
      if (found === undefined) throw `${Class.NAME} has no tool \`${name}\``;
      // An argument that may be left out and is `null` is left out.
      const required = found.parameters.required ?? [];
      const given = Object.entries(JSON.parse(args)).filter(
        ([name, value]) => value !== null || required.includes(name),
      );
      const result = turn((agent) => found.run.call(agent, Object.fromEntries(given)));
      // A tool that returns nothing answers `null`, as in Python.
      return json(result ?? null, `tool \`${name}\``);
    },
    onEnd(reason) {
      turn((agent) => agent.onEnd(reason));
    },
    migrate(fromStateVersion, state) {
      return guarded(() => json(Class.migrate(fromStateVersion, JSON.parse(state)), 'migrate'));
    },
  };
}
