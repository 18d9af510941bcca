"""``TrialConfig``: the typed, complete description of one training run.

Search spaces fix some of these fields and sample others; whatever a trial ends up with is
validated here, so a typo in a YAML key or a freeze level that does not exist for the chosen
architecture fails before any training starts, naming the key.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hpa_tune.errors import HpaTuneError
from hpa_tune.train.size_schedule import size_at_epoch


class TrialConfig(BaseModel):
    """Every knob of one training run (model, data, loss, optimisation)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # model
    arch: str = Field("baseline_cnn", description="registered model name (`hpa-tune models`)")
    pretrained: str = Field("none", description="none | imagenet | /path/to/weights.pth")
    freeze: str = Field("none", description="frozen-layer depth, one of the model's freeze levels")
    routing_iters: int = Field(3, ge=1, le=10, description="CapsNet dynamic-routing iterations")
    # data
    channels: Literal["rgb", "rgby"] = Field("rgb", description="rgb (the study) or rgby (+ ER)")
    image_size: int = Field(64, ge=16, description="side in px; must be a prepared size")
    size_schedule: tuple[tuple[int, int], ...] | None = Field(
        None,
        description="((last_epoch, size), ...) from the space's fidelity; set by the run, not "
        "by a space (hpa_tune.train.size_schedule)",
    )
    augment: bool = Field(False, description="random flips and 90° rotations")
    batch_size: int = Field(32, ge=1)
    # loss
    loss: str = Field("bce", description="bce | bce_pos | focal | margin")
    loss_weighting: Literal["none", "full", "ln"] = Field("ln", description="per-class weights")
    focal_gamma: float = Field(2.0, ge=0)
    margin_m_plus: float = Field(0.9, gt=0, le=1)
    margin_m_minus: float = Field(0.1, ge=0, lt=1)
    margin_lambda: float = Field(0.5, ge=0)
    # optimisation
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0, description="L2 penalty")
    lr_schedule: Literal["constant", "step", "cosine", "onecycle"] = "cosine"
    lr_step_epochs: int = Field(3, ge=1, description="step schedule: epochs between decays")
    lr_step_gamma: float = Field(0.1, gt=0, le=1, description="step schedule: decay factor")
    warmup_epochs: int = Field(0, ge=0, description="linear warm-up; onecycle: its ramp-up length")
    max_epochs: int = Field(10, ge=1)
    seed: int = 0
    # execution: how fast, not what is computed (equal results within bf16 tolerance)
    fast_path: Literal["auto", "on", "off"] = Field(
        "auto", description="GPU fast path (hpa_tune.train.fast_path); auto: on with CUDA"
    )
    compile: bool = Field(False, description="torch.compile the model (fast path only)")
    device_data_share: float = Field(
        0.25, ge=0, le=1, description="share of the trial's GPU memory the uint8 arrays may use"
    )

    @model_validator(mode="after")
    def _check_names(self) -> TrialConfig:
        from hpa_tune.models import get_model_info
        from hpa_tune.train.losses import list_losses

        info = get_model_info(self.arch)  # raises ValueError listing valid names
        if self.freeze not in info.freeze_levels:
            raise ValueError(
                f"freeze {self.freeze!r} is not a level of {self.arch}; valid: {list(info.freeze_levels)}"
            )
        if self.freeze != "none" and self.pretrained == "none":
            raise ValueError(
                f"freeze {self.freeze!r} with pretrained 'none' would train on frozen random weights; "
                "set pretrained (imagenet or a weights file) or freeze: none"
            )
        if self.loss not in list_losses():
            raise ValueError(f"unknown loss {self.loss!r}; valid losses: {list_losses()}")
        if self.size_schedule is not None:
            _check_size_schedule(self.size_schedule, self.image_size, info.min_size, info.family)
        return self

    def epoch_size(self, epoch: int) -> int:
        """The image size epoch ``epoch`` (1-based) trains and is scored at."""
        return size_at_epoch(self.size_schedule, epoch, self.image_size)

    def training_sizes(self) -> list[int]:
        """Every image size the training uses (the full size last)."""
        lower = [size for _, size in self.size_schedule or () if size != self.image_size]
        return [*lower, self.image_size]

    def loss_params(self) -> dict[str, Any]:
        """Options of the chosen loss."""
        if self.loss == "focal":
            return {"gamma": self.focal_gamma}
        if self.loss == "margin":
            return {
                "m_plus": self.margin_m_plus,
                "m_minus": self.margin_m_minus,
                "lambda_": self.margin_lambda,
            }
        return {}

    def model_kwargs(self) -> dict[str, Any]:
        """Architecture-specific options passed to ``create_model``."""
        return {"routing_iters": self.routing_iters} if self.arch == "capsnet" else {}


def _check_size_schedule(
    schedule: tuple[tuple[int, int], ...], image_size: int, min_size: int, family: str
) -> None:
    epochs = [epoch for epoch, _ in schedule]
    sizes = [size for _, size in schedule]
    if family == "capsnet":
        raise ValueError("size_schedule: a CapsNet is built for one input size; train it at one")
    if epochs != sorted(set(epochs)) or sizes != sorted(set(sizes)) or sizes[-1] != image_size:
        raise ValueError(
            f"size_schedule {schedule}: epochs and sizes must increase, ending at image_size "
            f"{image_size}"
        )
    if sizes[0] < min_size:
        raise ValueError(f"size_schedule: size {sizes[0]} is below the model's {min_size} px")


# Set by the run from the space's ``fidelity``, never fixed or sampled by a space.
DERIVED_KEYS = ("size_schedule",)


def config_keys() -> list[str]:
    """Every key a space may fix or sample (the TrialConfig fields the run does not derive)."""
    return [key for key in TrialConfig.model_fields if key not in DERIVED_KEYS]


def describe_validation_error(err: ValidationError, where: str) -> str:
    """One line, one ``where: key: message`` per problem, ``; ``-separated (unknown keys list the valid ones)."""
    lines = []
    for problem in err.errors():
        key = ".".join(str(p) for p in problem["loc"]) or "(config)"
        if problem["type"] == "extra_forbidden":
            lines.append(f"{where}: unknown key {key!r}; valid keys: {', '.join(config_keys())}")
        else:
            got = f" (got {problem['input']!r})" if problem["type"] != "value_error" else ""
            msg = problem["msg"].removeprefix("Value error, ")
            lines.append(f"{where}: {key}: {msg}{got}")
    return "; ".join(lines)


def make_trial_config(values: dict[str, Any], where: str = "config") -> TrialConfig:
    """Validate ``values`` into a TrialConfig.

    Raises:
        HpaTuneError: naming each bad key and what was expected.
    """
    try:
        return TrialConfig(**values)
    except ValidationError as err:
        raise HpaTuneError(describe_validation_error(err, where)) from None
