"""Text made here: the Python-reference topic task (bench/minilm_classifier.py) and the distillation text."""

from pt2e_int8.app.minilm import CALIBRATION_SENTENCES, HELD_OUT_SENTENCES, distillation_sentences
from pt2e_int8.app.text import (
    TOPIC_CLASSES,
    encyclopedic_sentences,
    generated_sentences,
    topic_task,
)


def test_topic_task_split_is_deterministic_disjoint_and_covers_every_class():
    (train, ytrain), (test, ytest), classes = topic_task(seed=0)
    assert topic_task(seed=0) == ((train, ytrain), (test, ytest), classes)
    assert topic_task(seed=1)[1][0] != test, "the seed must choose the split"
    assert classes == list(TOPIC_CLASSES)
    assert len(train) == len(ytrain) > 300 and len(test) == len(ytest) > 100
    assert not set(train) & set(test), "a sentence in both halves"
    assert len(set(train)) == len(train) and len(set(test)) == len(test)
    assert set(ytrain) == set(ytest) == set(range(len(classes)))
    for label in range(len(classes)):  # each class split ~3:1
        n_train, n_test = ytrain.count(label), ytest.count(label)
        assert 2.5 < n_train / n_test < 3.5, (classes[label], n_train, n_test)


def test_distillation_text_never_holds_the_held_out_sentences():
    text = set(distillation_sentences(512))
    assert len(text) > 400
    assert not text & set(HELD_OUT_SENTENCES)
    assert not text & set(CALIBRATION_SENTENCES)


def test_encyclopedic_sentences_are_seeded_plain_sentences_with_a_broad_vocabulary():
    text = encyclopedic_sentences(300, seed=0)
    assert text == encyclopedic_sentences(300, seed=0) and text != encyclopedic_sentences(300, seed=1)
    assert len(text) == 300
    for sentence in text:
        words = sentence.split()
        assert 6 <= len(words) <= 30 and sentence[0].isupper() and sentence.endswith("."), sentence
        assert not set(sentence) & set("<>[]{}|=\"#*_"), sentence
    vocabulary = {w.strip(".,;:").lower() for s in text for w in s.split()}
    generated = {w.strip(".,;:").lower() for s in generated_sentences(300) for w in s.split()}
    assert len(vocabulary) > 5 * len(generated), (len(vocabulary), len(generated))  # the breadth it is for
    assert not set(text) & (set(HELD_OUT_SENTENCES) | set(CALIBRATION_SENTENCES))
