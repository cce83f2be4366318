"""The base of every config section, and the seed type every seeded section uses."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

SEED_LIMIT = 2**63
"""Seeds lie in [0, SEED_LIMIT): numpy's generators need them non-negative, torch's fit them in 64 bits."""
Seed = Annotated[int, Field(ge=0, lt=SEED_LIMIT)]


class Section(BaseModel):
    """Base of every config section: immutable, unknown keys rejected, floats finite, field docstrings kept."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True, allow_inf_nan=False)
