"""Story plots of the sample world: beats with alternative phrasings.

A plot is a list of beats; each beat lists alternative phrasings (one is drawn). Core beats
alone already tell the whole small story (so a short story can drop the others); extra beats
add detail. Templates name world words only through slots ({animal}, {place}, {obj}, ...), never
literally, so the checker can tell which animal, place or object a story is about.

Slots: name He he His his him self (the hero), friend fHe fhe fhis fhim (the friend), animal
a_animal adj_animal fanimal a_fanimal sound move fmove body color trait hobby food object obj
a_obj place at_place At_a_place feature feature2 place2 feature3 time.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Beat:
    alternatives: tuple[str, ...]
    core: bool


def core(*alternatives: str) -> Beat:
    return Beat(alternatives, core=True)


def extra(*alternatives: str) -> Beat:
    return Beat(alternatives, core=False)


# Every opening names the hero, the animal and the place in one sentence.
OPENINGS = (
    "Once upon a time, there was {adj_animal} named {name} who lived {at_place}.",
    "{name} was {adj_animal} who lived {at_place}.",
    "There once was {a_animal} called {name}, and {he} lived {at_place}.",
    "{At_a_place}, there lived {a_animal} named {name}.",
    "{name} the {animal} lived {at_place}.",
    "Once upon a time, {at_place}, there lived {adj_animal} named {name}.",
)

INTRO_EXTRAS = (
    ("{He} was very {trait}.", "Everyone knew that {name} was {trait}."),
    ("{He} had {color} {body}.", "{name} had {color} {body}."),
    ("{name} loved {hobby}.", "{His} favorite thing to do was {hobby}."),
    ("{name} liked to eat {food}.", "{His} favorite food was {food}."),
)

OBJECT_INTROS = (
    "{He} had {a_obj} that {he} loved very much.",
    "{name}'s favorite toy was {a_obj}.",
    "{name} always carried {a_obj} with {him}.",
    "{name} had {a_obj}, and {he} took it everywhere.",
)

FEELING_ENDINGS = (
    "{name} felt {feeling}.",
    "At the end of the day, {name} felt very {feeling}.",
    "{name} went to bed feeling {feeling}.",
    "That night, {name} felt {feeling} and smiled.",
)

CLOSINGS = (
    "It was a wonderful day.",
    "And that was the best day ever.",
    "{name} would never forget that day.",
    "The end.",
    "From then on, {name} and {friend} were always together.",
)

PLOTS = (
    (  # a lost toy
        core(
            "{time}, {name} could not find {his} {obj}.",
            "{time}, {name} lost {his} {obj}.",
            "{time}, {name} looked for {his} {obj}, but it was gone.",
        ),
        extra(
            "{He} looked near {feature} and behind {feature2}.",
            "{He} looked everywhere, but {he} could not see it.",
        ),
        extra("{name} felt sad and sat down.", "A little tear rolled down {his} face."),
        extra(
            'Then {friend} the {fanimal} came by. "What is wrong?" asked {friend}.',
            "Just then, {friend} the {fanimal} {fmove} over to help {him}.",
        ),
        core(
            "At last, {name} found the {obj} near {feature}.",
            "Soon {name} saw the {obj} next to {feature2}.",
            "Finally, {name} found the {obj} under a pile of leaves.",
        ),
        core(
            "{name} {sound} with joy and held the {object} tight.",
            "{name} was so happy to have {his} {object} back.",
            "{name} smiled a big smile and never lost the {object} again.",
        ),
    ),
    (  # a new friend
        core("{time}, {name} felt lonely.", "{time}, {name} had no one to play with."),
        extra("{He} walked slowly to {feature}.", "{He} sat all alone near {feature}."),
        core(
            "Then {he} met {a_fanimal} named {friend}.",
            "Then {he} saw {a_fanimal} named {friend} near {feature2}.",
        ),
        extra(
            "{friend} was shy at first.",
            '"Do you want to play?" asked {name}.',
            '"Hello, I am {name}," said {name}. "What is your name?"',
        ),
        extra(
            "They played with {name}'s {obj} and laughed.",
            "They ran and jumped around {feature}.",
        ),
        core(
            "{name} and {friend} played together all day and became best friends.",
            "From that day on, {name} and {friend} were best friends.",
        ),
    ),
    (  # a storm
        core("{time}, a big storm came to the {place}.", "{time}, dark clouds filled the sky."),
        extra("The wind blew hard and the rain fell.", "Thunder boomed and the trees shook."),
        core(
            "{name} was scared of the loud thunder.",
            "{name} hid under {his} bed because {he} was scared.",
        ),
        extra(
            "{His} mom gave {him} a warm hug.",
            '{His} mom said, "Storms do not last forever."',
            "{name} held {his} {obj} close.",
        ),
        core(
            "The next morning, the sun came out and {name} went outside to play.",
            "Soon the storm was over, and a rainbow shone above the {place}.",
        ),
    ),
    (  # sharing food
        core(
            "{time}, {name} had a big bowl of {food}.",
            "{time}, {name} found a bowl of {food}.",
        ),
        extra("{name} wanted to eat it all by {self}.", "{name} licked {his} lips."),
        core(
            "Then {he} saw {friend} the {fanimal}, who looked very hungry.",
            "Just then, {friend} the {fanimal} walked by with an empty tummy.",
        ),
        extra('"Would you like some?" asked {name}.', "{name} thought for a moment."),
        core(
            "{name} shared {his} {food} with {friend}, and they both felt happy.",
            "{name} gave half of the {food} to {friend}, and they ate together.",
        ),
        extra(
            "Sharing made the {food} taste even better.",
            '{friend} smiled. "Thank you!" {fhe} said.',
        ),
    ),
    (  # a trip
        core(
            "{time}, {name} went on a trip to the {place2}.",
            "{time}, {name} decided to visit the {place2}.",
        ),
        extra(
            "{He} packed {his} {obj} and some {food}.",
            "The path was long, but {name} did not stop.",
        ),
        core("There {he} saw {feature3}.", "At the {place2}, {he} saw {feature3}."),
        extra(
            "At the {place2}, {he} met {a_fanimal} named {friend}.",
            "{He} {move} around and looked at everything.",
        ),
        core(
            "When the sun went down, {name} went home to the {place}, tired and happy.",
            "In the evening, {name} walked back home to the {place}.",
        ),
    ),
    (  # helping a friend
        core("{time}, {name} heard a cry for help.", "{time}, {name} heard someone calling."),
        core(
            "{friend} the {fanimal} was stuck in the mud near {feature}.",
            "{friend} the {fanimal} was stuck between two branches near {feature}.",
        ),
        extra("{name} {move} as fast as {he} could.", '"Hold on!" said {name}.'),
        core(
            "{name} pulled and pulled until {friend} was free.",
            "{name} helped {friend} get out, one step at a time.",
        ),
        extra(
            '{friend} said, "Thank you, {name}! You are a good friend."',
            "{friend} gave {name} a big hug.",
        ),
    ),
    (  # a race
        core(
            "{time}, {name} and {friend} had a race to {feature}.",
            '{time}, {friend} said, "Let us race to {feature}!"',
        ),
        extra(
            "{name} {move} fast, and {friend} {fmove} fast too.", "They counted to three and went."
        ),
        core(
            "Halfway there, {friend} tripped and fell, so {name} stopped to help {fhim} up.",
            "Near the end, {friend} fell down, and {name} stopped to help.",
        ),
        extra('"Are you hurt?" asked {name}.', "{friend} rubbed {fhis} knee."),
        core(
            "They finished the race together and laughed.",
            "They walked the rest of the way together, side by side.",
        ),
        extra(
            "Being kind was better than winning.",
        ),
    ),
    (  # a birthday gift
        core(
            "{time}, it was {friend}'s birthday.",
            "{time}, {name} remembered it was {friend}'s birthday.",
        ),
        core(
            "{name} wanted to give {friend} {a_obj}.", "{name} found {a_obj} to give to {friend}."
        ),
        extra("{He} wrapped it in bright paper.", "{He} {move} all the way to {friend}'s home."),
        core(
            "{friend} opened the present and smiled a big smile.",
            '{friend} opened it and said, "I love it!"',
        ),
        extra("They played with the {object} until dark.", '"It is perfect!" said {friend}.'),
    ),
    (  # learning something
        core("{name} wanted to get better at {hobby}.", "{time}, {name} decided to try {hobby}."),
        core(
            "At first, it was very hard, and {he} made many mistakes.",
            "At first, {name} was not good at it at all.",
        ),
        extra('"Do not give up," said {his} mom.', "{friend} the {fanimal} watched and cheered."),
        extra("{He} tried again and again.", "{He} did not stop."),
        core(
            "{He} practiced every day, and soon {he} was very good at it.",
            "After many days of practice, {name} could do it well.",
        ),
        extra(
            "Everyone clapped for {him}.",
        ),
    ),
    (  # a quarrel
        core(
            "{time}, {name} and {friend} both wanted to play with the {obj}.",
            "{time}, {friend} took {name}'s {obj} without asking.",
        ),
        extra(
            '"It is mine!" said {name}. "No, it is my turn!" said {friend}.',
            "They pulled and argued.",
        ),
        extra('{name}\'s mom said, "Friends share."', "Then they both felt bad."),
        core(
            "They decided to take turns, and soon they were laughing again.",
            "They said sorry and played with the {object} together.",
        ),
    ),
    (  # baking
        core(
            "{time}, {name} helped {his} mom bake a cake.", "{time}, {name} wanted to bake a cake."
        ),
        extra("{He} mixed the eggs and the sugar.", "They put the cake in the oven and waited."),
        core("Flour went everywhere, even on {name}'s nose.", "The kitchen got very messy."),
        extra("{name} laughed and laughed.", "{His} mom laughed too."),
        core(
            "The cake was warm and sweet, and {name} shared it with {friend}.",
            "The cake smelled so good that {friend} the {fanimal} came to try it.",
        ),
    ),
    (  # bedtime
        core("That night, {name} could not sleep.", "One night, {name} was wide awake."),
        extra("{He} tossed and turned in bed.", "{He} counted the stars one by one."),
        core(
            "{He} looked out the window at the moon above the {place}.",
            "{His} mom sang {him} a soft song.",
        ),
        extra("{He} hugged {his} {obj}.", "The moon was big and bright."),
        core(
            "Soon {his} eyes closed, and {he} dreamed of {hobby}.",
            "Soon {name} fell fast asleep.",
        ),
    ),
    (  # a secret door
        core(
            "{time}, {name} found a little door near {feature}.",
            "{time}, {name} saw something shiny near {feature}.",
        ),
        extra("{He} was a little scared.", "{He} looked at it for a long time."),
        core("{He} looked closer and found {a_obj}.", "It was {a_obj}!"),
        extra("{name} could not believe {his} eyes.", "{name} {sound} with joy."),
        core(
            "{He} took it home and showed it to {friend}.",
            "{He} ran to show it to {friend} the {fanimal}.",
        ),
    ),
    (  # hide and seek
        core(
            "{time}, {name} and {friend} played hide and seek.",
            "{time}, {friend} wanted to play a game.",
        ),
        extra("{name} closed {his} eyes and counted to ten.", "{friend} ran off to hide."),
        core(
            "{friend} hid behind {feature}.",
            "{friend} hid near {feature2}, very still and very quiet.",
        ),
        extra("{name} looked high and low.", "Then {name} heard a little giggle."),
        core("{name} found {fhim} and they both laughed.", "At last, {name} found {friend}."),
        extra(
            "Next, it was {name}'s turn to hide.",
        ),
    ),
    (  # a growing flower
        core(
            "{time}, {name} planted a sunflower near {feature}.",
            "{time}, {name} found a tiny plant.",
        ),
        core("{He} gave it water every day.", "Every morning, {name} watered it."),
        extra(
            "Some days it rained, and some days it was sunny.", "{friend} came to look at it too."
        ),
        core("Soon the sunflower was taller than {name}.", "One day, a big yellow flower opened."),
    ),
)
