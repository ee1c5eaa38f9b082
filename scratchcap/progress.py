"""Progress bars for the long jobs: feature extraction, training, evaluation, data generation.

``progress_bar`` gives a tqdm bar (rate and ETA, on stderr), or, when progress is off, a
bar that does nothing, so callers update it without checks and tqdm is not imported.
"""
from __future__ import annotations


class _Silent:
    def update(self, n=1):
        pass

    def set_postfix(self, **values):
        pass

    def close(self):
        pass


def progress_bar(total, desc, unit, enabled=True, initial=0):
    if not enabled:
        return _Silent()
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True)
