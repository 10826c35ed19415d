"""The sample pre-training corpus: TinyStories-like stories and WikiText-like articles about one
world, sized in bytes.

A story is an opening (hero, animal, place) and one plot of world.yaml: its core beats, each
extra beat with the chance `detail`; SFT answers and DPO pairs use the same `write_story`.
Articles (`= Title =`, paragraphs, `= = Section = =`) state each character's facts in the words
the SFT answers and the multiple-choice test use ("Max lives in the forest.").

>>> sorted({source for _, source in pretraining_documents(0, "validation", 20_000)})
['sample_articles', 'sample_stories']
"""

import hashlib
import random
from collections.abc import Iterator

from dataset.sample_world.check import count_sentences
from dataset.sample_world.world import (
    ANIMAL_ADJECTIVES,
    ANIMALS,
    ENDING_FEELINGS,
    PLACES,
    WORDS,
    Character,
    Place,
    World,
    at,
    build_world,
    pronouns,
    random_character,
    with_article,
)

ARTICLE_SHARE = 0.25  # of documents; the rest are stories
WORLD_HERO_SHARE = 0.5  # stories about world characters (their facts kept), the rest made up
MAX_SENTENCES = 10


def story_slots(rng: random.Random, hero: Character, friend: Character, place2: Place) -> dict:
    """Every slot a story template may use (world.yaml names them)."""
    place = hero.home
    feature, feature2 = rng.sample(place.features, 2)
    adjective = rng.choice(place.adjectives)
    return hero.slots | {
        "friend": friend.name,
        **pronouns(friend.gender, prefix="f"),
        "adj_animal": with_article(f"{rng.choice(ANIMAL_ADJECTIVES)} {hero.animal.word}"),
        "fanimal": friend.animal.word,
        "a_fanimal": with_article(friend.animal.word),
        "fmove": friend.animal.move,
        "At_a_place": f"{place.preposition} {with_article(adjective)} {place.word}".capitalize(),
        "feature": feature,
        "feature2": feature2,
        "place2": place2.word,
        "feature3": rng.choice(place2.features),
        "time": rng.choice(WORDS["times"]),
    }


def write_story(
    rng: random.Random,
    hero: Character,
    friend: Character,
    *,
    feeling=None,
    require_object=False,
    detail=0.6,
    max_sentences=MAX_SENTENCES,
) -> str:
    """One story about `hero` (and `friend`), every choice drawn from `rng`: it ends saying the
    hero felt `feeling`, shows the hero's object if `require_object`, has each optional beat with
    the chance `detail`, and drops optional beats from the end to fit `max_sentences`."""
    slots = story_slots(rng, hero, friend, rng.choice([p for p in PLACES if p != hero.home]))
    parts = [(rng.choice(WORDS["openings"]), True)]  # (template, core)
    if require_object:
        parts.append((rng.choice(WORDS["object_intros"]), True))
    for extra in WORDS["intro_extras"]:
        if rng.random() < detail * 0.3:
            parts.append((rng.choice(extra), False))
    for beat in rng.choice(WORDS["plots"]):
        ((kind, alternatives),) = beat.items()
        if kind == "core" or rng.random() < detail:
            parts.append((rng.choice(alternatives), kind == "core"))
    if feeling is not None:
        parts.append((rng.choice(WORDS["feeling_endings"]), True))
    elif rng.random() < detail * 0.3:
        feeling = rng.choice(ENDING_FEELINGS)
        parts.append((rng.choice(WORDS["feeling_endings"]), False))
    if rng.random() < detail * 0.3:
        parts.append((rng.choice(WORDS["closings"]), False))
    sentences = [template.format(**slots, feeling=feeling) for template, _ in parts]
    while count_sentences(" ".join(sentences)) > max_sentences:  # drop optional beats from the end
        optional = [index for index, (_, core) in enumerate(parts) if not core]
        if not optional:
            break
        del parts[optional[-1]], sentences[optional[-1]]
    return " ".join(sentences)


def fact_slots(world: World, hero: Character) -> dict[str, str]:
    """The slots of the article templates: a world character's facts."""
    friend = world.character(hero.friend)
    return hero.slots | {
        "a_color_animal": with_article(f"{hero.color} {hero.animal.word}"),
        "feature": hero.home.features[0],
        "friend": friend.name,
        "a_fanimal": with_article(friend.animal.word),
        "fat_place": at(friend.home),
    }


def character_article(rng: random.Random, world: World, hero: Character) -> str:
    lines = [f"= {hero.name} the {hero.animal.word.capitalize()} =", rng.choice(WORDS["leads"])]
    sections = list(WORDS["sections"])
    rng.shuffle(sections)
    for section in sections[: rng.randint(2, len(sections))]:
        lines += [f"= = {section} = =", rng.choice(WORDS["sections"][section])]
    if rng.random() < 0.5:
        lines += ["= = In stories = =", rng.choice(WORDS["story_summaries"])]
    return "\n".join(line.format(**fact_slots(world, hero)) for line in lines)


def place_article(rng: random.Random, world: World, place: Place) -> str:
    features = list(place.features)
    rng.shuffle(features)
    lines = [
        f"= The {place.word.capitalize()} =",
        f"The {place.word} is {with_article(rng.choice(place.adjectives))} place. Visitors to "
        f"the {place.word} can see {features[0]}, {features[1]} and {features[2]}.",
    ]
    residents = [
        f"{c.name} is {with_article(c.animal.word)} who lives {at(place)}."
        for c in world.characters
        if c.home == place
    ]
    if residents:
        rng.shuffle(residents)
        lines += ["= = Residents = =", " ".join(residents)]
    lines += ["= = Features = =", f"The best known sight {at(place)} is {features[3]}."]
    return "\n".join(lines)


def animal_article(rng: random.Random, world: World, animal) -> str:
    known = [c.name for c in world.characters if c.animal == animal]
    a_animal = with_article(animal.word)
    lines = [
        f"= {animal.word.capitalize()} =",
        f"The {animal.word} is an animal with {animal.body}. "
        f"When it is happy, {a_animal} {animal.call}.",
    ]
    if known:
        rng.shuffle(known)
        lines += ["= = Known characters = =", " ".join(f"{n} is {a_animal}." for n in known)]
    return "\n".join(lines)


def write_article(rng: random.Random, world: World) -> str:
    """A random article: mostly about a character, sometimes about a place or an animal."""
    roll = rng.random()
    if roll < 0.7:
        return character_article(rng, world, rng.choice(world.characters))
    if roll < 0.85:
        return place_article(rng, world, rng.choice(PLACES))
    return animal_article(rng, world, rng.choice(ANIMALS))


def _story(rng: random.Random, world: World) -> str:
    if rng.random() < WORLD_HERO_SHARE:
        hero = rng.choice(world.characters)
        friend = world.character(hero.friend)
    else:
        hero = random_character(rng, names=world.free_names)
        friend = random_character(rng, names=tuple(n for n in world.free_names if n != hero.name))
    return write_story(rng, hero, friend, detail=rng.uniform(0.4, 1.0))


def pretraining_documents(
    seed: int, split: str, size_bytes: int, exclude: set[bytes] | None = None
) -> Iterator[tuple[str, str]]:
    """Yield (text, source) until about `size_bytes` of UTF-8 text, skipping documents whose
    digests are in `exclude` and adding new ones: no document is in two splits."""
    world = build_world(seed)
    rng = random.Random(f"sample-pretraining-{seed}-{split}")
    seen = exclude if exclude is not None else set()
    written = 0
    while written < size_bytes:
        if rng.random() < ARTICLE_SHARE:
            text, source = write_article(rng, world), "sample_articles"
        else:
            text, source = _story(rng, world), "sample_stories"
        digest = hashlib.blake2b(text.encode(), digest_size=16).digest()
        if digest not in seen:
            seen.add(digest)
            written += len(text.encode())
            yield text, source
