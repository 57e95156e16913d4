"""The tier family at run time: `manifest.json` checked against the feature schema, one ONNX session per tier.

`TierFamily.load(models_dir)` refuses (ModelError naming the tier and the difference) a manifest whose
schema or feature version differs from `bot.core.features`, a tier whose file is missing or whose bytes do
not hash to the manifest's sha256, an unknown feature name, and an ONNX graph whose input/output names or
input width differ from the manifest. The verified bytes are the bytes the session is built from.

Each tier (`bot.models.tier.Tier`: its session options, pre-bound buffers and the compiled forward pass that
may serve it instead of onnxruntime) is built by `bot.models.tier`; this module loads, verifies and routes the
family, checks that it fits the config (`check_fit`) and holds its vol factors.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from bot.core.errors import ModelError
from bot.core.features import FEATURE_SETS, FEATURE_VERSION, N_FEATURES
from bot.core.regime import resolve_routes
from bot.models import store as modelstore
from bot.models.forward import choose_forward
from bot.models.manifest import MANIFEST_NAME, MANIFEST_SCHEMA_VERSION, Manifest, decode_manifest
from bot.models.tier import Tier, feature_columns, tier_error, tier_session, tier_spec

if TYPE_CHECKING:
    from bot.config import Config

__all__ = ["MANIFEST_NAME", "MANIFEST_SCHEMA_VERSION", "TierFamily"]


class TierFamily:
    """The loaded, verified tier family. Use `TierFamily.load(models_dir)`."""

    def __init__(
        self, manifest: Manifest, tiers: Mapping[str, Tier], models_dir: Path, *, model_sha: str = ""
    ) -> None:
        self.manifest = manifest
        self.tiers: dict[str, Tier] = dict(tiers)
        self.models_dir = models_dir
        #: hex sha256 of the manifest.json bytes: which family decided a bar (every DecisionRecord has it)
        self.model_sha = model_sha
        self._vol_factors = {
            (t.name, symbol): math.sqrt(own / t.vol_var_scale)
            for t in manifest.tiers
            if t.vol_var_scale
            for symbol, own in t.vol_var_scale_by_symbol.items()
        }
        self._regime_factors = {
            (t.name, regime): math.sqrt(scale)
            for t in manifest.tiers
            for regime, scale in t.vol_var_scale_by_regime.items()
        }

    @classmethod
    def load(
        cls, models_dir: str | Path, *, only: Iterable[str] | None = None, compiled_forward: bool = True
    ) -> TierFamily:
        """Read and verify the family's manifest.json and build one session per tier.

        Args:
            models_dir: a versioned models directory (its `current` version is loaded, see bot.models.store)
                or a plain directory with manifest.json and the ONNX files it names.
            only: load just these tiers (each must be in the manifest); None loads all.
            compiled_forward: serve each small tier by the compiled forward pass where it proves equal to
                onnxruntime (`bot.models.forward.choose_forward`; `Tier.runtime`); False keeps onnxruntime
                for all.

        Raises:
            ModelError: the manifest is missing or malformed, or a tier fails a check; the message names the
                tier and the difference.
        """
        root = modelstore.resolve(models_dir)
        path = root / MANIFEST_NAME
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise ModelError(
                f"{path}: no manifest; build a tier family with `python -m offline distill`"
            ) from None
        except OSError as exc:
            raise ModelError(f"{path}: cannot read manifest: {exc.strerror}") from exc
        manifest = decode_manifest(raw, path=path)
        fv = manifest.feature_version
        vol = manifest.vol_head
        vol_output = None if vol is None else vol.output_name
        specs = [tier_spec(e, i, vol_output=vol_output) for i, e in enumerate(manifest.tiers)]
        if fv != FEATURE_VERSION:
            names = [s.name for s in specs]
            raise ModelError(
                f"{path}: tiers {names} were trained on feature_version {fv!r}, bot.core.features is "
                f"{FEATURE_VERSION!r}; retrain (python -m offline distill) or run the matching bot"
            )
        seen: set[str] = set()
        for s in specs:
            if s.name in seen:
                raise tier_error(s.name, "appears twice in the manifest")
            seen.add(s.name)
        wanted = None if only is None else list(only)
        if wanted is not None:
            missing = [n for n in wanted if n not in seen]
            if missing:
                raise ModelError(
                    f"{path}: tier(s) {missing} not in the manifest, which has {[s.name for s in specs]}"
                )
            specs = [s for s in specs if s.name in wanted]
        tiers: dict[str, Tier] = {}
        for s in specs:
            file = root / s.file
            try:
                data = file.read_bytes()
            except FileNotFoundError:
                raise tier_error(s.name, f"model file {file} is missing") from None
            except OSError as exc:
                raise tier_error(s.name, f"cannot read {file}: {exc.strerror}") from exc
            digest = hashlib.sha256(data).hexdigest()
            if digest != s.sha256:
                raise tier_error(s.name, f"sha256 mismatch for {s.file}: manifest {s.sha256}, file {digest}")
            session = tier_session(s, data)
            choice = choose_forward(
                data,
                session,
                feature_columns(s.features),
                input_name=s.input_name,
                output_name=s.output_name,
                vol_output_name=s.vol_output_name,
                enabled=compiled_forward,
            )
            tiers[s.name] = Tier(s, session, forward=choice)
        return cls(manifest, tiers, root, model_sha=hashlib.sha256(raw).hexdigest())

    @property
    def names(self) -> list[str]:
        """Tier names in manifest order (largest first)."""
        return list(self.tiers)

    @property
    def regime_calibration(self) -> dict[str, Any]:
        """The manifest's `regime_calibration` ({} when absent)."""
        return dict(self.manifest.regime_calibration)

    def __contains__(self, name: object) -> bool:
        return name in self.tiers

    def __iter__(self) -> Iterator[Tier]:
        return iter(self.tiers.values())

    def __getitem__(self, name: str) -> Tier:
        try:
            return self.tiers[name]
        except KeyError:
            raise ModelError(f"tier {name!r} is not loaded; loaded tiers: {self.names}") from None

    def check_fit(self, cfg: Config) -> None:
        """Raise ModelError unless the family fits `cfg`: the interval and (unless `[models] symbols = "any"`)
        the symbols it was trained on (`provenance`), each configured tier's feature set, the horizon and the
        routes. The message names the manifest, both values and the fix."""
        path = self.models_dir / MANIFEST_NAME
        prov = self.manifest.provenance
        trained = prov.get("interval")
        if trained != cfg.market.interval:
            raise ModelError(
                f"{path}: trained on interval {trained!r} bars ($.provenance.interval), config [market] "
                f"interval is {cfg.market.interval!r}; set interval = {trained!r} or retrain on "
                f"{cfg.market.interval!r} bars"
            )
        symbol = prov.get("symbol")
        pooled = prov.get("symbols")  # a family trained on several symbols at once (offline distill pooled)
        trained_on = set(pooled) if isinstance(pooled, list) else {symbol}
        # a selection ([market] symbols = {all = true, ...}) is refused by the config unless symbols = "any"
        listed = [] if cfg.market.selection is not None else cfg.market.symbol_list
        other = [s for s in listed if s not in trained_on]
        if cfg.models.symbols == "match" and other:
            what = (
                f"symbols {pooled!r} ($.provenance.symbols)"
                if isinstance(pooled, list)
                else (f"symbol {symbol!r} ($.provenance.symbol)")
            )
            raise ModelError(
                f"{path}: trained on {what}, config [market] symbols has "
                f"{other}; retrain with `offline distill --symbol`, or set [models] symbols = 'any'"
            )
        for name, tier_cfg in cfg.tiers.items():
            if name not in self.tiers:
                continue
            entry = self.tiers[name].spec.entry
            want = FEATURE_SETS.get(tier_cfg.features, ())
            if set(want) != set(entry.features):
                raise tier_error(
                    name,
                    f"config [tiers.{name}] features = {tier_cfg.features!r} ({len(want)} features), the "
                    f"manifest's tier has feature_set {entry.feature_set!r} ({len(entry.features)} features);"
                    f" set features = {entry.feature_set!r} or retrain",
                )
        horizon = self.manifest.target.horizon_bars
        if horizon != cfg.distill.horizon_bars:
            raise ModelError(
                f"{path}: predicts {horizon} bar(s) ahead ($.target.horizon_bars), config [distill] "
                f"horizon_bars is {cfg.distill.horizon_bars}; set horizon_bars = {horizon} or retrain"
            )
        vol = self.manifest.vol_head
        if vol is not None and vol.horizon_bars != cfg.distill.vol_horizon_bars:
            raise ModelError(
                f"{path}: forecasts volatility over {vol.horizon_bars} bars ($.heads.vol.horizon_bars), "
                f"config [distill] vol_horizon_bars is {cfg.distill.vol_horizon_bars}; "
                f"set vol_horizon_bars = {vol.horizon_bars} or retrain"
            )
        self.check_routes(cfg.regime.routes)

    def vol_factor(self, tier: str, symbol: str, regime: str) -> float:
        """Multiplier of the graph's vol of `tier` for a bar of `symbol` in `regime`: sqrt(the symbol's own
        validation variance scale / the pooled one in the graph) for a training symbol of a pooled family,
        times sqrt(the tier's variance bias on the regime's validation rows); 1.0 for what was not fitted."""
        return self._vol_factors.get((tier, symbol), 1.0) * self._regime_factors.get((tier, regime), 1.0)

    @property
    def auto_routes(self) -> dict[str, str] | None:
        """The routes this family chose by evidence at distillation (manifest `routes`), or None."""
        choice = self.manifest.routes
        return None if choice is None else dict(choice.routes)

    def check_routes(self, routes: Mapping[str, str] | str) -> None:
        """Raise ModelError if a regime routes to a tier that is not loaded, or `routes` is "auto" and the
        family chose none."""
        resolved = resolve_routes(routes, self.auto_routes) if isinstance(routes, str) else routes
        bad = {regime: tier for regime, tier in resolved.items() if tier not in self.tiers}
        if bad:
            raise ModelError(f"regime routes {bad} name tier(s) not in the manifest, which has {self.names}")

    def predict(self, tier: str, x: npt.NDArray[np.float64]) -> float:
        """Predicted return of `tier` for one full feature vector of length N_FEATURES (float64)."""
        if x.shape != (N_FEATURES,):
            raise ValueError(
                f"expected a feature vector of shape ({N_FEATURES},) ordered as FEATURE_NAMES, got {x.shape}"
            )
        return self[tier].predict(x)

    def predict_pair(self, tier: str, x: npt.NDArray[np.float64]) -> tuple[float, float | None]:
        """(`predict`, `predict_vol`) of `tier` for one full feature row (float64, contiguous), from one
        model run."""
        if x.shape != (N_FEATURES,):
            raise ValueError(
                f"expected a feature vector of shape ({N_FEATURES},) ordered as FEATURE_NAMES, got {x.shape}"
            )
        return self[tier].predict_pair(x)

    def predict_rows(
        self, tier: str, x: npt.NDArray[np.float64]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64] | None]:
        """`tier`'s predictions and graph vol forecasts (None: no vol head) for feature rows [N, N_FEATURES],
        in one model call; row i equals `predict(tier, x[i])` and `predict_vol(tier, x[i])`."""
        if x.ndim != 2 or x.shape[1] != N_FEATURES:
            raise ValueError(
                f"expected feature rows of shape (N, {N_FEATURES}) ordered as FEATURE_NAMES, got {x.shape}"
            )
        return self[tier].predict_rows(x)

    @property
    def has_vol_head(self) -> bool:
        """True when every loaded tier has the volatility output (`manifest.heads["vol"]`)."""
        return bool(self.tiers) and all(t.has_vol_head for t in self.tiers.values())

    def predict_vol(self, tier: str, x: npt.NDArray[np.float64]) -> float | None:
        """`tier`'s forecast per-bar volatility (RMS of one-bar log returns over the manifest's vol horizon,
        a fraction) for one full feature vector, from the same ORT run as `predict(tier, x)`; None when the
        family has no vol head."""
        if x.shape != (N_FEATURES,):
            raise ValueError(
                f"expected a feature vector of shape ({N_FEATURES},) ordered as FEATURE_NAMES, got {x.shape}"
            )
        return self[tier].predict_vol(x)

    def warm(self, tier: str, *, calls: int = 2) -> None:
        """Untimed calls so the next `predict` of `tier` runs hot (call it just before the decision)."""
        self[tier].warm(calls)
