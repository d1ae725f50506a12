"""Dataset accumulators that know their model: :class:`ReferenceBank` (DiffCAM's per-class statistics of a layer).

An accumulator is filled by one pass over a dataset (:meth:`ReferenceBank.build` runs the model), updated
batch by batch, merged exactly across shards, saved and loaded; the mergeable maths it is made of (class
moments, reference groups, sketches) lives in :mod:`camscope.stats`, which never runs a model.
"""

from camscope.accumulators.reference_bank import DEFAULT_K, GROUP_KINDS, ReferenceBank

__all__ = ["DEFAULT_K", "GROUP_KINDS", "ReferenceBank"]
