"""The benchmark's memory probe: a step's peak RSS is seen even when start-up peaked higher."""

from __future__ import annotations

import torch

from dlarepro.bench import release_freed_memory, step_peak_rss


def test_step_peak_is_measured_after_a_higher_earlier_peak():
    big = torch.ones(400 * 2**20 // 4)  # 400 MiB touched, then freed: ru_maxrss would hide what follows
    del big
    release_freed_memory()
    measure = step_peak_rss()

    def step():
        x = torch.ones(150 * 2**20 // 4)  # 150 MiB
        del x

    peak = measure(step)
    assert 140 * 2**20 <= peak <= 260 * 2**20
    assert measure(lambda: None) < 20 * 2**20
