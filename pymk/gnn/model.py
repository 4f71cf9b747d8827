"""Link-prediction encoders: GraphSAGE (default), GCN-style and GAT layers over sampled subgraphs.

Input features per user: a learnable id embedding, plus structural features (log degree) so a
user's representation is not only its id. A pair's score is the dot product of the two embeddings,
so Stage 1 can retrieve candidates by inner-product search over the final embeddings.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pymk.gnn.config import GnnConfig


def _conv(kind: str, d_in: int, d_out: int) -> nn.Module:
    from torch_geometric.nn import GATConv, GraphConv, SAGEConv

    if kind == "sage":
        return SAGEConv(d_in, d_out, aggr="mean")
    if kind == "gat":
        return GATConv(d_in, d_out // 4, heads=4, add_self_loops=False)
    # GCN-style: mean over neighbours plus a root term (GraphConv with mean aggregation): works on
    # bipartite sampled blocks, which GCNConv's symmetric normalisation does not
    return GraphConv(d_in, d_out, aggr="mean")


class LinkEncoder(nn.Module):
    """Embeds users from an id embedding + structural features through `layers` message-passing layers.

    Args:
        num_users: rows of the id embedding.
        config: `GnnConfig`.
        n_struct: number of structural feature columns.
    """

    def __init__(self, num_users: int, config: GnnConfig, n_struct: int = 1):
        super().__init__()
        self.config = config
        d = config.dim
        # sparse gradients: a step touches only the batch's rows, not all n x d of them
        self.emb = nn.Embedding(num_users, d, sparse=True)
        nn.init.normal_(self.emb.weight, std=0.1)
        self.struct = nn.Linear(n_struct, d)
        self.convs = nn.ModuleList(_conv(config.kind, d, d) for _ in range(config.layers))
        self.norms = nn.ModuleList(nn.LayerNorm(d) for _ in range(config.layers - 1))

    def features(self, nodes: torch.Tensor, struct: torch.Tensor) -> torch.Tensor:
        """Layer-0 input. Shapes: nodes (N,), struct (N, s) -> (N, d)."""
        return self.emb(nodes) + self.struct(struct)

    def layer(self, i: int, x_src: torch.Tensor, x_dst: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """One message-passing layer on a bipartite block (sources -> destinations)."""
        h = self.convs[i]((x_src, x_dst), edge_index)
        if i < len(self.convs) - 1:
            h = torch.relu(self.norms[i](h))
        return h

    def forward(self, nodes: torch.Tensor, struct: torch.Tensor, edge_index: torch.Tensor,
                num_sampled_nodes: list[int] | None = None, num_sampled_edges: list[int] | None = None
                ) -> torch.Tensor:
        """Embeddings of the nodes of a sampled subgraph (the seeds are its first rows).

        With the per-hop counts of a `SamplerOutput`, layer i only computes the nodes within
        L - 1 - i hops of the seeds (the rest are never read again), and the output has the seeds'
        rows only; without them every node is computed.
        Shapes: nodes (N,), struct (N, s), edge_index (2, E) local -> (N or B, d).
        """
        x0 = x = self.features(nodes, struct)
        n_layers = len(self.convs)
        for i in range(n_layers):
            if num_sampled_nodes is None:
                x = self.layer(i, x, x, edge_index)
                continue
            keep_n = sum(num_sampled_nodes[: n_layers - i])
            keep_e = sum(num_sampled_edges[: n_layers - i])
            x = self.layer(i, x, x[:keep_n], edge_index[:, :keep_e])
        return x + x0[: x.shape[0]] if self.config.skip else x


def structural_features(degree: np.ndarray) -> np.ndarray:
    """Per-user structural inputs. Shapes: (n,) -> (n, 1) float32: log(1 + degree), centred."""
    f = np.log1p(np.asarray(degree, np.float32))[:, None]
    return (f - f.mean()) / max(float(f.std()), 1e-6)
