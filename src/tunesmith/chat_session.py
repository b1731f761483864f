"""`tunesmith chat RUN`: an interactive conversation with a fine-tuned model, the reply streamed as it is written.

The session reads lines and writes text through two functions (input() and sys.stdout by default), so a test
drives it with a list of lines. Slash commands change the session; anything else is the user's next message.
Ctrl-C during a reply stops it (the partial reply stays in the conversation); Ctrl-C or Ctrl-D at the prompt ends
the chat.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import fields

from .errors import TunesmithError
from .generation import Conversation, GenerationSettings, model_context_length, stream_reply

HELP = """Commands:
  /reset                 forget the conversation (the system prompt stays)
  /system TEXT           set the system prompt (/system alone removes it) and start over
  /set NAME VALUE        change a generation setting, e.g. /set temperature 0 (greedy), /set max_new_tokens 64
  /settings              show the generation settings
  /help                  show this help
  /quit                  end the chat (Ctrl-D too)"""
FALLBACK_CONTEXT = 2048  # tokens, for a model whose config names no context length


def settings_line(settings: GenerationSettings) -> str:
    return ", ".join(f"{f.name} {getattr(settings, f.name)}" for f in fields(settings))


class ChatSession:
    def __init__(self, model, tokenizer, settings: GenerationSettings, system_prompt: str | None = None,
                 write: Callable[[str], None] = print):
        self.model, self.tokenizer, self.settings, self.write = model, tokenizer, settings, write
        context = model_context_length(model) or FALLBACK_CONTEXT
        self.conversation = Conversation(tokenizer, context, system_prompt)

    def command(self, line: str) -> bool:
        """Carry out a slash command; False when it ends the chat."""
        name, _, rest = line[1:].partition(" ")
        name, rest = name.lower(), rest.strip()
        if name in ("quit", "exit", "q"):
            return False
        if name == "reset":
            self.conversation.reset()
            self.write("(conversation reset)")
        elif name == "system":
            self.conversation.system_prompt = rest or None
            self.conversation.reset()
            self.write(f"(system prompt {'set' if rest else 'removed'}; conversation reset)")
        elif name == "set":
            setting, _, value = rest.partition(" ")
            if not setting or not value.strip():
                raise TunesmithError("Give a setting and its value, e.g. /set temperature 0.2; /settings lists them.")
            self.settings.update(setting, value)
            self.write(f"({setting} = {getattr(self.settings, setting)})")
        elif name == "settings":
            self.write(settings_line(self.settings))
        elif name == "help":
            self.write(HELP)
        else:
            raise TunesmithError(f"Unknown command /{name}; /help lists the commands.")
        return True

    def reply(self, message: str, pieces: Callable[[str], None]) -> str:
        """Add the user's message, stream the reply through `pieces`, keep it; a Ctrl-C keeps what was written."""
        self.conversation.add_user(message)
        note = self.conversation.trim(self.settings.max_new_tokens)  # a message too long alone is refused and taken out
        if note:
            self.write(f"({note})")
        written = []
        try:
            with contextlib.closing(stream_reply(self.model, self.tokenizer, self.conversation.messages, self.settings)) as stream:
                for piece in stream:
                    written.append(piece)
                    pieces(piece)
        except KeyboardInterrupt:
            self.conversation.add_assistant("".join(written))
            raise
        self.conversation.add_assistant("".join(written))
        return "".join(written)

    def run(self, read_line: Callable[[str], str] = input, pieces: Callable[[str], None] | None = None) -> int:
        """The read-reply loop until /quit, Ctrl-D or Ctrl-C at the prompt; returns the number of replies."""
        import sys

        def stream_out(piece: str) -> None:
            sys.stdout.write(piece)
            sys.stdout.flush()

        pieces = pieces or stream_out
        replies = 0
        self.write("Type a message; /help lists the commands, /quit ends the chat.")
        while True:
            try:
                line = read_line("> ").strip()
            except (EOFError, KeyboardInterrupt):
                self.write("")
                return replies
            if not line:
                continue
            try:
                if line.startswith("/"):
                    if not self.command(line):
                        return replies
                    continue
                self.reply(line, pieces)
                replies += 1
                pieces("\n")
            except TunesmithError as exc:
                self.write(f"error: {exc}")
            except KeyboardInterrupt:
                replies += 1
                self.write("\n(reply stopped)")
