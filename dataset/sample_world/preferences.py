"""Sample DPO pairs: the chosen answer meets the instruction, the rejected one breaks it.

Every pair is a story request. The rejected answer is the same story (same random stream) with
one thing wrong that the prompt itself shows to be wrong:
- wrong_name / wrong_place: the hero's name or home swapped for another;
- other_request: a story written for another request (another name, animal and home);
- too_long: more sentences than the request allows.
So `satisfies(constraints, chosen)` is True and `satisfies(constraints, rejected)` is False for
every pair, and the two answers differ in little else.

Left out on purpose, after measuring (benchmarks/README.md, DPO on the sample pairs): a wrong
fact in an answer to a question, and a wrong animal, object or ending feeling. A model can only
prefer the true fact of a held-out question if it knows it, which preference pairs do not teach,
and the small SFT model seldom copies the animal, object or feeling from the prompt at all. With
those pairs in, held-out reward accuracy stayed at chance.
"""

import random
from collections import Counter

from dataset.sample_world.check import satisfies
from dataset.sample_world.tasks import draw_task
from dataset.sample_world.world import build_world

VIOLATIONS = ("wrong_name", "wrong_place", "other_request", "too_long")


def dpo_rows(seed: int, split: str, count: int) -> tuple[list[dict], Counter]:
    """`count` pairs for `split`, and how many pairs use each kind of violation."""
    world = build_world(seed)
    rng = random.Random(f"sample-dpo-{seed}-{split}")
    rows, kinds = [], Counter()
    while len(rows) < count:
        task = draw_task(rng, world, split, question_share=0.0)
        if not satisfies(task.constraints, task.answer):
            continue
        makers = [(kind, make) for kind, make in task.violations if kind in VIOLATIONS]
        rng.shuffle(makers)
        # The first violation the checker really rejects (a random friend could, say, happen to
        # carry the requested name and so save a "wrong name" answer).
        broken = ((kind, make()) for kind, make in makers)
        kind, rejected = next(
            ((kind, text) for kind, text in broken if not satisfies(task.constraints, text)),
            (None, None),
        )
        if rejected is None:
            continue
        kinds[kind] += 1
        rows.append(
            {
                "prompt": [{"role": "user", "content": task.prompt}],
                "chosen": [{"role": "assistant", "content": task.answer}],
                "rejected": [{"role": "assistant", "content": rejected}],
                "constraints": task.constraints,
            }
        )
    return rows, kinds
