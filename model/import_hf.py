r"""Import a transformers Llama-family model as one of our checkpoints.

    python3 -m model.import_hf --hf-dir ~/models/SmolLM2-135M --output-dir checkpoints/smollm2
    python3 -m model.import_hf --hf-dir DIR --output-dir checkpoints/NAME --block-size 2048 \
        --chat-template chatml.jinja      # a shorter context; a template for a base model

Takes LlamaForCausalLM (SmolLM2, TinyLlama, Llama 3.x with its `llama3` RoPE scaling) and
MistralForCausalLM without a sliding window, any head counts, tied or not: its safetensors weights
and a fast tokenizer's files (tokenizer.json, tokenizer_config.json, chat_template.jinja) become a
step folder that every command taking a checkpoint takes. Anything else (biases, a sliding window,
another architecture, .bin weights only) is one line naming it, and nothing is written.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open

from common.atomic import locked_output_directory, sha256_file
from common.errors import ArgumentParser, UserError, run_cli
from model.checkpoint import TOKENIZER_FILE, save_model_files
from model.config import LLAMA3_ROPE_KEYS, ModelConfig
from model.export.llama_names import hf_name
from model.transformer import Transformer
from tokenizer.encoding import CONFIG_FILE, TEMPLATE_FILE, ChatTokenizer, load_tokenizer

ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM")
UNSUPPORTED = {  # config key -> the value our Transformer has
    "attention_bias": False,
    "mlp_bias": False,
    "sliding_window": None,
    "hidden_act": "silu",
    "rope_interleaved": False,
}


def model_config(hf: dict, block_size: int | None) -> ModelConfig:
    """Our ModelConfig for a transformers config.json, or a UserError naming what differs."""
    architecture = (hf.get("architectures") or ["?"])[0]
    if architecture not in ARCHITECTURES:
        raise UserError(
            f"architecture {architecture} is not supported: only {' and '.join(ARCHITECTURES)} "
            "map onto our Transformer"
        )
    for key, ours in UNSUPPORTED.items():
        if hf.get(key, ours) not in (ours, None):
            raise UserError(
                f"{architecture} with {key}={hf[key]!r} is not supported (our Transformer has "
                f"{key}={ours!r})"
            )
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}  # transformers >= 5, < 5
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind not in ("default", "llama3"):
        raise UserError(f"RoPE scaling {kind!r} is not supported (only Llama 3's, or none)")
    max_positions = hf["max_position_embeddings"]
    if block_size is not None and not 0 < block_size <= max_positions:
        raise UserError(f"--block-size must be in 1..{max_positions}, the model's context")
    scaling = None
    if kind == "llama3":
        scaling = {"rope_type": "llama3", **{key: rope[key] for key in LLAMA3_ROPE_KEYS}}
    return ModelConfig(
        vocab_size=hf["vocab_size"],
        block_size=block_size or max_positions,
        n_layer=hf["num_hidden_layers"],
        n_head=hf["num_attention_heads"],
        n_kv_head=hf.get("num_key_value_heads") or 0,
        n_embd=hf["hidden_size"],
        mlp_hidden=hf["intermediate_size"],
        head_dim=hf.get("head_dim") or 0,
        rope_theta=float(hf.get("rope_theta") or rope.get("rope_theta") or 10000.0),
        norm_eps=hf.get("rms_norm_eps", 1e-6),
        tie_embeddings=hf.get("tie_word_embeddings", False),
        rope_scaling=scaling,
    )


def weight_files(hf_dir: Path) -> dict[str, Path]:
    """Each tensor name -> the safetensors file that holds it (one file, or an index)."""
    index = hf_dir / "model.safetensors.index.json"
    if index.is_file():
        return {
            name: hf_dir / file
            for name, file in json.loads(index.read_text())["weight_map"].items()
        }
    if (hf_dir / "model.safetensors").is_file():
        with safe_open(hf_dir / "model.safetensors", "pt") as weights:
            return dict.fromkeys(weights.keys(), hf_dir / "model.safetensors")
    if any(hf_dir.glob("*.bin")):
        raise UserError(
            f"{hf_dir} has only pickled .bin weights; save them as safetensors first "
            "(transformers: model.save_pretrained(dir))"
        )
    raise UserError(f"{hf_dir} has no model.safetensors (nor model.safetensors.index.json)")


def load_weights(model: Transformer, files: dict[str, Path]) -> None:
    """Copy every tensor into the model (a padded vocabulary's extra rows are 0)."""
    ours = {hf_name(name): tensor for name, tensor in model.state_dict().items()}
    if model.config.tie_embeddings:  # one matrix, the embedding's
        del ours["lm_head.weight"]
        files.pop("lm_head.weight", None)
    files = {name: file for name, file in files.items() if not name.endswith(".inv_freq")}
    for names, what in ((set(ours) - set(files), "lacks"), (set(files) - set(ours), "has")):
        if names:
            raise UserError(
                f"the checkpoint {what} {sorted(names)[0]} (and {len(names) - 1} more): it does "
                f"not fit our {model.config.n_layer}-layer Llama Transformer (no biases)"
            )
    vocab = ("model.embed_tokens.weight", "lm_head.weight")
    with torch.no_grad():
        for name, tensor in ours.items():
            with safe_open(files[name], "pt") as weights:
                value = weights.get_tensor(name)
            rows = model.config.vocab_size if name in vocab else len(tensor)
            if tensor[:rows].shape != value.shape:
                raise UserError(
                    f"{name} has shape {list(value.shape)}, expected {list(tensor[:rows].shape)}"
                )
            tensor[:rows].copy_(value)
            tensor[rows:].zero_()


def stage_tokenizer(hf_dir: Path, staging: Path, chat_template: str | None) -> ChatTokenizer:
    """Copy the tokenizer files into `staging` and load them (which checks them)."""
    for name in (TOKENIZER_FILE, CONFIG_FILE):
        if not (hf_dir / name).is_file():
            raise UserError(f"{hf_dir} has no {name} (a fast tokenizer's files) to import")
    for name in (TOKENIZER_FILE, CONFIG_FILE, TEMPLATE_FILE):
        if (hf_dir / name).is_file():
            shutil.copyfile(hf_dir / name, staging / name)
    if chat_template is not None:
        if not Path(chat_template).is_file():
            raise UserError(f"--chat-template {chat_template} not found")
        shutil.copyfile(chat_template, staging / TEMPLATE_FILE)
    return load_tokenizer(staging / TOKENIZER_FILE)


def import_model(
    hf_dir: Path,
    output_dir: Path,
    block_size: int | None = None,
    chat_template: str | None = None,
    overwrite=False,
) -> ChatTokenizer:
    """Check everything, then write the checkpoint folder atomically; returns its tokenizer."""
    if not (hf_dir / "config.json").is_file():
        raise UserError(f"{hf_dir} has no config.json: not a transformers model folder")
    hf = json.loads((hf_dir / "config.json").read_text())
    try:
        config = model_config(hf, block_size)
    except KeyError as key:
        raise UserError(f"{hf_dir / 'config.json'} has no {key} entry") from None
    files = weight_files(hf_dir)
    with tempfile.TemporaryDirectory() as staging:
        tokenizer = stage_tokenizer(hf_dir, Path(staging), chat_template)
        if tokenizer.get_vocab_size() > config.vocab_size:
            raise UserError(
                f"{hf_dir / TOKENIZER_FILE} has {tokenizer.get_vocab_size()} tokens, "
                f"more than the model's {config.vocab_size}"
            )
        model = Transformer(config)
        load_weights(model, files)
        tokenizer_path = Path(staging) / TOKENIZER_FILE
        summary = {
            "imported_from": {"hf_dir": str(hf_dir), "architecture": hf["architectures"][0]},
            "tokenizer": {"sha256": sha256_file(tokenizer_path)},
        }
        with locked_output_directory(output_dir, overwrite, what="import") as tmp:
            save_model_files(model, tmp, summary, tokenizer_path)
    return tokenizer


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(
        prog="python3 -m model.import_hf",
        description="Import a transformers LlamaForCausalLM / MistralForCausalLM folder.",
    )
    parser.add_argument(
        "--hf-dir",
        required=True,
        help="the model's folder (config.json, safetensors weights, tokenizer.json, "
        "tokenizer_config.json)",
    )
    parser.add_argument(
        "--output-dir", required=True, help="checkpoint folder to create, e.g. checkpoints/smollm2"
    )
    parser.add_argument(
        "--block-size",
        type=int,
        help="the context our model keeps (RoPE tables, KV cache); default: its "
        "max_position_embeddings",
    )
    parser.add_argument(
        "--chat-template",
        help="a Jinja chat template file, for a model without one (or to replace its own)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace --output-dir")
    args = parser.parse_args(argv)
    hf_dir, output_dir = Path(args.hf_dir), Path(args.output_dir)
    tokenizer = import_model(
        hf_dir, output_dir, args.block_size, args.chat_template, args.overwrite
    )
    print(f"wrote {args.output_dir}")
    if tokenizer.chat_template is None:
        print(
            f"note: {args.hf_dir} has no chat template: continued pre-training and "
            "evaluation work; SFT, DPO and chat need one (--chat-template FILE)"
        )


if __name__ == "__main__":
    run_cli(main)
