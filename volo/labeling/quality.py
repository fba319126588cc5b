"""How good a teacher's token labels are, measured while `volo label` writes them (teacher_quality.json).

Measured on the stored top-k maps as training will read them (logits outside the top-k are zero):
- pooled agreement: the argmax of the map averaged over its cells equals the image's folder label (the
  teacher's accuracy on the labelled set; needs the teacher's classes to be the dataset's, or a class map);
- cell agreement: share of cells whose argmax is the folder label (near 100% means the map is an image label);
- maps that vary: share of images whose cells do not all have the same argmax (a localising teacher's maps change
  where the object is; a plain-label VOLO teacher's hardly ever do);
- mean target entropy: entropy of the per-cell softmax over all classes, divided by log(classes) (1 = uniform);
- mass outside the top-k: softmax mass that lands on the classes the store does not keep (their logit is 0), a sign
  of a weak, flat teacher.
`warnings()` says when the teacher is not clearly better than chance, near uniform, or its maps never vary.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch


@dataclass
class TeacherQuality:
    num_classes: int
    images: int = 0
    labelled: int = 0
    """Images whose folder label is in the teacher's classes (agreement is over these)."""
    pooled_agree: int = 0
    cells: int = 0
    cells_agree: int = 0
    varying_maps: int = 0
    entropy_sum: float = 0.0
    outside_mass_sum: float = 0.0
    notes: list[str] = field(default_factory=list)

    @torch.no_grad()
    def update(self, values: torch.Tensor, ids: torch.Tensor, labels: torch.Tensor | None) -> None:
        """values (B, k, h, w) top-k logits, ids (B, k, h, w) their classes, labels (B,) folder labels in the
        teacher's class space (-1 where the class is not one of the teacher's) or None when unknown."""
        B, k, h, w = values.shape
        dense = torch.zeros(B, self.num_classes, h, w, dtype=torch.float32)
        dense.scatter_(1, ids.long().cpu(), values.float().cpu())
        probs = dense.softmax(dim=1)
        entropy = -(probs * probs.clamp_min(1e-12).log()).sum(dim=1)  # (B, h, w)
        self.entropy_sum += float(entropy.sum()) / math.log(max(self.num_classes, 2))
        kept = probs.gather(1, ids.long().cpu()).sum(dim=1)
        self.outside_mass_sum += float((1.0 - kept).clamp_min(0).sum())
        top = dense.argmax(dim=1).flatten(1)  # (B, h*w)
        self.varying_maps += int((top != top[:, :1]).any(dim=1).sum())
        self.images += B
        self.cells += B * h * w
        if labels is not None:
            labels = labels.long().cpu()
            known = labels >= 0
            pooled = dense.mean(dim=(2, 3)).argmax(dim=1)
            self.labelled += int(known.sum())
            self.pooled_agree += int((pooled == labels)[known].sum())
            self.cells_agree += int((top == labels[:, None])[known].sum())

    def summary(self) -> dict:
        cells = max(self.cells, 1)
        labelled_cells = max(self.cells * self.labelled // max(self.images, 1), 1)
        return {
            "images": self.images,
            "classes": self.num_classes,
            "chance_pct": 100.0 / self.num_classes,
            "pooled_agreement_pct": 100.0 * self.pooled_agree / self.labelled if self.labelled else None,
            "cell_agreement_pct": 100.0 * self.cells_agree / labelled_cells if self.labelled else None,
            "varying_maps_pct": 100.0 * self.varying_maps / max(self.images, 1),
            "mean_target_entropy": self.entropy_sum / cells,
            "mass_outside_topk_pct": 100.0 * self.outside_mass_sum / cells,
            "labelled_images": self.labelled,
        }

    def warnings(self) -> list[str]:
        s, out = self.summary(), []
        chance = s["chance_pct"]
        agree = s["pooled_agreement_pct"]
        if agree is not None and agree < chance + 0.1 * (100.0 - chance):
            out.append(
                f"the teacher agrees with the folder labels on {agree:.1f}% of images (chance {chance:.1f}%): "
                "not clearly better than chance, its token labels will teach noise"
            )
        if s["mean_target_entropy"] > 0.9:
            out.append(
                f"mean target entropy {s['mean_target_entropy']:.2f} of the uniform 1.0: the targets are near uniform"
            )
        if s["images"] and s["varying_maps_pct"] < 5.0:
            out.append(
                f"only {s['varying_maps_pct']:.1f}% of maps vary across cells: the teacher does not localise, so "
                "the token labels are little more than soft image labels"
            )
        return out

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(summary=self.summary(), warnings=self.warnings())
        return d
