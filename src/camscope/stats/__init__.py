"""Mergeable statistics that dataset passes accumulate: quantile sketches, moments, reference banks."""
