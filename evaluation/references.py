"""Published zero-shot scores of small reference models, each with where it was published.

Only figures found in a public source are here; a task or metric without one stays empty in the
table. They were measured with older lm-eval versions than ours (0.4.13), whose definitions of
these tasks are the same (README, "Evaluate").

SmolLM-135M has no entry: its blog post (huggingface.co/blog/smollm) publishes its benchmark
table as an image, measured with lighteval's own prompts, and no text source with
lm-eval figures for it was found.
"""

SOURCES = {
    "GPT-2 124M": (
        'HellaSwag: the docstring of karpathy/llm.c dev/data/hellaswag.py ("eleuther harness '
        'reports acc 28.92%, acc_norm 31.14%"); LAMBADA: lm-evaluation-harness run of '
        "openai-community/gpt2 in the release notes of github.com/workofart/ml-by-hand "
        "(GPT-2 124M OpenWebText baseline)"
    ),
    "Pythia-160M": (
        "github.com/EleutherAI/pythia, evals/pythia-v1/pythia-160m/zero-shot/"
        "160m_step143000.json (lm-eval, EleutherAI/pythia-v1.1-160m at its final step)"
    ),
    "SmolLM-135M": "none found as text (the SmolLM blog post's table is an image, lighteval)",
}

# model -> task -> metric -> value (accuracies as fractions, perplexity as is)
REFERENCE_SCORES: dict[str, dict[str, dict[str, float]]] = {
    "GPT-2 124M": {
        "hellaswag": {"acc": 0.2892, "acc_norm": 0.3114},
        "lambada_openai": {"acc": 0.3256, "perplexity": 40.0554},
    },
    "Pythia-160M": {
        "arc_easy": {"acc": 0.4352, "acc_norm": 0.3965},
        "arc_challenge": {"acc": 0.1877, "acc_norm": 0.2329},
        "piqa": {"acc": 0.6273, "acc_norm": 0.6164},
        "winogrande": {"acc": 0.5312},
        "lambada_openai": {"acc": 0.3284, "perplexity": 38.0649},
    },
    "SmolLM-135M": {},
}
