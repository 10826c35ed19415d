"""BPE tokenizer training, the special tokens and chat format, and token shards."""
