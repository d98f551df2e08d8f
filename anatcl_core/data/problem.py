"""One violation of the CAT12-VBM contract, as every check of :mod:`anatcl_core.data.validate` reports it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One violation of the contract: the file, the subject (if any) and what was expected."""

    path: str
    participant_id: str | None
    message: str

    def __str__(self) -> str:
        who = f" [{self.participant_id}]" if self.participant_id is not None else ""
        return f"{self.path}{who}: {self.message}"

