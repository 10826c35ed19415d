"""The sample world: deterministic, self-consistent, and checkable by `check.satisfies`."""

import json
import random
import re

import pytest

from dataset.sample_world import tasks
from dataset.sample_world import world as vocab
from dataset.sample_world.check import count_sentences, mentions, satisfies, violations
from dataset.sample_world.corpus import (
    character_article,
    pretraining_documents,
    story_slots,
    write_article,
    write_story,
)
from dataset.sample_world.tasks import dpo_rows, sft_rows
from dataset.sample_world.world import WORDS, build_world

CHECKED_WORDS = {
    "name": vocab.BOY_NAMES + vocab.GIRL_NAMES,
    "animal": [animal.word for animal in vocab.ANIMALS],
    "place": [place.word for place in vocab.PLACES],
    "object": vocab.OBJECTS,
    "food": vocab.FOODS,
    "hobby": vocab.HOBBIES,
    "feeling": vocab.ENDING_FEELINGS,
}


# ---------------------------------------------------------------- the checker


def test_mentions_matches_whole_words_in_any_case_and_plural():
    assert mentions("Dogs ran.", "dog") and mentions("the DOG", "dog")
    assert mentions("two foxes", "fox")
    assert not mentions("a hotdog", "dog")  # not inside another word
    assert not mentions("a monkey", "key")
    assert not mentions("that hat", "that hat is")


def test_count_sentences_counts_dialogue_as_one_sentence():
    assert count_sentences("Max ran. He fell!") == 2
    assert count_sentences('"Can you help me?" asked Max. "Yes," said Lily.') == 2
    assert count_sentences("no final stop") == 1
    assert count_sentences("   ") == 0


def test_satisfies_checks_include_exclude_and_length():
    constraints = json.dumps({"include": ["Max", "dog"], "exclude": ["cat"], "max_sentences": 2})
    assert satisfies(constraints, "Max was a dog. He ran.")
    assert not satisfies(constraints, "Max was a puppy. He ran.")  # missing dog
    assert not satisfies(constraints, "Max the dog met a cat.")  # excluded word
    assert not satisfies(constraints, "Max was a dog. He ran. He sat.")  # too long
    assert not satisfies(json.dumps({}), "  ")  # an empty answer never passes
    assert violations(constraints, "Max the cat.") == ["missing 'dog'", "mentions 'cat'"]


def test_unknown_constraint_key_is_an_error_not_a_pass():
    with pytest.raises(ValueError, match="unknown constraint keys"):
        satisfies(json.dumps({"inclde": ["Max"]}), "Max")


# ---------------------------------------------------------------- the world's words


def test_word_categories_never_share_a_word():
    """A shared word would let a wrong answer pass (e.g. a name that is also a food)."""
    for category, words in CHECKED_WORDS.items():
        for other, other_words in CHECKED_WORDS.items():
            if category < other:
                shared = {w for w in words for o in other_words if mentions(o, w)}
                assert not shared, f"{category} and {other} share {shared}"


def test_templates_name_world_words_only_through_slots():
    """A literal animal/place/object in a template would break the checker's view of a story."""
    templates = all_story_templates()
    templates += [feature for place in vocab.PLACES for feature in place.features]
    templates += WORDS["leads"] + WORDS["story_summaries"]
    templates += [t for group in WORDS["sections"].values() for t in group]
    for requests in ("story_requests", "object_requests", "feeling_requests", "length_requests"):
        templates += WORDS[requests]
    templates += [t for group in tasks.QUESTIONS.values() for t in group]
    templates += list(tasks.ANSWERS.values())
    for template in templates:
        literal = re.sub(r"\{\w+\}", " ", template)
        for category, words in CHECKED_WORDS.items():
            found = [word for word in words if mentions(literal, word)]
            assert not found, f"{template!r} names the {category} {found}"


def all_story_templates() -> list[str]:
    templates = WORDS["openings"] + WORDS["object_intros"] + WORDS["feeling_endings"]
    templates += WORDS["closings"] + [t for group in WORDS["intro_extras"] for t in group]
    return templates + [t for plot in WORDS["plots"] for beat in plot for t in [*beat.values()][0]]


def test_every_template_slot_exists():
    world = build_world(0)
    hero = world.characters[0]
    slots = story_slots(random.Random(0), hero, world.character(hero.friend), vocab.PLACES[0])
    for template in all_story_templates():
        filled = template.format(**slots, feeling="calm")  # KeyError names a missing slot
        assert "{" not in filled


# ---------------------------------------------------------------- world, stories, articles


def test_world_is_deterministic_and_friendship_is_mutual():
    world = build_world(3)
    assert [c.name for c in world.characters] == [
        c.name for c in build_world.__wrapped__(3).characters
    ]
    assert [c.name for c in build_world(4).characters] != [c.name for c in world.characters]
    for character in world.characters:
        assert world.character(character.friend).friend == character.name
    assert not set(world.names) & set(world.free_boy_names + world.free_girl_names)


def test_stories_name_hero_animal_and_place_in_3_to_10_sentences():
    world = build_world(0)
    rng = random.Random(1)
    for _ in range(300):
        hero = rng.choice(world.characters)
        story = write_story(rng, hero, world.character(hero.friend), detail=rng.random())
        assert 3 <= count_sentences(story) <= 10, story
        for word in (hero.name, hero.animal.word, hero.home.word):
            assert mentions(story, word), (word, story)
        assert "{" not in story and "}" not in story


def test_articles_have_wikitext_headings_and_state_the_facts():
    world = build_world(0)
    rng = random.Random(2)
    for article in [write_article(rng, world) for _ in range(200)]:
        title, *lines = article.split("\n")
        assert re.fullmatch(r"= [^=].*[^=] =", title), title
        assert lines and all(line.strip() for line in lines)
        headings = [line for line in lines if line.startswith("=")]
        assert all(re.fullmatch(r"= = [^=]+ = =", line) for line in headings), headings
        assert len(headings) < len(lines)  # text under the headings
    # Each character's facts appear in the exact words of the SFT answers.
    for character in world.characters:
        text = "\n".join(character_article(rng, world, character) for _ in range(20))
        for kind in ("home", "friend"):
            answer = tasks.question_answer(world, tasks.QuestionSpec(character, kind))
            assert answer.rstrip(".") in text, answer


def test_pretraining_corpus_is_sized_deterministic_and_split_disjoint():
    seen: set[bytes] = set()
    train = list(pretraining_documents(0, "train", 200_000, seen))
    validation = list(pretraining_documents(0, "validation", 20_000, seen))
    assert 200_000 <= sum(len(t.encode()) for t, _ in train) < 202_000
    assert train == list(pretraining_documents(0, "train", 200_000))
    assert not {t for t, _ in train} & {t for t, _ in validation}
    assert {s for _, s in train} == {"sample_stories", "sample_articles"}


# ---------------------------------------------------------------- SFT and DPO rows


def test_sft_answers_meet_their_constraints_and_generation_is_deterministic():
    rows = sft_rows(seed=0, split="train", count=400)
    assert rows == sft_rows(seed=0, split="train", count=400)
    assert rows != sft_rows(seed=1, split="train", count=400)
    kinds = {json.loads(row["constraints"])["task"] for row in rows}
    assert kinds == {"story", "qa"}
    for row in rows:
        user, assistant = row["messages"]
        assert (user["role"], assistant["role"]) == ("user", "assistant")
        assert satisfies(row["constraints"], assistant["content"])
        assert len(assistant["content"]) < 700  # a few sentences: fits a 256-token context


def test_story_requests_name_what_the_constraints_check():
    for row in sft_rows(seed=0, split="validation", count=100):
        constraints = json.loads(row["constraints"])
        prompt = row["messages"][0]["content"]
        for word in constraints["include"][:3]:
            assert mentions(prompt, word) or constraints["task"] == "qa", (word, prompt)


def test_dpo_chosen_satisfies_and_rejected_does_not():
    rows, kinds = dpo_rows(seed=0, split="train", count=300)
    assert (rows, kinds) == dpo_rows(seed=0, split="train", count=300)
    assert set(kinds) == {"wrong_name", "wrong_place", "other_request", "too_long"}
    for row in rows:
        chosen, rejected = row["chosen"][0]["content"], row["rejected"][0]["content"]
        assert satisfies(row["constraints"], chosen)
        assert not satisfies(row["constraints"], rejected)
        assert row["prompt"][0]["role"] == "user" and row["chosen"][0]["role"] == "assistant"


def test_held_out_instructions_use_combinations_train_never_shows():
    world = build_world(0)

    def keys(split: str) -> set[str]:
        rng = random.Random(split)
        return {tasks.draw_story_spec(rng, world, split).key for _ in range(300)}

    train, test = keys("train"), keys("test")
    assert test and not train & test
    question_keys = {
        tasks.QuestionSpec(character, kind).key
        for character in world.characters
        for kind in tasks.QUESTIONS
    }
    held_out = {key for key in question_keys if tasks.split_of(0, key) == "test"}
    assert held_out and all(tasks.split_of(0, key) != "train" for key in held_out)


def test_question_answers_name_only_the_true_fact():
    world = build_world(0)
    for character in world.characters[:5]:
        for kind in tasks.QUESTIONS:
            spec = tasks.QuestionSpec(character, kind)
            constraints = json.dumps(tasks.question_constraints(world, spec))
            assert satisfies(constraints, tasks.question_answer(world, spec))
            hedge = (
                tasks.question_answer(world, spec)
                + " "
                + " ".join(json.loads(constraints)["exclude"][:1])
            )
            assert not satisfies(constraints, hedge)  # listing other options is wrong
