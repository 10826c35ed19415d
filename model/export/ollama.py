"""An Ollama Modelfile for a GGUF export: our chat format in Ollama's template language.

    ollama create my-model -f exports/<run>-gguf/Modelfile
    ollama run my-model

Ollama puts the system prompt into `.Messages` as a message with role "system", and adds
`<|endoftext|>` (the GGUF's BOS, `add_bos_token`) in front of the prompt itself, so the template
renders only what follows it: `<|role|>content<|end|>` per message, then `<|assistant|>`
(tokenizer.encoding.CHAT_TEMPLATE). An imported model's Modelfile has no TEMPLATE: Ollama reads
the chat template inside the GGUF file.
"""

from __future__ import annotations

import json

from tokenizer.encoding import CHAT_TEMPLATE, ChatTokenizer

# <|{{ .Role }}|> gives <|system|>, <|user|> and <|assistant|>: our role tokens
TEMPLATE = "{{ range .Messages }}<|{{ .Role }}|>{{ .Content }}<|end|>{{ end }}<|assistant|>"


def modelfile(gguf_name: str, context_length: int, tokenizer: ChatTokenizer) -> str:
    """The Modelfile text for the GGUF file `gguf_name` (in the same folder)."""
    stops = "".join(
        f"PARAMETER stop {json.dumps(tokenizer.id_to_token(i))}\n" for i in tokenizer.stop_ids
    )
    template = f'TEMPLATE """{TEMPLATE}"""\n' if tokenizer.chat_template == CHAT_TEMPLATE else ""
    return (
        "# Ollama Modelfile written by python3 -m model.export.gguf\n"
        "#   ollama create my-model -f Modelfile && ollama run my-model\n"
        f"FROM ./{gguf_name}\n"
        f"{template}"
        f"{stops}"
        f"PARAMETER num_ctx {context_length}\n"
        "PARAMETER temperature 0.7\n"
        "PARAMETER top_p 0.9\n"
    )
