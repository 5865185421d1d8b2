"""Neural architecture search for video: operators, search spaces, supernet, genotypes, derived networks."""

from autovid.nas.genotype import Genotype, derive_genotype
from autovid.nas.network import Network
from autovid.nas.ops import OPS, list_ops
from autovid.nas.sampling import sample_genotype
from autovid.nas.search_space import SearchSpace, list_search_spaces, load_search_space
from autovid.nas.supernet import SuperNet

__all__ = [
    "OPS",
    "Genotype",
    "Network",
    "SearchSpace",
    "SuperNet",
    "derive_genotype",
    "list_ops",
    "list_search_spaces",
    "load_search_space",
    "sample_genotype",
]
