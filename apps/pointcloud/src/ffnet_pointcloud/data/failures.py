"""Scene-loading failures carried out of DataLoader workers as values, so the CLI can print their one line.

Why: an exception raised inside a loader worker reaches the main process re-built by torch with the worker's
whole traceback pasted into its message ("Caught FFNetError in DataLoader worker process 0. Original
Traceback ..."), which breaks the one-line contract for a plain bad input such as a truncated ``coord.npy``.
A worker therefore returns a :class:`LoadFailure` instead, and the main process raises the original message.
Only user errors (:class:`FFNetError`) travel this way; a bug still raises with its traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from metamixer.train.errors import FFNetError

__all__ = ["LoadFailure", "Guarded", "collate_or_failure", "raise_failures"]


@dataclass(frozen=True)
class LoadFailure:
    """The message of an FFNetError raised while a worker loaded an item (picklable, unlike a traceback)."""

    message: str


class Guarded:
    """A map-style dataset whose items are the wrapped one's, or a :class:`LoadFailure` for a bad item."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        try:
            return self.dataset[index]
        except FFNetError as exc:
            return LoadFailure(str(exc))


def collate_or_failure(items: Sequence[Any], collate: Callable[[Sequence[Any]], Any]) -> Any:
    """``collate(items)``, or the first failure among them (a batch with a bad scene is not a batch)."""
    for item in items:
        if isinstance(item, LoadFailure):
            return item
    return collate(items)


def raise_failures(batches: Iterable[Any]) -> Iterator[Any]:
    """Yield the loader's batches; a :class:`LoadFailure` becomes the FFNetError it was, in the main process."""
    for batch in batches:
        if isinstance(batch, LoadFailure):
            raise FFNetError(batch.message)
        yield batch
