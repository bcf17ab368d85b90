"""When a claim can be judged at all: the net learned, no representation collapsed, enough probes
and seeds.

A claim about trained nets ("R_k falls with depth after training") says nothing about a net that
never learned the task, nor about a layer whose representation collapsed to a constant (its
denominator Z_k is then tiny and D_k, G_k explode). Each :class:`~.spec.Claim` therefore carries
:class:`Preconditions`, checked by the driver on exactly the rows its verdict read; a verdict whose
rows fail them is reported as **not evaluable, with the reason**, never as holds or does not hold.

The rules, with their numbers:

- **learned**: the trained net's test error is at most ``LEARNED_FRACTION`` (one half) of the
  chance error ``1 - 1 / classes`` (0.25 on a binary task, 0.45 with 10 classes);
- **no collapse**: at no representation ``k >= 1`` is the trained Z_k more than
  ``COLLAPSE_FACTOR`` (100, two orders of magnitude) below the same run's Z_k at initialisation;
- **enough probes**: at least ``MIN_PROBES`` probe images per measurement (the standard errors of
  D_k and G_k are then a few percent);
- **enough seeds**: at least ``min_seeds`` trained seeds, and ``min_init`` initialisations for an
  untrained value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

__all__ = [
    "COLLAPSE_FACTOR",
    "LEARNED_FRACTION",
    "MIN_PROBES",
    "Preconditions",
    "chance_error",
]

LEARNED_FRACTION = 0.5
COLLAPSE_FACTOR = 100.0
MIN_PROBES = 100
INIT, TRAINED = "init", "trained"


def chance_error(classes: int) -> float:
    """The test error of a constant guess on balanced classes: ``1 - 1 / classes``.

    >>> chance_error(2), chance_error(10)
    (0.5, 0.9)
    """
    return 1.0 - 1.0 / max(int(classes), 1)


@dataclass(frozen=True)
class Preconditions:
    """What a claim needs of the rows it reads before it can hold or fail.

    The rows are a figure's table restricted to one verdict's subject, with the columns
    ``state`` (``init`` / ``trained``), ``run``, ``seed``, ``layer``, ``k``, ``Z``, ``n`` (probes),
    ``test_error`` and ``chance_error`` where they apply; a check whose column is absent fails
    with that reason rather than pass silently.
    """

    learned: bool = True
    no_collapse: bool = True
    min_probes: int = MIN_PROBES
    min_seeds: int = 1
    min_init: int = 0

    def describe(self) -> str:
        """The preconditions in words, for the report."""
        parts = []
        if self.learned:
            parts.append(
                f"every trained net learned (test error <= {LEARNED_FRACTION:g} x chance error)"
            )
        if self.no_collapse:
            parts.append(
                f"no representation collapsed (trained Z_k >= Z_k at init / {COLLAPSE_FACTOR:g})"
            )
        parts.append(f">= {self.min_probes} probes")
        if self.min_seeds > 1:
            parts.append(f">= {self.min_seeds} trained seeds")
        if self.min_init > 1:
            parts.append(f">= {self.min_init} initialisations")
        return "; ".join(parts)

    def check(self, rows: pd.DataFrame) -> str | None:
        """``None`` when ``rows`` meet every precondition, else the first reason they do not."""
        if rows is None or len(rows) == 0:
            return "no measured rows to check the preconditions on"
        for reason in (
            self._probes(rows),
            self._seeds(rows),
            self._learned(rows) if self.learned else None,
            self._collapse(rows) if self.no_collapse else None,
        ):
            if reason:
                return reason
        return None

    def _probes(self, rows: pd.DataFrame) -> str | None:
        if "n" not in rows or rows["n"].isna().all():
            return "the number of probes is not recorded"
        fewest = int(rows["n"].min())
        if fewest < self.min_probes:
            return f"too few probes: {fewest} < {self.min_probes}"
        return None

    def _seeds(self, rows: pd.DataFrame) -> str | None:
        trained = rows[rows["state"] == TRAINED]
        if self.min_seeds and trained.empty and (self.learned or self.no_collapse):
            return "no trained run"
        seeds = trained["seed"].nunique() if "seed" in trained else 0
        if self.learned or self.no_collapse:
            if seeds < self.min_seeds:
                return f"too few trained seeds: {seeds} < {self.min_seeds}"
        if self.min_init > 1:
            inits = rows[rows["state"] == INIT]["seed"].nunique()
            if inits < self.min_init:
                return f"too few initialisations: {inits} < {self.min_init}"
        return None

    def _learned(self, rows: pd.DataFrame) -> str | None:
        trained = rows[rows["state"] == TRAINED]
        if "test_error" not in trained or "chance_error" not in trained:
            return "the test error or the chance error is not recorded"
        per_run = trained.groupby("run", sort=False)[["test_error", "chance_error"]].first()
        failed = per_run[~(per_run["test_error"] <= LEARNED_FRACTION * per_run["chance_error"])]
        if failed.empty:
            return None
        worst = failed["test_error"].max()
        limit = LEARNED_FRACTION * float(failed["chance_error"].iloc[0])
        return (
            f"the net did not learn: test error {worst:.3g} > {limit:.3g} (half the chance error) "
            f"in {len(failed)} of {len(per_run)} trained run(s)"
        )

    def _collapse(self, rows: pd.DataFrame) -> str | None:
        if "Z" not in rows:
            return "Z_k is not recorded"
        hidden = rows[rows["layer"] != "input"]
        if "k" in hidden:
            hidden = hidden[hidden["k"] >= 1]
        init = hidden[hidden["state"] == INIT].groupby(["run", "layer"])["Z"].mean()
        trained = hidden[hidden["state"] == TRAINED].set_index(["run", "layer"])["Z"]
        pairs = pd.concat([init.rename("init"), trained.rename("trained")], axis=1, join="inner")
        if pairs.empty:
            return "no representation measured both at initialisation and trained"
        fall = (pairs["init"] / pairs["trained"]).fillna(math.inf)  # 0 / 0: nothing left either
        worst = fall.idxmax()
        if fall[worst] > COLLAPSE_FACTOR:
            run, layer = worst
            return (
                f"a representation collapsed: Z at {layer} fell {fall[worst]:.3g}x below its "
                f"value at initialisation (limit {COLLAPSE_FACTOR:g}x)"
            )
        return None
