"""The request both frameworks' composition matrices send (tests/integrations/*/test_composition.py):
one question, two retrieved documents, the answer the provider-like fakes stream, the budget
and the price they are checked against."""

from __future__ import annotations

BUDGET = 24
PRICE = "gpt-4o-mini"
QUESTION = "Who led the Normans when they settled in Normandy?"
DOCUMENTS = [
    "The Normans were the people who in the 10th and 11th centuries gave their name to Normandy, "
    "a region in France. They were descended from Norse raiders and pirates from Denmark, Iceland "
    "and Norway who, under their leader Rollo, agreed to swear fealty to King Charles III of West "
    "Francia. Through generations of assimilation and mixing with the native Frankish and "
    "Roman-Gaulish populations, their descendants would gradually merge with the Carolingian-based "
    "cultures of West Francia.",
    "The distinct cultural and ethnic identity of the Normans emerged initially in the first half "
    "of the 10th century, and it continued to evolve over the succeeding centuries. The Norman "
    "dynasty had a major political, cultural and military impact on medieval Europe and even the "
    "Near East.",
]
FAKE_ANSWER = (
    "Rollo led the Normans when they settled in Normandy; he swore fealty to King Charles III of "
    "West Francia, and his descendants merged with the Frankish and Roman-Gaulish populations over "
    "the following generations."
)
