"""An Ollama Modelfile for a GGUF export: our chat format in Ollama's template language.

    ollama create my-model -f exports/<run>-gguf/Modelfile
    ollama run my-model

Ollama puts the system prompt into `.Messages` as a message with role "system", and adds
`<|endoftext|>` (the GGUF's BOS, `add_bos_token`) in front of the prompt itself, so the template
renders only what follows it: `<|role|>content<|end|>` per message, then `<|assistant|>`
(tokenizer.encoding.chat_pieces).
"""

from __future__ import annotations

import json

from tokenizer.encoding import SPECIAL_TOKENS, STOP_IDS

# <|{{ .Role }}|> gives <|system|>, <|user|> and <|assistant|>: our role tokens
TEMPLATE = "{{ range .Messages }}<|{{ .Role }}|>{{ .Content }}<|end|>{{ end }}<|assistant|>"


def modelfile(gguf_name: str, context_length: int) -> str:
    """The Modelfile text for the GGUF file `gguf_name` (in the same folder)."""
    stops = "".join(f"PARAMETER stop {json.dumps(SPECIAL_TOKENS[i])}\n" for i in STOP_IDS)
    return (
        "# Ollama Modelfile written by python3 -m model.export.gguf\n"
        "#   ollama create my-model -f Modelfile && ollama run my-model\n"
        f"FROM ./{gguf_name}\n"
        f'TEMPLATE """{TEMPLATE}"""\n'
        f"{stops}"
        f"PARAMETER num_ctx {context_length}\n"
        "PARAMETER temperature 0.7\n"
        "PARAMETER top_p 0.9\n"
    )
