"""How the driver groups weights into tasks."""

from __future__ import annotations

from types import SimpleNamespace

from coreai_opt.coreai_utils._passes import runner


def _candidates(*sites):
    return [SimpleNamespace(site=SimpleNamespace(shape=(size,), size=size, element_type=element_type),
                            analysis=SimpleNamespace(role=None)) for size, element_type in sites]


class _BatchBySize:
    def __call__(self, *args):
        raise AssertionError("not called here")

    def batch_key(self, shape, role, element_type):
        return (shape[0], element_type) if shape[0] < 1000 else None


class _BatchByType(_BatchBySize):
    def batch_key(self, shape, role, element_type):
        return element_type


def test_weights_with_equal_keys_share_a_task_and_others_go_alone():
    candidates = _candidates((100, "f32"), (200, "f32"), (100, "f32"), (100, "f16"), (5000, "f32"),
                             (5000, "f32"), (200, "f32"))
    assert runner._tasks(candidates, _BatchBySize()) == [[0, 2], [1, 6], [3], [4], [5]]


def test_batches_stop_at_the_value_cap(monkeypatch):
    monkeypatch.setattr(runner, "_BATCH_VALUES", 250)
    candidates = _candidates(*[(100, "f32")] * 5)
    assert runner._tasks(candidates, _BatchBySize()) == [[0, 1], [2, 3], [4]]


def test_batches_of_unequal_weights_stop_at_the_value_cap(monkeypatch):
    monkeypatch.setattr(runner, "_BATCH_VALUES", 250)
    candidates = _candidates((100, "f32"), (100, "f16"), (100, "f32"), (100, "f32"), (200, "f32"), (50, "f32"))
    assert runner._tasks(candidates, _BatchByType()) == [[0, 2], [1], [3], [4, 5]]


def test_encoders_without_batch_keys_encode_weight_by_weight():
    candidates = _candidates((100, "f32"), (100, "f32"))
    assert runner._tasks(candidates, lambda *args: None) == [[0], [1]]
