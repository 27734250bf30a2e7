"""The intake agent in Python: gathers a caller's name, email and reason over
several messages, then validates and submits them. The same agent as
plugins/intake (Rust) and plugins/js/intake, held to the same conversation."""

from typing import Annotated, Literal, Optional

import agentbox
from agentbox import Fail, say, session, tool


class Intake(agentbox.Agent):
    NAME = "intake"
    VERSION = "0.1.0"
    DESCRIPTION = "Collects a caller's name, email and reason, then submits them"

    name: Annotated[Optional[str], {"minLength": 1, "maxLength": 200}] = None
    email: Annotated[Optional[str], {"maxLength": 254}] = None
    reason: Annotated[Optional[str], {"minLength": 1, "maxLength": 2000}] = None
    turns: Annotated[int, {"minimum": 0}] = 0

    def on_start(self):
        name = session.initial_variable("name")
        self.name = name if isinstance(name, str) and name.strip() else None
        say(f"Welcome, {self.name}! I will take down your request." if self.name
            else "Welcome! I will take down your request.")
        say(self.progress())

    def on_message(self, text):
        self.turns += 1
        if text.strip().lower() == "submit":
            return self.submit()
        learned = self.learn(text)
        if learned:
            say(f"Noted your {' and '.join(learned)}.")
        else:
            say('I did not catch that. Try "my name is ...", your email address, or "I need ...".')
        say(self.progress())

    @tool
    def record_information(self, field: Literal["name", "email", "reason"], value: str):
        """Records one field of the request, replacing what was there.

        Args:
            field: Which field to record.
            value: Its value.
        """
        setattr(self, field, value.strip())
        return {"recorded": field, "missing": self.missing()}

    @tool
    def submit_form(self):
        """Validates the request and submits it, or lists every error."""
        errors = self.errors()
        if errors:
            raise Fail("; ".join(errors))
        return {"submitted": True, "name": self.name, "email": self.email, "reason": self.reason}

    def learn(self, text):
        learned = []
        lower = text.lower()
        for prefix in ("my name is ", "i am ", "i'm "):
            at = lower.find(prefix)
            if at >= 0:
                rest = text[at + len(prefix):]
                first = rest.replace(".", ",").replace("!", ",").split(",")[0]
                words = [word for word in first.split() if "@" not in word]
                if words:
                    self.name = " ".join(words)
                    learned.append("name")
                    break
        email = next((word for word in map(email_like, text.split()) if "@" in word), None)
        if email is not None:
            self.email = email
            learned.append("email")
        at = lower.find("i need ")
        if at >= 0:
            reason = text[at + len("i need "):].strip().rstrip(".!")
            if reason:
                self.reason = reason
                learned.append("reason")
        return learned

    def missing(self):
        return [field for field in ("name", "email", "reason") if getattr(self, field) is None]

    def progress(self):
        missing = self.missing()
        if not missing:
            return 'I have everything I need. Say "submit" to send it.'
        return f"Still needed: {', '.join(missing)}."

    def errors(self):
        errors = [f"{field} is missing" for field in self.missing()]
        if self.email is not None and not valid_email(self.email):
            errors.append(f"email `{self.email}` needs an @ and a dot after it")
        return errors

    def submit(self):
        errors = self.errors()
        if errors:
            say(f"I cannot submit yet: {'; '.join(errors)}.")
            return agentbox.CONTINUE
        say(f'Submitted. Thank you, {self.name}: we will write to {self.email} about "{self.reason}".')
        return agentbox.END


def email_like(word):
    """`word` without the punctuation around it, nor a trailing dot."""
    keep = lambda c: c.isalnum() or c in "@._-+"
    start, end = 0, len(word)
    while start < end and not keep(word[start]):
        start += 1
    while end > start and not keep(word[end - 1]):
        end -= 1
    return word[start:end].rstrip(".")


def valid_email(email):
    """An @ with something before it, and a dot with something on both sides after it."""
    local, at, domain = email.partition("@")
    host, dot, tld = domain.partition(".")
    return bool(at and local and dot and host and tld)


Agent = agentbox.export(Intake)
