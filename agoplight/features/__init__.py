"""Framework-free maths of agoplight: layer discovery, AGOP estimators, NFM, matrix powers, correlations.

Nothing here imports Lightning; the callbacks, modules and RFM build on it.
"""

from agoplight.features.agop import agop, agop_from_sums, agop_sums, default_forward, measurement_mode
from agoplight.features.correlation import cosine, nfa_correlations, pearson
from agoplight.features.layers import Layer, View, find_layers, find_views, layer_names
from agoplight.features.linalg import Spectrum, all_finite, effective_rank, eigenvalues, gram, psd_power
from agoplight.features.nfm import nfm, nfm_of

__all__ = [
    "Layer",
    "Spectrum",
    "View",
    "agop",
    "all_finite",
    "agop_from_sums",
    "agop_sums",
    "cosine",
    "default_forward",
    "effective_rank",
    "eigenvalues",
    "find_layers",
    "find_views",
    "gram",
    "layer_names",
    "measurement_mode",
    "nfa_correlations",
    "nfm",
    "nfm_of",
    "pearson",
    "psd_power",
]
