"""Label vocabularies shared by the corpus generator, the dataset readers and the disentangler heads."""

GENDERS = ("male", "female")
AGE_GROUPS = ("child", "adult", "elder")
EMOTIONS = ("neutral", "happy", "sad", "angry")
