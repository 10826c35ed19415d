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
The exported tokenizer adds BOS in front of plain text (as our pre-training documents do; an
imported model's tokenizer keeps its own rule); the chat template inserts it itself. An imported
model exports with its own tokenizer, special tokens and chat template (and Llama 3's RoPE
scaling). transformers is not needed to export.
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
from tokenizer.encoding import ChatTokenizer, load_tokenizer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def hf_state_dict(model: Transformer, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Weights under Llama names; a tied LM head is left out (tie_word_embeddings restores it)."""
    return {name: tensor.to("cpu", dtype).contiguous() for name, tensor in hf_tensors(model)}


def llama_config(model: Transformer, dtype_name: str) -> dict:
    c = model.config
    rope = c.rope_scaling or {"rope_type": "default"}
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
        # transformers < 5 reads rope_theta and rope_scaling; >= 5 reads rope_parameters
        "rope_theta": c.rope_theta,
        "rope_parameters": {**rope, "rope_theta": c.rope_theta},
        "rope_scaling": c.rope_scaling,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "initializer_range": 0.02,
        "tie_word_embeddings": c.tie_embeddings,
        "use_cache": True,
        "torch_dtype": dtype_name,
        "dtype": dtype_name,
    }


def token_ids(tokenizer: ChatTokenizer) -> dict:
    return {
        "bos_token_id": tokenizer.bos_id,
        "eos_token_id": tokenizer.eos_id,
        "pad_token_id": tokenizer.pad_id,
    }


def generation_config(model: Transformer, tokenizer: ChatTokenizer) -> dict:
    c = model.config
    return {
        **token_ids(tokenizer),
        "eos_token_id": list(tokenizer.stop_ids),  # the end of a reply or of a document
        # the padded vocabulary rows are not tokens: never generate them (as model.generate)
        "suppress_tokens": list(range(c.vocab_size, c.padded_vocab_size)),
    }


def special_tokens_map(tokenizer: ChatTokenizer) -> dict:
    """bos/eos/pad_token and the other special tokens (ours: <|system|>, <|user|> ...)."""
    added = sorted(tokenizer.get_added_tokens_decoder().items())
    named = set(tokenizer.tokens.values())
    others = [t.content for _, t in added if t.special and t.content not in named]
    return {**tokenizer.tokens, "additional_special_tokens": others}


def tokenizer_config(tokenizer: ChatTokenizer, block_size: int) -> dict:
    fields = ("content", "lstrip", "normalized", "rstrip", "single_word", "special")
    added = {
        str(i): {name: getattr(token, name) for name in fields}
        for i, token in sorted(tokenizer.get_added_tokens_decoder().items())
    }
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": None,
        **special_tokens_map(tokenizer),
        "added_tokens_decoder": added,
        "chat_template": tokenizer.chat_template,
        "model_max_length": block_size,
        "clean_up_tokenization_spaces": False,
        "padding_side": "left",  # batched generation pads on the left
    }


def hf_tokenizer_json(chat: ChatTokenizer) -> str:
    """The tokenizer with special-token matching on (HF renders the chat template to text, then
    tokenizes it); ours also gets a post-processor that puts BOS before plain text (our
    documents), where an imported one keeps its own."""
    tokenizer, bos = Tokenizer.from_str(chat.to_str()), chat.tokens.get("bos_token")
    if tokenizer.post_processor is None and chat.bos_id is not None:
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, chat.bos_id)]
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
        write_json(tmp / "config.json", {**llama_config(model, dtype_name), **token_ids(tokenizer)})
        write_json(tmp / "generation_config.json", generation_config(model, tokenizer))
        write_json(
            tmp / "tokenizer_config.json", tokenizer_config(tokenizer, model.config.block_size)
        )
        write_json(tmp / "special_tokens_map.json", special_tokens_map(tokenizer))
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
