"""BPE tokenizer training, tokenizer profiles (special tokens, chat template) and token shards."""
