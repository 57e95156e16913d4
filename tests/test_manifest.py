"""manifest.json as typed msgspec structs: decoding validates and names file, field and tier; exit 3."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import msgspec
import pytest
from fixtures_models import edit_manifest, write_family
from support import small_config, to_toml
from test_cli import run_bot

from bot.core.errors import ModelError
from bot.models.family import TierFamily
from bot.models.manifest import Manifest, ReturnSkill, TierEntry, decode_manifest, encode_manifest


@pytest.fixture
def family_dir(tmp_path: Path) -> Path:
    write_family(tmp_path / "models")
    return tmp_path / "models"


def _edge(m: dict[str, Any]) -> dict[str, Any]:
    tier: dict[str, Any] = next(t for t in m["tiers"] if t["name"] == "edge")
    return tier


def test_trained_family_round_trips_unchanged(trained_family: Path) -> None:
    """A manifest written by offline/export.py decodes to the structs and encodes back to the same JSON."""
    raw = (trained_family / "manifest.json").read_bytes()
    manifest = decode_manifest(raw)
    assert isinstance(manifest.tiers[0], TierEntry)
    assert manifest.tiers[0].stage == 0
    assert json.loads(encode_manifest(manifest)) == json.loads(raw)
    fam = TierFamily.load(trained_family)
    assert isinstance(fam.manifest, Manifest)
    assert fam.manifest.tiers[0].metrics.test_r2 is not None


def test_a_minimal_family_without_optional_fields_still_loads(family_dir: Path) -> None:
    """Older or hand-built manifests without metrics, target or stage load with the documented defaults."""

    def strip(m: dict[str, Any]) -> None:
        for key in ("created_ms", "target", "versions", "provenance"):
            del m[key]
        for t in m["tiers"]:
            for key in ("stage", "metrics", "alpha", "temperature", "hidden"):
                del t[key]

    edit_manifest(family_dir, strip)
    fam = TierFamily.load(family_dir)
    assert [fam[n].spec.stage for n in fam.names] == [0, 1, 2, 3]
    assert fam.manifest.target.horizon_bars == 1


def test_a_field_of_the_wrong_type_names_file_field_and_tier(family_dir: Path) -> None:
    """sha256 given as a number: ModelError names the file, `$.tiers[3].sha256` and tier 'edge'."""
    edit_manifest(family_dir, lambda m: _edge(m).update(sha256=5))
    with pytest.raises(ModelError, match=r"manifest\.json: Expected `str`, got `int`") as exc:
        TierFamily.load(family_dir)
    assert "`$.tiers[3].sha256` (tier 'edge')" in str(exc.value)


def test_a_missing_field_is_named(family_dir: Path) -> None:
    """A tier without `features` is refused naming the field and the tier."""
    edit_manifest(family_dir, lambda m: _edge(m).pop("features"))
    with pytest.raises(
        ModelError, match=r"missing required field `features` - at `\$\.tiers\[3\]` \(tier 'edge'\)"
    ):
        TierFamily.load(family_dir)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda m: m.update(tiers=[]), r"Expected `array` of length >= 1 - at `\$\.tiers`"),
        (
            lambda m: _edge(m).update(features=[]),
            r"length >= 1 - at `\$\.tiers\[3\]\.features` \(tier 'edge'\)",
        ),
        (lambda m: _edge(m).update(file=""), r"at `\$\.tiers\[3\]\.file` \(tier 'edge'\)"),
        (lambda m: m.update(schema_version=2), r"schema_version expected 1, got 2"),
        (lambda m: m.update(feature_version=1), r"Expected `str`, got `int` - at `\$\.feature_version`"),
    ],
)
def test_malformed_manifests_are_refused_with_the_field(family_dir: Path, edit: Any, match: str) -> None:
    """Shapes and types are checked by decoding; the message names the field."""
    edit_manifest(family_dir, edit)
    with pytest.raises(ModelError, match=match):
        TierFamily.load(family_dir)


def test_not_json_is_refused(family_dir: Path) -> None:
    """A truncated manifest is refused naming the file."""
    (family_dir / "manifest.json").write_text('{"schema_version": 1, "tiers": [')
    with pytest.raises(ModelError, match=r"manifest\.json: cannot read manifest"):
        TierFamily.load(family_dir)


def test_encoding_refuses_non_finite_numbers(trained_family: Path) -> None:
    """NaN/inf are not JSON: the exporter refuses them (msgspec alone would write null)."""
    manifest = decode_manifest((trained_family / "manifest.json").read_bytes())
    bad = msgspec.structs.replace(manifest, regime_calibration={"vol_q": {"0.25": math.nan}})
    with pytest.raises(ModelError, match=r"\$\.regime_calibration\.vol_q\.0\.25: nan"):
        encode_manifest(bad)


def test_cli_exits_3_on_a_malformed_field(trained_family: Path, tmp_path: Path) -> None:
    """`python -m bot run` with a manifest field of the wrong type exits 3 naming the field."""
    models = tmp_path / "models"
    shutil.copytree(trained_family, models)
    edit_manifest(models, lambda m: m["tiers"][0].update(input_name=None))
    cfg = small_config(
        ledger={"path": str(tmp_path / "state" / "ledger.sqlite")},
        logging={"decisions_path": str(tmp_path / "logs" / "d.jsonl"), "format": "json"},
        models={"dir": str(models)},
    )
    path = tmp_path / "config.toml"
    path.write_text(to_toml(cfg), encoding="utf-8")
    proc = run_bot("run", "--config", str(path), cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr
    assert "$.tiers[0].input_name" in proc.stderr
    assert not (tmp_path / "state").exists()


def test_the_exported_family_carries_the_return_heads_skill(trained_family: Path) -> None:
    """`offline distill` records the teacher's test-row IC and SE in the manifest and in report.json/.txt."""
    manifest = decode_manifest((trained_family / "manifest.json").read_bytes())
    skill = manifest.return_skill
    assert skill is not None
    assert (skill.rows, skill.tier) == ("test", manifest.tiers[0].name)
    report = json.loads((trained_family / "report.json").read_text())
    assert skill.n_rows == report["info"]["test_rows"]
    assert 0.0 < skill.se < 1.0
    assert report["return_skill"] == msgspec.to_builtins(skill)
    assert f"return head: {skill.text()}" in (trained_family / "report.txt").read_text()


def test_return_skill_is_optional_and_flags_an_ic_within_2_se() -> None:
    """Older manifests (no `return_skill`) decode to None; `no_skill` is |IC| < 2 SE."""
    old = msgspec.to_builtins(
        Manifest(
            schema_version=1,
            feature_version="v",
            tiers=[
                TierEntry(
                    name="t", file="t.onnx", sha256="0", features=["ret_1"], input_name="x", output_name="y"
                )
            ],
        )
    )
    del old["return_skill"]
    assert decode_manifest(json.dumps(old).encode()).return_skill is None
    assert ReturnSkill(ic=0.019, se=0.01, n_rows=100, rows="test", tier="t").no_skill
    assert not ReturnSkill(ic=-0.021, se=0.01, n_rows=100, rows="test", tier="t").no_skill
    assert "no measured skill" in ReturnSkill(ic=0.0, se=0.01, n_rows=100, rows="test", tier="t").text()
