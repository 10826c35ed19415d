"""The sample pre-training corpus: stories and articles about one world, sized in megabytes.

>>> docs = list(pretraining_documents(seed=0, split="validation", size_bytes=20_000))
>>> sorted({source for _, source in docs})
['sample_articles', 'sample_stories']
"""

import hashlib
import random
from collections.abc import Iterator

from dataset.sample_world.articles import write_article
from dataset.sample_world.stories import write_story
from dataset.sample_world.world import build_world, random_character

ARTICLE_SHARE = 0.25  # of documents; the rest are stories
WORLD_HERO_SHARE = 0.5  # stories about world characters (their facts kept), the rest made up


def _story(rng: random.Random, seed: int) -> str:
    world = build_world(seed)
    if rng.random() < WORLD_HERO_SHARE:
        hero = rng.choice(world.characters)
        friend = world.character(hero.friend)
    else:
        hero = random_character(rng, names=world.free_boy_names + world.free_girl_names)
        others = tuple(n for n in world.free_boy_names + world.free_girl_names if n != hero.name)
        friend = random_character(rng, names=others)
    return write_story(rng, hero, friend, detail=rng.uniform(0.4, 1.0))


def pretraining_documents(
    seed: int, split: str, size_bytes: int, exclude: set[bytes] | None = None
) -> Iterator[tuple[str, str]]:
    """Yield (text, source) until about `size_bytes` of UTF-8 text.

    exclude: digests of documents already used (by another split); they are skipped and the
    digests of new documents are added, so no document appears twice across splits.
    """
    world = build_world(seed)
    rng = random.Random(f"sample-pretraining-{seed}-{split}")
    seen = exclude if exclude is not None else set()
    written = 0
    while written < size_bytes:
        if rng.random() < ARTICLE_SHARE:
            text, source = write_article(rng, world), "sample_articles"
        else:
            text, source = _story(rng, seed), "sample_stories"
        digest = hashlib.blake2b(text.encode(), digest_size=16).digest()
        if digest in seen:
            continue
        seen.add(digest)
        written += len(text.encode())
        yield text, source
