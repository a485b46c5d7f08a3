"""The PyTorch CNN: training, resume, model files, TTA, ONNX, predict and the CLI (tiny data)."""

import json
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from PIL import Image  # noqa: E402

from ferlab.cli import main  # noqa: E402
from ferlab.data.images import LabeledImages  # noqa: E402
from ferlab.data.split import SplitImages  # noqa: E402
from ferlab.deep import load_cnn  # noqa: E402
from ferlab.deep.augment import center_crop, normalize, random_warp  # noqa: E402
from ferlab.deep.checkpoint import CHECKPOINT_NAME  # noqa: E402
from ferlab.deep.io import model_meta, save_cnn  # noqa: E402
from ferlab.deep.model import architecture_from_config, build_cnn, copy_widened  # noqa: E402
from ferlab.deep.run import run_cnn_training  # noqa: E402
from ferlab.deep.schedule import lr_factor  # noqa: E402
from ferlab.deep.trainer import CNNTrainer, TensorData  # noqa: E402
from ferlab.deep.tta import crop_views  # noqa: E402
from ferlab.errors import ConfigError, ModelFileError  # noqa: E402
from ferlab.settings.cnn import load_cnn_config  # noqa: E402
from ferlab.settings.loading import with_values  # noqa: E402

pytestmark = pytest.mark.torch

CLASSES = ["a", "b", "c"]
TINY = [
    "model.widths=[4, 8]",
    "model.convs=[1, 1]",
    "solver.batch_size=16",
    "solver.lr=0.05",
    "solver.epochs=3",
    "augment.crop=40",
]


def faces(n, seed, split="training"):
    """Noise with horizontal stripes, vertical stripes or neither: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(CLASSES), n)
    images = rng.integers(0, 80, (n, 48, 48)).astype(np.uint8)
    stripes = (np.arange(48) // 3) % 2 == 0
    images[np.ix_(labels == 0, stripes, np.arange(48))] += 150
    images[np.ix_(labels == 1, np.arange(48), stripes)] += 150
    return LabeledImages(images, labels, CLASSES, np.array([split] * n))


@pytest.fixture
def splits():
    return SplitImages(
        faces(64, 0), faces(32, 1), {"public_test": faces(24, 2, "public_test")}, CLASSES, (48, 48)
    )


def tiny_config(*extra):
    return load_cnn_config(None, [*TINY, *extra])


def make_trainer(config, splits, out_dir=None, callback=None, teachers=()):
    torch.manual_seed(config.seed)
    module = build_cnn(architecture_from_config(config.model, len(CLASSES)))
    data = TensorData.from_arrays(
        splits.train.images, splits.train.labels, splits.val.images, splits.val.labels, "cpu"
    )
    meta = model_meta(
        architecture_from_config(config.model, 3), CLASSES, 60.0, 50.0, config.augment.crop
    )
    return CNNTrainer(
        config,
        module,
        data,
        60.0,
        50.0,
        device=torch.device("cpu"),
        out_dir=out_dir,
        meta=meta,
        verbose=False,
        epoch_callback=callback,
        teachers=teachers,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("cnn") / "run"
    tiny = SplitImages(
        faces(64, 0), faces(32, 1), {"public_test": faces(24, 2, "public_test")}, CLASSES, (48, 48)
    )
    summary = run_cnn_training(tiny_config(), run, splits=tiny, verbose=False)
    return run / "model.safetensors", summary


def test_a_few_epochs_lower_the_loss(splits):
    trainer = make_trainer(tiny_config("solver.epochs=4"), splits)
    before, _ = trainer.evaluate(trainer.data.train_images, trainer.data.train_labels)
    trainer.train()
    after, _ = trainer.evaluate(trainer.data.train_images, trainer.data.train_labels)
    assert after < 0.8 * before
    assert len(trainer.history["train_loss"]) == 4


def test_cpu_bf16_trains_in_bfloat16_reproducibly(splits):
    def trained_weights(*extra):
        trainer = make_trainer(tiny_config("solver.epochs=2", *extra), splits)
        with torch.autocast("cpu", enabled=False):  # the trainer must turn it on itself
            trainer.train()
        return trainer, trainer.module.state_dict()

    trainer, bf16 = trained_weights("device.cpu_bf16=true")
    x = torch.zeros(2, 1, 40, 40)
    with trainer.autocast():
        assert trainer.module(trainer.prepare(x)).dtype == torch.bfloat16
    _, again = trained_weights("device.cpu_bf16=true")
    _, float32 = trained_weights()
    assert all(torch.equal(bf16[name], again[name]) for name in bf16)
    assert not all(torch.equal(bf16[name], float32[name]) for name in bf16)
    assert all(value.dtype != torch.bfloat16 for value in bf16.values())  # weights stay float


@pytest.mark.parametrize(
    ("bf16", "avx512_bf16", "amx", "warned"),
    [(True, False, False, True), (True, True, False, False), (True, False, True, False),
     (False, False, False, False)],
)  # fmt: skip
def test_cpu_bf16_warns_on_a_cpu_without_bfloat16_instructions(
    bf16, avx512_bf16, amx, warned, splits, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    config = tiny_config("solver.epochs=1", f"device.cpu_bf16={str(bf16).lower()}")
    run_cnn_training(config, tmp_path / "run", splits=splits, verbose=True)
    assert ("no bfloat16 instructions" in capsys.readouterr().err) == warned


def interrupted_trainer(config: dict, splits, tmp_path, stop_epoch: int, teachers=()):
    """A trainer of ``config`` interrupted (Ctrl-C) after ``stop_epoch``, its checkpoint in
    ``tmp_path``."""

    def stop(epoch, history):
        if epoch == stop_epoch:
            raise KeyboardInterrupt

    interrupted = make_trainer(config, splits, tmp_path, stop, teachers=teachers)
    with pytest.raises(KeyboardInterrupt):
        interrupted.train()
    return interrupted


def straight_and_resumed(config: dict, splits, tmp_path, stop_epoch: int, teachers=()):
    """Two trainers of ``config``: one trained straight through, one interrupted after
    ``stop_epoch`` (Ctrl-C) and resumed from its checkpoint in a fresh trainer."""
    straight = make_trainer(config, splits, teachers=teachers)
    straight.train()
    interrupted_trainer(config, splits, tmp_path, stop_epoch, teachers)
    torch.manual_seed(12345)  # the resumed run must not depend on the global RNG state
    resumed = make_trainer(config, splits, tmp_path, teachers=teachers)
    resumed.resume(tmp_path / CHECKPOINT_NAME)
    return straight, resumed


def test_resume_continues_bit_identically(tmp_path, splits):
    config = tiny_config("solver.epochs=3", "model.dropout=0.2", "model.head_dropout=0.3")
    straight, resumed = straight_and_resumed(config, splits, tmp_path, stop_epoch=1)

    assert resumed.history["train_loss"] == straight.history["train_loss"]
    assert resumed.history["val_acc"] == straight.history["val_acc"]
    final_straight = straight.module.state_dict()
    for name, value in resumed.module.state_dict().items():
        assert torch.equal(value, final_straight[name]), name


def test_run_writes_model_history_curves_and_summary(trained):
    path, summary = trained
    run = path.parent
    for name in ("model.safetensors", "history.json", "loss.png", "accuracy.png", "summary.json"):
        assert (run / name).is_file(), name
    assert not (run / CHECKPOINT_NAME).exists()
    history = json.loads((run / "history.json").read_text())
    assert set(history) == {"train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"}
    assert len(history["val_acc"]) == summary["epochs"] == 3
    assert summary["val_accuracy"] == max(history["val_acc"])
    assert 0 <= summary["public_test_accuracy"] <= 1


def test_save_load_round_trip_gives_identical_outputs(trained, tmp_path):
    path, _ = trained
    first = load_cnn(path)
    images = faces(10, 5).images
    again = tmp_path / "copy.safetensors"
    save_cnn(first.module, first.meta, again)
    second = load_cnn(again)
    np.testing.assert_array_equal(first.predict_proba(images), second.predict_proba(images))
    assert first.class_names == CLASSES and first.input_shape == (48, 48)
    probs = first.predict_proba(images)
    assert probs.shape == (10, 3) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert first.module.head is first.module.head  # the classifier layer is the named `head`
    assert isinstance(first.module.head, torch.nn.Linear)


def test_the_model_file_holds_no_pickle_and_states_its_format(trained):
    path, _ = trained
    raw = path.read_bytes()
    header_len = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + header_len])
    meta = json.loads(header["__metadata__"]["ferlab"])
    assert meta["format"] == "ferlab-cnn" and meta["kind"] == "cnn"
    assert meta["class_names"] == CLASSES and meta["architecture"]["widths"] == [4, 8]
    assert set(meta["preprocessing"]) == {"mean", "std", "crop"}


@pytest.mark.parametrize("corrupt", ["garbage", "truncated", "foreign", "npz"])
def test_a_corrupt_or_foreign_model_file_fails_cleanly(trained, tmp_path, corrupt):
    from safetensors.torch import save_file

    from ferlab.inference.models import load_model

    path, _ = trained
    bad = tmp_path / "bad.safetensors"
    if corrupt == "garbage":
        bad.write_bytes(b"\x00\x01not a model at all" * 10)
    elif corrupt == "truncated":
        bad.write_bytes(path.read_bytes()[:-100])
    elif corrupt == "foreign":
        save_file({"w": torch.zeros(3)}, str(bad), metadata={"author": "someone"})
    else:
        np.savez(bad, w=np.zeros(3))
    with pytest.raises(ModelFileError, match=str(bad.name)):
        load_cnn(bad)
    with pytest.raises(ModelFileError):
        load_model(bad)
    assert main(["evaluate", "--model", str(bad), "--split", "public"]) == 2


def test_tta_views_and_averaging(trained):
    x = torch.arange(2 * 48 * 48, dtype=torch.float32).reshape(2, 1, 48, 48)
    assert [len(crop_views(x, 44, mode)) for mode in ("none", "flip", "tencrop")] == [1, 2, 10]
    assert torch.equal(crop_views(x, 44, "none")[0], x[..., 2:46, 2:46])
    path, _ = trained
    classifier = load_cnn(path)
    images = faces(6, 7).images
    plain = classifier.predict_proba(images)
    mirrored = classifier.predict_proba(images[:, :, ::-1])
    classifier.tta = "flip"
    np.testing.assert_allclose(classifier.predict_proba(images), (plain + mirrored) / 2, atol=1e-6)
    classifier.tta = "tencrop"
    assert np.allclose(classifier.predict_proba(images).sum(axis=1), 1, atol=1e-5)


def test_random_warp_without_randomness_is_the_identity():
    x = torch.randn(3, 1, 48, 48)
    out = random_warp(x, 48, flip=False, rotate=0.0, scale=0.0, generator=torch.Generator())
    torch.testing.assert_close(out, x, atol=1e-4, rtol=0)
    assert center_crop(normalize(torch.zeros(2, 48, 48, dtype=torch.uint8), 0, 1), 40).shape == (
        2,
        1,
        40,
        40,
    )


def test_learning_rate_schedules():
    assert lr_factor(0.0, "onecycle", 0.2) == pytest.approx(0.04)
    assert lr_factor(0.2, "onecycle", 0.2) == pytest.approx(1.0)
    assert lr_factor(1.0, "onecycle", 0.2) == pytest.approx(0.0)
    assert lr_factor(0.5, "cosine", 0.2) == pytest.approx(0.5)
    assert lr_factor(0.7, "constant", 0.2) == 1.0


@pytest.mark.parametrize(
    "override, key",
    [
        ("model.convs=[1]", "convs must give one count per width"),
        ("augment.crop=50", "augment.crop"),
        ("solver.optimizer='rmsprop'", "solver.optimizer"),
        ("solver.lerning_rate=1", "lerning_rate"),
    ],
)
def test_bad_config_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key):
        load_cnn_config(None, [override])


def test_onnx_export_agrees_with_pytorch(trained, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    import onnxruntime

    path, _ = trained
    out = tmp_path / "exported" / f"{path.stem}.onnx"
    assert main(["cnn", "export", "--model", str(path), "--out", str(out.parent)]) == 0
    assert "agrees" in capsys.readouterr().out
    assert main(["cnn", "export", "--model", str(path), "--out", str(out.parent)]) == 2
    assert "use --force" in capsys.readouterr().err
    images = faces(7, 9).images
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {"pixels": images.astype(np.float32)})[0]
    np.testing.assert_allclose(got, load_cnn(path).predict_proba(images), atol=1e-4, rtol=0)


def test_load_model_gives_one_interface_for_every_model_kind(trained, tmp_path):
    """FC .npz, CNN .safetensors and .onnx: the same calls, raw uint8 images, same predictions."""
    pytest.importorskip("onnxruntime")
    from ferlab import load_model
    from ferlab.deep.export import export_onnx
    from ferlab.inference.models import Classifier, model_kind
    from ferlab.nn import FullyConnectedNet, Preprocessor

    cnn_path, _ = trained
    onnx_path = tmp_path / "renamed.bin"  # kinds come from the contents, not the name
    export_onnx(load_cnn(cnn_path), tmp_path / "m.onnx")
    onnx_path.write_bytes((tmp_path / "m.onnx").read_bytes())
    fc = FullyConnectedNet(48 * 48, [8], 3, seed=0)
    fc.preprocessor = Preprocessor("standardize").fit(faces(20, 3).images)
    fc.class_names, fc.input_shape = list(CLASSES), (48, 48)
    fc_path = fc.save(tmp_path / "fc.npz")
    images = faces(9, 4).images
    expected = {
        "fully_connected": fc.predict_proba(images),
        "cnn": load_cnn(cnn_path).predict_proba(images),
        "onnx": load_cnn(cnn_path).predict_proba(images),
    }
    for path, kind in ((fc_path, "fully_connected"), (cnn_path, "cnn"), (onnx_path, "onnx")):
        assert model_kind(path) == kind
        model = load_model(path)
        assert isinstance(model, Classifier)
        assert model.class_names == CLASSES and tuple(model.input_shape) == (48, 48)
        proba = model.predict_proba(images)
        assert proba.shape == (9, 3)
        np.testing.assert_allclose(proba, expected[kind], atol=1e-4, rtol=0)
        np.testing.assert_array_equal(model.predict(images), proba.argmax(axis=1))
        assert model.parameter_count > 0 and isinstance(model.training_info, dict)
        again = load_model(model.save(tmp_path / f"again-{kind}"))
        np.testing.assert_array_equal(again.predict_proba(images), proba)
        assert again.parameter_count == model.parameter_count


def test_int8_quantization_keeps_the_interface_and_the_predictions(trained, tmp_path):
    pytest.importorskip("onnxruntime")
    from ferlab.deep.export import export_onnx
    from ferlab.inference.models import load_model
    from ferlab.inference.onnx_model import quantize_onnx

    path, _ = trained
    export_onnx(load_cnn(path), tmp_path / "float.onnx", name="tiny")
    quantize_onnx(tmp_path / "float.onnx", tmp_path / "int8.onnx", faces(64, 7).images)
    float_model, int8 = load_model(tmp_path / "float.onnx"), load_model(tmp_path / "int8.onnx")
    assert int8.class_names == CLASSES and int8.meta["name"] == "tiny"
    assert "int8" in int8.meta["quantization"]
    images = faces(50, 8).images
    proba = int8.predict_proba(images)
    assert np.allclose(proba.sum(axis=1), 1, atol=1e-3)
    assert np.abs(proba - float_model.predict_proba(images)).max() < 0.1
    assert (int8.predict(images) == float_model.predict(images)).mean() >= 0.9


def test_int8_weights_use_seven_bits_so_cpus_without_vnni_do_not_saturate(trained, tmp_path):
    pytest.importorskip("onnxruntime")
    import onnx
    from onnx import numpy_helper

    from ferlab.deep.export import export_onnx
    from ferlab.inference.onnx_model import quantize_onnx

    path, _ = trained
    export_onnx(load_cnn(path), tmp_path / "float.onnx")
    quantize_onnx(tmp_path / "float.onnx", tmp_path / "int8.onnx", faces(64, 7).images)
    weights = [
        numpy_helper.to_array(t)
        for t in onnx.load(str(tmp_path / "int8.onnx")).graph.initializer
        if t.data_type == onnx.TensorProto.INT8
    ]
    assert weights
    assert all(np.abs(w).max() <= 64 for w in weights)  # symmetric 7-bit; 8-bit reaches 127
    assert max(np.abs(w).max() for w in weights) >= 60  # the 7-bit range is used, not shrunk


def test_a_tampered_onnx_file_is_refused(trained, tmp_path):
    pytest.importorskip("onnxruntime")
    import onnx

    from ferlab.deep.export import export_onnx
    from ferlab.inference.models import load_model

    path, _ = trained
    export_onnx(load_cnn(path), tmp_path / "m.onnx")
    model = onnx.load(str(tmp_path / "m.onnx"))
    for entry in model.metadata_props:
        if entry.key == "ferlab":  # the model record
            entry.value = json.dumps(json.loads(entry.value) | {"class_names": ["only", "two"]})
    onnx.save(model, str(tmp_path / "bad.onnx"))
    with pytest.raises(ModelFileError, match="3 classes but 2 class names"):
        load_model(tmp_path / "bad.onnx")
    (tmp_path / "cut.onnx").write_bytes((tmp_path / "m.onnx").read_bytes()[:500])
    with pytest.raises(ModelFileError, match="cut.onnx"):
        load_model(tmp_path / "cut.onnx")


def test_predict_on_a_folder_for_both_model_types(trained, tmp_path):
    from ferlab.data.fer2013 import CLASS_NAMES
    from ferlab.inference.compat import test_deep_fer_model
    from ferlab.inference.models import model_kind
    from ferlab.inference.predict import predict_folder
    from ferlab.nn import FullyConnectedNet, Preprocessor

    cnn_path, _ = trained
    fc = FullyConnectedNet(48 * 48, [8], 7, seed=0)
    fc.preprocessor = Preprocessor("standardize").fit(faces(20, 3).images)
    fc.class_names, fc.input_shape = list(CLASS_NAMES), (48, 48)
    fc_path = fc.save(tmp_path / "fc.npz")
    assert model_kind(cnn_path) == "cnn" and model_kind(fc_path) == "fully_connected"

    folder = tmp_path / "images"
    folder.mkdir()
    images = faces(5, 11).images
    names = [f"{i}.png" for i in range(5)]
    for name, image in zip(names, images, strict=True):
        Image.fromarray(image).save(folder / name)
    cnn_predictions = predict_folder(folder, cnn_path)
    assert [p.file for p in cnn_predictions] == names
    expected = load_cnn(cnn_path).predict(images)
    assert [p.class_index for p in cnn_predictions] == list(expected)
    assert {p.class_name for p in cnn_predictions} <= set(CLASSES)
    np.testing.assert_array_equal(test_deep_fer_model(folder, cnn_path), expected)
    fc_labels = test_deep_fer_model(folder, fc_path)
    assert fc_labels.shape == (5,) and set(fc_labels) <= set(range(7))
    stem = cnn_path.with_suffix("")  # the report's suffix-less model name
    np.testing.assert_array_equal(test_deep_fer_model(folder, stem), expected)


def test_the_compat_script_takes_the_reports_cnn_model_name(trained, tmp_path, capsys):
    """``python -m ferlab.inference.compat --cnn FOLDER deep_fer_model`` finds the .safetensors file."""
    from ferlab.inference.compat import main as compat_main

    cnn_path, _ = trained
    folder = tmp_path / "images"
    folder.mkdir()
    images = faces(3, 12).images
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i}.png")
    assert compat_main(["--cnn", str(folder), str(cnn_path.with_suffix(""))]) == 0
    printed = [int(line) for line in capsys.readouterr().out.split()]
    assert printed == list(load_cnn(cnn_path).predict(images))
    assert compat_main([str(folder), str(cnn_path.with_suffix(""))]) == 2  # looks for .npz


def write_fer_folder(root, per_class=4):
    from ferlab.data.fer2013 import CLASS_NAMES

    rng = np.random.default_rng(0)
    for folder, prefixes in (("train", ["Training"]), ("test", ["PublicTest", "PrivateTest"])):
        for c, name in enumerate(CLASS_NAMES):
            target = root / "fer2013" / folder / name
            target.mkdir(parents=True)
            for prefix in prefixes:
                for i in range(per_class if folder == "train" else 2):
                    image = rng.integers(0, 60, (48, 48)).astype(np.uint8)
                    image[6 * c : 6 * c + 6] += 150
                    Image.fromarray(image).save(target / f"{prefix}_{c}{i}.png")
    return root


def test_cnn_train_and_evaluate_commands(tmp_path, capsys):
    data = write_fer_folder(tmp_path / "data")
    config = tmp_path / "cnn.toml"
    config.write_text(
        textwrap.dedent(
            """
            [model]
            widths = [4, 8]
            convs = [1, 1]
            [solver]
            batch_size = 8
            epochs = 2
            [data]
            val_size = 0.25
            """
        )
    )
    run = tmp_path / "run"
    args = ["cnn", "train", str(config), "--data", str(data), "--out", str(run), "--quiet"]
    assert main([*args, "--device", "cpu"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert {"public_test_accuracy", "private_test_accuracy"} <= set(summary)
    capsys.readouterr()
    model = str(run / "model.safetensors")
    for split, tta in (("public", "flip"), ("private", "tencrop"), ("val", "none")):
        argv = ["evaluate", "--model", model, "--data", str(data), "--split", split]
        assert main([*argv, "--tta", tta, "--format", "json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report
    assert main(["cnn", "train", str(config), "--out", str(run), "--set", "solver.lr=-1"]) == 2
    assert "solver.lr" in capsys.readouterr().err


def test_cnn_commands_without_torch_print_the_install_hint(tmp_path):
    script = textwrap.dedent(
        """
        import sys
        sys.modules["torch"] = None  # importing torch now fails, as when it is not installed
        from ferlab.cli import main
        import ferlab.inference.models, ferlab.runs.fc, ferlab.inference.predict, ferlab.evaluation.scoring  # no torch
        sys.exit(main(sys.argv[1:]))
        """
    )
    for argv in (
        ["cnn", "train", "x.toml", "--out", str(tmp_path)],
        ["cnn", "export", "--model", "m"],
    ):
        done = subprocess.run(
            [sys.executable, "-c", script, *argv], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "pip install 'ferlab[deep]'" in lines[0], done.stderr
    ok = subprocess.run(
        [sys.executable, "-c", script, "--help"], capture_output=True, text=True, timeout=60
    )
    assert ok.returncode == 0 and "cnn" in ok.stdout


def test_distillation_loss_matches_its_formula():
    from ferlab.deep.losses import distillation_loss

    gen = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(5, 3, generator=gen), torch.randn(5, 3, generator=gen)
    labels = torch.tensor([0, 1, 2, 1, 0])
    t, alpha = 3.0, 0.7
    p_teacher = torch.softmax(teacher / t, dim=1)
    kl = (p_teacher * (p_teacher.log() - torch.log_softmax(student / t, dim=1))).sum(1).mean()
    hard = -torch.log_softmax(student, dim=1)[torch.arange(5), labels].mean()
    expected = (1 - alpha) * hard + alpha * t * t * kl
    got = distillation_loss(student, teacher, labels, temperature=t, alpha=alpha)
    assert torch.allclose(got, expected, atol=1e-6)
    assert float(distillation_loss(teacher, teacher, labels, temperature=t, alpha=1.0)) < 1e-6


def teacher_divergence(student, splits) -> float:
    """KL(teachers || student) on the validation faces' centre crops, averaged over faces."""
    x = center_crop(normalize(torch.from_numpy(splits.val.images), student.mean, student.std), 40)
    with torch.no_grad():
        student.module.eval()
        s = torch.log_softmax(student.module(x), dim=1)
        t = torch.log_softmax(student.teacher_logits(x), dim=1)
        return float((t.exp() * (t - s)).sum(1).mean())


def test_distillation_brings_the_student_toward_the_teacher(trained, splits, tmp_path):
    """A student trained on the teacher's outputs alone (alpha = 1) moves toward them."""
    from ferlab.deep.distillation import load_teachers

    teacher_path, _ = trained
    teachers = load_teachers(str(teacher_path), torch.device("cpu"), CLASSES)
    config = tiny_config(
        "solver.epochs=4", f'distill.teacher="{teacher_path}"', "distill.alpha=1.0"
    )
    student = make_trainer(config, splits)
    student.teachers = teachers
    before = teacher_divergence(student, splits)
    student.train()
    after = teacher_divergence(student, splits)
    assert after < 0.5 * before, (before, after)


def test_a_teacher_with_other_classes_is_refused(trained, tmp_path):
    from ferlab.deep.distillation import load_teachers

    teacher_path, _ = trained
    with pytest.raises(ConfigError, match="predicts"):
        load_teachers(str(teacher_path), torch.device("cpu"), ["x", "y", "z"])


def test_a_run_with_a_teacher_trains_and_records_it(trained, splits, tmp_path):
    teacher_path, _ = trained
    config = tiny_config("solver.epochs=2", f'distill.teacher="{teacher_path}"')
    summary = run_cnn_training(config, tmp_path / "student", splits=splits, verbose=False)
    assert summary["epochs"] == 2
    recorded = json.loads((tmp_path / "student" / "config.json").read_text())
    assert recorded["distill"] == {
        "teacher": str(teacher_path), "temperature": 4.0, "alpha": 0.9, "flip": False, "views": 0
    }  # fmt: skip


def test_teachers_from_another_split_are_counted_and_the_run_warns(
    trained, splits, tmp_path, capsys
):
    """The teacher held out seed 0's part; a seed-1 student validates on faces it learned from,
    unless it holds out the same part (data.split_seed = 0)."""
    teacher_path, _ = trained
    teacher = (f'distill.teacher=["{teacher_path}", "{teacher_path}"]', "solver.epochs=1")
    for extra, expected in ((("seed=1",), 2), (("seed=1", "data.split_seed=0"), 0)):
        capsys.readouterr()
        summary = run_cnn_training(
            tiny_config(*teacher, *extra), tmp_path / str(expected), splits=splits
        )
        assert summary["teachers_on_other_splits"] == expected
        warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
        assert len(warnings) == (1 if expected else 0), warnings
        if expected:
            assert warnings[0].startswith("warning: 2 of 2 teachers trained on another split")
            assert "data.split_seed" in warnings[0]
    plain = run_cnn_training(tiny_config("solver.epochs=1"), tmp_path / "plain", splits=splits)
    assert "teachers_on_other_splits" not in plain


def student_batch(trainer, splits):
    """The validation faces as the student sees them (N, 1, 40, 40), and as 0..255 pixels."""
    x = center_crop(normalize(torch.from_numpy(splits.val.images), trainer.mean, trainer.std), 40)
    return x, x * trainer.std + trainer.mean


def test_a_flip_teacher_averages_its_logits_over_the_batch_and_its_mirror(trained, splits):
    """With ``distill.flip`` the teacher's logits are the mean over the batch and the batch
    mirrored left to right; without it, over the batch alone."""
    from ferlab.deep.distillation import load_teachers

    teacher_path, _ = trained
    trainer = make_trainer(
        tiny_config(f'distill.teacher="{teacher_path}"', "distill.flip=true"), splits
    )
    trainer.teachers = load_teachers(str(teacher_path), torch.device("cpu"), CLASSES)
    (teacher,) = trainer.teachers
    x, pixels = student_batch(trainer, splits)
    with torch.no_grad():
        plain = teacher.module((pixels - teacher.mean) / teacher.std)
        mirrored = teacher.module((pixels.flip(-1) - teacher.mean) / teacher.std)
        torch.testing.assert_close(
            trainer.teacher_logits(x), (plain + mirrored) / 2, atol=1e-5, rtol=0
        )
        assert not torch.allclose(plain, mirrored, atol=1e-3)
        trainer.settings = with_values(trainer.settings, {"distill.flip": False})
        torch.testing.assert_close(trainer.teacher_logits(x), plain, atol=1e-5, rtol=0)


def test_float32_cpu_teachers_run_through_onnx_runtime_with_pytorchs_logits(trained, splits):
    """On the CPU in float32 the teachers run as ONNX Runtime sessions, exported on first use,
    for any batch size, giving PyTorch's logits; in bfloat16 PyTorch runs them."""
    from ferlab.deep.distillation import OnnxNetwork, load_teachers

    teacher_path, _ = trained
    config = tiny_config(f'distill.teacher="{teacher_path}"')
    trainer = make_trainer(config, splits)
    trainer.teachers = load_teachers(str(teacher_path), torch.device("cpu"), CLASSES)
    (teacher,) = trainer.teachers
    x, pixels = student_batch(trainer, splits)
    with torch.no_grad():
        for rows in (slice(0, 8), slice(8, 13), slice(None)):
            expected = teacher.module((pixels[rows] - teacher.mean) / teacher.std)
            torch.testing.assert_close(trainer.teacher_logits(x[rows]), expected, atol=1e-5, rtol=0)
    assert trainer.teacher_runtime == "onnxruntime"
    assert isinstance(trainer.teacher_networks.networks[0], OnnxNetwork)

    bf16 = make_trainer(
        tiny_config(f'distill.teacher="{teacher_path}"', "device.cpu_bf16=true"), splits
    )
    bf16.teachers = trainer.teachers
    with torch.no_grad():
        assert bf16.teacher_logits(x).shape == (len(x), len(CLASSES))
    assert bf16.teacher_runtime == "torch"
    assert not isinstance(bf16.teacher_networks.networks[0], OnnxNetwork)
    # PyTorch teachers take the student's channels_last format (twice as fast in bfloat16).
    convs = [m for m in teacher.module.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    assert not convs[-1].weight.is_contiguous()


def test_an_ensemble_teacher_gives_the_mean_of_its_members_logits(trained, splits, tmp_path):
    """With several teacher files the student learns their mean logits, each member seeing the
    batch in its own pixel scaling; the run records the list."""
    from ferlab.deep.distillation import load_teachers

    first, _ = trained
    architecture = architecture_from_config(tiny_config().model, len(CLASSES))
    torch.manual_seed(7)
    second = save_cnn(
        build_cnn(architecture),
        model_meta(architecture, CLASSES, 90.0, 30.0, 40),
        tmp_path / "second.safetensors",
    )
    paths = [str(first), str(second)]
    config = tiny_config("solver.epochs=1", f"distill.teacher={json.dumps(paths)}")
    trainer = make_trainer(config, splits)
    trainer.teachers = load_teachers(paths, torch.device("cpu"), CLASSES)
    x, pixels = student_batch(trainer, splits)
    with torch.no_grad():
        members = [t.module((pixels - t.mean) / t.std) for t in trainer.teachers]
        torch.testing.assert_close(
            trainer.teacher_logits(x), (members[0] + members[1]) / 2, atol=1e-5, rtol=0
        )
    assert not torch.allclose(members[0], members[1], atol=1e-2)

    run_cnn_training(config, tmp_path / "student", splits=splits, verbose=False)
    recorded = json.loads((tmp_path / "student" / "config.json").read_text())
    assert recorded["distill"]["teacher"] == paths


def test_a_run_from_model_init_starts_from_its_weights(trained, splits, tmp_path):
    """With a learning rate too small to move anything, a run started from a model file ends
    where that model was, and a run started from scratch does not."""
    from ferlab.deep.io import load_cnn

    start_path, _ = trained
    still = ("solver.epochs=1", "solver.schedule=constant", "solver.lr=1e-9")
    runs = {}
    for name, extra in {"init": (f'model.init="{start_path}"',), "scratch": ()}.items():
        run_cnn_training(tiny_config(*still, *extra), tmp_path / name, splits=splits, verbose=False)
        runs[name] = load_cnn(tmp_path / name / "model.safetensors")
    start = load_cnn(start_path)

    def convs(classifier):
        return [p for n, p in classifier.module.state_dict().items() if n.endswith("weight")]

    for ours, theirs in zip(convs(runs["init"]), convs(start), strict=True):
        torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)
    assert not torch.allclose(convs(runs["scratch"])[0], convs(start)[0], atol=1e-3)
    assert (runs["init"].mean, runs["init"].std) == (start.mean, start.std)


@pytest.mark.parametrize(
    "override, message",
    [
        ("seed=1", "another split"),
        ("model.widths=[2, 16]", "different network"),  # one block narrower
        ("model.convs=[2, 1]", "different network"),
        ("model.head_dropout=0.5", "different network"),
    ],
)
def test_a_model_init_that_does_not_fit_the_run_is_refused(
    trained, splits, tmp_path, override, message
):
    start_path, _ = trained
    config = tiny_config(override, f'model.init="{start_path}"')
    with pytest.raises(ConfigError, match=message):
        run_cnn_training(config, tmp_path / "run", splits=splits, verbose=False)
    assert not (tmp_path / "run" / "run.json").exists()


def test_a_widened_network_computes_what_the_narrower_one_did(trained, splits):
    """Widened to [6, 12] channels, the start model gives the same outputs; its head's added
    columns are not exact copies, so training can pull the copies apart; the same widths give
    an exact copy."""
    start = load_cnn(trained[0])
    x = torch.from_numpy(splits.val.images[:, None, 4:44, 4:44].astype(np.float32) - 60) / 50
    outputs = {}
    for widths in ([4, 8], [6, 12]):
        module = build_cnn({**start.meta["architecture"], "widths": widths})
        copy_widened(start.module, module, torch.Generator().manual_seed(0))
        outputs[tuple(widths)] = module.eval()(x)
        if widths == [4, 8]:
            for name, value in start.module.state_dict().items():
                assert torch.equal(module.state_dict()[name], value), name
    start.module.eval()
    with torch.no_grad():
        torch.testing.assert_close(outputs[(6, 12)], start.module(x), atol=1e-5, rtol=0)
    head = module.head.weight.detach()
    assert len({tuple(column.round(decimals=5).tolist()) for column in head.T}) == 12


def test_a_wider_run_starts_from_the_narrower_model_init(trained, splits, tmp_path):
    start_path, _ = trained
    still = ("solver.epochs=1", "solver.schedule=constant", "solver.lr=1e-9")
    config = tiny_config(*still, "model.widths=[6, 12]", f'model.init="{start_path}"')
    run_cnn_training(config, tmp_path / "wide", splits=splits, verbose=False)
    wide, start = load_cnn(tmp_path / "wide" / "model.safetensors"), load_cnn(start_path)
    first, start_first = wide.module.features[0].weight, start.module.features[0].weight
    assert first.shape[0] == 6
    torch.testing.assert_close(first[:4], start_first, atol=1e-6, rtol=0)


def test_a_model_init_from_another_seed_is_accepted_when_the_split_seed_matches(
    trained, splits, tmp_path
):
    """The start model trained with seed 0; another seed holding out the same part may go on."""
    start_path, _ = trained
    config = tiny_config("seed=1", "data.split_seed=0", f'model.init="{start_path}"')
    run_cnn_training(config, tmp_path / "run", splits=splits, verbose=False)
    info = load_cnn(tmp_path / "run" / "model.safetensors").training_info
    assert (info["seed"], info["data"]["split_seed"]) == (1, 0)


def test_a_refit_run_trains_on_the_validation_part_too_and_keeps_its_last_epoch(
    trained, splits, tmp_path, capsys
):
    """Refitting, a run may start from and learn from a model of another split (it trains on its
    validation part anyway), keeps its last epoch, and its model can neither start a run that
    validates on that part nor be evaluated there."""
    from ferlab.evaluation.scoring import split_of

    start_path, _ = trained
    config = tiny_config(
        "seed=1",
        "solver.epochs=3",
        "data.refit=true",
        f'model.init="{start_path}"',
        f'distill.teacher="{start_path}"',
    )
    capsys.readouterr()
    summary = run_cnn_training(config, tmp_path / "refit", splits=splits)
    err = capsys.readouterr().err
    assert "training on 96 samples, the validation part's 32 included (data.refit)" in err
    assert "warning" not in err
    assert (summary["n_train"], summary["refit"], summary["best_epoch"]) == (96, True, 3)
    assert summary["teachers_on_other_splits"] == 0
    model_path = tmp_path / "refit" / "model.safetensors"
    refit = load_cnn(model_path)
    assert refit.training_info["data"]["refit"] is True
    onward = tiny_config("seed=1", "solver.epochs=1", f'model.init="{model_path}"')
    with pytest.raises(ConfigError, match="another split"):
        run_cnn_training(onward, tmp_path / "onward", splits=splits, verbose=False)
    with pytest.raises(ConfigError, match="data.refit"):
        split_of(refit, splits.val, "fer2013", "val")


def test_the_cnns_best_epoch_and_early_stop_follow_solver_monitor(splits):
    """The CNN keeps the weights of the epoch its monitor (solver.monitor, validation accuracy
    unless set) likes best, and stops once patience epochs bring no better one: on this run
    validation accuracy peaks early while validation loss keeps falling."""
    chosen = {}
    for monitor in ("val_acc", "val_loss"):
        config = tiny_config("solver.epochs=6", "solver.patience=2", "seed=2")
        config = with_values(config, {"solver.monitor": monitor})
        kept = {}
        trainer = make_trainer(config, splits)

        def snapshot(epoch, history, kept=kept, module=trainer.module):
            kept[epoch] = {k: v.clone() for k, v in module.state_dict().items()}

        trainer.epoch_callback = snapshot
        history = trainer.train()
        best = (
            int(np.argmin(history["val_loss"])) + 1
            if monitor == "val_loss"
            else int(np.argmax(history["val_acc"])) + 1
        )
        assert trainer.best_epoch == best
        epochs = len(history["val_acc"])
        assert trainer.stopped_early == (epochs < 6) and epochs in (best + 2, 6)
        for name, value in trainer.module.state_dict().items():
            assert torch.equal(value, kept[best][name]), name
        chosen[monitor] = (best, trainer.stopped_early)
    assert chosen["val_acc"] != chosen["val_loss"]
    assert tiny_config().solver.monitor == "val_acc"


def test_a_checkpoint_from_before_the_monitor_setting_watches_validation_accuracy():
    from ferlab.deep.checkpoint import best_epoch_state

    old = {"best_val_acc": 0.75, "best_epoch": 2, "stopped_early": False}
    assert best_epoch_state(old)["monitor"] == "val_acc"
    assert best_epoch_state(old)["best_score"] == -0.75
    assert best_epoch_state({**old, "monitor": "val_loss", "best_score": 0.5})["best_score"] == 0.5


# -- the model record, and CNN and ONNX files of the layout written before it ---------------

from pathlib import Path  # noqa: E402

COMMITTED_MODELS = sorted(
    (Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "models").glob(
        "*.safetensors"
    )
)


def format1_cnn(classifier, path):
    """A CNN file as ferlab wrote it before the model record (format 1): the ``ferlab`` header
    field with format_version 1 and the training record under ``training_info``."""
    from safetensors.torch import save_file

    meta = {
        "format": "ferlab-cnn",
        "format_version": 1,
        "kind": "cnn",
        "ferlab_version": "0.1.0",
        "architecture": classifier.meta["architecture"],
        "class_names": classifier.class_names,
        "input_shape": [48, 48],
        "preprocessing": {"mean": classifier.mean, "std": classifier.std, "crop": classifier.crop},
        "training_info": {"data": {"dataset": "fer2013"}, "seed": 5},
    }
    state = {k: v.contiguous() for k, v in classifier.module.state_dict().items()}
    save_file(state, str(path), metadata={"format": "ferlab-cnn", "ferlab": json.dumps(meta)})
    return path


def format1_onnx(classifier, path, **extra):
    """An ONNX file as ``export_onnx`` wrote it before the model record: separate
    ``ferlab_*`` metadata entries (as the shipped model holds), plus ``extra`` ones."""
    import onnx

    from ferlab.deep.export import export_onnx

    export_onnx(classifier, path)
    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in {
        "ferlab_class_names": json.dumps(classifier.class_names),
        "ferlab_input": "float32 pixels 0..255, shape (N, 48, 48)",
        "ferlab_name": "old",
        "ferlab_version": "0.1.0",
        "ferlab_training_info": json.dumps({"seed": 6}),
        **extra,
    }.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return path


def test_new_cnn_and_onnx_files_hold_the_same_record(trained, tmp_path):
    pytest.importorskip("onnxruntime")
    import onnx

    from ferlab.deep.export import export_onnx
    from ferlab.inference.models import model_record
    from ferlab.modelfile.record import FIELDS

    path, _ = trained
    raw = path.read_bytes()
    header = json.loads(raw[8 : 8 + struct.unpack("<Q", raw[:8])[0]])["__metadata__"]
    assert set(header) == {"ferlab"}
    cnn = json.loads(header["ferlab"])
    export_onnx(load_cnn(path), tmp_path / "m.onnx", name="tiny")
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert set(props) == {"ferlab"}
    exported = json.loads(props["ferlab"])
    for record in (cnn, exported):
        assert set(record) == set(FIELDS) and record["format_version"] == 2
        assert record["class_names"] == CLASSES and record["input_shape"] == [48, 48]
        assert record["architecture"]["widths"] == [4, 8]
        assert record["training"] == load_cnn(path).training_info != {}
    assert (cnn["kind"], exported["kind"]) == ("cnn", "onnx")
    assert exported["name"] == "tiny" and exported["preprocessing"] == cnn["preprocessing"]
    assert model_record(path) == cnn and model_record(tmp_path / "m.onnx") == exported


def test_a_format1_cnn_file_loads_as_before_and_saves_in_the_one_layout(trained, tmp_path):
    from ferlab.inference.models import load_model, model_record

    path, _ = trained
    classifier = load_cnn(path)
    old = format1_cnn(classifier, tmp_path / "old.safetensors")
    images = faces(8, 13).images
    loaded = load_model(old)
    np.testing.assert_array_equal(loaded.predict_proba(images), classifier.predict_proba(images))
    assert loaded.training_info == {"data": {"dataset": "fer2013"}, "seed": 5}
    assert model_record(old)["format_version"] == 2 and model_record(old)["training"]["seed"] == 5
    again = loaded.save(tmp_path / "again.safetensors")
    assert model_record(again)["training"] == {"data": {"dataset": "fer2013"}, "seed": 5}
    np.testing.assert_array_equal(
        load_cnn(again).predict_proba(images), loaded.predict_proba(images)
    )


@pytest.mark.parametrize(
    "change, message",
    [
        ({"format_version": 3}, r"newer ferlab \(format 3\)"),
        ({"format_version": "1"}, "format_version must be a positive integer"),
        ({"format": "ferlab-cnn-checkpoint"}, "expected a '?ferlab-cnn'? file"),
        ({"preprocessing": {"mean": 1.0, "std": 1.0, "crop": 10**9}}, "crop must be 8 to 48"),
        ({"architecture": {"name": "ferlab-vgg", "widths": [4] * 10**4}}, "1 to 16 widths"),
    ],
)
def test_a_damaged_cnn_record_is_one_line(trained, tmp_path, change, message):
    from safetensors.torch import save_file

    from ferlab.inference.models import load_model

    path, _ = trained
    classifier = load_cnn(path)
    for layout in ("old", "new"):
        source = format1_cnn(classifier, tmp_path / "f1.safetensors") if layout == "old" else path
        raw = source.read_bytes()
        meta = json.loads(
            json.loads(raw[8 : 8 + struct.unpack("<Q", raw[:8])[0]])["__metadata__"]["ferlab"]
        )
        state = {k: v.contiguous() for k, v in classifier.module.state_dict().items()}
        bad = tmp_path / f"bad-{layout}.safetensors"
        save_file(state, str(bad), metadata={"ferlab": json.dumps(meta | change)})
        with pytest.raises(ModelFileError, match=message) as caught:
            load_model(bad)
        assert "\n" not in str(caught.value) and bad.name in str(caught.value)


def test_a_format1_onnx_file_loads_as_before(trained, tmp_path):
    pytest.importorskip("onnxruntime")
    import onnx

    from ferlab.inference.models import load_model, model_record
    from ferlab.inference.onnx_model import quantize_onnx, set_temperature

    path, _ = trained
    classifier = load_cnn(path)
    old = format1_onnx(
        classifier, tmp_path / "old.onnx", ferlab_temperature='{"none": 1.5, "flip": 1.25}'
    )
    model = load_model(old)
    assert model.class_names == CLASSES and model.meta["name"] == "old"
    assert model.meta["version"] == "0.1.0" and model.training_info == {"seed": 6}
    assert model.temperature == {"none": 1.5, "flip": 1.25}
    record = model_record(old)
    assert record["format_version"] == 2 and record["temperature"]["flip"] == 1.25
    # Written again (calibrated, quantised), the file holds the one record and nothing else.
    calibrated = set_temperature(old, tmp_path / "calibrated.onnx", {"none": 2.0, "flip": 1.0})
    int8 = quantize_onnx(calibrated, tmp_path / "int8.onnx", faces(64, 7).images)
    for written in (calibrated, int8):
        keys = {p.key for p in onnx.load(str(written)).metadata_props}
        assert keys == {"ferlab"}
        assert load_model(written).meta["name"] == "old"
        assert load_model(written).training_info == {"seed": 6}
    assert load_model(int8).temperature == {"none": 2.0, "flip": 1.0}
    assert "int8" in load_model(int8).meta["quantization"]
    # The old layout is checked as before: class names against the graph, one line.
    bad = format1_onnx(classifier, tmp_path / "bad.onnx", ferlab_class_names='["only", "two"]')
    with pytest.raises(ModelFileError, match="3 classes but 2 class names"):
        load_model(bad)
    mixed = onnx.load(str(calibrated))
    mixed.metadata_props.add(key="ferlab_name", value="other")
    onnx.save(mixed, str(tmp_path / "mixed.onnx"))
    with pytest.raises(ModelFileError, match="both a ferlab record and old-layout fields"):
        load_model(tmp_path / "mixed.onnx")


@pytest.mark.skipif(not COMMITTED_MODELS, reason="no committed checkpoints in this tree")
def test_the_committed_checkpoints_still_load():
    from ferlab.inference.models import load_model, model_record

    for path in COMMITTED_MODELS:
        record = model_record(path)
        assert record["kind"] == "cnn" and len(record["class_names"]) == 7, path.name
    model = load_model(COMMITTED_MODELS[0])
    proba = model.predict_proba(faces(4, 14).images)
    assert proba.shape == (4, 7) and np.allclose(proba.sum(axis=1), 1, atol=1e-5)
