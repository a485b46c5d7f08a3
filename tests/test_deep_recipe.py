"""The CNN's optional training recipe: weight averaging (EMA), random erasing, mixup and CutMix.

Each is off by default; each is checked against its formula on hand-made tensors and, in tiny
trainings, for resume and determinism (helpers and tiny data from ``test_deep``).
"""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

import torch.nn.functional as F  # noqa: E402

from ferlab.data.split import SplitImages  # noqa: E402
from ferlab.deep.augment import (  # noqa: E402
    ERASE_AREA,
    ERASE_ASPECT,
    mix_batch,
    random_erase,
    sample_beta,
)
from ferlab.deep.checkpoint import CHECKPOINT_NAME, MODEL_NAME  # noqa: E402
from ferlab.deep.distillation import load_teachers  # noqa: E402
from ferlab.deep.ema import WeightAverage  # noqa: E402
from ferlab.deep.losses import Targets, distillation_loss, mixed_cross_entropy  # noqa: E402
from ferlab.deep.run import run_cnn_training  # noqa: E402
from ferlab.deep.tensors import CHECKPOINT_FORMAT, MODEL_FORMAT, read_tensors  # noqa: E402
from ferlab.errors import ConfigError, ModelFileError  # noqa: E402
from ferlab.settings.cnn import CNN_DEFAULTS  # noqa: E402
from ferlab.settings.loading import with_values  # noqa: E402
from test_deep import (  # noqa: E402
    CLASSES,
    faces,
    interrupted_trainer,
    make_trainer,
    straight_and_resumed,
    teacher_divergence,
    tiny_config,
)

pytestmark = pytest.mark.torch


@pytest.fixture(autouse=True)
def _one_thread():
    """Results depend on the thread count; the tests use one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def splits():
    return SplitImages(faces(64, 0), faces(32, 1), {}, CLASSES, (48, 48))


def state_copy(module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_every_recipe_option_is_off_by_default():
    assert CNN_DEFAULTS["solver"]["ema"] == 0.0
    assert {k: CNN_DEFAULTS["augment"][k] for k in ("erase", "mixup", "cutmix")} == {
        "erase": 0.0,
        "mixup": 0.0,
        "cutmix": 0.0,
    }


# ---- weight averaging ------------------------------------------------------------------------


def test_ema_of_three_steps_by_hand():
    """decay 0.5, weights 1, 2, 4: (0.25 * 1 + 0.5 * 2 + 1 * 4) / (0.25 + 0.5 + 1) = 3."""
    net = torch.nn.Linear(1, 1, bias=False)
    ema = WeightAverage(net, 0.5)
    for value in (1.0, 2.0, 4.0):
        net.weight.data.fill_(value)
        ema.update(net)
    assert ema.module.weight.item() == pytest.approx(3.0, abs=1e-6)
    assert ema.updates == 3


def test_ema_after_k_steps_is_the_closed_form_average_and_buffers_are_copied():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    decay, k = 0.8, 6
    ema = WeightAverage(net, decay)
    sequence = []
    for step in range(k):
        with torch.no_grad():
            for param in net.parameters():
                param.copy_(torch.randn_like(param))
        net.train()(torch.randn(4, 3))  # moves BatchNorm's running statistics
        sequence.append({n: p.detach().double().clone() for n, p in net.named_parameters()})
        ema.update(net)
        if step == 0:  # the first average is the first weights exactly (no pull toward init)
            assert_same_state(ema.state_dict(), net.state_dict())
    weights = [decay ** (k - 1 - i) for i in range(k)]
    for name, averaged in ema.module.named_parameters():
        expected = sum(w * p[name] for w, p in zip(weights, sequence, strict=True)) / sum(weights)
        torch.testing.assert_close(averaged.double(), expected, atol=1e-6, rtol=0)
    for name, buffer in ema.module.named_buffers():
        assert torch.equal(buffer, dict(net.named_buffers())[name]), name
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_resume_with_ema_equals_an_uninterrupted_run(tmp_path, splits):
    config = tiny_config("solver.epochs=3", "solver.ema=0.9")
    straight, resumed = straight_and_resumed(config, splits, tmp_path, stop_epoch=2)

    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):
        assert resumed.history[key] == straight.history[key], key
    assert resumed.ema.updates == straight.ema.updates == 3 * straight.steps_per_epoch
    assert_same_state(resumed.ema.state_dict(), straight.ema.state_dict())
    assert_same_state(resumed.module.state_dict(), straight.module.state_dict())
    assert_same_state(resumed.best_state, straight.best_state)


def test_with_ema_validation_and_the_saved_model_use_the_averaged_weights(tmp_path, splits):
    config = tiny_config("solver.epochs=3", "solver.ema=0.9")
    averaged, live = {}, {}

    def record(epoch, history):
        averaged[epoch] = state_copy(trainer.ema.module)
        live[epoch] = state_copy(trainer.module)

    trainer = make_trainer(config, splits, tmp_path, record)
    trainer.train()
    best = trainer.best_epoch
    _, stored = read_tensors(tmp_path / MODEL_NAME, MODEL_FORMAT)
    assert_same_state(stored, averaged[best])
    assert_same_state(trainer.module.state_dict(), averaged[best])
    assert any(not torch.equal(stored[k], live[best][k]) for k in stored)
    assert (
        trainer.evaluate(trainer.data.val_images, trainer.data.val_labels)[1]
        == (trainer.history["val_acc"][best - 1])
    )


# ---- random erasing --------------------------------------------------------------------------


def erased_boxes(before: torch.Tensor, after: torch.Tensor) -> list[tuple[int, int] | None]:
    """Each image's changed region as (height, width), checking that it is one full rectangle."""
    boxes = []
    for changed in (after != before)[:, 0]:
        if not changed.any():
            boxes.append(None)
            continue
        rows = changed.any(1).nonzero()[:, 0]
        cols = changed.any(0).nonzero()[:, 0]
        box = changed[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        assert box.all() and int(changed.sum()) == box.numel()
        boxes.append((box.shape[0], box.shape[1]))
    return boxes


def test_random_erasing_with_p_1_erases_one_rectangle_of_the_stated_size_in_every_image():
    x = torch.randn(300, 1, 40, 40)
    out = random_erase(x, 1.0, generator=torch.Generator().manual_seed(0))
    boxes = erased_boxes(x, out)
    assert all(box is not None for box in boxes)
    area = 40 * 40
    for h, w in boxes:
        slack = (h + w + 1) / 2 + 0.25  # sides rounded to whole pixels: |h - exact| <= 0.5
        assert ERASE_AREA[0] * area - slack <= h * w <= ERASE_AREA[1] * area + slack, (h, w)
        low, high = ERASE_ASPECT
        assert (h - 0.5) / (w + 0.5) <= high and (h + 0.5) / (w - 0.5) >= low, (h, w)
    areas = np.array([h * w for h, w in boxes]) / area
    assert areas.min() < 0.06 and areas.max() > 0.28  # the whole range is used
    assert len({(h, w) for h, w in boxes}) > 50
    erased = out[x != out]
    assert abs(float(erased.mean())) < 0.05 and abs(float(erased.std()) - 1) < 0.05  # N(0, 1)


def test_random_erasing_with_p_0_changes_nothing_and_a_seed_repeats_the_masks():
    x = torch.randn(64, 1, 40, 40)
    assert torch.equal(random_erase(x, 0.0, generator=torch.Generator().manual_seed(0)), x)
    first = random_erase(x, 0.5, generator=torch.Generator().manual_seed(7))
    again = random_erase(x, 0.5, generator=torch.Generator().manual_seed(7))
    other = random_erase(x, 0.5, generator=torch.Generator().manual_seed(8))
    assert torch.equal(first, again) and not torch.equal(first, other)
    hit = sum(box is not None for box in erased_boxes(x, first))
    assert 16 <= hit <= 48  # about half of 64


# ---- mixup and CutMix ------------------------------------------------------------------------


def smoothed_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, eps: float) -> torch.Tensor:
    """By hand: -(1 - eps) log p[label] - eps / C * sum_c log p[c], averaged over the batch."""
    log_p = logits.double() - logits.double().exp().sum(1, keepdim=True).log()
    picked = log_p[torch.arange(len(labels)), labels]
    return (-(1 - eps) * picked - eps / logits.shape[1] * log_p.sum(1)).mean()


def test_the_mixed_loss_is_lam_ce_of_one_label_plus_one_minus_lam_ce_of_the_other():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 3, generator=gen)
    a, b = torch.tensor([0, 1, 2, 1, 0, 2]), torch.tensor([2, 0, 2, 0, 1, 1])
    for lam, eps in ((0.3, 0.0), (0.7, 0.1), (1.0, 0.1)):
        expected = lam * smoothed_cross_entropy(logits, a, eps) + (1 - lam) * (
            smoothed_cross_entropy(logits, b, eps)
        )
        got = mixed_cross_entropy(logits, Targets(a, b, lam), eps)
        assert float(got) == pytest.approx(float(expected), abs=1e-6)


def test_with_alpha_0_the_batch_and_the_loss_are_the_plain_ones():
    gen = torch.Generator().manual_seed(0)
    x, logits = torch.randn(6, 1, 8, 8), torch.randn(6, 3)
    y = torch.tensor([0, 1, 2, 1, 0, 2])
    before = gen.get_state()
    mixed, partners, lam = mix_batch(x, mixup=0.0, cutmix=0.0, generator=gen)
    assert mixed is x and lam == 1.0 and torch.equal(gen.get_state(), before)  # nothing drawn
    loss = mixed_cross_entropy(logits, Targets(y, y[partners], lam), 0.1)
    assert torch.equal(loss, F.cross_entropy(logits, y, label_smoothing=0.1))


def test_mixup_blends_each_image_with_its_partner_by_one_beta_lam():
    x = torch.randn(5, 1, 8, 8)
    mixed, partners, lam = mix_batch(
        x, mixup=0.4, cutmix=0.0, generator=torch.Generator().manual_seed(3)
    )
    assert torch.equal(partners, torch.tensor([4, 3, 2, 1, 0])) and 0 <= lam <= 1
    torch.testing.assert_close(mixed, lam * x + (1 - lam) * x.flip(0))
    again = mix_batch(x, mixup=0.4, cutmix=0.0, generator=torch.Generator().manual_seed(3))
    assert again[2] == lam and torch.equal(again[0], mixed)


def test_beta_draws_have_the_beta_distributions_mean_and_variance():
    gen = torch.Generator().manual_seed(0)
    for alpha in (0.2, 1.0, 4.0):
        draws = np.array([sample_beta(alpha, gen) for _ in range(4000)])
        assert draws.min() >= 0 and draws.max() <= 1
        assert abs(draws.mean() - 0.5) < 0.03
        assert abs(draws.var() - 1 / (4 * (2 * alpha + 1))) < 0.015, alpha


def test_cutmix_pastes_a_box_of_the_partner_and_lam_is_the_share_left():
    x = torch.randn(4, 1, 20, 20)
    for seed in range(20):
        mixed, partners, lam = mix_batch(
            x, mixup=0.0, cutmix=1.0, generator=torch.Generator().manual_seed(seed)
        )
        from_partner = (mixed == x[partners]) & (mixed != x)
        kept = mixed == x
        assert (from_partner | kept).all()
        assert lam == pytest.approx(float(kept[0].float().mean()))
        assert torch.equal(from_partner[0], from_partner[1])  # one box for the whole batch


def test_with_a_teacher_and_mixup_the_teacher_sees_the_same_mixed_images(splits):
    config = tiny_config("solver.epochs=1", "augment.mixup=0.4", "augment.erase=0.5")
    trainer = make_trainer(config, splits)
    teacher_net = make_trainer(config, splits).module.eval()

    class Teacher:  # what the trainer uses of a CNNClassifier
        module, mean, std = teacher_net, trainer.mean, trainer.std

    trainer.teachers = [Teacher()]
    # The spy is a PyTorch hook; ONNX Runtime teachers get the same input and give PyTorch's
    # logits (test_float32_cpu_teachers_run_through_onnx_runtime_with_pytorchs_logits).
    trainer.teacher_runtime = "torch"
    seen: dict[str, list] = {"student": [], "teacher": []}
    trainer.module.register_forward_pre_hook(lambda m, args: seen["student"].append(args[0]))
    teacher_net.register_forward_pre_hook(lambda m, args: seen["teacher"].append(args[0]))
    lams = []
    batch = trainer.training_batch

    def spied(index):
        x, targets, soft = batch(index)
        lams.append(targets.lam)
        return x, targets, soft

    trainer.training_batch = spied
    trainer.train_epoch()
    assert len(seen["student"]) == len(seen["teacher"]) == trainer.steps_per_epoch
    for student_x, teacher_x in zip(seen["student"], seen["teacher"], strict=True):
        torch.testing.assert_close(teacher_x, student_x, atol=1e-5, rtol=0)
    assert all(0 < lam < 1 for lam in lams)


def test_distillation_with_mixed_targets_mixes_only_the_hard_term():
    gen = torch.Generator().manual_seed(1)
    student, teacher = torch.randn(4, 3, generator=gen), torch.randn(4, 3, generator=gen)
    a, b = torch.tensor([0, 1, 2, 0]), torch.tensor([0, 2, 1, 0])
    targets = Targets(a, b, 0.6)
    got = distillation_loss(student, teacher, targets, temperature=2.0, alpha=0.3)
    soft = distillation_loss(student, teacher, a, temperature=2.0, alpha=1.0)
    expected = 0.7 * mixed_cross_entropy(student, targets) + 0.3 * soft
    assert float(got) == pytest.approx(float(expected), abs=1e-6)


# ---- all together ----------------------------------------------------------------------------


def test_the_recipe_repeats_with_the_same_seed(splits):
    recipe = ("solver.epochs=2", "solver.ema=0.9", "augment.erase=0.5")
    mixes = ("augment.mixup=0.2", "augment.cutmix=1.0")
    first = make_trainer(tiny_config(*recipe, *mixes), splits)
    first.train()
    second = make_trainer(tiny_config(*recipe, *mixes), splits)
    second.train()
    assert_same_state(first.module.state_dict(), second.module.state_dict())
    assert first.history["train_loss"] == second.history["train_loss"]
    assert all(math.isfinite(v) for v in first.history["train_loss"])
    other = make_trainer(tiny_config(*recipe, *mixes, "seed=1"), splits)
    other.train()
    assert any(
        not torch.equal(v, other.module.state_dict()[k])
        for k, v in first.module.state_dict().items()
    )


# ---- distillation from teacher views (distill.views) -------------------------------------------


@pytest.fixture(scope="module")
def teacher_path(tmp_path_factory) -> str:
    """A tiny trained model file, to teach."""
    run = tmp_path_factory.mktemp("teacher") / "run"
    tiny = SplitImages(faces(64, 0), faces(32, 1), {}, CLASSES, (48, 48))
    run_cnn_training(tiny_config(), run, splits=tiny, verbose=False)
    return str(run / MODEL_NAME)


def view_trainer(teacher_path, splits, *extra):
    config = tiny_config(f'distill.teacher="{teacher_path}"', "distill.flip=true", *extra)
    teachers = load_teachers(teacher_path, torch.device("cpu"), CLASSES)
    return make_trainer(config, splits, teachers=teachers)


def test_teacher_views_hold_the_teachers_logits_on_each_view(teacher_path, splits):
    """Each view is an augmented copy of every training image (float16), with the teachers'
    flip-averaged logits on it; the views differ, and the same seed draws the same views."""
    trainer = view_trainer(teacher_path, splits)
    views = trainer.make_teacher_views(3)
    n = len(splits.train)
    assert views.images.shape == (3, n, 1, 40, 40) and views.images.dtype == torch.float16
    assert views.logits.shape == (3, n, len(CLASSES))
    with torch.no_grad():
        for view in range(3):
            x = views.images[view].float()
            torch.testing.assert_close(
                views.logits[view], trainer.teacher_logits(x), atol=0.02, rtol=0
            )
            torch.testing.assert_close(  # the mirror image has the same flip-averaged logits
                views.logits[view], trainer.teacher_logits(x.flip(-1)), atol=0.02, rtol=0
            )
    assert not torch.allclose(views.images[0], views.images[1], atol=0.1)
    again = view_trainer(teacher_path, splits).make_teacher_views(3)
    assert torch.equal(views.images, again.images) and torch.equal(views.logits, again.logits)


def test_with_teacher_views_each_epoch_trains_on_the_next_view_and_no_teacher_runs(
    teacher_path, splits
):
    """Epoch e trains on view e mod V, each image as drawn or mirrored, against that view's
    logits; the teachers run only while the views are made."""
    trainer = view_trainer(teacher_path, splits, "solver.epochs=3", "augment.erase=0")
    trainer.teacher_runtime = "torch"  # so that a hook sees every teacher call
    teacher_calls = []
    trainer.teachers[0].module.register_forward_pre_hook(lambda m, a: teacher_calls.append(1))
    views = trainer.teacher_views = trainer.make_teacher_views(2)
    made = len(teacher_calls)
    assert made == 2 * 2 * math.ceil(len(splits.train) / trainer.batch_size)  # views x flip
    batches = []
    real_batch = trainer.training_batch

    def spied(index):
        x, targets, soft = real_batch(index)
        batches.append((trainer.epoch, index, x, soft))
        return x, targets, soft

    trainer.training_batch = spied
    trainer.train()
    assert len(teacher_calls) == made
    mirrored = 0
    for epoch, index, x, soft in batches:
        view = views.images[epoch % 2][index].float()
        as_drawn = (x == view).flatten(1).all(1)
        as_mirror = (x == view.flip(-1)).flatten(1).all(1)
        assert (as_drawn | as_mirror).all()
        mirrored += int((as_mirror & ~as_drawn).sum())
        assert torch.equal(soft, views.logits[epoch % 2][index])
    assert 0 < mirrored < sum(len(b[1]) for b in batches)
    assert {b[0] for b in batches} == {0, 1, 2}


def test_a_student_learns_the_teacher_from_its_views(teacher_path, splits):
    """Trained on the teacher's logits alone (alpha = 1) from 2 views, the student's outputs
    move toward the teacher's on faces it never saw."""
    trainer = view_trainer(
        teacher_path, splits, "solver.epochs=4", "distill.alpha=1.0", "distill.views=2"
    )
    before = teacher_divergence(trainer, splits)
    trainer.train()
    assert trainer.teacher_views is not None and len(trainer.teacher_views.images) == 2
    assert teacher_divergence(trainer, splits) < 0.5 * before


def test_a_run_on_teacher_views_reports_the_time_spent_making_them(teacher_path, splits, tmp_path):
    config = tiny_config(f'distill.teacher="{teacher_path}"', "distill.views=2")
    summary = run_cnn_training(config, tmp_path / "run", splits=splits, verbose=False)
    assert 0 < summary["views_seconds"] <= summary["seconds"] - summary["train_seconds"]
    plain = run_cnn_training(tiny_config(), tmp_path / "plain", splits=splits, verbose=False)
    assert "views_seconds" not in plain


def test_resume_with_teacher_views_continues_bit_identically(teacher_path, splits, tmp_path):
    """The resumed run draws the same views from the run's seed and trains on the same ones."""
    config = tiny_config(
        f'distill.teacher="{teacher_path}"', "distill.views=2", "solver.epochs=3",
        "augment.erase=0.5",
    )  # fmt: skip
    teachers = load_teachers(teacher_path, torch.device("cpu"), CLASSES)
    straight, resumed = straight_and_resumed(config, splits, tmp_path, 2, teachers=teachers)
    assert resumed.history["train_loss"] == straight.history["train_loss"]
    assert_same_state(state_copy(resumed.module), state_copy(straight.module))


def interrupted_view_run(teacher_path, splits, tmp_path, *extra):
    """A run on 2 teacher views stopped (Ctrl-C) after its first epoch, its checkpoint in
    ``tmp_path``; and the config it ran."""
    config = tiny_config(
        f'distill.teacher="{teacher_path}"', "distill.views=2", "solver.epochs=2", *extra
    )
    teachers = load_teachers(teacher_path, torch.device("cpu"), CLASSES)
    return interrupted_trainer(config, splits, tmp_path, 1, teachers), config


def test_a_resumed_run_takes_the_teachers_logits_on_its_views_from_the_checkpoint(
    teacher_path, splits, tmp_path
):
    """Resuming does not run the teachers again (hours on a CPU): the checkpoint holds their
    logits, and the views drawn again from the seed are the ones they were computed on."""
    interrupted, config = interrupted_view_run(teacher_path, splits, tmp_path)
    _, stored = read_tensors(tmp_path / CHECKPOINT_NAME, CHECKPOINT_FORMAT)
    assert torch.equal(stored["views.logits"], interrupted.teacher_views.logits)
    teachers = load_teachers(teacher_path, torch.device("cpu"), CLASSES)
    resumed = make_trainer(config, splits, tmp_path, teachers=teachers)
    resumed.teacher_runtime = "torch"  # so that a hook sees every teacher call
    teacher_calls = []
    teachers[0].module.register_forward_pre_hook(lambda m, a: teacher_calls.append(1))
    resumed.resume(tmp_path / CHECKPOINT_NAME)
    assert teacher_calls == [] and resumed.epoch == 2
    assert torch.equal(resumed.teacher_views.images, interrupted.teacher_views.images)
    assert torch.equal(resumed.teacher_views.logits, interrupted.teacher_views.logits)


def test_a_checkpoint_whose_teacher_logits_do_not_fit_the_views_is_refused(
    teacher_path, splits, tmp_path
):
    _, config = interrupted_view_run(teacher_path, splits, tmp_path)
    config = with_values(config, {"distill.views": 3})
    teachers = load_teachers(teacher_path, torch.device("cpu"), CLASSES)
    resumed = make_trainer(config, splits, tmp_path, teachers=teachers)
    with pytest.raises(ModelFileError, match=r"teacher logits \(2, 64, 3\) do not fit 3 views"):
        resumed.resume(tmp_path / CHECKPOINT_NAME)


def test_teacher_views_refuse_mixed_batches():
    for mix in ("augment.mixup=0.2", "augment.cutmix=1.0"):
        with pytest.raises(ConfigError, match="distill.views keeps the teachers' logits"):
            tiny_config("distill.views=2", mix)
