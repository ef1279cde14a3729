"""How an encoder is fine-tuned, and the tensors a fine-tuned checkpoint keeps (``encoders.safetensors``).

    spec = TuningSpec("lora", rank=8)                      # or "full", "last-blocks" (layers=2), "frozen"
    encoders = prepare_for_tuning(encoders, spec)          # trainable params: the optimiser's
    ... train ...
    tensors = tuned_tensors(encoders, spec)                # lora: adapters only; full/last-blocks: fp16
    restore_tuned(fresh_base_encoders, spec, tensors)      # at load: plain modules again

Modes: ``frozen`` (nothing tuned), ``full`` (every encoder weight), ``last-blocks`` (the last
``layers`` blocks of the encoder's main stack and everything after it), ``lora`` (PEFT LoRA
adapters of rank ``rank`` on ``targets``; merged into the base weights at load, so inference and
explanations run on an ordinary module). The text and image encoders are tuned; detectors never.

LoRA targets are module names as PEFT matches them (a name or a dotted suffix of one). A bare
name targets the text encoder, ``image:NAME`` the image encoder; a kind none of ``targets`` names
gets its architecture's default (:data:`DEFAULT_TARGETS`): the attention projections of the text
encoder, the pointwise convolutions (or ViT ``qkv``) of the image encoder.

Tensor keys are ``<kind>.<key in the encoder's state dict>`` (for LoRA, PEFT's adapter keys).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
from torch import nn

from mmgenre.encoders.base import freeze
from mmgenre.encoders.kinds import ImageEncoder, TextEncoder
from mmgenre.errors import InputError

MODES = ("frozen", "full", "lora", "last-blocks")
TUNABLE = (TextEncoder, ImageEncoder)  # detectors (Haar/YOLO statistics) stay fixed
# Per kind, the first set whose names all exist in the encoder is its default LoRA target:
# BERT/MiniLM/RoBERTa attention, MPNet attention, ViT attention; EfficientNet's and ResNet's convs
# whose LoRA can be merged (groups == 1).
DEFAULT_TARGETS = {
    "text": (("query", "key", "value"), ("q", "k", "v"), ("q_proj", "k_proj", "v_proj"), ("qkv",)),
    "image": (("qkv",), ("_expand_conv", "_project_conv", "_conv_head"), ("conv1", "conv3")),
}
_ADAPTER = "default"
_LORA_LAYERS = (nn.Linear, nn.Conv2d)


@dataclass(frozen=True)
class TuningSpec:
    """How the encoders are tuned; ``to_dict()`` is stored as ``config["tuning"]``.

    ``alpha`` defaults to ``2 * rank`` (LoRA scale alpha / rank = 2); ``layers`` is the number of
    last blocks tuned in ``last-blocks`` mode.
    """

    mode: str = "frozen"
    rank: int | None = None
    alpha: float | None = None
    targets: list[str] | None = None
    layers: int | None = None

    def __post_init__(self):
        if self.mode not in MODES:
            raise InputError(f"tuning mode must be one of {MODES}, got {self.mode!r}")
        lora = self.mode == "lora"
        if lora:
            if isinstance(self.rank, bool) or not isinstance(self.rank, int):
                raise InputError(f"LoRA needs an integer rank (--lora R), got {self.rank!r}")
            if self.rank <= 0:
                raise InputError(f"LoRA rank must be a positive integer, got {self.rank}")
            alpha = 2.0 * self.rank if self.alpha is None else self.alpha
            if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
                raise InputError(f"LoRA alpha must be a positive number, got {self.alpha!r}")
            object.__setattr__(self, "alpha", float(alpha))
        else:
            for name in ("rank", "alpha", "targets"):
                if getattr(self, name) is not None:
                    raise InputError(f"tuning {name!r} applies to mode 'lora' only (mode is {self.mode!r})")
        if self.targets is not None:
            targets = self.targets
            if isinstance(targets, str) or not isinstance(targets, (list, tuple)) or not targets or not all(
                    isinstance(t, str) and t.strip(" .:") for t in targets):
                raise InputError(f"LoRA targets must be a non-empty list of module names, got {targets!r}")
            object.__setattr__(self, "targets", [t.strip() for t in targets])
        if self.mode == "last-blocks":
            if isinstance(self.layers, bool) or not isinstance(self.layers, int) or self.layers <= 0:
                raise InputError(f"last-blocks tuning needs a positive number of layers, got {self.layers!r}")
        elif self.layers is not None:
            raise InputError(f"tuning 'layers' applies to mode 'last-blocks' only (mode is {self.mode!r})")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data) -> "TuningSpec":
        if not isinstance(data, dict):
            raise InputError(f"'tuning' must be an object, got {type(data).__name__}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise InputError(f"'tuning' has unknown keys {unknown}; known: {known}")
        return cls(**data)


FROZEN = TuningSpec()


# ---------------------------------------------------------------------------------------------
# the three verbs


def prepare_for_tuning(encoders: dict, spec: TuningSpec) -> dict:
    """``encoders`` with the text/image ones made trainable as ``spec`` says (in place).

    Everything is checked before any encoder changes: a LoRA target an encoder lacks, more
    ``layers`` than it has, an adapter that cannot be merged -> ``InputError``.
    """
    tunable = _tunable(encoders)
    if spec.mode != "frozen":
        _remember_base_digests(tunable)
    if spec.mode == "lora":
        targets = _lora_targets(tunable, spec)
        for kind, enc in tunable.items():
            _plain_convs(kind, enc, targets[kind])  # may refuse a target: before any adapter is added
        for kind, enc in tunable.items():
            _inject_lora(kind, enc, spec, targets[kind], probe=True)
            _check_peft_params(kind, enc)
    elif spec.mode != "frozen":
        keys = {kind: _tuned_keys(kind, enc, spec) for kind, enc in tunable.items()}
        for kind, enc in tunable.items():
            for name, param in enc.named_parameters():
                param.requires_grad_(name in keys[kind])
    return encoders


def tuned_tensors(encoders: dict, spec: TuningSpec) -> dict[str, torch.Tensor]:
    """What a checkpoint keeps of the tuned encoders: LoRA adapters (fp32, a few MB), or the tuned
    weights as fp16 (full / last-blocks); {} when frozen. Keys ``<kind>.<state-dict key>``."""
    out: dict[str, torch.Tensor] = {}
    if spec.mode == "frozen":
        return out
    from peft import get_peft_model_state_dict

    for kind, enc in _tunable(encoders).items():
        if spec.mode == "lora":
            if not hasattr(enc, "peft_config"):
                raise InputError(f"the {kind} encoder has no LoRA adapters: call prepare_for_tuning first")
            state = {k: v.float() for k, v in get_peft_model_state_dict(enc, adapter_name=_ADAPTER).items()}
        else:
            keys = _tuned_keys(kind, enc, spec)
            state = {k: v for k, v in enc.state_dict().items() if k in keys}
            state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
        out.update({f"{kind}.{k}": v.detach().cpu().contiguous().clone() for k, v in state.items()})
    return out


def restore_tuned(encoders: dict, spec: TuningSpec, tensors: dict[str, torch.Tensor]) -> dict:
    """Put ``tensors`` (from :func:`tuned_tensors`) into freshly built base ``encoders`` (in place);
    LoRA adapters are merged into the base weights. The encoders come back frozen, as plain modules.

    ``InputError`` when ``tensors`` do not fit the base encoders (other keys or shapes): a checkpoint
    tuned on another encoder, or whose adapters do not match its base encoder.
    """
    tensors = {k: torch.as_tensor(v) for k, v in tensors.items()}
    tunable = _tunable(encoders)
    if spec.mode != "frozen":
        _remember_base_digests(tunable)
    by_kind: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        kind, _, rest = key.partition(".")
        by_kind.setdefault(kind, {})[rest] = value
    if spec.mode == "frozen":
        if tensors:
            raise InputError("a frozen tuning spec with encoder tensors: the checkpoint's config and its "
                             "encoders.safetensors disagree")
        return encoders
    stray = sorted(set(by_kind) - set(tunable))
    if stray or not by_kind:
        raise InputError(f"the tuned encoder tensors name kinds {sorted(by_kind)} but the model's tunable "
                         f"encoders are {sorted(tunable)}")
    if spec.mode == "lora":
        targets = _lora_targets({k: tunable[k] for k in by_kind}, spec, restoring=True)
        for kind, given in by_kind.items():
            _restore_lora(kind, tunable[kind], spec, targets[kind], given)
    else:
        for kind, given in by_kind.items():
            enc = tunable[kind]
            state = enc.state_dict()
            _check_fits(kind, enc, {k: tuple(state[k].shape) for k in _tuned_keys(kind, enc, spec)}, given)
            enc.load_state_dict({k: v.to(state[k].dtype) for k, v in given.items()}, strict=False)
    for kind in by_kind:
        freeze(tunable[kind])
    return encoders


# ---------------------------------------------------------------------------------------------
# helpers


def _remember_base_digests(tunable: dict) -> None:
    # A tuned encoder's describe() reports the weights it was tuned from (what loading rebuilds and
    # checks), not the tuned ones: see FrozenModule.weights_digest.
    for enc in tunable.values():
        if getattr(enc, "base_weights_digest", None) is None:
            enc.base_weights_digest = enc.weights_digest()


def _tunable(encoders: dict) -> dict:
    return {kind: enc for kind, enc in encoders.items() if isinstance(enc, TUNABLE)}


def _enc_name(enc) -> str:
    return str(getattr(enc, "name", type(enc).__name__))


def _matches(name: str, target: str) -> bool:
    # PEFT's rule for a string in target_modules: the whole name or a dotted suffix of it.
    return name == target or name.endswith("." + target)


def _layer_names(enc: nn.Module) -> list[str]:
    return [n for n, m in enc.named_modules() if isinstance(m, _LORA_LAYERS) and n]


def _lora_targets(tunable: dict, spec: TuningSpec, restoring: bool = False) -> dict[str, list[str]]:
    """Per kind, the module names LoRA goes on; InputError for a name the encoder lacks."""
    named: dict[str, list[str]] = {}
    for target in spec.targets or []:
        kind, sep, name = target.rpartition(":")
        named.setdefault(kind if sep else "text", []).append(name)
    unknown = sorted(set(named) - set(tunable))
    if unknown:
        raise InputError(f"LoRA targets {spec.targets} name the {unknown[0]!r} encoder, which this model does "
                         f"not tune (tuned: {sorted(tunable)}); a bare name targets the text encoder, "
                         f"'image:NAME' the image encoder")
    out = {}
    for kind, enc in tunable.items():
        layers = _layer_names(enc)
        if kind in named:
            wanted = named[kind]
        else:
            wanted = next((list(s) for s in DEFAULT_TARGETS.get(kind, ())
                           if all(any(_matches(n, t) for n in layers) for t in s)), None)
            if wanted is None:
                raise InputError(f"no default LoRA targets for the {kind} encoder {_enc_name(enc)!r}; name them "
                                 f"with --lora-targets ({kind}:NAME), e.g. {_examples(layers)}")
        missing = [t for t in wanted if not any(_matches(n, t) for n in layers)]
        if missing:
            hint = " (a checkpoint tuned on another encoder?)" if restoring else ""
            raise InputError(f"LoRA target module {missing[0]!r} is not a Linear/Conv2d layer of the {kind} encoder "
                             f"{_enc_name(enc)!r}{hint}; it has e.g. {_examples(layers)}")
        grouped = [n for n, m in enc.named_modules() if isinstance(m, nn.Conv2d) and m.groups > 1
                   and any(_matches(n, t) for t in wanted)]
        if grouped:
            raise InputError(f"LoRA target {grouped[0]!r} of the {kind} encoder is a grouped (depthwise) "
                             f"convolution, whose adapters PEFT cannot merge; target pointwise layers instead")
        out[kind] = wanted
    return out


def _examples(layers: list[str], n: int = 8) -> str:
    last = list(dict.fromkeys(name.rsplit(".", 1)[-1] for name in layers))
    return ", ".join(last[:n]) or "(none)"


def _plain_convs(kind: str, enc: nn.Module, targets: list[str]) -> None:
    """Targeted ``nn.Conv2d`` subclasses (EfficientNet's TF-"same"-padding convs) become plain
    ``nn.Conv2d``: PEFT builds its adapter layers as ``type(base_layer)(...)``, which such a subclass's
    constructor refuses. Only where the plain conv gives the same output (checked on a random input);
    the state-dict keys stay the same."""
    for name, module in list(enc.named_modules()):
        if not (isinstance(module, nn.Conv2d) and type(module) is not nn.Conv2d
                and any(_matches(name, t) for t in targets)):
            continue
        plain = nn.Conv2d(module.in_channels, module.out_channels, module.kernel_size, module.stride,
                          module.padding, module.dilation, module.groups, module.bias is not None,
                          module.padding_mode).to(module.weight.device, module.weight.dtype)
        plain.load_state_dict(module.state_dict(), strict=False)
        plain.requires_grad_(False)
        with torch.no_grad():
            x = torch.randn(1, module.in_channels, 9, 9, generator=torch.Generator().manual_seed(0)).to(
                module.weight.device, module.weight.dtype)
            same = module(x).shape == plain(x).shape and torch.allclose(module(x), plain(x), atol=1e-5)
        if not same:
            raise InputError(f"LoRA target {name!r} of the {kind} encoder {_enc_name(enc)!r} is a "
                             f"{type(module).__name__} with its own padding, which PEFT cannot adapt; target "
                             f"pointwise (1x1) convolutions")
        parent, _, child = name.rpartition(".")
        setattr(enc.get_submodule(parent) if parent else enc, child, plain)


def _inject_lora(kind: str, enc: nn.Module, spec: TuningSpec, targets: list[str], probe: bool):
    from peft import LoraConfig, LoraModel

    _plain_convs(kind, enc, targets)
    # lora_dropout stays 0: encoders are FrozenModules (always eval), so a dropout would never act.
    config = LoraConfig(r=spec.rank, lora_alpha=spec.alpha, target_modules=targets, lora_dropout=0.0,
                        bias="none")
    try:
        tuner = LoraModel(enc, config, _ADAPTER)
    except (ValueError, TypeError) as exc:
        raise InputError(f"LoRA on the {kind} encoder {_enc_name(enc)!r} with targets {targets}: {exc}") from None
    if probe and isinstance(enc, ImageEncoder):
        # A conv whose padding is applied outside nn.Conv2d (TF "same" padding) gives an adapter
        # output of another size: find out now, not mid-epoch.
        try:
            with torch.no_grad():
                enc(torch.zeros(1, 3, *enc.input_size, device=enc.device))
        except RuntimeError as exc:
            _unwrap(tuner.unload())
            freeze(enc)
            raise InputError(f"LoRA targets {targets} do not fit the image encoder {_enc_name(enc)!r} "
                             f"({str(exc).splitlines()[0][:200]}); target pointwise (1x1) convolutions") from None
    return tuner


def _unwrap(enc: nn.Module) -> nn.Module:
    if hasattr(enc, "peft_config"):
        del enc.peft_config
    return enc


def _check_peft_params(kind: str, enc: nn.Module) -> None:
    if not any(p.requires_grad for p in enc.parameters()):
        raise InputError(f"LoRA put no trainable adapter on the {kind} encoder {_enc_name(enc)!r}")


def _restore_lora(kind: str, enc: nn.Module, spec: TuningSpec, targets: list[str],
                  given: dict[str, torch.Tensor]) -> None:
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    tuner = _inject_lora(kind, enc, spec, targets, probe=False)
    expected = {k: tuple(v.shape) for k, v in get_peft_model_state_dict(enc, adapter_name=_ADAPTER).items()}
    try:
        _check_fits(kind, enc, expected, given, what="adapters")
    except InputError:
        _unwrap(tuner.unload())
        raise
    set_peft_model_state_dict(enc, given, adapter_name=_ADAPTER)
    _unwrap(tuner.merge_and_unload())


def _check_fits(kind: str, enc: nn.Module, expected: dict[str, tuple], given: dict[str, torch.Tensor],
                what: str = "weights") -> None:
    found = {k: tuple(v.shape) for k, v in given.items()}
    if found == expected:
        return
    missing, unexpected = sorted(set(expected) - set(found))[:3], sorted(set(found) - set(expected))[:3]
    shapes = [f"{k}: {found[k]} vs {expected[k]}" for k in sorted(set(found) & set(expected))
              if found[k] != expected[k]][:3]
    # No key in common: other module names, so another architecture; else a damaged or edited file.
    problem = ("a checkpoint tuned on another encoder" if not set(found) & set(expected)
               else f"a fine-tuned checkpoint whose {what} do not match its base encoder")
    raise InputError(f"{problem}: the tuned {kind} {what} do not fit the {kind} encoder {_enc_name(enc)!r} "
                     f"(missing {missing}, unexpected {unexpected}, shape file vs encoder {shapes})")


def _blocks(enc: nn.Module) -> nn.Module:
    """The encoder's main stack of blocks: its longest ModuleList (BERT layers, EfficientNet blocks),
    else its longest Sequential (timm ViT blocks, ResNet stages)."""
    for kind in (nn.ModuleList, nn.Sequential):
        stacks = [m for m in enc.modules() if type(m) is kind and len(m) > 1]
        if stacks:
            return max(stacks, key=len)
    raise InputError(f"encoder {_enc_name(enc)!r} has no stack of blocks for last-blocks tuning; use full or lora")


def _tuned_keys(kind: str, enc: nn.Module, spec: TuningSpec) -> set[str]:
    """State-dict keys tuned by a full / last-blocks spec: all, or from block[-layers] on (in
    registration order, so the final norm / conv head after the stack are tuned too); in both, only
    those of modules the encoder's forward runs (not e.g. EfficientNet's unused ImageNet classifier)."""
    keys = list(enc.state_dict())
    start = 0
    if spec.mode == "last-blocks":
        blocks = _blocks(enc)
        if spec.layers > len(blocks):
            raise InputError(f"last-blocks tuning of {spec.layers} layers, but the {kind} encoder "
                             f"{_enc_name(enc)!r} has {len(blocks)} blocks")
        block = blocks[len(blocks) - spec.layers]
        prefix = next(n for n, m in enc.named_modules() if m is block)
        start = next(i for i, k in enumerate(keys) if k.startswith(prefix + "."))
    ran = _modules_run(enc)
    return {k for k in keys[start:] if k.rpartition(".")[0] in ran}


def _modules_run(enc: nn.Module) -> set[str]:
    """Names of the modules one forward pass of ``enc`` runs, on a one-word plot or a blank poster."""
    names = {id(m): n for n, m in enc.named_modules()}
    ran: set[str] = set()
    hooks = [m.register_forward_pre_hook(lambda mod, _: ran.add(names[id(mod)])) for m in enc.modules()]
    try:
        with torch.no_grad():
            if isinstance(enc, TextEncoder):
                enc(**enc.tokenize(["probe"]))
            else:
                enc(torch.zeros(1, 3, *enc.input_size, device=enc.device))
    finally:
        for hook in hooks:
            hook.remove()
    return ran
