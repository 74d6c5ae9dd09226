"""UNIFY losses on hand-computed cases, MLM masking (the BERT recipe) and `lexicon_top_words` (paper Fig. 5)."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import BertTokenizer

from modeling_unify import (
    bag_of_words_loss,
    caption_bag_of_words,
    contrastive_loss,
    cosine_similarity_matrix,
    flops_regularizer,
    lexicon_top_words,
    make_mlm_inputs,
    masked_lm_loss,
    self_distillation_loss,
)

SIMILARITY_3X3 = [[0.9, 0.1, 0.2], [0.0, 0.8, 0.3], [0.4, 0.2, 0.7]]


def _log_softmax_at(values: list[float], index: int) -> float:
    return values[index] - math.log(sum(math.exp(v) for v in values))


def test_contrastive_loss_is_the_two_direction_infonce_of_eq_10():
    tau = 0.5
    rows = [[v / tau for v in row] for row in SIMILARITY_3X3]
    columns = [[rows[k][i] for k in range(3)] for i in range(3)]
    video_to_text = -sum(_log_softmax_at(rows[i], i) for i in range(3)) / 3
    text_to_video = -sum(_log_softmax_at(columns[i], i) for i in range(3)) / 3
    loss = contrastive_loss(torch.tensor(SIMILARITY_3X3), tau)
    assert loss.item() == pytest.approx(video_to_text + text_to_video, rel=1e-6)
    # perfectly separated pairs at a small temperature cost (almost) nothing
    assert contrastive_loss(torch.eye(3), 0.01).item() < 1e-6
    with pytest.raises(ValueError, match="similarity"):
        contrastive_loss(torch.zeros(2, 3), 0.05)


def test_flops_regularizer_is_the_sum_of_squared_batch_means():
    lexicon = torch.tensor([[1.0, 0.0, 2.0], [3.0, 0.0, 0.0]])  # batch means (2, 0, 1)
    assert flops_regularizer(lexicon).item() == pytest.approx(2.0**2 + 0.0 + 1.0**2)
    spread = torch.eye(4)  # each dimension used by one sample: cheaper than all samples on one dimension
    crowded = torch.zeros(4, 4)
    crowded[:, 0] = 1.0
    assert flops_regularizer(spread).item() == pytest.approx(4 * (1 / 4) ** 2)
    assert flops_regularizer(crowded).item() == pytest.approx(1.0)


def test_masked_lm_loss_averages_cross_entropy_over_masked_positions():
    logits = torch.tensor([[[2.0, 1.0, 0.0], [0.0, 0.0, 3.0], [1.0, 1.0, 1.0]]])
    labels = torch.tensor([[0, -100, 2]])
    expected = -(_log_softmax_at([2.0, 1.0, 0.0], 0) + _log_softmax_at([1.0, 1.0, 1.0], 2)) / 2
    assert masked_lm_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)
    nothing_masked = masked_lm_loss(logits.requires_grad_(True), torch.full((1, 3), -100))
    assert nothing_masked.item() == 0.0
    nothing_masked.backward()  # stays in the graph instead of being NaN


def test_self_distillation_is_zero_for_equal_similarities_and_matches_a_hand_computed_case():
    latent = torch.tensor(SIMILARITY_3X3)
    assert self_distillation_loss(latent, latent.clone(), 0.05).abs().item() < 1e-6

    latent = torch.tensor([[0.5, 0.0], [0.1, 0.4]])
    lexicon = torch.tensor([[0.2, 0.3], [0.0, 0.6]], requires_grad=True)
    tau = 0.5

    def kl_rows(teacher, student):
        total = 0.0
        for t_row, s_row in zip(teacher, student):
            p = [math.exp(_log_softmax_at(t_row, j)) for j in range(len(t_row))]
            total += sum(p[j] * (math.log(p[j]) - _log_softmax_at(s_row, j)) for j in range(len(t_row)))
        return total / len(teacher)

    t = (latent / tau).tolist()
    s = (lexicon.detach() / tau).tolist()
    transpose = lambda m: [list(c) for c in zip(*m)]  # noqa: E731
    expected = kl_rows(t, s) + kl_rows(transpose(t), transpose(s))
    latent_input = latent.clone().requires_grad_(True)
    loss = self_distillation_loss(latent_input, lexicon, tau)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert latent_input.grad is None  # the latent teacher is detached (stop-gradient)
    assert lexicon.grad is not None and lexicon.grad.abs().sum() > 0


def test_cosine_similarity_matrix_handles_zero_vectors():
    a = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    b = torch.tensor([[3.0, 4.0], [4.0, -3.0]])
    torch.testing.assert_close(cosine_similarity_matrix(a, b), torch.tensor([[1.0, 0.0], [0.0, 0.0]]))


# --------------------------------------------------------------------------------------------------------
# make_mlm_inputs (the BERT recipe)
# --------------------------------------------------------------------------------------------------------


def _captions(batch: int = 64, length: int = 32):
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(10, 200, (batch, length), generator=generator)
    attention_mask = torch.ones(batch, length, dtype=torch.long)
    input_ids[:, 0] = 2  # [CLS]
    for row in range(batch):
        valid = length - (row % 7)
        input_ids[row, valid - 1] = 3  # [SEP]
        input_ids[row, valid:] = 0  # [PAD]
        attention_mask[row, valid:] = 0
    return input_ids, attention_mask


def test_mlm_inputs_follow_the_bert_recipe():
    input_ids, attention_mask = _captions()
    mlm_input_ids, labels = make_mlm_inputs(
        input_ids, attention_mask, mask_token_id=4, vocab_size=200, special_token_ids=[0, 1, 2, 3, 4],
        generator=torch.Generator().manual_seed(1),
    )  # fmt: skip
    chosen = labels != -100
    eligible = attention_mask.bool() & ~torch.isin(input_ids, torch.tensor([0, 1, 2, 3, 4]))
    assert not bool((chosen & ~eligible).any())  # specials and padding are never chosen
    assert torch.equal(labels[chosen], input_ids[chosen])
    assert torch.equal(mlm_input_ids[~chosen], input_ids[~chosen])
    rate = chosen.sum().item() / eligible.sum().item()
    assert 0.12 < rate < 0.18
    masked = (mlm_input_ids[chosen] == 4).float().mean().item()
    kept = (mlm_input_ids[chosen] == input_ids[chosen]).float().mean().item()
    assert 0.72 < masked < 0.88 and 0.04 < kept < 0.17


def test_mlm_inputs_are_deterministic_given_a_generator_and_read_a_tokenizer():
    input_ids, attention_mask = _captions(batch=8)
    tokenizer = BertTokenizer(vocab={"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4, "a": 5})
    first = make_mlm_inputs(input_ids, attention_mask, tokenizer=tokenizer, vocab_size=200,
                            generator=torch.Generator().manual_seed(7))  # fmt: skip
    second = make_mlm_inputs(input_ids, attention_mask, tokenizer=tokenizer, vocab_size=200,
                             generator=torch.Generator().manual_seed(7))  # fmt: skip
    other = make_mlm_inputs(input_ids, attention_mask, tokenizer=tokenizer, vocab_size=200,
                            generator=torch.Generator().manual_seed(8))  # fmt: skip
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.equal(first[1], other[1])
    assert bool((first[0][first[1] != -100] == 4).any())
    with pytest.raises(ValueError, match="mask_token_id"):
        make_mlm_inputs(input_ids, vocab_size=10)


def test_mlm_inputs_honour_a_special_tokens_mask():
    input_ids, attention_mask = _captions(batch=4)
    special = torch.zeros_like(input_ids)
    special[:, 1:6] = 1
    _, labels = make_mlm_inputs(input_ids, attention_mask, mask_token_id=4, vocab_size=200,
                                special_tokens_mask=special, mlm_probability=0.9)  # fmt: skip
    assert bool((labels[:, 1:6] == -100).all()) and bool((labels != -100).any())


# --------------------------------------------------------------------------------------------------------
# lexicon_top_words (paper Fig. 5)
# --------------------------------------------------------------------------------------------------------

WORDS = ["[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "red", "blue", "circle", "square", "##s", "spins"]


def _tokenizer():
    return BertTokenizer(vocab={word: i for i, word in enumerate(WORDS)})


def test_lexicon_top_words_skips_special_tokens_and_zero_weights():
    lexicon = torch.zeros(len(WORDS))
    lexicon[WORDS.index("[CLS]")] = 5.0
    lexicon[WORDS.index("[unused0]")] = 4.0
    lexicon[WORDS.index("red")] = 0.9
    lexicon[WORDS.index("circle")] = 0.5
    lexicon[WORDS.index("##s")] = 0.1
    tokenizer = _tokenizer()
    assert lexicon_top_words(lexicon, tokenizer, k=2) == [("red", pytest.approx(0.9)), ("circle", pytest.approx(0.5))]
    assert [w for w, _ in lexicon_top_words(lexicon, tokenizer, k=10)] == ["red", "circle", "##s"]
    unfiltered = lexicon_top_words(lexicon, tokenizer, k=2, skip_special_tokens=False)
    assert [word for word, _ in unfiltered] == ["[CLS]", "[unused0]"]


def test_lexicon_top_words_on_a_batch():
    lexicon = torch.zeros(2, len(WORDS))
    lexicon[0, WORDS.index("blue")] = 1.0
    lexicon[1, WORDS.index("square")] = 2.0
    lexicon[1, WORDS.index("spins")] = 3.0
    words = lexicon_top_words(lexicon, _tokenizer(), k=3)
    assert words == [[("blue", 1.0)], [("spins", 3.0), ("square", 2.0)]]
    with pytest.raises(ValueError, match="lexicon"):
        lexicon_top_words(torch.zeros(1, 2, 3), _tokenizer())


def test_lexicon_top_words_refuses_a_tokenizer_of_another_vocabulary_size():
    five_tokens = BertTokenizer(vocab={"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4})
    lexicon = torch.zeros(100)
    lexicon[50] = 1.0
    with pytest.raises(ValueError, match="100 dimensions but `tokenizer` has 5 tokens"):
        lexicon_top_words(lexicon, five_tokens)
    assert lexicon_top_words(torch.zeros(len(WORDS)), _tokenizer()) == []  # an all-zero vector has no words


# --------------------------------------------------------------------------------------------------------
# Caption bag-of-words reconstruction (the stage-0 grounding objective)
# --------------------------------------------------------------------------------------------------------


def test_caption_bag_of_words_marks_the_words_at_the_given_positions():
    input_ids = torch.tensor([[2, 7, 8, 7, 3, 0], [2, 9, 3, 0, 0, 0]])
    words = torch.tensor([[0, 1, 1, 1, 0, 0], [0, 1, 0, 0, 0, 0]], dtype=torch.bool)
    bag = caption_bag_of_words(input_ids, words, vocab_size=10)
    assert bag.shape == (2, 10) and bag.dtype == torch.bool
    assert bag[0].nonzero().flatten().tolist() == [7, 8] and bag[1].nonzero().flatten().tolist() == [9]
    with pytest.raises(ValueError, match="outside the vocabulary"):
        caption_bag_of_words(input_ids, words, vocab_size=8)
    with pytest.raises(ValueError, match="word_mask"):
        caption_bag_of_words(input_ids, words[:, :3], vocab_size=10)


def test_bag_of_words_loss_is_the_balanced_binary_cross_entropy():
    logits = torch.tensor([[2.0, -1.0, 0.5, -3.0], [0.0, 1.0, -2.0, 4.0]], requires_grad=True)
    bag = torch.tensor([[True, False, True, False], [False, False, False, True]])

    def softplus(x: float) -> float:
        return math.log1p(math.exp(x))

    row0 = (softplus(-2.0) + softplus(-0.5)) / 2 + (softplus(-1.0) + softplus(-3.0)) / 2
    row1 = softplus(-4.0) / 1 + (softplus(0.0) + softplus(1.0) + softplus(-2.0)) / 3
    loss = bag_of_words_loss(logits, bag)
    assert loss.item() == pytest.approx((row0 + row1) / 2, rel=1e-6)
    loss.backward()
    assert bool((logits.grad[bag] < 0).all()) and bool((logits.grad[~bag] > 0).all())  # words up, the rest down
    # the vocabulary size does not dilute the words' part: padding the vocabulary with confident negatives
    wide_logits = torch.cat([logits.detach(), torch.full((2, 1000), -30.0)], dim=1)
    wide_bag = torch.cat([bag, torch.zeros(2, 1000, dtype=torch.bool)], dim=1)
    assert bag_of_words_loss(wide_logits, wide_bag).item() == pytest.approx(
        (softplus(-2.0) + softplus(-0.5)) / 2 / 2 + softplus(-4.0) / 2, abs=0.01
    )
    with pytest.raises(ValueError, match="pooled_logits"):
        bag_of_words_loss(logits, bag[:, :3])
