"""The CHGNet family: CHGNet 0.3.0, 0.2.0 and the r2SCAN model, all shipped in the chgnet wheel.

MD gets :class:`FastCHGNetCalculator`, which skips stress (unless the barostat
asks for it) and magnetic moments and does not build a double-backward graph:
about 1.5–2× faster per step than ``CHGNetCalculator`` (``bench/md_speed.py``).
Validation and fine-tuning predict in batches with ``CHGNet.predict_structure``.
Checkpoints hold ``CHGNet.as_dict()`` (hyperparameters and weights, no code).
"""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from pymatgen.optimization.neighbors import find_points_in_spheres

from mlip_exafs.potentials.base import ModelFamily, Pretrained

MAX_Z = 94  # CHGNet's MPtrj training covers H..Pu
UNTRAINED_Z = set(range(84, 89))  # Po, At, Rn, Fr, Ra: no Materials Project structure holds them
MPTRJ = "MPtrj: 1.58 M PBE/PBE+U frames of Materials Project relaxations (89 elements)"


class ChgnetFamily(ModelFamily):
    name = "chgnet"
    pretrained = (
        Pretrained("chgnet", "chgnet", "0.3.0", MPTRJ, "CHGNet 0.3.0 (the chgnet wheel's default)"),
        Pretrained("chgnet-0.2.0", "chgnet", "0.2.0", MPTRJ, "CHGNet 0.2.0, the first public weights"),
        Pretrained("chgnet-r2scan", "chgnet", "r2scan", "MPtrj, then transfer-learned on MP r2SCAN calculations (r2SCAN energy scale)",
                   "CHGNet 0.4's r2SCAN model"),
    )

    def load_pretrained(self, entry: Pretrained, device: str):
        from chgnet.model import CHGNet  # lazy: chgnet, seconds to import

        with contextlib.redirect_stdout(io.StringIO()):
            return CHGNet.load(model_name=entry.weights, use_device=device, verbose=False).eval()

    def calculator(self, model, device: str):
        from chgnet.model.dynamics import CHGNetCalculator  # lazy: chgnet, seconds to import

        with contextlib.redirect_stdout(io.StringIO()):  # it prints its device
            return CHGNetCalculator(model=model, use_device=device)

    def md_calculator(self, model, device: str):
        return FastCHGNetCalculator(model, device=device)

    def predict_efs(self, model, frames: list[Atoms], device: str) -> list[dict]:
        """Batched on the model's device; ``s`` is CHGNet's GPa, tensile positive."""
        model.eval()
        preds = model.predict_structure(to_structures(frames), task="efs", batch_size=8)
        return preds if isinstance(preds, list) else [preds]

    def elements(self, model) -> set[int]:
        """H–Pu less Po, At, Rn, Fr, Ra: CHGNet embeds 94 elements, but MPtrj (and MP's r2SCAN set) holds no
        structure with those five, so their embeddings are untrained (Po gave +1.3 eV/atom without a word)."""
        return set(range(1, MAX_Z + 1)) - UNTRAINED_Z

    def checkpoint_payload(self, model) -> dict:
        return {"model": model.as_dict()}

    def from_checkpoint(self, payload: dict, device: str):
        from chgnet.model import CHGNet  # lazy: chgnet, seconds to import

        return CHGNet.from_dict(payload["model"]).to(device).eval()


def to_structures(frames: list[Atoms]):
    """pymatgen Structures (no calculators, no info) for CHGNet's own API."""
    from pymatgen.io.ase import AseAtomsAdaptor  # lazy: pymatgen.io.ase, seconds; potentials is imported by every stage

    return [AseAtomsAdaptor.get_structure(Atoms(a.numbers, a.positions, cell=a.cell, pbc=a.pbc)) for a in frames]


# ---------------------------------------------------------------- fast MD calculator


class FastCHGNetCalculator(Calculator):
    """CHGNet energy and forces for MD, without the work MD does not need.

    ``CHGNetCalculator`` always predicts stress and magnetic moments, takes
    gradients with ``create_graph=True`` (kept for training) and builds its
    graph with Python objects per edge. Here the graph is built with array
    operations (:func:`crystal_graph`), one backward pass with
    ``create_graph=False`` gives the forces, and the stress too, from
    dE/d(lattice), only when asked (``compute_stress`` or an ASE request for
    "stress"). Same model, same graph: results agree with ``CHGNetCalculator``
    to float32 precision (tested).
    """

    implemented_properties = ("energy", "free_energy", "forces", "stress")

    def __init__(self, model, compute_stress: bool = False, device: str = "cpu", **kwargs):
        super().__init__(**kwargs)
        self.device = device
        self.model = model.to(device).eval()
        for noise in ("To copy construct from a tensor", "Converting a tensor with requires_grad=True to a scalar"):
            warnings.filterwarnings("ignore", message=noise, category=UserWarning)
        self.compute_stress = compute_stress

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        import torch  # lazy: torch, seconds to import

        super().calculate(atoms, properties, system_changes)
        want_stress = self.compute_stress or "stress" in properties
        converter = self.model.graph_converter
        graph = crystal_graph(self.atoms, converter.atom_graph_cutoff, converter.bond_graph_cutoff, self.device)
        with torch.enable_grad():
            energy_per_atom = self.model([graph], task="e")["e"]
            energy = energy_per_atom.sum() * len(self.atoms) if self.model.is_intensive else energy_per_atom.sum()
            inputs = [graph.atom_frac_coord, graph.lattice] if want_stress else [graph.atom_frac_coord]
            grads = torch.autograd.grad(energy, inputs)
        cell = self.atoms.cell.array
        de_dfrac = grads[0].detach().cpu().double().numpy()
        forces = -de_dfrac @ np.linalg.inv(cell).T  # frac = cart @ inv(cell)
        self.results = {"energy": float(energy), "free_energy": float(energy), "forces": forces}
        if want_stress:
            self.results["stress"] = _stress_from_lattice_gradient(grads[1].detach().cpu().double().numpy(), cell)


def crystal_graph(atoms: Atoms, atom_cutoff_a: float, bond_cutoff_a: float, device: str = "cpu"):
    """CHGNet's ``CrystalGraph`` built with array operations instead of one Python object per edge.

    Same content as ``CrystalGraphConverter`` (edge order aside, which the
    model's sums ignore): directed edges within ``atom_cutoff_a``, each paired
    with its reverse into an undirected edge, and an angle for every ordered
    pair of distinct directed edges shorter than ``bond_cutoff_a`` that leave
    the same atom. The tensors are made on ``device``.
    """
    import torch  # lazy: torch, seconds to import
    from chgnet.graph.crystalgraph import CrystalGraph  # lazy: chgnet, seconds to import

    cell = np.ascontiguousarray(atoms.cell.array, dtype=float)
    cart = np.ascontiguousarray(atoms.positions, dtype=float)
    center, neighbor, image, distance = find_points_in_spheres(cart, cart, r=float(atom_cutoff_a), pbc=np.ones(3, dtype=np.int64), lattice=cell, tol=1e-8)
    keep = ~((center == neighbor) & (distance <= 1e-8))
    center, neighbor, image, distance = center[keep], neighbor[keep], image[keep].astype(np.int64), distance[keep]
    reverse = _reverse_edges(center, neighbor, image, len(atoms))
    first = np.minimum(np.arange(len(center)), reverse)  # the directed edge that founds its undirected edge
    founders, directed2undirected = np.unique(first, return_inverse=True)
    bond_graph = _angle_pairs(center, distance < bond_cutoff_a, directed2undirected)
    frac = cart @ np.linalg.inv(cell)
    return CrystalGraph(
        atomic_number=torch.tensor(atoms.numbers, dtype=torch.int32, device=device),
        atom_frac_coord=torch.tensor(frac, dtype=torch.float32, requires_grad=True, device=device),
        atom_graph=torch.tensor(np.stack([center, neighbor], axis=1), dtype=torch.int32, device=device),
        neighbor_image=torch.tensor(image, dtype=torch.float32, device=device),
        directed2undirected=torch.tensor(directed2undirected, dtype=torch.int32, device=device),
        undirected2directed=torch.tensor(founders, dtype=torch.int32, device=device),
        bond_graph=torch.tensor(bond_graph, dtype=torch.int32, device=device),
        lattice=torch.tensor(cell, dtype=torch.float32, requires_grad=True, device=device),
        atom_graph_cutoff=atom_cutoff_a,
        bond_graph_cutoff=bond_cutoff_a,
        composition=atoms.get_chemical_formula(),
    )


def _reverse_edges(center: np.ndarray, neighbor: np.ndarray, image: np.ndarray, n_atoms: int) -> np.ndarray:
    """Index of the edge j -> i (image -s) for every edge i -> j (image s)."""
    def key(i, j, s):
        s = s + 512
        return ((i * n_atoms + j) * 1024 + s[:, 0]) * 1024 * 1024 + s[:, 1] * 1024 + s[:, 2]

    forward = key(center.astype(np.int64), neighbor.astype(np.int64), image)
    order = np.argsort(forward)
    backward = key(neighbor.astype(np.int64), center.astype(np.int64), -image)
    pos = np.searchsorted(forward, backward, sorter=order)
    reverse = order[np.clip(pos, 0, len(order) - 1)]
    if len(center) and not np.array_equal(forward[reverse], backward):
        raise RuntimeError("neighbour list is not symmetric; cannot pair directed edges")
    return reverse


def _angle_pairs(center: np.ndarray, short: np.ndarray, directed2undirected: np.ndarray) -> np.ndarray:
    """Rows [atom, bond1 undirected, bond1 directed, bond2 undirected, bond2 directed] for all
    ordered pairs of distinct short bonds leaving the same atom (CHGNet's line graph)."""
    edges = np.flatnonzero(short)
    edges = edges[np.argsort(center[edges], kind="stable")]
    atoms_of = center[edges]
    starts = np.searchsorted(atoms_of, atoms_of, side="left")
    sizes = np.searchsorted(atoms_of, atoms_of, side="right") - starts
    first = np.repeat(np.arange(len(edges)), sizes)
    second = np.repeat(starts, sizes) + (np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes))
    distinct = first != second
    d1, d2 = edges[first[distinct]], edges[second[distinct]]
    return np.stack([center[d1], directed2undirected[d1], d1, directed2undirected[d2], d2], axis=1).reshape(-1, 5)


def _stress_from_lattice_gradient(de_dcell: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """ASE stress (eV/Å^3, Voigt) = (1/V) dE/dε with the cell strained as cell·(1+ε)."""
    de_dstrain = cell.T @ de_dcell
    sym = 0.5 * (de_dstrain + de_dstrain.T) / abs(np.linalg.det(cell))
    return np.array([sym[0, 0], sym[1, 1], sym[2, 2], sym[1, 2], sym[0, 2], sym[0, 1]])


