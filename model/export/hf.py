r"""Export a checkpoint as a Hugging Face Llama folder (tested with transformers).

    python3 -m model.export.hf --checkpoint checkpoints/<run> --output-dir exports/<run>

Tiny CPU example, after the README's sample pipeline:
    python3 -m model.export.hf --checkpoint checkpoints/sample_pre_training \
        --output-dir exports/sample

Then, in Python (with `pip install transformers`):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained("exports/sample")
    tokenizer = AutoTokenizer.from_pretrained("exports/sample")
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}],
                                        add_generation_prompt=True, return_tensors="pt")

Writes config.json, model.safetensors, tokenizer.json, tokenizer_config.json (chat template and
special tokens), special_tokens_map.json and generation_config.json. Our parameter names map
one-to-one onto LlamaForCausalLM's, and our RoPE uses Llama's layout, so the logits are the same.
config.json keeps the padded vocabulary size (a multiple of 64, like the weights);
generation_config.json suppresses the padded ids so `generate` never emits them.
The exported tokenizer adds `<|endoftext|>` in front of plain text (as our pre-training documents
do); the chat template inserts it itself. transformers is not needed to export.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, processors

from common.atomic import locked_output_directory, readable_as_umask_allows
from common.errors import ArgumentParser, UserError, run_cli
from model.checkpoint import load_model
from model.export.llama_names import hf_tensors
from model.transformer import Transformer
from tokenizer.encoding import (
    ASSISTANT,
    BOS_ID,
    CHAT_TEMPLATE,
    DOC_SEPARATOR,
    END_OF_TURN,
    END_OF_TURN_ID,
    PAD,
    PAD_ID,
    SPECIAL_TOKENS,
    STOP_IDS,
    SYSTEM,
    USER,
    load_tokenizer,
)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def hf_state_dict(model: Transformer, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Weights under Llama names; a tied LM head is left out (tie_word_embeddings restores it)."""
    return {name: tensor.to("cpu", dtype).contiguous() for name, tensor in hf_tensors(model)}


def llama_config(model: Transformer, dtype_name: str) -> dict:
    c = model.config
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": c.padded_vocab_size,  # ids >= the tokenizer's size are never produced
        "hidden_size": c.n_embd,
        "intermediate_size": c.mlp_hidden,
        "num_hidden_layers": c.n_layer,
        "num_attention_heads": c.n_head,
        "num_key_value_heads": c.n_kv_head,
        "head_dim": c.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": c.block_size,
        "rms_norm_eps": c.norm_eps,
        # transformers < 5 reads rope_theta; >= 5 reads rope_parameters
        "rope_theta": c.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": c.rope_theta},
        "rope_scaling": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "initializer_range": 0.02,
        "tie_word_embeddings": c.tie_embeddings,
        "bos_token_id": BOS_ID,
        "eos_token_id": END_OF_TURN_ID,
        "pad_token_id": PAD_ID,
        "use_cache": True,
        "torch_dtype": dtype_name,
        "dtype": dtype_name,
    }


def generation_config(model: Transformer) -> dict:
    c = model.config
    return {
        "bos_token_id": BOS_ID,
        # a chat reply ends with <|end|>, a plain document with <|endoftext|>
        "eos_token_id": list(STOP_IDS),
        "pad_token_id": PAD_ID,
        # the padded vocabulary rows are not tokens: never generate them (as model.generate)
        "suppress_tokens": list(range(c.vocab_size, c.padded_vocab_size)),
    }


def tokenizer_config(block_size: int) -> dict:
    added = {
        str(index): {
            "content": token,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for index, token in enumerate(SPECIAL_TOKENS)
    }
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": DOC_SEPARATOR,
        "eos_token": END_OF_TURN,
        "pad_token": PAD,
        "unk_token": None,
        "additional_special_tokens": [SYSTEM, USER, ASSISTANT],
        "added_tokens_decoder": added,
        "chat_template": CHAT_TEMPLATE,
        "model_max_length": block_size,
        "clean_up_tokenization_spaces": False,
        "padding_side": "left",  # batched generation pads on the left
    }


def special_tokens_map() -> dict:
    return {
        "bos_token": DOC_SEPARATOR,
        "eos_token": END_OF_TURN,
        "pad_token": PAD,
        "additional_special_tokens": [SYSTEM, USER, ASSISTANT],
    }


def hf_tokenizer_json(tokenizer: Tokenizer) -> str:
    """Our tokenizer with a post-processor that puts <|endoftext|> before plain text, and with
    special-token matching on (HF renders the chat template to text, then tokenizes it)."""
    tokenizer = Tokenizer.from_str(tokenizer.to_str())
    bos = (DOC_SEPARATOR, BOS_ID)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos[0]} $A", pair=f"{bos[0]} $A $B", special_tokens=[bos]
    )
    tokenizer.encode_special_tokens = False
    return tokenizer.to_str(pretty=True)


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def export(
    checkpoint: str | Path,
    output_dir: str | Path,
    dtype_name: str = "float32",
    overwrite: bool = False,
) -> Path:
    """Write the Hugging Face folder; returns its path. Atomic (no half-written folder), one
    export at a time per folder, and a full disk is a one-line error."""
    if dtype_name not in DTYPES:
        raise UserError(f"--dtype must be one of {sorted(DTYPES)}, got {dtype_name!r}")
    model, _, tokenizer_path = load_model(checkpoint)
    if tokenizer_path is None:
        raise UserError(f"{checkpoint} has no tokenizer.json next to its weights; cannot export")
    tokenizer = load_tokenizer(tokenizer_path)
    with locked_output_directory(output_dir, overwrite, what="export") as tmp:
        save_file(
            hf_state_dict(model, DTYPES[dtype_name]),
            str(tmp / "model.safetensors"),
            metadata={"format": "pt"},
        )
        readable_as_umask_allows(tmp / "model.safetensors")
        write_json(tmp / "config.json", llama_config(model, dtype_name))
        write_json(tmp / "generation_config.json", generation_config(model))
        write_json(tmp / "tokenizer_config.json", tokenizer_config(model.config.block_size))
        write_json(tmp / "special_tokens_map.json", special_tokens_map())
        (tmp / "tokenizer.json").write_text(hf_tokenizer_json(tokenizer))
    return Path(output_dir)


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(
        prog="python3 -m model.export.hf",
        description="Export a checkpoint as a Hugging Face LlamaForCausalLM folder.",
    )
    parser.add_argument(
        "--checkpoint", required=True, help="run folder (follows `latest`) or step folder"
    )
    parser.add_argument("--output-dir", required=True, help="folder to create, e.g. exports/run")
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=sorted(DTYPES),
        help="weight dtype in model.safetensors: float32 (default) is exact, bfloat16 is half size",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace --output-dir if it already exists"
    )
    args = parser.parse_args(argv)
    output = export(args.checkpoint, args.output_dir, args.dtype, args.overwrite)
    print(f"wrote {output} (load with transformers.AutoModelForCausalLM.from_pretrained)")


if __name__ == "__main__":
    run_cli(main)
