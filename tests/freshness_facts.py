"""A tiny knowledge base for the question-level freshness tests (both frameworks): four
documents with fixed ids, and an edit of one that changes its answer."""

FACTS = {
    "mars": "A year on Mars lasts 687 Earth days. Mars has two small moons, Phobos and Deimos.",
    "venus": "A day on Venus lasts 243 Earth days. Venus spins backwards compared with most planets.",
    "moon": "The Moon is about 384,400 km from the Earth. Twelve people have walked on the Moon.",
    "sun": "The Sun is about 4.6 billion years old. Its diameter is about 1.39 million km.",
}
EDITED_MARS = "A year on Mars lasts 700 Earth days. Mars has two small moons, Phobos and Deimos."
