"""`manifest.json` as typed msgspec structs: written by `offline/export.py`, decoded (and validated) by
`bot/models/family.py`. The JSON layout is the one documented in docs/architecture.md; decoding checks types
and shapes and names the offending field (`$.tiers[2].sha256`), `bot.models.family` then checks what needs the
feature schema or the files (feature names and order, hashes, the ONNX graphs).
"""

from __future__ import annotations

import itertools
import math
import re
from pathlib import Path
from typing import Annotated, Any, Final

import msgspec

from bot.core.errors import ModelError
from bot.core.features import FEATURE_INDEX

MANIFEST_NAME: Final = "manifest.json"
MANIFEST_SCHEMA_VERSION: Final = 1

NonEmptyStr = Annotated[str, msgspec.Meta(min_length=1)]
NonNegInt = Annotated[int, msgspec.Meta(ge=0)]


class TierMetrics(msgspec.Struct, kw_only=True):
    """Held-out metrics of the tier's chosen candidate (None: undefined, e.g. retention when the teacher's
    R2 <= 0)."""

    test_r2: float | None = None
    r2_retention: float | None = None
    fidelity_r2: float | None = None
    ic: float | None = None
    hit_rate: float | None = None
    distill_loss: float | None = None
    train_s: float | None = None
    # the volatility head (None without one): R^2 of log vol, Spearman IC, QLIKE raw and bias-corrected
    vol_r2: float | None = None
    vol_ic: float | None = None
    vol_qlike: float | None = None
    vol_qlike_bc: float | None = None
    # the served vol (after `TierEntry.vol_var_scale`): its test QLIKE
    vol_qlike_served: float | None = None


class TierEntry(msgspec.Struct, kw_only=True):
    """One tier: its file and hash, size, feature subset (in ONNX input column order) and how it was made.

    `stage` None (absent) means the tier's position in `tiers`; the size fields default to 0 (unknown).
    """

    name: NonEmptyStr
    stage: NonNegInt | None = None
    file: NonEmptyStr
    sha256: NonEmptyStr
    layers: NonNegInt = 0
    width: NonNegInt = 0
    hidden: list[int] = msgspec.field(default_factory=list)
    params: NonNegInt = 0
    compression: float | None = None
    feature_set: str = ""
    features: Annotated[list[NonEmptyStr], msgspec.Meta(min_length=1)]
    input_name: NonEmptyStr
    output_name: NonEmptyStr
    recipe: str = ""  # "teacher" | "progressive" | "one_shot" | "scratch"
    alpha: float | None = None
    temperature: float | None = None
    metrics: TierMetrics = msgspec.field(default_factory=TierMetrics)
    # the variance scale folded into the graph's `vol` output, fitted on the validation rows so the served
    # forecast is unbiased in variance (QLIKE's optimum); None: no vol head, or a family made before it
    vol_var_scale: float | None = None
    # the same scale fitted on each training symbol's own validation rows (a pooled family): the service
    # serves that symbol `vol * sqrt(own / vol_var_scale)`; other symbols get the pooled scale alone
    vol_var_scale_by_symbol: dict[str, float] = msgspec.field(default_factory=dict)
    # the served vol's variance bias on each regime's validation rows (realised / served variance): the
    # service serves a bar of that regime `vol * sqrt(scale)` (vol forecasts shrink to the mean: calm
    # regimes are over-forecast, crises under-forecast)
    vol_var_scale_by_regime: dict[str, float] = msgspec.field(default_factory=dict)


class Target(msgspec.Struct, kw_only=True):
    """What the ONNX output is: the raw return (`unit`) over the next `horizon_bars` bars."""

    horizon_bars: Annotated[int, msgspec.Meta(ge=1)] = 1
    unit: str = "return"


#: `Head.unit` of the volatility head: the per-bar RMS of one-bar log returns over the horizon (a fraction).
VOL_UNIT: Final = "rms_log_return_per_bar"


class Head(msgspec.Struct, kw_only=True):
    """One output of every tier's graph: what it forecasts (`unit`), over how many bars, under which name.

    Heads: "return" (unit "return": the raw return over `horizon_bars`, output `y`) and, when the family
    has one, "vol" (unit `VOL_UNIT`: the realised vol over the next `horizon_bars` bars, output `vol`).
    """

    horizon_bars: Annotated[int, msgspec.Meta(ge=1)]
    unit: NonEmptyStr
    output_name: NonEmptyStr


class FeatureBins(msgspec.Struct, kw_only=True):
    """One feature's training distribution as bins (`bot.core.drift`).

    `edges` are the interior cut points, strictly increasing: bin 0 is (-inf, edges[0]], bin i is
    (edges[i-1], edges[i]], the last is (edges[-1], inf). `train_frac[i]` is the share of training rows in
    bin i (len(edges) + 1 values, summing to 1). `train_psi_max`: the highest PSI a rolling window of
    `DriftReference.window_bars` training rows reached against these bins (None: not measured), the level
    the training period itself shows without any drift.
    """

    edges: list[float]
    train_frac: Annotated[list[float], msgspec.Meta(min_length=1)]
    train_psi_max: float | None = None


class DriftReference(msgspec.Struct, kw_only=True):
    """The training distribution live features are compared with (PSI drift, `bot.core.drift`).

    Quantile bins (`bins` requested: deciles for 10; fewer where quantiles tie) of each monitored feature
    over the `rows` training rows. Calendar features are not monitored (a day-long window always differs
    from the training weeks).
    """

    method: str = "quantile"
    bins: Annotated[int, msgspec.Meta(ge=2)]
    rows: Annotated[int, msgspec.Meta(ge=1)]
    window_bars: Annotated[int, msgspec.Meta(ge=2)] | None = None  # the window of every `train_psi_max`
    features: Annotated[dict[str, FeatureBins], msgspec.Meta(min_length=1)]


class ReturnSkill(msgspec.Struct, kw_only=True):
    """The return head's measured skill: Spearman IC of one tier's return forecast against the realised
    return over `Target.horizon_bars`, with its standard error.

    Attributes:
        ic: Spearman rank IC, in [-1, 1].
        se: its standard error (how it was estimated: `offline.evaluate.return_skill`).
        n_rows: rows scored.
        rows: which rows: "test" (the run's chronological test split) or "walk-forward" (pooled over the
            test blocks of walk-forward folds).
        tier: the tier scored (the teacher).
    """

    ic: float
    se: Annotated[float, msgspec.Meta(ge=0)]
    n_rows: NonNegInt
    rows: NonEmptyStr
    tier: NonEmptyStr

    @property
    def no_skill(self) -> bool:
        """True when the IC is within 2 standard errors of zero (no measured skill)."""
        return abs(self.ic) < 2.0 * self.se

    def text(self) -> str:
        """One line for reports and the status page: the IC, its SE, the rows and the verdict."""
        verdict = "no measured skill (|IC| < 2 SE)" if self.no_skill else "skill measured (|IC| >= 2 SE)"
        return (
            f"IC {self.ic:+.4f} ± {self.se:.4f} (1 SE) over {self.n_rows:,} {self.rows} rows "
            f"of tier {self.tier}: {verdict}"
        )


class RegimeScore(msgspec.Struct, kw_only=True):
    """One tier on one regime's validation rows: vol QLIKE of the served forecast (None without a vol head)
    and the standard error of its difference to the teacher's (paired rows, Newey-West), return IC
    (Spearman; None on fewer than 2 rows) and the tier's multiply-adds per forward pass."""

    n_rows: NonNegInt
    vol_qlike: float | None = None
    vol_qlike_diff_se: float | None = None
    ic: float | None = None
    multiply_adds: NonNegInt = 0


class RouteChoice(msgspec.Struct, kw_only=True):
    """The routes chosen by evidence at distillation (`offline.routes`), served by `[regime] routes = "auto"`:
    per regime the cheapest tier within the tolerances of the teacher on the validation rows, and the
    table behind the choice (regime -> tier -> score)."""

    routes: dict[str, NonEmptyStr]
    qlike_tolerance: float
    ic_tolerance: float
    rows: str = "validation"
    # the return IC was a criterion (False: the teacher's validation IC is within 2 SE of zero, no skill)
    ic_used: bool = True
    table: dict[str, dict[str, RegimeScore]] = msgspec.field(default_factory=dict)


class Manifest(msgspec.Struct, kw_only=True):
    """The whole manifest; `tiers` largest first, the first is the teacher (stage 0).

    `heads` names every output of the tiers' graphs; a manifest without it (older ones) has the return
    head only (`target` and each tier's `output_name`). `drift` (None in older manifests: drift is then
    unavailable) holds the training quantile bins of the monitored features. `return_skill` (None in older
    manifests: not measured) is the return head's IC and standard error on held-out rows.
    """

    schema_version: int
    created_ms: NonNegInt = 0
    feature_version: str
    target: Target = msgspec.field(default_factory=Target)
    heads: dict[str, Head] = msgspec.field(default_factory=dict)
    tiers: Annotated[list[TierEntry], msgspec.Meta(min_length=1)]
    regime_calibration: dict[str, Any] = msgspec.field(default_factory=dict)
    provenance: dict[str, Any] = msgspec.field(default_factory=dict)
    versions: dict[str, str] = msgspec.field(default_factory=dict)
    drift: DriftReference | None = None
    routes: RouteChoice | None = (
        None  # None: made before routes were chosen ([regime] routes = "auto" refuses)
    )
    return_skill: ReturnSkill | None = None

    @property
    def vol_head(self) -> Head | None:
        """The volatility head, or None when the family forecasts the return only."""
        return self.heads.get("vol")


class _Header(msgspec.Struct):
    schema_version: Any = None


_TIER_PATH = re.compile(r"\$\.tiers\[(\d+)\]")
_encoder = msgspec.json.Encoder()


def encode_manifest(manifest: Manifest) -> bytes:
    """Indented JSON with a trailing newline.

    Raises:
        ModelError: a NaN or infinite number anywhere (JSON has none; msgspec would write null).
    """
    _check_finite(msgspec.to_builtins(manifest), "$")
    return msgspec.json.format(_encoder.encode(manifest), indent=2) + b"\n"


def _check_finite(obj: Any, where: str) -> None:
    if isinstance(obj, float) and not math.isfinite(obj):
        raise ModelError(f"manifest {where}: {obj} is not a JSON number; expected a finite float or null")
    if isinstance(obj, dict):
        for key, value in obj.items():
            _check_finite(value, f"{where}.{key}")
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            _check_finite(value, f"{where}[{i}]")


def decode_manifest(data: bytes, *, path: str | Path = MANIFEST_NAME) -> Manifest:
    """Decode and validate a manifest.

    Raises:
        ModelError: not JSON, another schema version, or a field of the wrong type/shape; the message names
            the file, the field (`$.tiers[1].features`) and, inside a tier, the tier's name.
    """
    try:
        header = msgspec.json.decode(data, type=_Header)
    except msgspec.DecodeError as exc:
        raise ModelError(f"{path}: cannot read manifest: {exc}") from exc
    if header.schema_version != MANIFEST_SCHEMA_VERSION:
        raise ModelError(
            f"{path}: schema_version expected {MANIFEST_SCHEMA_VERSION}, got {header.schema_version!r}"
        )
    try:
        manifest = msgspec.json.decode(data, type=Manifest)
    except msgspec.ValidationError as exc:
        raise ModelError(f"{path}: {exc}{_tier_hint(data, str(exc))}") from exc
    if manifest.drift is not None:
        _check_drift(manifest.drift, path)
    return manifest


def _check_drift(ref: DriftReference, path: str | Path) -> None:
    """ModelError naming `$.drift.features.<name>` when a feature's bins are not a distribution."""
    for name, fb in ref.features.items():
        where = f"{path}: $.drift.features.{name}"
        if name not in FEATURE_INDEX:
            raise ModelError(f"{where}: unknown feature; expected one of bot.core.features.FEATURE_NAMES")
        if not all(math.isfinite(e) for e in fb.edges) or any(
            b <= a for a, b in itertools.pairwise(fb.edges)
        ):
            raise ModelError(
                f"{where}.edges: expected finite, strictly increasing cut points, got {fb.edges}"
            )
        if len(fb.train_frac) != len(fb.edges) + 1:
            raise ModelError(
                f"{where}.train_frac: expected {len(fb.edges) + 1} values (one per bin), "
                f"got {len(fb.train_frac)}"
            )
        if fb.train_psi_max is not None and not (math.isfinite(fb.train_psi_max) and fb.train_psi_max >= 0):
            raise ModelError(f"{where}.train_psi_max: expected a PSI >= 0 or null, got {fb.train_psi_max}")
        total = math.fsum(fb.train_frac)
        if any(not 0.0 <= f <= 1.0 for f in fb.train_frac) or abs(total - 1.0) > 1e-6:
            raise ModelError(
                f"{where}.train_frac: expected shares in [0, 1] summing to 1, got sum {total:.6g}"
            )


def _tier_hint(data: bytes, message: str) -> str:
    """` (tier 'edge')` when the failing field is inside a tier that has a name."""
    m = _TIER_PATH.search(message)
    if m is None:
        return ""
    try:
        raw = msgspec.json.decode(data)
        name = raw["tiers"][int(m.group(1))]["name"]
    except (msgspec.DecodeError, KeyError, IndexError, TypeError):
        return ""
    return f" (tier {name!r})" if isinstance(name, str) and name else ""
