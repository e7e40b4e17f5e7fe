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
