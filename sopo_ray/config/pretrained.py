"""The config section naming the user's released files (MDM, TMR, the T2M evaluator)."""

from __future__ import annotations

from pathlib import Path

from pydantic import model_validator

from sopo_ray.config.section import Section


class PretrainedConfig(Section):
    """The user's released files, used instead of building our own (docs/humanml3d.md). Each is read with
    weights_only=True and imported once into a checkpoint under workdir, named by the files' digest."""

    mdm: Path | None = None
    """Released MDM checkpoint (humanml_enc_512_50steps/model000750000.pt), imported as the base model instead of
    pretraining; needs model.architecture=mdm_official and model.text_encoder=clip. An args.json beside it is
    checked against the config."""
    tmr: Path | None = None
    """Released TMR folder (models/tmr_humanml3d_guoh3dfeats, holding last_weights/), imported as the reward model
    instead of training one; its text encoder is DistilBERT (Hugging Face cache or $SOPO_DISTILBERT_DIR)."""
    tmr_stats: Path | None = None
    """Folder of TMR's own feature statistics mean.pt and std.pt (TMR repository: stats/humanml3d/guoh3dfeats);
    needed with `tmr`."""
    t2m_evaluator: Path | None = None
    """Folder of the T2M evaluator of Guo et al. (t2m/ as MDM's prepare/download_t2m_evaluators.sh unpacks it,
    holding text_mot_match/model/finest.tar), used instead of training our evaluator (real data only)."""
    t2m_stats: Path | None = None
    """Folder of the evaluator's published mean/std: t2m_mean.npy and t2m_std.npy (MDM's dataset/) or mean.npy
    and std.npy (T2M's Comp_v6_KLD01/meta/); needed with `t2m_evaluator`."""
    glove: Path | None = None
    """Folder of the evaluator's GloVe vectors our_vab_data.npy, our_vab_words.pkl, our_vab_idx.pkl; needed with
    `t2m_evaluator`."""

    @model_validator(mode="after")
    def _pairs(self) -> PretrainedConfig:
        needs = {"tmr": ("tmr_stats",), "t2m_evaluator": ("t2m_stats", "glove")}
        for key, partners in needs.items():
            missing = [p for p in partners if getattr(self, key) is not None and getattr(self, p) is None]
            if missing:
                raise ValueError(f"pretrained.{key} needs pretrained.{missing[0]} as well (docs/humanml3d.md)")
        return self
