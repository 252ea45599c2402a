"""Preference data sets of RLHF read as prompt sets: the ``ultrafeedback`` and ``hh_rlhf`` presets.

Neither has a gold answer: their rewards come from a reward model (``rm:PATH``) or a user
function, not a verifier. The chosen response is the demonstration (``Example.completion``);
the rejected one is not read.

ultrafeedback  As ``HuggingFaceH4/ultrafeedback_binarized``: the prompt is ``prompt`` (text);
               ``chosen`` is a list of chat messages ending with the assistant's turn, whose
               content is the demonstration.
hh_rlhf        As ``Anthropic/hh-rlhf``: ``chosen`` is a transcript
               ``"\\n\\nHuman: ...\\n\\nAssistant: ...\\n\\nHuman: ...\\n\\nAssistant: <response>"``.
               The prompt is the conversation before the last ``"\\n\\nAssistant:"``, as chat
               messages (Human -> user, Assistant -> assistant, each turn's text stripped) so
               the chat template applies; the demonstration is the response after it.

A cell these readers cannot read is a problem of its row, in the column read (``chosen``).
"""

from __future__ import annotations

import json
import re

from grouptune.data.problems import BadValue, short

HUMAN, ASSISTANT = "\n\nHuman:", "\n\nAssistant:"
_TURN = re.compile(r"\n\n(Human|Assistant):")
_ROLES = {"Human": "user", "Assistant": "assistant"}


# ----------------------------------------------------------------------------- UltraFeedback


def chosen_response(value) -> str:
    """The assistant's reply that ends a ``chosen`` list of chat messages (in CSV, JSON text)."""
    messages = _messages(value)
    last = messages[-1]
    if last["role"] != "assistant":
        raise BadValue(
            f"the chosen conversation must end with the assistant's turn; its last message is {last['role']!r}"
        )
    if not last["content"].strip():
        raise BadValue("the chosen conversation's last (assistant) message is empty")
    return last["content"]


def _messages(value) -> list[dict]:
    if isinstance(value, str):  # CSV: a list arrives as JSON text
        try:
            value = json.loads(value)
        except ValueError:
            raise BadValue(f"expected a list of chat messages (in CSV: a JSON array), got text {short(value)}") from None
    if not isinstance(value, list) or not value:
        raise BadValue(f"expected a non-empty list of chat messages, got {short(value)}")
    for i, m in enumerate(value):
        if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
            raise BadValue(f"message {i} must be an object with string 'role' and 'content', got {short(m)}")
    return value


# ----------------------------------------------------------------------------- HH-RLHF


def hh_prompt(value) -> list[dict]:
    """The turns of an HH transcript before its last ``\\n\\nAssistant:``, as chat messages."""
    head, _ = _hh_split(value)
    parts = _TURN.split(head)
    if parts[0].strip():
        raise BadValue(f"text before the first '\\n\\nHuman:' turn: {short(parts[0].strip())}")
    messages = [{"role": _ROLES[role], "content": text.strip()} for role, text in zip(parts[1::2], parts[2::2])]
    if not messages or messages[0]["role"] != "user":
        raise BadValue("the transcript must start with a '\\n\\nHuman:' turn before the final '\\n\\nAssistant:'")
    if not any(m["content"] for m in messages):
        raise BadValue("every turn before the final '\\n\\nAssistant:' is empty")
    return messages


def hh_response(value) -> str:
    """The response after the last ``\\n\\nAssistant:`` of an HH transcript (stripped)."""
    _, response = _hh_split(value)
    if not response.strip():
        raise BadValue("the final '\\n\\nAssistant:' response is empty")
    return response.strip()


def _hh_split(value) -> tuple[str, str]:
    """(the transcript before its last ``\\n\\nAssistant:``, the text after it)."""
    if not isinstance(value, str):
        raise BadValue(
            f"expected a transcript '\\n\\nHuman: ...\\n\\nAssistant: ...' (text), got {type(value).__name__} {short(value)}"
        )
    text = value if value.startswith("\n\n") else "\n\n" + value.lstrip()  # "Human: ..." without the blank line
    head, found, response = text.rpartition(ASSISTANT)
    if not found:
        raise BadValue(
            "no '\\n\\nAssistant:' turn in the transcript (HH-RLHF format: '\\n\\nHuman: ...\\n\\nAssistant: ...')"
        )
    return head, response
