"""Prompts of the cache's context rules (issue 26, "wrong answers through the core API and long
prompts"), shared by the core and both adapters' tests: a RAG prompt in one string, two long
prompts that share >= 300 words and differ in one instruction, and two instructions about one
56-word single-line email."""

RAG_FRANCE = (
    "Context: Paris is the capital of France. Berlin is the capital of Germany.\n\n"
    "Question: What is the capital of France?"
)
RAG_GERMANY = RAG_FRANCE.replace("of France?", "of Germany?")

#: >= 300 words of shared text (a terms-of-service page), then one instruction.
TERMS = " ".join(
    f"Section {i}. The subscriber agrees that the provider may change the plan, the price and these terms "
    "with thirty days of notice, and that the account stays open until it is closed."
    for i in range(1, 14)
)
#: A 56-word message on one line (words as ``\w+`` counts them; 54 separated by spaces, so that
#: each prompt built on it stays under the old 60-word limit of a plain question).
EMAIL = (
    "Hi team, the quarterly review has moved from Tuesday to Thursday afternoon because several managers "
    "are traveling. Please keep calendars up-to-date, bring revised budget figures, and send any agenda "
    "items before Wednesday noon so I can circulate the final agenda in time. Thanks for your patience "
    "with the change, and see you on Thursday."
)

LONG_PAIRS = [
    # one paragraph, the instruction at the end
    (f"{TERMS} Given these terms, tell me how to cancel.", f"{TERMS} Given these terms, tell me how to upgrade my subscription."),
    # the instruction in a paragraph of its own
    (f"{TERMS}\n\nExplain how to cancel.", f"{TERMS}\n\nExplain how to upgrade my subscription."),
    # the instruction first
    (f"Explain how to cancel.\n\n{TERMS}", f"Explain how to upgrade my subscription.\n\n{TERMS}"),
    # a question of its own after the terms: matched on the question only
    (f"{TERMS}\n\nHow do I cancel?", f"{TERMS}\n\nHow do I upgrade my subscription?"),
]
EMAIL_PAIRS = [
    (f"Summarize the following email: {EMAIL}", f"Reply politely to the following email: {EMAIL}"),
    (f"Summarize this email: {EMAIL}", f"Reply politely to this email: {EMAIL}"),
    (f"Summarize the following email:\n\n{EMAIL}", f"Reply politely to the following email:\n\n{EMAIL}"),
]
