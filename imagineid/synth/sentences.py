"""Sentence bank for the synthetic corpus: short English lines that exercise every mouth shape.

Each line has 4-10 words, so a clip of 2-4 s holds one sentence. The mix covers open and rounded
vowels, spread vowels, fricatives and, on purpose, many bilabials (p, b, m) whose closed lips make lip
sync visible in a video.

    >>> import numpy as np
    >>> from imagineid.synth.sentences import pick_sentence
    >>> isinstance(pick_sentence(np.random.default_rng(0)), str)
    True
"""

from __future__ import annotations

import numpy as np

SENTENCES: tuple[str, ...] = (
    # bilabial-rich: p, b, m close the lips
    "Bob bought a big blue map.",
    "My mom made plum pie on Monday.",
    "Put the paper bag by the bed.",
    "Please bring me both maps back.",
    "The baby played with a purple ball.",
    "Mike might bump the brown box.",
    "Pam parked her bike by the pub.",
    "Bees buzz above the pink blossoms.",
    "The map maker marked a bumpy path.",
    "My brother paints boats in the bay.",
    "Pick a plump peach from the bowl.",
    "Maybe the band will play by May.",
    "Bright balloons bobbed above the pool.",
    "Mary bought more paper and tape.",
    "Ben broke the pump by mistake.",
    # open vowels
    "Father parked the car in the yard.",
    "Tom got a hot pot of soup.",
    "The garden is calm and dark tonight.",
    "Hardly anyone saw the large starfish.",
    "Pass the jam to the happy man.",
    # rounded vowels and w
    "Who knew the new moon was blue?",
    "We walked slowly home through the snow.",
    "Would you choose two cool shoes?",
    "The old owl wore a woolly hood.",
    "Go and show Joe the boat.",
    "Water flows down the long road.",
    # spread vowels
    "Keep the green leaves in the sheet.",
    "Each team will meet at three.",
    "She sees the sea from her seat.",
    "Did Jim fix the little kitten's dish?",
    # fricatives and affricates
    "Five fine fish swam very fast.",
    "The thin thief thought about that thing.",
    "Shall we share the sugar and cheese?",
    "Judge the size of the zebra's cage.",
    "Choose the cheap chair for the church.",
    "Seven silver spoons sit on the shelf.",
    "His voice was soft and vague.",
    # liquids, nasals, velars
    "Lily rolled the red yellow ring.",
    "Nine nice nurses ran along the lane.",
    "Kate could not get the green kite.",
    "The king sang a long English song.",
    "Rain runs off the roof in rivers.",
    # everyday lines
    "I think it will rain later today.",
    "Can you tell me the way out?",
    "The train leaves at half past nine.",
    "Thank you for waiting so patiently.",
    "This coffee tastes better than yesterday.",
    "We should finish the report by noon.",
    "Let me know when you arrive home.",
    "The weather looks perfect for a picnic.",
    "Turn left at the next corner.",
    "I have never seen anything like this.",
    "Our neighbours are moving away next week.",
    "Please close the window before you leave.",
    "The children laughed at the funny clown.",
    "He forgot his keys at the office.",
    "That was the best meal in months.",
    "Everyone agreed to meet again tomorrow.",
    "The museum opens early on Sunday mornings.",
    "Her new job starts in August.",
    "Listen carefully to what I say.",
    "The kettle is boiling in the kitchen.",
    "Why did you wait so long?",
    "My phone battery died this morning.",
    "Good news travels fast in small towns.",
    "The puppy chased its tail around.",
    "Nobody expected the storm to be so bad.",
    "Remember to water the plants every day.",
    "Bring an umbrella just in case.",
    "A quiet evening at home sounds wonderful.",
    "The library closes at eight tonight.",
    "We watched the sunset from the beach.",
)


def pick_sentence(rng: np.random.Generator) -> str:
    """One sentence, drawn uniformly; the caller's generator keeps a corpus reproducible."""
    return SENTENCES[int(rng.integers(len(SENTENCES)))]
