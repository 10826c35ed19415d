"""Preference-pair layouts on the Hub, each normalised to (prompt, chosen, rejected) messages.

- `messages` (HuggingFaceH4/ultrafeedback_binarized): `chosen` and `rejected` are message lists
  that end with the answer and begin with the prompt turns; `prompt` (a string) is used only
  when the lists hold nothing but the answers.
- `strings` (Intel/orca_dpo_pairs): `system` (may be empty), `question` (or `prompt`), and the
  `chosen` and `rejected` answers as strings.
- `transcript` (Anthropic/hh-rlhf): `chosen` and `rejected` are whole transcripts,
  "\n\nHuman: ...\n\nAssistant: ..."; the prompt is their shared beginning up to its last
  "\n\nAssistant:".

The result: prompt = the messages before the answers (ending with a user turn), chosen and
rejected = one assistant message each. Every function raises `Unusable(reason)` for a row it
cannot use.
"""

import os
import re

from dataset.post_training.messages import Unusable, message, messages_from, text_field

HUMAN, ASSISTANT = "\n\nHuman:", "\n\nAssistant:"
_TURN = re.compile(r"\n\n(Human|Assistant):")


def _pair(prompt: list[dict], chosen: dict, rejected: dict) -> dict:
    if not prompt or prompt[-1]["role"] != "user":
        raise Unusable("prompt_not_ending_with_user")
    if chosen["content"] == rejected["content"]:
        raise Unusable("identical_chosen_rejected")
    return {"prompt": prompt, "chosen": [chosen], "rejected": [rejected]}


def from_messages(row: dict) -> dict:
    """UltraFeedback: chosen/rejected lists hold the prompt turns too; strip them off."""
    chosen, rejected = messages_from(row.get("chosen")), messages_from(row.get("rejected"))
    if chosen[-1]["role"] != "assistant" or rejected[-1]["role"] != "assistant":
        raise Unusable("answer_not_assistant")
    prompt = chosen[:-1]
    if prompt != rejected[:-1]:
        raise Unusable("prompt_mismatch")
    if not prompt:  # the lists hold only the answers: the prompt is its own column
        prompt_value = row.get("prompt")
        prompt = (
            messages_from(prompt_value)
            if isinstance(prompt_value, list)
            else [message("user", text_field(row, "prompt"))]
        )
    return _pair(prompt, chosen[-1], rejected[-1])


def from_strings(row: dict) -> dict:
    """Orca DPO pairs: system (may be empty), question, chosen and rejected strings."""
    question = text_field(row, "question" if "question" in row else "prompt")
    system = text_field(row, "system", required=False)
    prompt = ([message("system", system)] if system.strip() else []) + [message("user", question)]
    return _pair(
        prompt,
        message("assistant", text_field(row, "chosen")),
        message("assistant", text_field(row, "rejected")),
    )


def parse_transcript(text: str) -> list[dict]:
    """ "\\n\\nHuman: hi\\n\\nAssistant: hello" -> [user: hi, assistant: hello]."""
    parts = _TURN.split(text)
    if parts[0].strip():
        raise Unusable("text_before_first_turn")
    return [
        message("user" if speaker == "Human" else "assistant", content)
        for speaker, content in zip(parts[1::2], parts[2::2])
    ]


def from_transcripts(row: dict) -> dict:
    """hh-rlhf: the prompt is the shared beginning up to its last "\\n\\nAssistant:"."""
    chosen, rejected = text_field(row, "chosen"), text_field(row, "rejected")
    shared = os.path.commonprefix([chosen, rejected])
    cut = shared.rfind(ASSISTANT)
    if cut < 0:
        raise Unusable("no_shared_prompt")
    prompt = parse_transcript(shared[:cut])
    answers = [text[cut + len(ASSISTANT) :] for text in (chosen, rejected)]
    if any(_TURN.search(answer) for answer in answers):
        raise Unusable("answer_has_several_turns")
    return _pair(prompt, message("assistant", answers[0]), message("assistant", answers[1]))


def from_any(row: dict) -> dict:
    """A local row in any of the three layouts (or prompt/chosen/rejected already normalised)."""
    if "chosen" not in row or "rejected" not in row:
        raise Unusable("missing_chosen_or_rejected")
    chosen, rejected = row["chosen"], row["rejected"]
    if isinstance(chosen, list):
        return from_messages(row)
    has_prompt = "prompt" in row or "question" in row
    if (
        not has_prompt
        and isinstance(chosen, str)
        and isinstance(rejected, str)
        and ASSISTANT in chosen
    ):
        return from_transcripts(row)
    if not has_prompt:
        raise Unusable("missing_prompt")
    if isinstance(row.get("prompt"), list):  # prompt messages with string answers
        return _pair(
            messages_from(row["prompt"]),
            message("assistant", text_field(row, "chosen")),
            message("assistant", text_field(row, "rejected")),
        )
    return from_strings(row)
