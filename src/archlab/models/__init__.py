"""archlab's models: one file per family, each a Config dataclass and the module."""

from archlab.models.bert import BERT, BERTClassifier, BERTConfig
from archlab.models.capsnet import CapsNet, CapsNetConfig
from archlab.models.cnn import ImageCNN, ImageCNNConfig, TextCNN, TextCNNConfig
from archlab.models.fusion import Fusion, FusionConfig, FusionOutput
from archlab.models.gan import DCGAN, GANConfig
from archlab.models.gat import GAT, GATConfig
from archlab.models.gcn import GCN, GCNConfig
from archlab.models.gpt import GPT, CausalTransformer, CausalTransformerConfig, GPTConfig
from archlab.models.kge import (
    KGE,
    ComplEx,
    DistMult,
    KGEConfig,
    RotatE,
    RotatEConfig,
    TransE,
    TransEConfig,
)
from archlab.models.mpnn import DMPNN, DMPNNEnsemble, MPNNConfig, MPNNEnsembleConfig
from archlab.models.rnn import RNNClassifier, RNNConfig, RNNSequenceConfig, RNNSequenceModel
from archlab.models.tcn import TCN, TCNConfig
from archlab.models.transformer import (
    Transformer,
    TransformerClassifier,
    TransformerClassifierConfig,
    TransformerConfig,
)

__all__ = [
    "ComplEx",
    "DistMult",
    "KGE",
    "KGEConfig",
    "RotatE",
    "RotatEConfig",
    "TransE",
    "TransEConfig",
    "BERT",
    "BERTClassifier",
    "BERTConfig",
    "CapsNet",
    "CausalTransformer",
    "CausalTransformerConfig",
    "CapsNetConfig",
    "DCGAN",
    "DMPNN",
    "DMPNNEnsemble",
    "Fusion",
    "FusionConfig",
    "FusionOutput",
    "GANConfig",
    "GAT",
    "GATConfig",
    "GCN",
    "GCNConfig",
    "GPT",
    "GPTConfig",
    "ImageCNN",
    "ImageCNNConfig",
    "MPNNConfig",
    "MPNNEnsembleConfig",
    "RNNClassifier",
    "RNNConfig",
    "RNNSequenceConfig",
    "RNNSequenceModel",
    "TCN",
    "TCNConfig",
    "TextCNN",
    "TextCNNConfig",
    "Transformer",
    "TransformerClassifier",
    "TransformerClassifierConfig",
    "TransformerConfig",
]
