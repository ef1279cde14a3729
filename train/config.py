"""The one training config (a dataclass, no YAML) and the one builder the CLI and the tests use."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from mmgenre.errors import InputError

# The protocols (``TrainConfig.protocol``), one line each: the CLI help and the docs say this.
PROTOCOLS = {
    "train-holdout": "a stratified 20% of train tunes (early stopping, thresholds); all of dev trains",
    "complete-dev": "dev movies missing a poster or plot train; dev movies with both tune",
    "official": "fit on train, tune on dev (the MM-IMDb paper)",
}
MIXED_PRECISION = ("no", "fp16", "bf16")
FEATURE_PRECISIONS = ("fp32", "bf16")  # mmgenre.features.PRECISIONS (kept light: no torch import here)
DEVICES = ("auto", "cpu", "cuda")
TRACKERS = ("mlflow",)


@dataclass
class TrainConfig:
    data: str | None = None            # MM-IMDb folder; None -> $MMGENRE_DATA
    model: str = "gmu"                 # a name from mmgenre.models.list_models()
    out: str = "checkpoints"           # checkpoints/<model>/ is written here
    text_encoder: str = "mpnet"
    image_encoder: str = "efficientnet-lite0"
    detector: str = "haar"
    cache: str | None = None           # feature cache root; None -> $MMGENRE_CACHE or ~/.cache/mmgenre
    feature_precision: str = "fp32"    # frozen encoders' precision while extracting: "fp32" or "bf16"
    # optimisation
    epochs: int = 40
    batch_size: int = 64               # the global batch: split over the processes of a launch
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_frac: float = 0.1           # linear warm-up over this share of steps, then linear decay
    hidden: int | None = None          # None -> the head's default_hidden
    dropout: float = 0.3
    loss: str = "bce"                  # "bce" or "focal"
    focal_gamma: float = 2.0
    label_smoothing: float = 0.0
    modality_dropout: float = 0.15     # chance per movie of hiding one modality (multimodal heads)
    patience: int = 8                  # early stopping on dev macro-F1
    seed: int = 0
    max_tokens: int | None = None      # plot tokens given to sequence heads; None -> head default
    head_kwargs: dict = field(default_factory=dict)
    mixed_precision: str = "no"        # Accelerate's autocast: "no", "fp16" (GPU) or "bf16"
    grad_accum: int = 1                # optimiser step every N batches (Accelerate's accumulate)
    # protocol
    train_split: str = "train"
    dev_split: str = "dev"
    test_split: str = "test"
    # "train-holdout" (default): a stratified 20% of train is held out for early stopping and
    #   thresholds, and all of dev joins training. On mmimdb-lite, test shares train's sources and
    #   label crawl (<= 3 genres a movie) while dev does not (up to 8), so dev-tuned thresholds
    #   over-predict on test; the held-out train share has test's label distribution.
    # "complete-dev": dev movies lacking a poster or a plot join training and every model tunes on
    #   the dev movies that have both (the test condition).
    # "official": fit on train, tune on dev, as in the MM-IMDb paper.
    protocol: str = "train-holdout"
    train_on_dev_fraction: float = 0.0  # >0: move this share of dev into training (stratified, seeded)
    cv: int = 0                        # >0: k-fold cross-validation on cv_split instead of one fit
    cv_split: str = "dev"
    n_boot: int = 1000
    skip_bad: bool = False
    # end-to-end fine-tuning of the encoders (mmgenre.tuning.TuningSpec): full, LoRA or last blocks
    finetune: bool = False
    lora: int | None = None            # LoRA rank (implies finetune)
    lora_targets: list[str] | None = None  # module names LoRA wraps; None -> mmgenre.tuning's default
    tune_layers: int | None = None     # tune only the last N encoder blocks (implies finetune)
    device: str = "auto"               # auto (a GPU when present), cpu or cuda
    progress: bool = True
    track: str | None = None           # "mlflow": log the run into track_uri (default ./mlruns)
    track_uri: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def __post_init__(self) -> None:
        if self.lora is not None or self.tune_layers is not None:
            self.finetune = True
        for name, value, allowed in (("mixed_precision", self.mixed_precision, MIXED_PRECISION),
                                     ("device", self.device, DEVICES),
                                     ("feature_precision", self.feature_precision, FEATURE_PRECISIONS),
                                     ("track", self.track, (None, *TRACKERS))):
            if value not in allowed:
                raise InputError(f"{name} {value!r} is not one of {', '.join(map(str, allowed))}")
        if self.grad_accum < 1:
            raise InputError(f"grad_accum must be >= 1, got {self.grad_accum}")
        if self.lora is not None and self.tune_layers is not None:
            raise InputError("--lora and --tune-layers are two ways to tune the encoders: pick one")
        if self.lora_targets is not None and self.lora is None:  # else silently a run without LoRA
            raise InputError("--lora-targets needs --lora R (the adapters' rank)")

    def tuning(self):
        """The ``mmgenre.tuning.TuningSpec`` of this run (validated: InputError for a bad one)."""
        from mmgenre.tuning import TuningSpec  # only fine-tuning needs it
        if not self.finetune:
            return TuningSpec(mode="frozen", rank=None, alpha=None, targets=None, layers=None)
        if self.lora is not None:
            return TuningSpec(mode="lora", rank=self.lora, alpha=None, targets=self.lora_targets, layers=None)
        if self.tune_layers is not None:
            return TuningSpec(mode="last-blocks", rank=None, alpha=None, targets=None, layers=self.tune_layers)
        return TuningSpec(mode="full", rank=None, alpha=None, targets=None, layers=None)


def build_configs(options: dict, models: list[str]) -> list[TrainConfig]:
    """One TrainConfig per model from ``options`` (CLI values by field name; None = the default).

    Every config is validated here, so a bad value fails before any data is read."""
    known = {f.name for f in fields(TrainConfig)}
    base = {k: v for k, v in options.items() if k in known and v is not None}
    return [TrainConfig(**{**base, "model": name}) for name in models]
