"""QAT by distillation: unlabeled inputs, the float model as teacher, hidden-state matching, errors."""

import copy

import pytest
import torch
from torch import nn
from torchao.quantization.pt2e.learnable_fake_quantize import LearnableFakeQuantize

import pt2e_int8 as q
from pt2e_int8.distillation import float_reference, hidden_nodes, mse_loss, with_outputs
from pt2e_int8.errors import ConfigError
from tests.core._helpers import accuracy


def _prepared(model, batches, cfg=None):
    cfg = cfg or q.QuantConfig.qat()
    pm = q.prepare_qat(copy.deepcopy(model), batches[0], quantizer=q.Int8Quantizer().set_global(cfg),
                       calibration=batches if cfg.smooth else None)
    q.calibrate(pm, batches, progress=False)
    return q.move_to_eval(pm)


def _imbalanced(mlp):
    """The trained digits MLP with fc1's channels rescaled over 300x (c on fc1's rows, 1/c on fc2's
    columns): the same function through the ReLU, but per-tensor int8 weights and activations lose
    the small channels, a gap PTQ leaves and distillation must close."""
    model = copy.deepcopy(mlp)
    c = torch.logspace(-1, 1.5, 64)[torch.randperm(64, generator=torch.Generator().manual_seed(0))]
    with torch.no_grad():
        model.fc1.weight.mul_(c[:, None])
        model.fc1.bias.mul_(c)
        model.fc2.weight.div_(c[None, :])
    return model


@pytest.mark.parametrize(
    ("imbalanced", "per_channel", "min_gain_db"),
    # The trained MLP is already within ~0.5 dB of its int8 floor: distillation must not hurt it.
    # (Its held-out SQNR, ~24 dB, is set by 6 of 450 test rows whose pixels were constant in the
    # training split and standardize to up to 75σ: input clipping that no weight training changes.)
    [(True, False, 2.0), (False, True, -0.5)],
    ids=["lossy-ptq-gains", "near-float-holds"],
)
def test_distill_on_unlabeled_digits(digits, digits_mlp, imbalanced, per_channel, min_gain_db):
    xtr, _, xte, yte = digits
    model = _imbalanced(digits_mlp) if imbalanced else digits_mlp
    batches = [(b,) for b in xtr.split(64)]
    pm = _prepared(model, batches, q.QuantConfig.qat(per_channel=per_channel))
    with torch.no_grad():
        before, acc_before = q.sqnr(model(xte), pm(xte)), accuracy(pm, xte, yte)
    result = q.distill(pm, model, batches, epochs=3, lr=1e-3, loss="mse", freeze_observers_after=len(batches) * 2)
    assert result.steps == 3 * len(batches)
    assert sum(result.losses[-5:]) < sum(result.losses[:5]), result
    qm = q.convert(pm)
    with torch.no_grad():
        after = q.sqnr(model(xte), qm(xte))
    assert after > before + min_gain_db, f"held-out SQNR {before:.1f} dB (PTQ) -> {after:.1f} dB (distilled)"
    acc_after = accuracy(qm, xte, yte)
    assert acc_after >= min(acc_before, accuracy(model, xte, yte)) - 1.0, f"accuracy {acc_before:.1f} -> {acc_after:.1f}"


class TinyEncoder(nn.Module):
    """Two pre-LN blocks on 16-wide tokens; three LayerNorm channels scaled 30x, the activation
    outliers SmoothQuant folds back into the LayerNorm (so the student's LN outputs are rescaled)."""

    def __init__(self, d: int = 16):
        super().__init__()
        self.inp = nn.Linear(8, d)
        self.blocks = nn.ModuleList(nn.ModuleDict({"norm": nn.LayerNorm(d), "fc": nn.Linear(d, d)}) for _ in range(2))
        self.head = nn.Linear(d, 4)
        with torch.no_grad():
            for b in self.blocks:
                b["norm"].weight[:3] = 30.0

    def forward(self, x):
        h = self.inp(x)
        for b in self.blocks:
            h = h + torch.relu(b["fc"](b["norm"](h)))
        return self.head(h.mean(1))


def _tokens(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 5, 8, generator=g),) for _ in range(n)]


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return TinyEncoder().eval(), _tokens()


def test_with_outputs_returns_the_graph_outputs_and_the_named_nodes(encoder):
    model, batches = encoder
    pm = q.freeze_observers(_prepared(model, batches))  # a forward must not move the ranges between calls
    names = hidden_nodes(pm, "layer_norm")
    assert names == ["layer_norm", "layer_norm_1"]
    out, *hidden = with_outputs(pm, names)(*batches[0])
    assert [h.shape for h in hidden] == [(8, 5, 16)] * 2
    assert torch.equal(out[0], pm(*batches[0]))


def test_hidden_targets_are_the_smoothed_float_graph(encoder):
    model, batches = encoder
    pm = _prepared(model, batches, q.QuantConfig.qat(smooth=True))
    gamma = [p for k, p in pm.named_parameters() if k.endswith("norm.weight")]
    assert gamma and not torch.equal(gamma[0], model.blocks[0]["norm"].weight), "SmoothQuant did not fire"
    names = hidden_nodes(pm, "layer_norm")
    reference = float_reference(pm)
    with torch.no_grad():
        assert q.sqnr(model(*batches[0]), reference(*batches[0])) > 100  # the float model, up to rounding
        ref_hidden = with_outputs(reference, names)(*batches[0])[1:]
        student_hidden = with_outputs(q.freeze_observers(copy.deepcopy(pm)), names)(*batches[0])[1:]
    for name, r, s in zip(names, ref_hidden, student_hidden, strict=True):
        assert q.sqnr(r, s) > 25, f"{name}: int8 student vs its float reference {q.sqnr(r, s):.1f} dB"


def test_distill_with_hidden_states_trains_the_students_weights(encoder):
    model, batches = encoder
    pm = _prepared(model, batches, q.QuantConfig.qat(smooth=True))
    key = next(k for k, _ in pm.named_parameters() if k.endswith("fc.weight"))
    start = dict(pm.named_parameters())[key].detach().clone()
    result = q.distill(pm, model, batches, epochs=4, lr=3e-3, loss="mse", hidden="layer_norm")
    assert not torch.equal(start, dict(pm.named_parameters())[key]), "the view trains the student's own weights"
    # Hidden targets from the student's smoothed float graph: the first loss is int8 error, not the
    # 30x LayerNorm channels the teacher has and the smoothed student divided away.
    assert result.losses[0] < 0.05, result
    assert sum(result.losses[-3:]) < sum(result.losses[:3]), result


class DropEncoder(TinyEncoder):
    """TinyEncoder with dropout after each block's linear, as BERT has."""

    def __init__(self):
        super().__init__()
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        h = self.inp(x)
        for b in self.blocks:
            h = h + self.drop(torch.relu(b["fc"](b["norm"](h))))
        return self.head(h.mean(1))


def test_hidden_states_are_matched_with_dropout_off_on_a_training_student():
    """prepare_qat hands back a student in train mode; the hidden-state view must be built after distill
    switches it to eval (it copies the graph, dropout nodes included), or half the student's hidden
    channels are zeroed against deterministic targets."""
    torch.manual_seed(0)
    model, batches = DropEncoder().eval(), _tokens(2)
    pm = q.prepare_qat(copy.deepcopy(model), batches[0], quantizer=q.Int8Quantizer().set_global(q.QuantConfig.qat()))
    q.calibrate(pm, batches, progress=False)
    assert pm.training
    no_output_loss = lambda s, t: 0 * s.sum()  # noqa: E731
    first = [q.distill(copy.deepcopy(pm), model, batches[:1], lr=0.0, loss=no_output_loss, hidden="layer_norm")
             .losses[0] for _ in range(2)]
    assert first[0] == first[1], "the student ran with dropout on"
    assert first[0] < 0.05, first


def test_hidden_positions_match_only_the_kept_rows(encoder):
    """Padding feeds no output: `hidden_positions` keeps those rows out of the hidden-state loss."""
    model, batches = encoder
    pm = q.freeze_observers(_prepared(model, batches))
    names = hidden_nodes(pm, "layer_norm")
    x = batches[0][0]
    first_two = (torch.arange(x.shape[1]) < 2).expand(x.shape[0], -1)
    with torch.no_grad():
        target = with_outputs(float_reference(pm), names)(x)[1:]
        student = with_outputs(q.move_to_eval(copy.deepcopy(pm)), names)(x)[1:]
    kept = sum(mse_loss(s[first_two], t[first_two]) for s, t in zip(student, target, strict=True)) / len(names)
    every = sum(mse_loss(s, t) for s, t in zip(student, target, strict=True)) / len(names)
    no_output_loss = lambda s, t: 0 * s.sum()  # noqa: E731
    result = q.distill(copy.deepcopy(pm), model, [(x,)], lr=0.0, loss=no_output_loss, hidden="layer_norm",
                       hidden_positions=lambda x: first_two)
    assert result.losses[0] == pytest.approx(kept.item(), rel=1e-5)
    assert abs(kept.item() - every.item()) > 1e-3 * every.item(), "the test cannot tell the two apart"
    with pytest.raises(ConfigError, match="hidden_positions"):
        q.distill(copy.deepcopy(pm), model, [(x,)], hidden="layer_norm", hidden_positions=lambda x: first_two[0])


@pytest.mark.parametrize(("lr_decay", "low", "high"), [("constant", 0.2, 5.0), ("cosine", 0.0, 0.05)])
def test_lr_decay_shrinks_the_last_updates(encoder, lr_decay, low, high):
    """"cosine" takes the step size from lr to ~0 over the run (the last of 12 steps at 1.7 % of lr),
    so the last weight update is a small fraction of the first; "constant" keeps them alike."""
    model, batches = encoder
    pm = q.freeze_observers(_prepared(model, batches))
    weight = next(p for k, p in pm.named_parameters() if k.endswith("fc.weight"))
    seen = [weight.detach().clone()]
    q.distill(pm, model, batches, epochs=2, lr=1e-3, loss="mse", lr_decay=lr_decay,
              on_step=lambda step, loss: seen.append(weight.detach().clone()))
    updates = [(b - a).norm().item() for a, b in zip(seen[:-1], seen[1:], strict=True)]
    assert len(updates) == 12 and updates[0] > 0
    assert low <= updates[-1] / updates[0] <= high, updates


def test_learned_ranges_train_and_are_the_ones_converted(encoder):
    """`learn_ranges`: activation scales start from calibration, move under distillation, and the
    converted model quantizes with the learned values, not the observer's (which stopped at the
    calibrated range)."""
    model, batches = encoder
    cfg = q.QuantConfig.qat(observer="minmax", learn_ranges=True)
    pm = q.prepare_qat(copy.deepcopy(model), batches[0], quantizer=q.Int8Quantizer().set_global(cfg))
    with pytest.raises(ConfigError, match="calibrate"):
        q.learn_ranges(copy.deepcopy(pm))
    q.calibrate(pm, batches, progress=False)
    learnable = [m for m in pm.modules() if isinstance(m, LearnableFakeQuantize)]
    calibrated = [m.scale.item() for m in learnable]
    assert q.learn_ranges(pm) == len(learnable) > 0
    q.distill(pm, model, batches, epochs=4, lr=1e-3, loss="mse")
    learned = [m.scale.item() for m in learnable]
    assert max(abs(a / b - 1) for a, b in zip(learned, calibrated, strict=True)) > 0.01, (calibrated, learned)
    observed = [m.activation_post_process.calculate_qparams()[0].item() for m in learnable]
    assert observed == pytest.approx(calibrated), "the observers stopped when the ranges started to learn"
    converted = {float(n.args[1]) for n in q.convert(pm).graph.nodes
                 if n.op == "call_function" and "quantize_per_tensor" in str(n.target)}
    assert all(any(abs(c - s) <= 1e-6 * s for c in converted) for s in learned), (learned, converted)
    assert q.learn_ranges(_prepared(model, batches)) == 0  # a config that did not ask: nothing learns
    with pytest.raises(ConfigError, match="learn_ranges"):
        q.QuantConfig.static(learn_ranges=True)


def test_a_learned_scale_driven_to_zero_stops_distill(encoder):
    """Adam moves every learned scale by about lr per step: at lr 0.05 the 0.01-sized activation
    scales cross zero within a few steps, and distill must stop there, not convert nonsense."""
    model, batches = encoder
    cfg = q.QuantConfig.qat(observer="minmax", learn_ranges=True)
    pm = q.prepare_qat(copy.deepcopy(model), batches[0], quantizer=q.Int8Quantizer().set_global(cfg))
    q.calibrate(pm, batches, progress=False)
    q.learn_ranges(pm)
    with pytest.raises(FloatingPointError, match="learned activation scale became .* lower lr"):
        q.distill(pm, model, batches, epochs=20, lr=0.05, loss="mse")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"loss": "kl"}, "is not one of"), ({"lr_decay": "linear"}, "lr_decay"), ({"hidden": ["no_such_node"]}, "no_such_node"), ({"epochs": 0}, "epochs")],
    ids=["loss", "lr_decay", "hidden", "epochs"],
)
def test_distill_rejects(encoder, kwargs, message):
    model, batches = encoder
    pm = _prepared(model, batches[:2])
    with pytest.raises(ConfigError, match=message):
        q.distill(pm, model, batches[:2], **kwargs)
