"""The {{name}} agent: greets the caller, counts the visits, and renames."""

from typing import Annotated, Optional

import agentbox
from agentbox import Fail, say, session, tool


class {{Class}}(agentbox.Agent):
    NAME = "{{name}}"
    VERSION = "0.1.0"
    DESCRIPTION = "Greets the caller and counts the visits"

    # Fields are session state: loaded before each turn, saved after it.
    visits: int = 0
    name: Annotated[Optional[str], {"maxLength": 100}] = None

    def on_start(self):
        self.name = session.initial_variable("name")
        say(f"Hello, {self.name or 'stranger'}!")

    def on_message(self, text):
        self.visits += 1
        say(f"Visit {self.visits}: you said {text}")
        if text == "bye":
            return agentbox.END

    @tool
    def rename(self, name: Annotated[str, {"minLength": 1}]):
        """Changes the name the agent greets.

        Args:
            name: The new name.
        """
        if name == self.name:
            raise Fail(f"the name is already {name}")
        self.name = name
        return {"name": name}


Agent = agentbox.export({{Class}})
