"""gd.genome: the gene model shared by every layer (records, canonical encoding, keys)."""

from gd.genome.decision import Decision, MotorResult
from gd.genome.errors import DecodeError, SignatureError, ValidationError
from gd.genome.experience import Experience
from gd.genome.gene import Codon, Gene, GeneStatus, ShareScope, gene_id_for
from gd.genome.identity import NodeKey
from gd.genome.state import StateVector
from gd.genome.synapse import Synapse, SynapseKind

__all__ = [
    "Codon", "Decision", "DecodeError", "Experience", "Gene", "GeneStatus", "MotorResult",
    "NodeKey", "ShareScope", "SignatureError", "StateVector", "Synapse", "SynapseKind",
    "ValidationError", "gene_id_for",
]
