"""The one settings schema: every config kind, its defaults and its rules, declared once.

Each config file kind (fully connected training, CNN training, scikit-learn baselines) is a
pydantic model. pydantic was chosen over hand-written checks because it states types, ranges and
choices declaratively, rejects unknown keys and silent conversions (strict mode: no ``"16"`` to
16, no ``32.9`` to 32) and reports every failure with its location; :func:`validate_config`
turns the first failure into one line naming the key, the value and the rule. The README's config
reference is tested against these models (``tests/test_settings.py``).
"""

from __future__ import annotations

import difflib
import re
import typing
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ferlab.data.split import DEFAULT_VAL_SIZE
from ferlab.errors import ConfigError
from ferlab.nn.settings import DTYPES, MONITORS, OPTIMIZERS, ModelSettings, SolverSettings
from ferlab.nn.tracking import DEFAULT_MONITOR

PREPROCESSING = ("center", "standardize", "per_image")
FC_OPTIMIZERS = OPTIMIZERS

Probability = Annotated[float, Field(ge=0.0, lt=1.0)]
Positive = Annotated[float, Field(gt=0.0)]
Count = Annotated[int, Field(ge=1)]


class Section(BaseModel):
    """A table of settings: unknown keys, wrong types and non-finite numbers are refused, and a
    checked object is frozen (its values are read as attributes, ``settings.solver.lr``; a
    changed copy comes from :func:`ferlab.settings.loading.with_values`)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)


SectionT = typing.TypeVar("SectionT", bound=Section)


def fraction_or_count(value: int | float) -> int | float:
    """A held-out size: a float fraction in (0, 1) or an integer count >= 1."""
    if (isinstance(value, float) and not 0 < value < 1) or (isinstance(value, int) and value < 1):
        raise ValueError("must be a fraction in (0, 1) or a whole count >= 1")
    return value


def known_dataset(name: str) -> str:
    """A data set name registered in :data:`ferlab.data.DATASETS`."""
    from ferlab.data import DATASETS

    if name not in DATASETS:
        raise ValueError(f"must be one of {', '.join(sorted(DATASETS))}")
    return name


class DataSource(Section):
    """Where the data come from and which part trains (every config kind has these)."""

    dataset: str = Field("digits", description="data set: fer2013, cifar10 or digits")
    path: str | None = Field(None, description="data location (--data overrides it)")
    train_limit: Count | None = Field(None, description="a stratified, seeded subset of N")
    exclude_classes: list[str] = Field(default_factory=list, description="classes left out")

    _known_dataset = field_validator("dataset")(lambda value: known_dataset(value))


class HeldOut(Section):
    """A validation part held out of the training split."""

    val_size: int | float = Field(
        DEFAULT_VAL_SIZE,
        description="fraction in (0, 1) or whole count of training samples held out",
    )

    split_seed: int | None = Field(
        None,
        ge=0,
        description="seed of the hold-out (default: the run's seed); runs sharing it hold out "
        "the same samples",
    )

    _fraction_or_count = field_validator("val_size")(lambda value: fraction_or_count(value))


class Preprocessed(Section):
    """An input transform fitted on the training part and stored in the model file."""

    preprocessing: Literal["center", "standardize", "per_image"] = Field(
        "standardize", description="input transform stored in the model file"
    )


class DataSettings(DataSource, HeldOut, Preprocessed):
    """The data of a fully connected training config."""


# The fully connected engine's settings: defaults and choices come from the engine's own type
# (ferlab.nn.settings), whose rules tests/test_settings.py checks agree with these.
_MODEL, _SOLVER = ModelSettings(), SolverSettings()


class FCModelSettings(Section):
    hidden_dims: list[Count] = Field(
        list(_MODEL.hidden_dims), description="hidden layer widths; [] is softmax"
    )
    dropout: Probability = Field(_MODEL.dropout, description="probability of dropping a unit")
    reg: float = Field(_MODEL.reg, ge=0.0, description="L2 strength: 0.5 * reg * sum(W**2)")
    weight_scale: Positive | None = Field(
        _MODEL.weight_scale, description="initial weight std (None: He)"
    )
    dtype: Literal[DTYPES] = Field(_MODEL.dtype, description="array precision")


class FCSolverSettings(Section):
    optimizer: Literal[FC_OPTIMIZERS] = _SOLVER.optimizer
    lr: Positive = Field(_SOLVER.lr, description="learning rate")
    momentum: Probability = Field(_SOLVER.momentum, description="momentum (sgd_momentum, nesterov)")
    lr_decay: float = Field(
        _SOLVER.lr_decay, gt=0.0, le=1.0, description="lr factor after each epoch"
    )
    batch_size: Count = _SOLVER.batch_size
    epochs: Count = _SOLVER.epochs
    patience: Count | None = Field(
        _SOLVER.patience, description="epochs without improvement before stop"
    )
    flip: bool = Field(_SOLVER.flip, description="mirror a random half of each batch")
    shift: int = Field(_SOLVER.shift, ge=0, le=16, description="move each image by up to N pixels")
    monitor: Literal[MONITORS] = Field(
        _SOLVER.monitor,
        description="what early stopping and the best epoch watch: validation loss or accuracy",
    )


def fc_engine_settings(settings: TrainSettings) -> tuple[ModelSettings, SolverSettings]:
    """The NumPy engine's frozen settings of a fully connected config's ``model`` and ``solver``
    tables (the engine checks them again as it builds the net and the Solver)."""
    model = {**settings.model.model_dump(), "hidden_dims": tuple(settings.model.hidden_dims)}
    return ModelSettings(**model), SolverSettings(**settings.solver.model_dump())


class TrainSettings(Section):
    """A fully connected training config (``ferlab train``)."""

    seed: int = Field(0, ge=0, description="same seed, same result")
    data: DataSettings = Field(default_factory=DataSettings)
    model: FCModelSettings = Field(default_factory=FCModelSettings)
    solver: FCSolverSettings = Field(default_factory=FCSolverSettings)


class CNNDataSettings(DataSource, HeldOut):
    """The data of a CNN training config (48x48 faces; the CNN standardises them itself)."""

    dataset: str = "fer2013"
    refit: bool = Field(
        False,
        description="train on the validation part too, once every setting has been chosen on "
        "it: the run keeps its last epoch, and its validation figures are training figures",
    )


class CNNModelSettings(Section):
    widths: list[Count] = Field([32, 64, 128, 256], min_length=1, description="channels per block")
    convs: list[Count] = Field([1, 1, 2, 1], min_length=1, description="convolutions per block")
    dropout: Probability = 0.1
    head_dropout: Probability = 0.3
    init: str | None = Field(
        None,
        description="a .safetensors model file to start from: same network and classes, "
        "trained on the same split (same data settings and seed)",
    )

    @model_validator(mode="after")
    def _one_count_per_width(self) -> CNNModelSettings:
        if len(self.convs) != len(self.widths):
            raise ValueError(
                f"convs must give one count per width ({len(self.widths)}), got {len(self.convs)}"
            )
        return self


class AugmentSettings(Section):
    crop: int = Field(44, ge=8, le=48, description="random crop side (centre crop at test)")
    flip: bool = True
    rotate: float = Field(10.0, ge=0.0, le=45.0, description="degrees")
    scale: float = Field(0.1, ge=0.0, lt=0.5)
    erase: float = Field(0.0, ge=0.0, le=1.0, description="random erasing's probability per image")
    mixup: float = Field(0.0, ge=0.0, description="mixup's Beta(alpha, alpha); 0 is off")
    cutmix: float = Field(0.0, ge=0.0, description="CutMix's Beta(alpha, alpha); 0 is off")


class CNNSolverSettings(Section):
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: Positive = 0.05
    momentum: Probability = 0.9
    weight_decay: float = Field(5e-4, ge=0.0)
    batch_size: Count = 128
    epochs: Count = 30
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"
    warmup: Probability = Field(
        0.15, description="onecycle's fraction of steps rising to lr; cosine starts at lr"
    )
    label_smoothing: Probability = 0.1
    patience: Count | None = None
    monitor: Literal[MONITORS] = Field(
        DEFAULT_MONITOR["cnn"],
        description="what early stopping and the best epoch watch: validation loss or accuracy",
    )
    eval_batch_size: Count = 512
    ema: float = Field(0.0, ge=0.0, lt=1.0, description="weight averaging's decay; 0 is off")


class DeviceSettings(Section):
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    threads: int = Field(0, ge=0, description="0: PyTorch's default")
    amp: bool = Field(True, description="bfloat16 autocast on a CUDA device")
    cpu_bf16: bool = Field(
        False,
        description="bfloat16 autocast on the CPU too: 1.6-2.4x faster training on CPUs with "
        "AMX (Intel Xeon 4th gen and later), slower on most others",
    )
    channels_last: bool = True

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
            raise ValueError("must be auto, cpu, cuda or cuda:N")
        return value


class DistillSettings(Section):
    """Knowledge distillation from a trained teacher CNN or an ensemble (none unless ``teacher``
    is set)."""

    teacher: str | list[str] | None = Field(
        None,
        description="the teacher's .safetensors model file, or several: an ensemble whose "
        "mean logits the student learns",
    )
    temperature: float = Field(4.0, gt=0.0, le=100.0, description="softening of both outputs")
    alpha: float = Field(0.9, ge=0.0, le=1.0, description="weight of the teacher's term")
    flip: bool = Field(
        False,
        description="the teachers also see each batch mirrored; the student learns their "
        "logits averaged over both views",
    )
    views: int = Field(
        0,
        ge=0,
        le=64,
        description="0: the teachers run on every batch; N: they run once, on N augmented "
        "views of each training image, and each epoch trains on the next view",
    )


class CNNSettings(Section):
    """A CNN training config (``ferlab cnn train``)."""

    seed: int = Field(0, ge=0)
    data: CNNDataSettings = Field(default_factory=CNNDataSettings)
    model: CNNModelSettings = Field(default_factory=CNNModelSettings)
    augment: AugmentSettings = Field(default_factory=AugmentSettings)
    solver: CNNSolverSettings = Field(default_factory=CNNSolverSettings)
    device: DeviceSettings = Field(default_factory=DeviceSettings)
    distill: DistillSettings = Field(default_factory=DistillSettings)

    @model_validator(mode="after")
    def _refit_has_no_validation(self) -> CNNSettings:
        if self.data.refit and self.solver.patience is not None:
            raise ValueError(
                "solver.patience stops on the validation part, which data.refit trains on; "
                "unset one of them"
            )
        return self

    @model_validator(mode="after")
    def _views_are_not_mixed(self) -> CNNSettings:
        if self.distill.views and (self.augment.mixup or self.augment.cutmix):
            raise ValueError(
                "distill.views keeps the teachers' logits of unmixed views; "
                "set augment.mixup and augment.cutmix to 0"
            )
        return self


class BaselineDataSettings(DataSource, Preprocessed):
    """The data of a scikit-learn baseline (cross-validated, so no validation part)."""


class BaselineModel(Section):
    kind: Literal["decision_tree", "random_forest", "logistic_regression"] = "random_forest"
    params: dict[str, Any] = Field(default_factory=dict, description="estimator arguments")


class BaselineSettings(Section):
    """A scikit-learn baseline config (``ferlab compare``)."""

    seed: int = Field(0, ge=0)
    data: BaselineDataSettings = Field(default_factory=BaselineDataSettings)
    baseline: BaselineModel = Field(default_factory=BaselineModel)


class ExtendSettings(Section):
    """How ``ferlab extend`` retrains a grown model (its command-line options)."""

    freeze: Literal["all-but-last", "none"] = "all-but-last"
    optimizer: Literal["sgd", "sgd_momentum", "nesterov", "adam", "adamw"] = "adam"
    lr: Positive = 1e-3
    batch_size: Count = 128
    epochs: Count = 10
    patience: Count | None = 3
    seed: int = Field(0, ge=0)
    test_split: str | None = None
    balance: bool = False


def defaults(schema: type[Section]) -> dict:
    """The schema's defaults as a plain nested dict."""
    return schema().model_dump()


def _fields_at(schema: type[BaseModel], loc: tuple) -> list[str]:
    """Names of the fields of the table at ``loc`` (for "did you mean")."""
    model, parts = schema, list(loc)
    while parts:
        field = model.model_fields.get(parts.pop(0))
        annotation = getattr(field, "annotation", None)
        if typing.get_origin(annotation) is dict and parts:  # dict[str, Model]: skip the key
            annotation = typing.get_args(annotation)[1]
            parts.pop(0)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def _rule(message: str) -> str:
    message = re.sub(r"^(Value error, |Assertion failed, )", "", message)
    message = message.replace("Input should be", "must be")
    message = re.sub(r"a valid dictionary or instance of \w+", "a table", message)
    return message.rstrip(".")


def describe_error(error: dict, schema: type[BaseModel], *, options: bool = False) -> str:
    """One line for one pydantic error: the key (``--key`` for ``options``), rule and value."""
    loc = tuple(p for p in error["loc"] if isinstance(p, int) or "-" not in p)
    key = ".".join(str(p) for p in loc if isinstance(p, str)) or "(top level)"
    key += "".join(f"[{p}]" for p in loc if isinstance(p, int))
    if options:
        value = error.get("input")
        return f"--{key.replace('_', '-')} {_rule(error['msg'])}, got {value!r}"
    if error["type"] == "extra_forbidden":
        parent, name = loc[:-1], str(loc[-1])
        known = _fields_at(schema, parent)
        prefix = ".".join(str(p) for p in parent)
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        if close:
            hint = f"; did you mean {'.'.join(filter(None, [prefix, close[0]]))!r}?"
        else:
            hint = (
                f"; known keys{' in ' + prefix if prefix else ''}: {', '.join(known)}"
                if known
                else ""
            )
        return f"unknown config key {key!r}{hint}"
    if error["type"] == "missing":
        return f"config key {key!r} is required"
    value = error.get("input")
    if isinstance(value, dict | BaseModel):
        return f"config table {key!r}: {_rule(error['msg'])}"
    shown = f", got {value!r}"
    if error["type"].endswith("_type") or error["type"] == "literal_error":
        shown = f", got {value!r} ({type(value).__name__})"
    return f"config key {key!r} {_rule(error['msg'])}{shown}"


def parse_config(config: dict, schema: type[SectionT]) -> SectionT:
    """The config completed with defaults and checked against ``schema``, as the schema's frozen
    object; raises ConfigError naming the first key that breaks a rule."""
    try:
        return schema.model_validate(config)
    except ValidationError as exc:
        raise ConfigError(describe_error(exc.errors()[0], schema)) from None


def validate_config(config: dict, schema: type[Section]) -> dict:
    """The config completed with defaults and checked against ``schema``, as plain data (what a
    record stores); raises ConfigError."""
    return parse_config(config, schema).model_dump()


def validate_options(schema: type[Section], **values: Any) -> Section:
    """Command-line options checked against ``schema``; errors name the ``--option``."""
    try:
        return schema.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(describe_error(exc.errors()[0], schema, options=True)) from None


def validate_arguments(schema: type[Section], owner: str, **values: Any) -> Section:
    """Python arguments checked against ``schema`` (numbers of any integer or float type are
    accepted as in Python); errors read ``Solver: 'lr' must be greater than 0, got -1``."""
    try:
        return schema.model_validate(values, strict=False)
    except ValidationError as exc:
        error = exc.errors()[0]
        name = ".".join(str(p) for p in error["loc"] if isinstance(p, str) and "-" not in p)
        index = "".join(f"[{p}]" for p in error["loc"] if isinstance(p, int))
        raise ConfigError(
            f"{owner}: {name + index!r} {_rule(error['msg'])}, got {error.get('input')!r}"
        ) from None


def check_value(schema: type[Section], key: str, value: Any) -> None:
    """Check one dotted ``key``'s ``value`` against ``schema`` (e.g. a search range's ends)."""
    section, _, name = key.partition(".")
    validate_config({section: {name: value}} if name else {section: value}, schema)


def setting_keys(schema: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted key of ``schema`` (``data.path``, ``solver.lr``, ...), in declaration order."""
    keys = []
    for name, field in schema.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys += setting_keys(annotation, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys
