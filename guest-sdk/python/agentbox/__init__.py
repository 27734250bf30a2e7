"""Write agentbox plugins in Python.

A thin layer over the bindings `componentize-py` generates for the
`agentbox:plugin` world (the `wit_world` package): an `Agent` base class
whose typed fields live in session state, a `@tool` decorator that derives a
tool's JSON Schema from its type hints and docstring, and small helpers for
`say`, the session, KV and the tool registry.

    import agentbox

    class Counter(agentbox.Agent):
        NAME = "counter"
        VERSION = "1.0.0"
        count: int = 0

        def on_message(self, text):
            self.count += 1
            agentbox.say(f"{self.count} messages so far")

    Agent = agentbox.export(Counter)

componentize-py builds the component from the module that defines the
module-level `Agent`; see docs/guests/python.md.
"""

import copy
import dataclasses
import enum
import inspect
import json
import re
import traceback
import typing
from types import UnionType
from urllib.parse import urlsplit

from componentize_py_types import Err
from wit_world.imports import agentbox_plugin_types as types
from wit_world.imports import kv as _kv
from wit_world.imports import outgoing_handler as _outgoing
from wit_world.imports import output as _output
from wit_world.imports import registry as _registry
from wit_world.imports import session as _session
from wit_world.imports import streams as _streams
from wit_world.imports import wasi_http_types as _wasi

__all__ = [
    "Agent",
    "CallError",
    "Fail",
    "HostError",
    "END",
    "CONTINUE",
    "hand_off",
    "export",
    "tool",
    "say",
    "session",
    "kv",
    "registry",
    "http",
    "HttpError",
    "Event",
]


class Fail(Exception):
    """Raise it from a hook or tool to fail the turn with its message.

    The host commits nothing of a failed turn and shows the message to the
    caller. Any other exception fails the turn too, as `Type: message`, and
    its traceback goes to the guest's stderr, which the host attaches to the
    error as `guest_output` where the operator allows it (`agentbox run`
    always does).
    """


class HostError(Exception):
    """The host refused a session or KV operation: `kind` is `invalid`,
    `quota-exceeded`, `denied`, `conflict` or `unavailable`, and `detail`
    the host's text (None for `conflict`)."""

    def __init__(self, kind, detail):
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.detail = detail


class CallError(Exception):
    """A registry call did not return a result: `kind` is `not-found`,
    `denied`, `invalid-arguments`, `precondition`, `failed`, `limit` or
    `unavailable`. `detail` is the host's text, except for
    `invalid-arguments`, a list of `{"pointer": ..., "message": ...}`, one
    per violation, and `precondition`, the list of state keys not set."""

    def __init__(self, kind, detail):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        if kind == "invalid-arguments":
            detail = json.loads(detail)
        elif kind == "precondition":
            detail = detail.split(", ")
        self.detail = detail


def _kind(value):
    """The WIT name of a variant case from its binding's class:
    `Error_QuotaExceeded` -> `quota-exceeded`, `ErrorCode_HttpRequestDenied`
    -> `HTTP-request-denied` (WASI spells its acronyms in capitals)."""
    name = type(value).__name__.split("_", 1)[1]
    words = re.findall(r"[A-Z][a-z]*", name)
    upper = {"Http", "Dns", "Ip", "Tls", "Uri"}
    return "-".join(word.upper() if word in upper else word.lower() for word in words)


def _host(call, *args):
    """Calls an import whose WIT result carries an `error`, raising `HostError`."""
    try:
        return call(*args)
    except Err as err:
        return _raise(HostError, err.value)


def _raise(kind, value):
    raise kind(_kind(value), getattr(value, "value", None)) from None


CONTINUE = types.Outcome_Continue()
"""`on_message` returns it (or `None`) to keep the conversation open."""
END = types.Outcome_End()
"""`on_message` returns it to end the conversation."""


def hand_off(plugin):
    """`on_message` returns it to hand the conversation to `plugin`."""
    return types.Outcome_HandOff(plugin)


def say(*parts):
    """Sends the parts, joined by spaces, to the caller at once."""
    _output.say(" ".join(str(part) for part in parts))


class session:
    """The calling session: its id, user, variables, turn and history."""

    id = staticmethod(_session.id)
    user_id = staticmethod(_session.user_id)
    turn = staticmethod(_session.turn)

    @staticmethod
    def initial_variables():
        """The variables the caller started the session with, as a dict."""
        return json.loads(_session.initial_variables())

    @staticmethod
    def initial_variable(name, default=None):
        """One initial variable, or `default`."""
        return session.initial_variables().get(name, default)

    @staticmethod
    def history(last=None):
        """The committed history, oldest first: `{"role": ..., "content": ...}`
        dicts, `role` one of `system`, `user`, `assistant` and `tool`."""
        return [
            {"role": message.role.name.lower(), "content": message.content}
            for message in _session.history(last)
        ]

    @staticmethod
    def note(text):
        """Adds a system message after the caller's, when the turn commits."""
        _host(_session.note, text)

    @staticmethod
    def prune(keep_last, summary=None):
        """Keeps the newest `keep_last` messages, after `summary` if given."""
        _host(_session.prune, keep_last, summary)

    @staticmethod
    def get(key, default=None):
        """A session-state value, decoded from JSON."""
        value = _session.get(key)
        return default if value is None else json.loads(value)

    @staticmethod
    def set(key, value):
        """Stores a JSON-able value; committed with the turn."""
        _host(_session.set, key, json.dumps(value))

    delete = staticmethod(_session.delete)
    keys = staticmethod(_session.keys)


class Bucket:
    """A KV bucket: values are JSON unless read or written as bytes."""

    def __init__(self, bucket):
        self._bucket = bucket

    def get(self, key, default=None):
        raw = self.get_bytes(key)
        return default if raw is None else json.loads(raw)

    def get_bytes(self, key):
        return _host(self._bucket.get, key)

    def set(self, key, value, ttl_ms=None):
        """Stores `value` as JSON; with `ttl_ms` it expires that much later."""
        self.set_bytes(key, json.dumps(value).encode(), ttl_ms)

    def set_bytes(self, key, value, ttl_ms=None):
        _host(self._bucket.set, key, bytes(value), ttl_ms)

    def delete(self, key):
        _host(self._bucket.delete, key)

    def exists(self, key):
        return _host(self._bucket.exists, key)

    def increment(self, key, delta=1):
        return _host(self._bucket.increment, key, delta)

    def compare_and_swap(self, key, expected, value, ttl_ms=None):
        """Stores JSON `value` only if the current value is JSON `expected`
        (`None`: only if absent); returns whether it stored."""
        old = None if expected is None else json.dumps(expected).encode()
        new = json.dumps(value).encode()
        return _host(self._bucket.compare_and_swap, key, old, new, ttl_ms)

    def keys(self, prefix=""):
        """Every key starting with `prefix`, page after page."""
        cursor = None
        while True:
            page = _host(self._bucket.list_keys, prefix, cursor)
            yield from page.keys
            cursor = page.cursor
            if cursor is None:
                return


class kv:
    """Persistent key-value storage that outlives sessions."""

    @staticmethod
    def open(name):
        """`user`, `global`, or a bucket the operator grants; see the WIT."""
        return Bucket(_host(_kv.open, name))


class registry:
    """The tools this plugin may call."""

    @staticmethod
    def list(prefix=""):
        return [
            {"name": info.name, "description": info.description,
             "parameters": json.loads(info.parameters)}
            for info in _registry.list(prefix)
        ]

    @staticmethod
    def call(name, **args):
        """Calls `plugin/tool` or `mcp:server/tool`; returns its decoded
        result or raises `CallError`."""
        try:
            return json.loads(_registry.call(name, json.dumps(args)))
        except Err as err:
            return _raise(CallError, err.value)


class HttpError(Exception):
    """A request got no response: `kind` is the `wasi:http` error code,
    such as `HTTP-request-denied` (the policy does not allow the origin),
    `destination-IP-prohibited` or `connection-timeout`."""

    def __init__(self, kind, detail=None):
        super().__init__(kind if detail is None else f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


class Response:
    """What a request got back: `status`, `headers` (a list of name, value
    pairs) and `body` (bytes)."""

    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name, default=None):
        """The first value of the header `name`, any case."""
        return _header(self.headers, name, default)

    def text(self):
        return self.body.decode()

    def json(self):
        return json.loads(self.body)


def _header(headers, name, default):
    return next((value for key, value in headers if key.lower() == name.lower()), default)


class Event:
    """One server-sent event: `event`, its `event:` field (or None), and
    `data`, its `data:` lines joined by line breaks."""

    def __init__(self, event, data):
        self.event = event
        self.data = data

    def __repr__(self):
        return f"Event(event={self.event!r}, data={self.data!r})"


class Streaming:
    """A response whose status and headers arrived and whose body is read
    as it comes: `chunks()` yields its bytes as they arrive, `events()` its
    server-sent events, `read()` the rest whole. Use it in a `with` block:
    leaving it closes the response."""

    def __init__(self, response):
        self._response = response
        with response.headers() as fields:
            self.headers = [(name, value.decode()) for name, value in fields.entries()]
        self.status = response.status()
        self._body = response.consume()
        self._stream = self._body.stream()

    def header(self, name, default=None):
        """The first value of the header `name`, any case."""
        return _header(self.headers, name, default)

    def chunks(self):
        """The body's bytes, as they arrive."""
        while True:
            try:
                yield self._stream.blocking_read(65536)
            except Err as err:
                if isinstance(err.value, _streams.StreamError_Closed):
                    return
                raise HttpError("HTTP-response-incomplete") from None

    def read(self):
        """The rest of the body."""
        return b"".join(self.chunks())

    def events(self):
        """The body as server-sent events (`text/event-stream`), each
        yielded as soon as its blank line arrives."""
        buffer = b""
        event, data = None, []

        def line_of(raw):
            nonlocal event, data
            line = raw.decode().removesuffix("\r")
            if not line:
                if event is not None or data:
                    done = Event(event, "\n".join(data))
                    event, data = None, []
                    return done
                return None
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "data":
                data.append(value)
            elif field == "event":
                event = value
            return None

        for chunk in self.chunks():
            buffer += chunk
            while b"\n" in buffer:
                raw, buffer = buffer.split(b"\n", 1)
                if (done := line_of(raw)) is not None:
                    yield done
        # A last event without its blank line.
        for raw in (buffer, b""):
            if (done := line_of(raw)) is not None:
                yield done

    def close(self):
        """Closes the body and the response; `with` does it on leaving."""
        if self._stream is not None:
            self._stream.__exit__(None, None, None)
            self._stream = None
            with _wasi.IncomingBody.finish(self._body):
                pass
            self._response.__exit__(None, None, None)

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.close()


class http:
    """Outbound HTTP through `wasi:http`. The operator's policy decides which
    origins a plugin reaches (none by default); the host bounds every wait
    by the turn's deadline."""

    @staticmethod
    def request(method, url, headers=(), body=None):
        """Sends `method url` with `headers` (pairs or a dict) and `body`
        (bytes or str), and returns the whole `Response`; raises `HttpError`
        when no response comes."""
        with http.stream(method, url, headers, body) as response:
            return Response(response.status, response.headers, response.read())

    @staticmethod
    def stream(method, url, headers=(), body=None):
        """Sends the request as `request` does and returns as soon as the
        status and headers arrive: a `Streaming` response, whose body is
        read as it comes (an LLM's tokens, say, with `events()`)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise HttpError("HTTP-request-URI-invalid", url)
        pairs = list(headers.items()) if isinstance(headers, dict) else list(headers)
        data = body.encode() if isinstance(body, str) else bytes(body or b"")
        # A body of known size is declared, as mainstream clients do: a
        # server that reads by content-length alone would see none.
        declares = data or method.upper() in ("POST", "PUT", "PATCH")
        if declares and not any(name.lower() == "content-length" for name, _ in pairs):
            pairs.append(("content-length", len(data)))
        fields = _wasi.Fields.from_list([(name, str(value).encode()) for name, value in pairs])
        outgoing = _wasi.OutgoingRequest(fields)
        methods = {"GET": _wasi.Method_Get, "POST": _wasi.Method_Post, "PUT": _wasi.Method_Put,
                   "DELETE": _wasi.Method_Delete, "PATCH": _wasi.Method_Patch,
                   "HEAD": _wasi.Method_Head, "OPTIONS": _wasi.Method_Options}
        verb = methods.get(method.upper())
        outgoing.set_method(verb() if verb else _wasi.Method_Other(method))
        outgoing.set_scheme(_wasi.Scheme_Https() if parts.scheme == "https" else _wasi.Scheme_Http())
        outgoing.set_authority(parts.netloc)
        outgoing.set_path_with_query((parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
        sending = outgoing.body()
        try:
            future = _outgoing.handle(outgoing, None)
        except Err as err:
            raise HttpError(_kind(err.value)) from None
        with sending.write() as stream:
            for at in range(0, len(data), 4096):
                stream.blocking_write_and_flush(data[at:at + 4096])
        _wasi.OutgoingBody.finish(sending, None)
        with future:
            while (answer := future.get()) is None:
                with future.subscribe() as ready:
                    ready.block()
        if isinstance(answer, Err) or isinstance(answer.value, Err):
            code = None if isinstance(answer, Err) else answer.value.value
            raise HttpError(_kind(code) if code is not None else "internal-error")
        return Streaming(answer.value.value)

    @staticmethod
    def get(url, headers=()):
        return http.request("GET", url, headers)

    @staticmethod
    def post_json(url, value, headers=()):
        """POSTs `value` as JSON; returns the `Response`."""
        pairs = list(headers.items()) if isinstance(headers, dict) else list(headers)
        return http.request("POST", url, pairs + [("content-type", "application/json")],
                            json.dumps(value))


# --- JSON Schema from type hints ---------------------------------------------

_SCALARS = {str: "string", int: "integer", float: "number", bool: "boolean"}


def schema_of(hint):
    """The JSON Schema of a type hint: `str`, `int`, `float`, `bool`,
    `list[T]`, `dict[str, T]`, `Optional[T]`, `Literal[...]`, an `Enum`,
    and `Annotated[T, ...]` whose dict metadata is merged into the schema
    and whose string metadata becomes its description."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Annotated:
        schema = dict(schema_of(args[0]))
        for extra in args[1:]:
            if isinstance(extra, dict):
                schema.update(extra)
            elif isinstance(extra, str):
                schema["description"] = extra
        return schema
    if origin is typing.Union or (origin is not None and origin.__name__ == "UnionType"):
        options = [arg for arg in args if arg is not type(None)]
        schema = schema_of(options[0]) if len(options) == 1 else {"anyOf": [schema_of(o) for o in options]}
        return _nullable(schema) if type(None) in args else schema
    if origin is typing.Literal:
        return {"enum": list(args)}
    if origin in (list, tuple, set):
        return {"type": "array", "items": schema_of(args[0])} if args else {"type": "array"}
    if origin is dict:
        return {"type": "object", "additionalProperties": schema_of(args[1])} if args else {"type": "object"}
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return {"enum": [member.value for member in hint]}
    if hint in _SCALARS:
        return {"type": _SCALARS[hint]}
    if hint in (list, dict):
        return {"type": "array" if hint is list else "object"}
    if hint is typing.Any or hint is inspect.Parameter.empty:
        return {}
    raise TypeError(f"no JSON Schema for the type hint {hint!r}")


def _nullable(schema):
    """`schema` accepting `null` as well: `null` joins its `type` and its
    `enum`, or, with neither, the schema becomes `anyOf` it and `null`."""
    if not schema:
        return schema
    if "type" not in schema and "enum" not in schema:
        return {"anyOf": [schema, {"type": "null"}]}
    schema = dict(schema)
    if "type" in schema:
        kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        schema["type"] = kinds if "null" in kinds else [*kinds, "null"]
    if "enum" in schema and None not in schema["enum"]:
        schema["enum"] = [*schema["enum"], None]
    return schema


def _docstring(function):
    """The summary of a Google-style docstring and its `Args:` entries."""
    doc = inspect.getdoc(function) or ""
    summary, _, rest = doc.partition("\n\n")
    args, current = {}, None
    in_args = False
    for line in rest.splitlines():
        if line.strip() in ("Args:", "Arguments:", "Parameters:"):
            in_args = True
            continue
        if in_args:
            match = re.match(r"^\s{2,}(\w+)(?:\s*\([^)]*\))?:\s*(.*)$", line)
            if match and (current is None or len(line) - len(line.lstrip()) <= args[current][1]):
                current = match.group(1)
                args[current] = [match.group(2), len(line) - len(line.lstrip())]
            elif line.strip() and current is not None:
                args[current][0] += " " + line.strip()
            elif not line.strip():
                in_args = False
    return " ".join(summary.split()), {name: text for name, (text, _) in args.items()}


class _Tool:
    def __init__(self, function, requires, cache_ttl_ms, cache_scope, result_schema):
        self.function = function
        self.name = function.__name__
        description, docs = _docstring(function)
        hints = typing.get_type_hints(function, include_extras=True)
        properties, required = {}, []
        # Arguments whose hint is an Enum arrive as its members, as their
        # defaults are.
        self.enums = {}
        # An argument with a default may be left out or sent as `null`;
        # either way the function gets the default.
        self.defaulted = set()
        for name, parameter in list(inspect.signature(function).parameters.items())[1:]:
            hint = hints.get(name, typing.Any)
            if (member_of := _enum_of(hint)) is not None:
                self.enums[name] = member_of
            schema = schema_of(hint)
            if name in docs and "description" not in schema:
                schema = dict(schema, description=docs[name])
            if parameter.default is inspect.Parameter.empty:
                required.append(name)
            else:
                self.defaulted.add(name)
                schema = _nullable(schema)
            properties[name] = schema
        self.description = description
        self.parameters = {"type": "object", "properties": properties,
                           "required": required, "additionalProperties": False}
        self.spec = types.ToolSpec(
            name=self.name,
            description=description,
            parameters=json.dumps(self.parameters),
            result_schema=None if result_schema is None else json.dumps(result_schema),
            requires=list(requires),
            cache_ttl_ms=cache_ttl_ms,
            cache_scope=types.CacheScope[cache_scope.upper()],
        )

    def call(self, agent, arguments):
        """Runs the tool for `agent` with the decoded `arguments`."""
        arguments = {name: value for name, value in arguments.items()
                     if value is not None or name not in self.defaulted}
        for name, member_of in self.enums.items():
            if arguments.get(name) is not None:
                arguments[name] = member_of(arguments[name])
        return self.function(agent, **arguments)


def _enum_of(hint):
    """The Enum class `hint` names, itself or as `Optional[...]` or
    `Annotated[...]`; else None."""
    if typing.get_origin(hint) is typing.Annotated:
        return _enum_of(typing.get_args(hint)[0])
    if typing.get_origin(hint) in (typing.Union, UnionType):
        found = [_enum_of(arg) for arg in typing.get_args(hint) if arg is not type(None)]
        return found[0] if len(found) == 1 else None
    return hint if isinstance(hint, type) and issubclass(hint, enum.Enum) else None


def _json(value, what):
    """`value` as JSON text (an Enum member as its value); a value that is
    not JSON fails the call, saying what returned it."""
    def member(value):
        if isinstance(value, enum.Enum):
            return value.value
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
    try:
        return json.dumps(value, default=member)
    except (TypeError, ValueError) as error:
        raise Err(f"{what} returned a value that is not JSON: {error}") from None


def tool(function=None, *, requires=(), cache_ttl_ms=None, cache_scope="session",
         result_schema=None):
    """Marks a method of an `Agent` as a tool.

    Its parameters become the tool's arguments: their type hints give the
    JSON Schema, parameters without a default are required (one with a
    default may be left out or sent as `null`, and gets its default), and the
    docstring's first paragraph and `Args:` section describe the tool and
    each argument. It returns a JSON-able result, or raises `Fail`.
    """
    def mark(function):
        function.__agentbox_tool__ = (requires, cache_ttl_ms, cache_scope, result_schema)
        return function
    return mark if function is None else mark(function)


# --- Agents ------------------------------------------------------------------

class Agent:
    """An agent whose typed fields are its session state.

    Declare fields as class annotations with defaults; the class becomes a
    dataclass. Before each turn the fields are read from session state (a
    field not stored keeps its default); after a hook returns, each field
    that changed is written back, and a field set to `None` is deleted. A
    hook that raises changes nothing.

    Class attributes: `NAME`, `VERSION`, `DESCRIPTION`, `STATE_VERSION`.
    """

    NAME = ""
    VERSION = "0.0.0"
    DESCRIPTION = ""
    STATE_VERSION = 1

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # A list, dict or set default is each instance's own copy, so
        # `orders: list[dict] = []` is written the natural way.
        for name in inspect.get_annotations(cls):
            default = vars(cls).get(name)
            if isinstance(default, (list, dict, set)):
                setattr(cls, name, dataclasses.field(default_factory=lambda value=default: copy.deepcopy(value)))
        dataclasses.dataclass(cls)

    @classmethod
    def state_schema(cls):
        """The JSON Schema of the session state, from the fields' type
        hints; return `None` to leave the state unchecked."""
        hints = typing.get_type_hints(cls, include_extras=True)
        properties = {field.name: schema_of(hints[field.name]) for field in dataclasses.fields(cls)}
        return {"type": "object", "properties": properties}

    def on_start(self):
        """Opens the session (turn 0)."""

    def on_message(self, text):
        """Handles one message; returns `None`, `CONTINUE`, `END` or `hand_off(...)`."""

    def on_end(self, reason):
        """Closes the session; `reason` is `caller`, `agent`, `expired` or `shutdown`."""

    @classmethod
    def migrate(cls, from_state_version, state):
        """Converts a state dict of an older `STATE_VERSION` to this one."""
        return state


def _fields(agent):
    return {field.name: getattr(agent, field.name) for field in dataclasses.fields(agent)}


def _tools(cls):
    found = {}
    for klass in reversed(cls.__mro__):
        for name, member in vars(klass).items():
            options = getattr(member, "__agentbox_tool__", None)
            if options is not None:
                found[name] = _Tool(member, *options)
    return found


def _guarded(work):
    """Runs `work`; an exception fails the turn: a `Fail` with its message,
    any other as `Type: message`, with its traceback on stderr."""
    try:
        return work()
    except Fail as failure:
        raise Err(str(failure)) from None
    except Err:
        raise
    except Exception as error:
        traceback.print_exc()
        raise Err(f"{type(error).__name__}: {error}") from None


def export(cls):
    """The class componentize-py exports as the `agent` interface, serving
    the agent class `cls`. Assign it to the module-level name `Agent`."""
    if not (isinstance(cls, type) and issubclass(cls, Agent)):
        raise TypeError("export() takes a subclass of agentbox.Agent")
    tools = _tools(cls)

    def turn(hook):
        texts = {key: _session.get(key) for key in _session.keys("")}
        stored = {key: json.loads(text) for key, text in texts.items()}
        # Decoded again for the agent, so a field changed in place still
        # differs from what is stored.
        agent = cls(**{name: json.loads(texts[name]) if name in texts else value
                       for name, value in _fields(cls()).items()})
        result = _guarded(lambda: hook(agent))
        for name, value in _fields(agent).items():
            if value is None:
                if name in stored:
                    _session.delete(name)
            elif name not in stored or stored[name] != value:
                try:
                    _session.set(name, json.dumps(value))
                except Err as err:
                    raise Err(f"cannot save field `{name}`: {_kind(err.value)}: {err.value.value}") from None
        return result

    class Exported:
        def describe(self):
            schema = cls.state_schema()
            return types.Manifest(
                name=cls.NAME,
                version=cls.VERSION,
                description=cls.DESCRIPTION,
                state_version=cls.STATE_VERSION,
                state_schema=None if schema is None else json.dumps(schema),
                tools=[found.spec for found in tools.values()],
            )

        def on_start(self):
            turn(lambda agent: agent.on_start())

        def on_message(self, text):
            outcome = turn(lambda agent: agent.on_message(text))
            return CONTINUE if outcome is None else outcome

        def call_tool(self, name, args):
            found = tools.get(name)
            if found is None:
                raise Err(f"{cls.NAME} has no tool `{name}`")
            arguments = json.loads(args)
            return _json(turn(lambda agent: found.call(agent, arguments)), f"tool `{name}`")

        def on_end(self, reason):
            turn(lambda agent: agent.on_end(reason.name.lower()))

        def migrate(self, from_state_version, state):
            return _guarded(lambda: _json(cls.migrate(from_state_version, json.loads(state)), "migrate"))

    Exported.__name__ = "Agent"
    return Exported
