"""Ground-truth data: synthetic fine-grained species with part masks, and scikit-learn's digits.

* :mod:`camscope.data.synthetic`: :class:`SyntheticSpecies`, a seeded generator of
  bird-like objects whose classes differ in known parts (masks for every part and
  for the parts that differ between any two classes).
* :mod:`camscope.data.digits`: :func:`load_digits_data`, scikit-learn's 8x8 digits
  upsampled bilinearly, with a fixed seeded train/test split.

The small models trained on both ship in :mod:`camscope.models.zoo`; :mod:`camscope.data.small_models`
rebuilds the data they were trained and tested on.
"""

from camscope.data.digits import DigitsData, load_digits_data
from camscope.data.synthetic import LEVELS, PARTS, SpeciesBatch, SpeciesPose, SyntheticSpecies

__all__ = ["LEVELS", "PARTS", "DigitsData", "SpeciesBatch", "SpeciesPose", "SyntheticSpecies", "load_digits_data"]
