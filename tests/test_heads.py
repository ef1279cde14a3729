"""Unit tests of the classification heads, parametrised over every registered head."""
from __future__ import annotations

import json

import pytest
import torch

from mmgenre.errors import InputError
from mmgenre.heads import HEADS, Head, build_head, list_heads, modality_dropout, register_head

DIMS = {"text": 16, "image": 12, "detector": 8}
B, T, R, G = 6, 7, 4, 5
EXPECTED_ORDER = ["text_only", "image_only", "detection_only", "early_fusion", "late_fusion",
                  "attention_fusion", "gmu", "cross_attention", "detection_fusion"]
ALL = list_heads()


def make_batch(n: int = B, seed: int = 0, has_text=None, has_image=None) -> dict[str, torch.Tensor]:
    """Random features; by default rows 1, 4, ... lack a poster and row 2 lacks a plot."""
    g = torch.Generator().manual_seed(seed)
    if has_text is None:
        has_text = torch.ones(n, dtype=torch.bool)
        has_text[2] = False
    if has_image is None:
        has_image = torch.ones(n, dtype=torch.bool)
        has_image[1::3] = False
    text_mask = torch.arange(T).expand(n, T) < torch.randint(2, T + 1, (n, 1), generator=g)
    text_mask = text_mask & has_text.unsqueeze(1)
    img = has_image.float()
    return {
        "text": torch.randn(n, DIMS["text"], generator=g) * has_text.float().unsqueeze(1),
        "text_tokens": torch.randn(n, T, DIMS["text"], generator=g) * text_mask.unsqueeze(-1),
        "text_mask": text_mask,
        "image": torch.randn(n, DIMS["image"], generator=g) * 3.0 * img.unsqueeze(1),
        "image_regions": torch.randn(n, R, DIMS["image"], generator=g) * img[:, None, None],
        # counts and pixel areas: very different scales
        "detector": torch.cat([torch.randint(0, 5, (n, 4), generator=g).float(),
                          torch.rand(n, 4, generator=g) * 1e4], dim=1) * img.unsqueeze(1),
        "has_text": has_text,
        "has_image": has_image,
    }


def small(name: str, **kw) -> Head:
    torch.manual_seed(0)
    return build_head(name, DIMS, G, hidden=16, **kw)


def test_registry_order_and_names():
    assert ALL[:len(EXPECTED_ORDER)] == EXPECTED_ORDER
    for name, cls in HEADS.items():
        assert cls.name == name
        assert set(cls.modalities) <= {"text", "image", "detector"}


def test_unknown_head_lists_known_names():
    with pytest.raises(InputError) as err:
        build_head("no_such_head", DIMS)
    for name in ALL:
        assert name in str(err.value)


def test_register_head_rejects_a_second_class_under_a_taken_name():
    with pytest.raises(ValueError):
        register_head("gmu")(type("Other", (Head,), {}))


@pytest.mark.parametrize("name", ALL)
def test_missing_dims_and_bad_hparams_raise(name):
    needed = HEADS[name].modalities
    with pytest.raises(InputError, match=needed[-1]):
        build_head(name, {m: d for m, d in DIMS.items() if m != needed[-1]})
    with pytest.raises(InputError, match="hiden"):
        build_head(name, DIMS, hiden=8)


@pytest.mark.parametrize("name", ALL)
def test_bad_batch_raises_input_error(name):
    head = small(name).eval()
    batch = make_batch()
    key = HEADS[name].input_keys()[-1]
    with pytest.raises(InputError, match=key):
        head({k: v for k, v in batch.items() if k != key})
    wrong = dict(batch)
    wrong[key] = torch.zeros(*batch[key].shape[:-1], batch[key].shape[-1] + 1)
    with pytest.raises(InputError, match=key):
        head(wrong)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("case", ["mixed", "no_image", "no_text", "nothing"])
def test_logits_shape_and_finite(name, case):
    has_text = has_image = None
    if case in ("no_image", "nothing"):
        has_image = torch.zeros(B, dtype=torch.bool)
    if case in ("no_text", "nothing"):
        has_text = torch.zeros(B, dtype=torch.bool)
    batch = make_batch(has_text=has_text, has_image=has_image)
    head = small(name)
    for mode in (head.train, head.eval):
        mode()
        out = head(batch)
        assert out.logits.shape == (B, G)
        assert torch.isfinite(out.logits).all()
        for key, value in out.extras.items():
            assert value.shape[0] == B, key
            assert torch.isfinite(value).all(), key
    out.logits.sum().backward()  # backward through fully-masked attention must be finite too
    for pname, p in head.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), pname


@pytest.mark.parametrize("name", ALL)
def test_training_reduces_loss(name):
    """~25 Adam steps on a learnable target (sign of the first feature of a present modality)."""
    batch = make_batch(n=32, seed=1)
    mod = HEADS[name].modalities[0]
    source = batch[mod] if mod != "detector" else batch["detector"] - batch["detector"].mean(0)
    y = (source[:, :G] > 0).float()
    head = small(name, dropout=0.1)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)

    def eval_loss() -> float:
        head.eval()
        with torch.no_grad():
            return loss_fn(head(batch).logits, y).item()

    before = eval_loss()
    for _ in range(25):
        head.train()
        opt.zero_grad()
        loss_fn(head(batch).logits, y).backward()
        opt.step()
    assert eval_loss() < 0.8 * before


@pytest.mark.parametrize("name", ALL)
def test_hparams_round_trip(name):
    head = small(name, dropout=0.05)
    # Perturb the weights so that a default-initialised rebuild would differ.
    with torch.no_grad():
        for p in head.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    h = json.loads(json.dumps(head.hparams()))
    assert h["hidden"] == 16 and h["dropout"] == 0.05
    rebuilt = build_head(name, DIMS, G, **h)
    rebuilt.load_state_dict(head.state_dict())
    batch = make_batch()
    head.eval(), rebuilt.eval()
    a, b = head(batch), rebuilt(batch)
    torch.testing.assert_close(a.logits, b.logits, rtol=0, atol=0)
    assert a.extras.keys() == b.extras.keys()


@pytest.mark.parametrize("name", ALL)
def test_gradients_reach_inputs(name):
    head = small(name).eval()
    batch = make_batch()
    keys = HEADS[name].input_keys()
    for k in keys:
        batch[k] = batch[k].clone().requires_grad_(True)
    head(batch).logits.sum().backward()
    for k in keys:
        grad = batch[k].grad
        assert grad is not None and torch.isfinite(grad).all(), k
        assert grad.abs().sum() > 0, k
    if "image_regions" in keys:
        missing = ~batch["has_image"]
        assert batch["image_regions"].grad[~missing].abs().sum() > 0
        # Regions of a movie without a poster are masked, so they get no gradient.
        assert batch["image_regions"].grad[missing].abs().sum() == 0


def _weights_and_present(name: str, batch) -> tuple[torch.Tensor, torch.Tensor]:
    out = small(name).eval()(batch)
    present = torch.stack([batch["has_text"], batch["has_image"], batch["has_image"]], dim=1)
    return out.extras["modality_weights"], present[:, :len(HEADS[name].modalities)]


@pytest.mark.parametrize("name", [n for n in ALL if n in ("late_fusion", "attention_fusion",
                                                         "detection_fusion")])
def test_modality_weights(name):
    batch = make_batch()
    batch["has_text"][0] = False
    batch["has_image"][0] = False  # row 0: nothing at all -> weights over placeholders
    w, present = _weights_and_present(name, batch)
    if w.dim() == 3:  # late fusion: per genre
        assert w.shape == (B, 2, G)
        present = present.unsqueeze(-1).expand_as(w)
    else:
        assert w.shape == (B, len(HEADS[name].modalities))
    torch.testing.assert_close(w.sum(dim=1), torch.ones_like(w.sum(dim=1)))
    assert (w >= 0).all()
    real = present.flatten(1).any(dim=1)
    assert (w[real][~present[real]] == 0).all()
    assert (w[real][present[real]] > 0).all()


def test_late_fusion_per_modality_logits():
    out = small("late_fusion").eval()(make_batch())
    w = out.extras["modality_weights"]
    mixed = w[:, 0] * out.extras["logits_text"] + w[:, 1] * out.extras["logits_image"]
    torch.testing.assert_close(out.logits, mixed)


def test_gmu_gate():
    batch = make_batch()
    out = small("gmu").eval()(batch)
    z = out.extras["gate"]
    assert z.shape == (B, 16) and ((z >= 0) & (z <= 1)).all()
    torch.testing.assert_close(out.extras["gate_text_share"], z.mean(dim=1))
    only_text = batch["has_text"] & ~batch["has_image"]
    only_image = batch["has_image"] & ~batch["has_text"]
    assert only_text.any() and only_image.any()
    assert (z[only_text] == 1).all() and (z[only_image] == 0).all()


def test_cross_attention_weights():
    batch = make_batch()
    out = small("cross_attention", n_heads=2).eval()(batch)
    ti, ti_null = out.extras["attn_text_to_image"], out.extras["attn_text_to_image_null"]
    it, it_null = out.extras["attn_image_to_text"], out.extras["attn_image_to_text_null"]
    assert ti.shape == (B, 2, T, R) and it.shape == (B, 2, R, T)
    tok_valid = batch["text_mask"] & batch["has_text"].unsqueeze(1)
    has_v = batch["has_image"]
    # Real queries: the weights over the real keys plus the null share sum to 1.
    ones = torch.ones_like(ti_null)
    q = tok_valid[:, None, :].expand_as(ti_null)
    torch.testing.assert_close((ti.sum(-1) + ti_null)[q], ones[q])
    qv = has_v[:, None, None].expand_as(it_null)
    torch.testing.assert_close((it.sum(-1) + it_null)[qv], torch.ones_like(it_null)[qv])
    # Tokens of a movie with a poster attend to its regions; without one, only to the null key.
    assert (ti[has_v].sum(-1)[q[has_v]] > 0).all()
    assert (ti[~has_v] == 0).all() and (ti_null[~has_v][q[~has_v]] > 0.999).all()
    # Padding tokens are never attended to, and padded / no-poster query rows are zero.
    assert (it.permute(0, 3, 1, 2)[~tok_valid] == 0).all()
    assert (ti.transpose(1, 2)[~tok_valid] == 0).all() and (it[~has_v] == 0).all()


def test_cross_attention_rejects_too_long_sequences():
    head = small("cross_attention", max_tokens=T - 1)
    with pytest.raises(InputError, match="max_tokens"):
        head(make_batch())
    with pytest.raises(InputError, match="divisible"):
        build_head("cross_attention", DIMS, hidden=10, n_heads=4)


def test_modality_dropout_never_drops_both():
    batch = make_batch(n=200, seed=3)
    original = {k: v.clone() for k, v in batch.items()}
    g = torch.Generator().manual_seed(0)
    out = modality_dropout(batch, 0.5, 0.5, generator=g)
    for k, v in original.items():  # the input batch is left untouched
        assert torch.equal(batch[k], v), k
    had_any = batch["has_text"] | batch["has_image"]
    assert (out["has_text"] | out["has_image"])[had_any].all()
    assert not (out["has_text"] & ~batch["has_text"]).any()
    dropped_t = batch["has_text"] & ~out["has_text"]
    dropped_i = batch["has_image"] & ~out["has_image"]
    assert dropped_t.sum() > 20 and dropped_i.sum() > 20
    assert (out["text"][dropped_t] == 0).all() and (out["text_tokens"][dropped_t] == 0).all()
    assert not out["text_mask"][dropped_t].any()
    for key in ("image", "image_regions", "detector"):
        assert (out[key][dropped_i] == 0).all()
    kept = ~dropped_t & ~dropped_i
    torch.testing.assert_close(out["image"][kept], batch["image"][kept])
    with pytest.raises(InputError, match="p_text"):
        modality_dropout(batch, 1.5, 0.0)
    same = modality_dropout(batch, 0.0, 0.0)
    assert torch.equal(same["has_text"], batch["has_text"])
