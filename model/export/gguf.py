r"""Export a checkpoint as a GGUF file for llama.cpp (llama-cli, llama-server, llama-cpp-python),
Ollama and LM Studio, with an Ollama Modelfile beside it.

    python3 -m model.export.gguf --checkpoint checkpoints/<run> --output-dir exports/<run>-gguf \
        [--dtype f32|f16|bf16|q8_0]

Tiny CPU example, after the README's sample pipeline:
    python3 -m model.export.gguf --checkpoint checkpoints/sample_dpo \
        --output-dir exports/sample_dpo-gguf --dtype q8_0
    llama-cli -m exports/sample_dpo-gguf/model.gguf --jinja  # chat in our format
    ollama create sample-dpo -f exports/sample_dpo-gguf/Modelfile

Writes model.gguf and Modelfile (model/export/ollama.py) into --output-dir, atomically. The
file is written with the `gguf` package (llama.cpp's own writer) as architecture `llama`:
- every hyperparameter llama.cpp reads (context, widths, heads and key/value heads, RoPE base
  and dimensions, RMSNorm epsilon, vocabulary size);
- the weights under llama.cpp's names (the gguf package's table from the Llama names of
  model/export/llama_names.py); q_proj and k_proj rows reordered for llama.cpp's RoPE, which
  rotates adjacent channel pairs (2i, 2i+1) where ours, like Hugging Face's, rotates (i, i+D/2);
  the padded vocabulary rows (ids >= the tokenizer's size) dropped, so they can never be
  sampled; a tied LM head left out (llama.cpp then reads the embedding, as we do);
- the tokenizer (model/export/gguf_tokenizer.py), its special ids (ours: bos `<|endoftext|>`,
  eos and end-of-turn `<|end|>`, pad `<|pad|>`; plain text gets BOS in front, as our
  pre-training documents do) and its chat template, so llama.cpp's chat renders its format;
- an imported model's Llama 3 RoPE scaling as llama.cpp's `rope_freqs` tensor.
Norm weights stay float32 in every --dtype, as llama.cpp's converter does; q8_0 is quantised by
the gguf package itself (blocks of 32 values share one scale).
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import torch

from common.atomic import locked_output_directory
from common.errors import ArgumentParser, UserError, run_cli
from model.checkpoint import load_model, resolve_checkpoint
from model.export.gguf_tokenizer import gguf_vocab
from model.export.llama_names import hf_tensors
from model.export.ollama import modelfile
from model.transformer import Transformer, rope_frequencies
from tokenizer.encoding import ChatTokenizer, load_tokenizer

Q = gguf.GGMLQuantizationType
# --dtype -> (type of the weight matrices, llama.cpp's file type for the header)
DTYPES = {
    "f32": (Q.F32, gguf.LlamaFileType.ALL_F32),
    "f16": (Q.F16, gguf.LlamaFileType.MOSTLY_F16),
    "bf16": (Q.BF16, gguf.LlamaFileType.MOSTLY_BF16),
    "q8_0": (Q.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
}
GGUF_FILE = "model.gguf"
MODELFILE = "Modelfile"


def permute_for_llama_cpp(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """q_proj/k_proj rows [n_heads * D, C] from rotate_half's pairing (j, j + D/2) to llama.cpp's
    (2j, 2j + 1), per head (as LlamaModel.permute in llama.cpp's convert_hf_to_gguf.py)."""
    rows, columns = weight.shape
    D = rows // n_heads
    halves = weight.reshape(n_heads, 2, D // 2, columns)  # [head, half, j, C]
    return halves.transpose(1, 2).reshape(rows, columns)  # row 2j+half of each head


def check_llama_cpp_can_run(model: Transformer, dtype: str) -> None:
    """UserError for what llama.cpp would refuse or get wrong (ModelConfig already refuses
    widths that do not split into heads and odd head sizes)."""
    c = model.config
    block, _ = gguf.GGML_QUANT_SIZES[DTYPES[dtype][0]]
    if block > 1 and (c.n_embd % block or c.mlp_hidden % block):
        raise UserError(
            f"--dtype {dtype} stores rows in blocks of {block} values, but this model has "
            f"n_embd={c.n_embd}, mlp_hidden={c.mlp_hidden} (not both multiples of {block}); "
            "export with --dtype f16 instead"
        )


def llama_cpp_tensors(model: Transformer):
    """(llama.cpp name, float32 array) for every weight, in llama.cpp's layout."""
    c = model.config
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, c.n_layer)
    for hf, tensor in hf_tensors(model):
        tensor = tensor.to("cpu", torch.float32)
        if hf.endswith("q_proj.weight"):
            tensor = permute_for_llama_cpp(tensor, c.n_head)
        elif hf.endswith("k_proj.weight"):
            tensor = permute_for_llama_cpp(tensor, c.n_kv_head)
        elif hf in ("model.embed_tokens.weight", "lm_head.weight"):
            tensor = tensor[: c.vocab_size]  # padded rows are not tokens
        name = names.get_name(hf, try_suffixes=(".weight",))
        if name is None:
            raise RuntimeError(f"no llama.cpp name for {hf}")  # a new parameter: add it here
        yield name, tensor.contiguous().numpy()
    if c.rope_scaling:  # llama.cpp divides each frequency by its factor
        scaled = rope_frequencies(c.head_dim, c.rope_theta, c.rope_scaling)
        factors = rope_frequencies(c.head_dim, c.rope_theta) / scaled
        yield gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight", factors.numpy()


def stored(array: np.ndarray, dtype: str) -> tuple[np.ndarray, gguf.GGMLQuantizationType]:
    """The bytes llama.cpp reads for one tensor: norms (1-D) in float32, matrices in --dtype."""
    qtype = Q.F32 if array.ndim == 1 else DTYPES[dtype][0]
    return gguf.quants.quantize(array, qtype), qtype


def add_hyperparameters(writer: gguf.GGUFWriter, model: Transformer, dtype: str) -> None:
    c = model.config
    writer.add_context_length(c.block_size)
    writer.add_embedding_length(c.n_embd)
    writer.add_block_count(c.n_layer)
    writer.add_feed_forward_length(c.mlp_hidden)
    writer.add_head_count(c.n_head)
    writer.add_head_count_kv(c.n_kv_head)
    writer.add_key_length(c.head_dim)
    writer.add_value_length(c.head_dim)
    writer.add_rope_dimension_count(c.head_dim)  # RoPE rotates the whole head
    writer.add_rope_freq_base(c.rope_theta)
    writer.add_layer_norm_rms_eps(c.norm_eps)
    writer.add_vocab_size(c.vocab_size)
    writer.add_file_type(DTYPES[dtype][1])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def add_tokenizer(writer: gguf.GGUFWriter, tokenizer: ChatTokenizer, vocab_size: int) -> str:
    """Write the tokenizer metadata; returns llama.cpp's pre-tokenizer name it chose."""
    tokenizer_path = tokenizer.where
    vocab = gguf_vocab(tokenizer, tokenizer_path)
    if len(vocab.tokens) > vocab_size:
        raise UserError(
            f"{tokenizer_path} has {len(vocab.tokens)} tokens but the model was built for "
            f"{vocab_size}; is it the run's own tokenizer?"
        )
    unused = range(len(vocab.tokens), vocab_size)  # an imported model's rows past its tokenizer
    writer.add_tokenizer_model("gpt2")  # llama.cpp's name for byte-level BPE
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens + [f"[PAD{i}]" for i in unused])
    writer.add_token_types(vocab.token_types + [int(gguf.TokenType.UNUSED)] * len(unused))
    writer.add_token_merges(vocab.merges)
    if tokenizer.bos_id is not None:
        writer.add_bos_token_id(tokenizer.bos_id)
    writer.add_eos_token_id(tokenizer.eos_id)  # ours: a chat reply ends with <|end|>
    writer.add_eot_token_id(tokenizer.stop_ids[0])  # the end of a turn
    writer.add_pad_token_id(tokenizer.pad_id)
    writer.add_add_bos_token(tokenizer.bos_id is not None)  # BOS starts every document
    writer.add_add_eos_token(False)
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)
    return vocab.pre


def export(
    checkpoint: str | Path,
    output_dir: str | Path,
    dtype: str = "f32",
    overwrite: bool = False,
) -> Path:
    """Write model.gguf and Modelfile into `output_dir`; returns the GGUF file's path. Atomic
    (no half-written folder), one export at a time per folder, a full disk is one line."""
    if dtype not in DTYPES:
        raise UserError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    model, _, tokenizer_path = load_model(checkpoint)
    if tokenizer_path is None:
        raise UserError(f"{checkpoint} has no tokenizer.json next to its weights; cannot export")
    check_llama_cpp_can_run(model, dtype)
    name = resolve_checkpoint(checkpoint).parent.name
    with locked_output_directory(output_dir, overwrite, what="export") as tmp:
        writer = gguf.GGUFWriter(tmp / GGUF_FILE, arch="llama")
        writer.add_name(name)
        add_hyperparameters(writer, model, dtype)
        tokenizer = load_tokenizer(tokenizer_path)
        pre = add_tokenizer(writer, tokenizer, model.config.vocab_size)
        for tensor_name, array in llama_cpp_tensors(model):
            data, qtype = stored(array, dtype)
            writer.add_tensor(tensor_name, data, raw_dtype=qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file(progress=True)
        writer.close()
        (tmp / MODELFILE).write_text(modelfile(GGUF_FILE, model.config.block_size, tokenizer))
    if pre == "smaug-bpe":
        print(
            f"note: some tokens of {tokenizer_path} are not what its merges make of their own "
            f"text, so the file names llama.cpp's {pre!r} pre-tokenizer (merges always run) "
            "instead of 'llama-bpe'"
        )
    return Path(output_dir) / GGUF_FILE


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(
        prog="python3 -m model.export.gguf",
        description="Export a checkpoint as a GGUF file (llama.cpp, Ollama) and a Modelfile.",
    )
    parser.add_argument(
        "--checkpoint", required=True, help="run folder (follows `latest`) or step folder"
    )
    parser.add_argument(
        "--output-dir",
        required=True,
        help=f"folder to create, e.g. exports/run-gguf; gets {GGUF_FILE} and {MODELFILE}",
    )
    parser.add_argument(
        "--dtype",
        default="f32",
        choices=list(DTYPES),
        help="weight type: f32 (default) gives our logits; f16 and bf16 are half the size; q8_0 "
        "(8-bit, a scale per 32 values) a quarter, the fastest on a CPU. Norms stay f32",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace --output-dir if it already exists"
    )
    args = parser.parse_args(argv)
    path = export(args.checkpoint, args.output_dir, args.dtype, args.overwrite)
    print(f"wrote {path} and {path.parent / MODELFILE} (llama-cli -m {path} --jinja)")


if __name__ == "__main__":
    run_cli(main)
