"""The SevenNet family: SevenNet-0, SevenNet-l3i5 and SevenNet-MF-0, all shipped in the sevenn wheel.

A loaded model is a :class:`SevenNetModel`: the network, its config (cutoff,
species, ...) and, for a multi-fidelity model, the fidelity head it runs with.
SevenNet-MF-0 runs with its PBE head: the shipped WS2 labels are PBE(+D3), and
MPtrj, which all other registered models learned, is PBE/PBE+U.

Checkpoints hold the config and the weights only (``torch.load(weights_only=True)``);
the config carries the running sevenn version, because sevenn's own loader would
"patch" the already converted weights of a config that still says 7net-0's old version.
"""

from __future__ import annotations

import contextlib
import copy
import io
from dataclasses import dataclass
from typing import Any

import numpy as np
from ase.data import atomic_numbers

from mlip_exafs.potentials.base import ModelFamily, Pretrained

MPTRJ = "MPtrj: 1.58 M PBE/PBE+U frames of Materials Project relaxations (89 elements)"
MF_HEAD = "PBE"  # the fidelity head of SevenNet-MF-0 that mlip-exafs uses


@dataclass
class SevenNetModel:
    net: Any  # sevenn's AtomGraphSequential (a torch module)
    config: dict
    modal: str | None = None  # fidelity head of a multi-fidelity model


class SevenNetFamily(ModelFamily):
    name = "sevennet"
    pretrained = (
        Pretrained("sevennet-0", "sevennet", "7net-0", MPTRJ, "SevenNet-0 (11Jul2024), l_max 2, 5 layers"),
        Pretrained("sevennet-l3i5", "sevennet", "7net-l3i5", MPTRJ, "SevenNet-l3i5, l_max 3, 5 layers: the least soft offline model (docs/potentials.md)"),
        Pretrained("sevennet-mf-0", "sevennet", "7net-mf-0", "multi-fidelity: MPtrj (PBE/PBE+U) and MP r2SCAN; run with its PBE head",
                   "SevenNet-MF-0, PBE head", {"modal": MF_HEAD}),
    )

    def load_pretrained(self, entry: Pretrained, device: str) -> SevenNetModel:
        from sevenn.util import load_checkpoint  # lazy: sevenn, seconds to import

        with contextlib.redirect_stdout(io.StringIO()):
            checkpoint = load_checkpoint(entry.weights)
            net = checkpoint.build_model()
        return _ready(SevenNetModel(net, checkpoint.config, entry.options.get("modal")), device)

    def calculator(self, model: SevenNetModel, device: str):
        from sevenn.calculator import SevenNetCalculator  # lazy: sevenn, seconds to import

        model.net.eval()
        return SevenNetCalculator(model=model.net, file_type="model_instance", device=device, modal=model.modal)

    def elements(self, model: SevenNetModel) -> set[int]:
        return {atomic_numbers[s] for s in model.config["chemical_species"]}

    def checkpoint_payload(self, model: SevenNetModel) -> dict:
        return {"config": plain_config(model.config), "state_dict": model.net.state_dict(), "modal": model.modal}

    def from_checkpoint(self, payload: dict, device: str) -> SevenNetModel:
        from sevenn.model_build import build_E3_equivariant_model  # lazy: sevenn, seconds to import

        net = build_E3_equivariant_model(copy.deepcopy(payload["config"]))
        net.load_state_dict(payload["state_dict"], strict=True)
        return _ready(SevenNetModel(net, payload["config"], payload.get("modal")), device)


def _ready(model: SevenNetModel, device: str) -> SevenNetModel:
    """On ``device``, in eval mode, one structure at a time (training switches batch mode on)."""
    model.net.to(device)
    model.net.eval()
    model.net.set_is_batch_data(False)
    return model


def plain_config(config: dict) -> dict:
    """The model config with only values ``torch.load(weights_only=True)`` accepts, at this sevenn version."""
    import sevenn  # lazy: sevenn, seconds to import

    plain = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in config.items() if k != "device"}
    plain["version"] = sevenn.__version__
    return plain
