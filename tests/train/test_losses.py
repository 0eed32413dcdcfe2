"""Losses against direct float64 implementations of the paper's equations and hand-worked numbers."""

from __future__ import annotations

import math

import pytest
import torch

from bfm_deploy.errors import BfmError
from bfm_train.losses import ArcFaceHead, guided_loss, mask_loss, partial_arcface_loss


# ---- direct float64 transcriptions of the equations (loops, no shared code with the implementation) ----
def ref_arcface(x: torch.Tensor, w: torch.Tensor, y: torch.Tensor, s: float, m: float) -> float:
    """Eqs. 2-3 with normalised W_j and E(x_i): -1/B sum_i log(e^{s cos(θ_yi+m)} / (e^{s cos(θ_yi+m)} + sum_{j≠yi} e^{s cos θ_j}))."""
    x, w = x.double(), w.double()
    total = 0.0
    for i in range(x.shape[0]):
        xi = x[i] / x[i].norm()
        cos = [float(xi @ (w[j] / w[j].norm())) for j in range(w.shape[0])]
        theta_y = math.acos(max(-1.0, min(1.0, cos[int(y[i])])))
        target = math.exp(s * math.cos(theta_y + m))
        others = sum(math.exp(s * cos[j]) for j in range(w.shape[0]) if j != int(y[i]))
        total += math.log(target / (target + others))
    return -total / x.shape[0]


def ref_mask(cu: torch.Tensor, cm: torch.Tensor) -> float:
    """Eq. 1: -1/B sum_i (log softmax(C(x_i))_1st + log softmax(C(x̂_i))_2nd)."""
    cu, cm = cu.double().tolist(), cm.double().tolist()
    total = 0.0
    for (u1, u2), (m1, m2) in zip(cu, cm):
        total += math.log(math.exp(u1) / (math.exp(u1) + math.exp(u2)))
        total += math.log(math.exp(m2) / (math.exp(m2) + math.exp(m1)))
    return -total / len(cu)


def ref_guided(f: torch.Tensor, fh: torch.Tensor) -> float:
    """Eq. 4: 1/B sum_i || f_i/||f_i|| - fh_i/||fh_i|| ||_2^2."""
    total = 0.0
    for a, b in zip(f.double(), fh.double()):
        total += float(((a / a.norm() - b / b.norm()) ** 2).sum())
    return total / f.shape[0]


def value(t: torch.Tensor) -> float:
    return float(t.detach())


def _data(seed: int, b: int = 6, d: int = 8, c: int = 5):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, d, generator=g), torch.randint(0, c, (b,), generator=g)


# ---- ArcFace, Eqs. 2-3 ----
@pytest.mark.parametrize("s,m", [(64.0, 0.5), (30.0, 0.3), (1.0, 0.0)])
def test_arcface_matches_equation(s, m):
    x, y = _data(0)
    head = ArcFaceHead(8, 5, s=s, m=m).double()
    got = value(head(x.double(), y))
    assert got == pytest.approx(ref_arcface(x, head.weight.detach(), y, s, m), rel=1e-9, abs=1e-9)


def test_arcface_float32_close_to_float64_reference():
    x, y = _data(1, b=16, d=512, c=50)
    head = ArcFaceHead(512, 50)
    assert value(head(x, y)) == pytest.approx(ref_arcface(x, head.weight.detach(), y, 64.0, 0.5), rel=1e-4)


def test_arcface_hand_worked():
    # x = (0.6, 0.8), W_0 = (1, 0), W_1 = (0, 1), label 0, s = 2, m = 0.5
    # cos θ_0 = 0.6, sin θ_0 = 0.8; cos θ_1 = 0.8
    # cos(θ_0 + m) = 0.6 cos 0.5 - 0.8 sin 0.5 = 0.6*0.8775826 - 0.8*0.4794255 = 0.5265496 - 0.3835404 = 0.1430092
    # logits (2*0.1430092, 2*0.8) = (0.2860184, 1.6)
    # loss = log(1 + e^(1.6 - 0.2860184)) = log(1 + e^1.3139816) = log(1 + 3.7209596) = log(4.7209596) = 1.552012
    head = ArcFaceHead(2, 2, s=2.0, m=0.5).double()
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    x = torch.tensor([[0.6, 0.8]], dtype=torch.float64)
    y = torch.tensor([0])
    assert head.logits(x, y).tolist()[0] == pytest.approx([0.2860184, 1.6], abs=1e-6)
    assert value(head(x, y)) == pytest.approx(1.552012, abs=1e-6)
    # the norms of W and x do not matter (Eq. 3 with normalised vectors)
    with torch.no_grad():
        head.weight.mul_(7.0)
    assert value(head(3.0 * x, y)) == pytest.approx(1.552012, abs=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_arcface_stable_past_pi(dtype):
    # embedding exactly opposite its class centre: θ_y = π, θ_y + m > π, cos θ_y = -1 where d arccos is infinite
    head = ArcFaceHead(4, 3, s=64.0, m=0.5).to(dtype)
    x = (-head.weight.detach()[[1, 2]] * 3.0).clone().requires_grad_(True)
    y = torch.tensor([1, 2])
    loss = head(x, y)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(x.grad).all() and torch.isfinite(head.weight.grad).all()
    # and the value is the printed equation at θ_y = π (up to the clamp: |Δθ| <= sqrt(2 eps))
    tol = 64 * 3 * math.sqrt(2 * torch.finfo(dtype).eps) + 1e-9
    assert value(loss) == pytest.approx(ref_arcface(x.detach(), head.weight.detach(), y, 64.0, 0.5), abs=tol)


def test_arcface_gradients_finite_at_exact_match_and_half_precision_input():
    head = ArcFaceHead(4, 3)
    x = head.weight.detach()[[0]].clone().half().requires_grad_(True)  # cos θ_y = 1 exactly
    loss = head(x, torch.tensor([0]))
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and torch.isfinite(x.grad).all()


def test_arcface_rejects_bad_shapes():
    head = ArcFaceHead(8, 5)
    with pytest.raises(BfmError):
        head(torch.randn(2, 7), torch.tensor([0, 1]))
    with pytest.raises(BfmError):
        head(torch.randn(2, 8), torch.tensor([0, 1, 2]))


# ---- Eq. 1 ----
def test_mask_loss_matches_equation():
    g = torch.Generator().manual_seed(2)
    cu, cm = torch.randn(7, 2, generator=g) * 3, torch.randn(7, 2, generator=g) * 3
    assert float(mask_loss(cu.double(), cm.double())) == pytest.approx(ref_mask(cu, cm), rel=1e-12)


def test_mask_loss_hand_worked():
    # unmasked logits (0, 0): -log(1/2) = 0.693147; masked logits (0, ln 3): -log(3/4) = 0.287682; sum 0.980829
    cu = torch.tensor([[0.0, 0.0]])
    cm = torch.tensor([[0.0, math.log(3.0)]])
    assert float(mask_loss(cu, cm)) == pytest.approx(0.980829, abs=1e-6)
    # swapping the roles (masked face called unmasked) must cost more: -log(1/2) - log(1/4) = 2.079442
    assert float(mask_loss(cm, cu)) == pytest.approx(2.079442, abs=1e-6)
    with pytest.raises(BfmError):
        mask_loss(torch.zeros(2, 2), torch.zeros(3, 2))


# ---- Eq. 4 ----
def test_guided_loss_matches_equation():
    g = torch.Generator().manual_seed(3)
    f, fh = torch.randn(5, 16, generator=g), torch.randn(5, 16, generator=g)
    assert float(guided_loss(f.double(), fh.double())) == pytest.approx(ref_guided(f, fh), rel=1e-12)


def test_guided_loss_hand_worked():
    # sample 1: (3,4)/5 = (0.6,0.8) vs (4,-3)/5 = (0.8,-0.6): diff (-0.2, 1.4), squared 0.04 + 1.96 = 2.0
    # sample 2: (1,1) vs (2,2): same direction, 0.0;  mean (2.0 + 0.0) / 2 = 1.0
    f = torch.tensor([[3.0, 4.0], [1.0, 1.0]])
    fh = torch.tensor([[4.0, -3.0], [2.0, 2.0]])
    assert float(guided_loss(f, fh)) == pytest.approx(1.0, abs=1e-6)


# ---- Eqs. 5-7 ----
def test_partial_arcface_is_sum_of_both_terms():
    x, y = _data(4)
    xh, _ = _data(5)
    head = ArcFaceHead(8, 5).double()
    w = head.weight.detach()
    want = ref_arcface(x, w, y, 64.0, 0.5) + ref_arcface(xh, w, y, 64.0, 0.5)
    assert value(partial_arcface_loss(head, x.double(), xh.double(), y)) == pytest.approx(want, rel=1e-9)


def test_eq7_is_the_sum_and_reaches_every_input():
    """Eq. 7 as training runs it (RecipeLoss, recipe bfm, every network trainable), against the references."""
    from torch import nn

    from bfm_train.train.config import LossConfig
    from bfm_train.train.recipes import RecipeLoss

    g = torch.Generator().manual_seed(6)
    x, xh = (torch.randn(4, 6, generator=g) for _ in range(2))  # float32: RecipeLoss computes its losses in it
    y = torch.tensor([0, 1, 2, 1])
    torch.manual_seed(6)
    nets: dict[str, nn.Module] = {"classifier": nn.Linear(6, 2), "full": nn.Linear(6, 8), "partial": nn.Linear(6, 8)}
    heads: dict[str, nn.Module] = {"full": ArcFaceHead(8, 3), "partial": ArcFaceHead(8, 3)}
    terms = RecipeLoss("bfm", nets, heads, LossConfig())(x, xh, y)
    c, ef, ep = nets["classifier"], nets["full"], nets["partial"]
    with torch.no_grad():
        expect = {
            "mask": ref_mask(c(x), c(xh)),
            "full": ref_arcface(ef(x), heads["full"].weight, y, 64.0, 0.5),
            "guided": ref_guided(ep(x), ep(xh)),
            "partial": ref_arcface(ep(x), heads["partial"].weight, y, 64.0, 0.5)
            + ref_arcface(ep(xh), heads["partial"].weight, y, 64.0, 0.5),
        }
    assert set(terms) == set(expect)
    for key, want in expect.items():
        assert value(terms[key]) == pytest.approx(want, rel=1e-5), key
    torch.stack(list(terms.values())).sum().backward()
    for module in [*nets.values(), *heads.values()]:
        for t in module.parameters():
            assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0
