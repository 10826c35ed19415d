"""Word lists of the sample world.

The categories never share a word (no character is called "Honey" while honey is a food), so the
checker in `check.py` can tell from a single word whether an answer used the right name, animal,
place, object, food, hobby or feeling.
"""

from dataclasses import dataclass


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


BOY_NAMES = _words(
    "Max Tom Ben Sam Leo Jack Finn Oscar Milo Toby Jake Ollie Teddy Charlie Benny Felix Jasper "
    "Hugo Rex Buddy Otto Gus Bruno Pip Timmy Billy Danny Eddie Freddie Harry Henry Jimmy Joey "
    "Kevin Larry Louie Marco Ned Noah Pete Ralph Ricky Rudy Simon Theo Vinny Walter Zack Arlo "
    "Barney Casper Dexter Elliot Frankie George Iggy Kip Monty Nico Percy Quinn Rocco Sonny Tucker"
)
GIRL_NAMES = _words(
    "Lily Mia Sara Anna Zoe Emma Lucy Ruby Rosa Nora Ella Molly Rosie Kitty Luna Coco Hazel Clara "
    "Nina Amy Bella Cleo Dolly Elsie Fiona Gracie Hannah Iris Jenny Katie Lola Maisie Nellie "
    "Sophie Tilly Wendy Abby Bonnie Greta Josie Lottie Millie Pixie Sadie Trixie Penny Gemma "
    "Hattie Ivy Kate Mabel Nancy Polly Susie Tessa Una Vera Winnie Yara Zara Dora Edna"
)


@dataclass(frozen=True)
class Animal:
    word: str
    sound: str  # past tense: "barked"
    call: str  # present tense: "barks"
    move: str  # past tense: "ran"
    body: str  # what covers it: "fur", "feathers", "scales"


ANIMALS = (
    Animal("dog", "barked", "barks", "ran", "fur"),
    Animal("cat", "meowed", "meows", "tiptoed", "fur"),
    Animal("rabbit", "squeaked", "squeaks", "hopped", "fur"),
    Animal("fox", "yipped", "yips", "trotted", "fur"),
    Animal("bear", "growled", "growls", "walked", "fur"),
    Animal("owl", "hooted", "hoots", "flew", "feathers"),
    Animal("duck", "quacked", "quacks", "waddled", "feathers"),
    Animal("frog", "croaked", "croaks", "hopped", "skin"),
    Animal("mouse", "squeaked", "squeaks", "scurried", "fur"),
    Animal("pig", "oinked", "oinks", "trotted", "skin"),
    Animal("cow", "mooed", "moos", "walked", "fur"),
    Animal("horse", "neighed", "neighs", "galloped", "fur"),
    Animal("sheep", "baaed", "baas", "trotted", "wool"),
    Animal("goat", "bleated", "bleats", "skipped", "fur"),
    Animal("lion", "roared", "roars", "ran", "fur"),
    Animal("tiger", "roared", "roars", "ran", "fur"),
    Animal("elephant", "trumpeted", "trumpets", "stomped", "skin"),
    Animal("monkey", "chattered", "chatters", "swung", "fur"),
    Animal("turtle", "sighed", "sighs", "crawled", "scales"),
    Animal("squirrel", "chattered", "chatters", "scampered", "fur"),
    Animal("hedgehog", "sniffed", "sniffs", "shuffled", "spines"),
    Animal("penguin", "squawked", "squawks", "waddled", "feathers"),
    Animal("bird", "chirped", "chirps", "flew", "feathers"),
    Animal("puppy", "yapped", "yaps", "ran", "fur"),
)


@dataclass(frozen=True)
class Place:
    word: str
    preposition: str  # "in" -> "lives in the forest"
    adjectives: tuple[str, ...]
    features: tuple[str, ...]  # things one finds there, with an article


PLACES = (
    Place(
        "forest",
        "in",
        ("big", "green", "quiet", "dark"),
        ("tall trees", "an old oak tree", "soft moss", "a hollow log"),
    ),
    Place(
        "meadow",
        "in",
        ("sunny", "wide", "green", "quiet"),
        ("tall grass", "yellow flowers", "buzzing bees", "a little stream"),
    ),
    Place(
        "village",
        "in",
        ("small", "busy", "friendly", "old"),
        ("little houses", "a bakery", "a stone well", "a market"),
    ),
    Place(
        "farm",
        "on",
        ("big", "busy", "old", "sunny"),
        ("a red barn", "a haystack", "a muddy pen", "an old tractor"),
    ),
    Place(
        "garden",
        "in",
        ("pretty", "small", "green", "secret"),
        ("red roses", "a vegetable patch", "a sundial", "a wooden gate"),
    ),
    Place(
        "park",
        "in",
        ("big", "sunny", "busy", "green"),
        ("swings", "a tall slide", "a wooden bench", "a sandbox"),
    ),
    Place(
        "beach",
        "near",
        ("sunny", "windy", "long", "quiet"),
        ("warm sand", "big waves", "tiny crabs", "a sand castle"),
    ),
    Place(
        "river",
        "by",
        ("wide", "fast", "blue", "quiet"),
        ("smooth stones", "a little bridge", "tall reeds", "a wooden dock"),
    ),
    Place(
        "lake",
        "by",
        ("calm", "blue", "deep", "still"),
        ("a wooden pier", "water lilies", "a sandy shore", "a tall tree"),
    ),
    Place(
        "mountain",
        "on",
        ("tall", "snowy", "rocky", "steep"),
        ("huge boulders", "white snow", "a narrow path", "a cold wind"),
    ),
    Place(
        "hill",
        "on",
        ("green", "round", "windy", "little"),
        ("soft grass", "a windmill", "a lonely tree", "a winding path"),
    ),
    Place(
        "pond",
        "near",
        ("little", "muddy", "quiet", "green"),
        ("green water lilies", "tall reeds", "buzzing dragonflies", "a flat stone"),
    ),
    Place(
        "cave",
        "in",
        ("dark", "cool", "deep", "quiet"),
        ("shiny crystals", "dripping water", "a narrow tunnel", "soft sand"),
    ),
    Place(
        "town",
        "in",
        ("busy", "small", "noisy", "bright"),
        ("a toy shop", "a clock tower", "a fountain", "a library"),
    ),
    Place(
        "island",
        "on",
        ("small", "sunny", "far", "green"),
        ("palm trees", "white sand", "a tall lighthouse", "coconuts"),
    ),
    Place(
        "valley",
        "in",
        ("green", "deep", "peaceful", "wide"),
        ("a winding stream", "green slopes", "fruit trees", "an old mill"),
    ),
    Place(
        "jungle",
        "in",
        ("hot", "green", "thick", "noisy"),
        ("long vines", "giant leaves", "bright parrots", "a waterfall"),
    ),
    Place(
        "desert",
        "in",
        ("hot", "dry", "sandy", "wide"),
        ("tall cactus plants", "sand dunes", "a small oasis", "red cliffs"),
    ),
    Place(
        "orchard",
        "in",
        ("sunny", "quiet", "old", "sweet"),
        ("apple trees", "pear trees", "a ladder", "wooden crates"),
    ),
    Place(
        "swamp",
        "in",
        ("misty", "muddy", "quiet", "green"),
        ("old logs", "tall grass", "croaking sounds", "a wooden raft"),
    ),
)

OBJECTS = _words(
    "ball kite hat book drum box boat key cup bell shell stick blanket map lamp basket bucket "
    "scarf rock feather coin ribbon wagon sock spoon whistle umbrella balloon crayon marble"
)
OBJECT_ADJECTIVES = _words(
    "red blue green yellow shiny little big soft old new pink purple striped golden"
)
FOODS = _words(
    "honey carrots berries nuts cheese corn fish seeds pears grapes bananas cookies soup bread "
    "plums oats"
)
HOBBIES = _words(
    "singing dancing painting reading swimming climbing digging building drawing jumping baking "
    "gardening whistling skating"
)
TRAITS = _words("kind shy clever funny gentle curious cheerful quiet silly helpful busy polite")
COLORS = _words("brown white gray black orange golden spotted")
ANIMAL_ADJECTIVES = _words("little small young happy fluffy kind curious tiny")

# Feelings a story is asked to end with; the plots themselves never use these words, so a
# story that misses the requested feeling is checkably wrong.
ENDING_FEELINGS = _words("proud excited calm surprised thankful sleepy brave cozy")

TIMES = (
    "One sunny morning",
    "One rainy day",
    "One cold winter day",
    "Early one morning",
    "One windy afternoon",
    "One warm summer day",
    "One day",
    "One evening",
    "One bright spring morning",
)


def with_article(word: str) -> str:
    """'owl' -> 'an owl'; 'red ball' -> 'a red ball'."""
    return ("an " if word[0] in "aeiou" else "a ") + word


ANIMALS_BY_WORD = {animal.word: animal for animal in ANIMALS}
PLACES_BY_WORD = {place.word: place for place in PLACES}
ALL_NAMES = BOY_NAMES + GIRL_NAMES
