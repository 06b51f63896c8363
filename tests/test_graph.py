"""Graph ops and GCN/GAT against PyTorch Geometric (random weights, tight tolerances)."""

import pytest
import torch

import archlab
from archlab.errors import ShapeError
from archlab.models import gat
from archlab.nn.graph import (
    EdgeList,
    Readout,
    SparsePattern,
    SparseTensor,
    add_remaining_self_loops,
    add_self_loops,
    as_features,
    check_graph,
    dropout,
    edge_weighted_sum,
    gcn_norm,
    linear,
    per_head_linear,
    scatter,
    segment_softmax,
    spmm,
    to_sparse_csr,
)

pyg = pytest.importorskip("torch_geometric", reason="torch_geometric is the reference (test extra)")
from torch_geometric.nn import GATConv, GCNConv  # noqa: E402
from torch_geometric.utils import softmax as pyg_softmax  # noqa: E402

# 7 nodes: node 6 is isolated, 2 -> 2 is an existing self-loop, 0 -> 1 appears twice
EDGES = torch.tensor([[0, 0, 1, 2, 3, 4, 0, 2, 5], [1, 1, 2, 2, 4, 3, 3, 0, 0]])
N = 7


def test_scatter_reductions_match_pyg() -> None:
    src, index = torch.randn(20, 3), torch.randint(0, 6, (20,))
    for reduce in ("sum", "mean", "max"):
        ours = scatter(src, index, 8, reduce)
        ref = pyg.utils.scatter(src, index, 0, dim_size=8, reduce=reduce)
        torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-6)


def test_segment_softmax_matches_pyg_and_sums_to_one() -> None:
    scores, index = torch.randn(30, 4) * 10, torch.randint(0, 5, (30,))
    ours = segment_softmax(scores, index, 6)
    torch.testing.assert_close(ours, pyg_softmax(scores, index, num_nodes=6))
    order = index.argsort(stable=True)  # the streaming path for sorted targets agrees
    counts = torch.bincount(index, minlength=6)
    sorted_path = segment_softmax(scores[order], index[order], 6, counts)
    torch.testing.assert_close(sorted_path, ours[order])
    sums = scatter(ours, index, 6, "sum")
    present = torch.bincount(index, minlength=6) > 0
    torch.testing.assert_close(sums[present], torch.ones(int(present.sum()), 4))


def test_self_loops_and_gcn_norm_match_pyg() -> None:
    weight = torch.rand(EDGES.shape[1])
    ours = add_remaining_self_loops(EDGES, N, weight)
    ref = pyg.utils.add_remaining_self_loops(EDGES, weight, 1.0, N)
    assert torch.equal(ours[0], ref[0])
    torch.testing.assert_close(ours[1], ref[1])
    from torch_geometric.nn.conv.gcn_conv import gcn_norm as pyg_gcn_norm

    e, w = gcn_norm(EDGES, N)
    e_ref, w_ref = pyg_gcn_norm(EDGES, None, N)
    assert torch.equal(e, e_ref)
    torch.testing.assert_close(w, w_ref)


def test_spmm_matches_dense_and_its_gradients_check() -> None:
    pattern = SparsePattern(EDGES[1], EDGES[0], (N, N))  # duplicates and a loop included
    values = torch.rand(EDGES.shape[1], dtype=torch.double, requires_grad=True)
    x = torch.randn(N, 3, dtype=torch.double, requires_grad=True)
    dense = torch.zeros(N, N, dtype=torch.double).index_put(
        (EDGES[1], EDGES[0]), values[pattern.order.argsort()], accumulate=True
    )
    torch.testing.assert_close(spmm(pattern, values, x), dense @ x)
    assert torch.autograd.gradcheck(lambda v, h: spmm(pattern, v, h), (values, x))


def test_rectangular_sparse_features_matmul() -> None:
    x = (torch.rand(6, 9) < 0.3).double() * torch.rand(6, 9, dtype=torch.double)
    weight = torch.randn(9, 4, dtype=torch.double, requires_grad=True)
    sparse = SparseTensor.from_csr(to_sparse_csr(x))
    torch.testing.assert_close(sparse @ weight, x @ weight)
    assert torch.autograd.gradcheck(lambda w: sparse @ w, (weight,))


def test_edge_weighted_sum_against_gather_and_gradcheck() -> None:
    edges = EdgeList(EDGES, N)
    alpha = torch.rand(EDGES.shape[1], 2, dtype=torch.double, requires_grad=True)
    x = torch.randn(N, 2, 3, dtype=torch.double, requires_grad=True)
    ref = torch.zeros(N, 2, 3, dtype=torch.double).index_add(
        0, edges.target, alpha[:, :, None] * x[edges.source]
    )
    torch.testing.assert_close(edge_weighted_sum(edges, alpha, x), ref)
    assert torch.autograd.gradcheck(lambda a, b: edge_weighted_sum(edges, a, b), (alpha, x))


def test_sparse_dropout_keeps_zeros_and_scales() -> None:
    x = (torch.rand(50, 40) < 0.1).float()
    sparse = SparseTensor.from_csr(to_sparse_csr(x))
    out = sparse.dropout(0.5, True) @ torch.eye(40)
    assert torch.all(out[x == 0] == 0)
    kept = out[x == 1]
    assert set(kept.unique().tolist()) <= {0.0, 2.0} and 0 < (kept == 0).float().mean() < 1
    assert torch.equal(dropout(sparse, 0.5, False) @ torch.eye(40), x)


@pytest.mark.parametrize("sparse_input", [False, True])
def test_gcn_layer_matches_pyg_gcnconv(sparse_input: bool) -> None:
    model = archlab.create_model("gcn", in_dim=5, hidden_dim=6, out_dim=4, n_layer=2).eval()
    x = torch.randn(N, 5)
    h = x
    refs = [GCNConv(5, 6), GCNConv(6, 4)]
    for layer, ref in zip(model.layers, refs, strict=True):
        with torch.no_grad():
            ref.lin.weight.copy_(layer.W.weight)
            ref.bias.copy_(torch.randn(ref.bias.shape))
            layer.bias.copy_(ref.bias)
    h = refs[1](refs[0](x, EDGES).relu(), EDGES)
    ours = model(to_sparse_csr(x) if sparse_input else x, EDGES)
    torch.testing.assert_close(ours, h, atol=1e-5, rtol=1e-5)


def _copy_gat(ours, ref) -> None:
    with torch.no_grad():
        ref.lin.weight.copy_(ours.W.weight)
        ref.att_src.copy_(ours.a_src.unsqueeze(0))
        ref.att_dst.copy_(ours.a_dst.unsqueeze(0))
        ours.bias.copy_(torch.randn(ours.bias.shape))
        ref.bias.copy_(ours.bias)


@pytest.mark.parametrize("concat", [True, False])
def test_gat_layer_matches_pyg_gatconv_with_attention(concat: bool) -> None:
    model = archlab.create_model("gat", in_dim=5, hidden_dim=3, heads=4, out_dim=3, n_layer=1)
    model.eval()
    ours_layer = gat.GATConv(5, 3, 4, concat=concat)
    ref = GATConv(5, 3, heads=4, concat=concat)
    _copy_gat(ours_layer, ref)
    ours_layer.eval(), ref.eval()
    x = torch.randn(N, 5)
    edges = model.graph(EDGES, N)
    out, alpha = ours_layer(x, edges, return_attention=True)
    out_ref, (e_ref, alpha_ref) = ref(x, EDGES, return_attention_weights=True)
    torch.testing.assert_close(out, out_ref, atol=1e-5, rtol=1e-5)
    # same coefficient on each edge: compare in one (target, source) order
    order = (e_ref[1] * N + e_ref[0]).argsort(stable=True)
    assert torch.equal(edges.edge_index, e_ref[:, order])
    torch.testing.assert_close(alpha, alpha_ref[order], atol=1e-6, rtol=1e-5)


def test_gat_model_matches_two_pyg_layers() -> None:
    model = archlab.create_model("gat", in_dim=5, hidden_dim=3, heads=2, out_dim=4, out_heads=2)
    model.eval()
    refs = [GATConv(5, 3, heads=2), GATConv(6, 4, heads=2, concat=False)]
    for layer, ref in zip(model.layers, refs, strict=True):
        _copy_gat(layer, ref)
    x = torch.randn(N, 5)
    expected = refs[1](torch.nn.functional.elu(refs[0](x, EDGES)), EDGES)
    torch.testing.assert_close(model(x, EDGES), expected, atol=1e-5, rtol=1e-5)


def _bag_of_words(sparse: bool) -> torch.Tensor:
    """(N, 6) features, about half of them zero, node 3 none; dense or sparse CSR."""
    x = (torch.rand(N, 6) < 0.5) * torch.rand(N, 6)
    x[3] = 0
    return to_sparse_csr(x) if sparse else x


@pytest.mark.parametrize("sparse", [False, True])
def test_per_head_linear_drops_each_heads_input_on_its_own(sparse: bool) -> None:
    x, heads, p = as_features(_bag_of_words(sparse)), 64, 0.5
    dense = x @ torch.eye(6) if sparse else x
    # W_k = [I; R_k]: outputs 0..5 of head k are its dropped input x_k, 6..8 are x_k R_k^T
    R = torch.randn(heads, 3, 6)
    weight = torch.cat([torch.eye(6).expand(heads, 6, 6), R], dim=1).reshape(-1, 6)
    out = per_head_linear(x, weight, heads, p, training=True)
    assert out.shape == (N, heads, 9)
    x_k = out[..., :6]
    kept = x_k != 0
    assert torch.equal(x_k[kept], (dense.expand(heads, N, 6).transpose(0, 1) / (1 - p))[kept])
    assert not kept[:, :, dense.sum(0) == 0].any() and not kept[3].any()  # zeros stay zeros
    rate = kept.sum() / ((dense != 0).sum() * heads)
    assert 0.4 < rate < 0.6
    masks = kept.transpose(0, 1).flatten(1)
    assert len({tuple(m.tolist()) for m in masks}) > heads - 3  # (almost) every head its own
    torch.testing.assert_close(out[..., 6:], torch.einsum("nkf,kcf->nkc", x_k, R))
    # without dropout: x W^T, values and gradients, sparse or dense
    weight = torch.randn(heads * 2, 6, requires_grad=True)
    ours = per_head_linear(x, weight, heads, p, training=False)
    ref = linear(dense, weight).view(N, heads, 2)
    torch.testing.assert_close(ours, ref)
    g = torch.randn_like(ref)
    (grad,) = torch.autograd.grad((ours * g).sum(), weight)
    torch.testing.assert_close(grad, torch.autograd.grad((ref * g).sum(), weight)[0])


def _gat_pair(**kw) -> tuple[torch.nn.Module, torch.nn.Module]:
    shared = archlab.create_model("gat", in_dim=6, hidden_dim=2, heads=3, out_dim=4, **kw)
    per_head = archlab.create_model(
        "gat", in_dim=6, hidden_dim=2, heads=3, out_dim=4, per_head_dropout=True, **kw
    )
    per_head.load_state_dict(shared.state_dict())
    return shared, per_head


@pytest.mark.parametrize("sparse", [False, True])
def test_per_head_dropout_is_each_head_on_its_own_dropped_input(sparse: bool) -> None:
    x, heads, p = _bag_of_words(sparse), 3, 0.5
    layer = gat.GATConv(6, 2, heads, dropout=p, per_head_dropout=True)
    edges = EdgeList(add_self_loops(EDGES, N)[0], N)
    torch.manual_seed(0)
    out = layer(as_features(x), edges).view(N, heads, 2)
    torch.manual_seed(0)  # the same masks: head k's dropped copy of x
    eye = torch.eye(6).repeat(heads, 1)
    x_k = per_head_linear(as_features(x), eye, heads, p, training=True)
    assert not torch.equal(x_k[:, 0], x_k[:, 1])
    for k in range(heads):  # head k alone, as a one-head layer, on x_k
        one = gat.GATConv(6, 2, 1).eval()
        with torch.no_grad():
            one.W.weight.copy_(layer.W.weight[2 * k : 2 * k + 2])
            one.a_src.copy_(layer.a_src[k : k + 1])
            one.a_dst.copy_(layer.a_dst[k : k + 1])
            one.bias.copy_(layer.bias[2 * k : 2 * k + 2])
        torch.testing.assert_close(out[:, k], one(x_k[:, k], edges), atol=1e-6, rtol=1e-5)
    # in eval mode, or with nothing to drop, it is the plain GAT
    shared, per_head = _gat_pair()
    torch.testing.assert_close(per_head.eval()(x, EDGES), shared.eval()(x, EDGES))
    shared, per_head = _gat_pair(dropout=0.0, attn_dropout=0.0)
    torch.testing.assert_close(per_head.train()(x, EDGES), shared.train()(x, EDGES))
    torch.manual_seed(1)  # and in training it is not
    shared, per_head = _gat_pair(attn_dropout=0.0)
    torch.manual_seed(2)
    a = shared.train()(x, EDGES)
    torch.manual_seed(2)
    assert not torch.allclose(per_head.train()(x, EDGES), a)


def test_attention_bias_sits_inside_the_leaky_relu_as_in_the_authors_code() -> None:
    """The authors' dense attn_head, transcribed: softmax_j(LeakyReLU(f1_i + f2_j + b) + mask)."""
    heads, C = 2, 3
    layer = gat.GATConv(5, C, heads, attention_bias=True).eval()
    plain = gat.GATConv(5, C, heads).eval()
    plain.load_state_dict(layer.state_dict(), strict=False)
    x = torch.randn(N, 5)
    unique = EDGES.unique(dim=1)  # a dense adjacency cannot hold the duplicate edge
    edges = archlab.create_model("gat", in_dim=5, out_dim=C).graph(unique, N)
    assert torch.equal(layer(x, edges), plain(x, edges))  # b starts at zero
    with torch.no_grad():
        layer.attn_bias.copy_(torch.tensor([1.5, -2.0]))
        layer.bias.normal_()
    out, alpha = layer(x, edges, return_attention=True)

    Wh = layer.W(x).view(N, heads, C)
    f1 = (Wh * layer.a_dst).sum(-1)  # (N, heads): the target's half
    f2 = (Wh * layer.a_src).sum(-1)  # the source's half
    logits = f1.t()[:, :, None] + f2.t()[:, None, :] + layer.attn_bias[:, None, None]
    adjacency = torch.zeros(N, N, dtype=torch.bool)
    adjacency[edges.target, edges.source] = True  # [i, j]: an edge j -> i
    bias_mat = torch.where(adjacency, 0.0, -1e9)
    coefs = torch.softmax(torch.nn.functional.leaky_relu(logits, 0.2) + bias_mat, dim=-1)
    expected = torch.einsum("hij,jhc->ihc", coefs, Wh).flatten(1) + layer.bias
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(alpha, coefs[:, edges.target, edges.source].t())
    _, alpha_plain = plain(x, edges, return_attention=True)
    assert (alpha - alpha_plain).abs().max() > 1e-3  # the bias moves the kink: alpha changes


@pytest.mark.parametrize("name", ["gcn", "gat"])
@pytest.mark.parametrize("readout", ["sum", "mean", "max", "attention"])
def test_graph_level_readout_is_per_graph(name: str, readout: str) -> None:
    model = archlab.create_model(name, in_dim=4, hidden_dim=4, out_dim=2, readout=readout).eval()
    a = (torch.randn(3, 4), torch.tensor([[0, 1], [1, 2]]))
    b = (torch.randn(2, 4), torch.tensor([[0], [1]]))
    x = torch.cat([a[0], b[0]])
    edge_index = torch.cat([a[1], b[1] + 3], dim=1)
    batch = torch.tensor([0, 0, 0, 1, 1])
    both = model(x, edge_index, batch, 2)
    torch.testing.assert_close(both[0], model(*a)[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(both[1], model(*b)[0], atol=1e-5, rtol=1e-5)


def test_attention_readout_weights_sum_to_one() -> None:
    readout = Readout("attention", 3)
    x = torch.ones(4, 3)  # identical nodes: attention pooling is then their mean
    torch.testing.assert_close(readout(x, torch.tensor([0, 0, 1, 1]), 2), torch.ones(2, 3))


@pytest.mark.parametrize(
    "edge_index, message",
    [
        (torch.tensor([[0, 1], [1, 7]]), "refers to node 7"),
        (torch.tensor([[0, -1], [1, 2]]), "refers to node -1"),
        (torch.tensor([[0.0, 1.0], [1.0, 2.0]]), "integer node ids"),
        (torch.tensor([0, 1, 2]), "shape (2, edges)"),
    ],
)
def test_bad_edge_index_gets_a_clear_error(edge_index, message: str) -> None:
    with pytest.raises(ShapeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_graph(torch.randn(3, 2), edge_index)
    model = archlab.create_model("gcn", in_dim=2)
    with pytest.raises(ShapeError):
        model(torch.randn(3, 2), edge_index)


def test_wrong_feature_width_and_empty_graph() -> None:
    model = archlab.create_model("gat", in_dim=4)
    with pytest.raises(ShapeError, match="expects 4 node features, got 3"):
        model(torch.randn(5, 3), torch.tensor([[0], [1]]))
    with pytest.raises(ShapeError, match="empty"):
        model(torch.randn(0, 4), torch.zeros(2, 0, dtype=torch.long))
