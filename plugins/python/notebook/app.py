"""A notebook agent that exercises the Python helper library: typed fields
in session state, the `user` KV bucket with a TTL, notes in the history, a
tool with optional and list arguments, refusals of the host as `HostError`
and of registry calls as `CallError`, `Fail`, an unexpected exception whose
traceback reaches the caller, and outbound HTTP (`fetch`, `post`,
server-sent events with `stream`). plugins/js/notebook is the same agent in
JavaScript."""

import json
from enum import Enum
from typing import Annotated

import agentbox
from agentbox import CallError, Fail, HostError, HttpError, http, kv, registry, say, session, tool


class Level(Enum):
    LOW = "low"
    HIGH = "high"


class Notebook(agentbox.Agent):
    NAME = "notebook"
    VERSION = "0.1.0"
    DESCRIPTION = "Keeps notes for a conversation and remembers what to call the user"

    notes: list[str] = None
    tags: dict[str, list[str]] = {}

    def on_start(self):
        name = kv.open("user").get("name")
        say(f"Hello again, {name}." if name else "Hello.")

    def on_message(self, text):
        command, _, rest = text.partition(" ")
        if command == "call-me":
            kv.open("user").set("name", rest, ttl_ms=60_000)
            say(f"I will call you {rest} for a minute.")
        elif command == "note":
            self.add_note(rest)
            session.note(f"the user noted: {rest}")
        elif command == "visits":
            say(f"visit {kv.open('user').increment('visits')}")
        elif command == "history":
            say(" | ".join(f"{m['role']}: {m['content']}" for m in session.history(4)))
        elif command == "set":
            try:
                session.set(rest, True)
                say(f"set {rest}")
            except HostError as refused:
                say(f"refused ({refused.kind})")
        elif command == "bucket":
            try:
                kv.open(rest)
            except HostError as refused:
                say(f"refused ({refused.kind})")
        elif command == "call":
            name, _, arguments = rest.partition(" ")
            try:
                say(json.dumps(registry.call(name, **json.loads(arguments))))
            except CallError as refused:
                say(f"refused ({refused.kind}) {json.dumps(refused.detail)}")
        elif command == "stream":
            try:
                with http.stream("GET", rest) as response:
                    for event in response.events():
                        say(f"{event.event or 'message'}: {event.data}")
            except HttpError as refused:
                say(f"refused ({refused.kind})")
        elif command in ("fetch", "post"):
            try:
                response = http.get(rest) if command == "fetch" else http.post_json(rest, {"notes": self.notes})
                say(f"{response.status} {response.header('x-seen', '-')} {response.text()}")
            except HttpError as refused:
                say(f"refused ({refused.kind})")
        elif command == "fail":
            raise Fail(f"failed on purpose: {rest}")
        elif command == "crash":
            return {}["no such key"]
        elif command == "bye":
            say(f"{len(self.notes or [])} notes kept.")
            return agentbox.END
        else:
            say(f"{len(self.notes or [])} notes.")

    def on_end(self, reason):
        say(f"Closing the notebook ({reason}).")

    @tool
    def add_note(self, text: Annotated[str, {"minLength": 1, "maxLength": 100}],
                 tags: list[str] = ()):
        """Adds a note.

        Args:
            text: What to note.
            tags: Words to find it by.
        """
        self.notes = (self.notes or []) + [text]
        for tag in tags:
            self.tags = self.tags or {}
            self.tags.setdefault(tag, []).append(text)
        return {"notes": len(self.notes)}

    @tool(requires=["notes"])
    def find(self, tag: str):
        """The notes tagged `tag`."""
        return (self.tags or {}).get(tag, [])

    @tool
    def recall(self, key: str):
        """What the user's bucket holds under `key`, if anything."""
        return kv.open("user").get(key)

    @tool
    def raw(self):
        """A value that is not JSON."""
        return {1, 2}

    @tool
    def prioritize(self, level: Level = Level.LOW):
        """Says how urgent the notes are."""
        return {"level": level, "member": isinstance(level, Level)}


Agent = agentbox.export(Notebook)
