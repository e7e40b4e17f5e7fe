import numpy as np
import pytest

from md_export.tokenizer import CONTEXT_LENGTH, PromptTruncatedWarning, Tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer()


def test_known_clip_ids(tokenizer):
    ids = tokenizer("a photo of a cat")
    assert ids.dtype == np.int64 and ids.shape == (1, CONTEXT_LENGTH)
    # reference ids of openai/clip-vit-large-patch14's tokenizer
    assert ids[0, :7].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert (ids[0, 7:] == 49407).all()  # SD pads with <|endoftext|>


def test_empty_prompt_is_start_end_and_padding(tokenizer):
    ids = tokenizer("")[0]
    assert ids[0] == 49406 and (ids[1:] == 49407).all()


def test_long_prompt_is_truncated_with_a_warning(tokenizer):
    with pytest.warns(PromptTruncatedWarning, match="100 tokens"):
        ids = tokenizer(" ".join(["cat"] * 100))[0]
    assert ids.shape == (CONTEXT_LENGTH,)
    assert ids[-1] == 49407 and ids[-2] == 2368


def test_batch(tokenizer):
    assert tokenizer(["a", "b c"]).shape == (2, CONTEXT_LENGTH)


# Text CLIP's own clean-up (ftfy, HTML unescape, whitespace, lower case) turns into plain ASCII,
# written out by hand: an oracle independent of the clean-up code.
CLEANED = {
    "rock &amp; roll": "rock & roll",
    "a cat &amp;amp; a dog": "a cat & a dog",  # unescaped twice, as CLIP does
    "it’s a “quoted” word": "it's a \"quoted\" word",
    "donâ€™t stop": "don't stop",  # mojibake (UTF-8 read as cp1252)
    "ＡＢＣ ｆｕｌｌ ｗｉｄｔｈ": "abc full width",
    "  A   RED\tcircle \n": "a red circle",
}


@pytest.mark.parametrize("raw", sorted(CLEANED))
def test_text_is_cleaned_as_clip_cleans_it(tokenizer, raw):
    from transformers import CLIPTokenizer

    from md_export.tokenizer import DATA

    # transformers' CLIPTokenizer from the shipped vocabulary files, on the hand-cleaned text
    import json

    lines = (DATA / "merges.txt").read_text(encoding="utf-8").splitlines()
    reference = CLIPTokenizer(vocab=json.loads((DATA / "vocab.json").read_text(encoding="utf-8")),
                              merges=[tuple(line.split()) for line in lines[1:] if line])
    expected = reference(CLEANED[raw], add_special_tokens=False)["input_ids"]
    assert tokenizer.encode(raw)[1:1 + len(expected) + 1] == expected + [tokenizer.eos_id]


def test_full_width_letters_are_one_token_as_in_clip(tokenizer):
    assert tokenizer.encode("ＡＢＣ")[:3] == tokenizer.encode("abc")[:3] == [49406, 5334, 49407]


def test_vocabulary_ships_with_the_package():
    from md_export.tokenizer import DATA

    import json

    vocab = json.loads((DATA / "vocab.json").read_text(encoding="utf-8"))
    assert len(vocab) == 49408 and vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407
    assert (DATA / "merges.txt").read_text(encoding="utf-8").startswith("#version: 0.2\n")
    assert "MIT License" in (DATA / "LICENSE").read_text()
