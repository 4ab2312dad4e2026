"""Side-by-side model training (securedc.concurrency): order, errors, thread counts, determinism."""

from __future__ import annotations

import threading

import pytest
import torch

from securedc.concurrency import plan, run_concurrently
from securedc.config import EvalConfig
from securedc.errors import ConfigError
from securedc.evaluate import EvalRequest, evaluate_requests, random_subset, train_model


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_plan_shares_the_callers_threads(two_threads):
    assert plan(5) == (2, 1)
    assert plan(1) == (1, 2)  # a single job keeps every thread
    assert plan(5, workers=1) == (1, 2)
    assert plan(5, device="meta") == (1, 2)  # accelerators: one job at a time
    with pytest.raises(ConfigError, match="workers"):
        plan(3, workers=0)


def test_results_in_order_errors_raised_threads_restored(two_threads):
    seen = set()

    def job(i):
        seen.add((threading.current_thread().name.startswith("securedc-train"), torch.get_num_threads()))
        return i * i

    assert run_concurrently([lambda i=i: job(i) for i in range(6)]) == [i * i for i in range(6)]
    assert seen == {(True, 1)}  # worker threads, one intra-op thread each
    assert torch.get_num_threads() == 2

    def boom():
        raise ValueError("job failed")

    with pytest.raises(ValueError, match="job failed"):
        run_concurrently([lambda: 1, boom])
    assert torch.get_num_threads() == 2


def test_side_by_side_training_is_deterministic_and_equals_single_thread_training(digits, two_threads):
    """A model trained in a worker equals the same job run alone with the worker's thread count."""
    x, y = random_subset(digits.train_images, digits.train_labels, 5, seed=0)
    cfg = EvalConfig(models=2, epochs=15)
    kw = dict(num_classes=10, mean=digits.mean, std=digits.std, keep_models=True)
    first = evaluate_requests([EvalRequest(draws=[(x, y)], config=cfg)], digits.test_images, digits.test_labels, **kw)[0]
    again = evaluate_requests([EvalRequest(draws=[(x, y)], config=cfg)], digits.test_images, digits.test_labels, **kw)[0]
    assert first.accuracies == again.accuracies
    torch.set_num_threads(1)
    alone = train_model(x, y, num_classes=10, mean=digits.mean, std=digits.std, config=cfg, seed=1)
    for p, q in zip(first.models[1].parameters(), alone.parameters()):
        assert torch.equal(p, q)


def test_requests_keep_their_own_protocol_and_seeds(digits, two_threads):
    x, y = random_subset(digits.train_images, digits.train_labels, 5, seed=0)
    rx, ry = random_subset(digits.train_images, digits.train_labels, 5, seed=1)
    reqs = [EvalRequest(draws=[(x, y)], config=EvalConfig(models=2, epochs=5, model="mlp")),
            EvalRequest(draws=[(x, y), (rx, ry)], config=EvalConfig(models=3, epochs=5, dsa="none"))]
    a, b = evaluate_requests(reqs, digits.test_images, digits.test_labels, num_classes=10, mean=digits.mean,
                             std=digits.std, keep_models=True)
    assert (a.model, len(a.accuracies), b.model, len(b.accuracies)) == ("mlp", 2, "convnet", 3)
    seq = evaluate_requests(reqs, digits.test_images, digits.test_labels, num_classes=10, mean=digits.mean,
                            std=digits.std, workers=1)
    assert len(seq) == 2 and all(0 <= acc <= 1 for r in seq for acc in r.accuracies)
    # model 2 of the second request trained on draw 2 mod 2 = 0 with seed 2
    torch.set_num_threads(1)
    ref = train_model(x, y, num_classes=10, mean=digits.mean, std=digits.std, config=reqs[1].config, seed=2)
    assert all(torch.equal(p, q) for p, q in zip(b.models[2].parameters(), ref.parameters()))
