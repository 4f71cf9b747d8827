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
from pymk.gnn.dropout import input_dropout


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
        community: (num_users,) community label per user when `config.communities` > 0.
    """

    def __init__(self, num_users: int, config: GnnConfig, n_struct: int = 1, community: np.ndarray | None = None):
        super().__init__()
        self.config = config
        d = config.dim
        # sparse gradients: a step touches only the batch's rows, not all n x d of them
        self.emb = nn.Embedding(num_users, d, sparse=True)
        nn.init.normal_(self.emb.weight, std=0.1)
        self.struct = nn.Linear(n_struct, d)
        self.comm = None
        if config.communities > 0:
            labels = np.zeros(num_users, np.int64) if community is None else np.asarray(community, np.int64)
            self.register_buffer("community", torch.from_numpy(labels))  # saved in checkpoints
            self.comm = nn.Embedding(config.communities, d)
            nn.init.normal_(self.comm.weight, std=0.1)
        self.convs = nn.ModuleList(_conv(config.kind, d, d) for _ in range(config.layers))
        self.norms = nn.ModuleList(nn.LayerNorm(d) for _ in range(config.layers - 1))

    def features(self, nodes: torch.Tensor, struct: torch.Tensor) -> torch.Tensor:
        """Layer-0 input. Shapes: nodes (N,), struct (N, s) -> (N, d)."""
        x = self.emb(nodes) + self.struct(struct)
        return x + self.comm(self.community[nodes]) if self.comm is not None else x

    def layer(self, i: int, x_src: torch.Tensor, x_dst: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """One message-passing layer on a bipartite block (sources -> destinations)."""
        return self.activate(i, self.convs[i]((x_src, x_dst), edge_index))

    def activate(self, i: int, h: torch.Tensor) -> torch.Tensor:
        """What follows layer i's convolution: LayerNorm + ReLU on hidden layers, nothing on the last."""
        return torch.relu(self.norms[i](h)) if i < len(self.convs) - 1 else h

    @property
    def mean_aggregating(self) -> bool:
        """Whether every layer is a function of its destinations' neighbour means (sage, gcn; not gat)."""
        from torch_geometric.nn import GraphConv, SAGEConv

        return all(isinstance(c, GraphConv) or (isinstance(c, SAGEConv) and not c.project) for c in self.convs)

    def conv_from_mean(self, i: int, mean: torch.Tensor, x_dst: torch.Tensor) -> torch.Tensor | None:
        """Layer i's output from its destinations' neighbour means, for the mean-aggregating kinds (sage,
        gcn); None for gat. Equals `layer` on the full neighbourhoods. Shapes: (t, d), (t, d) -> (t, d)."""
        from torch_geometric.nn import GraphConv, SAGEConv

        conv = self.convs[i]
        if isinstance(conv, SAGEConv) and not conv.project:
            out = conv.lin_l(mean)
            if conv.root_weight:
                out = out + conv.lin_r(x_dst)
            h = torch.nn.functional.normalize(out, p=2.0, dim=-1) if conv.normalize else out
        elif isinstance(conv, GraphConv):
            h = conv.lin_rel(mean) + conv.lin_root(x_dst)
        else:
            return None
        return self.activate(i, h)

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
        if self.config.dropout > 0:
            x = input_dropout(x, self.config.dropout, self.training)
        n_layers = len(self.convs)
        for i in range(n_layers):
            if num_sampled_nodes is None:
                x = self.layer(i, x, x, edge_index)
                continue
            keep_n = sum(num_sampled_nodes[: n_layers - i])
            keep_e = sum(num_sampled_edges[: n_layers - i])
            x = self.layer(i, x, x[:keep_n], edge_index[:, :keep_e])
        return x + x0[: x.shape[0]] if self.config.skip else x


def neighbour_mean(ptr: np.ndarray, idx: np.ndarray, x: torch.Tensor) -> torch.Tensor:
    """Mean of `x` over each row's neighbours (0 for none), as one CSR x dense product: no (E, d) gather.

    Shapes: ptr (t + 1,) int64, idx (E,) int64 rows of x, x (n, d) -> (t, d).
    """
    import warnings

    t = ptr.size - 1
    if idx.size == 0:
        return torch.zeros(t, x.shape[1], dtype=x.dtype, device=x.device)
    lens = np.diff(ptr)
    weights = np.repeat(1.0 / np.maximum(lens, 1), lens).astype(np.float32)
    with warnings.catch_warnings():  # "CSR support is in beta": the product used here is stable
        warnings.simplefilter("ignore", UserWarning)
        a = torch.sparse_csr_tensor(torch.from_numpy(np.asarray(ptr, np.int64)),
                                    torch.from_numpy(np.asarray(idx, np.int64)), torch.from_numpy(weights),
                                    size=(t, x.shape[0]), check_invariants=False)
    return torch.sparse.mm(a, x)


def community_labels(graph, config: GnnConfig) -> np.ndarray | None:
    """METIS communities (balanced on adjacency entries) as a structural input, or None when off."""
    if config.communities <= 0:
        return None
    from pymk.graph.partition import community_partition

    return community_partition(graph, min(config.communities, graph.num_users)).astype(np.int64)


def input_features(graph, config: GnnConfig) -> np.ndarray:
    """Per-user inputs besides the id embedding: log degree, plus the columns of `config.features`.

    Feature-file columns are standardised; users absent from the file get 0 and a 0 in an extra
    "has features" column. Shapes: -> (n, s) float32.
    """
    cols = [structural_features(graph.degree)]
    if config.features:
        cols.append(_feature_file(config.features, graph))
    return np.concatenate(cols, axis=1).astype(np.float32)


def _feature_file(path: str, graph) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    table = pq.read_table(path) if path.endswith((".parquet", ".pq")) else pcsv.read_csv(path)
    if "user_id" not in table.column_names:
        raise ValueError(f"{path}: feature file needs a user_id column (has {table.column_names})")
    idx = graph.index_of(table.column("user_id").to_numpy())
    names = [c for c in table.column_names if c != "user_id"]
    out = np.zeros((graph.num_users, len(names) + 1), np.float32)
    known = idx >= 0
    for j, name in enumerate(names):
        col = table.column(name)
        if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
            raise ValueError(f"{path}: feature column {name!r} is {col.type}, not numeric")
        v = pc.fill_null(col, 0).to_numpy(zero_copy_only=False).astype(np.float32)[known]
        out[idx[known], j] = (v - v.mean()) / max(float(v.std()), 1e-6)
    out[idx[known], -1] = 1.0
    return out


def degree_stats(degree: np.ndarray) -> tuple[float, float]:
    """(mean, std) of log(1 + degree): the standardisation `structural_features` applies."""
    f = np.log1p(np.asarray(degree, np.float32))
    return (float(f.mean()), max(float(f.std()), 1e-6)) if f.size else (0.0, 1.0)


def structural_features(degree: np.ndarray, stats: tuple[float, float] | None = None) -> np.ndarray:
    """Per-user structural inputs. Shapes: (n,) -> (n, 1) float32: log(1 + degree), centred.

    stats: (mean, std) to standardise with (default: this degree array's own), so a few users whose
    degree changed can be re-featured as the whole graph was (the streaming refresh)."""
    f = np.log1p(np.asarray(degree, np.float32))[:, None]
    mean, std = degree_stats(degree) if stats is None else stats
    return ((f - mean) / std).astype(np.float32)
