"""Near-miss question pairs over the demo knowledge base (lean_plugins/demo/knowledge_base.md):
each pair asks about one section and needs two different answers. Written for the LLM-level
cache tests (tests/integrations/*/test_cache*.py / test_cached_llm.py); not the demo's
questions.json. On the cache before issue 13, a LangChain RAG chain under
``set_llm_cache(LeanCache())`` served 9 of these 30 with an earlier question's answer."""

NEAR_MISSES = [
    ("How long is a day on Mars?", "How long is a year on Mars?"),
    ("What is the diameter of Mars?", "What is the diameter of Mercury?"),
    ("How long does Mercury take to orbit the Sun?", "How long is a solar day on Mercury?"),
    ("How hot is the surface of Mercury in daylight?", "How cold is the surface of Mercury at night?"),
    ("How long does one rotation of Venus take?", "How long is a year on Venus?"),
    ("When did Apollo 11 land on the Moon?", "When did Apollo 17 land on the Moon?"),
    ("How many astronauts walked on the Moon?", "How many kilograms of lunar rock did astronauts bring back?"),
    ("What percentage of Earth's atmosphere is nitrogen?", "What percentage of Earth's atmosphere is oxygen?"),
    ("When did Perseverance land on Mars?", "When did Ingenuity make its first flight on Mars?"),
    ("How tall is Olympus Mons?", "How long is Valles Marineris?"),
    ("When was Ceres discovered?", "When did Dawn reach Ceres?"),
    ("How long is a day on Jupiter?", "How long is a day on Mercury?"),
    ("What is the diameter of the Moon?", "What is the distance from Earth to the Moon?"),
    ("What is the largest moon of Jupiter?", "What is the most volcanically active moon of Jupiter?"),
    ("What is the surface temperature of Venus?", "What is the surface pressure on Venus?"),
]
#: Thirty questions that each need their own answer.
QUESTIONS = [question for pair in NEAR_MISSES for question in pair]
