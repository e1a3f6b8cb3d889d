import pytest
import torch

from hf_distill.training.padding import pad_rows


def test_rows_are_padded_after_by_default_and_before_when_asked():
    rows = [[5, 6, 7], [8], [9, 10]]
    assert pad_rows(rows, 0).tolist() == [[5, 6, 7], [8, 0, 0], [9, 10, 0]]
    assert pad_rows(rows, -100, left=True).tolist() == [[5, 6, 7], [-100, -100, 8], [-100, 9, 10]]
    assert pad_rows(rows, 0).dtype == torch.long


def test_equal_rows_are_stacked_unchanged_and_tuples_are_rows_too():
    assert pad_rows([(1, 2), (3, 4)], 0).tolist() == [[1, 2], [3, 4]]
    assert pad_rows([(1, 2), (3, 4)], 0, left=True).tolist() == [[1, 2], [3, 4]]


def test_an_empty_row_is_all_padding():
    assert pad_rows([[], [1, 2]], 7).tolist() == [[7, 7], [1, 2]]
    assert pad_rows([[], [1, 2]], 7, left=True).tolist() == [[7, 7], [1, 2]]


def test_no_rows_is_refused_by_torch():
    with pytest.raises(RuntimeError, match="received an empty list"):
        pad_rows([], 0)
